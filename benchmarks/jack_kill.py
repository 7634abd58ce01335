"""How long a SIGKILLed client stays in the JACK graph, by kind of client (issue 15's blame).

The soak SIGKILLs the mixer and, as often, a C twin (``jack_simple_client``); after its own kills
the mixer was blamed 1.97 periods a kill, the twin 1.36 (``benchmarks/soak_hour_7.json``). A client
killed mid-period is unfinished until jackd finds its socket closed, and the kernel closes a dying
process's files only after it has torn down its memory (``do_exit``: ``exit_mm`` before
``exit_files``). The mixer locks its memory (``mlockall``, as the issue asks: no page fault in its
real-time path), and unlocking tens of megabytes takes the kernel milliseconds. This kills each kind
of client in turns and times, from the SIGKILL, until JACK says the client is gone (a JACK client
here watching the graph's registrations), with jackd's blame in the second after:

- ``c_client``: ``jack_simple_client``;
- ``rtmixer_idle``: rtmixer's C callback in a Python process doing nothing else (no locked memory);
- ``mixer``: the mixer process (``audio.process.AudioProcessSink``: the kit, the ring, its memory locked);
- ``mixer_unlocked``: the same with ``DRUMMACHINE_MIXER_MLOCK=0`` (memory not locked);
- ``mixer_own_client``: the mixer process behind the engine's own JACK client (``play``'s way over
  JACK since 2026-12-05: ``audio.jack_ring``, ``midi.jack_audio``): the kit's ports are this
  process's client's, the mixer only writes their ring, so its SIGKILL takes no client out of the
  graph (the client, ``drummachine``, stays: no time to leave); a new mixer is started after the
  window, as the engine's watchdog starts one.

    python benchmarks/jack_kill.py --kills 10 --rounds 2 --json benchmarks/jack_kill.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from jack_join import Subject, c_client, chosen_subjects  # noqa: E402
from soak import JackServer  # noqa: E402

SETTLE_S = 2.0  #: the subject playing before it is killed
AFTER_S = 1.0  #: the blame window after a kill
GONE_WITHIN_S = 5.0  #: a client not gone by then is reported as such
SUBJECTS = ("c_client", "rtmixer_idle", "mixer", "mixer_unlocked", "mixer_own_client")
#: the name each kind has in the graph: PortAudio's JACK client is named "PortAudio"
CLIENT_NAME = {"c_client": "subject", "rtmixer_idle": "PortAudio", "mixer": "PortAudio",
               "mixer_unlocked": "PortAudio", "mixer_own_client": "drummachine"}


class OwnClientMixer:
    """The mixer behind this process's own JACK client, kept across kills (as the engine keeps it)."""

    def __init__(self):
        from drummachine.audio.process import AudioProcessSink
        from drummachine.midi.jack_audio import JackAudioPorts

        self.sink = AudioProcessSink(jack_ports=JackAudioPorts).wait_ready()
        assert self.sink.mixing == "jack", self.sink.mixing
        self.proc = None  # a Subject's surface: the process to kill is the sink's

    def next_mixer(self) -> None:
        if self.sink.restart_if_gone():
            assert self.sink.mixing == "jack"


class Registrations:
    """A JACK client that notes when each client leaves the graph."""

    def __init__(self):
        import jack

        self.gone: dict[str, float] = {}
        self.client = jack.Client("kill-watch", no_start_server=True)
        self.client.set_client_registration_callback(self._registration)
        self.client.activate()

    def _registration(self, name: str, registered: bool) -> None:
        if not registered:
            self.gone[name] = time.monotonic()

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def start(kind: str, work: Path, kept: dict) -> Subject:
    if kind == "mixer_own_client":
        if kind not in kept:
            kept[kind] = OwnClientMixer()
        kept[kind].next_mixer()
        return kept[kind]
    if kind == "mixer_unlocked":
        os.environ["DRUMMACHINE_MIXER_MLOCK"] = "0"
        try:
            return Subject("mixer", work, None)
        finally:
            del os.environ["DRUMMACHINE_MIXER_MLOCK"]
    return Subject(kind, work, None)


def locked_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run(kills: int, rounds: int, work: Path, subjects: tuple[str, ...]) -> dict:
    server = f"kill{os.getpid()}"
    os.environ["JACK_DEFAULT_SERVER"] = server
    windows: list[tuple[float, float, str]] = []
    gone_ms: dict[str, list[float]] = {kind: [] for kind in subjects}
    locked: dict[str, list[int]] = {kind: [] for kind in subjects}
    kept: dict = {}  # subjects that outlive their kills (the mixer behind the engine's own client)
    with JackServer(server, work / "jackd.log") as jack:
        reference = c_client("reference")
        watch = Registrations()
        try:
            time.sleep(1.0)
            for _ in range(rounds):
                for _ in range(kills):
                    for kind in subjects:  # in turns: the host's drift falls on every kind alike
                        subject = start(kind, work, kept)
                        proc = subject.sink.proc if subject.sink is not None else subject.proc
                        name = CLIENT_NAME[kind]
                        time.sleep(SETTLE_S)
                        locked[kind].append(locked_kb(proc.pid) or 0)
                        watch.gone.pop(name, None)
                        killed = time.monotonic()
                        os.kill(proc.pid, signal.SIGKILL)
                        windows.append((killed, killed + AFTER_S, f"{kind}_kill"))
                        # a client that outlives its mixer is looked for through the window only
                        until = killed + (AFTER_S if kind in kept else GONE_WITHIN_S)
                        while name not in watch.gone and time.monotonic() < until:
                            time.sleep(0.0005)
                        gone = watch.gone.get(name)
                        gone_ms[kind].append(round((gone - killed) * 1000, 2) if gone else float("inf"))
                        proc.wait(10)
                        if subject.sink is not None and kind not in kept:
                            subject.sink.close()
                        time.sleep(AFTER_S)
        finally:
            for subject in kept.values():
                subject.sink.close()
            watch.close()
            reference.terminate()
            reference.wait(10)
        blame = jack.blame(windows)
    per_window = blame["not_finished_alone_by_client_by_window"]
    n = kills * rounds
    per_kind = {}
    for kind in subjects:
        counts = Counter(per_window.get(f"{kind}_kill", {}))
        times = gone_ms[kind]
        if kind in kept:  # its client stays: how often it left the graph in a window (never, if all is well)
            per_kind[kind] = {"left_the_graph": sum(t != float("inf") for t in times),
                              "gone_after_kill_ms_median": None,
                              "blamed_per_kill": round(counts.get(CLIENT_NAME[kind], 0) / n, 2),
                              "reference_blamed_per_kill": round(counts.get("reference", 0) / n, 2),
                              "locked_kb_median": int(statistics.median(locked[kind]))}
            continue
        per_kind[kind] = {
            "gone_after_kill_ms_median": round(statistics.median(times), 2),
            "gone_after_kill_ms_p10_p90": [round(statistics.quantiles(times, n=10)[i], 2) for i in (0, 8)]
            if len(times) >= 2 else times,
            "blamed_per_kill": round(counts.get(CLIENT_NAME[kind], 0) / n, 2),
            "reference_blamed_per_kill": round(counts.get("reference", 0) / n, 2),
            "locked_kb_median": int(statistics.median(locked[kind])),
            "gone_after_kill_ms": times}
    return {"kills_each": n, "after_s": AFTER_S, "by_kind": per_kind, "jackd": blame}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10, help="kills per subject per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--subjects", default=",".join(SUBJECTS), help=f"comma-separated, of {', '.join(SUBJECTS)}")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    subjects = chosen_subjects(ap, args.subjects, SUBJECTS)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), **run(args.kills, args.rounds, Path(tmp), subjects)}
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "gone_after_kill_ms"}
                      for k, v in result["by_kind"].items()}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
