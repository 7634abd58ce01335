"""Foundation benchmarks: dataset build and offline rendering (wall time, peak memory, x real time).

Each job runs as its own ``drummachine`` process so its peak memory is its own.
Usage: python benchmarks/foundation.py [--data DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_measured(args: list[str]) -> dict:
    """Wall time and peak RSS of one child process (pinned to one core)."""
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "drummachine", *args]
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return {"wall_s": round(wall, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def five_minute_midi(path: Path) -> float:
    """A real drummer's performance looped to 5 minutes."""
    from drummachine.core.groove import Notes
    from drummachine.midi.files import read_midi, write_midi

    src = read_midi(ROOT / "tests/fixtures/groove/drummer1/session2/32_punk_140_beat_4-4.mid")
    n = src.notes
    bar = n.ticks_per_beat * 4
    length = (int(n.ticks.max()) // bar + 1) * bar
    seconds_per_tick = 60.0 / (src.bpm * n.ticks_per_beat)
    reps = int(np.ceil(300.0 / (length * seconds_per_tick)))
    ticks = np.concatenate([n.ticks + k * length for k in range(reps)])
    keep = ticks * seconds_per_tick < 300.0
    notes = Notes(ticks[keep], np.tile(n.pitches, reps)[keep], np.tile(n.velocities, reps)[keep], n.ticks_per_beat)
    write_midi(path, notes, src.bpm, src.meter)
    return float(keep.sum())


def render_in_process(midi: Path) -> dict:
    """Time the render path alone (read, mix, limit; no process start, no file write), one core."""
    from drummachine.audio import render as mixer
    from drummachine.audio.kit import synth_kit
    from drummachine.core.voices import input_map
    from drummachine.midi.files import read_midi

    os.sched_setaffinity(0, {0})
    t0 = time.perf_counter()
    kit = synth_kit()
    t_kit = time.perf_counter() - t0
    t0 = time.perf_counter()
    perf = read_midi(midi)
    lut = np.full(128, -1)
    for k, v in input_map("gm").items():
        lut[k] = v
    voices = lut[perf.notes.pitches]
    onsets = np.rint(perf.seconds() * kit.sample_rate).astype(np.int64)
    audio = mixer.normalize(mixer.render(kit, onsets, voices, perf.notes.velocities / 127.0))
    took = time.perf_counter() - t0
    seconds = len(audio) / kit.sample_rate
    return {"audio_s": round(seconds, 1), "render_s": round(took, 3), "x_real_time": round(seconds / took, 1),
            "kit_synthesis_s": round(t_kit, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "groove"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results: dict = {"machine": {"cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if (Path(args.data) / "info.csv").exists():
            r = run_measured(["dataset", "build", "--data", args.data, "--out", str(tmp / "d.npz"), "--quiet"])
            results["dataset_build"] = {"data": os.path.relpath(args.data, ROOT), **r}
        midi = tmp / "five_minutes.mid"
        notes = five_minute_midi(midi)
        r = run_measured(["render", str(midi), "-o", str(tmp / "five.wav")])
        results["render_5min_cli"] = {"notes": notes, **r, "x_real_time": round(300.0 / r["wall_s"], 1)}
        results["render_5min_in_process"] = render_in_process(midi)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
