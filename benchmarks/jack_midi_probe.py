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
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
import time
from collections import deque

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
    return int(libjack().jack_get_time())


class JackClock:
    """A clock on JACK's time (seconds): what the probes' times are on."""

    def now(self) -> float:
        return jack_now_us() / 1e6


def _pointer(client) -> int:
    import jack

    return int(jack._ffi.cast("uintptr_t", client._ptr))


class Recorder:
    """A JACK MIDI input ``CLIENT:rx``; ``events``: (frame, wall_us, dll_us, bytes) per event."""

    def __init__(self, name: str, port: str = "rx"):
        import jack

        self.client = jack.Client(name, no_start_server=True)
        self.port = self.client.midi_inports.register(port)
        self.rate = self.client.samplerate
        self.events: list[tuple[int, float, float, bytes]] = []
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
            for offset, data in events:
                self.events.append((f0.value + offset, wake + offset * 1e6 / self.rate,
                                    t0.value + offset * us_per_frame, bytes(data)))

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
            last = 0
            while self.queue:
                offset, data = self.queue[0]
                offset = last if offset is None else offset
                if offset < last or offset >= frames:
                    break  # the next batch: the next period
                self.queue.popleft()
                self.port.write_midi_event(offset, data)
                last = offset
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
    with open(out, "w") as f:
        for frame, wall, dll, data in rec.events:
            f.write(f"{frame} {wall:.1f} {dll:.1f} {' '.join(str(b) for b in data)}\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "record":
        record_to_file(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
