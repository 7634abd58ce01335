"""A frame-accurate JACK MIDI recorder and sender, for the tests and benchmarks of drummachine's
MIDI over JACK. Independent of the code measured: JACK-Client (cffi) for the client and its ports,
libjack itself (ctypes) for JACK's clock.

Each event recorded carries its frame and two readings of when that frame is:
- ``wall_us``: the recorder's own wake-up in that period (``jack_get_time()`` when its callback
  began) plus the event's offset at the sample rate: when the period was really processed. On a
  sound card this is the DLL's time plus the scheduling latency; on the dummy backend of a loaded
  host, where the DLL strays by tens of ms, it is the only reading that means anything;
- ``dll_us``: JACK's DLL for the period (``jack_get_cycle_times``) plus the offset.

    python benchmarks/jack_midi_probe.py record CLIENT OUT.txt   # a recorder in its own process
    python benchmarks/jack_midi_probe.py send CLIENT             # a sender: a message a line (decimal bytes)
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

_libjack = None


def libjack():
    global _libjack
    if _libjack is None:
        lib = ctypes.CDLL("libjack.so.0")
        lib.jack_get_time.restype = ctypes.c_uint64
        lib.jack_get_cycle_times.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32),
                                             ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64),
                                             ctypes.POINTER(ctypes.c_float)]
        _libjack = lib
    return _libjack


def jack_now_us() -> int:
    """Now on JACK's clock. Only with a JACK client open in this process (libjack sets its clock up
    when a client opens; before that, jack_get_time crashes)."""
    return int(libjack().jack_get_time())


class JackClock:
    """A clock on JACK's time (seconds): what the probes' times are on."""

    def now(self) -> float:
        return jack_now_us() / 1e6


def _pointer(client) -> int:
    import jack

    return int(jack._ffi.cast("uintptr_t", client._ptr))


def monotonic_minus_jack() -> float:
    """time.monotonic() less JACK's clock (jack_get_time() reads CLOCK_MONOTONIC_RAW; the two
    differ by a constant and NTP's slewing of the one)."""
    return time.monotonic() - time.clock_gettime(time.CLOCK_MONOTONIC_RAW)


class Recorder:
    """A JACK MIDI input ``CLIENT:rx``; ``events``: (frame, wall_us, dll_us, bytes, the period's first
    frame) per event. ``sink``: a list that also gets ``(time.monotonic() of the event's frame,
    [bytes...])`` per event, as they arrive (for tests that compare with when they asked).

    The tests' and benchmarks' recorder (not python-rtmidi's MidiIn: its JACK input crashed the
    process now and then, SIGSEGV in JACK's thread, in CI and in the hour's soak)."""

    def __init__(self, name: str, port: str = "rx", sink: list | None = None):
        import jack

        self.client = jack.Client(name, no_start_server=True)
        self.port = self.client.midi_inports.register(port)
        self.rate = self.client.samplerate
        self.events: list[tuple[int, float, float, bytes, int]] = []
        self.periods = 0
        self._ptr = _pointer(self.client)
        lib = libjack()
        f0, t0, t1, per = ctypes.c_uint32(), ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_float()

        @self.client.set_process_callback
        def process(frames):
            wake = lib.jack_get_time()
            self.periods += 1
            events = list(self.port.incoming_midi_events())
            if not events:
                return
            lib.jack_get_cycle_times(self._ptr, ctypes.byref(f0), ctypes.byref(t0), ctypes.byref(t1), ctypes.byref(per))
            us_per_frame = (t1.value - t0.value) / frames
            to_monotonic = monotonic_minus_jack()
            for offset, data in events:
                wall = wake + offset * 1e6 / self.rate
                self.events.append((f0.value + offset, wall, t0.value + offset * us_per_frame, bytes(data), f0.value))
                if sink is not None:
                    sink.append((wall / 1e6 + to_monotonic, list(bytes(data))))

        self.client.activate()
        self.name = f"{self.client.name}:{port}"

    def close(self) -> None:
        try:
            self.client.deactivate()
            self.client.close()
        except Exception:
            pass


class Sender:
    """A JACK MIDI output ``CLIENT:tx`` that writes each queued message at a given frame offset of
    the next period, or raw bytes as they come (garbage included). ``sent``: (frame, wall_us,
    dll_us, bytes) of each written."""

    PER_PERIOD = 64  #: at most this many messages a period (a JACK MIDI buffer is bounded)

    def __init__(self, name: str, port: str = "tx"):
        import jack

        self.client = jack.Client(name, no_start_server=True)
        self.port = self.client.midi_outports.register(port)
        self.rate = self.client.samplerate
        self.queue: deque = deque()  # (offset or None, bytes): the offsets of one batch ascending
        self.sent: list[tuple[int, float, float, bytes]] = []
        self.lock = threading.Lock()
        self._ptr = _pointer(self.client)
        lib = libjack()
        f0, t0, t1, per = ctypes.c_uint32(), ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_float()

        @self.client.set_process_callback
        def process(frames):
            wake = lib.jack_get_time()
            self.port.clear_buffer()
            if not self.queue:
                return
            lib.jack_get_cycle_times(self._ptr, ctypes.byref(f0), ctypes.byref(t0), ctypes.byref(t1), ctypes.byref(per))
            us_per_frame = (t1.value - t0.value) / frames
            last, written = 0, 0
            while self.queue and written < self.PER_PERIOD:
                offset, data = self.queue[0]
                offset = last if offset is None else offset
                if offset < last or offset >= frames:
                    break  # the next batch: the next period
                self.queue.popleft()
                self.port.write_midi_event(offset, data)
                last, written = offset, written + 1
                self.sent.append((f0.value + offset, wake + offset * 1e6 / self.rate,
                                  t0.value + offset * us_per_frame, bytes(data)))

        self.client.activate()
        self.name = f"{self.client.name}:{port}"

    def send(self, batch: list[tuple[int | None, bytes]]) -> None:
        """Messages for one period: (frame offset, bytes), offsets ascending (None: as the one before)."""
        self.queue.extend(batch)

    def close(self) -> None:
        try:
            self.client.deactivate()
            self.client.close()
        except Exception:
            pass


def record_to_file(client: str, out: str) -> None:
    """In a process of its own (the benchmark): record until SIGTERM, write the events as lines
    ``frame wall_us dll_us byte...``."""
    rec = Recorder(client)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    while not done.is_set():
        time.sleep(0.2)
    rec.close()
    with open(out + ".part", "w") as f:
        for frame, wall, dll, data, first in rec.events:
            f.write(f"{frame} {wall:.1f} {dll:.1f} {first} {' '.join(str(b) for b in data)}\n")
    os.replace(out + ".part", out)


def read_recording(path) -> list[tuple[int, float, float, bytes, int]]:
    """A recorder process's file as ``Recorder.events``."""
    events = []
    for line in Path(path).read_text().splitlines():
        frame, wall, dll, first, *data = line.split()
        events.append((int(frame), float(wall), float(dll), bytes(int(b) for b in data), int(first)))
    return events


class RecorderProcess:
    """A recorder in a process of its own (its callback then never waits for the measured
    process's interpreter lock); ``stop()`` returns its events."""

    def __init__(self, name: str, folder, env=None):
        self.out = str(Path(folder) / f"{name}.rec")
        self.name = f"{name}:rx"
        self.proc = subprocess.Popen([sys.executable, __file__, "record", name, self.out], env=env,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the recorder did not start")
        self.rate = 48000
        self.events: list = []

    def stop(self) -> list:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.events = read_recording(self.out) if Path(self.out).exists() else []
        return self.events


def send_from_stdin(client: str) -> None:
    """In a process of its own: each line of stdin is one message (decimal bytes), sent in the
    next period; "ready" once the port is there; ends at the end of stdin."""
    sender = Sender(client)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.split():
            sender.send([(None, bytes(int(b) for b in line.split()))])
    time.sleep(0.1)
    sender.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "record":
        record_to_file(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "send":
        send_from_stdin(sys.argv[2])
    else:
        sys.exit(__doc__)
