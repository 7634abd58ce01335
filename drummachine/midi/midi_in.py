"""MIDI in: a controller or a MIDI clock source, each message to a handler with its time.

Through drummachine's own JACK client (midi.jack_midi) where it is built, else python-rtmidi's
port (midi.ports). An unplugged controller is reported and reconnected; a bad message or a
reader's fault is counted and the input goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from drummachine.midi import jack_midi
from drummachine.midi.jack_port import JackPort
from drummachine.midi.ports import Faults, _Port, own_jack_client

log = logging.getLogger("drummachine")


class MidiInput:
    """A controller (or a MIDI clock source): every message goes to ``handler(message, time)``.

    Over JACK with drummachine's own client, the C callback queues each event with its frame's
    time, and the reader thread puts that on ``clock``. Through rtmidi:

    Read by a thread of ours from rtmidi's queue, not through an rtmidi callback: the callback runs
    in the JACK client's process thread and would wait there for Python's interpreter lock, so the
    server's period would wait on whatever Python is doing (messages lost and repeated under load,
    and jackd blaming drummachine). The queue is filled by rtmidi's C code alone."""

    POLL_SECONDS = 0.001

    def __init__(self, api: str, port: str | None, handler: Callable[[list[int], float], None], clock,
                 label: str = "control in"):
        self.handler = handler
        self.clock = clock
        self.faults = Faults()
        self.dropped = 0  #: events that were not MIDI bytes
        self.jack = own_jack_client(api)
        self.port = JackPort("in", port, label, ignore=jack_midi.IGNORE_SYSEX | jack_midi.IGNORE_ACTIVE_SENSE) \
            if self.jack else _Port("in", api, port, label, on_open=self._attach)
        self.running = True
        self.port.open(strict=False)
        self.reader = threading.Thread(target=self._read, name="midi-in", daemon=True)
        self.reader.start()
        self.watch = threading.Thread(target=self._watch, name="midi-in-watch", daemon=True)
        self.watch.start()

    @property
    def connected(self) -> bool:
        return self.port.connected

    @property
    def message(self) -> str:
        return self.port.message

    @staticmethod
    def _attach(port) -> None:
        port.ignore_types(sysex=True, timing=False, active_sense=True)

    def _read(self) -> None:
        if self.jack:
            self._read_jack()
            return
        while self.running:
            try:
                batch = self._drain()
            except Exception:  # a port closing under the reader: it goes on with the next
                self.faults.caught("midi-in", "read")
                batch = []
            if batch:
                self._deliver(batch)
            time.sleep(self.POLL_SECONDS)

    def _read_jack(self) -> None:
        while self.running:
            try:
                batch, now_us = self.port.receive()
                if batch:
                    now = self.clock.now()
                    for message, usecs in batch:  # each at its frame's time, on the engine's clock
                        self._handle((message, 0.0), now - (now_us - usecs) / 1e6)
            except Exception:  # a port closing under the reader: it goes on with the next
                self.faults.caught("midi-in", "read")
            time.sleep(self.POLL_SECONDS)

    def _drain(self) -> list:
        batch = []
        # under the port's lock: the watch closes, deletes and reopens the rtmidi client in its own
        # thread, and reading a port closed or deleted meanwhile crashes the process (the soak did)
        with self.port._lock:
            port = self.port.port
            while port is not None and len(batch) < 4096:
                event = port.get_message()
                if event is None:
                    break
                batch.append(event)
        return batch

    def _deliver(self, batch: list) -> None:
        """The messages of one read, each at its time: the last one now (within a poll), the ones
        before it earlier by the gaps rtmidi measured between them on arrival."""
        now = self.clock.now()
        gaps = [max(0.0, float(e[1])) if isinstance(e, (tuple, list)) and len(e) == 2 and
                isinstance(e[1], (int, float)) else 0.0 for e in batch]
        since = 0.0
        times = []
        for k in range(len(batch) - 1, -1, -1):
            times.append(now - since)
            since += gaps[k]
        for event, t in zip(batch, reversed(times)):
            self._handle(event, t)

    def _handle(self, event, t: float) -> None:
        message = _midi_bytes(event)
        if message is None:  # not a message at all (a backend's garbage): dropped, counted, no traceback
            self.dropped += 1
            return
        try:
            self.handler(message, t)
        except Exception:  # a bad message never takes the input down
            self.faults.caught("midi-in", "message")

    def _watch(self) -> None:
        self.port.watch(lambda: self.running, True, self.faults, "midi-in")

    def close(self) -> None:
        self.running = False
        self.reader.join(timeout=1.0)
        if self.jack:
            log.info("MIDI in (own JACK client): %s", json.dumps(self.port.stats()))
        self.port.close()


def _midi_bytes(event) -> list[int] | None:
    """The message of an rtmidi callback event ``(bytes, delta)``: a non-empty list of ints 0..255,
    or None for anything else."""
    if not isinstance(event, (tuple, list)) or len(event) != 2:
        return None
    message = event[0]
    if not isinstance(message, (list, tuple)) or not message:
        return None
    if not all(isinstance(b, int) and 0 <= b <= 255 for b in message):
        return None
    return list(message)
