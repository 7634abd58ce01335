"""What the listening process's main loop costs, this checkout against another in turns.

The loop of ``drummachine.listen.process.run`` as it runs with PortAudio's capture on JACK at
48 kHz and the kit from the engine's ports (the usual case on stage): a reader fills a ``Capture``
with 256-frame reads, the input and the kit beside it; every 10 ms the loop wakes, runs the
tracker on what came (the canceller, the onset strength, the estimates), and writes a reading
timed by the input's clock (refitted each 0.1 s), as each checkout does it: since 2026-12-07
(later) the samples wait until the tracker's next estimate can be made and a reading is written
with each estimate; before, the tracker ran and a reading was written at every wake. The band is
a validation drummer's band mix with the machine's kit 6 dB under it in the input; the clock is
simulated (a read returns 0-2 ms late), so each checkout gets the same input and the same times.

CPU seconds per 20 s of input, each checkout in a process of its own, in turns; and each of the
tracker's estimates as first written (when, and what the engine would get: the heard time, tempo,
next beat, confidence), compared estimate by estimate.

    python benchmarks/listen_cost.py --before WORKTREE --before-label COMMIT --turns 3 --out benchmarks/listen_cost.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = 48000
READ = 256  #: jack_capture.READ_FRAMES
POLL = 0.01  #: process.POLL_SECONDS
SECONDS = 20.0
#: each of the tracker's estimates as first written: its number, when (the poll's time), and what
#: (the engine's clock: heard times and the next beat in seconds)
FIELDS = ("estimate", "written_s", "heard_s", "bpm", "next_beat_s", "confidence")


def child(tree: str, out: str) -> None:
    """In the checkout ``tree``: run the loop, print its CPU seconds and the readings' digest; the
    readings into ``out`` (.npy)."""
    sys.path.insert(0, tree)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import time

    import numpy as np

    import drummachine.listen.capture as capture_module
    import follow_material as material
    from drummachine.listen.own_sound import open_canceller
    from drummachine.listen.tracker import UPDATE_FRAMES, BeatTracker

    path, bpm = material.validation_performances(1)[0]
    clip = material.cached_clip(path, bpm, "steady", "band", rate=RATE)
    total = int((SECONDS + 1) * RATE)
    kit = material.own_kit(path, bpm, SECONDS + 1, rate=RATE)[:total]
    band = clip.audio[:total]
    heard = material.with_own_kit(material.replace(clip, audio=band), kit, -6.0)

    clock = [100.0]
    capture_module.time.monotonic = lambda: clock[0]  # the reader's stamps: the simulated clock
    capture = capture_module.Capture(RATE, exact=False, kit=True)
    tracker = BeatTracker(RATE, bpm)
    tracker.canceller = open_canceller(tracker.arate)[0]
    rng = np.random.default_rng(7)
    latency = 0.003
    readings = []
    spent = 0.0
    taken = read = 0
    timing = capture.timing()
    next_fit = 0.0
    published, last = -1, None
    # as each checkout's loop does: since 2026-12-07 (later) the samples wait until the next
    # estimate can be made, and a reading is written when there is a new one
    waits = hasattr(tracker, "samples_before_update")
    for turn in range(int(SECONDS / POLL)):
        now = 100.0 + POLL * (turn + 1)
        while (taken + READ) / RATE <= now - 100.0:  # the reads that returned by now
            clock[0] = 100.0 + (taken + READ) / RATE + float(rng.uniform(0.0, 0.002))
            capture.take(heard[taken:taken + READ], taken + READ, kit[taken:taken + READ])
            taken += READ
        t0 = time.process_time()
        if not waits or tracker.samples + capture.written - read >= tracker.samples_before_update():
            x, kit_read, read = capture.since(read)
            if x.size:
                tracker.process(x, kit_read)
        if waits and tracker.updates == published:
            spent += time.process_time() - t0
            continue
        published = tracker.updates if waits else turn
        est = tracker.estimate()
        if now >= next_fit:
            next_fit = now + 0.1
            timing = capture.timing()
        reading = (timing.heard(est.time * RATE) - latency, est.bpm * timing.speed,
                   timing.heard(est.next_beat * RATE) - latency if est.next_beat > 0 else 0.0, est.confidence)
        spent += time.process_time() - t0
        update = tracker.frames // UPDATE_FRAMES
        if update != last and update > 0:  # an estimate: when it was first written, and what it said
            last = update
            readings.append((update, now) + reading)
    readings = np.array(readings, np.float64)
    np.save(out, readings)
    print(json.dumps({"cpu_seconds": round(spent, 4), "readings": len(readings),
                      "digest": hashlib.sha256(readings.tobytes()).hexdigest()[:16]}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=None, metavar="TREE", help="another checkout, run in turns")
    ap.add_argument("--before-label", default="before", help="what --before is (a commit)")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)  # TREE OUT.npy
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    import tempfile

    import numpy as np

    trees = {"this": str(ROOT)}
    if args.before:
        trees["before"] = str(Path(args.before).resolve())
    spent = {name: [] for name in trees}
    digests = {name: [] for name in trees}
    readings = {}
    with tempfile.TemporaryDirectory() as scratch:
        for turn in range(args.turns):
            for name, tree in trees.items():
                out = Path(scratch) / f"{name}_{turn}.npy"
                done = subprocess.run([sys.executable, __file__, "--child", tree, str(out)], capture_output=True,
                                      text=True, check=True, cwd=tree)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                spent[name].append(row["cpu_seconds"])
                digests[name].append(row["digest"])
                readings[name] = np.load(out)
    result = {"what": "the listening process's main loop (PortAudio's capture at 48 kHz, the kit from the "
                      "engine's ports, 6 dB under the band), CPU seconds per 20 s of input; each estimate as "
                      "first written, compared",
              "cpu_seconds": spent,
              "share_of_a_core": {k: round(sorted(v)[len(v) // 2] / SECONDS, 5) for k, v in spent.items()},
              "readings_digest": {k: sorted(set(v)) for k, v in digests.items()}}
    if "before" in trees:
        result["ratio_this_over_before"] = round(sum(spent["this"]) / sum(spent["before"]), 3)
        result["readings_identical"] = set(digests["this"]) == set(digests["before"]) and len(set(digests["this"])) == 1
        result["new_estimates"] = {k: len(v) for k, v in readings.items()}
        # where they are not bit for bit: the largest difference of each field, estimate by estimate
        n = min(len(v) for v in readings.values())
        diff = np.abs(readings["this"][:n] - readings["before"][:n]).max(axis=0)
        result["largest_difference"] = dict(zip(FIELDS, (float(f"{d:.3g}") for d in diff)))
        result["before_is"] = args.before_label
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
