"""MIDI ports through python-rtmidi or drummachine's own JACK client: the ports, and the output
of notes and clock (the controllers' input: midi.midi_in).

The API (JACK or ALSA) is chosen by flag, config or the ``DRUMMACHINE_MIDI_API`` environment
variable, never guessed silently: ALSA is the default on a Raspberry Pi, JACK where a JACK
server runs. A port is named by its full name or any unique part of it. A port that is missing
or disappears is reported, playing goes on, and it is reconnected when it comes back.
"""

from __future__ import annotations

import heapq
import json
import os
import logging
import threading
import time
from typing import Callable

from drummachine.core.engine import real_time_thread
from drummachine.core.events import Event, Sink
from drummachine.core.errors import DrumMachineError
from drummachine.core.jack_names import CLIENT
from drummachine.core.notemap import GM_NOTEMAP, NoteMap
from drummachine.midi import jack_midi
from drummachine.midi.jack_midi import find_port  # one port-name lookup for both kinds of port
from drummachine.midi.jack_port import JackPort, WatchedPort
from drummachine.midi.jack_server import PORTS, drop_clients_of_a_gone_server

log = logging.getLogger("drummachine")
APIS = {"jack": "API_UNIX_JACK", "alsa": "API_LINUX_ALSA"}
NOTE_SECONDS = 0.05  #: note-off after 50 ms: drum modules ignore note length, samplers do not

PANIC = 0x100  #: an internal marker in the send queue: all notes off now
#: the engine's clock events and their MIDI status bytes (sent with --clock-out)
CLOCK_STATUS = {"clock": 0xF8, "start": 0xFA, "stop": 0xFC, "continue": 0xFB}


def own_jack_client(api: str) -> bool:
    """MIDI over JACK through drummachine's own client (``midi.jack_midi``: one client for every
    port, a C process callback), where it is built and libjack loads; else python-rtmidi."""
    return api == "jack" and jack_midi.available()


def api_name(requested: str | None = None) -> str:
    name = (requested or os.environ.get("DRUMMACHINE_MIDI_API") or "").lower()
    if not name:
        name = "jack" if _jack_running() else "alsa"
    if name not in APIS:
        raise DrumMachineError("--midi-api", f"{name!r}; allowed: {', '.join(APIS)}")
    return name


def _jack_running() -> bool:
    try:
        import rtmidi

        probe = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, CLIENT + "-probe")
        ok = True
        del probe
        return ok
    except Exception:
        return False


def _rtmidi_api(name: str):
    import rtmidi

    api = getattr(rtmidi, APIS[name])
    if api not in rtmidi.get_compiled_api():
        raise DrumMachineError("--midi-api", f"{name} is not compiled into python-rtmidi here")
    return api


def list_ports(api: str, direction: str = "out") -> list[str]:
    import rtmidi

    try:
        cls = rtmidi.MidiOut if direction == "out" else rtmidi.MidiIn
        port = cls(_rtmidi_api(api), CLIENT + "-list")
        names = port.get_ports()
        port.delete()
        return names
    except DrumMachineError:
        raise
    except Exception as exc:
        raise DrumMachineError(f"MIDI ({api})", f"cannot reach the MIDI system: {exc}") from None


class _Port(WatchedPort):
    """Opens (and re-opens) one rtmidi port by name; ``connected`` says whether it is there now."""

    def __init__(self, direction: str, api: str, wanted: str | None, label: str, on_open=None):
        self.direction, self.api, self.wanted, self.label = direction, api, wanted, label
        self.port = None
        self.connected = False
        self.message = ""
        self.on_open = on_open
        #: the one rtmidi client of this port, kept while the port comes and goes: it opens the port
        #: and lists the system's ports for the watch (each rtmidi object is a client in the JACK
        #: graph, one more the server waits for every period, so no second one for the watch)
        self.client = None
        self.closed = False  #: for good: a watch that wakes after the close must not open a client again
        self._lock = threading.Lock()
        PORTS.add(self)

    def open(self, strict: bool = False) -> bool:
        with self._lock:
            if self.closed:
                return False
            self.close_port()
            try:
                port = self._client()
                if self.wanted:
                    index = find_port(port.get_ports(), self.wanted, self.label)
                    port.open_port(index, self.label)
                else:
                    port.open_virtual_port(self.label)
            except DrumMachineError as exc:
                self.message = str(exc)
                if strict:
                    raise
                return False
            except Exception as exc:
                self._drop_client_if_dead()
                self.message = f"{self.label}: {exc}"
                if strict:
                    raise DrumMachineError(self.label, str(exc)) from None
                return False
            self.port = port
            self.connected = True
            self.message = ""
            if self.on_open:
                self.on_open(port)
            return True

    def _client(self):
        import rtmidi

        if self.client is None:
            if self.direction == "out":
                self.client = rtmidi.MidiOut(_rtmidi_api(self.api), CLIENT)
            else:  # room for a burst of a second's messages between two reads
                self.client = rtmidi.MidiIn(_rtmidi_api(self.api), CLIENT, queue_size_limit=16384)
        return self.client

    def _drop_client_if_dead(self) -> None:
        """After a failed open: a port that went away between the listing and the connection leaves
        the client good; a client whose server went away is no use, a new one is made next time."""
        try:
            if self.client is not None:
                self.client.get_ports()
                return
        except Exception:
            pass
        self._drop_client()

    def server_gone(self) -> None:
        """Its JACK server went away: the client is dead; the watch makes a new one when it can."""
        with self._lock:
            self._drop_client()
            self.message = f"{self.wanted or self.label}: the JACK server went away; will reconnect"

    def _drop_client(self) -> None:
        client, self.client, self.port, self.connected = self.client, None, None, False
        if client is not None:
            try:
                client.close_port()
                client.delete()
            except Exception:
                pass

    def present(self) -> bool:
        """Is the wanted port still in the system's list? Asked through this port's own client:
        opening a JACK client every second would reorder the server's graph every second."""
        if not self.wanted:
            return True
        try:
            with self._lock:
                if self.closed:
                    return False
                find_port(self._client().get_ports(), self.wanted, self.label)
            return True
        except DrumMachineError:
            return False
        except Exception:  # a listing can fail while the graph changes: the client is dropped only if dead
            with self._lock:
                self._drop_client_if_dead()
            return False

    def check(self, close_when_gone: bool) -> None:
        """Notice a port that went away (say so) and reconnect when it is back."""
        drop_clients_of_a_gone_server(self.api)
        if not self.wanted:  # a port of our own (virtual): open it again after a server restart
            if not self.connected:
                self.open()
            return
        present = self.present()
        if self.connected and not present:
            if close_when_gone:
                with self._lock:  # the reader may be reading it
                    self.close_port()
            self.connected = False
            self.message = f"{self.wanted}: disconnected; will reconnect when it is back"
        elif not self.connected and present:
            self.open()

    def close_port(self) -> None:
        """Close the port; the client stays to list ports and to open it again."""
        if self.port is not None:
            try:
                self.port.close_port()
            except Exception:
                pass
        self.port = None
        self.connected = False

    def close(self) -> None:
        """The port and its client, for good."""
        with self._lock:
            self.closed = True
            self._drop_client()


class MidiOutSink(Sink):
    """Sends notes (through an output note map) and optionally MIDI clock, each at its time.

    Over JACK with drummachine's own client: each message goes into the client's ring with its
    time as it is handed out, and the C callback writes it at its frame (no thread of ours sends).
    Through rtmidi: a dispatcher thread sleeps until just before each event and sends it; it asks
    for real-time scheduling when the system allows it.

    ``latency_s`` (``--midi-latency``): how long the drum module (and its MIDI interface) takes from
    a note-on to its sound; each note goes out that much before its time, so it sounds on it, as
    the kit's hits go to the mixer its output latency early. Over JACK, JACK's own figure for the
    path from the port on (``graph_latency_s``: a MIDI interface's buffering, or a synth client's
    audio out to the sound card) is added, read once a second; ``on_ahead()`` when it changes. The
    MIDI clock and the transport's messages keep their times: they are timing, for whatever else
    listens to them.
    """

    def __init__(self, api: str, port: str | None, clock, notemap: NoteMap = GM_NOTEMAP,
                 channel: int | None = None, send_clock: bool = False, realtime: bool = True,
                 on_sent: Callable[[float, list[int]], None] | None = None, strict: bool = True,
                 latency_s: float = 0.0):
        self.jack = own_jack_client(api)
        self.latency_s = float(latency_s)
        label = "drums out" if port else "out"
        self.port = JackPort("out", port, label) if self.jack else _Port("out", api, port, label)
        self.on_ahead: Callable[[], None] | None = None
        if self.jack:
            self.port.on_latency = self._graph_latency_changed
        self.clock = clock
        self.notemap = notemap
        self.channel = (channel or notemap.channel) - 1
        self.send_clock = send_clock
        self.realtime = realtime
        self.on_sent = on_sent
        self.heap: list[tuple[float, int, list[int]]] = []
        self.seq = 0
        self.cv = threading.Condition()
        self.running = True
        self.sounding: set[int] = set()
        self.faults = Faults()
        # strict: a named port that is not there is an error (nothing else to play through);
        # otherwise it is reported and watched for
        self.port.open(strict=bool(port) and strict)
        self.thread = None  # the C callback sends: no dispatcher thread
        if not self.jack:
            self.thread = threading.Thread(target=self._run, name="midi-out", daemon=True)
            self.thread.start()
        self.watch = threading.Thread(target=self._watch, name="midi-out-watch", daemon=True)
        self.watch.start()

    @property
    def connected(self) -> bool:
        return self.port.connected

    @property
    def graph_latency_s(self) -> float:
        """JACK's playback latency of the port: from the port to the outside world."""
        return self.port.playback_latency_s if self.jack else 0.0

    @property
    def ahead_s(self) -> float:
        """How long before its time each note is sent: the module's latency and JACK's path to it."""
        return self.latency_s + self.graph_latency_s

    def _graph_latency_changed(self, seconds: float) -> None:
        log.info("MIDI out: JACK reckons %.1f ms from the port to the outside world (its playback latency, "
                 "through %s); each note sent %.1f ms before its time", seconds * 1000,
                 self.port.target or "its connections", self.ahead_s * 1000)
        if self.on_ahead is not None:
            self.on_ahead()

    def _push(self, t: float, msg: list[int]) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, msg))

    def _messages(self, events: list[Event]) -> list[tuple[float, list[int]]]:
        """Each event's messages with their times: a note's on and off; the clock and the
        transport's start, stop and continue when it sends clock."""
        rows = []
        early = self.ahead_s
        for e in events:
            if e.kind == "note":
                note = self.notemap.notes[e.voice]
                vel = max(1, min(127, int(round(e.velocity * 127))))
                rows.append((e.time - early, [0x90 | self.channel, note, vel]))
                rows.append((e.time - early + NOTE_SECONDS, [0x80 | self.channel, note, 0]))
            elif self.send_clock and e.kind in CLOCK_STATUS:
                rows.append((e.time, [CLOCK_STATUS[e.kind]]))
        return rows

    def send(self, events: list[Event]) -> None:
        if self.jack:
            self._queue(events)
            return
        with self.cv:
            for t, msg in self._messages(events):
                self._push(t, msg)
            self.cv.notify()

    def _queue(self, events: list[Event]) -> None:
        """Own JACK client: every message into the ring now, with its time."""
        rows = self._messages(events)
        if not rows:
            return
        with self.cv:  # the ring takes one writer at a time
            self.port.send([(t, bytes(msg)) for t, msg in rows], self.clock.now())
        if self.on_sent:  # the schedule log (benchmarks, tests): each message with the time it is due
            for t, msg in rows:
                try:
                    self.on_sent(t, msg)
                except Exception:
                    self.faults.caught("midi-out", "schedule log")

    def _write(self, msg: list[int]) -> None:
        if msg[0] == PANIC:
            for note in list(self.sounding):
                self._write([0x80 | self.channel, note, 0])
            self._write([0xB0 | self.channel, 123, 0])  # all notes off
            return
        # under the port's lock: the watch closes and reopens the port in its own thread, and
        # closing an rtmidi port while another thread sends on it crashes the process (the soak)
        with self.port._lock:
            port = self.port.port
            if port is None:
                return
            try:
                port.send_message(msg)
            except Exception:
                self.port.connected = False
                return
        if msg[0] & 0xF0 == 0x90:
            self.sounding.add(msg[1])
        elif msg[0] & 0xF0 == 0x80:
            self.sounding.discard(msg[1])

    def _run(self) -> None:
        if self.realtime:
            real_time_thread("midi out", 70)
        while self.running:
            try:
                self._dispatch()
            except Exception:  # the dispatcher never dies: what failed is logged and counted
                self.faults.caught("midi-out", "dispatch")
                time.sleep(0.001)

    def _dispatch(self) -> None:
        """Wait for the next event's time, then send everything that is due."""
        with self.cv:
            if not self.heap:
                self.cv.wait(0.05)
                return
            t = self.heap[0][0]
            wait = t - self.clock.now()
            if wait > 0.0015:
                self.cv.wait(wait - 0.001)
                return
        while True:  # the last millisecond in short sleeps (a busy loop would hold the GIL)
            left = t - self.clock.now()
            if left <= 0:
                break
            time.sleep(min(0.0002, left))
        with self.cv:
            due = []
            now = self.clock.now()
            while self.heap and self.heap[0][0] <= now:
                due.append(heapq.heappop(self.heap))
        for when, _, msg in due:
            if self.on_sent and msg[0] != PANIC:  # the schedule log (benchmarks, tests)
                self.on_sent(when, msg)
            self._write(msg)

    def _watch(self) -> None:
        self.port.watch(lambda: self.running, False, self.faults, "midi-out")

    def panic(self) -> None:
        """Drop the notes still to come and turn off what sounds. Only the dispatcher thread writes
        to the port (a JACK port's buffer takes one writer), so this is queued for it, first. With
        the own JACK client, the C callback drops them and sends the note-offs itself."""
        if self.jack:
            with self.cv:
                self.port.flush_notes()
                self.port.send([(None, bytes([0xB0 | self.channel, 123, 0]))], self.clock.now())
            return
        with self.cv:
            self.heap = [h for h in self.heap if h[2][0] >= 0xF0 and h[2][0] != PANIC]  # keep clock/start/stop
            heapq.heapify(self.heap)
            self._push(float("-inf"), [PANIC])
            self.cv.notify()

    def stats(self) -> dict[str, int]:
        """The own JACK client's counts since its port was last opened (the notes written, handed
        over late, left out as stale; the periods placed by the wake-up instead of JACK's clock);
        empty through rtmidi."""
        return {**self.port.stats(), **self.port.client.timing()} if self.jack else {}

    def close(self) -> None:
        self.panic()
        if self.jack:
            time.sleep(0.03)  # a few periods: the callback writes the note-offs before the port goes
            self.running = False
            log.info("MIDI out (own JACK client): %s", json.dumps(self.stats()))
            self.port.close()
            return
        deadline = time.monotonic() + 0.5
        while self.heap and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.002)
        self.running = False
        with self.cv:
            self.cv.notify()
        self.thread.join(timeout=1.0)
        time.sleep(0.02)  # let the server deliver the last messages before the port goes away
        self.port.close()


class Faults:
    """Exceptions a MIDI thread caught and lived through: counted, the first ones logged in full."""

    LOGGED = 20

    def __init__(self):
        self.count = 0

    def caught(self, thread: str, what: str) -> None:
        self.count += 1
        if self.count <= self.LOGGED:
            log.exception("%s thread: %s (caught, going on; %d so far)", thread, what, self.count)
