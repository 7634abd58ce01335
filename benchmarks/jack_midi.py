"""MIDI over JACK two ways side by side in alternating turns in one run: python-rtmidi (before: one
JACK client per port object, the notes sent by a Python dispatcher thread) and drummachine's own
client (``midi.jack_midi``: one client for every port, a C process callback writing each message
at its frame).

    python benchmarks/jack_midi.py [--seconds 60] [--turns 3] [--fake-model] [--json benchmarks/jack_midi.json]

Starts its own JACK dummy server (48 kHz, 128 frames) named ``$JACK_DEFAULT_SERVER-jm`` with
``jack_simple_client`` (C, a sine) in the same graph all along, as the reference client. Each turn
runs, for each way (which goes first alternates), the real ``drummachine play --headless --no-audio``
(the shipped model unless --fake-model, funk at 100 bpm, MIDI clock out) for ``--seconds``, its
notes and clock to a recorder (benchmarks/jack_midi_probe.py: JACK-Client in a process of its own,
each event with its frame; downstream of the engine, so its own lateness is not the engine's) and
a controller (python-rtmidi: its C++ callback, no Python in JACK's thread upstream of the engine)
sending an unbound CC 20 times a second to its MIDI in.

Per way, summed over the turns:
- the drummachine clients in the graph (``jack_lsp``) while it plays;
- jackd's blame from its log during the turns: periods it found each client not finished
  (drummachine's MIDI client or clients, ``jack_simple_client``; "Triggered": woken but never ran,
  the host did not schedule it; "Running": it ran too long), and the driver's own late wake-ups;
- MIDI timing error of every note-on against the time the engine scheduled it (``--midi-schedule``),
  p50/p99/max of the absolute error, by two readings of when its frame was: the recorder's own
  wake-up in that period plus the frame's offset (``wall``), and JACK's DLL for the period plus
  the offset (``dll``; on the dummy backend of a loaded host the DLL strays by tens of ms);
- notes scheduled and recorded, and the own client's counters (written, late, periods it placed
  by the wake-up rather than the DLL).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import jack_midi_probe as probe  # noqa: E402

WAYS = {"rtmidi": {"DRUMMACHINE_JACK_MIDI": "rtmidi"}, "own client": {"DRUMMACHINE_JACK_MIDI": ""}}
C_CLIENT = "jack_simple_client"
CONTROL_CC = [0xB0, 1, 64]  #: the modulation wheel: bound to nothing in the default controller preset


def start_jackd(env: dict, log: Path) -> subprocess.Popen:
    out = open(log, "a")
    proc = subprocess.Popen(["jackd", "-d", "dummy", "-r", "48000", "-p", "128"], env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    r = subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True, text=True)
    if "available" not in r.stdout:
        raise RuntimeError(f"jackd did not start: {r.stdout} {r.stderr}")
    time.sleep(0.3)
    return proc


def blame(text: str) -> dict:
    by_client: dict = defaultdict(Counter)
    for m in re.finditer(r"client = (.+?) was not finished, state = (\w+)", text):
        by_client[m.group(1)][m.group(2)] += 1
    return {"not_finished": {c: {"total": sum(v.values()), **dict(v)} for c, v in by_client.items()},
            "driver_late_wakeups": text.count("JackTimedDriver::Process XRun")}


def jack_minus_monotonic_us() -> float:
    """JACK's clock less the monotonic clock (µs): the two are not the same clock on Linux (JACK
    may read CLOCK_MONOTONIC_RAW), their difference is steady within microseconds."""
    rows = []
    for _ in range(200):
        a = time.monotonic()
        j = probe.jack_now_us()
        b = time.monotonic()
        rows.append((b - a, j - (a + b) / 2 * 1e6))
    rows.sort()
    return float(np.median([d for _, d in rows[:20]]))


def timing(schedule: Path, events: list, offset_us: float) -> dict:
    """Each recorded note-on against the nearest scheduled time of the same message."""
    sched = probe.read_schedule(schedule)
    out = {"scheduled": sum(1 for k, v in sched.items() for _ in v if k[0] & 0xF0 == 0x90 and k[2] > 0),
           "recorded": 0}
    errors: dict = {"wall": [], "dll": []}
    for frame, wall, dll, data, _ in events:
        if len(data) < 3 or data[0] & 0xF0 != 0x90 or data[2] == 0:
            continue
        out["recorded"] += 1
        times = sched.get(tuple(data))
        if not times:
            continue
        for reading, jack_us in (("wall", wall), ("dll", dll)):
            t = (jack_us - offset_us) / 1e6
            i = bisect_left(times, t)
            err = min((t - times[j] for j in (i - 1, i) if 0 <= j < len(times)), key=abs)
            if abs(err) < 0.1:
                errors[reading].append(err)
    for reading, errs in errors.items():
        x = np.abs(errs) * 1000
        out[reading] = {"matched": int(len(x))} if not len(x) else {
            "matched": int(len(x)), "p50_ms": round(float(np.percentile(x, 50)), 3),
            "p99_ms": round(float(np.percentile(x, 99)), 3), "max_ms": round(float(x.max()), 3),
            "signed_median_ms": round(float(np.median(errs) * 1000), 3)}
    return out


def run_turn(way: str, args, env: dict, work: Path, turn: int, jackd_log: Path, ctl) -> dict:
    tag = f"{way.replace(' ', '-')}-{turn}"
    rec = probe.RecorderProcess("jmb-rec", env=env)
    schedule, log = work / f"{tag}.schedule", work / f"{tag}.log"
    engine_env = {**env, **WAYS[way], "DRUMMACHINE_MIDI_API": "jack"}
    cmd = [sys.executable, "-m", "drummachine", "play", "--headless", "--no-audio", "--style", "funk", "--bpm", "100",
           "--clock-out", "--midi-out", "jmb-rec:rx", "--midi-in", "jmb-ctl:tx", "--midi-schedule", str(schedule),
           "--log", str(log), "--duration", str(args.seconds), "--seed", "7"]
    if args.fake_model:
        cmd.append("--fake-model")
    mark = jackd_log.stat().st_size
    offset_before = jack_minus_monotonic_us()
    engine = subprocess.Popen(cmd, env=engine_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    clients: set = set()
    t_end = time.monotonic() + args.seconds + 60
    next_cc = next_look = time.monotonic() + 3.0
    while engine.poll() is None and time.monotonic() < t_end:
        now = time.monotonic()
        if now >= next_cc:
            ctl.send_message(CONTROL_CC)
            next_cc += 0.05
        if now >= next_look:  # the graph while it plays
            ports = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True).stdout.split("\n")
            clients |= {p.split(":")[0] for p in ports if p.startswith("drummachine")}
            next_look += 10.0
        time.sleep(0.01)
    if engine.poll() is None:
        engine.send_signal(signal.SIGTERM)
    _, err = engine.communicate(timeout=30)
    events = rec.stop()
    offset = (offset_before + jack_minus_monotonic_us()) / 2
    text = jackd_log.read_bytes()[mark:].decode(errors="replace")
    engine_log = log.read_text(errors="replace") if log.exists() else ""
    stats = re.search(r"MIDI out \(own JACK client\): (\{.*\})", engine_log)
    return {"way": way, "turn": turn, "exit": engine.returncode, "stderr_tail": err.strip().splitlines()[-2:],
            "drummachine_clients": sorted(clients), "jackd": blame(text), "timing": timing(schedule, events, offset),
            "jack_minus_monotonic_us": round(offset, 1),
            "own_client_stats": json.loads(stats.group(1)) if stats else None,
            "which_client_line": next((line.split("drummachine: ", 1)[-1] for line in engine_log.splitlines()
                                       if "MIDI over JACK:" in line), None)}


def summarize(turns: list[dict]) -> dict:
    out = {}
    for way in WAYS:
        rows = [t for t in turns if t["way"] == way]
        mine, ref = Counter(), Counter()
        by_state: dict = defaultdict(Counter)
        late = 0
        for t in rows:
            for client, c in t["jackd"]["not_finished"].items():
                if client.startswith("drummachine"):
                    mine[client] += c["total"]
                    for state, n in c.items():
                        if state != "total":
                            by_state[client][state] += n
                elif client == C_CLIENT:
                    ref[client] += c["total"]
            late += t["jackd"]["driver_late_wakeups"]
        out[way] = {"turns": len(rows), "drummachine_clients": sorted({c for t in rows for c in t["drummachine_clients"]}),
                    "blamed_drummachine": dict(mine), "blamed_drummachine_by_state": {k: dict(v) for k, v in by_state.items()},
                    "blamed_drummachine_total": sum(mine.values()), "blamed_jack_simple_client": sum(ref.values()),
                    "driver_late_wakeups": late,
                    "notes_scheduled": sum(t["timing"]["scheduled"] for t in rows),
                    "notes_recorded": sum(t["timing"]["recorded"] for t in rows),
                    "timing_per_turn": [{k: t["timing"][k] for k in ("wall", "dll")} for t in rows],
                    # per turn: (drummachine's clients, jack_simple_client, the driver's late wake-ups)
                    "blame_per_turn": [(sum(c["total"] for n, c in t["jackd"]["not_finished"].items()
                                            if n.startswith("drummachine")),
                                        t["jackd"]["not_finished"].get(C_CLIENT, {}).get("total", 0),
                                        t["jackd"]["driver_late_wakeups"]) for t in rows]}
        ref_total = out[way]["blamed_jack_simple_client"]
        out[way]["drummachine_per_jack_simple_client"] = round(out[way]["blamed_drummachine_total"] / ref_total, 2) \
            if ref_total else None
        walls = [t["timing"]["wall"] for t in rows if "p50_ms" in t["timing"]["wall"]]
        out[way]["wall_p50_ms_range"] = [min(w["p50_ms"] for w in walls), max(w["p50_ms"] for w in walls)] if walls else None
        out[way]["wall_p99_ms_range"] = [min(w["p99_ms"] for w in walls), max(w["p99_ms"] for w in walls)] if walls else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--fake-model", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "jack_midi.json"))
    args = ap.parse_args()
    for tool in ("jackd", "jack_lsp", C_CLIENT):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    work = Path(tempfile.mkdtemp(prefix="drummachine-jack-midi-"))
    env = {**os.environ, "JACK_DEFAULT_SERVER": os.environ.get("JACK_DEFAULT_SERVER", "default") + "-jm"}
    os.environ["JACK_DEFAULT_SERVER"] = env["JACK_DEFAULT_SERVER"]  # the probes in this process
    jackd_log = work / "jackd.log"
    jackd = start_jackd(env, jackd_log)
    reference = subprocess.Popen([C_CLIENT], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import jack

    clock_client = jack.Client("jmb-clock", no_start_server=True)  # libjack reads its clock only with a client open
    import rtmidi

    # the controller: rtmidi's C++ callback sends (no Python in JACK's thread upstream of the engine's input)
    ctl = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "jmb-ctl")
    ctl.open_virtual_port("tx")
    turns = []
    try:
        time.sleep(1.0)
        for turn in range(args.turns):
            order = list(WAYS) if turn % 2 == 0 else list(WAYS)[::-1]
            for way in order:
                result = run_turn(way, args, env, work, turn, jackd_log, ctl)
                turns.append(result)
                print(json.dumps({k: result[k] for k in ("way", "turn", "exit", "drummachine_clients", "jackd")}),
                      json.dumps(result["timing"]), flush=True)
    finally:
        ctl.close_port()
        ctl.delete()
        clock_client.close()
        reference.terminate()
        reference.wait(10)
        jackd.terminate()  # by its pid: only this run's own server
        jackd.wait(10)
    result = {"what": "MIDI over JACK: python-rtmidi vs drummachine's own JACK client, alternating turns",
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "seconds_per_turn": args.seconds,
              "turns_per_way": args.turns, "model": "fake" if args.fake_model else "shipped int8",
              "host": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "machine": platform.machine()},
              "summary": summarize(turns), "turns": turns}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
