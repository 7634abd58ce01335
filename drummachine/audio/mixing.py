"""Mixing for audio out: the built-in (or a user) kit, sample-accurately.

``Voices`` mixes one block: an event at frame f starts at exactly that frame, voices live in
preallocated slots, chokes cut what they choke, and a limiter keeps the mix below full scale; it
allocates no arrays. The stream, its callback and the clock it drives live in ``audio_process``.

The block has the channels ``--outs`` asks for (``OUTS``): the stereo mix (left, right), the
groups a front-of-house engineer mixes a kit in (kick, snare, toms left/right, overheads
left/right, hats), or one channel per voice. A voice reaches a channel through one gain matrix
(voices × channels): the kit's pan for a stereo pair, its mono fold-down (left + right) for a
mono channel, so the mono sum of any layout is the stereo mix's.
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


def out_channels(outs: str) -> tuple[str, ...]:
    """The channel names of an ``--outs`` layout, in order (JACK ports out_0, out_1, ...)."""
    try:
        return tuple(name for name, _, _ in OUTS[outs])
    except KeyError:
        raise DrumMachineError("--outs", f"unknown layout {outs!r}; allowed: {', '.join(OUTS)}") from None


def out_matrix(kit: Kit, outs: str = "stereo") -> np.ndarray:
    """(voices, channels) gains from each voice to each channel of the layout."""
    out_channels(outs)
    pans = kit.pan_gains()
    matrix = np.zeros((N_VOICES, len(OUTS[outs])), np.float32)
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

    def __init__(self, kit: Kit, block_max: int = 4096, outs: str = "stereo"):
        self.kit = kit
        self.matrix = out_matrix(kit, outs)
        self.channels = self.matrix.shape[1]
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
        self.voice_gains = [self.matrix[v] for v in range(N_VOICES)]
        self.fade_ramp2 = self.fade_ramp[:, None]
        self.absbuf = np.zeros((block_max, self.channels), np.float32)
        self.ramp = np.zeros(block_max, np.float32)
        self.ramp_n = 0
        self.limiter_gain = 1.0
        # chokes[a][b]: a hit of voice a cuts a ringing voice b (the kit's table: hats, mute groups)
        n = len(kit.layers)
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

    def add(self, frame: int, voice: int, velocity: float) -> None:
        sample, gain = self.kit.sample(voice, velocity)
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

    def limit(self, out: np.ndarray) -> None:
        """A peak limiter: instant attack within the block, slow release, never above the ceiling."""
        n = out.shape[0]
        if not n:
            return
        absb = self.absbuf[:n]
        np.abs(out, out=absb)
        peak = float(absb.max())
        target = CEILING / peak if peak * self.limiter_gain > CEILING else 1.0
        new = min(target, self.limiter_gain * RELEASE_PER_BLOCK, 1.0)
        if new <= self.limiter_gain or new - self.limiter_gain < 1e-6:
            if new != 1.0:
                out *= new
        else:  # releasing: ramp up across the block, from the old gain
            if self.ramp_n != n:
                self.ramp[:n] = np.arange(1, n + 1, dtype=np.float32) / n
                self.ramp_n = n
            ramp = self.scratch[:n]
            np.multiply(self.ramp[:n], new - self.limiter_gain, out=ramp)
            np.add(ramp, self.limiter_gain, out=ramp)
            np.multiply(out, ramp[:, None], out=out)
        self.limiter_gain = new
