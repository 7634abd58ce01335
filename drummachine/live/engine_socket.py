"""The engine's socket: where it lives, who may open it, the wire's lines, and a UI's end of it.

The socket is in a folder only its user can open (``$XDG_RUNTIME_DIR/drummachine``, else
``/tmp/drummachine-UID``, or ``--socket PATH``; the folder is made 0700, another user's folder, a
link or a file is refused), the socket itself is 0600. The engine's end is live.host.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import tempfile
import threading
import time
from pathlib import Path

from drummachine.core.errors import DrumMachineError
from drummachine.core.snapshot import Snapshot

SOCKET_NAME = "engine.sock"
#: where the systemd unit (deploy/drummachine.service) has the engine listen: RuntimeDirectory=drummachine
SYSTEM_SOCKET = Path("/run/drummachine") / SOCKET_NAME
PROTOCOL = 1


def line(msg: dict) -> bytes:
    """One message on the wire: a JSON object on one line."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def runtime_dir() -> Path:
    """The user's own folder for the socket (and the UI-started engine's log), made 0700."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "drummachine" if base and Path(base).is_dir() else \
        Path(tempfile.gettempdir()) / f"drummachine-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise DrumMachineError(str(folder), f"cannot make the engine's folder: {exc.strerror}") from None
    return private_folder(folder)


def private_folder(folder: Path) -> Path:
    """``folder`` if only this user can open it (a folder of ours open to others is closed to them
    first); anything else is refused: a socket there could be reached, or faked, by another user."""
    try:
        st = os.lstat(folder)
    except OSError as exc:
        raise DrumMachineError(str(folder), f"cannot use the engine's folder: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DrumMachineError(str(folder), "is not a folder (a link or a file): refusing it for the engine's socket")
    if st.st_uid != os.getuid():
        raise DrumMachineError(str(folder), f"belongs to user {st.st_uid}, not to you: refusing it for the "
                               "engine's socket")
    if st.st_mode & 0o077:
        os.chmod(folder, 0o700)
    return folder


def socket_path(given: str | None = None) -> Path:
    """``--socket PATH`` (its folder must be yours alone), else the runtime folder's socket."""
    if given:
        path = Path(given).expanduser().absolute()
        private_folder(path.parent)
        return path
    return runtime_dir() / SOCKET_NAME


def listen(given: str | None = None) -> tuple[Path, socket.socket, str]:
    """Bind the engine's socket: ``--socket PATH``, else the runtime folder's ``engine.sock``, else
    (another engine plays there) ``engine-PID.sock`` beside it, with a notice saying so: a second
    engine is allowed (two drum modules, parallel tests), and ``attach`` finds either."""
    path = socket_path(given)
    try:
        return path, bind(path), ""
    except DrumMachineError as exc:
        if given or "already playing" not in str(exc):
            raise
    own = path.with_name(f"engine-{os.getpid()}.sock")
    return own, bind(own), f"another engine plays at {path}; this one listens on {own} " \
        f"(drummachine attach --socket {own})"


def find_engine(given: str | None = None) -> Path:
    """The socket ``attach`` and ``stop`` use: ``--socket``, else ``engine.sock`` in the runtime
    folder, else the systemd unit's or the /tmp one's (an SSH login has an $XDG_RUNTIME_DIR that a
    service started at boot has not), else the one engine-PID.sock that answers (several: one
    clear line naming them)."""
    path = socket_path(given)
    if given or _answers(path):
        return path
    for other in (SYSTEM_SOCKET, Path(tempfile.gettempdir()) / f"drummachine-{os.getuid()}" / SOCKET_NAME):
        try:
            if other != path and other.exists() and private_folder(other.parent) and _answers(other):
                return other
        except DrumMachineError:
            continue  # not this user's: never talked to
    found = sorted(p for p in path.parent.glob("engine-*.sock") if _answers(p))
    if len(found) == 1:
        return found[0]
    if found:
        raise DrumMachineError(str(path.parent), "several engines are playing; choose one with --socket: "
                               + ", ".join(map(str, found)))
    return path


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        probe.sendall(line({"probe": True}))  # the engine then logs no UI going
        return True
    except OSError:
        return False
    finally:
        probe.close()


def peer(conn: socket.socket) -> tuple[int, int]:
    """The connecting process's pid and uid, as the kernel says (SO_PEERCRED)."""
    try:
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                            struct.calcsize("3i")))
        return pid, uid
    except (OSError, AttributeError):
        return -1, os.getuid()


def bind(path: Path) -> socket.socket:
    """The listening socket, mode 0600. A live engine already there is one clear error; a socket
    left behind by one that was killed is removed."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise DrumMachineError(str(path), "exists and is not a socket: refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
            probe.sendall(line({"probe": True}))
            raise DrumMachineError(str(path), "an engine is already playing here: `drummachine attach` to "
                                   "see it, `drummachine stop` to stop it")
        except (ConnectionRefusedError, FileNotFoundError, socket.timeout):
            path.unlink(missing_ok=True)  # left by an engine that was killed
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)  # the folder is 0700 already: nobody else could reach it meanwhile
        sock.listen(4)
    except OSError as exc:
        sock.close()
        raise DrumMachineError(str(path), f"cannot listen there: {exc.strerror}") from None
    sock.settimeout(0.5)
    return sock


class SocketClient:
    """A UI's end of the socket: ``latest()`` is the newest snapshot, ``gone`` why the engine went."""

    def __init__(self, path: Path, timeout: float = 5.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            self.sock.close()
            raise DrumMachineError(str(path), "no engine is playing here (start one with `drummachine play`, "
                                   "or `play --headless`)") from None
        except OSError as exc:
            self.sock.close()
            raise DrumMachineError(str(path), f"cannot reach the engine: {exc.strerror or exc}") from None
        self._buf = b""
        try:
            first = self._next()
        except (OSError, ValueError):
            first = None
        if not first or "hello" not in first:
            self.sock.close()
            raise DrumMachineError(str(path), "the engine did not say hello")
        self.info = first["hello"]
        self.pid = self.info.get("pid")
        self.gone: str | None = None
        self.health: dict | None = None
        self._latest: Snapshot | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._got = threading.Event()
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="engine-snapshots", daemon=True)
        self._reader.start()

    def _next(self) -> dict | None:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\n", 1)
        return json.loads(raw)

    def _read(self) -> None:
        why = "the engine went away (connection closed)"
        try:
            while True:
                try:
                    msg = self._next()
                except ValueError:  # a line that does not parse: the next one will
                    continue
                if msg is None:
                    break
                if "snapshot" in msg:
                    try:
                        snap = Snapshot.from_json(msg["snapshot"])
                    except (TypeError, ValueError):
                        continue
                    with self._lock:
                        self._latest = snap
                    self._got.set()
                elif "health" in msg:
                    self.health = msg["health"]
                    self._got.set()
                elif "bye" in msg:
                    why = f"the engine stopped: {msg['bye']}"
                    break
        except OSError as exc:
            why = f"the engine went away ({exc.strerror or exc})"
        self.gone = why
        self._got.set()

    def _send(self, msg: dict) -> bool:
        try:
            with self._send_lock:
                self.sock.sendall(line(msg))
            return True
        except OSError:
            return False

    def command(self, name: str, value=None) -> None:
        self._send({"name": name, "value": value})

    def latest(self) -> Snapshot | None:
        with self._lock:
            return self._latest

    def wait_snapshot(self, timeout: float = 5.0) -> Snapshot | None:
        end = time.monotonic() + timeout
        while self.latest() is None and self.gone is None and time.monotonic() < end:
            self._got.wait(0.05)
            self._got.clear()
        return self.latest()

    def ask_health(self, timeout: float = 5.0) -> dict | None:
        self.health = None
        self._send({"health": True})
        end = time.monotonic() + timeout
        while self.health is None and self.gone is None and time.monotonic() < end:
            time.sleep(0.01)
        return self.health

    @property
    def alive(self) -> bool:
        return self.gone is None

    def quit(self, timeout: float = 10.0) -> bool:
        """Stop the engine (all notes off, the mixer and the ports closed): True once it said bye."""
        if self._send({"quit": True}):
            self._reader.join(timeout)
        self.detach()
        return self.gone is not None and "stopped" in self.gone

    def detach(self) -> None:
        """Go away: the engine plays on."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(2.0)

    close = detach
