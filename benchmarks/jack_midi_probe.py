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
    python benchmarks/jack_midi_probe.py stream CLIENT PORT      # one that writes each event to stdout
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
from collections import defaultdict, deque
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
        lib.jack_last_frame_time.restype = ctypes.c_uint32
        lib.jack_last_frame_time.argtypes = [ctypes.c_void_p]
        _libjack = lib
    return _libjack


def jack_now_us() -> int:
    """Now on JACK's clock. Only with a JACK client open in this process (libjack sets its clock up
    when a client opens; before that, jack_get_time crashes)."""
    return int(libjack().jack_get_time())



def read_schedule(path: Path) -> dict[tuple[int, int, int], list[float]]:
    """A ``play --midi-schedule`` file (a line per message: its due time, then its bytes): the due
    times of each three-byte message, sorted."""
    due: dict = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                due[(int(parts[1]), int(parts[2]), int(parts[3]))].append(float(parts[0]))
    for times in due.values():
        times.sort()
    return due


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
    [bytes...])`` per event, as they arrive (for tests that compare with when they asked); with
    ``server_clock``, ``(that, [bytes...], the frame's time on the server's clock)``.

    The two readings of a frame's time: "wall" is when this callback woke plus the frame's offset
    (what the tests have always compared), "server" is where JACK's clock (its DLL, the one every
    client of the period is given) puts the frame: where a sound card would play it. A sender that
    places its messages by the server's clock lands on it to the frame; the wall reading adds how
    late this recorder woke in the period, which is the host's and the graph's order's, not the
    sender's (an hour's soak saw it step by 1 ms for 200 s, for every sender at once).

    The tests' and benchmarks' recorder (not python-rtmidi's MidiIn: its JACK input crashed the
    process now and then, SIGSEGV in JACK's thread, in CI and in the hour's soak)."""

    def __init__(self, name: str, port: str = "rx", sink: list | None = None, server_clock: bool = False):
        import jack

        self.client = jack.Client(name, no_start_server=True)
        self.port = self.client.midi_inports.register(port)
        self.rate = self.client.samplerate
        self.events: list[tuple[int, float, float, bytes, int]] = []
        self.periods = 0
        # No xrun callback: JACK calls it from its notification thread, and as Python it takes the
        # interpreter lock the process callback then waits for, longer than a period (the switch
        # interval is 5 ms): late, so another xrun, so another call. A soak's recorder was blamed by
        # jackd 1,555 times in 3 minutes that way, "not finished, state = Triggered", and read as a
        # stalled recorder for the rest of a run. The same is why the switch interval is short here:
        # the callback waits at most that long for the lock the main thread holds.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        # periods this recorder itself never processed (its callback late by a period or more: what
        # was written to its port in those periods was overwritten before it read it). Its own
        # loss, not the measured sender's: the tests tolerate a loss only where this is not 0.
        self.skipped = 0
        self._last_first: int | None = None
        #: (policy, priority) of the thread JACK calls this recorder in, read in its first call: a
        #: recorder whose thread is not real-time is late under load (the soak reports it beside a stall)
        self.scheduling: tuple[int, int] | None = None
        self._ptr = _pointer(self.client)
        lib = libjack()
        f0, t0, t1, per = ctypes.c_uint32(), ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_float()

        @self.client.set_process_callback
        def process(frames):
            wake = lib.jack_get_time()
            self.periods += 1
            if self.scheduling is None:
                self.scheduling = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
            first = lib.jack_last_frame_time(self._ptr)
            if self._last_first is not None:
                self.skipped += max(0, ((first - self._last_first) % 2**32) // frames - 1)
            self._last_first = first
            events = list(self.port.incoming_midi_events())
            if not events:
                return
            lib.jack_get_cycle_times(self._ptr, ctypes.byref(f0), ctypes.byref(t0), ctypes.byref(t1), ctypes.byref(per))
            us_per_frame = (t1.value - t0.value) / frames
            to_monotonic = monotonic_minus_jack()
            for offset, data in events:
                wall = wake + offset * 1e6 / self.rate
                server = t0.value + offset * us_per_frame
                self.events.append((f0.value + offset, wall, server, bytes(data), f0.value))
                if sink is None:
                    continue
                if server_clock:
                    sink.append((wall / 1e6 + to_monotonic, list(bytes(data)), server / 1e6 + to_monotonic))
                else:
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
        f.write(f"# skipped {rec.skipped}\n")
        f.writelines(_event_line(e) for e in rec.events)
    os.replace(out + ".part", out)


def read_recording(path) -> list[tuple[int, float, float, bytes, int]]:
    """A recorder process's file as ``Recorder.events``."""
    events = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            events.append(_parse_event(line))
    return events


def _event_line(event) -> str:
    frame, wall, dll, data, first = event
    return f"{frame} {wall:.1f} {dll:.1f} {first} {' '.join(str(b) for b in data)}\n"


def _parse_event(line: str) -> tuple[int, float, float, bytes, int]:
    frame, wall, dll, first, *data = line.split()
    return int(frame), float(wall), float(dll), bytes(int(b) for b in data), int(first)


def stream_to_stdout(client: str, port: str) -> None:
    """In a process of its own: record until SIGTERM, each event a line on stdout within about
    20 ms of its period; last a line ``# skipped S periods P``."""
    rec = Recorder(client, port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"ready {rec.rate} {rec.name}", flush=True)
    written = 0
    while True:
        stopping = done.wait(0.02)
        if stopping:
            rec.close()  # no event after this one's last look
        upto = len(rec.events)
        if upto > written:
            sys.stdout.write("".join(_event_line(e) for e in rec.events[written:upto]))
            sys.stdout.flush()
            written = upto
        if stopping:
            break
    print(f"# skipped {rec.skipped} periods {rec.periods}", flush=True)


class RecorderProcess:
    """A recorder in a process of its own, so that its callback never waits for the interpreter
    lock of the process under test (a recorder late by a period loses what was written in it):
    ``events`` as ``Recorder.events``, filling as they come; ``sink`` as ``Recorder``'s. After
    ``stop()``: ``skipped`` (periods the recorder itself missed: the only loss a test
    may put down to the host) and ``periods``."""

    def __init__(self, name: str, env=None, port: str = "rx", sink: list | None = None):
        self.proc = subprocess.Popen([sys.executable, __file__, "stream", name, port], env=env,
                                     stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().split()
        if ready[:1] != ["ready"]:
            self.proc.kill()
            raise RuntimeError(f"the recorder {name} did not start")
        self.rate, self.name = int(ready[1]), ready[2]
        self.events: list = []
        self.skipped = self.periods = 0
        self._sink = sink
        self._to_monotonic = monotonic_minus_jack()
        self._reader = threading.Thread(target=self._read, name=f"recorder {name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("# skipped"):
                _, _, skipped, _, periods = line.split()
                self.skipped, self.periods = int(skipped), int(periods)
                continue
            event = _parse_event(line)
            self.events.append(event)
            if self._sink is not None:
                self._sink.append((event[1] / 1e6 + self._to_monotonic, list(event[3])))

    def stop(self) -> list:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
        return self.events

    close = stop


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
    if len(sys.argv) == 4 and sys.argv[1] == "stream":
        stream_to_stdout(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "record":
        record_to_file(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "send":
        send_from_stdin(sys.argv[2])
    else:
        sys.exit(__doc__)
