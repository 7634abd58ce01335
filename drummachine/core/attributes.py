"""Per-bar attributes measured from the performance: what steers the model live.

Every function takes bars as a (bars, steps, 3, voices) HVO array and returns one value per bar.
"""

from __future__ import annotations

import numpy as np

from drummachine.core.voices import N_VOICES, SNARE, TOMS

ATTRIBUTES = ("density", "loudness", "syncopation", "complexity", "fill_score")
FILL_VOICES = (SNARE,) + TOMS  # snare and toms carry a fill


def metrical_level(steps: int) -> np.ndarray:
    """0 on beats (quarter notes), 1 on 8th off-beats, 2 on 16th off-beats."""
    s = np.arange(steps)
    return np.where(s % 4 == 0, 0, np.where(s % 2 == 0, 1, 2))


def density(bars: np.ndarray) -> np.ndarray:
    """Hits per step (all voices)."""
    return bars[:, :, 0].sum(axis=(1, 2)) / bars.shape[1]


def loudness(bars: np.ndarray) -> np.ndarray:
    """Mean velocity (0..1) of the bar's hits; 0 for an empty bar."""
    hits = bars[:, :, 0]
    n = hits.sum(axis=(1, 2))
    return np.where(n > 0, (bars[:, :, 1] * hits).sum(axis=(1, 2)) / np.maximum(n, 1), 0.0)


def syncopation(bars: np.ndarray) -> np.ndarray:
    """Share of the bar's accent weight on off-beats: 0 all on beats, 1 all on 16th off-beats."""
    hits = bars[:, :, 0]
    weight = hits * np.maximum(bars[:, :, 1], 0.05)
    level = metrical_level(bars.shape[1])[None, :, None] / 2.0
    total = weight.sum(axis=(1, 2))
    return np.where(total > 0, (weight * level).sum(axis=(1, 2)) / np.maximum(total, 1e-9), 0.0)


def complexity(bars: np.ndarray) -> np.ndarray:
    """Normalized entropy of the bar's step patterns (which voices sound together): 0..1."""
    hits = bars[:, :, 0] > 0.5
    codes = (hits * (1 << np.arange(N_VOICES))).sum(axis=2)  # (bars, steps)
    steps = codes.shape[1]
    out = np.zeros(codes.shape[0])
    for i, row in enumerate(codes):
        _, counts = np.unique(row, return_counts=True)
        p = counts / steps
        out[i] = -(p * np.log2(p)).sum() / np.log2(steps)
    return out


def fill_activity(bars: np.ndarray) -> np.ndarray:
    """Hits on snare and toms per step, toms counted double: how much a bar moves around the kit."""
    hits = bars[:, :, 0]
    return (hits[:, :, 1].sum(axis=1) + 2.0 * hits[:, :, list(TOMS)].sum(axis=(1, 2))) / bars.shape[1]


def fill_score(bars: np.ndarray) -> np.ndarray:
    """Fill activity above the performance's typical bar (its median): > 0 busier than usual."""
    activity = fill_activity(bars)
    return activity - np.median(activity) if activity.size else activity


def measure(bars: np.ndarray) -> dict[str, np.ndarray]:
    """All attributes of the bars of one performance (fill_score is relative to that performance)."""
    return {
        "density": density(bars).astype(np.float32),
        "loudness": loudness(bars).astype(np.float32),
        "syncopation": syncopation(bars).astype(np.float32),
        "complexity": complexity(bars).astype(np.float32),
        "fill_score": fill_score(bars).astype(np.float32),
    }


def detect_fills(bars: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """Bars of a long groove that stand out as fills: busy on snare/toms against the groove's median.

    Validated against the dataset's labelled fill performances (see the dataset report).
    """
    score = fill_score(bars)
    toms = bars[:, :, 0][:, :, list(TOMS)].sum(axis=(1, 2))
    return (score >= threshold) & (toms >= 2)
