"""Tuning the follower on the train split, checking on the validation split (issue 13).

Each setting is a replay (benchmarks/follow.py's ``replay``: the tracker's readings handed to the
engine on a manual clock, no JACK) of the band mix, medians over the performances. Settings are
``name=value`` pairs: ``T.NAME`` a constant of drummachine.listen.tracker, anything else a
FollowConfig field; each runs in its own process (the tracker's constants are module globals).

    python benchmarks/follow_tune.py --split train --performances 4 --scenarios steady,break,accelerando \\
        --setting "base" --setting "jit03 T.JITTER_OK=0.03" --out /tmp/tune_train.json
    python benchmarks/follow_tune.py --split validation --performances 8 --scenarios steady,accelerando,break \\
        --setting "old" --setting "jit03_lock4 T.JITTER_OK=0.03 lock_readings=4 relock_readings=2"

benchmarks/follow_tuning.json holds the runs docs/follow.md cites.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

KEYS = ("band_beats_to_lock", "band_beats_to_lock_vs_played", "phase_error_ms_p95", "phase_error_vs_played_ms_p95",
        "tempo_error_pct_p95", "largest_bar_tempo_change_pct", "break_tempo_drift_pct", "beats_to_relock_after_break",
        "largest_beat_move_ms", "beat_moves_over_20ms")


def one(split: str, performances: int, scenarios: list[str], name: str, pairs: list[str],
        readings: dict | None = None) -> dict:
    """One setting, in this process (``readings``: the tracker's readings cached, follow.replay)."""
    import follow as bench
    import follow_material as material

    import drummachine.listen.tracker as tracker

    config = {}
    for pair in pairs:
        key, value = pair.split("=")
        number = float(value) if "." in value else int(value)
        if key.startswith("T.") and readings is not None:
            raise SystemExit(f"{key}: a tracker's setting cannot be tuned on cached readings (drop --cached)")
        if key.startswith("T."):
            setattr(tracker, key[2:], number)
        else:
            config[key] = number
    t0 = time.time()
    rows = [bench.replay(s, perf, readings=readings, **config) for perf in material.validation_performances(performances, split=split)
            for s in scenarios]
    out = {"name": name, "args": pairs, "split": split, "performances": performances, "secs": round(time.time() - t0)}
    for s in scenarios:
        rr = [r for r in rows if r["scenario"] == s]
        out[s] = {k: round(float(np.median([r[k] for r in rr if r.get(k) is not None])), 2)
                  if any(r.get(k) is not None for r in rr) else None for k in KEYS}
        out[s]["lock_max"] = max((r.get("band_beats_to_lock") or 99) for r in rr)  # 99: never locked
        out[s]["clips_with_moves_over_20ms"] = sum(1 for r in rr if r.get("beat_moves_over_20ms"))
        out[s]["moves_over_20ms"] = sum(r.get("beat_moves_over_20ms") or 0 for r in rr)
        for k in ("tracker_error_ms_p5_p50_p95", "follower_adds_ms_p5_p50_p95"):
            vals = [r[k] for r in rr if r.get(k)]
            out[s][k] = [round(float(v), 1) for v in np.median(np.array(vals), axis=0)] if vals else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="train", choices=("train", "validation"))
    ap.add_argument("--performances", type=int, default=4)
    ap.add_argument("--scenarios", default="steady,break,accelerando")
    ap.add_argument("--setting", action="append", default=[], help='"name key=value ..." (repeatable)')
    ap.add_argument("--cached", action="store_true",
                    help="follower settings only, in one process: the tracker runs once per clip, its readings "
                         "are handed to every setting (its prior stays the song's tempo; check with a full run)")
    ap.add_argument("--one", nargs="*", help=argparse.SUPPRESS)  # a child: one setting
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    scenarios = args.scenarios.split(",")
    if args.one is not None:
        print(json.dumps(one(args.split, args.performances, scenarios, args.one[0], args.one[1:])), flush=True)
        return 0
    results = []
    readings: dict = {}
    for setting in args.setting or ["base"]:
        if args.cached:
            words = setting.split()
            results.append(one(args.split, args.performances, scenarios, words[0], words[1:], readings))
            print(json.dumps(results[-1]), flush=True)
            continue
        words = setting.split()
        r = subprocess.run([sys.executable, __file__, "--split", args.split, "--performances", str(args.performances),
                            "--scenarios", args.scenarios, "--one", *words], capture_output=True, text=True)
        line = [x for x in r.stdout.splitlines() if x.startswith("{")]
        results.append(json.loads(line[-1]) if line else {"name": words[0], "error": r.stderr[-500:]})
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": results}, indent=1)
                                  + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
