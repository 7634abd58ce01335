"""What the model is conditioned on, shared by training and the runtime (pure numpy).

Per step: the style, the step in the bar, the bar in the phrase (categorical), six numbers —
tempo (log scale) and the bar's cue attributes as *quantiles* of the training data, so an
intensity of 0.8 asks for a bar louder than 80% of the bars the model learned from — and the
bar's *kit palette*: for each voice, whether the drummer plays it in this bar, does not, or it
is left to the model. The palette is what a drummer decides before the bar (ride or hi-hat,
toms or not) and what no style label says: the same "rock" is ridden on the hat by one drummer
and on the ride by another. The tables that make the quantiles, the style vocabulary and each
style's typical values travel inside the model file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from drummachine.core.errors import DrumMachineError
from drummachine.core.voices import N_VOICES, VOICE_NAMES

ANY_STYLE = "any"
QUANTILE_POINTS = 101
#: user-facing cue -> the measured attribute it is a quantile of
CUES = {"intensity": "loudness", "density": "density", "complexity": "complexity", "syncopation": "syncopation"}
#: the continuous inputs: six cues, then per voice "palette known", then per voice "played"
CONT_NAMES = ("bpm", "intensity", "density", "complexity", "syncopation", "fill",
              *(f"known_{v}" for v in VOICE_NAMES), *(f"on_{v}" for v in VOICE_NAMES))
N_CONT = len(CONT_NAMES)
AUTO, ON, OFF = 0, 1, -1
NO_PALETTE: tuple[int, ...] = (AUTO,) * N_VOICES
CLOSED_HAT, OPEN_HAT, RIDE = (VOICE_NAMES.index(v) for v in ("closed_hat", "open_hat", "ride"))
#: what keeps time: the cymbal choice a musician makes per section
CYMBALS: dict[str, dict[int, int]] = {
    "auto": {},
    "hats": {CLOSED_HAT: ON, RIDE: OFF},
    "open_hats": {OPEN_HAT: ON, RIDE: OFF},
    "ride": {RIDE: ON, CLOSED_HAT: OFF, OPEN_HAT: OFF},
}


def cymbal_palette(name: str, palette: tuple[int, ...] = NO_PALETTE) -> tuple[int, ...]:
    """``palette`` with the timekeeping cymbal set as ``name`` asks (see CYMBALS)."""
    try:
        change = CYMBALS[name]
    except KeyError:
        raise DrumMachineError("cymbal", f"unknown cymbal {name!r}; allowed: {', '.join(CYMBALS)}") from None
    return tuple(change.get(v, p) for v, p in enumerate(palette))


def cymbal_name(palette: tuple[int, ...]) -> str:
    """The CYMBALS name a palette's cymbals match ("auto" when none does)."""
    for name, change in CYMBALS.items():
        if change and all(palette[v] == p for v, p in change.items()):
            return name
    return "auto"


def timekeeper(palette) -> str:
    """The CYMBALS choice a musician would have made for a bar with this measured palette: the
    cymbal it keeps time on when it is the only one, else "auto"."""
    hat, open_hat, ride = (palette[v] == ON for v in (CLOSED_HAT, OPEN_HAT, RIDE))
    if ride and not hat and not open_hat:
        return "ride"
    if hat and not ride:
        return "hats"
    if open_hat and not ride:
        return "open_hats"
    return "auto"


def palette_of(bars: np.ndarray) -> np.ndarray:
    """The measured palette of bars (n, steps, 3, 9): ON where a voice is hit in the bar, else OFF."""
    return np.where(bars[:, :, 0].sum(axis=1) > 0, ON, OFF).astype(np.int64)


def palette_features(palette) -> np.ndarray:
    """(..., 9) palette values in {-1, 0, 1} -> (..., 18) floats: known flags, then played flags."""
    p = np.asarray(palette)
    return np.concatenate([(p != AUTO), (p == ON)], axis=-1).astype(np.float32)


_KNOWN = CONT_NAMES.index(f"known_{VOICE_NAMES[0]}")
_ON = CONT_NAMES.index(f"on_{VOICE_NAMES[0]}")


def silenced(cont: np.ndarray) -> np.ndarray:
    """(9,) bool: the voices a step's continuous inputs say the bar does not play (palette OFF).
    The model learned OFF from bars that had none of that voice, so a hit there is never what was
    asked; the generator keeps them silent."""
    c = np.asarray(cont)
    return (c[_KNOWN:_KNOWN + N_VOICES] > 0.5) & (c[_ON:_ON + N_VOICES] < 0.5)


def asked_on(cont: np.ndarray) -> np.ndarray:
    """(9,) bool: the voices a step's continuous inputs say the bar plays (palette ON)."""
    c = np.asarray(cont)
    return (c[_KNOWN:_KNOWN + N_VOICES] > 0.5) & (c[_ON:_ON + N_VOICES] > 0.5)


def due_floor(cont: np.ndarray, played: np.ndarray, step_in_bar: int, steps: int = 16,
              on: np.ndarray | None = None) -> np.ndarray | None:
    """(9,) floor under the hit probabilities of a step, or None: the palette's ON is kept as its OFF
    is. ON says the bar plays the voice — the model learned it from bars with at least one hit —
    but sampling alone does not promise it (told a mid tom is played, it left many bars without
    one). A voice the palette plays and the bar has not yet (``played``: (9,) bool) gets, on each
    8th note, a floor of 1 / (8th notes left), so it comes once somewhere in the rest of the bar on
    an 8th (where the drummers put most first hits), wherever the model's own odds do not put it
    first; nothing else changes. ``on``: ``asked_on(cont)``, if the caller has it already."""
    pos = step_in_bar % steps
    if pos % 2:
        return None
    due = (asked_on(cont) if on is None else on) & ~np.asarray(played, bool)
    if not due.any():
        return None
    return np.where(due, 2.0 / (steps - pos), 0.0)


def again_bias(cont: np.ndarray, played: np.ndarray, bias: np.ndarray,
               on: np.ndarray | None = None) -> np.ndarray | None:
    """(9,) hit-logit bias for the voices the palette says the bar plays and the bar has already
    played (``played``: (9,) bool), or None: how often such a voice comes back within the bar,
    apart from whether and where it first comes (the floor and the played bias see to that).
    ``on``: ``asked_on(cont)``, if the caller has it already."""
    again = (asked_on(cont) if on is None else on) & np.asarray(played, bool)
    return np.where(again, bias, 0.0) if again.any() else None


_FILL = CONT_NAMES.index("fill")


def step_bias(cont: np.ndarray, style_bias: np.ndarray | None = None, fill_bias: np.ndarray | None = None,
              played_bias: np.ndarray | None = None) -> np.ndarray | None:
    """The per-voice hit-logit bias a model file's own corrections give one step (None: none):
    its style's bias; on a fill bar its fill bias, for the voices the palette leaves to the model;
    its played bias for the voices the palette says the bar plays; and -inf (silence) for the
    voices the palette turns off."""
    c = np.asarray(cont)
    bias = None if style_bias is None else np.asarray(style_bias, np.float64)
    known = c[_KNOWN:_KNOWN + N_VOICES] > 0.5
    if fill_bias is not None and c[_FILL] > 0.5:
        extra = np.where(known, 0.0, fill_bias)
        bias = extra if bias is None else bias + extra
    if played_bias is not None:
        played = asked_on(c)
        if played.any():
            extra = np.where(played, played_bias, 0.0)
            bias = extra if bias is None else bias + extra
    off = silenced(c)
    if off.any():
        bias = np.where(off, -np.inf, 0.0 if bias is None else bias)
    return bias


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
    palette: tuple[int, ...] = NO_PALETTE  #: per voice ON (1), OFF (-1) or AUTO (0: the model's choice)

    def __post_init__(self):
        for name in CUES:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise DrumMachineError(name, f"{v!r} is out of range; allowed: 0..1")
        if len(self.palette) != N_VOICES or any(p not in (AUTO, ON, OFF) for p in self.palette):
            raise DrumMachineError("palette", f"{self.palette!r}: nine values, each 1 (on), -1 (off) or 0 (auto)")


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
        """The continuous inputs for a step (CONT_NAMES): bpm, intensity, density, complexity,
        syncopation, fill, then the palette's known and played flags."""
        head = np.array([bpm_feature(bpm), cues.intensity, cues.density, cues.complexity, cues.syncopation,
                         1.0 if cues.fill else 0.0], dtype=np.float32)
        return np.concatenate([head, palette_features(cues.palette)])

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
