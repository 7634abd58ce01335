"""Bar-aligned windows of the dataset with augmentation and conditioning: what the model trains and
is evaluated on (numpy only; shared by training and `drummachine evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drummachine.core import attributes
from drummachine.core.conditioning import AUTO, N_CONT, Conditioning, bpm_feature, palette_features, palette_of
from drummachine.core.transport import STEPS_PER_BAR
from drummachine.corpus.dataset import Dataset

STEPS = STEPS_PER_BAR  # the model plays 4/4 (16 steps a bar); other meters stay in the dataset, unused here
#: in training, the palette is hidden from the model for a whole window this often...
PALETTE_ALL_AUTO = 0.25
#: ...and otherwise voice by voice this often, so that it learns to play with any part of it set
PALETTE_VOICE_AUTO = 0.3


@dataclass(frozen=True)
class Augment:
    """Random transformations of a window; each is applied with its own probability."""

    tempo: float = 0.15  #: bpm scaled by up to this factor either way
    velocity: float = 0.2  #: velocities scaled by up to this factor either way
    timing: float = 0.3  #: offsets scaled by up to this factor either way
    voice_dropout: float = 0.15  #: chance to silence one voice (not kick or snare) in a window
    ride_hat_swap: float = 0.15  #: chance to swap ride and closed hat

    @staticmethod
    def none() -> "Augment":
        return Augment(0.0, 0.0, 0.0, 0.0, 0.0)


def fit_conditioning(ds: Dataset) -> Conditioning:
    """Quantile tables and style vocabulary from the 4/4 bars of the train split."""
    m = (ds.bar_file("split") == "train") & (ds.bars["steps"] == STEPS)
    styles = sorted(set(ds.bar_file("genre")[m].tolist()))
    attrs = {k: ds.bars[k][m] for k in ("density", "loudness", "complexity", "syncopation")}
    return Conditioning.fit(styles, attrs, ds.bar_file("genre")[m], ds.bar_file("bpm")[m])


class Windows:
    """Bar-aligned windows of up to ``bars`` bars from the 4/4 performances of one split."""

    def __init__(self, ds: Dataset, split: str, cond: Conditioning, bars: int = 8):
        self.ds, self.cond, self.bars = ds, cond, bars
        file_ok = (ds.files["split"] == split) & (ds.files["meter"] == "4/4")
        self.files = np.nonzero(file_ok)[0]
        first = np.full(len(ds.files["path"]), -1)
        count = np.bincount(ds.bars["file"], minlength=len(first))
        for i in range(ds.n_bars - 1, -1, -1):
            first[ds.bars["file"][i]] = i
        self.first, self.count = first[self.files], count[self.files]
        self.style_index = np.array([cond.styles.index(g) if g in cond.styles else 0
                                     for g in ds.files["genre"][self.files]])
        self.weights = self.count / self.count.sum()

    @property
    def total_bars(self) -> int:
        return int(self.count.sum())

    def all_windows(self) -> list[tuple[int, int, int]]:
        """Every non-overlapping window, in order: (file slot, first bar, bars)."""
        out = []
        for slot, n in enumerate(self.count):
            for b in range(0, n, self.bars):
                out.append((slot, b, min(self.bars, n - b)))
        return out

    def random_windows(self, n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
        slots = rng.choice(len(self.files), size=n, p=self.weights)
        out = []
        for s in slots:
            start = int(rng.integers(0, self.count[s]))
            out.append((int(s), start, int(min(self.bars, self.count[s] - start))))
        return out

    def batch(self, windows, rng: np.random.Generator | None = None, augment: Augment = Augment.none(),
              style_dropout: float = 0.0, palette: str = "auto", palette_rng: np.random.Generator | None = None):
        """Arrays for a batch: target (B, T, 3, 9), mask (B, T), cats (B, T, 3), cont (B, T, N_CONT).

        ``palette``: "auto" hides every bar's kit palette from the model, "known" shows it, "masked"
        shows it partly at random (training), drawing from ``palette_rng`` (default: ``rng``).
        """
        if palette not in ("auto", "known", "masked"):
            raise ValueError(f"palette {palette!r}")
        palette_rng = palette_rng or rng
        if palette == "masked" and palette_rng is None:
            raise ValueError("palette='masked' needs a random generator")
        B, T = len(windows), self.bars * STEPS
        target = np.zeros((B, T, 3, 9), np.float32)
        mask = np.zeros((B, T), np.float32)
        cats = np.zeros((B, T, 3), np.int64)
        cont = np.zeros((B, T, N_CONT), np.float32)
        for i, (slot, start, nbars) in enumerate(windows):
            bar0 = self.first[slot] + start
            idx = np.arange(bar0, bar0 + nbars)
            hvo = self.ds.bar_hvo(idx, STEPS).copy()  # (n, 16, 3, 9)
            bpm = float(self.ds.files["bpm"][self.files[slot]])
            if rng is not None:
                hvo, bpm = self._augment(hvo, bpm, rng, augment)
            n = nbars * STEPS
            target[i, :n] = hvo.reshape(n, 3, 9)
            mask[i, :n] = 1.0
            style = self.style_index[slot]
            if rng is not None and rng.random() < style_dropout:
                style = 0
            cats[i, :, 0] = style
            cats[i, :, 1] = np.arange(T) % STEPS
            bar_in_file = np.arange(T) // STEPS + self.ds.bars["index"][bar0]
            cats[i, :, 2] = bar_in_file % 4
            c = self.cond
            per_bar = np.stack([
                np.full(nbars, bpm_feature(bpm)),
                c.quantile("loudness", attributes.loudness(hvo)),
                c.quantile("density", attributes.density(hvo)),
                c.quantile("complexity", attributes.complexity(hvo)),
                c.quantile("syncopation", attributes.syncopation(hvo)),
                self.ds.bars["fill"][idx].astype(np.float32),
            ], axis=1).astype(np.float32)
            pal = palette_of(hvo)  # measured after augmentation: a swapped ride is a ride
            if palette == "auto":
                pal[:] = AUTO
            elif palette == "masked":
                if palette_rng.random() < PALETTE_ALL_AUTO:
                    pal[:] = AUTO
                else:
                    pal[:, palette_rng.random(pal.shape[1]) < PALETTE_VOICE_AUTO] = AUTO
            per_bar = np.concatenate([per_bar, palette_features(pal)], axis=1)
            cont[i, :n] = np.repeat(per_bar, STEPS, axis=0)
        return target, mask, cats, cont

    @staticmethod
    def _augment(hvo, bpm, rng, a: Augment):
        hits = hvo[:, :, 0]
        if a.tempo:
            bpm = float(np.clip(bpm * rng.uniform(1 - a.tempo, 1 + a.tempo), 40, 300))
        if a.velocity:
            hvo[:, :, 1] = np.clip(hvo[:, :, 1] * rng.uniform(1 - a.velocity, 1 + a.velocity), 0.0, 1.0) * hits
            hvo[:, :, 1] = np.where(hits > 0, np.maximum(hvo[:, :, 1], 1 / 127), 0.0)
        if a.timing:
            hvo[:, :, 2] = np.clip(hvo[:, :, 2] * rng.uniform(1 - a.timing, 1 + a.timing), -0.5, 0.5)
        if rng.random() < a.ride_hat_swap:
            hvo[..., [2, 8]] = hvo[..., [8, 2]]
        if rng.random() < a.voice_dropout:
            v = int(rng.integers(2, 9))
            hvo[..., v] = 0.0
        return hvo, bpm
