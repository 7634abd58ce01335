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
        pointer = np.ctypeslib.ndpointer(np.int16, flags="C_CONTIGUOUS")
        lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p, pointer, pointer, pointer]
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
        self.out = np.zeros(FRAME, np.int16)
        self.power_in = self.power_out = 0.0  # smoothed, over frames where the kit plays
        self.since_in = self.since_out = 0.0  # summed since ``kit_alone_since_asked`` was last called
        self.kit_frames = 0  # frames the kit has played in

    def process(self, heard: np.ndarray, kit: np.ndarray) -> np.ndarray:
        """``heard`` less the kit; samples are framed, so the output lags by what waits for a frame."""
        heard_all = np.concatenate([self.pending_in, np.asarray(heard, np.float32)])
        kit_all = np.concatenate([self.pending_ref, np.asarray(kit, np.float32)])
        n = min(heard_all.size, kit_all.size) // FRAME
        self.pending_in, self.pending_ref = heard_all[n * FRAME:], kit_all[n * FRAME:]
        if n == 0:
            return np.zeros(0, np.float32)
        ins = np.clip(heard_all[:n * FRAME] * SCALE, -32768, 32767).astype(np.int16)
        refs = np.clip(kit_all[:n * FRAME] * SCALE, -32768, 32767).astype(np.int16)
        outs = np.empty_like(ins)
        for i in range(n):
            part = slice(i * FRAME, (i + 1) * FRAME)
            self.lib.speex_echo_cancellation(self.state, ins[part], refs[part], self.out)
            outs[part] = self.out
        cleaned = outs.astype(np.float32)
        # how much quieter, over the frames where the kit plays (over -54 dBFS)
        playing = np.abs(refs.reshape(n, FRAME)).max(axis=1) > 64
        before = (ins.astype(np.float32).reshape(n, FRAME) ** 2).sum(axis=1)[playing]
        after = (cleaned.reshape(n, FRAME) ** 2).sum(axis=1)[playing]
        self.kit_frames += int(playing.sum())
        self.since_in += float(before.sum())
        self.since_out += float(after.sum())
        for b, a in zip(before.tolist(), after.tolist()):
            self.power_in += 0.01 * (b - self.power_in)
            self.power_out += 0.01 * (a - self.power_out)
        return (cleaned / SCALE).astype(np.float32)

    def restart(self) -> None:
        """Learn the path afresh (the kit is now read elsewhere against the input); the kit's
        first seconds (``KIT_LEARNING_SECONDS``) are not counted again, and the samples waiting for
        a frame are kept (dropped, every onset after would be heard that much early)."""
        self.lib.speex_echo_state_reset(self.state)
        self.power_in = self.power_out = 0.0

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
        learning = self.kit_frames * FRAME < KIT_LEARNING_SECONDS * self.rate
        return before > 0.0 and (learning or before >= after * 10 ** (KIT_ALONE_DB / 10))

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
