"""A JACK server that stops or starts again under the instrument: every rtmidi client of the
process is dead at once (it lists no ports and raises nothing), and libjack connects no new client
while a dead one is still allocated. The port watches (``midi.ports``) ask here each second."""

from __future__ import annotations

import logging
import os
import threading
import weakref

log = logging.getLogger("drummachine")

#: every port of this process: a JACK server that stopped leaves all their clients dead at once
PORTS: "weakref.WeakSet" = weakref.WeakSet()  #: midi.ports._Port objects: each has server_gone()
_SERVER_SEEN: dict[str, tuple | None] = {}  #: the JACK server's identity when the watches last looked
_SERVER_LOCK = threading.Lock()


#: where jackd2 puts its servers' sockets on Linux: only looked at (stat), never opened or made
JACK_SOCKET_FOLDER = "/dev/shm"


def jack_server_identity() -> tuple | None:
    """The JACK server this process talks to, as its socket's inode and time (None: not running,
    or not where jackd2 puts it): a restarted server is a new socket."""
    name = os.environ.get("JACK_DEFAULT_SERVER", "default")
    try:
        st = os.stat(f"{JACK_SOCKET_FOLDER}/jack_{name}_{os.getuid()}_0")
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def drop_clients_of_a_gone_server(api: str) -> bool:
    """From the port watches: if the JACK server went away or was replaced since they last looked,
    delete every rtmidi client of this process, so each watch opens a new one on the server that is
    there. A client of a stopped server lists no ports and raises nothing, and libjack will not
    connect a new client while a dead one is still allocated in the process. True if it did."""
    if api != "jack":
        return False
    now = jack_server_identity()
    with _SERVER_LOCK:
        if "jack" not in _SERVER_SEEN:
            _SERVER_SEEN["jack"] = now
            return False
        before = _SERVER_SEEN["jack"]
        if before == now:
            return False
        _SERVER_SEEN["jack"] = now
        ports = list(PORTS)
        if before is None:  # none when the watches first looked: started after drummachine
            log.warning("MIDI: the JACK server started; the MIDI ports open on it")
        else:
            log.warning("MIDI: the JACK server %s; the MIDI ports open again when it is back",
                        "stopped" if now is None else "restarted")
        for port in ports:
            port.server_gone()
    return True
