"""The machine's own drums taken out of what it hears: an echo canceller, the kit's output its reference.

With a mic on stage (or a desk feed with the drums in it), the listening input holds the machine's
own kit beside the band, and the tracker follows whichever beat is louder: at about the band's
level it follows itself (docs/follow.md, "The machine hearing itself"). The kit's output is known
sample for sample, so the part of the input that is the kit as the room returned it can be
estimated and subtracted: acoustic echo cancellation, as a phone does with its loudspeaker.

The canceller is SpeexDSP's (Xiph, BSD licence; Debian's and Raspberry Pi OS's ``libspeexdsp1``),
called through ctypes: a multi-delay block frequency-domain adaptive filter that models the path
from the kit's output to the input (the sound card's latency, the air, the room's reflections) up
to ``TAIL_SECONDS`` long, and keeps adapting while the band plays over it (its step shrinks when
the input holds more than the echo). It works on the tracker's decimated signal (~16 kHz), in
frames of ``FRAME`` samples; the cleaned signal is what the tracker and the loudness read.

SpeexDSP takes DC out of the input first (a notch, -3 dB near 46 Hz at 16 kHz), so the cleaned
signal's lowest bass is a few dB down: the onset strength is a log magnitude, which a steady
gain in a band does not move (the band's beat alone scored the same with the canceller on:
docs/follow.md, "Taking its own kit out"), and the loudness moves with the band as before.

Without the library, or without a reference, nothing is subtracted: ``open_canceller`` says why
in one line and returns None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

FRAME = 128  #: samples per call (8 ms at 16 kHz)
#: how long a path the filter models: the sound card's latency both ways, the air from the
#: wedges (a few ms a metre) and the room's early reflections; the later reverb stays
TAIL_SECONDS = 0.25
#: the input is the kit alone, as far as the filter can tell: the cleaned signal this many dB
#: under the input over the frames where the kit played since the last call. A band about as loud
#: as the kit leaves 3-6 dB (SpeexDSP's DC notch takes a little of its bass too); the kit alone,
#: 8 dB after its first 400 ms, 15-25 once the filter has learned the path
KIT_ALONE_DB = 12.0
#: ... and over the kit's first notes, before the filter has learnt anything (on JACK the machine
#: starts playing as it starts listening: a rise the band's entry was taken for, and the band's
#: own entry then went unheard): that many seconds of the kit playing
KIT_LEARNING_SECONDS = 1.5
#: the kit's output is handed to the filter with its loudest hits within 24 dB of full scale:
#: SpeexDSP takes out as much as the reference is loud, whatever the input's level (its kit, a
#: room's path away: 31 dB with the reference's peaks at 0 dBFS, 27 at -12, 19 at -24, 2 at -36, the
#: echo in the input anywhere from -42 to 0 dBFS; docs/follow.md, "A quiet kit"). The kit leaves the
#: mixer at its own level (a soft intro, a Hydrogen kit recorded low), so its gain is set here, each
#: change a path the filter learns again: REF_FIRST_SECONDS after the kit's first note, its loudest
#: hit so far put 6 dB under full scale if it was under -18 dBFS; down at once (to 6 dB under it)
#: where a hit would pass full scale; up 6 dB where every hit stays under -24 dBFS for
#: REF_RAISE_SECONDS of the kit playing; never under 1. A kit at a usual level is left as it is: its
#: first learning undisturbed, and a rare hit past full scale (a mixer's sum) clipped as before
#: rather than the path learnt again in the middle of a song
REF_FIRST_SECONDS = 0.5
REF_RAISE_SECONDS = 8.0
REF_GAIN_LEAST, REF_GAIN_MOST = 1.0, 256.0
PLAYING = 64 / 32767.0  #: the kit plays in a frame: its peak over -54 dBFS as the filter gets it
#: the kit is in the input: over its learning the filter took at least this much out of it, its bass
#: left out (``removed_treble_db``: with no kit in the input -1.1 to 0.0 dB, the kit 12 dB under the
#: band to 6 dB over it 0.5-11.1, 1.4 or more in 38 of 40; 8 validation drummers' bands, offline:
#: docs/follow.md, "The band in the kit's first second")
KIT_HEARD_DB = 1.0
SPEEX_ECHO_SET_SAMPLING_RATE = 24
LIBRARY = "speexdsp"
SCALE = 32767.0

_lib = None


def _library():
    """libspeexdsp through ctypes, or None (with the reason) where it is not installed."""
    global _lib
    if _lib is None:
        path = ctypes.util.find_library(LIBRARY)
        for name in ([path] if path else []) + ["libspeexdsp.so.1", "libspeexdsp.so"]:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            _lib = False
            return None
        lib.speex_echo_state_init.restype = ctypes.c_void_p
        lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
        lib.speex_echo_state_reset.argtypes = [ctypes.c_void_p]
        lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        # the frames' addresses (int16, contiguous) are handed over as numbers: a numpy pointer type
        # checks each array at each call, a third of the call's cost (125 calls a second)
        lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] * 4
        lib.speex_echo_cancellation.restype = None
        _lib = lib
    return _lib or None


class OwnSoundCanceller:
    """Feed it the input and the kit's output, the same number of samples at ``rate`` (time-aligned
    as JACK delivers them: the kit's samples of a period beside the input's of that period); it
    returns the input less its estimate of the kit, in the same length (delayed by under a frame).

    ``removed_db`` says how much quieter the cleaned signal is than the input over the last
    second or so while the kit plays (the echo's return loss, with the band's part in both)."""

    def __init__(self, rate: float, tail_seconds: float = TAIL_SECONDS):
        lib = _library()
        if lib is None:
            raise OSError(f"lib{LIBRARY} is not installed (apt-get install libspeexdsp1)")
        self.lib = lib
        self.rate = int(round(rate))
        taps = FRAME * max(1, int(round(tail_seconds * self.rate / FRAME)))
        self.state = lib.speex_echo_state_init(FRAME, taps)
        if not self.state:
            raise OSError(f"lib{LIBRARY} could not make an echo canceller")
        r = ctypes.c_int(self.rate)
        lib.speex_echo_ctl(self.state, SPEEX_ECHO_SET_SAMPLING_RATE, ctypes.byref(r))
        self.pending_in = np.zeros(0, np.float32)
        self.pending_ref = np.zeros(0, np.float32)
        self.power_in = self.power_out = 0.0  # smoothed, over frames where the kit plays
        self.since_in = self.since_out = 0.0  # summed since ``kit_alone_since_asked`` was last called
        self.kit_frames = 0  # frames the kit has played in
        self.ref_gain = 1.0  # the kit's gain into the filter
        self.learning_from = 0  # ``kit_frames`` when the filter began learning (its first notes, a gain step)
        self.quiet_seconds = 0.0  # of the kit playing with every hit quiet enough to raise it
        self.first_peak: float | None = 0.0  # the loudest of its first notes (None: the gain is set)
        self.first_frames = 0
        self.gain_steps = 0  # changes of that gain (each one re-learnt)
        # the power of the input's second difference and of what is left's, over the frames where
        # the kit played while the filter learnt (since its last restart)
        self.learning_treble_in = self.learning_treble_out = 0.0

    def _reference_gain(self, peak: float) -> float:
        """The kit's gain into the filter for a frame whose loudest sample is ``peak``; a change
        starts the filter's learning again."""
        g = self.ref_gain
        first = self.first_peak is not None and (self.first_frames > 0 or peak * g > PLAYING)
        self.first_frames += first  # frames since its first note, until its gain is set from them
        if peak * g <= PLAYING and not first:
            return g
        if first:
            self.first_peak = max(self.first_peak, peak)
        if peak * g > 1.0 and g > 1.0:  # past full scale by the gain given here: 6 dB of room over it
            g = 2.0 ** math.floor(math.log2(0.5 / peak))
        elif first and self.first_frames * FRAME >= REF_FIRST_SECONDS * self.rate:
            if self.first_peak * g <= 0.125:  # 6 dB of room over the loudest of its first notes
                g = 2.0 ** math.floor(math.log2(0.5 / self.first_peak))
            self.first_peak = None
        elif self.first_peak is None and peak * g <= 0.0625:
            self.quiet_seconds += FRAME / self.rate
            if self.quiet_seconds >= REF_RAISE_SECONDS:
                g *= 2.0
        else:
            self.quiet_seconds = 0.0
        g = min(max(g, REF_GAIN_LEAST), REF_GAIN_MOST)
        if g != self.ref_gain:
            self.restart()
            self.learning_from = self.kit_frames
            self.gain_steps += 1
            self.ref_gain, self.quiet_seconds = g, 0.0
        return g

    def process(self, heard: np.ndarray, kit: np.ndarray) -> np.ndarray:
        """``heard`` less the kit; samples are framed, so the output lags by what waits for a frame."""
        heard_all = np.concatenate([self.pending_in, np.asarray(heard, np.float32)])
        kit_all = np.concatenate([self.pending_ref, np.asarray(kit, np.float32)])
        n = min(heard_all.size, kit_all.size) // FRAME
        self.pending_in, self.pending_ref = heard_all[n * FRAME:], kit_all[n * FRAME:]
        if n == 0:
            return np.zeros(0, np.float32)
        ins = np.clip(heard_all[:n * FRAME] * SCALE, -32768, 32767).astype(np.int16)
        kits = kit_all[:n * FRAME].reshape(n, FRAME)
        peaks = np.abs(kits).max(axis=1)
        gain_given = self.ref_gain
        refs = np.clip(kits * (gain_given * SCALE), -32768, 32767).astype(np.int16)
        outs = np.empty_like(ins)
        playing = np.zeros(n, bool)
        cancel, state, size = self.lib.speex_echo_cancellation, self.state, FRAME * ins.itemsize
        ins_at, refs_at, outs_at = ins.ctypes.data, refs.ctypes.data, outs.ctypes.data
        for i, peak in enumerate(peaks.tolist()):
            gain = self._reference_gain(peak)
            if gain != gain_given:  # from this frame on, at the kit's new gain
                refs[i:] = np.clip(kits[i:] * (gain * SCALE), -32768, 32767)
                gain_given = gain
            cancel(state, ins_at + i * size, refs_at + i * size, outs_at + i * size)
            playing[i] = peak * gain > PLAYING  # as the filter gets it: a quiet kit's tails play too
            self.kit_frames += playing[i]
        cleaned = outs.astype(np.float32)
        if self.learning and playing.any():
            self.learning_treble_in += self._treble_power(ins, n, playing)
            self.learning_treble_out += self._treble_power(outs, n, playing)
        # how much quieter, over the frames where the kit plays (over -54 dBFS)
        before = (ins.astype(np.float32).reshape(n, FRAME) ** 2).sum(axis=1)[playing]
        after = (cleaned.reshape(n, FRAME) ** 2).sum(axis=1)[playing]
        self.since_in += float(before.sum())
        self.since_out += float(after.sum())
        for b, a in zip(before.tolist(), after.tolist()):
            self.power_in += 0.01 * (b - self.power_in)
            self.power_out += 0.01 * (a - self.power_out)
        return (cleaned / SCALE).astype(np.float32)

    @staticmethod
    def _treble_power(x: np.ndarray, n: int, frames: np.ndarray) -> float:
        tilted = np.diff(x.astype(np.float32).reshape(n, FRAME)[frames], n=2, axis=1)
        return float(np.sum(tilted ** 2))

    @property
    def removed_treble_db(self) -> float:
        """How much quieter the input came out, its bass left out, over the frames the kit played in
        while the filter learnt (0: nothing to tell). Measured on the signals' second differences (a
        12 dB an octave tilt: the bass 24 dB down at 250 Hz against 1 kHz): SpeexDSP's DC notch takes
        3-5 dB of a band's bass whether the kit is in the input or not, and ``removed_db`` said 2-5 dB
        over the learning with no kit in the input at all (this: -1.1 to 0.0; docs/follow.md)."""
        if self.learning_treble_in <= 0.0 or self.learning_treble_out <= 0.0:
            return 0.0
        return 10.0 * math.log10(self.learning_treble_in / self.learning_treble_out)

    def restart(self) -> None:
        """Learn the path afresh (the kit is now read elsewhere against the input); the kit's
        first seconds (``KIT_LEARNING_SECONDS``) are not counted again, and the samples waiting for
        a frame are kept (dropped, every onset after would be heard that much early)."""
        self.lib.speex_echo_state_reset(self.state)
        self.power_in = self.power_out = 0.0
        self.learning_treble_in = self.learning_treble_out = 0.0

    @property
    def learning(self) -> bool:
        """The filter has not yet learnt over ``KIT_LEARNING_SECONDS`` of the kit playing."""
        return (self.kit_frames - self.learning_from) * FRAME < KIT_LEARNING_SECONDS * self.rate

    @property
    def removed_db(self) -> float:
        if self.power_in <= 0.0 or self.power_out <= 0.0:
            return 0.0
        return 10.0 * float(np.log10(self.power_in / self.power_out))

    def kit_alone_since_asked(self) -> bool:
        """Whether the input since the last call was the kit alone (``KIT_ALONE_DB``, or the kit's
        first ``KIT_LEARNING_SECONDS``); False where the kit did not play. Starts the next window."""
        before, after = self.since_in, self.since_out
        self.since_in = self.since_out = 0.0
        return before > 0.0 and (self.learning or before >= after * 10 ** (KIT_ALONE_DB / 10))

    def close(self) -> None:
        if self.state:
            self.lib.speex_echo_state_destroy(self.state)
            self.state = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def open_canceller(rate: float, tail_seconds: float = TAIL_SECONDS) -> tuple[OwnSoundCanceller | None, str]:
    """A canceller, or None and the reason in words."""
    try:
        return OwnSoundCanceller(rate, tail_seconds), ""
    except OSError as exc:
        return None, str(exc)
