"""The performer: what a drummer changes from bar to bar on top of the section's cues (pure numpy).

The conductor decides the section (its style, target intensity, the fills it asks for) and
``sections.cues_for`` turns that into one set of cues a section. A drummer does not play a
section at one setting: the dynamics breathe, the bars before a phrase end get busier, the ride
or the toms come in for a while, a fill comes now and then unasked. The performer decides that,
one bar at a time, from a small table fitted on the train split's drummers
(``training/fit_performer.py`` writes ``models/performer.json``):

- the **level**: where this drummer sits in the style, drawn once per seed (the same for every
  section, so a chorus asked louder than its verse stays louder): the train performances' own
  median cues (quantile units) against the style's typical ones, with their trend over the tempo
  and the spread between performances that the tempo does not explain;
- the **drift** of intensity, density, complexity and syncopation around that level: an AR(1)
  process per cue (coefficient per cue, correlated innovations), plus the mean shape of the
  8-bar phrase (bar 4 and bar 8 busier, ...);
- the **kit palette**: Markov chains over groups of voices (the cymbals that keep time together,
  the toms together, ...): which voices a bar plays, and how long a choice is held; and in a fill
  bar the palette of the drummers' fill bars;
- **fills** nobody asked for, at the drummers' rate by position in the 8-bar phrase.

Deterministic: the dice of a bar come from (seed, section, bar in section, variant), the level's
from the seed alone, the rest from ``prev`` (the previous bar's BarFeel, whose ``state`` carries the level, the drift and the palette).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from drummachine.core.conditioning import AUTO, CUES, OFF, ON, Cues

CUE_NAMES = tuple(CUES)  #: the four quantile cues, in the order of Cues
N_CUES = len(CUE_NAMES)
PHRASE = 8  #: bars of the phrase whose shape the performer knows (bar_in_section % PHRASE)
ANY = "any"
_LEVEL_KEY = 0x1E7E1  #: the level's dice: (seed, _LEVEL_KEY), the same for every section
#: what a table may turn off (the alternatives measured side by side; all on in the shipped one)
DEFAULT_OPTIONS = {"level": 1.0, "drift": 1.0, "phrase": 1.0, "palette": 1.0, "fills": 1.0, "fill_palette": 1.0,
                   "stick": 0.0, "level_intensity": 1.0, "level_density": 1.0}


@dataclass(frozen=True)
class BarFeel:
    """What the performer decides for one bar, on top of the section's cues."""

    intensity: float = 0.0  #: offsets in quantile units, added to the base cue then clipped to 0..1
    density: float = 0.0
    complexity: float = 0.0
    syncopation: float = 0.0
    #: (voice index, ON or OFF) for voices the base palette leaves AUTO
    voices: tuple[tuple[int, int], ...] = ()
    fill: bool = False  #: an unasked fill in this bar (the conductor marks the bar a fill from step 0)
    #: the palette picks to use instead of ``voices`` when the bar is played as a fill (asked or
    #: the performer's own): a fill bar's toms are not the groove's
    fill_voices: tuple[tuple[int, int], ...] = ()
    #: carry-over to the next bar: (section, *level[4], *drift[4], *palette group codes)
    state: tuple = ()

    def offsets(self) -> tuple[float, float, float, float]:
        return (self.intensity, self.density, self.complexity, self.syncopation)


SOFT_SLOPE = 4.0  #: d logit(q) / dq at q = 0.5: a soft offset moves a middle cue as an added one would


def move(q: float, offset: float, soft: bool = True) -> float:
    """A cue moved by an offset (quantile units). ``soft``: in logit space (scaled so that a cue at
    0.5 moves by the offset), so it never clips and keeps the order of the cues it moves — a
    section asked louder stays louder whatever the drummer's level; else added and clipped."""
    if not soft:
        return min(1.0, max(0.0, q + offset))
    q = min(1.0 - 1e-4, max(1e-4, q))
    return float(1.0 / (1.0 + math.exp(-(math.log(q / (1.0 - q)) + SOFT_SLOPE * offset))))


def apply_feel(base: Cues, feel: BarFeel | None, fill: bool | None = None, soft: bool = True) -> Cues:
    """The cues a bar plays: ``base`` (``cues_for`` of the section, computed with the bar's fill,
    asked or the performer's) moved by the feel's offsets (``move``), and the feel's palette picks
    for the voices ``base`` leaves AUTO (a cymbal or voice the song or the pedal asks for wins).
    ``fill``: whether the bar is played as a fill (default: ``base.fill``)."""
    if feel is None:
        return base
    fill = base.fill if fill is None else fill
    moved = {name: move(getattr(base, name), off, soft) for name, off in zip(CUE_NAMES, feel.offsets())}
    palette = list(base.palette)
    for v, choice in (feel.fill_voices if fill and feel.fill_voices else feel.voices):
        if palette[v] == AUTO:
            palette[v] = choice
    return replace(base, fill=fill, palette=tuple(palette), **moved)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def _pick(u: float, cum: np.ndarray) -> int:
    """The state a uniform draw ``u`` picks from cumulative probabilities ``cum``."""
    return int(min(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1))


class _Style:
    """One style's fitted numbers, as arrays."""

    def __init__(self, d: dict):
        self.bpm_ref = float(d["bpm_ref"])
        self.level_mean = np.asarray(d["level_mean"], float)
        self.level_slope = np.asarray(d["level_slope"], float)
        self.level_chol = np.asarray(d["level_chol"], float)
        self.phi = np.asarray(d["phi"], float)
        self.innov_chol = np.asarray(d["innov_chol"], float)
        self.start_chol = np.asarray(d["start_chol"], float)
        self.phrase_mean = np.asarray(d["phrase_mean"], float)
        self.fill_rate = np.asarray(d["fill_rate"], float)
        # cumulative probabilities: start, transition rows, fill bars
        self.groups = [(tuple(g["voices"]), np.cumsum(g["start"]), np.cumsum(g["trans"], axis=1),
                        np.cumsum(g["fill"])) for g in d["palette"]]


class Performer:
    """Per-bar cue plan learned from the drummers. ``table``: ``json.load(models/performer.json)``."""

    def __init__(self, table: dict, seed: int = 0):
        self.table = table
        self.seed = int(seed)
        self.options = {**DEFAULT_OPTIONS, **table.get("options", {})}
        self.fill_groups = set(table.get("fill_groups", ()))
        self.styles = {name: _Style(d) for name, d in table["styles"].items()}
        if ANY not in self.styles:
            raise ValueError('a performer table needs the "any" style')
        self._z = _rng(self.seed, _LEVEL_KEY).standard_normal(N_CUES)  # the drummer's level dice

    @staticmethod
    def load(path, seed: int = 0) -> "Performer":
        return Performer(json.loads(Path(path).read_text(encoding="utf-8")), seed)

    def with_options(self, **options) -> "Performer":
        """The same table with some parts scaled or turned off (0): an alternative to measure."""
        return Performer({**self.table, "options": {**self.options, **options}}, self.seed)

    def reseeded(self, seed: int) -> "Performer":
        return Performer(self.table, seed)

    def feel(self, style: str, bpm: float, section: int, bar_in_section: int, section_bars: int,
             before_change: bool, prev: BarFeel | None, variant: int = 0) -> BarFeel:
        """The feel of one bar (see the module's doc). ``section_bars`` 0: open-ended;
        ``before_change``: the next bar starts another section (the conductor asks a fill there)."""
        st = self.styles.get(style) or self.styles[ANY]
        o = self.options
        rng = _rng(self.seed, section, bar_in_section, variant)
        groups = st.groups
        carried = (prev is not None and len(prev.state) == 1 + 2 * N_CUES + len(groups)
                   and int(prev.state[0]) == section and bar_in_section > 0)
        # the level is the drummer's, not the section's: drawn once per seed, so a section asked
        # louder than another stays louder (its trend follows the section's tempo)
        trend = st.level_slope * math.log2(max(float(bpm), 1.0) / st.bpm_ref)
        level = o["level"] * (st.level_mean + trend + st.level_chol @ self._z)
        # the intensity's own level is the musician's knob, and the density follows it (cues_for):
        # a drummer's level on them fights the knob (0: leave them to the musician)
        level[0] *= o["level_intensity"]
        level[1] *= o["level_density"]
        if carried:
            drift = np.asarray(prev.state[1 + N_CUES:1 + 2 * N_CUES], float)
            drift = st.phi * drift + o["drift"] * (st.innov_chol @ rng.standard_normal(N_CUES))
            # "stick": the chance a group keeps its previous choice outright (over the chain's own)
            u = rng.random(2 * len(groups))
            codes = [int(c) if u[2 * k] < o["stick"] else _pick(u[2 * k + 1], trans[int(c)])
                     for k, ((_, _, trans, _), c) in enumerate(zip(groups, prev.state[1 + 2 * N_CUES:]))]
        else:
            drift = o["drift"] * (st.start_chol @ rng.standard_normal(N_CUES))
            u = rng.random(len(groups))
            codes = [_pick(u[k], start) for k, (_, start, _, _) in enumerate(groups)]
        pos = bar_in_section % PHRASE
        off = level + drift + o["phrase"] * st.phrase_mean[pos]
        fill = bool(not before_change and rng.random() < o["fills"] * st.fill_rate[pos])
        voices: list[tuple[int, int]] = []
        fill_voices: list[tuple[int, int]] = []
        u = rng.random(1 + len(groups))
        use_palette = u[0] < o["palette"]
        for k, ((vs, _, _, fill_cum), code) in enumerate(zip(groups, codes)):
            fcode = _pick(u[1 + k], fill_cum) if (k in self.fill_groups and o["fill_palette"]) else code
            if not use_palette:
                continue
            for bit, v in enumerate(vs):
                voices.append((v, ON if code >> bit & 1 else OFF))
                fill_voices.append((v, ON if fcode >> bit & 1 else OFF))
        state = (int(section), *(float(x) for x in level), *(float(x) for x in drift), *(int(c) for c in codes))
        return BarFeel(*(float(x) for x in off), voices=tuple(sorted(voices)), fill=fill,
                       fill_voices=tuple(sorted(fill_voices)), state=state)


# --- fitting (numpy only: training/fit_performer.py feeds it the train split) -------------------

@dataclass(frozen=True)
class Take:
    """One performance as the fit sees it."""

    style: str
    bpm: float
    cues: np.ndarray  #: (bars, 4) measured quantile cues (CUE_NAMES order)
    palette: np.ndarray  #: (bars, 9) measured palette: ON / OFF per voice
    fill: np.ndarray  #: (bars,) bool
    index: np.ndarray  #: (bars,) bar index in the performance (for the phrase position)


def _chol(cov: np.ndarray) -> np.ndarray:
    cov = (cov + cov.T) / 2.0
    w, v = np.linalg.eigh(cov)
    w = np.clip(w, 1e-8, None)
    return np.linalg.cholesky((v * w) @ v.T)


def _codes(palette: np.ndarray, voices) -> np.ndarray:
    return sum(((palette[:, v] == ON).astype(int) << bit) for bit, v in enumerate(voices))


def _moments(takes: list[Take], defaults: np.ndarray, min_bars: int) -> dict:
    """Sufficient numbers of one group of takes (a style, or all)."""
    med, wts, lbpm = [], [], []
    pairs_prev, pairs_next, devs = [], [], []
    phrase_sum, phrase_n = np.zeros((PHRASE, N_CUES)), np.zeros(PHRASE)
    fills_n, fills_at = np.zeros(PHRASE), np.zeros(PHRASE)
    for t in takes:
        n = len(t.cues)
        pos = np.asarray(t.index) % PHRASE
        groove = ~t.fill
        if n < min_bars or groove.sum() < min_bars:
            continue  # a fill or a bar or two on its own: no groove to move around
        np.add.at(fills_n, pos, 1)
        np.add.at(fills_at, pos, t.fill.astype(float))
        m = np.median(t.cues[groove], axis=0)
        med.append(m - defaults)
        wts.append(groove.sum())
        lbpm.append(math.log2(max(t.bpm, 1.0)))
        d = t.cues - m
        np.add.at(phrase_sum, pos[groove], d[groove])
        np.add.at(phrase_n, pos[groove], 1)
        devs.append(d[groove])
        ok = groove[1:] & groove[:-1]
        pairs_prev.append(d[:-1][ok])
        pairs_next.append(d[1:][ok])
    return {"med": np.array(med).reshape(-1, N_CUES), "w": np.array(wts, float), "lbpm": np.array(lbpm),
            "prev": np.concatenate(pairs_prev) if pairs_prev else np.zeros((0, N_CUES)),
            "next": np.concatenate(pairs_next) if pairs_next else np.zeros((0, N_CUES)),
            "devs": np.concatenate(devs) if devs else np.zeros((0, N_CUES)),
            "phrase_sum": phrase_sum, "phrase_n": phrase_n, "fills_n": fills_n, "fills_at": fills_at}


def _blend(own, prior, n, k):
    """Shrink a style's estimate toward the pooled one: weight n / (n + k) on its own."""
    w = n / (n + k) if n + k > 0 else 0.0
    return w * np.asarray(own, float) + (1 - w) * np.asarray(prior, float)


def fit(takes: list[Take], defaults: dict[str, dict[str, float]], groups=((0,), (1,), (2, 3, 8), (4, 5, 6), (7,)),
        fill_groups=(1, 3, 4), min_bars: int = 4, shrink: float = 10.0, min_takes: int = 3,
        alpha: float = 2.0) -> dict:
    """The performer's table from takes (see ``Take``). ``defaults``: the conditioning's style
    defaults (cue medians), the base the levels are measured against; ``groups``: the voices whose
    palette is one Markov chain; ``fill_groups``: the groups whose fill-bar palette is drawn apart;
    ``shrink``: a style's numbers are pulled toward the pooled ones with weight k / (n + k), n
    its performances (bars for the per-bar numbers, scaled); ``alpha``: pseudo-counts (spread as
    the pooled distribution) in the palette chains."""
    styles = sorted({t.style for t in takes})

    def default_of(s):
        d = defaults.get(s, defaults.get(ANY, {}))
        return np.array([float(d.get(c, 0.5)) for c in CUE_NAMES])

    def palette_counts(sel):
        out = []
        for vs in groups:
            k = 1 << len(vs)
            start, trans, fillc = np.zeros(k), np.zeros((k, k)), np.zeros(k)
            for t in sel:
                c = _codes(t.palette, vs)
                g = ~t.fill
                start += np.bincount(c[g], minlength=k)
                fillc += np.bincount(c[t.fill], minlength=k)
                ok = g[1:] & g[:-1]
                np.add.at(trans, (c[:-1][ok], c[1:][ok]), 1)
            out.append((start, trans, fillc))
        return out

    def numbers(sel, prior=None):
        # the pooled "any" numbers are measured against each take's own style default
        mom = [_moments([t for t in sel if t.style == s], default_of(s), min_bars) for s in sorted({t.style for t in sel})]
        med = np.concatenate([m["med"] for m in mom])
        w = np.concatenate([m["w"] for m in mom])
        lb = np.concatenate([m["lbpm"] for m in mom])
        prev_ = np.concatenate([m["prev"] for m in mom])
        next_ = np.concatenate([m["next"] for m in mom])
        devs = np.concatenate([m["devs"] for m in mom])
        phrase_sum = sum(m["phrase_sum"] for m in mom)
        phrase_n = sum(m["phrase_n"] for m in mom)
        fills_n = sum(m["fills_n"] for m in mom)
        fills_at = sum(m["fills_at"] for m in mom)
        n_takes = len(med)
        all_bpm = np.array([t.bpm for t in sel], float)
        bpm_ref = float(np.median(all_bpm)) if len(all_bpm) else 110.0
        out = {"takes": int(n_takes), "bars": int(sum(len(t.cues) for t in sel)), "bpm_ref": bpm_ref}
        if n_takes >= min_takes:
            x = lb - math.log2(bpm_ref)
            W = w / w.sum()
            xm = (W * x).sum()
            ym = (W[:, None] * med).sum(axis=0)
            sxx = (W * (x - xm) ** 2).sum()
            slope = ((W[:, None] * (x - xm)[:, None] * (med - ym)).sum(axis=0) / sxx) if sxx > 1e-6 else np.zeros(N_CUES)
            mean = ym - slope * xm
            res = med - mean - slope * x[:, None]
            cov = (W[:, None, None] * res[:, :, None] * res[:, None, :]).sum(axis=0) * n_takes / max(n_takes - 2, 1)
        else:
            slope, mean, cov = np.zeros(N_CUES), np.zeros(N_CUES), np.eye(N_CUES) * 0.01
        if len(prev_) >= 20:
            phi = np.clip((prev_ * next_).sum(axis=0) / np.maximum((prev_ ** 2).sum(axis=0), 1e-9), 0.0, 0.98)
            innov = next_ - phi * prev_
            icov = np.cov(innov.T)
            scov = np.cov(devs.T)
        else:
            phi, icov, scov = np.full(N_CUES, 0.5), np.eye(N_CUES) * 0.01, np.eye(N_CUES) * 0.02
        phrase = phrase_sum / np.maximum(phrase_n, 1)[:, None]
        phrase -= (phrase * phrase_n[:, None]).sum(axis=0) / max(phrase_n.sum(), 1)  # zero mean over the phrase
        fill_rate = fills_at / np.maximum(fills_n, 1)
        nums = {"slope": slope, "mean": mean, "cov": cov, "phi": phi, "icov": icov, "scov": scov,
                "phrase": phrase, "fill_rate": fill_rate, "n_takes": n_takes, "n_pairs": len(prev_),
                "fills_n": fills_n, "pal": palette_counts(sel)}
        if prior is not None:
            k = shrink
            n, npairs = n_takes, len(prev_) / 20.0  # 20 bar pairs count as one performance
            for key in ("slope", "mean", "cov"):
                nums[key] = _blend(nums[key], prior[key], n, k)
            for key in ("phi", "icov", "scov", "phrase"):
                nums[key] = _blend(nums[key], prior[key], npairs, k)
            nums["fill_rate"] = (fills_at + k * 4 * prior["fill_rate"]) / (fills_n + k * 4)
        return out, nums

    def table_of(out, nums, prior_pal=None):
        pal = []
        for g, (vs, (start, trans, fillc)) in enumerate(zip(groups, nums["pal"])):
            k = 1 << len(vs)
            if prior_pal is None:
                p_start = (start + alpha / k) / (start.sum() + alpha)
                p_trans = (trans + alpha * p_start) / (trans.sum(axis=1, keepdims=True) + alpha)
                p_fill = (fillc + alpha * p_start) / (fillc.sum() + alpha)
            else:
                ps, pt, pf = prior_pal[g]
                p_start = (start + alpha * ps) / (start.sum() + alpha)
                p_trans = (trans + alpha * pt) / (trans.sum(axis=1, keepdims=True) + alpha)
                p_fill = (fillc + alpha * pf) / (fillc.sum() + alpha)
            pal.append((p_start, p_trans, p_fill))
        r = lambda a: np.round(np.asarray(a, float), 5).tolist()  # noqa: E731
        out.update({
            "level_mean": r(nums["mean"]), "level_slope": r(nums["slope"]), "level_chol": r(_chol(nums["cov"])),
            "phi": r(nums["phi"]), "innov_chol": r(_chol(nums["icov"])), "start_chol": r(_chol(nums["scov"])),
            "phrase_mean": r(nums["phrase"]), "fill_rate": r(nums["fill_rate"]),
            "palette": [{"voices": list(vs), "start": r(s), "trans": r(t), "fill": r(f)}
                        for vs, (s, t, f) in zip(groups, pal)],
        })
        return out, pal

    any_out, any_nums = numbers(takes)
    any_table, any_pal = table_of(any_out, any_nums)
    table = {"version": 1, "cues": list(CUE_NAMES), "phrase": PHRASE, "fill_groups": list(fill_groups),
             "options": dict(DEFAULT_OPTIONS), "styles": {ANY: any_table}}
    for s in styles:
        sel = [t for t in takes if t.style == s]
        out, nums = numbers(sel, prior=any_nums)
        table["styles"][s], _ = table_of(out, nums, prior_pal=any_pal)
    return table
