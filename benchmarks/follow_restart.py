"""The listening process started again mid-song, in the replay: what the machine plays after.

A listening process that died, or whose input went and came back, is started again by the
engine's link (``listen.listener``): its tracker starts cold on a band already playing, while the
follower holds the machine's beat. This runs ``follow.replay`` (the real tracker, the engine's
transport on a manual clock, a reading every 50 ms) with ``restart_at``: ``--restart-at`` seconds
into each clip the tracker is dropped, the engine gets nothing for ``--gap`` seconds (the new
process starting: 0.31-0.35 s on JACK, benchmarks/follow_instrument_listener_killed.json), then a
new one starts, from cold around the tempo the engine plays or from the dropped one's state
(``BeatTracker.resume``, as the listening process does); beside them, as the reference, the same
clip with no restart. ``--follow KEY=VALUE``: the follower's settings
(``FollowConfig``). Per clip, against the band's beats: p95 and largest error over the 8 s
before the restart, the 8 s after and the rest; band beats from the restart
to the first of 4 of the machine's beats in a row within 30 ms (from 1 s after the new tracker
started); the beats moved over 20 ms in one go in the 16 s after, and the largest move.

    python benchmarks/follow_restart.py --performances 8 --scenarios steady,accelerando,jump \\
        --restart-at 15 --out benchmarks/follow_restart_15s.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import follow  # noqa: E402
import follow_instrument  # noqa: E402
import follow_material as material  # noqa: E402

#: the reference; a new tracker from cold ("restart" in the results before 2026-12-07's second
#: session); one that goes on from the dropped one's state, as the listening process does
KINDS = ("no restart", "cold restart", "restart handed over")


def replay_restarted(path: str, bpm: float, scenario: str, kind: str, restart_at: float, gap: float,
                     follow_config: dict | None = None) -> dict:
    """``follow.replay`` with the tracker started again at ``restart_at`` (``KINDS``), or never
    (the reference), and the figures around that moment."""
    row = follow.replay(scenario, (path, bpm), restart_at=float("inf") if kind == "no restart" else restart_at,
                        restart_gap=gap, handed_over=kind == "restart handed over", **(follow_config or {}))
    return measured(np.array(row["beats_s"]), np.array(row["band_beats_s"]), restart_at, gap) | \
        {"clip": path, "scenario": scenario, "kind": kind}


def measured(ours: np.ndarray, band: np.ndarray, restart_at: float, gap: float) -> dict:
    """The machine's beats ``ours`` against the band's ``band`` around the restart (seconds)."""
    err, _, inside = follow_instrument.against_the_band(ours, band)
    err = np.abs(err)
    out = {}
    for name, a, b in (("before", restart_at - 8, restart_at), ("first_8s", restart_at, restart_at + 8),
                       ("later", restart_at + 8, 1e9)):
        e = err[inside & (ours >= a) & (ours < b)]
        out[f"{name}_p95_ms"] = round(float(np.percentile(e, 95)) * 1000, 1) if e.size else None
        out[f"{name}_max_ms"] = round(float(e.max()) * 1000, 1) if e.size else None
    first = follow_instrument.first_of_four((err < 0.030) & inside & (ours > restart_at + gap + 1.0))
    out["band_beats_to_4_within_30ms"] = None if first is None else \
        round(float((ours[first] - restart_at) / np.median(np.diff(band))), 1)
    moves = follow_instrument.beat_moves(ours, 0)  # moves[j]: the spacing ending at ours[j + 5]
    when = ours[5:5 + moves.size]
    after = moves[(when >= restart_at) & (when < restart_at + 16)]
    out["moves_over_20ms_in_16s"] = int((after > 0.020).sum())
    out["largest_move_ms"] = round(float(after.max()) * 1000, 1) if after.size else None
    return out


def summary(rows: list[dict]) -> dict:
    out = {}
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        for kind in KINDS:
            got = [r for r in rows if r["scenario"] == scenario and r["kind"] == kind]
            if not got:
                continue
            cell = {}
            for key in ("first_8s_p95_ms", "first_8s_max_ms", "later_p95_ms", "band_beats_to_4_within_30ms",
                        "largest_move_ms"):
                v = [r[key] if r[key] is not None else float("inf") for r in got]
                cell[key] = {"median": round(float(np.median(v)), 1), "max": round(float(max(v)), 1)}
            cell["moves_over_20ms_in_16s"] = sum(r["moves_over_20ms_in_16s"] for r in got)
            cell["clips_with_a_move_over_100ms"] = sum(1 for r in got if (r["largest_move_ms"] or 0) > 100)
            out[f"{scenario}, {kind}"] = cell
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--performances", type=int, default=8)
    ap.add_argument("--scenarios", default="steady,accelerando,jump")
    ap.add_argument("--restart-at", type=float, default=15.0, metavar="SECONDS")
    ap.add_argument("--gap", type=float, default=0.35, metavar="SECONDS")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--follow", action="append", default=[], metavar="KEY=VALUE",
                    help="a FollowConfig setting (numbers; repeat for more)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    follow_config = {k: int(v) if v.isdigit() else float(v) for k, v in (kv.split("=", 1) for kv in args.follow)}
    rows = []
    for scenario in args.scenarios.split(","):
        for path, bpm in material.validation_performances(args.performances):
            for kind in args.kinds.split(","):
                row = replay_restarted(path, bpm, scenario, kind, args.restart_at, args.gap, follow_config)
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "restart_at": args.restart_at, "gap": args.gap,
              "follow": follow_config,
              "summary": summary(rows), "runs": rows}
    print(json.dumps(result["summary"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
