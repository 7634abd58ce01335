"""The whole instrument on JACK, steady from cold (the band 2 s after the machine starts, digital
silence before it), this repository's code and another checkout's, alternating in the same
minutes (the host's noise moves single runs by tens of beats):

    git worktree add /tmp/before COMMIT
    jackd -d dummy -r 48000 -p 128 &
    python benchmarks/follow_jack_ab.py --before /tmp/before --rounds 3 --out benchmarks/follow_jack_start_over_ab.json

Each run is ``follow_instrument.run_one`` and ``measure`` from that checkout (its play process
runs with its own code). ``--pop909 DIR``: the steady clip is one of the 16 held-out POP909 songs
(``follow_outside``, music from outside this repository) instead of a drummer's band.

    python benchmarks/follow_jack_ab.py --before /tmp/before --pop909 POP909 --performance 12"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parents[1])
KEYS = ("band_beats_to_lock", "phase_error_ms_p50", "phase_error_ms_p95", "phase_error_vs_played_ms_p95", "tempo_error_pct_p95",
        "largest_beat_move_ms", "beat_moves_over_20ms", "underruns", "misses", "phase_error_vs_sound_ms_p95")
POP909_SKIP = 24  #: the held-out songs (the first 24 were the tuning songs: docs/follow.md)


def run_in(repo: str, performance: int = 1, tightness: float = 0.0, pop909: str | None = None) -> dict:
    for name in [k for k in sys.modules if k.startswith(("follow", "drummachine"))]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p not in (repo, repo + "/benchmarks", HERE, HERE + "/benchmarks")]
    sys.path[:0] = [repo, repo + "/benchmarks"]
    instrument = importlib.import_module("follow_instrument")
    material = importlib.import_module("follow_material")
    if pop909:
        outside = importlib.import_module("follow_outside")
        song, bpm = outside.single_tempo_songs(Path(pop909), performance, skip=POP909_SKIP)[performance - 1]
        clip = outside.make_clip(song, bpm, "steady", rate=instrument.RATE)
    else:
        path, bpm = material.validation_performances(performance)[performance - 1]
        clip = material.make_clip(path, bpm, "steady", "band", rate=instrument.RATE)
    env = None
    if tightness:  # the path of beats in play's processes (benchmarks/path_site/sitecustomize.py)
        site = str(Path(HERE) / "benchmarks" / "path_site")
        env = {"DRUMMACHINE_BENCH_TIGHTNESS": str(tightness),
               "PYTHONPATH": os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p)}
    raw = instrument.run_one(clip, "beat", wait_for_band=False, lead_in=2.0, start_offset=0.137, env_extra=env)
    row = instrument.measure(raw, clip, "steady")
    # the kit at the sound card: the beats are the MIDI notes in the graph, where the kit leaves it
    # too unless handed over early; it reaches the sound card the mixer's ports' playback latency
    # later (JACK's figure), less what it was handed over early by (play's log says; reckoned
    # from JACK's figure, not recorded at a speaker: the dummy server has none)
    said = Path(raw["log"]).read_text(errors="replace") if raw.get("log") and Path(raw["log"]).exists() else ""
    early = re.search(r"audio: output latency ([\d.]+) ms", said)
    out = subprocess.run(["jack_lsp", "-l", "system:playback_1"], capture_output=True, text=True).stdout
    playback = re.search(r"playback latency = \[ *\d+ +(\d+) *\]", out)
    handed_early = round(float(early.group(1)) / 1000 * instrument.RATE) if early else 0
    late_frames = (int(playback.group(1)) if playback else 0) - handed_early
    kit = instrument.measure(dict(raw, drummer_frames=raw["drummer_frames"] + late_frames), clip, "steady")
    return {"clip": clip.name, **{k: row.get(k) for k in KEYS}, "kit_at_sound_card_ms_late": round(late_frames / instrument.RATE * 1000, 1),
            **{f"kit_at_sound_card_{k}": kit.get(k) for k in ("phase_error_ms_p50", "phase_error_ms_p95")}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the other checkout's folder")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--this-tightness", type=float, default=0.0,
                    help="this checkout's runs with the path of beats of this tightness (benchmarks/follow_path.py)")
    ap.add_argument("--performance", type=int, default=1,
                    help="which of the validation split's longest 4/4 beats (1: the rock at 115)")
    ap.add_argument("--pop909", default=None, help="POP909's folder: --performance is the Nth held-out song")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for r in range(args.rounds):
        for label, repo in (("before", str(Path(args.before).resolve())), ("this", HERE)):
            row = {"code": label, "round": r,
                   **run_in(repo, args.performance, args.this_tightness if label == "this" else 0.0, args.pop909)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
