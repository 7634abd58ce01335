"""The mixer under JACK, three ways side by side in rotating turns in one run: mixing inside the
Python callback (before), the Python callback copying blocks a mixing thread mixed ahead, and
rtmixer's C callback playing a ring a writer thread keeps full (``audio.ring_out``: no Python in
JACK's thread).

    python benchmarks/mixer_rt.py [--seconds 30] [--turns 3] [--load 0] [--json benchmarks/mixer_rt.json]

Starts its own JACK dummy server (48 kHz, 128 frames) named ``$JACK_DEFAULT_SERVER-rt`` and keeps
``jack_simple_client`` (C, a sine) in the same graph all along, as the reference client. Each turn
runs, for the built-in kit and the largest Debian kit (``hydrogen-drumkits``: ForzeeStereo), one
mixer process per way of mixing (which goes first rotates from turn to turn), alone, fed a busy
groove a second ahead (as the engine feeds it, with less lead) for ``--seconds``. ``--load N``
keeps N busy processes on the CPUs during the whole run (the engine's model, the UI...).

Per kit and way, summed over the turns:
- the Python callback's own duration p50/p99 (5 µs bins) and max, from the mixer's histogram
  (none for the ring: its callback is C);
- jackd's blame from its log during the turns: periods it found PortAudio (the mixer) not
  finished, and the C client not finished (state Triggered: woken but not yet run, the host did
  not schedule it; Running: it ran too long), and the dummy driver's own late wake-ups (the host
  stalling jackd itself, which no client can help);
- the underruns the mixer counted (PortAudio's output underflow flag), blocks not mixed in time
  (mixed ahead: mixed in the callback instead, or silence if the thread was mid-turn: ``silent``;
  ring: times the ring ran dry and its playback was restarted), the worst wake-up gap, the mixing
  thread's worst turn, and its turns a callback came during (the two then shared the interpreter
  lock).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kits import groove_events  # noqa: E402  the same busy groove as the kits' callback benchmark

RATE = 48000
PERIOD = 128
LARGEST = "ForzeeStereo"
KITS = {"built-in": None, LARGEST: LARGEST}
#: label -> (AudioProcessSink's ``mixing``, its ``ring_blocks``: 0 the default)
WAYS = {"in the callback": ("callback", 0), "mixed ahead": ("ahead", 0), "ring": ("ring", 0),
        "ring (4 blocks)": ("ring", 4)}
DEFAULT_WAYS = ("in the callback", "mixed ahead", "ring")
C_CLIENT = "jack_simple_client"  # its name in the graph


def mixer_child(kit: str, way: str, seconds: float) -> None:
    """In its own interpreter: one mixer process fed the groove; its counters as one JSON line."""
    from drummachine.audio.process import AudioProcessSink

    mixing, ring_blocks = WAYS[way]
    sink = AudioProcessSink(kit or None, RATE, mixing=mixing, ring_blocks=ring_blocks).wait_ready()
    events, frames = groove_events()
    time.sleep(0.5)  # the stream settles; the turn's figures start from here
    base = {"callbacks": sink.callbacks, "timings": sink.block.timings.copy(), "not_ready": sink.not_ready}
    start = int(sink.clock.now() * RATE) + RATE // 4
    t_end = time.monotonic() + seconds
    k, loop = 0, 0
    while time.monotonic() < t_end:
        horizon = int(sink.clock.now() * RATE) + RATE
        while start + loop * frames + events[k][0] < horizon:
            f, v, vel = events[k]
            sink.events.push(start + loop * frames + f, v, vel)
            k += 1
            if k == len(events):
                k, loop = 0, loop + 1
        time.sleep(0.05)
    timings = sink.block.timings.copy() - base["timings"]
    result = {"seconds": seconds, "callbacks": sink.callbacks - base["callbacks"], "underruns": sink.underruns,
              "not_ready": sink.not_ready - base["not_ready"], "late_events": sink.late_events,
              "remixed": sink.remixed, "mixing": sink.mixing, "silent": sink.silent_blocks,
              "overlaps": sink.overlaps,
              "faults": sink.faults, "worst_callback_us": round(sink.worst_callback_ms * 1000, 1),
              "worst_gap_ms": round(sink.worst_gap_ms, 3), "worst_mix_ms": round(sink.worst_mix_ms, 3),
              "notes": sink.notes, "timings": timings.tolist()}
    sink.close()
    print(json.dumps(result))


class JackServer:
    """jackd (dummy, 48 kHz, 128 frames) of this benchmark's own, its log read for blame."""

    def __init__(self, name: str, log: Path):
        self.name, self.log = name, log

    def __enter__(self):
        self.file = open(self.log, "w")
        self.proc = subprocess.Popen(["jackd", "-n", self.name, "-d", "dummy", "-r", str(RATE), "-p", str(PERIOD)],
                                     stdout=self.file, stderr=subprocess.STDOUT)
        r = subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, text=True,
                           env={**os.environ, "JACK_DEFAULT_SERVER": self.name})
        if "available" not in r.stdout:
            raise RuntimeError(f"jackd did not start: {r.stdout} {r.stderr}")
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()  # by its pid: only this benchmark's server
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.file.close()

    def mark(self) -> int:
        self.file.flush()
        return self.log.stat().st_size

    def blame(self, since: int, until: int) -> dict:
        """jackd's words between two marks: which client it found unfinished, in which state."""
        with open(self.log, "rb") as f:
            f.seek(since)
            text = f.read(until - since).decode(errors="replace")
        found = Counter((m.group(1), m.group(2))
                        for m in re.finditer(r"client = (.+?) was not finished, state = (\w+)", text))
        out = {"driver_late_wakeups": text.count("JackTimedDriver::Process XRun")}
        for who, name in (("mixer", "PortAudio"), ("c_client", C_CLIENT)):
            states = {state: n for (client, state), n in found.items() if client == name}
            out[f"{who}_not_finished"] = sum(states.values())
            out[f"{who}_not_finished_by_state"] = states
        return out


def busy(stop_at: float) -> None:
    x = 0
    while time.monotonic() < stop_at:
        x += 1


def summarize(turns: list[dict]) -> dict:
    from drummachine.audio.wire import timing_summary

    ok = [t for t in turns if "error" not in t]
    counts = np.sum([np.array(t["timings"], np.int64) for t in ok], axis=0) if ok else np.zeros(1, np.int64)
    worst = max((t["worst_callback_us"] for t in ok), default=0.0)
    summary = timing_summary(counts, int(worst * 1000))
    timed = bool(counts.sum())  # the ring's callback is C: not timed (no Python there)
    out = {"callback_p50_us": summary["p50_us"] if timed else None,
           "callback_p99_us": summary["p99_us"] if timed else None,
           "callback_max_us": summary["max_us"] if timed else None,
           "blocks": sum(t["callbacks"] for t in ok)}
    for key in ("underruns", "not_ready", "silent", "late_events", "remixed", "overlaps", "faults"):
        out[key] = sum(t.get(key, 0) for t in ok)
    for key in ("mixer_not_finished", "c_client_not_finished", "driver_late_wakeups"):
        out[key] = sum(t["jackd"][key] for t in ok)
    for key in ("mixer_not_finished_by_state", "c_client_not_finished_by_state"):
        c = Counter()
        for t in ok:
            c.update(t["jackd"][key])
        out[key] = dict(c)
    out["worst_gap_ms"] = max((t["worst_gap_ms"] for t in ok), default=0.0)
    out["worst_mix_ms"] = max((t["worst_mix_ms"] for t in ok), default=0.0)
    out["errors"] = [t["error"] for t in turns if "error" in t]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds per mixer per turn")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--load", type=int, default=0, help="busy processes on the CPUs meanwhile")
    ap.add_argument("--kits", default=",".join(KITS), help="built-in and/or ForzeeStereo")
    ap.add_argument("--ways", default=",".join(DEFAULT_WAYS), help=f"of: {', '.join(WAYS)}")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "mixer_rt.json")
    ap.add_argument("--mixer-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mixer_child:
        mixer_child(a.mixer_child[0], a.mixer_child[1], float(a.mixer_child[2]))
        return 0
    for tool in ("jackd", "jack_simple_client"):
        if not shutil.which(tool):
            print(f"mixer_rt: {tool} is not installed (apt-get install jackd2)", file=sys.stderr)
            return 2
    kits = [k.strip() for k in a.kits.split(",") if k.strip()]
    ways = [w.strip() for w in a.ways.split(",") if w.strip()]
    unknown = [w for w in ways if w not in WAYS]
    if unknown:
        print(f"mixer_rt: --ways: unknown {', '.join(unknown)}; allowed: {', '.join(WAYS)}", file=sys.stderr)
        return 2
    name = f"{os.environ.get('JACK_DEFAULT_SERVER', 'drummachine')}-rt"
    os.environ["JACK_DEFAULT_SERVER"] = name
    work = Path(tempfile.mkdtemp(prefix="mixer-rt-"))
    runs: dict = {kit: {way: [] for way in ways} for kit in kits}
    loads = []
    started = time.time()
    with JackServer(name, work / "jackd.log") as jack:
        reference = subprocess.Popen(["jack_simple_client"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        total = a.turns * len(kits) * len(ways) * (a.seconds + 5)
        hogs = [subprocess.Popen([sys.executable, "-c", f"import time\nx=0\nt=time.monotonic()+{total + 60}\n"
                                  "while time.monotonic()<t: x+=1"]) for _ in range(a.load)]
        try:
            for turn in range(a.turns):
                for kit in kits:
                    order = ways[turn % len(ways):] + ways[:turn % len(ways)]  # who goes first rotates
                    for way in order:
                        since = jack.mark()
                        r = subprocess.run([sys.executable, __file__, "--mixer-child", KITS[kit] or "",
                                            way, str(a.seconds)], capture_output=True, text=True,
                                           timeout=a.seconds + 120)
                        until = jack.mark()
                        try:
                            res = json.loads(r.stdout.strip().splitlines()[-1])
                        except (IndexError, json.JSONDecodeError):
                            res = {"error": (r.stderr.strip().splitlines() or ["no output"])[-1][:200]}
                        res["jackd"] = jack.blame(since, until)
                        res["turn"] = turn
                        loads.append(os.getloadavg()[0])
                        runs[kit][way].append(res)
                        print(f"turn {turn} {kit} {way}: {res.get('error') or {k: res[k] for k in ('underruns', 'not_ready')}}"
                              f" {res['jackd']}", file=sys.stderr)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
            reference.terminate()
            reference.wait(5)
    shutil.rmtree(work, ignore_errors=True)
    result = {"jack": {"server": name, "rate": RATE, "period": PERIOD, "period_us": round(PERIOD / RATE * 1e6)},
              "seconds_per_turn": a.seconds, "turns": a.turns, "load_processes": a.load,
              "reference": "jack_simple_client in the same graph all along",
              "kits": {kit: {way: summarize(runs[kit][way]) for way in ways} for kit in kits},
              "notes": sorted({n for kit in runs.values() for way in kit.values() for t in way
                               for n in t.get("notes", ())}),
              "host": {"cpus": os.cpu_count(), "load_average_during": round(float(np.mean(loads)), 2) if loads else None,
                       "date": time.strftime("%Y-%m-%d"), "minutes": round((time.time() - started) / 60, 1)},
              "turns_raw": {kit: {way: [{k: v for k, v in t.items() if k != "timings"} for t in runs[kit][way]]
                                  for way in ways} for kit in kits}}
    for kit in kits:
        before = result["kits"][kit].get("in the callback")
        for way in [w for w in ways if w != "in the callback" and before]:
            now = result["kits"][kit][way]
            result["kits"][kit][f"ratio_{way.replace(' ', '_')}_over_in_the_callback"] = {
                k: round(now[k] / before[k], 2) if before[k] and now[k] is not None else None
                for k in ("callback_p50_us", "callback_p99_us", "callback_max_us", "mixer_not_finished",
                          "underruns")}
    a.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["kits"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
