"""Turning the model's outputs for one step into hits, velocities and offsets (pure numpy).

Per voice the model gives a hit logit and, for a hit, categorical logits over velocity bins
(0..1) and offset bins (-0.5..0.5 step). A sampled value is drawn uniformly inside its bin, so
the spread of the real data survives. Steering: a temperature for everything, and a bias per
voice added to the hit logits (positive: busier, negative: sparser; -inf mutes). A model file
may also carry a velocity tilt per voice: ``tilt * bin centre`` added to the velocity logits, the
smallest change of the model's velocity distribution that moves its mean (positive: louder).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_VOICES = 9


@dataclass(frozen=True)
class Steering:
    """How to sample: temperature (0 = always the most likely) and per-voice hit bias in logits."""

    temperature: float = 1.0
    timing_temperature: float = 1.0  #: temperature of velocity and offset choices
    voice_bias: tuple[float, ...] = field(default_factory=lambda: (0.0,) * N_VOICES)


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def split(logits: np.ndarray, vel_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., 9, 1+V+O) -> hit logits (..., 9), velocity logits (..., 9, V), offset logits (..., 9, O)."""
    return logits[..., 0], logits[..., 1:1 + vel_bins], logits[..., 1 + vel_bins:]


def expected(logits: np.ndarray, vel_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hit probability and the expected velocity and offset given a hit (for evaluation)."""
    h, v, o = split(logits, vel_bins)
    vc = (np.arange(v.shape[-1]) + 0.5) / v.shape[-1]
    oc = (np.arange(o.shape[-1]) + 0.5) / o.shape[-1] - 0.5
    return sigmoid(h), softmax(v) @ vc, softmax(o) @ oc


def _draw(logits: np.ndarray, temperature: float, u: np.ndarray) -> np.ndarray:
    """One category per row from logits, by inverse CDF with uniforms ``u`` (rows,)."""
    if temperature <= 1e-6:
        return logits.argmax(axis=-1)
    z = logits if temperature == 1.0 else logits / temperature
    cdf = np.exp(z - z.max(axis=-1, keepdims=True)).cumsum(axis=-1)
    idx = (cdf < u[:, None] * cdf[:, -1:]).sum(axis=-1)
    return np.minimum(idx, logits.shape[-1] - 1)


_CENTRES: dict[int, np.ndarray] = {}


def _centres(bins: int) -> np.ndarray:
    """Velocity bin centres 0..1, made once per bin count."""
    c = _CENTRES.get(bins)
    if c is None:
        c = _CENTRES[bins] = (np.arange(bins) + 0.5) / bins
    return c


def sample_step(logits: np.ndarray, vel_bins: int, steering: Steering, rng: np.random.Generator,
                hit_probability: np.ndarray | None = None, calibration: np.ndarray | None = None,
                floor: np.ndarray | None = None, velocity_tilt: np.ndarray | None = None):
    """Sample one step: logits (9, 1+V+O) -> hits (9,) bool, velocities (9,), offsets (9,).

    ``hit_probability`` optionally overrides the hit probabilities (after steering);
    ``calibration`` is the model's own per-voice hit bias for the style (see training/calibrate.py);
    ``floor`` a lower bound on the hit probabilities (conditioning.due_floor), except where the bias
    silences a voice (a mute, the palette's off); ``velocity_tilt`` (9,) tilts each voice's velocity
    distribution (see the module's doc). It runs once per 16th step on a small CPU, so it is
    written for few numpy calls.
    """
    h, v, o = logits[:, 0], logits[:, 1:1 + vel_bins], logits[:, 1 + vel_bins:]
    if velocity_tilt is not None:
        v = v + velocity_tilt[:, None] * _centres(vel_bins)
    bias = steering.voice_bias
    bias = calibration if not any(bias) else np.add(bias, 0.0 if calibration is None else calibration)
    x = h if bias is None else h + bias
    if steering.temperature <= 1e-6:
        p = (x > 0).astype(np.float64)
    else:
        if steering.temperature != 1.0:
            x = x / steering.temperature
        p = 1.0 / (1.0 + np.exp(-x))
    if floor is not None:
        p = np.maximum(p, floor) if bias is None else np.where(np.isneginf(bias), p, np.maximum(p, floor))
    if hit_probability is not None:
        p = hit_probability
    u = rng.random((4, N_VOICES))
    hits = u[0] < p
    vi = _draw(v, steering.timing_temperature, u[1])
    oi = _draw(o, steering.timing_temperature, u[2])
    jitter = rng.random((2, N_VOICES))
    vel = (vi + jitter[0]) * (hits / v.shape[-1])
    off = np.where(hits, (oi + jitter[1]) / o.shape[-1] - 0.5, 0.0)
    return hits, np.clip(vel, 1.0 / 127.0, 1.0) * hits, off
