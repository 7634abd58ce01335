"""Mixing for audio out: the built-in (or a user) kit, sample-accurately.

``Voices`` mixes one block: an event at frame f starts at exactly that frame, voices live in
preallocated slots, chokes cut what they choke, and a limiter keeps the mix below full scale; it
allocates no arrays. The stream, its callback and the clock it drives live in ``audio_process``.

The block has the channels ``--outs`` asks for (``OUTS``): the stereo mix (left, right), the
groups a front-of-house engineer mixes a kit in (kick, snare, toms left/right, overheads
left/right, hats), or one channel per voice. A voice reaches a channel through one gain matrix
(voices × channels): the kit's pan for a stereo pair, its mono fold-down (left + right) for a
mono channel, so the mono sum of any layout is the stereo mix's.

With ``cue``, two more channels follow: the cue bus for the band's in-ears (left, right): the
drums at a level of their own (``CUE_DRUMS_LEVEL``), and the cue sounds (``CUE_SOUNDS``: the
click, its accented downbeat, the cue before a section), which the main channels never carry.
Both buses come out of the same block, so they are sample-locked by construction; each has its
own level (``main_level``, ``cue_level``: MIDI CC 108 and 109 in BeatBuddy's set-list apps) and
its own limiter.
"""

from __future__ import annotations

import numpy as np

from drummachine.audio.kit import Kit
from drummachine.audio.render import CEILING, POLYPHONY
from drummachine.core.errors import DrumMachineError
from drummachine.core.voices import N_VOICES, VOICE_INDEX, VOICE_NAMES

SLOTS = 48
FADE_SECONDS = 0.004
RELEASE_PER_BLOCK = 1.02  # limiter gain recovery per block (about 1.5 dB/10 ms at 128 frames)

#: --outs: per layout, its channels in order, each (name, the voices it carries, "left"/"right"
#: for a side of a stereo pair or "mono")
OUTS: dict[str, tuple[tuple[str, tuple[str, ...], str], ...]] = {
    "stereo": (("left", VOICE_NAMES, "left"), ("right", VOICE_NAMES, "right")),
    "groups": (("kick", ("kick",), "mono"), ("snare", ("snare",), "mono"),
               ("toms_left", ("low_tom", "mid_tom", "high_tom"), "left"),
               ("toms_right", ("low_tom", "mid_tom", "high_tom"), "right"),
               ("overheads_left", ("crash", "ride"), "left"), ("overheads_right", ("crash", "ride"), "right"),
               ("hats", ("closed_hat", "open_hat"), "mono")),
    "voices": tuple((name, (name,), "mono") for name in VOICE_NAMES),
}


#: sounds only the cue bus carries, played as voices after the kit's nine (``Voices.add``)
CUE_SOUNDS = ("click", "click_accent", "cue")
CLICK, CLICK_ACCENT, CUE = (N_VOICES + k for k in range(len(CUE_SOUNDS)))
CUE_CHANNELS = ("cue_left", "cue_right")
CUE_DRUMS_LEVEL = 0.7  #: the drums on the cue bus, under the click


def cue_sound(name: str, rate: int) -> np.ndarray:
    """A click (a short high blip, the downbeat's higher and louder) or the section cue (two rising
    tones): pure tones, nothing like a drum, so they cut through the drums in the in-ears."""
    def blip(freq: float, seconds: float, level: float) -> np.ndarray:
        t = np.arange(int(seconds * rate)) / rate
        return level * np.sin(2 * np.pi * freq * t) * np.exp(-t / (seconds / 4))

    if name == "click":
        x = blip(1600.0, 0.03, 0.5)
    elif name == "click_accent":
        x = blip(2400.0, 0.04, 0.8)
    else:
        x = np.concatenate([blip(880.0, 0.08, 0.6), blip(1320.0, 0.12, 0.6)])
    return x.astype(np.float32)


def out_channels(outs: str, cue: bool = False) -> tuple[str, ...]:
    """The channel names of an ``--outs`` layout, in order (JACK ports out_0, out_1, ...)."""
    try:
        return tuple(name for name, _, _ in OUTS[outs]) + (CUE_CHANNELS if cue else ())
    except KeyError:
        raise DrumMachineError("--outs", f"unknown layout {outs!r}; allowed: {', '.join(OUTS)}") from None


def out_matrix(kit: Kit, outs: str = "stereo", cue: bool = False) -> np.ndarray:
    """(voices and cue sounds, channels) gains from each voice to each channel of the layout."""
    main = len(out_channels(outs))
    pans = kit.pan_gains()
    matrix = np.zeros((N_VOICES + len(CUE_SOUNDS), main + (2 if cue else 0)), np.float32)
    if cue:
        matrix[:N_VOICES, main:] = pans * CUE_DRUMS_LEVEL
        matrix[N_VOICES:, main:] = 1.0  # the cue sounds centred, in the cue bus only
    for c, (_, voices, side) in enumerate(OUTS[outs]):
        for name in voices:
            v = VOICE_INDEX[name]
            matrix[v, c] = pans[v, 0] if side == "left" else pans[v, 1] if side == "right" else pans[v].sum()
    return matrix


class Voices:
    """Preallocated playback slots and the mixing of one block.

    Slot bookkeeping is plain Python numbers and the sample arithmetic writes into preallocated
    buffers (``out=``), so mixing a block creates no arrays.
    """

    def __init__(self, kit: Kit, block_max: int = 4096, outs: str = "stereo", cue: bool = False):
        self.kit = kit
        self.matrix = out_matrix(kit, outs, cue)
        self.channels = self.matrix.shape[1]
        main = len(OUTS[outs])
        self.buses = [(0, main)] + ([(main, main + 2)] if cue else [])  # (first, end) channel of each
        self.levels = [1.0] * len(self.buses)  # main_level, cue_level
        self.limiter_gains = [1.0] * len(self.buses)
        self.cue_samples = tuple(cue_sound(name, kit.sample_rate) for name in CUE_SOUNDS)
        self.start = [-1] * SLOTS  # frame the sample starts at; -1: free
        self.voice = [0] * SLOTS
        self.gain = [0.0] * SLOTS
        self.end = [0] * SLOTS  # frame after the last one to play
        self.fade_at = [-1] * SLOTS  # choke: frame where the fade-out starts
        self.samples: list[np.ndarray | None] = [None] * SLOTS
        self.fade = max(1, int(FADE_SECONDS * kit.sample_rate))
        self.fade_ramp = np.linspace(1.0, 0.0, self.fade, dtype=np.float32)
        self.scratch = np.zeros(block_max, np.float32)
        self.stereo = np.zeros((block_max, self.channels), np.float32)
        self.gains2 = np.zeros((SLOTS, self.channels), np.float32)  # per slot: velocity gain x its voice's row
        self.slot_gains = [self.gains2[i] for i in range(SLOTS)]  # views made once, not per block
        self.voice_gains = [self.matrix[v] for v in range(len(self.matrix))]
        self.fade_ramp2 = self.fade_ramp[:, None]
        self.absbuf = np.zeros((block_max, self.channels), np.float32)
        self.ramp = np.zeros(block_max, np.float32)
        self.ramp_n = 0
        # chokes[a][b]: a hit of voice a cuts a ringing voice b (the kit's table: hats, mute groups)
        n = len(self.matrix)
        self.chokes = [[b in kit.chokes.get(a, ()) for b in range(n)] for a in range(n)]
        kit.rewind()
        # each voice's last POLYPHONY hits (slot, start), a ring: the next hit cuts the oldest
        self.recent_slot = [[-1] * POLYPHONY for _ in range(n)]
        self.recent_start = [[-1] * POLYPHONY for _ in range(n)]
        self.recent_at = [0] * n
        self.stolen = 0

    def clear(self) -> None:
        for i in range(SLOTS):
            self.start[i] = -1
            self.samples[i] = None

    def state(self) -> tuple:
        """Everything that decides the next blocks (slots, limiter, levels, the kit's round-robin
        turns), copied: ``restore`` goes back to it, so blocks can be mixed again (audio.ahead)."""
        turn = getattr(self.kit, "_turn", None)  # the kit's round robins: which layer plays next
        return (self.start[:], self.voice[:], self.gain[:], self.end[:], self.fade_at[:], self.samples[:],
                self.gains2.copy(), [r[:] for r in self.recent_slot], [r[:] for r in self.recent_start],
                self.recent_at[:], self.levels[:], self.limiter_gains[:], self.stolen,
                None if turn is None else turn[:])

    def restore(self, state: tuple) -> None:
        """Back to a ``state()``: the lists are refilled in place (the mix keeps its views)."""
        (start, voice, gain, end, fade_at, samples, gains2, recent_slot, recent_start, recent_at, levels,
         limiter_gains, self.stolen, turn) = state
        self.start[:], self.voice[:], self.gain[:], self.end[:], self.fade_at[:] = start, voice, gain, end, fade_at
        self.samples[:] = samples
        self.gains2[:] = gains2
        for mine, saved in zip(self.recent_slot, recent_slot):
            mine[:] = saved
        for mine, saved in zip(self.recent_start, recent_start):
            mine[:] = saved
        self.recent_at[:], self.levels[:], self.limiter_gains[:] = recent_at, levels, limiter_gains
        if turn is not None:
            self.kit._turn[:] = turn

    def add(self, frame: int, voice: int, velocity: float) -> None:
        """A hit of ``voice`` (a kit voice, or a cue sound: CLICK, CLICK_ACCENT, CUE at the level
        ``velocity``) starting at ``frame``."""
        if voice < N_VOICES:
            sample, gain = self.kit.sample(voice, velocity)
        else:
            sample, gain = self.cue_samples[voice - N_VOICES], velocity
        cuts = self.chokes[voice]
        slot = -1
        oldest = 0
        for i in range(SLOTS):
            st = self.start[i]
            if st < 0:
                if slot < 0:
                    slot = i
                continue
            if st < self.start[oldest] or self.start[oldest] < 0:
                oldest = i
            if st < frame and self.fade_at[i] < 0 and cuts[self.voice[i]]:
                self.fade_at[i] = frame
                self.end[i] = min(self.end[i], frame + self.fade)
        at = self.recent_at[voice]
        old, old_start = self.recent_slot[voice][at], self.recent_start[voice][at]
        if old >= 0 and self.start[old] == old_start and self.voice[old] == voice:
            if self.fade_at[old] < 0 or self.fade_at[old] > frame:  # one hit too many of this voice
                self.fade_at[old] = frame
                self.end[old] = min(self.end[old], frame + self.fade)
        if slot < 0:  # all busy: steal the slot that started longest ago
            slot = oldest
            self.stolen += 1
        self.recent_slot[voice][at] = slot
        self.recent_start[voice][at] = frame
        self.recent_at[voice] = (at + 1) % POLYPHONY
        self.start[slot] = frame
        self.voice[slot] = voice
        self.gain[slot] = gain
        np.multiply(self.voice_gains[voice], gain, out=self.slot_gains[slot])
        self.samples[slot] = sample
        self.end[slot] = frame + len(sample)
        self.fade_at[slot] = -1

    def mix(self, out: np.ndarray, block_start: int) -> None:
        """Add every sounding slot into ``out`` (frames, channels), which the caller has zeroed."""
        block_end = block_start + out.shape[0]
        for i in range(SLOTS):
            s = self.start[i]
            if s < 0 or s >= block_end:
                continue
            e = self.end[i]
            if e <= block_start:
                self.start[i] = -1
                self.samples[i] = None
                continue
            a = s if s > block_start else block_start
            b = e if e < block_end else block_end
            n = b - a
            # one multiply makes the slot's stereo block (sample x velocity gain x pan), one add mixes
            # it in: the cost per sounding slot is what limits how many a kit may keep ringing
            seg = self.stereo[:n]
            np.multiply(self.samples[i][a - s:b - s, None], self.slot_gains[i], out=seg)
            f = self.fade_at[i]
            if f >= 0 and b > f:  # choked: fade out from f, silence after the fade
                lo = f if f > a else a
                k0, k1 = lo - f, min(b - f, self.fade)
                if k1 > k0:
                    part = seg[lo - a:lo - a + k1 - k0]
                    np.multiply(part, self.fade_ramp2[k0:k1], out=part)
                if f + self.fade < b:
                    seg[max(f + self.fade, a) - a:] = 0.0
            o = out[a - block_start:b - block_start]
            np.add(o, seg, out=o)

    def set_level(self, bus: int, level: float) -> None:
        """The main bus's (0) or the cue bus's (1) level, 0..1, from the next block."""
        if 0 <= bus < len(self.levels):
            self.levels[bus] = min(max(float(level), 0.0), 1.0)

    @property
    def limiter_gain(self) -> float:
        return self.limiter_gains[0]

    def limit(self, out: np.ndarray) -> None:
        """Each bus at its level, then its peak limiter: instant attack within the block, slow
        release, never above the ceiling."""
        n = out.shape[0]
        if not n:
            return
        for k, (a, b) in enumerate(self.buses):
            bus = out[:, a:b]
            if self.levels[k] != 1.0:
                np.multiply(bus, self.levels[k], out=bus)
            self._limit_bus(bus, self.absbuf[:n, a:b], k)

    def _limit_bus(self, out: np.ndarray, absb: np.ndarray, k: int) -> None:
        n = out.shape[0]
        np.abs(out, out=absb)
        peak = float(absb.max())
        gain = self.limiter_gains[k]
        target = CEILING / peak if peak * gain > CEILING else 1.0
        new = min(target, gain * RELEASE_PER_BLOCK, 1.0)
        if new <= gain or new - gain < 1e-6:
            if new != 1.0:
                np.multiply(out, new, out=out)
        else:  # releasing: ramp up across the block, from the old gain
            if self.ramp_n != n:
                self.ramp[:n] = np.arange(1, n + 1, dtype=np.float32) / n
                self.ramp_n = n
            ramp = self.scratch[:n]
            np.multiply(self.ramp[:n], new - gain, out=ramp)
            np.add(ramp, gain, out=ramp)
            np.multiply(out, ramp[:, None], out=out)
        self.limiter_gains[k] = new
