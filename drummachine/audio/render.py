"""Mixing drum hits into audio at their exact sample, with choke groups and a safety limiter."""

from __future__ import annotations

import numpy as np

from drummachine.audio.kit import Kit

CHOKE_FADE_SECONDS = 0.004
CEILING = 0.891  # -1 dBFS
#: hits of one voice that ring at once: a new hit fades out the one this many hits before it (one
#: cymbal struck again does not ring twice; and a sampled kit's long tails would keep the mixer busy)
POLYPHONY = 4


def render(kit: Kit, onsets: np.ndarray, voices: np.ndarray, velocities: np.ndarray,
           frames: int | None = None) -> np.ndarray:
    """Mix hits into a (frames, 2) float32 buffer.

    ``onsets`` are sample indices (int); each hit's sample starts exactly there. A hit of a
    choking voice (closed hat; the kit's mute groups) fades out any ringing voice it chokes (open
    hat) from its onset. Round robins start from their first layer: a render is reproducible.
    """
    kit.rewind()
    onsets = np.asarray(onsets, dtype=np.int64)
    voices = np.asarray(voices, dtype=np.int64)
    velocities = np.asarray(velocities, dtype=np.float64)
    order = np.argsort(onsets, kind="stable")
    onsets, voices, velocities = onsets[order], voices[order], velocities[order]
    if frames is None:
        frames = int(onsets[-1]) + kit.longest if onsets.size else 0
    left = np.zeros(frames, np.float32)
    right = np.zeros(frames, np.float32)
    scratch = np.empty(kit.longest, np.float32)
    pans = kit.pan_gains()
    fade = max(1, int(CHOKE_FADE_SECONDS * kit.sample_rate))
    ramp = np.linspace(1.0, 0.0, fade, dtype=np.float32)
    # for each choked voice: the onsets of the voices that choke it
    chokers = {}
    for choker, victims in kit.chokes.items():
        for victim in victims:
            chokers.setdefault(victim, []).append(onsets[voices == choker])
    choke_times = {v: np.sort(np.concatenate(c)) for v, c in chokers.items()}
    # the onset of the hit POLYPHONY hits later of the same voice, which cuts this one (-1: none)
    self_cut = np.full(onsets.size, -1, np.int64)
    for v in np.unique(voices):
        hits = np.flatnonzero(voices == v)
        self_cut[hits[:-POLYPHONY]] = onsets[hits[POLYPHONY:]]
    for start, voice, vel, later in zip(onsets.tolist(), voices.tolist(), velocities.tolist(), self_cut.tolist()):
        if start >= frames or start < 0:
            continue
        sample, gain = kit.sample(voice, vel)
        length = min(len(sample), frames - start)
        seg = scratch[:length]
        np.multiply(sample[:length], np.float32(gain), out=seg)
        cut = later - start if later >= 0 else length
        if voice in choke_times:
            times = choke_times[voice]
            k = np.searchsorted(times, start, side="right")
            if k < times.size:
                cut = min(cut, int(times[k] - start))
        if cut < length:
            tail = min(fade, length - cut)
            seg[cut:cut + tail] *= ramp[:tail]
            length = cut + tail
            seg = seg[:length]
        gl, gr = pans[voice]
        left[start:start + length] += seg * gl
        right[start:start + length] += seg * gr
    out = np.stack([left, right], axis=1)
    return out


def normalize(buffer: np.ndarray, ceiling: float = CEILING) -> np.ndarray:
    """Scale an offline mix down so its peak sits at ``ceiling`` (never up)."""
    peak = float(np.max(np.abs(buffer))) if buffer.size else 0.0
    if peak > ceiling:
        buffer = buffer * np.float32(ceiling / peak)
    return buffer
