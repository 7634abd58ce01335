"""Onset strength's first step: log-magnitude spectral flux in bands, frame by frame (numpy only).

A 32 ms window every 5 ms at the analysis rate (~16 kHz, ``tracker.ANALYSIS_RATE``); the flux is
summed over log-spaced bands, so that the few bins of a kick count as much as the many of a
snare's wires, each band weighted by its frequency (BAND_HZ -> BAND_WEIGHT): the beat lives in the
kick, the bass and the backbeat more than in the hats, which play the off-beats as much as the
beats (with plain per-bin flux, 2 of 8 drummers were tracked on the off-beat). Causal: a frame
is computed once its window is whole. ``listen.tracker`` turns it into tempo and beat.
"""

from __future__ import annotations

import numpy as np

WINDOW = 512  #: FFT window at the analysis rate (32 ms)
N_BANDS = 16
BAND_EDGES = (40.0, 8000.0)
BAND_HZ = (60.0, 200.0, 2000.0, 6000.0)
BAND_WEIGHT = (2.0, 2.0, 1.0, 0.5)


def decimated(carry: np.ndarray, x: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """To the analysis rate: ``x`` after what was carried, averaged in groups of ``factor``; and what is left over."""
    x = np.concatenate([carry, x])
    usable = x.size - x.size % factor
    return x[:usable].reshape(-1, factor).mean(axis=1), x[usable:]


class AntiAliased:
    """The input and the machine's kit beside it to the analysis rate for the echo canceller
    (``listen.own_sound``): low-passed first (a windowed sinc, -6 dB at ``CUTOFF`` of the analysis
    rate), then decimated. The plain average folds the hats' and the cymbals' top octave into the
    band under 8 kHz, differently for the kit as it left and for the kit after the room's delays,
    which no filter the canceller learns can undo: with it a stage's path on JACK at 48 kHz was
    taken 6-8 dB out at the kit's quietest moments and 19 dB overall, low-passed 16 and 24
    (docs/follow.md, "The band's entry over its own kit"). The filter's delay is taken off (its
    first outputs dropped): sample for sample where the plain average puts them, 0.7 ms later.
    Not soxr's stream (the project's resampler): on the same recording its quick filter left the
    kit 12 dB out (worse than the plain average), its medium one 25 (as this) but holds its output
    back 12 ms, its high one 39 ms: time the tracker's readings would be late by."""

    CUTOFF = 0.40625  #: of the analysis rate (6.5 kHz at 16 kHz)

    def __init__(self, factor: int):
        self.factor = factor
        taps = 22 * factor - 1  # 65 at 48 kHz
        t = np.arange(taps) - (taps - 1) / 2
        h = np.sinc(2 * self.CUTOFF / factor * t) * np.blackman(taps)
        self.h = (h / h.sum()).astype(np.float32)
        self.history = [np.zeros(taps - 1, np.float32) for _ in range(2)]
        self.skip = [(taps - 1) // 2] * 2  # outputs still to drop (the filter's delay)
        self.carry = [np.zeros(0, np.float32) for _ in range(2)]

    def __call__(self, x: np.ndarray, kit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.factor == 1:
            return x, kit
        out = []
        for c, y in enumerate((x, kit)):
            y = np.concatenate([self.history[c], y])
            self.history[c] = y[-self.h.size + 1:]
            y = np.convolve(y, self.h, mode="valid").astype(np.float32)
            drop = min(self.skip[c], y.size)
            self.skip[c] -= drop
            y, self.carry[c] = decimated(self.carry[c], y[drop:], self.factor)
            out.append(y)
        return out[0], out[1]


class SpectralFlux:
    """Feed it decimated mono samples (``frames``); it returns the flux of each frame completed."""

    def __init__(self, rate: float, hop: int):
        self.hop = hop
        self.hann = np.hanning(WINDOW).astype(np.float32)
        freqs = np.fft.rfftfreq(WINDOW, 1.0 / rate)
        edges = np.geomspace(BAND_EDGES[0], min(BAND_EDGES[1], rate / 2), N_BANDS + 1)
        band_of = np.searchsorted(edges, freqs, side="right") - 1
        self.bands = np.zeros((freqs.size, N_BANDS), np.float32)  # mean magnitude per band
        for b in range(N_BANDS):
            inside = band_of == b
            if not inside.any():  # a band narrower than a bin: the nearest bin
                inside = np.arange(freqs.size) == int(np.argmin(np.abs(freqs - np.sqrt(edges[b] * edges[b + 1]))))
            self.bands[inside, b] = 1.0 / inside.sum()
        centres = np.sqrt(edges[:-1] * edges[1:])
        self.band_weight = np.interp(np.log2(centres), np.log2(BAND_HZ), BAND_WEIGHT).astype(np.float32)
        self.pending = np.zeros(0, np.float32)  # samples not yet framed
        self.prev_spec = None

    def frames(self, x: np.ndarray) -> np.ndarray:
        """The flux of every frame ``x`` completes (none if it completes none)."""
        buf = np.concatenate([self.pending, x])
        n = (buf.size - WINDOW) // self.hop + 1 if buf.size >= WINDOW else 0
        if n <= 0:
            self.pending = buf
            return np.zeros(0, np.float32)
        idx = np.arange(WINDOW)[None, :] + self.hop * np.arange(n)[:, None]
        frames = buf[idx] * self.hann
        self.pending = buf[n * self.hop:]
        spec = np.log1p(100.0 * (np.abs(np.fft.rfft(frames, axis=1)) @ self.bands)).astype(np.float32)
        prev = np.concatenate([[self.prev_spec if self.prev_spec is not None else spec[0]], spec[:-1]])
        self.prev_spec = spec[-1]
        return (np.maximum(spec - prev, 0.0) * self.band_weight).sum(axis=1)
