"""How the model plays against how the drummers played: prediction, generation and control.

The statistics are pure numpy over (bars, 16, 3, 9) HVO arrays; the model is driven through any
object with the ``Generator`` interface (``logits``, ``step``, ``reset``), passed in.
"""

from __future__ import annotations

import numpy as np

from drummachine.core import attributes
from drummachine.corpus import baselines
from drummachine.core.conditioning import NO_PALETTE, Cues, cymbal_palette, palette_of, timekeeper
from drummachine.core.transport import STEPS_PER_BAR
from drummachine.core.voices import VOICE_NAMES
from drummachine.core.sampling import expected

STEPS = STEPS_PER_BAR


# --- statistics of bars ---------------------------------------------------------------------

def per_bar_stats(bars: np.ndarray, prev_bars: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One value per bar for every statistic that is compared; NaN where a bar has no hits to measure."""
    hits, vel, off = bars[:, :, 0], bars[:, :, 1], bars[:, :, 2]
    n = hits.sum(axis=(1, 2))
    out = {}
    for v, name in enumerate(VOICE_NAMES):
        out[f"density_{name}"] = hits[:, :, v].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["velocity_mean"] = np.where(n > 0, (vel * hits).sum(axis=(1, 2)) / n, np.nan)
        vm = out["velocity_mean"][:, None, None]
        out["velocity_spread"] = np.where(n > 1, np.sqrt((((vel - vm) ** 2) * hits).sum(axis=(1, 2)) / n), np.nan)
        out["offset_mean"] = np.where(n > 0, (off * hits).sum(axis=(1, 2)) / n, np.nan)
        om = out["offset_mean"][:, None, None]
        out["offset_spread"] = np.where(n > 1, np.sqrt((((off - om) ** 2) * hits).sum(axis=(1, 2)) / n), np.nan)
        odd = hits * (np.arange(STEPS) % 2 == 1)[None, :, None]
        even = hits * (np.arange(STEPS) % 2 == 0)[None, :, None]
        n_odd, n_even = odd.sum(axis=(1, 2)), even.sum(axis=(1, 2))
        out["swing"] = np.where((n_odd > 0) & (n_even > 0),
                                (off * odd).sum(axis=(1, 2)) / n_odd - (off * even).sum(axis=(1, 2)) / n_even,
                                np.nan)
    out["syncopation"] = attributes.syncopation(bars)
    if prev_bars is not None:
        prev_hits = prev_bars[:, :, 0]
        same = (hits * prev_hits).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out["repetition"] = np.where(n > 0, same / n, np.nan)
    return out


def overlap(a: np.ndarray, b: np.ndarray, bins: int = 30) -> float:
    """Overlapping area of two distributions' histograms (1 = the same distribution)."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not a.size or not b.size:
        return float("nan")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if hi <= lo:
        return 1.0
    edges = np.linspace(lo, hi, bins + 1)
    ha, _ = np.histogram(a, edges)
    hb, _ = np.histogram(b, edges)
    return float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum())


def compare(gen: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per statistic: mean generated, mean real, their ratio, and the overlapping area."""
    out = {}
    for k in real:
        g, r = np.nanmean(gen[k]) if np.isfinite(gen[k]).any() else np.nan, \
            np.nanmean(real[k]) if np.isfinite(real[k]).any() else np.nan
        ratio = g / r if (np.isfinite(r) and abs(r) > 1e-9) else np.nan
        out[k] = {"generated": float(g), "real": float(r), "ratio": float(ratio), "overlap": overlap(gen[k], real[k])}
    return out


# --- driving the model ----------------------------------------------------------------------

def teacher_forced(generator, target: np.ndarray, cats: np.ndarray, cont: np.ndarray):
    """Hit probabilities and expected velocity/offset for windows (n, T, 3, 9), one window per run."""
    n, T = target.shape[:2]
    p_hit = np.zeros((n, T, 9))
    vel = np.zeros((n, T, 9))
    off = np.zeros((n, T, 9))
    generator.reset()
    empty = generator.cache_feed()
    for i in range(n):
        flat = target[i].reshape(T, 27)
        prev = np.concatenate([np.zeros((1, 27), np.float32), flat[:-1]])[None]
        logits = generator.session.run(None, {"prev": prev, "cats": cats[i:i + 1], "cont": cont[i:i + 1],
                                              **empty})[0]
        p_hit[i], vel[i], off[i] = expected(logits[0], generator.vel_bins)
    return p_hit, vel, off


def prediction(generator, train, val) -> dict:
    """Per-step prediction on every validation window, with the two baselines fitted on train.

    The model is scored as the baselines are, knowing style, tempo and cues but not the bars' kit
    palette ("model"); and, for reference, also told which voices each bar plays ("model_with_palette").
    """
    t_target, t_mask, _, _ = train.batch(train.all_windows())
    v_target, v_mask, v_cats, v_cont = val.batch(val.all_windows())
    pos = baselines.PositionFrequency.fit(t_target, t_mask)
    markov = baselines.MarkovPatterns.fit(t_target, t_mask)
    pp = pos.predict(v_target)
    result = {
        "baseline_position_frequency": baselines.prediction_metrics(pp[:, :, 0], pp[:, :, 1], pp[:, :, 2],
                                                                    v_target, v_mask),
        "baseline_markov_patterns": baselines.prediction_metrics(markov.predict_hits(v_target), pp[:, :, 1],
                                                                 pp[:, :, 2], v_target, v_mask),
    }
    p_hit, vel, off = teacher_forced(generator, v_target, v_cats, v_cont)
    result["model"] = baselines.prediction_metrics(p_hit, vel, off, v_target, v_mask)
    _, _, _, k_cont = val.batch(val.all_windows(), palette="known")
    p_hit, vel, off = teacher_forced(generator, v_target, v_cats, k_cont)
    result["model_with_palette"] = baselines.prediction_metrics(p_hit, vel, off, v_target, v_mask)
    best = min(result["baseline_position_frequency"]["hit_nll"], result["baseline_markov_patterns"]["hit_nll"])
    result["model_vs_best_baseline_hit_nll"] = result["model"]["hit_nll"] / best - 1.0
    return result


PALETTES = ("bar", "cymbal", "auto")


def generate_like(generator, val, palette: str = "bar") -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """For every validation performance, as many bars as it has, at its tempo and style, steered by
    the cues measured on its own bars. ``palette``: "bar" tells the model each bar's kit palette
    (which voices it plays), "cymbal" only the cymbal it keeps time on (what a song or the pedal
    can ask: hats, open hats, ride, else auto), "auto" leaves it all to the model.
    Returns generated and real bars and (file slot, bars)."""
    if palette not in PALETTES:
        raise ValueError(f"palette {palette!r}; allowed: {', '.join(PALETTES)}")
    ds, cond = val.ds, val.cond
    gen_bars, real_bars, spans = [], [], []
    for slot in range(len(val.files)):
        first, count = val.first[slot], val.count[slot]
        idx = np.arange(first, first + count)
        real = ds.bar_hvo(idx, STEPS)
        bpm = float(ds.files["bpm"][val.files[slot]])
        generator.reset()
        style = int(val.style_index[slot])
        for b, bar in enumerate(real):
            bar1 = bar[None]
            cues = Cues(float(cond.quantile("loudness", attributes.loudness(bar1))[0]),
                        float(cond.quantile("density", attributes.density(bar1))[0]),
                        float(cond.quantile("complexity", attributes.complexity(bar1))[0]),
                        float(cond.quantile("syncopation", attributes.syncopation(bar1))[0]),
                        bool(ds.bars["fill"][first + b]),
                        _palette(palette_of(bar1)[0], palette))
            cont = cond.cont(bpm, cues)
            phrase = int(ds.bars["index"][first + b]) % 4
            gen_bars.append(np.stack([generator.step(style, s, phrase, cont) for s in range(STEPS)]))
        real_bars.append(real)
        spans.append((slot, count))
    return np.stack(gen_bars), np.concatenate(real_bars), spans


def generate_with_seeds(generator, val, palette: str, seeds) -> tuple[np.ndarray, np.ndarray, list, dict]:
    """``generate_like`` once per seed, pooled: rare voices (a mid tom, a crash) come out of one
    pass over the split with a ratio that swings by a third between seeds, because a performance
    keeps what it started with; one seed measures the dice. Returns the pooled generated and real
    bars, spans, and each voice's generated/real density per seed."""
    gens, reals, spans = [], [], []
    by_seed: dict[str, list[float]] = {name: [] for name in VOICE_NAMES}
    for seed in seeds:
        generator.reseed(seed)
        g, r, s = generate_like(generator, val, palette)
        gens.append(g)
        reals.append(r)
        spans += s
        for name, ratio in voice_ratios(g, r).items():
            by_seed[name].append(ratio)
    return np.concatenate(gens), np.concatenate(reals), spans, by_seed


def voice_ratios(gen: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Per voice, generated hits / real hits over all the bars given (NaN where real has none)."""
    gh, rh = gen[:, :, 0].sum(axis=(0, 1)), real[:, :, 0].sum(axis=(0, 1))
    return {name: float(gh[v] / rh[v]) if rh[v] > 0 else float("nan") for v, name in enumerate(VOICE_NAMES)}


def voice_velocities(gen: np.ndarray, real: np.ndarray) -> dict[str, dict[str, float]]:
    """Per voice, generated/real velocity mean and spread over all the hits of the bars given."""
    out = {}
    for v, name in enumerate(VOICE_NAMES):
        g, r = gen[:, :, 1, v][gen[:, :, 0, v] > 0.5], real[:, :, 1, v][real[:, :, 0, v] > 0.5]
        ok = g.size > 1 and r.size > 1 and r.mean() > 0 and r.std() > 0
        out[name] = {"mean": float(g.mean() / r.mean()) if ok else float("nan"),
                     "spread": float(g.std() / r.std()) if ok else float("nan")}
    return out


def voice_intervals(gen: np.ndarray, real: np.ndarray, spans, draws: int = 2000, seed: int = 0,
                    level: float = 0.95) -> dict[str, dict[str, list[float]]]:
    """Per voice, a bootstrap interval over the split's performances of the generated/real density
    and mean-velocity ratios: how much the figures hang on which sessions the split happens to
    hold (a drummer keeps what a performance started with, so performances, not bars, are the
    draws). ``spans``: (file slot, bars) in the order of the bars, as ``generate_with_seeds``
    gives them; a slot met again (another seed) adds to the same performance."""
    slots = sorted({slot for slot, _ in spans})
    at = {slot: k for k, slot in enumerate(slots)}
    sums = np.zeros((4, len(slots), len(VOICE_NAMES)))  # generated hits, velocity; real hits, velocity
    start = 0
    for slot, count in spans:
        for row, bars in ((0, gen), (2, real)):
            hvo = bars[start:start + count]
            hit = hvo[:, :, 0] > 0.5
            sums[row, at[slot]] += hit.sum(axis=1).sum(axis=0)
            sums[row + 1, at[slot]] += np.where(hit, hvo[:, :, 1], 0.0).sum(axis=1).sum(axis=0)
        start += count
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(slots), size=(draws, len(slots)))
    drawn = sums[:, pick].sum(axis=2)  # (4, draws, voices)
    with np.errstate(invalid="ignore", divide="ignore"):
        density = drawn[0] / drawn[2]
        velocity = (drawn[1] / drawn[0]) / (drawn[3] / drawn[2])
    # a draw with none of a voice's real hits has no ratio (x/0 is inf, not a figure): the interval
    # is over the draws that have one (a split with few performances of a voice draws such often)
    density[~np.isfinite(density)] = np.nan
    velocity[~np.isfinite(velocity)] = np.nan
    tail = 100 * (1 - level) / 2
    out = {}
    for v, name in enumerate(VOICE_NAMES):
        out[name] = {key: [float(x) for x in np.nanpercentile(r[:, v], [tail, 100 - tail])]
                     if np.isfinite(r[:, v]).any() else [float("nan")] * 2
                     for key, r in (("density", density), ("velocity_mean", velocity))}
    return out


def density_by_bar_kind(gen: np.ndarray, real: np.ndarray, fill: np.ndarray) -> dict:
    """Per voice, generated/real hits over fill bars and over beat bars (``fill``: one flag a bar)."""
    return {"fill_bars": voice_ratios(gen[fill], real[fill]), "beat_bars": voice_ratios(gen[~fill], real[~fill])}


def split_fills(val) -> np.ndarray:
    """The fill flag of every bar ``generate_like`` plays, in its order."""
    return np.concatenate([val.ds.bars["fill"][val.first[s]:val.first[s] + val.count[s]]
                           for s in range(len(val.files))]).astype(bool)


def drummers_differ(train, val) -> dict:
    """How the split's drummers differ from the train split's, per voice, on real bars alone: the
    floor under any per-voice density comparison of a model trained on train. Ratios train/split
    of hits per bar, of the share of bars that use the voice, of hits per bar that uses it, and of
    the voice's mean velocity."""
    def all_bars(w):
        return np.concatenate([w.ds.bar_hvo(np.arange(w.first[s], w.first[s] + w.count[s]), STEPS)
                               for s in range(len(w.files))])

    tb, vb = all_bars(train), all_bars(val)
    t, v = tb[:, :, 0].sum(axis=1), vb[:, :, 0].sum(axis=1)  # hits (bars, 9)
    out: dict[str, dict[str, float]] = {"hits_per_bar": {}, "bars_using": {}, "hits_per_bar_using": {},
                                        "velocity_mean": {k: r["mean"] for k, r in voice_velocities(tb, vb).items()}}
    for i, name in enumerate(VOICE_NAMES):
        tu, vu = t[:, i] > 0, v[:, i] > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            out["hits_per_bar"][name] = float(t[:, i].mean() / v[:, i].mean())
            out["bars_using"][name] = float(tu.mean() / vu.mean())
            out["hits_per_bar_using"][name] = float(t[tu, i].mean() / v[vu, i].mean()) if tu.any() and vu.any() \
                else float("nan")
    return out


def _palette(measured: np.ndarray, mode: str) -> tuple[int, ...]:
    if mode == "bar":
        return tuple(int(x) for x in measured)
    if mode == "cymbal":
        return cymbal_palette(timekeeper(measured))
    return NO_PALETTE


def _with_repetition(bars: np.ndarray, spans) -> dict[str, np.ndarray]:
    """Per-bar statistics, repetition included (NaN for the first bar of each performance)."""
    s = per_bar_stats(bars)
    prev = np.concatenate([bars[:1], bars[:-1]])
    rep = per_bar_stats(bars, prev)["repetition"]
    start = 0
    for _, count in spans:
        rep[start] = np.nan
        start += count
    s["repetition"] = rep
    return s


def generation(gen: np.ndarray, real: np.ndarray, spans, styles: np.ndarray, passes: int = 1) -> dict:
    """Generated vs real statistics, over all bars and per style; ``passes``: how many generation
    passes over the split are pooled (bar counts are per pass)."""
    g_all, r_all = _with_repetition(gen, spans), _with_repetition(real, spans)
    out = {"all": compare(g_all, r_all), "bars": int(len(real)) // passes}

    def hit_offsets(bars):
        return bars[:, :, 2][bars[:, :, 0] > 0.5]

    g_off, r_off = hit_offsets(gen), hit_offsets(real)
    # the micro-timing figure papers report: the spread (std) of every hit's offset, in 16th steps
    out["offset_std_all_hits"] = {"generated": float(g_off.std()), "real": float(r_off.std()),
                                  "ratio": float(g_off.std() / max(r_off.std(), 1e-9)),
                                  "overlap": overlap(g_off, r_off, bins=40)}
    bar_styles = np.concatenate([[styles[slot]] * count for slot, count in spans])
    out["per_style"] = {}
    for style in sorted(set(bar_styles.tolist())):
        m = bar_styles == style
        c = compare({k: v[m] for k, v in g_all.items()}, {k: v[m] for k, v in r_all.items()})
        out["per_style"][style] = {"bars": int(m.sum()) // passes, **{k: {"ratio": v["ratio"], "overlap": v["overlap"]}
                                                            for k, v in c.items()}}
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    # average ties
    for r, x in ((ra, a), (rb, b)):
        _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        if (counts > 1).any():
            sums = np.bincount(inv, weights=r)
            r[:] = (sums / counts)[inv]
    if ra.std() == 0.0 or rb.std() == 0.0:
        return float("nan")  # a constant has no rank order
    return float(np.corrcoef(ra, rb)[0, 1])


def control(generator, cues_for, styles: list[str], bpm_of, levels: int = 11, bars_per_level: int = 8) -> dict:
    """Requested intensity vs realized loudness and density; fill bars vs beat bars."""
    req, loud, dens, of = [], [], [], []
    fill_act, beat_act = [], []
    for style in styles:
        for level in np.linspace(0.0, 1.0, levels):
            generator.reset()
            cues = cues_for(style, float(level), False)
            for b in range(bars_per_level + 2):
                bar = generator.bar(style, bpm_of(style), cues, b % 4)[None]
                if b < 2:
                    continue  # let the groove settle after starting from silence
                req.append(level)
                of.append(style)
                loud.append(attributes.loudness(bar)[0])
                dens.append(attributes.density(bar)[0])
        generator.reset()
        for b in range(16):
            fill = b % 4 == 3
            bar = generator.bar(style, bpm_of(style), cues_for(style, 0.6, fill), b % 4)[None]
            (fill_act if fill else beat_act).append(attributes.fill_activity(bar)[0])
    req, loud, dens, of = map(np.asarray, (req, loud, dens, of))
    means = {lv: (loud[req == lv].mean(), dens[req == lv].mean()) for lv in np.unique(req)}
    lv = np.array(sorted(means))
    # within a style (the intensity knob of one song): the density cue is the style's own density
    # moved by the intensity, so bars of a sparse style at high intensity may be sparser than a
    # busy style's at low intensity; pooled over styles that counts against the knob
    within = {s: (spearman(req[of == s], loud[of == s]), spearman(req[of == s], dens[of == s])) for s in styles}
    return {
        "intensity_vs_loudness_spearman_bars": spearman(req, loud),
        "intensity_vs_density_spearman_bars": spearman(req, dens),
        "intensity_vs_loudness_spearman_bars_within_style": float(np.mean([v[0] for v in within.values()])),
        "intensity_vs_density_spearman_bars_within_style": float(np.mean([v[1] for v in within.values()])),
        "intensity_vs_density_spearman_bars_per_style": {s: round(v[1], 3) for s, v in within.items()},
        "intensity_vs_loudness_spearman_levels": spearman(lv, np.array([means[x][0] for x in lv])),
        "intensity_vs_density_spearman_levels": spearman(lv, np.array([means[x][1] for x in lv])),
        "loudness_low_high": [float(means[lv[0]][0]), float(means[lv[-1]][0])],
        "density_low_high": [float(means[lv[0]][1]), float(means[lv[-1]][1])],
        "fill_vs_beat_snare_tom_activity": float(np.mean(fill_act) / max(np.mean(beat_act), 1e-9)),
        "fill_bars": len(fill_act), "beat_bars": len(beat_act),
    }
