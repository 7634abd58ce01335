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

from drummachine.core.voices import N_VOICES



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
    h = logits[:, 0]
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
    # every uniform of the step in one draw: the hits, the two jitters inside a bin, and one per
    # velocity and offset bin for the Gumbel-max draw of the categories
    bins = logits.shape[1] - 1
    r = rng.random(N_VOICES * (3 + bins))
    u = r[:3 * N_VOICES].reshape(3, N_VOICES)
    hits = u[0] < p
    # the velocity and offset logits side by side, (9, V + O); a category per voice is drawn from
    # each half as the argmax of logits / temperature plus Gumbel noise: an exact draw from the
    # softmax, without its normalisation and cumulative sums
    scores = logits[:, 1:]
    if velocity_tilt is not None:
        scores = np.array(scores, np.float64)
        scores[:, :vel_bins] += np.multiply.outer(velocity_tilt, _centres(vel_bins))
    t = steering.timing_temperature
    if t > 1e-6:
        if t != 1.0:
            scores = scores / t
        with np.errstate(divide="ignore"):  # a uniform of exactly 0: -inf, a category never drawn
            scores = scores - np.log(-np.log(r[3 * N_VOICES:].reshape(N_VOICES, bins)))
    vi = scores[:, :vel_bins].argmax(axis=1)
    oi = scores[:, vel_bins:].argmax(axis=1)
    vel = np.maximum((vi + u[1]) * (1.0 / vel_bins), 1.0 / 127.0) * hits
    off = np.where(hits, (oi + u[2]) * (1.0 / (bins - vel_bins)) - 0.5, 0.0)
    return hits, vel, off
