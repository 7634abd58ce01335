"""The ports of drummachine's own JACK MIDI client (midi.jack_midi): each registered on the shared
client, connected by name or virtual, watched once a second (the server's and the wanted port's
comings and goings, the connections to make again after a restart), and the real-time paths
(send, receive, panic) as one C call each under the client's lock.

``WatchedPort`` is what both kinds of port (these and python-rtmidi's, ``midi.ports``) do in
their watch thread.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time

from drummachine.core.errors import DrumMachineError
from drummachine.core.notemap import LATENCY_MS
from drummachine.midi.jack_midi import IN_MESSAGE_MAX, STATS, JackMidiClient, _lines, find_port, shared_client

log = logging.getLogger("drummachine")

#: a port's playback latency is said again when it moves by this much
LATENCY_CHANGE_S = 0.0001


class WatchedPort:
    """What both kinds of port (this client's and python-rtmidi's, ``midi.ports``) do in their
    watch thread; each has its own ``check(close_when_gone)``."""

    def watch(self, running, close_when_gone: bool, faults, thread: str) -> None:
        """A watch thread's loop: ``check`` once a second while ``running()``; a failing check is
        counted in ``faults`` and the watch goes on."""
        while running():
            time.sleep(1.0)
            try:
                self.check(close_when_gone)
            except Exception:
                faults.caught(thread, "port watch")


class JackPort(WatchedPort):
    """One MIDI port of the shared client, connected by name (``wanted``: a port's full name or a
    unique part of it) or virtual (others connect to it). The same surface as ``midi.ports._Port``
    for the sinks and inputs: ``open``, ``check``, ``watch``, ``close``, ``server_gone``,
    ``connected`` and ``message``."""

    def __init__(self, direction: str, wanted: str | None, label: str, ignore: int = 0,
                 client: JackMidiClient | None = None):
        from drummachine.midi.jack_server import PORTS

        self.direction, self.wanted, self.label, self.ignore = direction, wanted, label, ignore
        self.client = client or shared_client()
        self.slot: int | None = None  #: on the client's current handle
        self.full_name = ""
        self.connected = False
        self.message = ""
        self.closed = False
        self.added = False
        self.target: str | None = None  #: the full name of the wanted port, once found
        self.known: dict[str, float] = {}  #: its connections, each with when it was last seen
        self.restore: set[str] = set()  #: connections to make again after the server came back
        self.restore_until = 0.0
        self.dropped = 0  #: messages that found no port or a full ring
        #: an output's: how long JACK reckons its messages take to reach the outside world (the
        #: ports it feeds and what they feed), read once a second; ``on_latency(seconds)`` when it changes
        self.playback_latency_s = 0.0
        self.on_latency = None
        self.latency_refused = 0  # a figure said to be too long, once
        self._lock = threading.Lock()  # the watch's, as _Port's
        PORTS.add(self)

    @property
    def lib(self):
        return self.client.lib

    def _register(self, handle: int) -> None:
        """(The client's admin lock held.) Register the port on a newly opened client."""
        slot = self.lib.dm_port_add(handle, self.label.encode(), int(self.direction == "in"), self.ignore)
        if slot < 0:
            self.slot = None
            self.message = f"{self.label}: JACK refused the port" + (" (no slot left)" if slot == -1 else "")
            return
        self.full_name = (self.lib.dm_port_name(handle, slot) or b"").decode(errors="replace")
        self.slot = slot

    # --- opening and watching --------------------------------------------------------------------
    def open(self, strict: bool = False) -> bool:
        """Register the port (opening the client if it is the first) and connect it to the wanted
        port. ``strict``: a wanted port that is not there is an error (and the port goes again)."""
        if self.closed:
            return False
        if not self.added:
            try:
                self.client.add(self, strict)
            except DrumMachineError as exc:
                self.message = str(exc)
                if strict:
                    raise
                return False
            self.added = True
        try:
            self._connect(strict)
        except DrumMachineError:
            self.close()
            raise
        return self.connected

    def _connect(self, strict: bool = False) -> None:
        with self.client.admin:
            handle, slot = self.client.handle, self.slot
            if handle is None or slot is None:
                self.connected = False
                return
            if not self.wanted:
                self.connected = True
                return
            names = self.client.list_ports(inputs=self.direction == "out")
            try:
                target = names[find_port(names, self.wanted, self.label)]
            except DrumMachineError as exc:
                if strict:
                    raise
                if self.connected or self.target:
                    log.warning("MIDI: %s -> %s went away; will reconnect when it is back", self.label,
                                self.target or self.wanted)
                    self.message = f"{self.wanted}: disconnected; will reconnect when it is back"
                elif not self.message:
                    self.message = str(exc)
                self.connected, self.target = False, None
                return
            if not self.lib.dm_port_connected_to(handle, slot, target.encode()):
                self.lib.dm_port_connect(handle, slot, target.encode(), 1)
                if self.lib.dm_port_connected_to(handle, slot, target.encode()) and self.target is not None:
                    log.info("MIDI: %s -> %s connected again", self.label, target)
            self.target = target
            self.connected = bool(self.lib.dm_port_connected_to(handle, slot, target.encode()))
            self.message = "" if self.connected else f"{self.label}: cannot connect to {target}"

    #: connections seen this recently are made again after a restart (the server's going may take
    #: its clients, and their connections, a moment before it takes ours)
    REMEMBER_SECONDS = 3.0

    def _remember_connections(self) -> None:
        """(Admin lock held.) What the port was connected to, to connect again after a restart."""
        now = time.monotonic()
        recent = {name for name, seen in self.known.items() if seen > now - self.REMEMBER_SECONDS}
        if recent - {self.target}:
            self.restore = recent - {self.target}
            self.restore_until = now + 60.0

    def _look_at_connections(self) -> None:
        """(Admin lock held.) Note the port's connections; after a server restart, connect again
        what was connected before as each comes back (for a minute)."""
        handle, slot = self.client.handle, self.slot
        if handle is None or slot is None:
            return
        if self.restore:
            if time.monotonic() > self.restore_until:
                self.restore.clear()
            else:
                there = set(self.client.list_ports(inputs=self.direction == "out"))
                for name in sorted(self.restore & there):
                    self.lib.dm_port_connect(handle, slot, name.encode(), 1)
                    if self.lib.dm_port_connected_to(handle, slot, name.encode()):
                        log.info("MIDI: %s -> %s connected again (as before the server restarted)",
                                 self.label, name)
                        self.restore.discard(name)
        now = time.monotonic()
        self.known = {name: seen for name, seen in self.known.items() if seen > now - self.REMEMBER_SECONDS}
        self.known.update((name, now) for name in _lines(self.lib.dm_port_connections, handle, slot))

    def check(self, close_when_gone: bool = False) -> None:
        """Once a second: the server's comings and goings, the wanted port's, the connections."""
        from drummachine.midi.jack_server import drop_clients_of_a_gone_server

        if self.closed:
            return
        drop_clients_of_a_gone_server("jack")
        self.client.keep_up()
        with self.client.admin:
            if self.closed:
                return
            self._connect()
            self._look_at_connections()
            if self.direction == "out":
                self._read_latency()

    def _read_latency(self) -> None:
        """(Admin lock held.) JACK's playback latency of this output: 0 unconnected or not known."""
        handle, slot = self.client.handle, self.slot
        if handle is None or slot is None:
            return
        frames, rate = self.lib.dm_port_playback_latency(handle, slot), self.lib.dm_sample_rate(handle)
        seconds = frames / rate if frames > 0 and rate > 0 else 0.0
        if seconds > LATENCY_MS[1] / 1000.0:  # no module takes that long: a client's figure gone wrong
            if frames != self.latency_refused:
                log.warning("MIDI: %s: JACK says %d frames (%.0f ms) from the port on; not taken (more than %.0f ms)",
                            self.label, frames, seconds * 1000, LATENCY_MS[1])
                self.latency_refused = frames
            seconds = 0.0
        if abs(seconds - self.playback_latency_s) >= LATENCY_CHANGE_S:
            self.playback_latency_s = seconds
            if self.on_latency is not None:
                self.on_latency(seconds)

    def server_gone(self) -> None:
        """From ``midi.jack_server``: the server's socket changed."""
        self.client.server_gone(identity_changed=True)

    def close(self) -> None:
        self.closed = True
        if self.added:
            self.added = False
            self.client.remove(self)
        self.connected = False

    # --- the real-time paths (one C call each under the handle's lock) ---------------------------
    def send(self, rows: list[tuple[float | None, bytes]], now: float) -> int:
        """Queue ``(due, message)`` rows, ``due`` on a clock that reads ``now`` at this moment; the
        C callback writes each at its frame. The number queued (the rest are counted dropped)."""
        queued = 0
        with self.client.lock:
            handle, slot = self.client.handle, self.slot
            if handle is not None and slot is not None:
                base = self.lib.dm_time() - now * 1e6
                for due, message in rows:  # due None: now (frame 0 of the next period)
                    due_us = 0 if due is None else max(1, int(base + due * 1e6))
                    queued += self.lib.dm_send(handle, slot, due_us, message, len(message)) == 0
        self.dropped += len(rows) - queued
        return queued

    def flush_notes(self) -> bool:
        """A panic: the callback drops the notes still to come and ends the ones sounding."""
        with self.client.lock:
            handle, slot = self.client.handle, self.slot
            return handle is not None and slot is not None and self.lib.dm_flush_notes(handle, slot) == 0

    def receive(self, limit: int = 4096) -> tuple[list[tuple[list[int], int]], int]:
        """What arrived since the last call: ``([(message, usecs), ...], now_usecs)``, times on
        JACK's clock (the time of each event's frame)."""
        got = []
        buf = ctypes.create_string_buffer(IN_MESSAGE_MAX)
        usecs, frame = ctypes.c_uint64(0), ctypes.c_uint32(0)
        with self.client.lock:
            handle, slot = self.client.handle, self.slot
            if handle is None or slot is None:
                return got, 0
            while len(got) < limit:
                n = self.lib.dm_receive(handle, slot, buf, IN_MESSAGE_MAX, ctypes.byref(usecs), ctypes.byref(frame))
                if n == 0:
                    break
                if n > 0:
                    got.append((list(buf.raw[:n]), usecs.value))
            now = self.lib.dm_time()
        return got, now

    def stats(self) -> dict[str, int]:
        out = (ctypes.c_uint64 * len(STATS))()
        with self.client.lock:
            if self.client.handle is not None and self.slot is not None:
                self.lib.dm_port_stats(self.client.handle, self.slot, out)
        return {**dict(zip(STATS, (int(v) for v in out))), "not_queued": self.dropped}
