"""drummachine's own JACK MIDI client: every MIDI port of the engine on one JACK client, its process
callback in C (``jack_midi.c``, loaded with ctypes), fed through lock-free rings.

python-rtmidi makes one JACK client per port object, and each is one more thread the server wakes
every period; here the notes and clock out and the controller and clock in are ports of one client
named ``drummachine``. Out, each message goes into the ring with the time it is due, and the C
callback writes it at its frame within the period that contains that time (rtmidi sends at the
start of the period after the send). In, the callback stamps each event with its frame's time and
a reader thread of ours puts it on the engine's clock.

The client opens with the first port and closes with the last. When the JACK server goes away
(its shutdown callback, or the server's socket replaced: ``midi.jack_server``) the client is
closed; when a server is there again the client opens anew with every port, and connects each to
what it was connected to before (a named port, and whatever was connected to a virtual one).

``available()`` says whether the library is built and libjack loads; ``DRUMMACHINE_JACK_MIDI=rtmidi``
chooses python-rtmidi anyway (for comparisons, or as a way out on a system where this misbehaves).
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.machinery
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from drummachine.core.asked import Asked
from drummachine.core.errors import DrumMachineError
from drummachine.core.jack_names import CLIENT

if TYPE_CHECKING:  # the ports (midi.jack_port) import this module
    from drummachine.midi.jack_port import JackPort

log = logging.getLogger("drummachine")

LIBJACK = "libjack.so.0"
#: what the C callback leaves out of an input, as rtmidi's ``ignore_types(sysex=True, active_sense=True)``
IGNORE_SYSEX, IGNORE_ACTIVE_SENSE = 1, 2
#: the C callback's counters per port (``dm_port_stats``), in its order
STATS = ("written", "late", "late_max_us", "dropped", "received", "in_dropped", "ignored", "stale", "pending")
MESSAGE_MAX = 6  #: the longest message the out ring takes (notes, CCs, clock; no SysEx)
IN_MESSAGE_MAX = 1024  #: a longer incoming event is dropped by the callback
REMOVE_WAIT_MS = 200  #: how long a port's removal waits for the callback to let go of it
#: how long closing the client waits for the server: libjack's close asks the server and reads its
#: answer with no time limit, so on a server that stalls (stopped, hung, mid-restart) it would wait
#: for good, and quitting with it
CLOSE_WAIT_S = 2.0
#: how long opening the client waits for the server, for the same reason: a server that stalls
#: gets "does not answer" and the port waits, as for no server, instead of `play` never starting
OPEN_WAIT_S = 5.0

_library: ctypes.CDLL | None = None
_why_not: str | None = None
_said = False
_load_lock = threading.Lock()


def _built_library() -> Path | None:
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_jack_midi{suffix}"
        if path.exists():
            return path
    return None


def _declare(lib: ctypes.CDLL) -> None:
    c, u8p = ctypes, ctypes.c_char_p
    table = {
        "dm_load": (c.c_int, [c.c_char_p, c.c_char_p, c.c_size_t]),
        "dm_open": (c.c_void_p, [c.c_char_p, c.POINTER(c.c_int)]),
        "dm_close": (None, [c.c_void_p]),
        "dm_client_name": (c.c_char_p, [c.c_void_p]),
        "dm_gone": (c.c_int, [c.c_void_p]),
        "dm_cycles": (c.c_uint64, [c.c_void_p]),
        "dm_off_dll": (c.c_uint64, [c.c_void_p]),
        "dm_jumps": (c.c_uint64, [c.c_void_p]),
        "dm_time": (c.c_uint64, []),
        "dm_sample_rate": (c.c_uint32, [c.c_void_p]),
        "dm_buffer_size": (c.c_uint32, [c.c_void_p]),
        "dm_port_add": (c.c_int, [c.c_void_p, c.c_char_p, c.c_int, c.c_int]),
        "dm_port_remove": (c.c_int, [c.c_void_p, c.c_int, c.c_int]),
        "dm_port_name": (c.c_char_p, [c.c_void_p, c.c_int]),
        "dm_port_connect": (c.c_int, [c.c_void_p, c.c_int, c.c_char_p, c.c_int]),
        "dm_port_connected_to": (c.c_int, [c.c_void_p, c.c_int, c.c_char_p]),
        "dm_port_playback_latency": (c.c_long, [c.c_void_p, c.c_int]),
        "dm_port_connections": (c.c_size_t, [c.c_void_p, c.c_int, c.c_char_p, c.c_size_t]),
        "dm_list_ports": (c.c_size_t, [c.c_void_p, c.c_int, c.c_char_p, c.c_size_t]),
        "dm_send": (c.c_int, [c.c_void_p, c.c_int, c.c_int64, u8p, c.c_int]),
        "dm_flush_notes": (c.c_int, [c.c_void_p, c.c_int]),
        "dm_receive": (c.c_int, [c.c_void_p, c.c_int, c.c_char_p, c.c_int, c.POINTER(c.c_uint64),
                                 c.POINTER(c.c_uint32)]),
        "dm_port_stats": (None, [c.c_void_p, c.c_int, c.POINTER(c.c_uint64)]),
        "dm_audio_open": (c.c_int, [c.c_void_p, c.c_void_p, c.c_char_p, c.c_int]),
        "dm_audio_close": (c.c_int, [c.c_void_p, c.c_int]),
        "dm_audio_port_name": (c.c_char_p, [c.c_void_p, c.c_int]),
        "dm_audio_connect": (c.c_int, [c.c_void_p, c.c_int, c.c_char_p, c.c_int]),
        "dm_audio_connected_to": (c.c_int, [c.c_void_p, c.c_int, c.c_char_p]),
        "dm_audio_connections": (c.c_size_t, [c.c_void_p, c.c_int, c.c_char_p, c.c_size_t]),
        "dm_audio_latency": (c.c_long, [c.c_void_p]),
        "dm_list_playback": (c.c_size_t, [c.c_void_p, c.c_char_p, c.c_size_t]),
        "dm_ring_set_outputs": (None, [c.c_void_p, c.c_uint32]),
    }
    for name, (restype, argtypes) in table.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


def library() -> ctypes.CDLL | None:
    """The C library with libjack loaded, or None (``why_not()`` says why)."""
    global _library, _why_not
    with _load_lock:
        if _library is not None or _why_not is not None:
            return _library
        if os.environ.get("DRUMMACHINE_JACK_MIDI", "").lower() == "rtmidi":
            _why_not = "DRUMMACHINE_JACK_MIDI=rtmidi"
            return None
        path = _built_library()
        if path is None:
            _why_not = "drummachine's JACK MIDI client is not built here"
            return None
        try:
            lib = ctypes.CDLL(str(path))
            _declare(lib)
        except (OSError, AttributeError) as exc:
            _why_not = f"{path.name} does not load: {exc}"
            return None
        err = ctypes.create_string_buffer(512)
        if lib.dm_load(LIBJACK.encode(), err, len(err)) != 0:
            _why_not = f"{LIBJACK}: {err.value.decode(errors='replace')}"
            return None
        _library = lib
        return lib


def why_not() -> str | None:
    library()
    return _why_not


def available() -> bool:
    """Can MIDI over JACK go through drummachine's own client? Logs once which client MIDI uses."""
    global _said
    lib = library()
    if not _said:
        _said = True
        if lib is not None:
            log.info("MIDI over JACK: drummachine's own client (one client, C process callback)")
        else:
            log.info("MIDI over JACK: python-rtmidi (%s)", _why_not)
    return lib is not None


def find_port(names: list[str], wanted: str, what: str) -> int:
    """Index of the port named ``wanted`` or whose name contains it uniquely (both kinds of port)."""
    if wanted in names:
        return names.index(wanted)
    hits = [i for i, n in enumerate(names) if wanted.lower() in n.lower()]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise DrumMachineError(what, f"no MIDI port matches {wanted!r}; ports: {', '.join(names) or 'none'}")
    raise DrumMachineError(what, f"{wanted!r} matches several ports: {', '.join(names[i] for i in hits)}")


def _lines(call, *args) -> list[str]:
    """A JACK name list from the C side (asked again with a larger buffer when it does not fit)."""
    size = 4096
    while True:
        buf = ctypes.create_string_buffer(size)
        need = call(*args, buf, size)
        if need <= size:
            return [n for n in buf.value.decode(errors="replace").split("\n") if n]
        size = int(need) + 1024


class JackMidiClient:
    """The process's one JACK client for MIDI. Ports are added and taken away by the sinks and
    inputs (``JackPort``); the client opens with the first and closes with the last, and opens
    again, ports and connections included, when the JACK server comes back.

    Two locks: ``lock`` guards the handle (held for one C call by the real-time paths: sending,
    receiving), ``admin`` everything that talks to the server (opening, ports, connections), so a
    slow server never holds up a send."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        self.handle: int | None = None
        self.name = CLIENT
        self.ports: list["JackPort"] = []
        self.lock = threading.Lock()
        self.admin = threading.RLock()
        self.message = ""
        self.opened = 0  #: clients opened so far (again after each server restart, or after the last port closed)
        self.lost_server = False  #: closed because the server went: the next open is a reconnection
        self.server = None  #: the server's identity (midi.jack_server) when the client opened
        self.next_blind_try = 0.0
        self.left_allocated = 0  #: ports whose memory was left because the server ran no callback
        self.left_closing = 0  #: clients whose close the server did not answer (left to their thread)
        self.opening: Asked | None = None  #: an open the server has not answered yet

    # --- the handle ----------------------------------------------------------------------------
    def _open(self) -> bool:
        from drummachine.midi.jack_server import jack_server_identity

        if self.opening is not None:  # a server that did not answer before: its answer, if it came
            if not self.opening.answered:
                return False
            handle, status = self.opening.result()
            self.opening = None
            if handle:
                log.warning("MIDI: the JACK server answered at last: client open")
        else:
            self.server = jack_server_identity()
            asked = Asked(self._open_client, name="jack-midi-open")
            if not asked.wait(OPEN_WAIT_S):
                self.opening = asked
                self.message = f"JACK: the server does not answer (waited {OPEN_WAIT_S:.0f} s)"
                log.warning("MIDI: %s; will connect when it does", self.message)
                return False
            handle, status = asked.result()
        if not handle:
            self.message = f"JACK: no server to connect to (status 0x{status:x})"
            return False
        if not self.ports:  # the last port went while the server took its time
            self._let_go(handle)
            return False
        self.name = self.lib.dm_client_name(handle).decode(errors="replace")
        for port in self.ports:
            port._register(handle)
        with self.lock:
            self.handle = handle
        self.opened += 1
        self.message = ""
        if self.lost_server:  # not a client opened again after its last port closed
            self.lost_server = False
            log.warning("MIDI: JACK client %s open again on the new server", self.name)
        return True

    def _open_client(self) -> tuple[int | None, int]:
        status = ctypes.c_int(0)
        return self.lib.dm_open(CLIENT.encode(), ctypes.byref(status)), status.value

    def _close_handle(self) -> None:
        with self.lock:
            handle, self.handle = self.handle, None
            for port in self.ports:
                port.slot = None
        if handle:
            self._let_go(handle)

    def _let_go(self, handle: int) -> None:
        """Close a client no port uses any more: in a thread of its own, waited for CLOSE_WAIT_S (a
        server that does not answer keeps that thread and the client's memory, not the engine's
        exit or its port watch)."""
        if not Asked(self.lib.dm_close, handle, name="jack-midi-close").wait(CLOSE_WAIT_S):
            self.left_closing += 1
            log.warning("MIDI: the JACK server did not answer within %.0f s as client %s closed; left to it",
                        CLOSE_WAIT_S, self.name)

    def keep_up(self) -> None:
        """From the port watches, once a second: a client the server shut down is closed (its
        ports remember their connections), and opened again when a server is there."""
        from drummachine.midi.jack_server import jack_server_identity

        with self.admin:
            if self.handle and self.lib.dm_gone(self.handle):
                self.server_gone()
            if self.handle is None and self.ports:
                # no server's socket where jackd2 puts it: try now and then only (each failed try
                # is three lines of libjack on stderr; a server elsewhere is still found)
                now = time.monotonic()
                if jack_server_identity() is None and now < self.next_blind_try:
                    return
                self.next_blind_try = now + 10.0
                self._open()

    def server_gone(self, identity_changed: bool = False) -> None:
        """The server went away (its shutdown callback, or its socket replaced): close the client
        now (libjack connects no new client while a dead one is allocated). ``identity_changed``:
        told by the watches' look at the server's socket, which may come after this client opened
        on the new server: then nothing is to be done."""
        from drummachine.midi.jack_server import jack_server_identity

        with self.admin:
            if self.handle is None:
                return
            if identity_changed and not self.lib.dm_gone(self.handle) and self.server is not None \
                    and self.server == jack_server_identity():
                return
            for port in self.ports:
                port._remember_connections()
                port.connected = False
                port.message = f"{port.wanted or port.label}: the JACK server went away; will reconnect"
            self.lost_server = True
            self._close_handle()

    # --- ports ---------------------------------------------------------------------------------
    def add(self, port: "JackPort", strict: bool) -> None:
        """Register the port (opening the client if it is the first). No server: an error if
        ``strict``, else the port waits in the list and registers when a server is there."""
        from drummachine.midi.jack_server import jack_server_identity

        with self.admin:
            if self.handle is not None and (self.lib.dm_gone(self.handle) or self.server != jack_server_identity()):
                # the server went (or was replaced) since the client opened, and no watch has
                # looked yet: a port registered on that dead client would never play
                self.server_gone()
            self.ports.append(port)
            if self.handle is None:
                if not self._open():
                    port.message = f"{port.label}: {self.message}; will connect when a server is there"
                    if strict:
                        self.ports.remove(port)
                        raise DrumMachineError(port.label, self.message)
                    return
            else:
                port._register(self.handle)
            if port.slot is None:
                self.ports.remove(port)
                raise DrumMachineError(port.label, port.message)

    def remove(self, port: "JackPort") -> None:
        with self.admin:
            if port in self.ports:
                self.ports.remove(port)
            with self.lock:
                handle, slot, port.slot = self.handle, port.slot, None
            if handle and slot is not None:
                left = (port._unregister(handle) if hasattr(port, "_unregister")
                        else self.lib.dm_port_remove(handle, slot, REMOVE_WAIT_MS))
                if left:
                    self.left_allocated += 1
                    log.warning("MIDI: the JACK server ran no period for %d ms; port %s left allocated",
                                REMOVE_WAIT_MS, port.label)
            if not self.ports:
                self._close_handle()

    def timing(self) -> dict[str, int]:
        """The callback's periods: run, placed by the wake-up (JACK's DLL did not describe them),
        and begun elsewhere than the one before ended (a host stall)."""
        with self.lock:
            if self.handle is None:
                return {}
            return {"periods": int(self.lib.dm_cycles(self.handle)), "off_dll": int(self.lib.dm_off_dll(self.handle)),
                    "jumps": int(self.lib.dm_jumps(self.handle))}

    def list_ports(self, inputs: bool) -> list[str]:
        """The system's MIDI ports that take input (``inputs``) or give output, less our own."""
        with self.admin:
            if self.handle is None:
                return []
            names = _lines(self.lib.dm_list_ports, self.handle, int(inputs))
        return [n for n in names if not n.startswith(self.name + ":")]

    def close(self) -> None:
        """Every port and the client (at exit)."""
        with self.admin:
            for port in list(self.ports):
                port.closed = True
                self.remove(port)


_shared: JackMidiClient | None = None
_shared_lock = threading.Lock()


def shared_client() -> JackMidiClient:
    global _shared
    with _shared_lock:
        if _shared is None:
            lib = library()
            if lib is None:
                raise DrumMachineError("MIDI (jack)", f"drummachine's JACK MIDI client is not available: {_why_not}")
            _shared = JackMidiClient(lib)
            atexit.register(_shared.close)
        return _shared
