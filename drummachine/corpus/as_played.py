"""Evaluate as played: for each performance of a split only its style and tempo are given — a jam
in that style at that tempo, as many bars as the performance — and every other cue comes from the
plan (today's constant plan, or a performer). What plays, against how the drummers played.

The plan is pluggable: a callable ``plan(style, bpm, bars, seed) -> list[Cues]`` (one Cues a bar);
``constant_plan`` is today's (``cues_for`` held through the section, a fill every 8 bars),
``performer_plan`` adds a Performer on top, as the engine applies it (``performer.apply_feel``).
The generator (anything with ``step``, ``reset``, ``reseed`` and ``cond``) is passed in.

The statistics are pure numpy over (bars, 16, 3, 9) HVO arrays.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from drummachine.core import attributes
from drummachine.core.conditioning import Conditioning, Cues
from drummachine.core.performer import BarFeel, Performer, apply_feel
from drummachine.core.sections import SECTIONS, cues_for
from drummachine.core.transport import STEPS_PER_BAR
from drummachine.core.voices import HITS, OFFSETS, VELOCITIES, VOICE_NAMES
from drummachine.corpus import evaluation

STEPS = STEPS_PER_BAR
BINS = 40
JAM_FILL_EVERY = 8  #: core.song.jam(): a fill in the last bar of every 8
FEATURES = (*(f"density_{v}" for v in VOICE_NAMES), "density_total", "velocity_mean", "velocity_spread",
            "offset_mean", "offset_spread", "swing", "odd_share", "repetition")
#: the ones the targets hold within 15% of the drummers'
RATIO_TARGETS = ("repetition", "offset_spread", "velocity_spread", "density_total")
MAIN_STYLES = ("rock", "funk", "latin", "jazz", "hiphop")

Plan = Callable[[str, float, int, int], list]


# --- plans ---------------------------------------------------------------------------------

def _asked_fill(bar: int, fill_every: int) -> bool:
    return bool(fill_every) and (bar + 1) % fill_every == 0


def constant_plan(cond: Conditioning, fill_every: int = JAM_FILL_EVERY, kind: str = "verse") -> Plan:
    """Today's plan for a jam: the style's typical cues at its own intensity, held every bar, a fill
    in the last bar of every ``fill_every``."""
    feel = SECTIONS[kind]

    def plan(style: str, bpm: float, bars: int, seed: int) -> list[Cues]:
        level = cond.defaults(style).intensity
        return [cues_for(cond, style, level, _asked_fill(b, fill_every), feel.density_shift,
                         feel.complexity_shift, cymbal="auto") for b in range(bars)]
    return plan


def performer_plan(cond: Conditioning, performer: Performer, fill_every: int = JAM_FILL_EVERY,
                   kind: str = "verse", intensity: float | None = None, soft: bool = True) -> Plan:
    """Today's plan with the performer's feel on every bar, applied as the engine does: the fill
    is the one asked or the performer's own, ``cues_for`` of the section with it, then the feel's
    offsets and palette picks (``apply_feel``). The performer's seed is the pass's seed."""
    feel_kind = SECTIONS[kind]

    def plan(style: str, bpm: float, bars: int, seed: int) -> list[Cues]:
        level = cond.defaults(style).intensity if intensity is None else intensity
        perf = performer.reseeded(seed)
        out, prev = [], None
        for b in range(bars):
            f: BarFeel = perf.feel(style, bpm, 0, b, 0, False, prev)
            fill = _asked_fill(b, fill_every) or f.fill
            base = cues_for(cond, style, level, fill, feel_kind.density_shift, feel_kind.complexity_shift,
                            cymbal="auto")
            out.append(apply_feel(base, f, fill, soft))
            prev = f
        return out
    return plan


# --- generating ----------------------------------------------------------------------------

def play(generator, style: str, bpm: float, cues: list[Cues]) -> np.ndarray:
    """The bars a jam plays from silence with one Cues a bar: (bars, 16, 3, 9)."""
    cond = generator.cond
    s = cond.style_index(style)
    generator.reset()
    out = np.zeros((len(cues), STEPS, 3, len(VOICE_NAMES)), np.float32)
    for b, c in enumerate(cues):
        cont = cond.cont(bpm, c)
        for i in range(STEPS):
            out[b, i] = generator.step(s, i, b % 4, cont)
    return out


def performances(windows) -> list[tuple[str, float, np.ndarray]]:
    """(style, bpm, real bars) of every performance of a split (``corpus.windows.Windows``)."""
    ds = windows.ds
    out = []
    for slot in range(len(windows.files)):
        f = windows.files[slot]
        idx = np.arange(windows.first[slot], windows.first[slot] + windows.count[slot])
        out.append((str(ds.files["genre"][f]), float(ds.files["bpm"][f]), ds.bar_hvo(idx, STEPS)))
    return out


def generate_as_played(generator, perfs, plan: Plan, seeds=(0,)) -> tuple[list[np.ndarray], list[str]]:
    """Per seed and performance (in that order) the bars a jam in its style and tempo plays for as
    many bars, cues from ``plan``; the generator's dice are reseeded per pass
    (``evaluation.generate_with_seeds``) and each performance's plan gets its own seed. Returns
    the bars of each performance and its style."""
    gen, styles = [], []
    for seed in seeds:
        generator.reseed(seed)
        for k, (style, bpm, real) in enumerate(perfs):
            cues = plan(style, bpm, len(real), 1_000_003 * int(seed) + k)
            gen.append(play(generator, style, bpm, cues))
            styles.append(style)
    return gen, styles


# --- statistics ----------------------------------------------------------------------------

def features(bars: np.ndarray, first: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One value per bar for every feature compared (NaN where a bar has nothing to measure).
    ``first``: (bars,) bool, the first bar of each performance (no repetition there)."""
    hits, vel, off = bars[:, :, HITS], bars[:, :, VELOCITIES], bars[:, :, OFFSETS]
    n = hits.sum(axis=(1, 2))
    out = {f"density_{v}": hits[:, :, i].sum(axis=1) for i, v in enumerate(VOICE_NAMES)}
    out["density_total"] = n
    odd = (np.arange(STEPS) % 2 == 1)[None, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        vm = np.where(n > 0, (vel * hits).sum(axis=(1, 2)) / n, np.nan)
        out["velocity_mean"] = vm
        out["velocity_spread"] = np.where(n > 1, np.sqrt((((vel - vm[:, None, None]) ** 2) * hits).sum(axis=(1, 2)) / n),
                                          np.nan)
        om = np.where(n > 0, (off * hits).sum(axis=(1, 2)) / n, np.nan)
        out["offset_mean"] = om
        out["offset_spread"] = np.where(n > 1, np.sqrt((((off - om[:, None, None]) ** 2) * hits).sum(axis=(1, 2)) / n),
                                        np.nan)
        n_odd, n_even = (hits * odd).sum(axis=(1, 2)), (hits * ~odd).sum(axis=(1, 2))
        out["swing"] = np.where((n_odd > 0) & (n_even > 0),
                                (off * hits * odd).sum(axis=(1, 2)) / n_odd - (off * hits * ~odd).sum(axis=(1, 2)) / n_even,
                                np.nan)
        out["odd_share"] = np.where(n > 0, n_odd / n, np.nan)
        h = hits > 0.5
        prev = np.concatenate([h[:1], h[:-1]])
        inter, union = (h & prev).sum(axis=(1, 2)), (h | prev).sum(axis=(1, 2))
        rep = np.where(union > 0, inter / union, np.nan)
    if first is None:
        first = np.zeros(len(bars), bool)
        first[:1] = True
    out["repetition"] = np.where(first, np.nan, rep)
    return out


def features_of(perf_bars: list[np.ndarray]) -> dict[str, np.ndarray]:
    """``features`` over performances (repetition within each)."""
    if not perf_bars:
        return {k: np.zeros(0) for k in FEATURES}
    bars = np.concatenate(perf_bars)
    first = np.zeros(len(bars), bool)
    first[np.cumsum([0] + [len(b) for b in perf_bars[:-1]])] = True
    return features(bars, first)


def overlap(a: np.ndarray, b: np.ndarray, bins: int = BINS) -> float:
    """Shared area of the two normalized histograms, ``bins`` bins over the pooled range (1 = same)."""
    return evaluation.overlap(np.asarray(a, float), np.asarray(b, float), bins)


def compare(gen: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> dict:
    """Per feature: ratio of means (generated / real) and overlap; their mean overlap."""
    out = {}
    for k in FEATURES:
        g, r = gen[k][np.isfinite(gen[k])], real[k][np.isfinite(real[k])]
        gm, rm = (float(g.mean()) if g.size else np.nan), (float(r.mean()) if r.size else np.nan)
        out[k] = {"ratio": gm / rm if np.isfinite(rm) and abs(rm) > 1e-9 else float("nan"),
                  "overlap": overlap(g, r)}
    ov = [v["overlap"] for v in out.values() if np.isfinite(v["overlap"])]
    return {"features": out, "mean_overlap": float(np.mean(ov)) if ov else float("nan")}


def table(gen_perfs: list[np.ndarray], gen_styles, real_perfs: list[np.ndarray], real_styles,
          styles=MAIN_STYLES) -> dict:
    """Pooled and per-style comparison of generated (or other real) performances against real ones."""
    g, r = features_of(gen_perfs), features_of(real_perfs)
    gs = np.concatenate([[s] * len(b) for s, b in zip(gen_styles, gen_perfs)]) if gen_perfs else np.zeros(0)
    rs = np.concatenate([[s] * len(b) for s, b in zip(real_styles, real_perfs)]) if real_perfs else np.zeros(0)
    out = {"pooled": compare(g, r), "per_style": {}}
    for s in styles:
        mg, mr = gs == s, rs == s
        if mg.any() and mr.any():
            out["per_style"][s] = {**compare({k: v[mg] for k, v in g.items()}, {k: v[mr] for k, v in r.items()}),
                                   "bars": int(mr.sum())}
    return out


def _keys(bars: np.ndarray) -> list[bytes]:
    h = (bars[:, :, HITS] > 0.5).reshape(len(bars), -1)
    return [row.tobytes() for row in np.packbits(h, axis=1)]


def copy_share(bars: np.ndarray, train_keys: set[bytes], nonempty: bool = False) -> float:
    """Share of bars whose 16x9 hit pattern equals some training bar's exactly (``nonempty``:
    counting only bars with a hit)."""
    if nonempty:
        bars = bars[bars[:, :, HITS].sum(axis=(1, 2)) > 0]
    if not len(bars):
        return float("nan")
    return float(np.mean([k in train_keys for k in _keys(bars)]))


def train_keys(bars: np.ndarray) -> set[bytes]:
    return set(_keys(bars))


# --- intensity still steers ---------------------------------------------------------------

def spearman(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)

    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        return (np.bincount(inv, weights=r) / counts)[inv]
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def intensity_control(generator, plan_at: Callable[[float], Plan], styles, bpm_of, levels: int = 11,
                      bars: int = 8, settle: int = 2, seed: int = 0) -> dict:
    """Per style: requested section intensity (``levels`` steps 0..1; each a jam from silence, the
    plan ``plan_at(level)``) against the realized loudness and density of its bars after ``settle``
    bars, as Spearman over bars and over the levels' means. One session: the plan's seed is
    ``seed`` at every level (a performer's drummer stays the same), the generator's dice differ."""
    out = {}
    for style in styles:
        req, loud, dens = [], [], []
        for k, level in enumerate(np.linspace(0.0, 1.0, levels)):
            generator.reseed(seed * 1000 + k)
            cues = plan_at(float(level))(style, bpm_of(style), settle + bars, seed)
            played = play(generator, style, bpm_of(style), cues)[settle:]
            req += [level] * len(played)
            loud += list(attributes.loudness(played))
            dens += list(attributes.density(played))
        req, loud, dens = map(np.asarray, (req, loud, dens))
        lv = np.unique(req)
        out[style] = {"loudness_bars": spearman(req, loud), "density_bars": spearman(req, dens),
                      "loudness_levels": spearman(lv, [loud[req == x].mean() for x in lv]),
                      "density_levels": spearman(lv, [dens[req == x].mean() for x in lv]),
                      "loudness_low_high": [float(loud[req == lv[0]].mean()), float(loud[req == lv[-1]].mean())],
                      "density_low_high": [float(dens[req == lv[0]].mean()), float(dens[req == lv[-1]].mean())]}
    return out


# --- the whole report -----------------------------------------------------------------------

def targets(result: dict, ceiling: dict, copies_real: float) -> dict:
    """The issue's targets, each with the figure and whether it is met."""
    pooled = result["pooled"]
    feats = pooled["features"]
    out = {"mean_overlap_pooled>=0.83": (pooled["mean_overlap"], pooled["mean_overlap"] >= 0.83)}
    for s, c in ceiling["per_style"].items():
        if s in result["per_style"]:
            m = result["per_style"][s]["mean_overlap"]
            out[f"{s}_within_0.08_of_ceiling"] = (m - c["mean_overlap"], m >= c["mean_overlap"] - 0.08)
    low = min(feats.items(), key=lambda kv: kv[1]["overlap"])
    out["min_feature_overlap>=0.65"] = (f"{low[0]} {low[1]['overlap']:.3f}", low[1]["overlap"] >= 0.65)
    for k in RATIO_TARGETS:
        out[f"{k}_ratio_within_15%"] = (feats[k]["ratio"], abs(feats[k]["ratio"] - 1) <= 0.15)
    if "copies" in result:
        out["copies<=drummers"] = ((result["copies"], copies_real), result["copies"] <= copies_real)
    return out


def format_table(rows: dict[str, dict], styles=MAIN_STYLES) -> str:
    """Markdown: one column per result (name -> ``table`` output), features as ratio / overlap."""
    names = list(rows)
    lines = ["| feature | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in FEATURES:
        cells = []
        for n in names:
            f = rows[n]["pooled"]["features"][k]
            cells.append(f"{f['ratio']:.2f} / {f['overlap']:.2f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("| **mean overlap, pooled** | " + " | ".join(f"**{rows[n]['pooled']['mean_overlap']:.3f}**"
                                                             for n in names) + " |")
    for s in styles:
        lines.append(f"| mean overlap, {s} | " + " | ".join(
            f"{rows[n]['per_style'][s]['mean_overlap']:.3f}" if s in rows[n]["per_style"] else "-" for n in names) + " |")
    if any("copies" in rows[n] for n in names):
        lines.append("| exact copies of a train bar | " + " | ".join(
            f"{rows[n]['copies']:.3f}" if "copies" in rows[n] else "-" for n in names) + " |")
    return "\n".join(lines)
