"""What a SIGKILLed JACK client costs the graph, by kind of client (issue 15's blame).

jackd finds a client that was killed mid-period "not finished" in every period until it sees the
client's socket close. The soak SIGKILLs drummachine's mixer and counts jackd's blame in the
seconds after each kill apart from steady play; this compares like with like: the same kill on
the same server, in turns, to the mixer process (PortAudio's JACK client in a Python process with
the kit and its ring: ``audio.process.AudioProcessSink``, restarted as the engine restarts it)
and to a C client (``jack_simple_client``, started again after each kill), with another
``jack_simple_client`` in the graph throughout that is never killed (the reference).

Per kill, jackd's blame (periods where the client was the only one unfinished) in the half
second after the kill (the corpse: no successor is started before it ends) and in the 2.5 s after
the successor is started (its start-up), per client.

    python benchmarks/jack_corpse.py --kills 20 --json benchmarks/jack_corpse.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from soak import JackServer  # noqa: E402

CORPSE_S = 0.5  #: the window after a kill before anything is started again
START_S = 2.5  #: the window after the successor is started
SETTLE_S = 2.0  #: steady play before each kill


def c_client(name: str) -> subprocess.Popen:
    return subprocess.Popen(["jack_simple_client", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(kills: int, work: Path) -> dict:
    from drummachine.audio.process import AudioProcessSink

    server = f"corpse{os.getpid()}"
    os.environ["JACK_DEFAULT_SERVER"] = server
    windows: list[tuple[float, float, str]] = []
    with JackServer(server, work / "jackd.log") as jack:
        reference = c_client("reference")
        victim = c_client("victim")
        sink = AudioProcessSink(hostapi="JACK Audio Connection Kit").wait_ready()
        try:
            for _ in range(kills):
                for kind in ("mixer", "c_client"):
                    time.sleep(SETTLE_S)
                    killed = time.monotonic()
                    if kind == "mixer":
                        os.kill(sink.proc.pid, signal.SIGKILL)
                        sink.proc.wait()
                    else:
                        victim.send_signal(signal.SIGKILL)
                        victim.wait()
                    windows.append((killed, killed + CORPSE_S, f"{kind}_corpse"))
                    time.sleep(max(0.0, killed + CORPSE_S - time.monotonic()))
                    started = time.monotonic()
                    if kind == "mixer":
                        sink.restart_if_gone()
                    else:
                        victim = c_client("victim")
                    windows.append((started, started + START_S, f"{kind}_start"))
            time.sleep(SETTLE_S)
        finally:
            sink.close()
            for proc in (victim, reference):
                proc.terminate()
                proc.wait()
        blame = jack.blame(windows)
    per_window = blame["not_finished_alone_by_client_by_window"]
    per_kill = {what: {client: round(n / kills, 2) for client, n in per_window.get(what, {}).items()}
                for what in ("mixer_corpse", "mixer_start", "c_client_corpse", "c_client_start")}
    return {"kills_each": kills, "corpse_window_s": CORPSE_S, "start_window_s": START_S,
            "alone_blame_per_kill_by_window": per_kill, "alone_blame_outside_the_windows": per_window.get("steady", {}),
            "jackd": blame}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="kills of each client")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), **run(args.kills, Path(tmp))}
    print(json.dumps(result["alone_blame_per_kill_by_window"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
