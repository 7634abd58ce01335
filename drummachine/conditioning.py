"""What the model is conditioned on, shared by training and the runtime (pure numpy).

Per step: the style, the step in the bar, the bar in the phrase (categorical), and six numbers:
tempo (log scale) and the bar's cue attributes as *quantiles* of the training data — so an
intensity of 0.8 asks for a bar louder than 80% of the bars the model learned from. The tables
that make those quantiles, the style vocabulary and each style's typical values travel inside
the model file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import DrumMachineError

ANY_STYLE = "any"
QUANTILE_POINTS = 101
#: user-facing cue -> the measured attribute it is a quantile of
CUES = {"intensity": "loudness", "density": "density", "complexity": "complexity", "syncopation": "syncopation"}
BPM_RANGE = (40.0, 300.0)


def bpm_feature(bpm: float | np.ndarray) -> float | np.ndarray:
    return (np.log(bpm) - math.log(100.0)) / 0.5


@dataclass(frozen=True)
class Cues:
    """The knobs for one bar, each 0..1 (quantiles of the training data) and the fill flag."""

    intensity: float = 0.5
    density: float = 0.5
    complexity: float = 0.5
    syncopation: float = 0.5
    fill: bool = False

    def __post_init__(self):
        for name in CUES:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise DrumMachineError(name, f"{v!r} is out of range; allowed: 0..1")


@dataclass(frozen=True)
class Conditioning:
    """Vocabulary and tables that turn musical requests into model inputs."""

    styles: tuple[str, ...]  #: index 0 is "any"
    quantiles: dict[str, list[float]]  #: attribute -> its values at 0, 1, ..., 100 %
    style_defaults: dict[str, dict[str, float]] = field(default_factory=dict)  #: style -> cue medians
    style_bpm: dict[str, list[float]] = field(default_factory=dict)  #: style -> [low, median, high] bpm

    def style_index(self, style: str) -> int:
        try:
            return self.styles.index(style)
        except ValueError:
            raise DrumMachineError("style", f"unknown style {style!r}; allowed: {', '.join(self.styles)}") from None

    def quantile(self, attribute: str, raw: np.ndarray | float) -> np.ndarray:
        table = np.asarray(self.quantiles[attribute])
        return np.interp(raw, table, np.linspace(0.0, 1.0, len(table)))

    def value(self, attribute: str, q: np.ndarray | float) -> np.ndarray:
        """The inverse of ``quantile``: the raw attribute value at quantile q."""
        table = np.asarray(self.quantiles[attribute])
        return np.interp(q, np.linspace(0.0, 1.0, len(table)), table)

    def defaults(self, style: str) -> Cues:
        d = self.style_defaults.get(style, {})
        return Cues(**{k: float(d.get(k, 0.5)) for k in CUES})

    def cont(self, bpm, cues: Cues) -> np.ndarray:
        """The six continuous inputs for a step: bpm, intensity, density, complexity, syncopation, fill."""
        return np.array([bpm_feature(bpm), cues.intensity, cues.density, cues.complexity, cues.syncopation,
                         1.0 if cues.fill else 0.0], dtype=np.float32)

    def to_json(self) -> str:
        return json.dumps({"styles": list(self.styles), "quantiles": self.quantiles,
                           "style_defaults": self.style_defaults, "style_bpm": self.style_bpm})

    @staticmethod
    def from_json(text: str) -> "Conditioning":
        d = json.loads(text)
        return Conditioning(tuple(d["styles"]), d["quantiles"], d.get("style_defaults", {}), d.get("style_bpm", {}))

    @staticmethod
    def fit(styles: list[str], attrs: dict[str, np.ndarray], bar_styles: np.ndarray, bar_bpm: np.ndarray,
            ) -> "Conditioning":
        """Quantile tables and per-style defaults from the training bars' raw attributes."""
        points = np.linspace(0, 100, QUANTILE_POINTS)
        quantiles = {a: np.percentile(attrs[a], points).round(6).tolist() for a in CUES.values()}
        cond = Conditioning((ANY_STYLE, *styles), quantiles)
        defaults, bpms = {}, {}
        for s in styles:
            m = bar_styles == s
            if not m.any():
                continue
            defaults[s] = {cue: round(float(np.median(cond.quantile(attr, attrs[attr][m]))), 3)
                           for cue, attr in CUES.items()}
            bpms[s] = [float(np.percentile(bar_bpm[m], p)) for p in (5, 50, 95)]
        defaults[ANY_STYLE] = {cue: 0.5 for cue in CUES}
        bpms[ANY_STYLE] = [float(np.percentile(bar_bpm, p)) for p in (5, 50, 95)]
        return Conditioning(cond.styles, quantiles, defaults, bpms)


@dataclass(frozen=True)
class GeneratorStateLike:
    """The state a stand-in generator saves (see fake_generator)."""

    prev: object
    step: int
    rng_state: dict
