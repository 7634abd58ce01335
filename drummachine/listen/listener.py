"""The engine's end of listening: starts the listening process, reads its readings on the engine's
clock, and hands them to the engine as ``band`` commands (a small thread, 100 times a second).

The readings' times are on the monotonic clock; the engine's clock is the mixer's sample counter
(or the monotonic clock itself). A reading is put on the engine's clock from where both clocks
are when it is read, at the rate the engine's clock runs against the monotonic one (measured:
a sound card's clock is not the computer's), and its tempo in beats per engine-clock minute.

A listening process whose input stopped (the JACK server stopped or restarted: libjack in that
process holds the dead server's client; a sounddevice input that stopped) or that died is started again,
tried every few seconds until it listens; the follower holds meanwhile (its last readings said
"input gone", confidence 0). The new process's tracker goes on from the state the last one left in
shared memory where that is recent (it died; it was started again to take the kit out), instead
of hearing the band from cold (``BeatTracker.resume``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import subprocess
import sys
import threading
import time
from typing import Callable

from drummachine.core.errors import DrumMachineError
from drummachine.core.follow import BandReading
from drummachine.listen import shared
from drummachine.listen.inputs import find_input
from drummachine.listen.process import TAKEN_OUT_BY_TIME

LINK_SECONDS = 0.01
#: the engine gets a reading at most this often: the follower counts readings (4 sure ones to
#: lock, 2 to re-lock: tuned on readings 50 ms apart, benchmarks/follow.py --replay), and the
#: listening process writes one with each of the tracker's estimates, every 50 ms (a reading
#: handed on more often would count one estimate several times, and lock on one update)
HAND_SECONDS = 0.05
#: the engine's clock (the mixer's sample counter) may run at another rate than the computer's:
#: measured from this long on (JACK's dummy driver on a busy machine: 0.5% slow)
RATE_AFTER_SECONDS = 5.0
#: no block captured for this long (the process alive or not): the input stopped; start it again
STALLED_SECONDS = 3.0
#: a listening process that could not start is tried again after this long, and after the first
#: minute less often: each try starts a Python process (about 0.25 s of a core here, more on a Pi)
#: for an input that may be away for the rest of the set
RETRY_SECONDS = (2.0, 10.0)
READY_SECONDS = 10.0
#: listening without the machine's kit (its JACK ports not there when the listening process
#: started: the band's port back before the engine's client after a JACK restart), its ports are
#: looked for this often; once there, the listening process starts again with them, to take the
#: kit out of what it hears
KIT_LOOK_SECONDS = 1.0

log = logging.getLogger("drummachine")


#: an input not there at the start is looked for this often (each look lists JACK's ports through a
#: client of its own), and after the first minute less often
LOOK_AGAIN_SECONDS = (2.0, 10.0)
#: the input's states past the listening process's own (``shared.STATUSES``): its process not
#: running (started again by the link's watch), and a port not there yet (``InputWhenThere``)
STOPPED, NOT_THERE = "listener stopped", "not there"
#: an input that clips is said in the log at most this often (a loud band clips on every hit)
CLIPPING_SAID_EVERY = 30.0


def _said_to_the_log(stderr) -> None:
    """What the listening process says (its kit's gain, its echo found, whether its kit is in what
    it hears), a line each, into the engine's log: on its own standard error it reached the terminal
    of a headless `play`, nothing behind the stage UI, and never the log. Anything else it writes
    there (a crash's stack) goes to the engine's standard error as well, as it did. A line said
    again and again (a read failing twice a second while the server is gone) is logged once, and
    how many times more when another comes."""
    last, again = "", 0
    try:
        for line in stderr:
            if not line.strip():
                continue
            if line == last:
                again += 1
                continue
            if again:
                log.info("listen: (the line before %d times more)", again)
            last, again = line, 0
            log.info("%s", line.rstrip())
            if not line.startswith("listen: "):
                sys.stderr.write(line)
                sys.stderr.flush()
    except (OSError, ValueError):  # the pipe closed under the reader
        pass
    if again:
        log.info("listen: (the line before %d times more)", again)


class InputStateSaid:
    """The input's state changes a musician has to act on, one log line each: clipping (its send
    too hot: at most every ``CLIPPING_SAID_EVERY``), gone, and back after it was gone. The stage
    UI shows the state itself (``ui.app.band_text``); a headless `play` has only its log."""

    CLIPPING, GONE = shared.STATUSES[shared.CLIPPING], shared.STATUSES[shared.GONE]
    #: what "back" is, after gone (not "starting": a listening process starting again says so itself)
    HEARD = {shared.STATUSES[k] for k in (shared.LISTENING, shared.SILENCE, shared.CLIPPING)}

    def __init__(self, name: str):
        self.name = name
        self.state = ""
        self.clipping_said = -math.inf

    def __call__(self, state: str, now: float) -> None:
        was, self.state = self.state, state
        if state == was:
            return
        if state == self.CLIPPING and now - self.clipping_said >= CLIPPING_SAID_EVERY:
            self.clipping_said = now
            log.warning("listen: %s clips (its peaks reach full scale): turn its send down", self.name)
        elif state == self.GONE:
            log.warning("listen: %s is gone; holding the tempo, listening for it to come back", self.name)
        elif was == self.GONE and state in self.HEARD:
            log.warning("listen: %s is back; following it again once sure of the band", self.name)


class InputWhenThere:
    """``--listen PORT`` whose port is not there at the start (another interface switched on, or
    its bridge, after `play`): looked for in a thread of its own until it is, then ``on_ready``
    takes the Listener ``make()`` returned (and links it). ``make`` raises DrumMachineError while
    the port is not there. Closing closes the Listener if it came."""

    def __init__(self, make, on_ready, looks=LOOK_AGAIN_SECONDS):
        self.make, self.on_ready, self.looks = make, on_ready, looks
        self.band: Listener | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._look, name="listen-wait", daemon=True)
        self._thread.start()

    def _look(self) -> None:
        started, said = time.monotonic(), ""
        first, later = self.looks
        while not self._stop.wait(first if time.monotonic() - started < 60.0 else later):
            try:
                band = self.make()
            except DrumMachineError as exc:
                if getattr(exc, "missing", False) or str(exc) == said:
                    continue
                said = str(exc)  # there, but it cannot be opened: said once per reason
                log.warning("%s; looking again", exc)
                continue
            except Exception as exc:  # noqa: BLE001 - the groove goes on; the next look may do
                if f"{exc.__class__.__name__}: {exc}" != said:
                    said = f"{exc.__class__.__name__}: {exc}"
                    log.warning("listen: %s; looking again", said)
                continue
            if self._stop.is_set():
                band.close()
                return
            self.band = band
            try:
                self.on_ready(band)
            except Exception as exc:  # noqa: BLE001
                log.warning("listen: %s: %s", exc.__class__.__name__, exc)
            return

    def status(self) -> str:
        """The input's state: not there yet, then the Listener's."""
        return NOT_THERE if self.band is None else self.band.status()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(READY_SECONDS + 5.0)
        if self.band is not None:
            self.band.close()


class Listener:
    """``--listen PORT``: a listening process and its readings. A context manager.

    ``kit_ports``: the machine's own kit's JACK ports, or what gives them now (asked at each start
    of a listening process, and once a second while there are none: after a JACK restart the
    band's port can be back before the engine's client). ``kit_tap``: the mixer's shared block,
    whose kit as mixed the listening process reads by time where no kit ports come in (``listen.kit_tap``)."""

    def __init__(self, port: str, bpm: float, clock, window: float = 0.15, client: str = "drummachine-listen",
                 gate_db: float | None = None, kit_ports: Callable[[], tuple[str, ...]] | tuple[str, ...] = (),
                 kit_tap: str = ""):
        self.kit_ports = kit_ports if callable(kit_ports) else (lambda: tuple(kit_ports))
        self.input = find_input(port)
        self.clock = clock
        self.block = shared.ReadingBlock()
        self.block.slots[shared.PRIOR] = bpm
        #: the tracker's state, saved by the listening process: its successor goes on from it
        self.handover = shared.TrackerStateBlock()
        setup = {"shm": self.block.name, "handover": self.handover.name, "backend": self.input.backend,
                 "port": self.input.name, "device": self.input.index, "words": self.input.words, "bpm": bpm,
                 "window": window, "client": client, "gate_db": gate_db,
                 # the machine's own kit as it leaves (JACK ports): taken out of what it hears
                 "kit_ports": list(self.kit_ports()), "kit_tap": kit_tap,
                 # a JACK port through PortAudio (no Python in JACK's real-time thread), or
                 # "callback": JACK-Client's Python callback (the benchmark compares the two)
                 "capture": os.environ.get("DRUMMACHINE_LISTEN_CAPTURE", "portaudio")}
        self.setup = setup
        self._spawn()
        self.restarts = 0  #: listening processes started again (the input stopped, or the process died)
        self.rate = 0
        self.latency = 0.0
        self.capture = ""  #: how the listening process captures: portaudio, callback or sounddevice
        #: what is done with the machine's own kit in the input: "taken out", why not, or "" (no kit asked)
        self.own_kit = ""
        self._thread = None
        self._stop = threading.Event()
        self.sent = 0
        self._blocks, self._blocks_since = -1.0, None  # blocks captured, and since when (``stalled``)
        self._origin = None  # (engine clock, monotonic) at the first reading
        self.clock_rate = 1.0  #: engine-clock seconds per monotonic second

    def _spawn(self) -> None:
        # one BLAS thread, as the mixer's: OpenBLAS's own threads spin-wait after each call, and
        # its dot products over the kit's echo (two each half second) tripled this process's CPU
        # (a share of 0.12-0.14 of a core to 0.33-0.36 on JACK, benchmarks/own_kit_by_time.py)
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "drummachine.listen.process"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        threading.Thread(target=_said_to_the_log, args=(self.proc.stderr,), name="listen-said", daemon=True).start()
        self.proc.stdin.write(json.dumps(self.setup) + "\n")
        self.proc.stdin.flush()

    def _answer(self, timeout: float) -> dict:
        """The listening process's first line, waited for in short turns (``close`` may stop it)."""
        deadline = time.monotonic() + timeout
        while True:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.25)
            if r:
                line = self.proc.stdout.readline()
                break
            if self._stop.is_set() or time.monotonic() > deadline or self.proc.poll() is not None:
                line = ""
                break
        try:
            return json.loads(line) if line else {"error": "the listening process did not answer"}
        except json.JSONDecodeError:
            return {"error": f"the listening process said {line.strip()[:120]!r}"}

    def _take_answer(self, timeout: float, on_error) -> None:
        """The listening process's answer: its rate, latency and capture; DrumMachineError after
        ``on_error()`` when it could not listen."""
        reply = self._answer(timeout)
        if "error" in reply:
            on_error()
            raise DrumMachineError("--listen", reply["error"])
        self.rate, self.latency = int(reply["rate"]), float(reply["latency"])
        self.capture = reply.get("capture", "")
        self.own_kit = reply.get("own_kit", "")

    def wait_ready(self, timeout: float = READY_SECONDS) -> "Listener":
        self._take_answer(timeout, self.close)
        return self

    def _end_process(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(3.0)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def start_again(self) -> None:
        """A new listening process on the same input and the same readings' block (its tracker
        goes on from the state the last one left, if that is recent: ``process.RESUME_WITHIN``;
        else cold); raises DrumMachineError when it cannot listen (the server not back yet)."""
        self._end_process()
        self.block.free_lock()  # (a process killed mid-reading; its next reading overwrites it)
        self.block.slots[shared.STATUS] = shared.STARTING
        self.setup["kit_ports"] = list(self.kit_ports())
        self._spawn()
        self._take_answer(READY_SECONDS, self._end_process)
        self.restarts += 1

    def say_own_kit(self) -> None:
        """In the log: what is done with the machine's own kit in what it hears."""
        if self.own_kit == "taken out":
            log.info("listen: the machine's own kit (%s) is taken out of what it hears",
                     ", ".join(self.setup["kit_ports"]))
        elif self.own_kit == TAKEN_OUT_BY_TIME:
            log.info("listen: the machine's own kit, read from the mixer by time, is taken out of what it hears")
        elif self.own_kit:
            log.warning("listen: %s", self.own_kit)

    def _take_the_kit_in(self) -> None:
        """The kit's ports came after listening began: the listening process starts again with
        them (its tracker goes on from the last one's state)."""
        ports = self.kit_ports()
        log.warning("listen: the machine's kit plays on JACK now (%s): listening again to take it out of "
                    "what it hears", ", ".join(ports))
        try:
            self.start_again()
        except DrumMachineError as exc:  # the link's watch tries again, as for any input that stopped
            log.warning("listen: %s", exc)
            return
        self._blocks_since = None
        self.say_own_kit()

    def set_tempo(self, bpm: float) -> None:
        """The tempo the engine plays: the tracker looks for the band around it."""
        if self.block.slots is not None:
            self.block.slots[shared.PRIOR] = bpm

    def hint_beat(self, t: float) -> None:
        """The musician tapped a beat of the band at ``t`` (the engine's clock): the listening
        process's tracker moves its grid there and keeps it (``BeatTracker.hint_beat``)."""
        s = self.block.slots
        if s is None:
            return
        s[shared.TAPPED_BEAT] = time.monotonic() + (t - self.clock.now()) / self.clock_rate
        s[shared.TAPS] += 1  # after the time: the process reads the count first

    def reading(self) -> BandReading | None:
        """The latest reading on the engine's clock (None before the first)."""
        s = self.block.read()
        if s[shared.SEQ] < 2:
            return None
        mono = time.monotonic()
        now = self.clock.now()
        if self._origin is None:
            self._origin = (now, mono)
        elif mono - self._origin[1] > RATE_AFTER_SECONDS:
            self.clock_rate = (now - self._origin[0]) / (mono - self._origin[1])

        def on_clock(t):  # monotonic -> the engine's clock, near now
            return now + (t - mono) * self.clock_rate

        nb = s[shared.NEXT_BEAT]
        return BandReading(on_clock(float(s[shared.HEARD])), float(s[shared.BPM]) / self.clock_rate,
                           on_clock(float(nb)) if nb > 0 else 0.0,
                           float(s[shared.CONFIDENCE]), float(s[shared.LOUDNESS]), float(s[shared.DENSITY]),
                           int(s[shared.SEQ]) // 2)

    def status(self) -> str:
        """The input's state: ``shared.STATUSES``' words, or ``STOPPED``."""
        if not self.alive:
            return STOPPED
        return shared.STATUSES.get(int(self.block.read()[shared.STATUS]), "?")

    def cpu_seconds(self) -> float:
        return float(self.block.read()[shared.CPU])

    def own_kit_removed_db(self) -> float:
        """How much quieter the input is with the machine's own kit taken out, while it plays
        (0 without the canceller)."""
        return float(self.block.read()[shared.OWN_KIT_REMOVED_DB])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    # --- the link to the engine -------------------------------------------------------------
    def stalled(self, now: float) -> bool:
        """No block captured for STALLED_SECONDS, or the process died: ``now`` monotonic. Call it
        often (it keeps when the block count last moved)."""
        blocks = self.block.read()[shared.BLOCKS]
        if blocks != self._blocks or self._blocks_since is None:
            self._blocks, self._blocks_since = blocks, now
        return not self.alive or now - self._blocks_since > STALLED_SECONDS

    def _watch(self) -> None:
        """The link thread's turn at the input: a stalled one is started again, said in the log
        once per reason, tried every 2 s, every 10 s after the first minute (RETRY_SECONDS)."""
        said, retry_at, stalled_at = "", 0.0, time.monotonic()
        if self.alive:
            log.warning("listen: no audio from %s in %.0f s (the sound server stopped or restarted?); "
                        "listening again", self.input.name, STALLED_SECONDS)
        else:
            log.warning("listen: the listening process stopped (exit %s); listening again", self.proc.returncode)
        while not self._stop.is_set():
            if time.monotonic() >= retry_at:
                try:
                    self.start_again()
                    log.warning("listen: listening to %s again (%d Hz, %s capture); the follower holds "
                                "until it is sure of the band", self.input.name, self.rate, self.capture)
                    self.say_own_kit()
                    self._blocks_since = None
                    return
                except DrumMachineError as exc:
                    if str(exc) != said:
                        said = str(exc)
                        log.warning("listen: %s; trying again", exc)
                    first, later = RETRY_SECONDS
                    retry_at = time.monotonic() + (first if time.monotonic() - stalled_at < 60.0 else later)
            self._stop.wait(0.25)

    def link(self, send, tapped: Callable[[], tuple[int, float] | None] = lambda: None) -> None:
        """Hand each new reading to ``send(reading)`` (e.g. ``lambda r: engine.command("band", r)``),
        and start the listening process again when its input stopped. ``tapped()``: where the
        musician last tapped the band's beat (a count, and the time on the engine's clock:
        ``Engine.band_beat_tapped``), handed on to the listening process when it changes."""
        said = InputStateSaid(self.input.name)
        told = [tapped()]

        def loop():
            last, handed, kit_looked = -1, 0.0, time.monotonic()
            while not self._stop.wait(LINK_SECONDS):
                try:
                    if self.stalled(time.monotonic()):
                        self._watch()
                        continue
                    said(self.status(), time.monotonic())
                    if not self.setup["kit_ports"] and time.monotonic() - kit_looked >= KIT_LOOK_SECONDS:
                        kit_looked = time.monotonic()
                        if self.kit_ports():
                            self._take_the_kit_in()
                            continue
                    tap = tapped()
                    if tap is not None and tap != told[0]:
                        told[0] = tap
                        self.hint_beat(tap[1])
                    if time.monotonic() - handed < HAND_SECONDS - LINK_SECONDS / 2:
                        continue
                    r = self.reading()
                    if r is not None and r.seq != last:
                        last, handed = r.seq, time.monotonic()
                        send(r)
                        self.sent += 1
                except Exception:  # a bad reading is dropped; the engine holds meanwhile
                    pass
        self._thread = threading.Thread(target=loop, name="listen-link", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(4.0)
        self._end_process()
        for block in (self.block, self.handover):
            if block.slots is not None:
                block.close()

    def __enter__(self) -> "Listener":
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.close()
