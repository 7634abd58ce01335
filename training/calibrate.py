"""Sampling corrections, fitted by generating like a split and comparing with its drummers, and
written into the model files' metadata.

    python -m training.calibrate --data data/gmd.npz --models models --fills low_tom,mid_tom,high_tom
    python -m training.calibrate --data data/gmd.npz --models models --played open_hat,mid_tom,crash
    python -m training.calibrate --data data/gmd.npz --models models --again crash --split validation --crossfit
    python -m training.calibrate --data data/gmd.npz --models models --velocity --split validation --crossfit
    python -m training.calibrate --data data/gmd.npz --models models [--per-style] [--rounds 3]

Why: sampling step by step, small errors in early choices add up (a performance keeps what it
started with), so free-running per-voice densities are further off than the model's per-step
error suggests. Each correction shifts logits before sampling, at no cost at run time.

- ``--fills``: ``fill_voice_bias``, on fill bars, for voices the palette leaves to the model
  (the model under-plays toms in fills). Shipped, fitted on train.
- ``--played``: ``played_voice_bias``, where the palette says the bar plays the voice (the model
  under-plays rare voices in the bars that have them). Shipped, fitted on train.
- ``--again``: ``again_voice_bias``, where the palette says the bar plays the voice and the bar
  has already played it: how often it comes back in the bar, leaving where it first comes alone.
- ``--velocity``: ``velocity_tilt``, a tilt of each voice's velocity distribution so that its
  mean matches the drummers'.
- neither: ``voice_bias``, one bias per voice (or per style and voice) on every bar. Measured,
  not shipped: it fixed train bars but moved other voices on validation (see the README).

``--split validation`` tunes on the validation split (the issue's "tune on validation"); the
figures reported on that split are then in-sample for what was tuned, so ``--crossfit`` also
fits on one half of its performances and measures on the other, both ways, and stores both.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import onnx

from drummachine.corpus.dataset import Dataset
from drummachine.corpus.evaluation import generate_like, generate_with_seeds, split_fills, voice_velocities
from drummachine.model.generator import Generator
from drummachine.core.voices import VOICE_NAMES
from drummachine.model.model_file import METADATA_KEY, VOICE_CORRECTIONS
from drummachine.corpus.windows import Windows

SHRINK_BARS = 200  # styles with fewer bars than this lean towards the global correction
#: the Generator attribute each kind of per-voice correction lives in while it is fitted
ATTRIBUTE = {"fill": "fill_bias", "played": "played_bias", "again": "again_bias", "velocity": "velocity_tilt"}


def per_style_density(bars, styles):
    out = {}
    for s in sorted(set(styles.tolist())):
        m = styles == s
        out[s] = (bars[m][:, :, 0].sum(axis=1).mean(axis=0), int(m.sum()))
    return out


def subset(w: Windows, bars_per_style: int, rng) -> Windows:
    """A Windows view restricted to a random subset of performances, about N bars per style."""
    keep = []
    for style in np.unique(w.style_index):
        slots = np.nonzero(w.style_index == style)[0]
        rng.shuffle(slots)
        total = 0
        for s in slots:
            keep.append(s)
            total += w.count[s]
            if total >= bars_per_style:
                break
    return _keep(w, np.sort(np.array(keep)))


def fill_subset(w: Windows, every: int) -> Windows:
    """Every N-th performance that has a fill bar (fills are where the fill bias acts)."""
    has_fill = np.array([w.ds.bars["fill"][f:f + c].any() for f, c in zip(w.first, w.count)])
    return _keep(w, np.nonzero(has_fill)[0][::every])


def every_nth(w: Windows, every: int) -> Windows:
    return _keep(w, np.arange(len(w.files))[::every])


def halves(w: Windows, seed: int) -> tuple[Windows, Windows]:
    """Two disjoint halves of a split's performances: each style's, in random order, dealt one by
    one to the half that has fewer bars so far (of that style, then in all)."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for style in np.unique(w.style_index):
        slots = np.nonzero(w.style_index == style)[0]
        rng.shuffle(slots)
        bars = [0, 0]
        for slot in slots:
            total = (int(w.count[a].sum()) if a else 0, int(w.count[b].sum()) if b else 0)
            to_a = (bars[0], total[0]) <= (bars[1], total[1])
            (a if to_a else b).append(slot)
            bars[0 if to_a else 1] += int(w.count[slot])
    return _keep(copy.copy(w), np.sort(np.array(a))), _keep(copy.copy(w), np.sort(np.array(b)))


def _keep(w: Windows, keep: np.ndarray) -> Windows:
    w.files, w.first, w.count, w.style_index = w.files[keep], w.first[keep], w.count[keep], w.style_index[keep]
    w.weights = w.count / w.count.sum()
    return w


def fit_bias(gen: Generator, w: Windows, kind: str, voices: list[int], rounds: int, gain: float,
             seeds: list[int], palette: str, start: np.ndarray | None = None) -> tuple[np.ndarray, list[dict]]:
    """A bias on ``voices``, fitted so generated bars use them as often as the drummers did; each
    round pools ``seeds`` (one pass over a few thousand bars swings by a fifth between seeds).
    kind "fill": on fill bars, where the palette leaves the voice to the model (measured on fill
    bars); kind "played": where the palette says the bar plays the voice (measured on all bars,
    told each bar's palette)."""
    attr = ATTRIBUTE[kind]
    fill = split_fills(w)
    measured = fill if kind == "fill" else np.ones_like(fill)
    bias = np.zeros(9) if start is None else np.asarray(start, np.float64).copy()
    history, best = [], (np.inf, bias.copy(), -1)
    for r in range(rounds + 1):
        setattr(gen, attr, bias.copy())
        g, real, _, _ = generate_with_seeds(gen, w, palette, seeds)
        pooled = np.tile(measured, len(seeds))
        gh, rh = g[pooled][:, :, 0].sum(axis=(0, 1)), real[pooled][:, :, 0].sum(axis=(0, 1))
        ratio = (gh + 1.0) / (rh + 1.0)
        err = float(np.abs(np.log(ratio[voices])).mean())
        history.append({"round": r, "error": round(err, 4), "bias": np.round(bias, 4).tolist(),
                        "ratio_all_voices": np.round(gh / np.maximum(rh, 1), 3).tolist()})
        print(json.dumps(history[-1]), flush=True)
        if err < best[0]:
            best = (err, bias.copy(), r)
        if r == rounds:
            break
        bias[voices] += np.clip(-gain * np.log(ratio[voices]), -1.0, 1.0)
    print(f"keeping round {best[2]} (error {best[0]:.4f})")
    setattr(gen, attr, best[1].copy())
    return best[1], history


def fit_velocity(gen: Generator, w: Windows, voices: list[int], rounds: int, gain: float, seeds: list[int],
                 start: np.ndarray | None = None) -> tuple[np.ndarray, list[dict]]:
    """A velocity tilt on ``voices``, fitted so each voice's mean velocity over the generated hits
    matches the drummers' (told each bar's palette). The mean of a tilted distribution moves by
    about its variance times the tilt, so each round steps by the gap over the variance."""
    tilt = np.zeros(9) if start is None else np.asarray(start, np.float64).copy()
    history, best = [], (np.inf, tilt.copy(), -1)
    for r in range(rounds + 1):
        gen.velocity_tilt = tilt.copy()
        g, real, _, _ = generate_with_seeds(gen, w, "bar", seeds)
        gv = [g[:, :, 1, v][g[:, :, 0, v] > 0.5] for v in range(9)]
        rv = [real[:, :, 1, v][real[:, :, 0, v] > 0.5] for v in range(9)]
        per_voice = voice_velocities(g, real).values()
        ratio = np.array([x["mean"] for x in per_voice])
        err = float(np.abs(np.log(ratio[voices])).mean())
        history.append({"round": r, "error": round(err, 4), "tilt": np.round(tilt, 4).tolist(),
                        "velocity_mean_ratio": np.round(ratio, 3).tolist(),
                        "velocity_spread_ratio": np.round([x["spread"] for x in per_voice], 3).tolist()})
        print(json.dumps(history[-1]), flush=True)
        if err < best[0]:
            best = (err, tilt.copy(), r)
        if r == rounds:
            break
        for v in voices:
            if gv[v].size > 1 and rv[v].size > 1:
                tilt[v] += np.clip(gain * (rv[v].mean() - gv[v].mean()) / max(gv[v].var(), 1e-3), -2.0, 2.0)
    print(f"keeping round {best[2]} (error {best[0]:.4f})")
    gen.velocity_tilt = best[1].copy()
    return best[1], history


def crossfit(fit, measure, w: Windows, seed: int) -> list[dict]:
    """Fit on one half of the split's performances, measure on the other, both ways: what the
    correction does for drummers it was not fitted on. ``fit(w)`` returns the correction,
    ``measure(w, correction)`` the measurement's record."""
    out = []
    a, b = halves(w, seed)
    for name, (fit_on, test_on) in (("a->b", (a, b)), ("b->a", (b, a))):
        value = fit(fit_on)
        out.append({"fitted_on": name[0], "measured_on": name[-1], "bars": int(test_on.count.sum()),
                    "value": np.round(value, 4).tolist(), "untuned": measure(test_on, None),
                    "tuned": measure(test_on, value)})
        print(json.dumps(out[-1]), flush=True)
    return out


def write_meta(models: Path, update: dict) -> None:
    for path in (models / "groove.int8.onnx", models / "groove.fp32.onnx"):
        m = onnx.load(str(path))
        prop = next(p for p in m.metadata_props if p.key == METADATA_KEY)
        meta = json.loads(prop.value)
        meta.update(update)
        prop.value = json.dumps(meta)
        onnx.save(m, str(path))


def fit_voices(gen: Generator, ds: Dataset, kind: str, voices: str, args, models: Path) -> int:
    """One per-voice correction (``kind``), fitted on ``args.split``, cross-fitted if asked, written."""
    names = [v.strip() for v in voices.split(",")]
    flag = {"fill": "fills"}.get(kind, kind)
    unknown = [v for v in names if v not in VOICE_NAMES]
    if unknown:
        raise SystemExit(f"--{flag}: unknown voice {unknown[0]!r}; allowed: {', '.join(VOICE_NAMES)}")
    index = [VOICE_NAMES.index(v) for v in names]
    split = Windows(ds, args.split, gen.cond)
    w = fill_subset(split, args.every) if kind == "fill" else every_nth(split, args.every)
    palette = args.palette if kind == "fill" else "bar"
    seeds = [args.seed + k for k in range(args.seeds)]
    attr = ATTRIBUTE[kind]
    before = getattr(gen, attr)

    def fit(on: Windows, rounds: int = args.rounds, start=None):
        if kind == "velocity":
            return fit_velocity(gen, on, index, rounds, args.gain, seeds, start)
        return fit_bias(gen, on, kind, index, rounds, args.gain, seeds, palette, start)

    def measure(on: Windows, value) -> list[float]:
        _, history = fit(on, 0, value)
        record = history[0]
        return record["velocity_mean_ratio" if kind == "velocity" else "ratio_all_voices"]

    held_out = crossfit(lambda on: fit(on)[0], measure, w, args.seed) if args.crossfit else None
    setattr(gen, attr, before)
    value, history = fit(w)
    key = VOICE_CORRECTIONS[kind]
    write_meta(models, {key: np.round(value, 4).tolist(),
                        f"{kind}_calibration": {"data": f"{args.split} split", "voices": names, "palette": palette,
                                                "every": args.every, "seeds": seeds, "bars": int(w.count.sum()),
                                                "rounds": args.rounds, "gain": args.gain, "history": history,
                                                **({"crossfit": held_out} if held_out else {})}})
    print(f"wrote {key} into {models}/groove.*.onnx")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", default="models")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bars-per-style", type=int, default=150)
    ap.add_argument("--gain", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-style", action="store_true",
                    help="a bias per style and voice (default: one per voice, the same for every style)")
    ap.add_argument("--palette", default="cymbal", choices=("bar", "cymbal", "auto"),
                    help="what the model is told of each train bar's kit (evaluation.generate_like); "
                         "cymbal: the timekeeping cymbal, as songs and the pedal tell it")
    ap.add_argument("--fills", metavar="VOICES",
                    help="instead: fit a bias for these voices (comma-separated) on fill bars only, where the "
                         "palette leaves them to the model, e.g. low_tom,mid_tom,high_tom; written as fill_voice_bias")
    ap.add_argument("--played", metavar="VOICES",
                    help="instead: fit a bias for these voices where the palette says the bar plays them, told "
                         "each bar's palette; written as played_voice_bias")
    ap.add_argument("--again", metavar="VOICES",
                    help="instead: fit a bias for these voices where the palette says the bar plays them and "
                         "the bar already has; written as again_voice_bias")
    ap.add_argument("--velocity", metavar="VOICES", nargs="?", const=",".join(VOICE_NAMES),
                    help="instead: fit a velocity tilt for these voices (default: all), told each bar's palette; "
                         "written as velocity_tilt")
    ap.add_argument("--split", default="train", choices=("train", "validation"),
                    help="with --fills, --played, --again or --velocity: the split to fit on")
    ap.add_argument("--crossfit", action="store_true",
                    help="also fit on each half of the split's performances and measure on the other half")
    ap.add_argument("--every", type=int, default=2,
                    help="with --fills, --played, --again or --velocity: every N-th performance of the split "
                         "(with a fill, for --fills)")
    ap.add_argument("--seeds", type=int, default=2, help="with --fills, --played, --again or --velocity: "
                                                         "generation passes per round")
    args = ap.parse_args(argv)
    models = Path(args.models)
    int8 = models / "groove.int8.onnx"
    gen = Generator(str(int8), seed=args.seed)
    gen.use_calibration = True
    ds = Dataset.load(args.data)
    for kind, voices in (("fill", args.fills), ("played", args.played), ("again", args.again),
                         ("velocity", args.velocity)):
        if voices:
            return fit_voices(gen, ds, kind, voices, args, models)
    w = subset(Windows(ds, "train", gen.cond), args.bars_per_style, np.random.default_rng(args.seed))
    styles = gen.cond.styles
    bias = np.zeros((len(styles), 9))
    history = []
    best = (np.inf, bias.copy(), -1)
    for r in range(args.rounds + 1):
        gen.calibration = bias.copy()
        gen.rng = np.random.default_rng(args.seed)  # the same random draws every round: less noise
        g, real, spans = generate_like(gen, w, palette=args.palette)
        bar_styles = np.concatenate([[styles[w.style_index[slot]]] * count for slot, count in spans])
        gd, rd = per_style_density(g, bar_styles), per_style_density(real, bar_styles)
        g_all = g[:, :, 0].sum(axis=1).mean(axis=0)
        r_all = real[:, :, 0].sum(axis=1).mean(axis=0)
        ratio_all = (g_all + 0.05) / (r_all + 0.05)
        # how far off, over every style and voice, weighted by how much each voice is played
        err = sum(n * float(np.sum(rd[s][0] * np.abs(np.log((gs + 0.05) / (rd[s][0] + 0.05)))))
                  for s, (gs, n) in gd.items()) / max(1, sum(n for _, n in gd.values()))
        history.append({"round": r, "error": round(err, 4),
                        "ratio_all_voices": [round(float(x), 3) for x in g_all / np.maximum(r_all, 1e-9)]})
        print(json.dumps(history[-1]), flush=True)
        if err < best[0]:
            best = (err, bias.copy(), r)
        if r == args.rounds:
            break
        for s, (gs, n) in gd.items():
            rs = rd[s][0]
            k = styles.index(s)
            step = -np.log((gs + 0.05) / (rs + 0.05))
            weight = min(1.0, n / SHRINK_BARS) if args.per_style else 0.0
            step = weight * step - (1 - weight) * np.log(ratio_all)
            bias[k] += np.clip(args.gain * step, -1.0, 1.0)
        bias[0] -= args.gain * np.log(ratio_all)  # style "any": the global correction
    bias = best[1]
    print(f"keeping round {best[2]} (error {best[0]:.4f})")
    table = {s: np.round(bias[i], 4).tolist() for i, s in enumerate(styles)}
    write_meta(models, {"voice_bias": table,
                        "calibration": {"data": "train split", "palette": args.palette, "per_style": args.per_style,
                                        "rounds": args.rounds, "bars_per_style": args.bars_per_style,
                                        "gain": args.gain, "kept_round": best[2], "history": history}})
    print(f"wrote the voice bias table into {models}/groove.*.onnx")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
