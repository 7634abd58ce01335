"""The generator loop under CPU hogs and a storm of cues: generator misses (a step due with no
version made) and late cues (a step played as made before a cue), as a normal thread and with
SCHED_FIFO under the commit loop's, in alternating turns. The shipped model, a funk jam at 200
bpm, the commit loop at the session's COMMIT_PRIORITY in every turn; HOGS busy Python processes
at normal priority; a cue every 30-150 ms (taps, tempo nudges, accents, fills, intensity: what a
musician stamping on the pedal sends, each but the nudges rewinding the generator).

    python benchmarks/generator_priority.py ROUNDS SECONDS HOGS PRIORITY [--json OUT]

Found (2 30 4 1): the same misses either way (3 in 526 steps each) — with seed 0 and no hogs the
same step missed every time: tap tempo sent step times back, and the commit loop handed out the
steps made ahead in a burst. After the transport's fix (benchmarks/generator_priority.json):
0 misses in 1,083 steps, either way (docs/faults.md, "What does not work yet").
"""
import json
import random
import subprocess
import sys
import threading
import time

import numpy as np

from drummachine.core.engine import Engine
from drummachine.core.events import MemorySink
from drummachine.core.song import jam
from drummachine.core.transport import MonotonicClock
from drummachine.live.session import COMMIT_PRIORITY
from drummachine.model.generator import Generator
from drummachine.model.model_file import load_model

CUES = [("tap", None), ("tempo_up", 1.0), ("tempo_down", 1.0), ("accent", None), ("fill", None),
        ("intensity_up", None), ("intensity_down", None)]


def turn(loaded, priority: int, seconds: float, hogs: int, seed: int) -> dict:
    procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(hogs)]
    try:
        clock = MonotonicClock()
        eng = Engine(Generator(loaded=loaded, seed=seed), jam("funk", 200.0), clock, [MemorySink()])
        stop = threading.Event()
        eng.command("start")
        eng.run_threads(stop, commit_priority=COMMIT_PRIORITY, generator_priority=priority)
        rng = random.Random(seed)
        end = time.monotonic() + seconds
        cues = 0
        while time.monotonic() < end:
            name, value = rng.choice(CUES)
            eng.command(name, value)
            cues += 1
            time.sleep(rng.uniform(0.03, 0.15))
        stop.set()
        time.sleep(0.1)
    finally:
        for p in procs:
            p.kill()
    gen = np.array(eng.stats.gen_seconds) * 1000
    return {"generator_priority": priority, "seconds": seconds, "hogs": hogs, "cues": cues,
            "steps": eng.stats.steps, "misses": eng.stats.misses, "late_cues": eng.stats.late_cues,
            "late_commits": eng.stats.late_commits, "regenerated": eng.stats.regenerated,
            "step_ms_p50": round(float(np.median(gen)), 2), "step_ms_p99": round(float(np.percentile(gen, 99)), 2)}


def main() -> int:
    rounds, seconds, hogs, priority = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    loaded = load_model(None, 1, None)
    rows = []
    for r in range(rounds):
        for prio in (0, priority):
            rows.append(turn(loaded, prio, seconds, hogs, seed=r))
            print(json.dumps(rows[-1]), flush=True)
    total = {str(p): {k: sum(row[k] for row in rows if row["generator_priority"] == p)
                      for k in ("steps", "cues", "misses", "late_cues", "late_commits")} for p in (0, priority)}
    result = {"command": " ".join(["python", *sys.argv]), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "turns": rows, "total": total}
    print(json.dumps(total))
    if "--json" in sys.argv:
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
