"""The engine's end of listening: starts the listening process, reads its readings on the engine's
clock, and hands them to the engine as ``band`` commands (a small thread, 100 times a second).

The readings' times are on the monotonic clock; the engine's clock is the mixer's sample counter
(or the monotonic clock itself). A reading is put on the engine's clock from where both clocks
are when it is read, at the rate the engine's clock runs against the monotonic one (measured:
a sound card's clock is not the computer's), and its tempo in beats per engine-clock minute.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time

from drummachine.core.errors import DrumMachineError
from drummachine.core.follow import BandReading
from drummachine.listen import shared
from drummachine.listen.inputs import find_input

LINK_SECONDS = 0.01
#: the engine gets a reading at most this often: the listening process publishes one every ~10 ms
#: but the tracker's estimate moves every 50 ms, and the follower counts readings (4 sure ones to
#: lock, 2 to re-lock: tuned on readings 50 ms apart, benchmarks/follow.py --replay); at 100 a
#: second the same estimate counted 5 times and the lock came on one tracker update
HAND_SECONDS = 0.05
#: the engine's clock (the mixer's sample counter) may run at another rate than the computer's:
#: measured from this long on (JACK's dummy driver on a busy machine: 0.5% slow)
RATE_AFTER_SECONDS = 5.0


class Listener:
    """``--listen PORT``: a listening process and its readings. A context manager."""

    def __init__(self, port: str, bpm: float, clock, window: float = 0.15, client: str = "drummachine-listen",
                 gate_db: float | None = None):
        self.input = find_input(port)
        self.clock = clock
        self.block = shared.ReadingBlock()
        self.block.slots[shared.PRIOR] = bpm
        setup = {"shm": self.block.name, "backend": self.input.backend, "port": self.input.name,
                 "device": self.input.index, "bpm": bpm, "window": window, "client": client, "gate_db": gate_db,
                 # a JACK port through PortAudio (no Python in JACK's real-time thread), or
                 # "callback": JACK-Client's Python callback (the benchmark compares the two)
                 "capture": os.environ.get("DRUMMACHINE_LISTEN_CAPTURE", "portaudio")}
        self.proc = subprocess.Popen([sys.executable, "-m", "drummachine.listen.process"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write(json.dumps(setup) + "\n")
        self.proc.stdin.flush()
        self.rate = 0
        self.latency = 0.0
        self.capture = ""  #: how the listening process captures: portaudio, callback or sounddevice
        self._thread = None
        self._stop = threading.Event()
        self.sent = 0
        self._origin = None  # (engine clock, monotonic) at the first reading
        self.clock_rate = 1.0  #: engine-clock seconds per monotonic second

    def wait_ready(self, timeout: float = 10.0) -> "Listener":
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else ""
        try:
            reply = json.loads(line) if line else {"error": "the listening process did not answer"}
        except json.JSONDecodeError:
            reply = {"error": f"the listening process said {line.strip()[:120]!r}"}
        if "error" in reply:
            self.close()
            raise DrumMachineError("--listen", reply["error"])
        self.rate, self.latency = int(reply["rate"]), float(reply["latency"])
        self.capture = reply.get("capture", "")
        return self

    def set_tempo(self, bpm: float) -> None:
        """The tempo the engine plays: the tracker looks for the band around it."""
        if self.block.slots is not None:
            self.block.slots[shared.PRIOR] = bpm

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
        if not self.alive:
            return "listener stopped"
        return shared.STATUSES.get(int(self.block.read()[shared.STATUS]), "?")

    def cpu_seconds(self) -> float:
        return float(self.block.read()[shared.CPU])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    # --- the link to the engine -------------------------------------------------------------
    def link(self, send) -> None:
        """Hand each new reading to ``send(reading)`` (e.g. ``lambda r: engine.command("band", r)``)."""
        def loop():
            last, handed = -1, 0.0
            while not self._stop.wait(LINK_SECONDS):
                try:
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
            self._thread.join(1.0)
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(3.0)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self.block.slots is not None:
            self.block.close()

    def __enter__(self) -> "Listener":
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.close()
