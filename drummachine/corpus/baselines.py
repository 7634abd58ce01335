"""Two simple predictors the model must beat, fitted in the same run as an evaluation.

- position frequency: P(voice hit | step in bar), with the mean velocity and offset there;
- first-order Markov over the step's hit pattern (which voices sound together):
  P(pattern_t | pattern_t-1), marginalized to each voice.

Sequences are (n, T, 3, 9) HVO windows with a (n, T) mask; a window starts from silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_PATTERNS = 1 << 9
EPS = 1e-6


def patterns(hits: np.ndarray) -> np.ndarray:
    """(..., 9) hits -> (...) pattern codes 0..511."""
    return ((hits > 0.5) * (1 << np.arange(9))).sum(axis=-1).astype(np.int64)


def bce(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@dataclass
class PositionFrequency:
    hit: np.ndarray  # (16, 9)
    velocity: np.ndarray  # (16, 9)
    offset: np.ndarray  # (16, 9)

    @staticmethod
    def fit(seq: np.ndarray, mask: np.ndarray, steps: int = 16) -> "PositionFrequency":
        pos = np.arange(seq.shape[1]) % steps
        hit = np.zeros((steps, 9))
        vel = np.zeros((steps, 9))
        off = np.zeros((steps, 9))
        for s in range(steps):
            sel = seq[:, pos == s][mask[:, pos == s] > 0]  # (n, 3, 9)
            h = sel[:, 0]
            hit[s] = (h.sum(0) + 1) / (len(h) + 2)
            n = np.maximum(h.sum(0), 1)
            vel[s] = (sel[:, 1] * h).sum(0) / n
            off[s] = (sel[:, 2] * h).sum(0) / n
        return PositionFrequency(hit, vel, off)

    def predict(self, seq: np.ndarray) -> np.ndarray:
        """(n, T, 3, 9): hit probability, velocity and offset for every step."""
        pos = np.arange(seq.shape[1]) % self.hit.shape[0]
        out = np.stack([self.hit[pos], self.velocity[pos], self.offset[pos]], axis=1)
        return np.broadcast_to(out, (seq.shape[0],) + out.shape).copy()


@dataclass
class MarkovPatterns:
    marginal: np.ndarray  # (512, 9): P(voice hit at t | pattern at t-1)

    @staticmethod
    def fit(seq: np.ndarray, mask: np.ndarray, alpha: float = 0.1) -> "MarkovPatterns":
        codes = patterns(seq[:, :, 0])
        prev = np.concatenate([np.zeros((codes.shape[0], 1), np.int64), codes[:, :-1]], axis=1)
        m = mask > 0
        counts = np.zeros((N_PATTERNS, N_PATTERNS))
        np.add.at(counts, (prev[m], codes[m]), 1.0)
        bits = ((np.arange(N_PATTERNS)[:, None] >> np.arange(9)) & 1).astype(np.float64)  # (512, 9)
        # add-alpha smoothing, spread with the overall pattern frequency rather than uniformly
        prior = counts.sum(0) + 1.0
        prior /= prior.sum()
        probs = (counts + alpha * N_PATTERNS * prior) / (counts.sum(1, keepdims=True) + alpha * N_PATTERNS)
        return MarkovPatterns(probs @ bits)

    def predict_hits(self, seq: np.ndarray) -> np.ndarray:
        codes = patterns(seq[:, :, 0])
        prev = np.concatenate([np.zeros((codes.shape[0], 1), np.int64), codes[:, :-1]], axis=1)
        return self.marginal[prev]  # (n, T, 9)


def prediction_metrics(p_hit: np.ndarray, velocity: np.ndarray, offset: np.ndarray, seq: np.ndarray,
                       mask: np.ndarray) -> dict[str, float]:
    """Hit NLL per voice-step (nats), hit F1 at 0.5, velocity and offset mean absolute error on true hits."""
    m = np.broadcast_to(mask[..., None] > 0, p_hit.shape)
    y = seq[:, :, 0]
    nll = float(bce(p_hit, y)[m].mean())
    pred = p_hit >= 0.5
    tp = float((pred & (y > 0.5) & m).sum())
    fp = float((pred & (y < 0.5) & m).sum())
    fn = float((~pred & (y > 0.5) & m).sum())
    f1 = 2 * tp / max(2 * tp + fp + fn, 1.0)
    on = (y > 0.5) & m
    return {"hit_nll": nll, "hit_f1": f1, "velocity_mae": float(np.abs(velocity - seq[:, :, 1])[on].mean()),
            "offset_mae": float(np.abs(offset - seq[:, :, 2])[on].mean())}


# --- the baselines as players: what each plays given a style and a length ----------------------

def padded(perf_bars: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Performances of (bars, 16, 3, 9) -> (n, T, 3, 9) step sequences and their (n, T) mask."""
    steps = [b.reshape(-1, *b.shape[2:]) for b in perf_bars]
    seq = np.zeros((len(steps), max(len(s) for s in steps)) + steps[0].shape[1:], np.float32)
    mask = np.zeros(seq.shape[:2], np.float32)
    for k, s in enumerate(steps):
        seq[k, :len(s)], mask[k, :len(s)] = s, 1.0
    return seq, mask


@dataclass
class BaselinePlayer:
    """A baseline that plays: hits sampled from its hit probabilities (position frequency: each
    step's own; Markov: given the pattern just played), velocity and offset the position's means.
    Fitted per style, as the instrument is told the style."""
    kind: str  # "position" or "markov"
    position: dict[str, PositionFrequency]
    markov: dict[str, MarkovPatterns]

    KINDS = ("position", "markov")

    @staticmethod
    def fit(kind: str, perf_bars: list[np.ndarray], styles: list[str]) -> "BaselinePlayer":
        if kind not in BaselinePlayer.KINDS:
            raise ValueError(f"baseline kind {kind!r}: one of {', '.join(BaselinePlayer.KINDS)}")
        position, markov = {}, {}
        for style in sorted(set(styles)):
            seq, mask = padded([b for b, s in zip(perf_bars, styles) if s == style])
            position[style] = PositionFrequency.fit(seq, mask)
            if kind == "markov":
                markov[style] = MarkovPatterns.fit(seq, mask)
        return BaselinePlayer(kind, position, markov)

    def play(self, style: str, bars: int, rng: np.random.Generator) -> np.ndarray:
        """(bars, 16, 3, 9): a performance of ``bars`` bars in ``style``."""
        pf = self.position[style]
        steps = pf.hit.shape[0]
        pos = np.arange(bars * steps) % steps
        if self.kind == "position":
            hits = (rng.random((bars * steps, 9)) < pf.hit[pos]).astype(np.float32)
        else:
            marginal, hits, prev = self.markov[style].marginal, np.zeros((bars * steps, 9), np.float32), 0
            for t in range(bars * steps):
                hits[t] = rng.random(9) < marginal[prev]
                prev = int(patterns(hits[t]))
        # a hit where the drummers never played that voice has no mean velocity there: the voice's own
        voice_velocity = np.array([v[v > 0].mean() if (v > 0).any() else 0.5 for v in pf.velocity.T])
        velocity = np.where(pf.velocity[pos] > 0, pf.velocity[pos], voice_velocity)
        out = np.stack([hits, velocity * hits, pf.offset[pos] * hits], axis=1)
        return out.reshape(bars, steps, 3, 9).astype(np.float32)
