"""Fit the performer (drummachine/core/performer.py) on the TRAIN split's drummers; write models/performer.json.

    python -m training.fit_performer --data /tmp/gmd.npz [--out models/performer.json] [--fold K/N]

``--data``: the Groove MIDI Dataset folder or a ``drummachine dataset build`` .npz. ``--fold K/N``
fits on the train performances other than every N-th from K (cross-fit: the left-out ones are
measured with ``--split train --fold K/N`` in the as-played evaluation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from drummachine.core.conditioning import CUES, palette_of
from drummachine.core.performer import CUE_NAMES, DEFAULT_OPTIONS, Take, fit
from drummachine.corpus.dataset import Dataset
from drummachine.corpus.windows import STEPS, Windows

ROOT = Path(__file__).resolve().parents[1]
#: what ships (docs/as-played.md): half the fitted drift and a palette that keeps its choice half
#: the time before the chain is asked (chosen on a held-out fifth of train: the drummers' bar-to-bar
#: cue changes, fed to the model, change its bars more than theirs, as it adds its own dice)
SHIPPED_OPTIONS = {**DEFAULT_OPTIONS, "drift": 0.5, "stick": 0.5}


def load_dataset(path: str) -> Dataset:
    p = Path(path)
    if p.is_dir():
        from drummachine.corpus.build import build
        return build(p)
    return Dataset.load(p)


def takes_of(windows: Windows, slots=None) -> list[Take]:
    """One Take per performance (4/4, 16 steps) of a split: its measured quantile cues, palette, fills."""
    ds, cond = windows.ds, windows.cond
    out = []
    for slot in range(len(windows.files)) if slots is None else slots:
        first, count = windows.first[slot], windows.count[slot]
        idx = np.arange(first, first + count)
        hvo = ds.bar_hvo(idx, STEPS)
        f = windows.files[slot]
        cues = np.stack([cond.quantile(CUES[c], ds.bars[CUES[c]][idx]) for c in CUE_NAMES], axis=1)
        out.append(Take(str(ds.files["genre"][f]), float(ds.files["bpm"][f]), cues, palette_of(hvo),
                        ds.bars["fill"][idx].astype(bool), ds.bars["index"][idx].astype(int)))
    return out


def fold_slots(n: int, fold: str | None, keep_out: bool) -> list[int]:
    """Slots of a K/N fold: every N-th from K (``keep_out``) or all the others."""
    if not fold:
        return list(range(n))
    k, m = (int(x) for x in fold.split("/"))
    return [s for s in range(n) if (s % m == k) == keep_out]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=str(ROOT / "models" / "performer.json"))
    ap.add_argument("--fold", default=None, help="K/N: leave every N-th train performance from K out")
    ap.add_argument("--shrink", type=float, default=10.0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    from drummachine.model.model_file import load_model
    cond = load_model(None)[0].conditioning
    ds = load_dataset(args.data)
    train = Windows(ds, "train", cond)
    takes = takes_of(train, fold_slots(len(train.files), args.fold, keep_out=False))
    table = fit(takes, cond.style_defaults, shrink=args.shrink)
    table["options"] = dict(SHIPPED_OPTIONS)
    table["fitted_on"] = {"split": "train", "fold_left_out": args.fold, "performances": len(takes),
                          "bars": int(sum(len(t.cues) for t in takes))}
    Path(args.out).write_text(json.dumps(table, indent=None, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(table['styles'])} styles from {len(takes)} performances "
          f"in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
