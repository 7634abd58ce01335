"""The engine's commit loop under CPU hogs: how late it hands steps out past their deadline
(its horizon before the step sounds), as a normal thread and with SCHED_FIFO (session's
COMMIT_PRIORITY), in alternating turns. The engine on its own threads, the stand-in generator
costing 4 ms a step, a jam at 200 bpm; HOGS busy Python processes at normal priority.

    python benchmarks/commit_priority.py ROUNDS SECONDS HOGS   # e.g. 2 20 4; JSON lines out
"""
import json
import subprocess
import sys
import threading
import time

import numpy as np
from drummachine.core.engine import Engine
from drummachine.core.events import MemorySink
from drummachine.core.fake_generator import FakeGenerator
from drummachine.core.song import jam
from drummachine.core.transport import MonotonicClock

def turn(priority, seconds, hogs):
    procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(hogs)]
    clock = MonotonicClock()
    eng = Engine(FakeGenerator(1, cost=0.004), jam("funk", 200.0), clock, [MemorySink()])
    late = []
    orig = eng._hand_out
    def hand_out(c, hvo, events):
        late.append(clock.now() - (eng.transport.time_of(c) - eng.horizon(c)))
        orig(c, hvo, events)
    eng._hand_out = hand_out
    stop = threading.Event()
    eng.command("start")
    eng.run_threads(stop, commit_priority=priority)
    time.sleep(seconds)
    stop.set(); time.sleep(0.05)
    for p in procs: p.kill()
    a = np.array(late[5:]) * 1000
    return {"priority": priority, "steps": len(a), "late_p50_ms": round(float(np.median(a)), 2),
            "late_p99_ms": round(float(np.percentile(a, 99)), 2), "late_max_ms": round(float(a.max()), 2),
            "misses": eng.stats.misses, "late_commits": eng.stats.late_commits}

rows = []
for r in range(int(sys.argv[1])):
    for prio in (0, 3):
        rows.append(turn(prio, float(sys.argv[2]), int(sys.argv[3])))
        print(json.dumps(rows[-1]), flush=True)
