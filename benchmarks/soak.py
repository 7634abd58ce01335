"""Soak: the real `play --headless` under a storm of cues, controller spam and faults. JSON out.

    python benchmarks/soak.py --minutes 10 [--json OUT] [--fake-model] [--seed N]

What runs, all at once, on a JACK server of the soak's own (dummy backend, 128 frames):
- the engine: `drummachine play --headless` (real model unless --fake-model), the mixer over
  JACK, MIDI out to a recorder here, MIDI in from a controller here, its socket in a 0700 folder;
- a monitor attached to the socket (snapshots 40/s; health at the start and the end);
- cues: a random command every 0.5-5 s from the whole table (core.commands.COMMANDS) over the
  socket, a quarter of them with bad values (wrong type, out of range, no such command); a stop,
  pause, mute or solo is undone a few seconds later, so the groove is never asked to be silent
  for long;
- controller spam: bursts of 1,000 messages a second for 2 s (running status, truncated and
  unknown messages, SysEx, note-on velocity 0, clock, CCs bound and not);
- faults: the MIDI out port (the recorder) and the MIDI in port (the controller) disappear and
  come back, the mixer process is SIGKILLed, a UI attached in a real terminal (tmux, a server of
  the soak's own) is crashed by an injected exception or SIGKILLed; the JACK server itself stops
  and starts again once (every client of the old server is dead: the engine opens its ports and its
  mixer's stream anew);
- a reference: `jack_simple_client` (C, a sine) in the same graph, to compare jackd's blame; and a
  second one SIGKILLed and started again as often as the mixer (``TWIN``), so the mixer's blame
  around its kills has a C client's beside it under the same treatment, at other moments;
- a reference for the MIDI timing: a player of its own (``REFERENCE_PLAYER``: a sleeping loop that
  hands a note to drummachine's own JACK MIDI client every 16th at 100 bpm, due as far ahead as the
  engine hands its notes, on MIDI channel 16) into the same recorder: what the host's stalls do to
  a note handed out on time, without the engine, in the same windows.

Reported: silent bars (playing, not asked to be silent, MIDI out connected, yet no note arrived),
bars handed out with no hits, generator misses, underruns, jackd's blame per client and its other
xrun lines, faults caught per loop, commands refused, threads (alive, dead), RSS, fds and OS
threads of the engine at the start and the end, MIDI timing error (arrival at the recorder
against the time the engine scheduled) p50/p99 in the first and the last 5 minutes (a third of a
shorter run), all of it and in steady play (outside each injected fault's span), the reference
player's beside it and the ratio of the two p99s; each twice: as the recorder woke to read the
note (``midi_timing_error_ms``: adds where the host put the recorder in the period) and where
the server's clock puts the frame it landed on (``midi_timing_error_on_server_clock_ms``: where
a sound card plays it), and every 5-minute window's p50/p99 in turn (``by_window``); beside
them the engine's own MIDI out counts per window (``midi_out_by_window``: notes written, handed
over late, left out as stale, periods placed by the wake-up). Every fault kind
starts within the first 5 minutes, so both windows are measured under the same storm; jackd's
blame is also counted apart in the aftermath of each mixer SIGKILL and of the JACK restart.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from jack_midi_probe import read_schedule  # noqa: E402
from drummachine.core import commands  # noqa: E402
from drummachine.core.voices import N_VOICES, VOICE_NAMES  # noqa: E402

SILENT_KINDS = {"final", "silent"}  #: bars the song itself leaves (nearly) empty
JACK_RATE, JACK_PERIOD = 48000, 128  #: the soak's JACK server
BAR_SLACK = 0.15  #: a bar's notes sound up to the commit horizon after its snapshot's bar changes
TIMING_WINDOW_S = 300.0  #: the issue's first and last 5 minutes (a third of a shorter run)
#: the injected faults (not the cues: those are how the pedal is used) and the seconds before
#: and after each one's note that MIDI timing is not taken as steady play: a spam burst lasts 2 s
#: and is noted at its end; a crashing UI crashes 2-5 s after it is started (noted then); a UI
#: SIGKILLed ran 2-4 s before (noted at the kill); a port is noted gone and back (3-6 s apart,
#: the engine's watches look once a second)
FAULT_SPANS = {"ui_crash": (0.0, 6.0), "ui_sigkill": (4.5, 1.0), "spam": (2.5, 1.0), "mixer_sigkill": (0.0, 3.0),
               "twin_sigkill": (0.0, 3.0),
               "midi_out_gone": (0.0, 6.5), "midi_out_back": (0.0, 2.5), "midi_in_gone": (0.0, 6.5),
               "midi_in_back": (0.0, 2.5), "jack_stop": (0.0, 10.0), "jack_back": (0.0, 4.0)}
#: the faults whose spans are counted apart in jackd's blame: a client SIGKILLed mid-period is
#: unfinished until jackd drops it; a restarting server blames whoever is there; a MIDI port gone
#: or back is a client leaving or joining the graph: a join soon after a SIGKILL finds the clients
#: already in it unfinished (benchmarks/jack_corpse.py), a join alone next to never (jack_join.py)
BLAME_FAULTS = ("mixer_sigkill", "twin_sigkill", "jack_stop", "jack_back", "midi_out_gone", "midi_out_back", "midi_in_gone",
                "midi_in_back")
#: the MIDI timing reference player: a note every 16th at 100 bpm, handed out this far ahead of
#: when it is due (the engine hands a step out half a step plus its 30 ms margin before the grid,
#: its notes then due up to half a step either side), on a channel the engine does not play
REFERENCE_EVERY_S, REFERENCE_AHEAD_S, REFERENCE_CHANNEL = 0.15, 0.105, 15
#: the recorder process's exit code when JACK has stopped calling it: the soak starts another
RECORDER_UNSCHEDULED_EXIT = 3
#: a port's return measured from a recorder started again this soon after it (RECORDER_UNSCHEDULED_EXIT)
REVIVED_WITHIN_S = 10.0
LOG_MARK_EVERY = 0.25  #: s between notes of jackd's log size (how well a blamed period is placed in time)
#: the C client killed as the mixer is (its JACK name), and how long after its kill it starts again
#: (the engine's watchdog looks every 0.25 s and a new mixer takes about a second to open)
TWIN, TWIN_RESTART_S = "simple_killed", 1.0


# --- processes ------------------------------------------------------------------------------
class JackServer:
    """The soak's own JACK server. jackd's log has no times: a thread notes the log's size every
    LOG_MARK_EVERY seconds, so each line's time is known to that much (``blame`` uses it to tell
    the periods in a fault's aftermath from the rest)."""

    def __init__(self, name: str, log: Path):
        self.name, self.log = name, log
        self.file = None
        self.marks: list[tuple[float, int]] = []  #: (monotonic s, the log's size in bytes then)
        self.marking = False

    def start(self) -> None:
        self.file = open(self.log, "a")  # a restarted server's lines go on in the same log (the blame)
        self.proc = subprocess.Popen(["jackd", "-n", self.name, "-d", "dummy", "-r", str(JACK_RATE), "-p", str(JACK_PERIOD)],
                                     stdout=self.file, stderr=subprocess.STDOUT)
        r = subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, text=True)
        if "available" not in r.stdout:
            raise RuntimeError(f"jackd did not start: {r.stdout} {r.stderr}")
        time.sleep(0.3)
        if not self.marking:
            self.marking = True
            threading.Thread(target=self._mark_log, daemon=True).start()

    def _mark_log(self) -> None:
        while self.marking:
            try:
                self.marks.append((time.monotonic(), self.log.stat().st_size))
            except OSError:
                pass
            time.sleep(LOG_MARK_EVERY)

    def stop(self) -> None:
        self.proc.terminate()  # by its pid: only the soak's own server
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.file.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        self.marking = False

    def blame(self, windows: list[tuple[float, float, str]] = ()) -> dict:
        """jackd's own words: which client it found unfinished at the end of a period ("Triggered":
        woken but never ran, the host did not schedule it; "Running": it ran too long), the
        periods it gave up on, and the driver's own late wake-ups (the host stalling jackd itself).

        ``windows`` (monotonic s, from, to, what): the faults' aftermaths. A client SIGKILLed
        mid-period is unfinished until jackd finds its socket closed, and a server restarting
        blames whoever is there: the blame of periods inside a window is also counted apart by
        what the window was, and outside every window on its own (steady play)."""
        raw = self.log.read_bytes()
        text = raw.decode(errors="replace")
        by_state: dict = defaultdict(Counter)
        for m in re.finditer(r"client = (.+?) was not finished, state = (\w+)", text):
            by_state[m.group(2)][m.group(1)] += 1
        total = Counter()
        for c in by_state.values():
            total.update(c)
        late = [int(x) for x in re.findall(r"JackTimedDriver::Process XRun = (\d+) usec", text)]
        # per period: a client fed by another that is late is unfinished too (drummachine's MIDI
        # client comes after the soak's controller, a Python callback): "alone" counts the periods
        # a client was the only one unfinished, its own lateness and nobody else's
        alone: Counter = Counter()
        alone_in: dict = defaultdict(Counter)
        unfinished: set = set()
        sizes = [size for _, size in self.marks]
        offset = 0
        for line in raw.split(b"\n"):
            offset += len(line) + 1
            line = line.decode(errors="replace")
            m = re.search(r"client = (.+?) was not finished", line)
            if m:
                unfinished.add(m.group(1))
            elif "ProcessGraphAsyncMaster: Process error" in line:
                if len(unfinished) == 1:
                    alone.update(unfinished)
                    # the period's time: the first mark that saw the log past this line
                    i = bisect_left(sizes, offset)
                    when = self.marks[i][0] if i < len(self.marks) else float("inf")
                    where = next((what for a, b, what in windows if a <= when <= b), "steady")
                    alone_in[where].update(unfinished)
                unfinished = set()
        return {"not_finished_by_client": dict(total.most_common()),
                "not_finished_alone_by_client": dict(alone.most_common()),
                "not_finished_alone_by_client_by_window": {k: dict(v.most_common()) for k, v in alone_in.items()},
                "fault_windows": dict(Counter(what for _, _, what in windows)),
                "not_finished_by_state": {k: dict(v.most_common()) for k, v in by_state.items()},
                "finished_late_by_client": dict(Counter(re.findall(r"client (\S+) finished after current callback",
                                                                  text)).most_common()),
                "periods_given_up": text.count("ProcessGraphAsyncMaster: Process error"),
                "driver_late_wakeups": len(late), "driver_late_ms_max": round(max(late, default=0) / 1000, 2)}


#: the JACK client that plays the kit, by the engine's log: its own client (the mixer process
#: only writes the ring it plays), else PortAudio's in the mixer process
KIT_CLIENTS = (("the kit plays through drummachine's own JACK client", "drummachine"), ("", "PortAudio"))


def kit_client(engine_log: str) -> str:
    return next(client for said, client in KIT_CLIENTS if said in engine_log)


def killed_alike(blame: dict, mixer_client: str = "PortAudio") -> dict:
    """The mixer beside the C twin killed as often (``TWIN``): each one's blame (periods it alone
    was unfinished) after its own SIGKILLs, per kill, and in steady play. ``mixer_client``: the
    JACK client the kit plays through (``kit_client``)."""
    by_window = blame["not_finished_alone_by_client_by_window"]
    kills = blame["fault_windows"]
    out = {"mixer_client": mixer_client}
    for who, client, window in (("mixer", mixer_client, "mixer_sigkill"), ("c_twin", TWIN, "twin_sigkill")):
        same = lambda c: re.fullmatch(rf"{re.escape(client)}(-\d+)?", c) is not None  # noqa: E731 - PortAudio-01
        n = sum(v for c, v in by_window.get(window, {}).items() if same(c))
        out[who] = {"kills": kills.get(window, 0), "blamed_after_its_kills": n,
                    "per_kill": round(n / kills[window], 2) if kills.get(window) else None,
                    "steady": sum(v for c, v in by_window.get("steady", {}).items() if same(c))}
    out["reference_steady"] = by_window.get("steady", {}).get("jack_simple_client", 0)
    return out


#: the engine's memory settles within its first minute: the model's KV cache fills up to its
#: context (128 steps, 8 bars) in every step kept ahead and in each section's saved start, and the
#: first of each fault path (a mixer restart, a port gone) allocates what it keeps; what grows
#: after that is what a long gig would see
WARM_UP_SECONDS = 60.0


def rss_growth(samples: list[tuple[float, int, int]]) -> dict:
    """RssAnon growth over the run (kB): from the first sample, and from the first after the warm-up;
    and the slope over the run's second half (kB a minute: a leak is a slope, not a step)."""
    if len(samples) < 2:
        return {}
    t_end, end = samples[-1][0], samples[-1][1]
    warm = next((s for s in samples if s[0] >= WARM_UP_SECONDS), samples[0])
    half = [s for s in samples if s[0] >= t_end / 2]
    slope = None
    if len(half) >= 3:
        slope = round(float(np.polyfit([s[0] / 60.0 for s in half], [s[1] for s in half], 1)[0]), 2)
    return {"from_first": end - samples[0][1], "first_at_s": samples[0][0],
            "from_warm_up": end - warm[1], "warm_up_at_s": warm[0],
            "second_half_kb_per_minute": slope}


def traceback_tails(log: str, most: int = 5) -> list[str]:
    """The first few tracebacks of a log, each as its last frame and the exception: what to read first."""
    tails = []
    for block in log.split("Traceback (most recent call last):")[1:most + 1]:
        lines = block.splitlines()[1:]
        end = next((i for i, ln in enumerate(lines) if ln and not ln.startswith(" ")), len(lines) - 1)
        tails.append(" | ".join(ln.strip() for ln in lines[max(0, end - 2):end + 1]))
    return tails


def proc_stats(pid: int | None) -> dict:
    if not pid:
        return {}
    try:
        status = {ln.split(":")[0]: ln.split()[1] for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ln.startswith(("VmRSS:", "RssAnon:", "RssShmem:"))}
        # RssShmem is mostly JACK's shared segment (about 100 MB mapped by every client, touched as
        # the graph uses it) and the kit: the engine's own memory, where a leak shows, is RssAnon
        kinds: Counter = Counter()
        targets: dict[str, str] = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:  # "socket:[123]" -> "socket": which kind of thing is open, not which one
                targets[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
                kinds[re.sub(r":\[\d+\]$", "", targets[fd])] += 1
            except OSError:
                pass
        return {"rss_kb": int(status["VmRSS"]), "rss_anon_kb": int(status["RssAnon"]),
                "rss_shmem_kb": int(status["RssShmem"]), "fds": sum(kinds.values()), "fd_kinds": dict(kinds),
                "fd_targets": targets, "os_threads": len(os.listdir(f"/proc/{pid}/task"))}
    except (OSError, KeyError):
        return {}


def settled_proc_stats(pid: int | None, start: dict, seconds: float = 5.0) -> dict:
    """proc_stats at the end, given ``seconds`` to come back to ``start``'s fds and threads (a UI
    killed a moment ago may still be detaching: its socket and threads go within a second or two);
    what is still more after that is a leak, and ``fd_kinds`` says of what."""
    deadline = time.monotonic() + seconds
    while True:
        now = proc_stats(pid)
        if not now or not start or (now["fds"] <= start["fds"] and now["os_threads"] <= start["os_threads"]) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if now and start and now["fds"] > start["fds"]:
        now["extra_fds"] = fd_holders(pid, set(now["fd_targets"].values()) - set(start["fd_targets"].values()))
    return now


def fd_holders(pid: int, targets: set[str]) -> dict[str, list[str]]:
    """For each open thing: which other processes have it open too (a pipe's other end names who
    it was for)."""
    found: dict[str, list[str]] = {t: [] for t in targets}
    for other in os.listdir("/proc"):
        if not other.isdigit() or int(other) == pid:
            continue
        try:
            links = {os.readlink(f"/proc/{other}/fd/{fd}") for fd in os.listdir(f"/proc/{other}/fd")}
            cmd = Path(f"/proc/{other}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            continue
        for t in targets & links:
            found[t].append(f"{other}: {cmd}")
    return found


RECORDER = """
import faulthandler, os, signal, sys, time
faulthandler.enable()  # a crash leaves its stack in recorder.err, not nothing
client, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
from jack_midi_probe import Recorder
# JACK-Client's recorder, each event at its frame's time (python-rtmidi's JACK input crashed the
# hour's soak's recorder twice: SIGSEGV, from its callback and from its queue). The signals only
# say what is wanted; the loop opens and closes the port between reads.
state = {"want": "open"}
def wants(what):
    return lambda *_: state.update(want=what)
signal.signal(signal.SIGUSR1, wants("gone")); signal.signal(signal.SIGUSR2, wants("open"))
signal.signal(signal.SIGTERM, wants("done"))
IGNORED = (0xF0, 0xF8, 0xFE)  # SysEx, clock, active sensing: not what the soak measures
UNSCHEDULED_S, UNSCHEDULED_EXIT = 2.0, int(sys.argv[4])
def open_port():
    got = []
    return Recorder(client, "rx", sink=got, server_clock=True), got
(rec, got), taken, rows, flushed = open_port(), 0, [], time.monotonic()
seen_periods, advanced = 0, time.monotonic()
told = set()
print("ready", flush=True)
def take():
    global taken
    n = len(got)  # the callback only appends
    rows.extend(row for row in got[taken:n] if row[1] and row[1][0] not in IGNORED)  # (wall, bytes, server)
    taken = n
def first(row):
    return row[0]
def flush():
    with open(out, "a") as f:
        # a message's line: its time as the recorder woke, its bytes, "@" and its time on the server's clock
        f.write("".join(f"{r[0]:.6f} {' '.join(map(str, r[1]))}{f' @{r[2]:.6f}' if len(r) > 2 else ''}\\n"
                        for r in rows))
    rows.clear()
while state["want"] != "done":
    if rec is not None:
        take()
    if state["want"] == "gone" and rec is not None:
        rec.close(); take(); rec = None
    elif state["want"] == "open" and rec is None:
        try:
            (rec, got), taken = open_port(), 0
        except Exception as exc:  # no server this moment: tried again in a second
            print(f"recorder: {exc}", file=sys.stderr, flush=True)
            time.sleep(1.0)
    now = time.monotonic()
    if rec is not None and rec.scheduling is not None and rec not in told:
        told.add(rec)  # is JACK's thread for it real-time (SCHED_FIFO 1, SCHED_RR 2)? what a stall is read against
        print(f"recorder: {now:.3f} called by a thread of policy {rec.scheduling[0]} priority {rec.scheduling[1]}",
              file=sys.stderr, flush=True)
    if rec is not None and rec.periods != seen_periods:
        seen_periods, advanced = rec.periods, now
    elif rec is not None and now - advanced > UNSCHEDULED_S:
        # a client JACK has stopped calling (seen once on a restarted server: the recorder lost the
        # rest of the run) leaves with UNSCHEDULED_EXIT, unclosed (closing such a client can hang),
        # and the soak starts a new recorder; its bars stay counted as stalled
        print(f"recorder: {now:.3f} its callback has not run for {now - advanced:.1f} s: leaving", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(sys.stderr)  # where each of its threads is (a callback waiting?)
        take(); rows.sort(key=first); flush()
        os._exit(UNSCHEDULED_EXIT)
    if now - flushed > 0.5:  # on disk within half a second: a recorder that dies loses no more
        rows.sort(key=first)
        # the periods its callback ran so far: a silent stretch while they did not advance is the
        # recorder's (a new recorder on a restarted server has been left unscheduled), not the engine's
        # (and, after them, the periods it missed: called late by a period or more)
        rows.append((now, ["#", "periods"] + ([rec.periods, rec.skipped] if rec is not None else [-1])))
        flush()
        flushed = now
    time.sleep(0.005)
if rec is not None:
    rec.close(); take()
rows.sort(key=first)
flush()
"""


REFERENCE_PLAYER = """
import signal, sys, time
sys.path.insert(0, sys.argv[1])
from drummachine.midi import jack_midi
jack_midi.CLIENT = sys.argv[2]  # its own client: not the engine's name
from drummachine.midi.jack_port import JackPort
to, schedule = sys.argv[3], sys.argv[4]
every, ahead, channel = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
port = JackPort("out", to, "out")
port.open()
print("ready", flush=True)
due_next, checked, k = time.monotonic(), time.monotonic(), 0
with open(schedule, "a", buffering=1) as log:
    while not stop:
        due_next += every
        time.sleep(max(0.0, due_next - time.monotonic()))
        now = time.monotonic()
        note = 60 + k % 8  # eight notes in turn: each matched to its own time
        k += 1
        on = [0x90 | channel, note, 100]
        port.send([(now + ahead, bytes(on)), (now + ahead + 0.05, bytes([0x80 | channel, note, 0]))], now)
        log.write(f"{now + ahead:.6f} {on[0]} {on[1]} {on[2]}\\n")
        if now - checked > 1.0:  # as the engine's port watch: the server's and the recorder's comings and goings
            checked = now
            port.check()
port.close()
"""


class ReferencePlayer:
    """The MIDI timing's reference (``REFERENCE_PLAYER``), in a process of its own."""

    def __init__(self, client: str, to: str, work: Path):
        self.schedule = work / "reference_schedule.txt"
        with open(work / "reference.err", "a") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", REFERENCE_PLAYER, str(ROOT), client, to,
                                          str(self.schedule), str(REFERENCE_EVERY_S), str(REFERENCE_AHEAD_S),
                                          str(REFERENCE_CHANNEL)], stdout=subprocess.PIPE, stderr=err, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the reference player did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def is_reference(message: list[int]) -> bool:
    """A note of the reference player (its channel), not the engine's."""
    return message[0] & 0xE0 == 0x80 and message[0] & 0x0F == REFERENCE_CHANNEL


class Recorder:
    """The MIDI out's destination: a JACK MIDI input in a process of its own (the soak's process
    is busy with spam and snapshots: its GIL would add to the timing measured), timestamped on the
    monotonic clock, written to a file as it arrives. ``gone()`` / ``back()``: the port disappears
    (its JACK client too) and comes back; ``restart()``: a new recorder process (after the JACK
    server restarted: libjack in the old one holds the dead server's client); ``stop()`` loads
    what arrived into ``got`` (the engine's) and ``reference_got`` (the reference player's)."""

    def __init__(self, client: str, work: Path):
        self.client = client
        self.out = work / "recorded.txt"
        self.got: list[tuple[float, list[int]]] = []
        self.reference_got: list[tuple[float, list[int]]] = []
        #: the same on the server's clock (see jack_midi_probe.Recorder): where the frame they
        #: landed on is, not when the recorder woke to read it
        self.got_on_server_clock: list[tuple[float, list[int]]] = []
        self.reference_got_on_server_clock: list[tuple[float, list[int]]] = []
        #: (monotonic time, periods its process callback ran so far, -1 while its port is away),
        #: every half second of its own process
        self.periods: list[tuple[float, int]] = []
        self.port = True  # there (for the clean-up)
        self.ended: set = set()  #: recorder processes ended by the soak
        #: when each recorder started again after JACK had stopped calling the last one was ready
        self.revived_at: list[float] = []
        self.lock = threading.Lock()  # the fault thread's signals and restarts, the watcher's revivals
        self.start()

    def start(self) -> None:
        with open(self.out.with_name("recorder.err"), "a") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", RECORDER, self.client, str(self.out),
                                          str(Path(__file__).resolve().parent), str(RECORDER_UNSCHEDULED_EXIT)],
                                         stdout=subprocess.PIPE, stderr=err, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the recorder did not start")

    def gone(self) -> None:
        with self.lock:
            self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)

    def back(self) -> None:
        with self.lock:
            self.proc.send_signal(signal.SIGUSR2)
        time.sleep(0.2)

    def restart_across(self, server_restart) -> None:
        """A new recorder process after ``server_restart()`` (the JACK server stopped and started
        again: libjack in the old one holds the dead server's client). The old one, not called
        meanwhile, may leave on its own (see RECORDER): it is not revived on the stopped server."""
        with self.lock:
            server_restart()
            self.end_process()
            self.start()

    def revive(self) -> bool:
        """A new recorder where the last one left because JACK had stopped calling it (see
        RECORDER); True if one was started. Never waits: during a server restart it is not asked."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            if self.proc.poll() != RECORDER_UNSCHEDULED_EXIT or self.proc in self.ended:
                return False
            self.ended.add(self.proc)
            time.sleep(0.3)  # jackd removes its client first: the new one takes the same name
            self.start()
            self.revived_at.append(time.monotonic())
            return True
        finally:
            self.lock.release()

    def end_process(self) -> None:
        self.ended.add(self.proc)  # ended on purpose: not a recorder that died
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # stuck in a dead server's client: what it wrote is kept
                self.proc.kill()
                self.proc.wait()

    def said(self, t0: float) -> list[str]:
        """What the recorder processes said of themselves (the thread JACK calls them in, a stall
        and where their threads were then), their times from ``t0``: the suite's soak folder is
        removed, and a stall seen in CI is read from the JSON."""
        err = self.out.with_name("recorder.err")
        lines = err.read_text(errors="replace").splitlines() if err.exists() else []
        said = []
        for line in lines:
            words = line.split(maxsplit=2)
            if words[:1] == ["recorder:"] and len(words) == 3:
                try:
                    line = f"recorder: {float(words[1]) - t0:.1f} s {words[2]}"
                except ValueError:
                    pass
            said.append(line)
        return said[-40:]

    def stop(self) -> None:
        self.end_process()
        if self.out.exists():
            for line in self.out.read_text().splitlines():
                t, *m = line.split()
                if m[:2] == ["#", "periods"]:
                    self.periods.append((float(t), int(m[2])))
                else:
                    server = m.pop()[1:] if m[-1].startswith("@") else None
                    message = [int(b) for b in m]
                    reference = is_reference(message)
                    (self.reference_got if reference else self.got).append((float(t), message))
                    if server is not None:
                        (self.reference_got_on_server_clock if reference
                         else self.got_on_server_clock).append((float(server), message))
        self.port = None


class Controller:
    def __init__(self, client: str):
        self.client = client
        self.port = None
        self.lock = threading.Lock()
        self.sent = 0
        self.back()

    def back(self) -> None:
        import rtmidi

        port = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, self.client)
        port.open_virtual_port("tx")
        with self.lock:
            self.port = port

    def gone(self) -> None:
        with self.lock:
            port, self.port = self.port, None
        port.close_port()
        port.delete()

    def send(self, msg: list[int]) -> None:
        with self.lock:
            if self.port is not None:
                self.port.send_message(msg)
                self.sent += 1


# --- what the musician (and worse) sends -----------------------------------------------------
def random_command(rng: random.Random) -> tuple[str, object, bool]:
    """A command from the whole table, with a good value three times in four: (name, value, bad)."""
    if rng.random() < 0.04:
        return rng.choice(["no_such_command", "", "STOP", "tempo "]), None, True
    name = rng.choice(list(commands.COMMANDS))
    v = commands.COMMANDS[name].value
    bad = rng.random() < 0.25
    if bad:
        return name, rng.choice([1e9, -1, "x", [1, 2], {"a": 1}, True, float("nan"), 1e-9, "../../etc"]), True
    kind = v.kind
    if kind == commands.NONE:
        return name, None, False
    if kind in (commands.NUMBER, commands.WHOLE):
        if v.optional and rng.random() < 0.3:
            return name, None, False
        x = rng.uniform(v.lo, v.hi)
        return name, (round(x) if kind == commands.WHOLE else round(x, 3)), False
    if kind == commands.CHOICE:
        return name, rng.choice(list(v.choices) + ([None] if v.optional else [])), False
    if kind == commands.VOICE:
        return name, rng.choice([rng.randrange(N_VOICES), rng.choice(VOICE_NAMES)]), False
    if kind == commands.FLAG:
        return name, rng.choice([True, False, None]), False
    if kind == commands.TEXT:  # learn: an action to bind (the spam then binds it), or cancel
        return name, rng.choice(list(commands.BINDABLE) + [None]), False
    return name, "not a " + kind, True  # song, clock: JSON cannot carry one: refused


SPAM_KINDS = (
    lambda r: [0xB0 | r.randrange(16), r.choice([1, 7, 10, 64, 74, 91]), r.randrange(128)],  # CCs nobody maps
    lambda r: [r.randrange(128), r.randrange(128)],  # running status: data bytes alone
    lambda r: [r.choice([0x90, 0x99, 0xB0, 0xE0])] + [r.randrange(128)] * r.randrange(2),  # truncated
    lambda r: [r.choice([0xF4, 0xF5, 0xF9, 0xFD])],  # undefined system messages
    lambda r: [0xF0] + [r.randrange(128) for _ in range(r.randrange(1, 40))] + [0xF7],  # SysEx
    lambda r: [0x99, r.choice([36, 38, 42]), 0],  # note-on velocity 0
    lambda r: [0xF8],  # clock (we lead: ignored)
    lambda r: [0xFE],  # active sensing
    lambda r: [0xD9, r.randrange(128)],  # channel pressure
    lambda r: [0xB9, r.choice([110, 112, 113, 117]), r.randrange(1, 128)],  # bound: accent, fill, next, tap
    lambda r: [0xB9, r.choice([80, 81]), r.randrange(0, 4)],  # tempo by a little
)


def spam_burst(ctl: Controller, rng: random.Random, seconds: float = 2.0, rate: int = 1000) -> int:
    """``rate`` messages a second for ``seconds``, paced in 10 ms slices."""
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for _ in range(rate // 100):
            kind = SPAM_KINDS[rng.randrange(len(SPAM_KINDS) - 2)] if rng.random() < 0.97 else \
                SPAM_KINDS[rng.choice([-2, -1])]
            try:
                ctl.send(kind(rng))
                n += 1
            except Exception:  # noqa: BLE001 - rtmidi refuses some: the engine never sees those
                pass
        time.sleep(0.01)
    return n


# --- the soak ---------------------------------------------------------------------------------
class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(tempfile.mkdtemp(prefix="soak-"))
        os.chmod(self.work, 0o700)
        self.tag = f"s{os.getpid()}"
        self.sock = self.work / "engine.sock"
        self.log = self.work / "play.log"
        self.schedule = self.work / "schedule.txt"
        #: (t, bar, ok_to_count, midi_connected, hits_in_grid, steps played, step in bar)
        self.snaps: list[tuple] = []
        self.events: list[tuple[float, str, str]] = []
        self.exclude: list[tuple[float, float, str]] = []  # windows where MIDI out is down on purpose
        self.cues = Counter()
        self.bad_cues = 0
        self.spam_sent = 0
        self.tmux = ["tmux", "-L", f"soak-{self.tag}"]
        self.died_at: float | None = None
        self.recorders_lost: list = []  #: recorder processes that ended on their own

    def note(self, what: str, detail: str = "") -> None:
        self.events.append((round(time.monotonic() - self.t0, 2), what, detail))

    # the engine
    def start_engine(self) -> None:
        cfg = self.work / "config"
        cfg.mkdir()
        env = {**os.environ, "XDG_CONFIG_HOME": str(cfg), "DRUMMACHINE_MIDI_API": "jack"}  # MIDI learn writes here
        cmd = [sys.executable, "-m", "drummachine", "play", "--headless", "--style", "funk", "--bpm", "100",
               "--midi-out", f"{self.tag}-rec:rx", "--midi-in", f"{self.tag}-ctl:tx", "--log", str(self.log),
               "--socket", str(self.sock), "--midi-schedule", str(self.schedule), "--seed", str(self.args.seed)]
        if self.args.fake_model:
            cmd.append("--fake-model")
        self.env = env
        self.engine = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 60
        while not self.sock.exists():
            if self.engine.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the engine did not start: {self.engine.stderr.read()}")
            time.sleep(0.1)
        from drummachine.live.host import SocketClient

        self.monitor = SocketClient(self.sock)
        self.monitor.wait_snapshot(10)
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watching = True
        self.watcher.start()

    def _watch(self) -> None:
        last = None
        while self.watching:
            if self.died_at is None and self.engine.poll() is not None:
                self.died_at = time.monotonic()
                self.note("ENGINE_DIED", f"exit code {self.engine.returncode}")
            try:
                self.recorder.revive()
            except RuntimeError:  # the new one did not start: reported just below, as a recorder lost
                pass
            recorder = self.recorder.proc
            # one that left for JACK not calling it (RECORDER_UNSCHEDULED_EXIT) is started again, not lost
            if (recorder.poll() not in (None, RECORDER_UNSCHEDULED_EXIT)
                    and recorder not in self.recorder.ended | set(self.recorders_lost)):
                # the soak's own instrument: what the engine sent after this is not measured
                self.recorders_lost.append(recorder)
                err = self.recorder.out.with_name("recorder.err")
                tail = err.read_text(errors="replace").strip().splitlines()[-3:] if err.exists() else []
                self.note("RECORDER_DIED", f"exit code {recorder.returncode}: {' | '.join(tail)}")
            s = self.monitor.latest()
            if s is not None and s is not last:
                last = s
                ok = s.playing and not s.paused and not s.muted and not s.solo and s.kind not in SILENT_KINDS
                hits = int((s.grid[: s.step + 1, 0] > 0.5).sum())
                self.snaps.append((time.monotonic(), s.bar, ok, s.midi_out == "connected", hits, s.steps, s.step))
            time.sleep(0.02)

    # the faults
    def ui(self, crash: bool) -> None:
        name = f"ui{len(self.events)}"
        env = f"DRUMMACHINE_UI_FAULT_AFTER={self.rng.uniform(2, 5):.1f}" if crash else "DRUMMACHINE_UI_FAULT_AFTER="
        subprocess.run([*self.tmux, "new-session", "-d", "-s", name, "-x", "100", "-y", "30", "-e", env,
                        "-e", f"JACK_DEFAULT_SERVER={os.environ['JACK_DEFAULT_SERVER']}",
                        f"cd {ROOT} && exec {sys.executable} -m drummachine attach --socket {self.sock}"], check=True)
        if crash:
            self.note("ui_crash", name)
            return
        time.sleep(self.rng.uniform(2, 4))
        out = subprocess.run([*self.tmux, "list-panes", "-t", name, "-F", "#{pane_pid}"], capture_output=True,
                             text=True).stdout.split()
        if out:
            os.kill(int(out[0]), signal.SIGKILL)
            self.note("ui_sigkill", out[0])

    def kill_mixer(self) -> None:
        h = self.ask_health()
        if h and h.get("mixer_pid"):
            os.kill(h["mixer_pid"], signal.SIGKILL)
            self.note("mixer_sigkill", str(h["mixer_pid"]))

    def midi_out_gone(self) -> None:
        t = time.monotonic()
        self.recorder.gone()
        self.note("midi_out_gone")
        time.sleep(self.rng.uniform(3, 6))
        self.recorder.back()
        back = time.monotonic()
        self.note("midi_out_back")
        # the engine's port watch looks once a second: notes are back within about 2 s
        self.exclude.append((t, back + 2.5, "midi out gone"))
        self.reconnects.append(back)

    def jack_restart(self) -> None:
        """The JACK server stops and starts again (an interface unplugged, jackd restarted by
        systemd): the engine is to notice, open its MIDI ports and its mixer's stream on the new
        server, and play on meanwhile by the wall clock. The soak's own clients start again too."""
        t = time.monotonic()
        self.note("jack_stop")

        def server_restart() -> None:
            self.jack.stop()
            time.sleep(2.0)
            self.jack.start()

        self.recorder.restart_across(server_restart)
        self.controller.gone()  # deleted, made again on the new server
        self.controller.back()
        self.start_reference()
        back = time.monotonic()
        self.note("jack_back", f"stopped for {back - t:.1f} s")
        # the watches look once a second, the mixer is taken for dead after 2 s without a block
        self.exclude.append((t, back + 4.0, "JACK server restarted"))
        self.reconnects.append(back)

    def start_reference(self) -> None:
        """The two C clients: the reference, never killed, and the twin, killed as the mixer is."""
        for proc in (self.reference, self.twin):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(5)
        if shutil.which("jack_simple_client"):
            self.reference = subprocess.Popen(["jack_simple_client"], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
            self.start_twin()

    def start_twin(self) -> None:
        self.twin = subprocess.Popen(["jack_simple_client", TWIN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_twin(self) -> None:
        if self.twin is None or self.twin.poll() is not None:
            return
        self.twin.send_signal(signal.SIGKILL)
        self.twin.wait(5)
        self.note("twin_sigkill", str(self.twin.pid))
        time.sleep(TWIN_RESTART_S)
        self.start_twin()

    def midi_in_gone(self) -> None:
        self.controller.gone()
        self.note("midi_in_gone")
        time.sleep(self.rng.uniform(3, 6))
        self.controller.back()
        self.note("midi_in_back")

    def spam(self) -> None:
        n = spam_burst(self.controller, self.rng)
        self.spam_sent += n
        self.note("spam", str(n))

    # the cues
    def ask_health(self) -> dict | None:
        with self.health_lock:  # the sampler and the mixer's killer: one question at a time
            return self.monitor.ask_health()

    def sample_engine(self, end: float, every: float = 15.0) -> None:
        """The engine's RSS over the run (growth that levels off is warming up, a slope is a
        leak), and its MIDI out's counts (the notes it handed over late)."""
        while time.monotonic() < end:
            stats = proc_stats(self.engine.pid)
            if stats:
                self.rss_samples.append((round(time.monotonic() - self.t0, 1), stats["rss_anon_kb"],
                                         stats["rss_shmem_kb"]))
            health = self.ask_health()
            if health is not None:
                self.midi_out_samples.append((time.monotonic(), health.get("midi_out", {})))
            time.sleep(every)

    def cue_loop(self, end: float) -> None:
        undo: list[tuple[float, str, object]] = []
        stopped_since = None
        next_cue = time.monotonic() + self.rng.uniform(0.5, 5)
        while time.monotonic() < end:
            now = time.monotonic()
            s = self.monitor.latest()
            for item in [u for u in undo if u[0] <= now]:
                undo.remove(item)
                self.monitor.command(item[1], item[2])
            if s is not None:  # never asked to be silent for long: start again, unpause
                if not s.playing:
                    stopped_since = stopped_since or now
                    if now - stopped_since > 2.0:
                        self.monitor.command("start")
                        stopped_since = None
                else:
                    stopped_since = None
                if s.paused and not any(u[1] == "pause" for u in undo):
                    undo.append((now + self.rng.uniform(1, 3), "pause", False))
            if now >= next_cue:
                name, value, bad = random_command(self.rng)
                self.monitor.command(name, value)
                self.cues[name or "(empty)"] += 1
                self.bad_cues += bad
                if not bad and name in ("mute", "solo"):
                    undo.append((now + self.rng.uniform(2, 4), name, value))
                next_cue = now + self.rng.uniform(0.5, 5)
            time.sleep(0.05)

    def schedule_faults(self, start: float, end: float) -> list[tuple[float, str]]:
        """Every kind at least once, then again at its period; nothing in the last 12 s. Each kind
        starts within the first timing window (the first 5 minutes of an hour), so the MIDI timing
        of the first and the last window is measured under the same storm (the JACK server
        restarts once, in the middle)."""
        span = end - 12 - start
        first_within = min(span, TIMING_WINDOW_S)
        kinds = [("ui_crash", 0.05, 60), ("spam", 0.15, 30), ("mixer", 0.25, 90), ("twin", 0.3, 90), ("midi_out", 0.4, 120),
                 ("midi_in", 0.6, 150), ("ui_kill", 0.8, 60), ("jack", 0.5, 1e9)]  # the server restarts once
        plan = []
        for kind, frac, period in kinds:
            t = start + frac * (span if kind == "jack" else first_within)
            while t < end - 12:
                plan.append((t, kind))
                t += period * self.rng.uniform(0.8, 1.2)
        return sorted(plan)

    def run(self) -> dict:
        a = self.args
        seconds = a.minutes * 60
        jack_name = f"{os.environ.get('JACK_DEFAULT_SERVER', 'default')}-soak"
        os.environ["JACK_DEFAULT_SERVER"] = jack_name
        self.reconnects: list[float] = []
        self.rss_samples: list[tuple[float, int, int]] = []  #: (s, RssAnon kB, RssShmem kB)
        self.midi_out_samples: list[tuple[float, dict]] = []  #: (monotonic, the engine's MIDI out counts)
        self.health_lock = threading.Lock()
        result: dict = {"minutes": a.minutes, "seed": a.seed, "model": "stand-in" if a.fake_model else "shipped int8",
                        "jack": {"server": jack_name, "rate": JACK_RATE, "period": JACK_PERIOD}}
        with JackServer(jack_name, self.work / "jackd.log") as jack:
            self.jack, self.reference, self.twin = jack, None, None
            self.start_reference()
            self.recorder = Recorder(f"{self.tag}-rec", self.work)
            self.controller = Controller(f"{self.tag}-ctl")
            self.reference_player = ReferencePlayer(f"{self.tag}-ref", f"{self.tag}-rec:rx", self.work)
            self.t0 = time.monotonic()
            try:
                self.start_engine()
                time.sleep(3.0)
                start_health = self.ask_health()
                start_proc = proc_stats(self.engine.pid)
                t_start = time.monotonic()
                end = self.t0 + seconds
                faults = self.schedule_faults(t_start, end)
                cues = threading.Thread(target=self.cue_loop, args=(end - 8,), daemon=True)
                cues.start()
                threading.Thread(target=self.sample_engine, args=(end, a.rss_every), daemon=True).start()
                ui_turn = 0
                for when, kind in faults:
                    time.sleep(max(0.0, when - time.monotonic()))
                    try:
                        if kind in ("ui_crash", "ui_kill"):
                            self.ui(crash=kind == "ui_crash")
                            ui_turn += 1
                        elif kind == "spam":
                            self.spam()
                        elif kind == "mixer":
                            self.kill_mixer()
                        elif kind == "twin":
                            self.kill_twin()
                        elif kind == "midi_out":
                            self.midi_out_gone()
                        elif kind == "midi_in":
                            self.midi_in_gone()
                        elif kind == "jack":
                            self.jack_restart()
                    except Exception as exc:  # noqa: BLE001 - a soak reports, it does not stop
                        self.note("injector_error", f"{kind}: {exc}")
                cues.join()
                self.monitor.command("start") if not (self.monitor.latest() and self.monitor.latest().playing) else None
                time.sleep(max(0.0, end - time.monotonic()))
                subprocess.run([*self.tmux, "kill-server"], capture_output=True)
                time.sleep(1.0)
                end_health = self.ask_health()
                end_proc = settled_proc_stats(self.engine.pid, start_proc)
                last = self.monitor.latest()
                self.watching = False
                self.monitor.quit()
                _, err = self.engine.communicate(timeout=30)
            finally:
                subprocess.run([*self.tmux, "kill-server"], capture_output=True)
                if self.engine.poll() is None:
                    self.engine.kill()
                for proc in (self.reference, self.twin):
                    if proc is not None:
                        proc.terminate()
                        proc.wait(5)
                self.reference_player.stop()
                self.recorder.stop()
                if self.controller.port is not None:
                    self.controller.gone()
            result["jackd"] = jack.blame(self.fault_spans(BLAME_FAULTS))
            result["jackd"]["reference_client"] = "simple" if self.reference is not None else None
            engine_log = self.log.read_text(errors="replace") if self.log.exists() else ""
            result["jackd"]["killed_alike"] = killed_alike(result["jackd"], kit_client(engine_log))
        result.update(self.report(start_health, end_health, start_proc, end_proc, last, err, t_start, end))
        return result

    # the figures
    def report(self, h0, h1, p0, p1, last, err, t_start, end) -> dict:
        log = self.log.read_text(errors="replace")
        bars = self.bars()
        silent = [b for b in bars if b["counted"] and b["notes"] == 0]
        no_hits = [b for b in bars if b["counted"] and b["hits"] == 0]
        timing = self.timing(t_start, end)
        reconnect, reconnect_recorder_stalled = [], []
        for back in self.reconnects:
            # a recorder started again soon after (JACK had stopped calling the one just made): its
            # port is back when the new one is
            back = max([back] + [r for r in self.recorder.revived_at if back < r < back + REVIVED_WITHIN_S])
            first = next((t for t, m in self.recorder.got if t > back and m[0] & 0xF0 == 0x90), None)
            reconnect.append(round(first - back, 2) if first else None)
            # the recorder's callback ran in under half the periods until the first note came (as
            # for the bars): the wait is the recorder's, not the engine's
            reconnect_recorder_stalled.append(first is not None and self.recorder_stalled(back, first))
        return {
            "bars": {"seen": len(bars), "counted": sum(b["counted"] for b in bars), "silent": len(silent),
                     "silent_examples": silent[:5], "handed_out_with_no_hits": len(no_hits),
                     "no_hits_examples": no_hits[:5],
                     "excluded_midi_out_gone": sum(b["excluded"] for b in bars),
                     "excluded_recorder_stalled": sum(b["recorder_stalled"] for b in bars),
                     "of_which_reference_unheard": sum(b["reference_unheard"] for b in bars),
                     # bars whose engine notes arrived while the reference's did not: the
                     # reference's own path was broken, not the recorder deaf
                     "reference_unheard_engine_heard": sum(b["reference_unheard"] and b["notes"] > 0 for b in bars),
                     "recorder_started_again": len(self.recorder.revived_at),
                     "recorder_said": self.recorder.said(self.t0)},
            "generator_misses": last.misses if last else None, "steps": last.steps if last else None,
            "underruns": last.underruns if last else None, "audio_restarts": last.audio_restarts if last else None,
            "faults_caught_per_loop": dict(last.faults) if last else None,
            "commands_refused": last.refused if last else None,
            "threads": {"start": h0 and h0["threads"], "end": h1 and h1["threads"], "dead_at_end": h1 and h1["dead"],
                        "expected": h1 and h1["expected"]},
            "engine_process": {"start": p0, "end": p1},
            "midi_timing_error_ms": timing,
            "midi_timing_error_on_server_clock_ms": self.timing(t_start, end, server_clock=True),
            "midi_out_by_window": midi_out_windows(self.midi_out_samples, t_start, end),
            "midi_out_back_after_s": reconnect,
            "midi_out_back_recorder_stalled": reconnect_recorder_stalled,
            "cues": {"sent": sum(self.cues.values()), "bad_values": self.bad_cues, "by_name": dict(self.cues)},
            "spam_messages": self.spam_sent,
            "faults_injected": Counter(e[1] for e in self.events),
            "events": self.events,
            "engine_rss_anon_shmem_kb_over_time": self.rss_samples,
            "engine_rss_anon_growth_kb": rss_growth(self.rss_samples),
            "log": {"ui_detached": log.count("UI detached ("), "tracebacks": log.count("Traceback"),
                    "traceback_tails": traceback_tails(log),
                    "refused_lines": log.count("refused:"), "audio_restarted": log.count("audio process stopped"),
                    "jack_server_gone": log.count("MIDI: the JACK server"),
                    "generator_miss_lines": [ln for ln in log.splitlines() if "generator miss:" in ln][:12],
                    "midi_faults": len(re.findall(r"thread: .* \(caught, going on", log))},
            "engine_exit": {"code": self.engine.returncode, "summary": (err.strip().splitlines() or [""])[-1],
                            "traceback_on_stderr": "Traceback" in err or "Fatal Python error" in err,
                            "died_at_s": round(self.died_at - self.t0, 1) if self.died_at else None,
                            "seconds_without_engine": round(end - self.died_at, 1) if self.died_at else 0.0,
                            "stderr_tail": err.strip().splitlines()[-40:] if self.died_at else []},
        }

    def bars(self) -> list[dict]:
        """Per bar of the engine (runs of snapshots with the same bar): was it to sound (playing,
        not paused, nothing muted, MIDI out connected, not in a window where the soak took the
        port away), and how many note-ons arrived while it was the bar handed out."""
        notes = sorted(t for t, m in self.recorder.got if m[0] & 0xF0 == 0x90 and len(m) > 2 and m[2] > 0)
        # the control: the reference player's notes reach the same recorder by the same kind of
        # path; a bar in which none of the 3 or more it handed over (its schedule: a starved
        # player hands over fewer, and is no reason) arrived is a bar the recorder (or JACK) did
        # not hear, whatever the engine did
        reference = sorted(t for t, m in self.recorder.reference_got if m[0] & 0xF0 == 0x90)
        player = getattr(self, "reference_player", None)
        handed = sorted(t for times in (read_schedule(player.schedule).values() if player else ()) for t in times)
        runs: list[tuple[int, list]] = []
        for t, bar, ok, connected, hits, steps, step in self.snaps:
            if not runs or runs[-1][0] != bar:
                runs.append((bar, []))
            runs[-1][1].append((t, ok, connected, hits, step))
        out = []
        for (bar, rows), (following, next_rows) in zip(runs, runs[1:]):  # the last bar is cut by the end
            if following != bar + 1:  # a restart or a stop: not a bar that ran to its end
                continue
            t0, t1 = rows[0][0], next_rows[0][0]
            excluded = any(a <= t1 + BAR_SLACK and t0 <= b for a, b, _ in self.exclude)
            heard = bisect_left(reference, t1 + BAR_SLACK) - bisect_left(reference, t0)
            expected = bisect_left(handed, t1 + BAR_SLACK) - bisect_left(handed, t0)
            unheard = expected >= 3 and heard == 0
            stalled = not excluded and (self.recorder_stalled(t0, t1 + BAR_SLACK) or unheard)
            counted = all(r[1] and r[2] for r in rows) and not excluded and not stalled and t1 - t0 > 0.5
            n = bisect_left(notes, t1 + BAR_SLACK) - bisect_left(notes, t0)
            out.append({"bar": bar, "t": round(t0 - self.t0, 2), "seconds": round(t1 - t0, 2), "counted": counted,
                        "excluded": excluded, "recorder_stalled": stalled, "notes": n,
                        "reference_notes": [heard, expected], "reference_unheard": unheard and not excluded,
                        "hits": max(r[3] for r in rows),
                        # the steps its snapshots showed: a bar seen only at its first steps (the
                        # monitor stalled) shows fewer hits than it played
                        "steps_seen": [min(r[4] for r in rows), max(r[4] for r in rows)], "snapshots": len(rows)})
        return out

    def recorder_stalled(self, t0: float, t1: float) -> bool:
        """The recorder's callback ran in less than half the periods from ``t0`` to ``t1`` (by its
        own count, written every half second): what did not arrive then is not the engine's to
        answer for; so is one in which a new recorder process started (none listened in between).
        A window with no count either side, or with the recorder's port away, is not judged (False)."""
        marks = self.recorder.periods
        k0 = bisect_left(marks, (t0,))
        k1 = bisect_left(marks, (t1,))
        if k0 == 0 or k1 >= len(marks):
            return False
        (a, pa), (b, pb) = marks[k0 - 1], marks[k1]
        if pb < pa and pb >= 0:  # a new recorder process (its count restarts): none listened in between
            return True
        if pa < 0 or pb < 0:  # its port away
            return False
        return pb - pa < 0.5 * (b - a) * JACK_RATE / JACK_PERIOD

    def fault_spans(self, kinds) -> list[tuple[float, float, str]]:
        """(from, to, kind) on the monotonic clock: each injected fault of these kinds and its span
        (FAULT_SPANS)."""
        return [(self.t0 + t - FAULT_SPANS[what][0], self.t0 + t + FAULT_SPANS[what][1], what)
                for t, what, _ in self.events if what in kinds]

    def timing(self, t_start: float, end: float, server_clock: bool = False) -> dict:
        """Each note-on that arrived against the nearest scheduled time of the same message: the
        engine's, and beside it the reference player's (``reference``) and the ratio of the p99s.
        Its arrival as the recorder woke to read it, or with ``server_clock`` where the server's
        clock puts the frame it landed on (see jack_midi_probe.Recorder)."""
        spans = self.fault_spans(FAULT_SPANS)
        rec = self.recorder
        engine = note_timing(self.schedule, rec.got_on_server_clock if server_clock else rec.got,
                             t_start, end, spans)
        player = getattr(self, "reference_player", None)
        if player is None:
            return engine
        reference = note_timing(player.schedule,
                                rec.reference_got_on_server_clock if server_clock else rec.reference_got,
                                t_start, end, spans)
        engine["reference"] = reference
        engine["p99_over_reference"] = {
            window: round(engine[window]["p99"] / reference[window]["p99"], 2)
            if engine[window].get("p99") and reference[window].get("p99") else None
            for window in ("first", "last", "first_steady", "last_steady")}
        return engine


MIDI_OUT_COUNTS = ("written", "late", "stale", "periods", "off_dll")


def midi_out_windows(samples: list[tuple[float, dict]], t_start: float, end: float) -> list[list]:
    """The engine's MIDI out counts (health's ``midi_out``, sampled through the run) per timing
    window: [start s, notes written, handed over late, left out as stale, the share of periods
    the C callback placed by its wake-up instead of JACK's clock]. A count that went down was
    started again (the port or the client opened anew): it counts from 0."""
    window = min(TIMING_WINDOW_S, (end - t_start) / 3)
    deltas, before = [], None
    for t, counts in samples:
        if before is not None:
            deltas.append((t, {k: counts.get(k, 0) - before.get(k, 0) if counts.get(k, 0) >= before.get(k, 0)
                               else counts.get(k, 0) for k in MIDI_OUT_COUNTS}))
        before = counts
    rows = []
    for a in np.arange(t_start, end - window / 2, window):
        inside = [d for t, d in deltas if a <= t < a + window]
        total = {k: sum(d[k] for d in inside) for k in MIDI_OUT_COUNTS}
        rows.append([round(float(a - t_start), 1), total["written"], total["late"], total["stale"],
                     round(total["off_dll"] / total["periods"], 4) if total["periods"] else None])
    return rows


def note_timing(schedule: Path, got: list, t_start: float, end: float, spans: list) -> dict:
    """Each note-on in ``got`` against the nearest time ``schedule`` gave the same message: p50,
    p99 and the largest error in the first and the last window, all of it and outside ``spans``."""
    sched = read_schedule(schedule)
    errors = []
    for t, m in got:
        if m[0] & 0xF0 != 0x90 or len(m) < 3 or m[2] == 0:
            continue
        times = sched.get(tuple(m))
        if not times:
            continue
        i = bisect_left(times, t)
        cands = [times[j] for j in (i - 1, i) if 0 <= j < len(times)]
        err = min((t - s for s in cands), key=abs)
        if abs(err) < 0.1:
            errors.append((t, err))
    window = min(TIMING_WINDOW_S, (end - t_start) / 3)  # the first and last 5 minutes of an hour

    def steady(t: float) -> bool:
        return not any(a <= t <= b for a, b, _ in spans)

    def stats(rows):
        x = np.abs([e for _, e in rows]) * 1000
        if not len(x):
            return {"n": 0}
        return {"n": int(len(x)), "p50": round(float(np.percentile(x, 50)), 3),
                "p99": round(float(np.percentile(x, 99)), 3), "max": round(float(x.max()), 3)}

    first = [r for r in errors if r[0] < t_start + window]
    last = [r for r in errors if end - 8 - window <= r[0] < end - 8]
    # each window's p50 and p99 in turn: what moved, when, and whether it came back
    windows = [(a, [e for t, e in errors if a <= t < min(a + window, end - 8)])
               for a in np.arange(t_start, end - 8 - window / 2, window)]
    return {"window_s": round(window, 1), "matched": len(errors),
            "first": stats(first), "last": stats(last),
            "first_steady": stats([r for r in first if steady(r[0])]),
            "last_steady": stats([r for r in last if steady(r[0])]),
            "by_window": [[round(float(a - t_start), 1), len(x),
                           round(float(np.percentile(np.abs(x), 50)) * 1000, 3) if x else None,
                           round(float(np.percentile(np.abs(x), 99)) * 1000, 3) if x else None]
                          for a, x in windows]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--json", metavar="OUT", help="also write the result here")
    p.add_argument("--fake-model", action="store_true", help="the stand-in generator instead of the shipped model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, schedule)")
    p.add_argument("--rss-every", type=float, default=15.0, metavar="S",
                   help="sample the engine's memory this often (seconds)")
    args = p.parse_args(argv)
    if not shutil.which("jackd") or not shutil.which("tmux"):
        print("soak: needs jackd and tmux", file=sys.stderr)
        return 2
    soak = Soak(args)
    try:
        result = soak.run()
    finally:
        if not args.keep:
            shutil.rmtree(soak.work, ignore_errors=True)
    result["work"] = str(soak.work) if args.keep else None
    text = json.dumps(result, indent=1, default=str)
    if args.json:  # the file may be committed: no path of this machine in it (the printout keeps them)
        Path(args.json).write_text(portable(text, soak.work) + "\n")
    print(text)
    return 0


def portable(text: str, work: Path) -> str:
    """``text`` with this machine's paths made general: the work folder ``<work>``, the home ``~``,
    the repository ``.``."""
    for path, name in ((str(work), "<work>"), (str(ROOT), "."), (str(Path.home()), "~")):
        text = text.replace(path, name)
    return text


if __name__ == "__main__":
    sys.exit(main())
