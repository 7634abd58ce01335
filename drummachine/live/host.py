"""Where the engine runs, and how a UI reaches it: the groove outlives the UI.

On stage the engine (generator, commit loop, MIDI threads, with the mixer as its child process)
runs in a process of its own, in a session of its own: nothing a terminal does to the UI (a
crash, SIGKILL, a closed SSH session, SIGHUP) reaches it. It listens on a Unix socket in a folder
only its user can open (``$XDG_RUNTIME_DIR/drummachine`` or ``/tmp/drummachine-UID``, mode 0700;
the socket 0600; a peer of another user is refused). A UI attaches there, and detaches by going
away, however it goes: the engine logs it and plays on headless. Only an explicit ``quit`` (the
UI's quit key, ``drummachine stop``), SIGTERM/SIGINT, ``--duration`` or the song's end with
``--stop-when-done`` stop it.

Where the socket lives and who may open it, and a UI's end of it: live.engine_socket (its
names are here too, for the command line). The wire is newline-delimited JSON, nothing unpickled: a UI sends commands
``{"name": ..., "value": ...}`` (checked by ``commands.parse`` in ``Session.command``, like
every other command), ``{"quit": true}`` or ``{"health": true}``; the engine answers
``{"hello": {...}}`` once, then ``{"snapshot": ...}`` (``Snapshot.to_json``) 40 times a second,
``{"health": {...}}`` when asked, and ``{"bye": reason}`` when it stops. A slow UI gets only the
newest snapshot: the engine never waits for a UI.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from drummachine.core.errors import DrumMachineError
from drummachine.core.snapshot import Snapshot
from drummachine.live.engine_socket import (  # noqa: F401 - the socket's place, for play's engine
    PROTOCOL, SOCKET_NAME, SocketClient, bind, find_engine, line, listen, peer, socket_path)

log = logging.getLogger("drummachine")
SNAPSHOT_SECONDS = 0.025  #: a snapshot to each attached UI 40 times a second
IDLE_SECONDS = 0.05  #: the housekeeping tick with nobody attached
MAX_LINE = 1 << 20  #: a UI line longer than this is not a command: the UI is dropped


# --- the engine's side ---------------------------------------------------------------------
class _Attached:
    """One UI on the socket: a reader thread (its commands) and a writer thread (the newest
    snapshot, never a queue of old ones)."""

    def __init__(self, host: "EngineHost", conn: socket.socket, pid: int):
        self.host, self.conn, self.pid = host, conn, pid
        self.alive = True
        self.probe = False
        self.sent_seq = 0
        self.replies: list[bytes] = []
        self.conn.settimeout(5.0)  # a UI that takes no snapshot for 5 s is dropped, never waited for
        self.reader = threading.Thread(target=self._read, name=f"ui-{pid}-in", daemon=True)
        self.writer = threading.Thread(target=self._write, name=f"ui-{pid}-out", daemon=True)

    def start(self, hello: dict) -> None:
        self.replies.append(line({"hello": hello}))
        self.reader.start()
        self.writer.start()

    def _read(self) -> None:
        buf = b""
        how = "connection closed without quitting"
        try:
            while self.alive:
                try:
                    chunk = self.conn.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_LINE and b"\n" not in buf:
                    how = f"a line longer than {MAX_LINE} bytes"
                    break
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    if raw.strip():
                        self.host.handle(self, raw)
        except OSError as exc:
            how = f"connection lost ({exc.strerror or exc})"
        finally:
            self.host.detached(self, how)

    def _write(self) -> None:
        host = self.host
        try:
            while self.alive:
                with host.fresh:
                    host.fresh.wait_for(lambda: not self.alive or self.replies or host.seq != self.sent_seq, 1.0)
                    out = b"".join(self.replies)
                    self.replies.clear()
                    if host.seq != self.sent_seq and host.latest is not None:
                        out += host.latest
                        self.sent_seq = host.seq
                if out:
                    self.conn.sendall(out)
        except OSError:
            pass
        finally:
            self.alive = False
            with host.fresh:
                host.fresh.notify_all()

    def reply(self, msg: dict) -> None:
        with self.host.fresh:
            self.replies.append(line(msg))
            self.host.fresh.notify_all()

    def close(self, bye: str | None) -> None:
        if bye is not None and self.alive:
            try:
                self.conn.settimeout(1.0)
                self.conn.sendall(line({"bye": bye}))
            except OSError:
                pass
        self.alive = False
        with self.host.fresh:
            self.host.fresh.notify_all()
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for t in (self.reader, self.writer):
            if t.is_alive() and t is not threading.current_thread():
                t.join(2.0)
        self.conn.close()


class EngineHost:
    """A playing session served on a socket: ``run()`` is the engine process's main loop."""

    def __init__(self, session, listener: socket.socket, path: Path, log_path: str | None = None):
        self.session = session
        self.listener = listener
        self.path = path
        self.log_path = log_path
        self.fresh = threading.Condition()
        self.latest: bytes | None = None
        self.seq = 0
        self.clients: list[_Attached] = []
        self.quit_by: str | None = None
        self.attaches = 0
        self.detaches = 0
        self.bad_lines = 0
        self._closing = False
        self.acceptor = threading.Thread(target=self._accept, name="ui-accept", daemon=True)
        self.acceptor.start()

    def hello(self) -> dict:
        s = self.session
        return {"protocol": PROTOCOL, "pid": os.getpid(), "song": s.song.name, "log": self.log_path,
                "sections": [x.name for x in s.song.sections], "warnings": list(s.warnings),
                "setup_seconds": round(s.setup_seconds, 3), "socket": str(self.path)}

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._closing:
                    return
                time.sleep(0.1)
                continue
            pid, uid = peer(conn)
            if uid not in (os.getuid(), 0):
                log.warning("a UI of user %d (pid %d) tried to attach: refused", uid, pid)
                conn.close()
                continue
            client = _Attached(self, conn, pid)
            with self.fresh:
                self.clients.append(client)
            self.attaches += 1
            log.info("attached: pid %d (%d attached)", pid, len(self.clients))
            client.start(self.hello())

    def handle(self, client: _Attached, raw: bytes) -> None:
        """One line from a UI: a command, quit or a health question. Anything else is one line in
        the log and the UI stays attached."""
        try:
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            self.bad_lines += 1
            log.warning("UI pid %d: a line that is not a JSON object (%s): ignored", client.pid, exc)
            return
        if msg.get("probe"):  # someone looking for an engine, not a UI
            client.probe = True
            return
        if msg.get("quit"):
            self.quit_by = f"quit asked by pid {client.pid}"
            return
        if msg.get("health"):
            client.reply({"health": health(self.session, self)})
            return
        name = msg.get("name")
        if not isinstance(name, str):
            self.bad_lines += 1
            log.warning("UI pid %d: %r has no command name: ignored", client.pid, raw[:80])
            return
        if name == "ping":  # latency probe: when the engine process got it
            self.pongs = (getattr(self, "pongs", []) + [[msg.get("value"), time.monotonic()]])[-64:]
            return
        self.session.command(name, msg.get("value"))  # checked there, by the command table

    def detached(self, client: _Attached, how: str) -> None:
        with self.fresh:
            if client not in self.clients:
                return
            self.clients.remove(client)
        self.detaches += 1
        if not self._closing and self.quit_by is None and not client.probe:
            log.warning("UI detached (pid %d: %s): playing on headless; `drummachine attach` brings a UI "
                        "back, `drummachine stop` stops the engine", client.pid, how)
        threading.Thread(target=client.close, args=(None,), name="ui-close", daemon=True).start()

    def tick(self) -> Snapshot:
        """Housekeeping, and the newest snapshot to the attached UIs (encoded once for all)."""
        self.session.poll()
        s = self.session.status()
        if self.clients:
            pongs = tuple(getattr(self, "pongs", ()))
            encoded = line({"snapshot": s.with_(pongs=pongs).to_json()})
            with self.fresh:
                self.latest = encoded
                self.seq += 1
                self.fresh.notify_all()
        return s

    def run(self, *, duration: float | None = None, stop_when_done: bool = False, stop=None,
            on_snapshot=None) -> Snapshot:
        """Until a quit, ``stop()`` (a signal), ``duration`` or the song's end: the last snapshot."""
        end = time.monotonic() + duration if duration else None
        s = self.tick()
        while True:
            time.sleep(SNAPSHOT_SECONDS if self.clients else IDLE_SECONDS)
            s = self.tick()
            if on_snapshot is not None:
                on_snapshot(s)
            if self.quit_by or (stop is not None and stop()):
                break
            if end is not None and time.monotonic() >= end:
                self.quit_by = f"--duration {duration:g} s is over"
                break
            if stop_when_done and not s.playing and s.steps > 0:
                self.quit_by = "the song has ended"
                break
        return s

    def close(self, reason: str) -> None:
        """Stop listening, say goodbye to every UI, remove the socket."""
        self._closing = True
        log.info("engine stopping: %s", reason)
        try:
            self.listener.close()
        finally:
            self.path.unlink(missing_ok=True)
        self.acceptor.join(2.0)
        with self.fresh:
            clients = list(self.clients)
            self.clients.clear()
        for c in clients:
            c.close(reason)


def health(session, host: EngineHost | None = None) -> dict:
    """What a soak run checks from outside: the session's threads, alive or not; memory and fds;
    the MIDI out's counts (notes handed over late: the engine's own share of the MIDI timing)."""
    expected = {t.name: t for t in session.threads}
    if session.midi is not None:
        if session.midi.thread is not None:  # rtmidi's dispatcher; drummachine's JACK client sends from C
            expected["midi-out"] = session.midi.thread
        expected["midi-out-watch"] = session.midi.watch
    for i, inp in enumerate(session.inputs):
        expected[f"midi-in-{i}"] = inp.reader
        expected[f"midi-in-watch-{i}"] = inp.watch
    rss = 0
    try:
        for row in Path("/proc/self/status").read_text().splitlines():
            if row.startswith("VmRSS:"):
                rss = int(row.split()[1])
    except OSError:
        pass
    try:
        fds = len(os.listdir("/proc/self/fd"))
        tasks = len(os.listdir("/proc/self/task"))
    except OSError:
        fds = tasks = -1
    audio = session.audio
    return {"threads": sorted(t.name for t in threading.enumerate()),
            "dead": sorted(n for n, t in expected.items() if not t.is_alive()),
            "expected": sorted(expected), "os_threads": tasks, "fds": fds, "rss_kb": rss,
            "mixer_pid": audio.proc.pid if audio is not None and audio.alive else None,
            "attached": len(host.clients) if host else 0, "attaches": host.attaches if host else 0,
            "bad_lines": host.bad_lines if host else 0,
            "midi_out": session.midi.stats() if session.midi is not None else {}}


#: how long the engine process may take to end once it stops playing. Its children get 3 s each
#: before a SIGKILL, but libjack's requests (the client's close, a port's listing, a connection)
#: wait for the server's answer with no time limit: on a server that stalls, quitting would hang
#: for good (and SIGTERM with it, the interpreter stuck in C). Past this the process leaves anyway.
EXIT_WITHIN_S = 15.0


def leave_within(seconds: float, code: int) -> threading.Thread:
    """From the moment the engine process starts to end: if it has not ended ``seconds`` later
    (closing, joining, its exit handlers), it says so in its log and on stderr, and leaves with
    ``code``. Only for the engine's own process (``os._exit``)."""
    def leave() -> None:
        time.sleep(seconds)
        what = (f"the engine did not end within {seconds:.0f} s of stopping (libjack waiting on a JACK "
                f"server that does not answer, most likely): leaving without it")
        log.error("%s", what)
        for handler in logging.getLogger().handlers + log.handlers:
            try:
                handler.flush()
            except Exception:
                pass
        try:
            print(f"drummachine: {what}", file=sys.stderr, flush=True)
        except Exception:
            pass
        os._exit(code)

    guard = threading.Thread(target=leave, name="exit-guard", daemon=True)
    guard.start()
    return guard


def serve(session, path: Path, listener: socket.socket, *, log_path: str | None = None,
          duration: float | None = None, stop_when_done: bool = False, on_snapshot=None,
          ready=None) -> tuple[Snapshot, str]:
    """The engine process's main loop with its socket; SIGTERM/SIGINT stop it, SIGHUP (the
    terminal went) is logged and ignored. Returns the last snapshot and why it stopped."""
    stop = {"by": None}

    def on_signal(signum, frame):
        stop["by"] = signal.Signals(signum).name

    def on_hangup(signum, frame):
        log.warning("SIGHUP (the terminal closed): playing on headless")
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the terminal is gone: writing to it would fail
            os.dup2(devnull, fd)
        os.close(devnull)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    host = EngineHost(session, listener, path, log_path)
    if ready is not None:
        ready(host)
    failed = True
    try:
        s = host.run(duration=duration, stop_when_done=stop_when_done, stop=lambda: stop["by"],
                     on_snapshot=on_snapshot)
        failed = False
    finally:
        leave_within(EXIT_WITHIN_S, 1 if failed else 0)  # what follows, to the process's end, is bounded
        reason = host.quit_by or (f"{stop['by']}" if stop["by"] else "the engine stopped")
        session.command("stop")  # all notes off first: the UI that asked hears silence before it goes
        time.sleep(0.05)
        host.close(reason)
    return s, reason


def start_engine(opts, path: Path, log_path: Path, *, duration: float | None = None, wait: bool = False,
                 stop_when_done: bool = False, timeout: float = 60.0) -> int:
    """Start ``drummachine engine`` in a session of its own (no terminal: a closed one cannot
    reach it) and wait until it listens; its pid. A set-up error is the engine's own line."""
    cmd = [sys.executable, "-m", "drummachine", "engine", "--options", json.dumps(asdict(opts)),
           "--socket", str(path), "--log", str(log_path)]
    if duration:
        cmd += ["--duration", str(duration)]
    if wait:
        cmd.append("--wait")
    if stop_when_done:
        cmd.append("--stop-when-done")
    errors = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                            start_new_session=True, close_fds=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        first = proc.stdout.readline() if ready else b""
    finally:
        proc.stdout.close()
    try:
        reply = json.loads(first) if first else {}
    except ValueError:
        reply = {}
    if "ready" not in reply:
        try:
            proc.wait(5.0 if first or not ready else 0.1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors.seek(0)
        said = [x for x in errors.read().splitlines() if x.strip()]
        errors.close()
        if said and said[-1].startswith("drummachine: error: "):
            raise DrumMachineError("", said[-1][len("drummachine: error: "):])
        raise DrumMachineError("engine", f"did not start within {timeout:g} s" if not first and proc.returncode is None
                               else f"stopped before it was ready ({said[-1] if said else 'no message'}); "
                               f"see {log_path}")
    errors.close()
    return proc.pid


class ProcessClient(SocketClient):
    """An engine of its own in a private folder, attached; ``close()`` stops it (benchmarks)."""

    def __init__(self, opts, timeout: float = 60.0):
        self.folder = Path(tempfile.mkdtemp(prefix="drummachine-engine-"))
        path = self.folder / SOCKET_NAME
        start_engine(opts, path, self.folder / "engine.log", timeout=timeout)
        super().__init__(path)

    def close(self) -> None:
        self.quit()


class EngineClient:
    """A bare engine (no outputs of its own) driven from the caller's thread: for UI tests."""

    def __init__(self, engine, pump: bool = True):
        self.engine = engine
        self.pump = pump

    def command(self, name: str, value=None) -> None:
        self.engine.command(name, value)
        if self.pump:
            self.engine.pump_generator()
            self.engine.pump()

    def latest(self) -> Snapshot:
        # through the wire's JSON form, as the UI on stage gets it
        return Snapshot.from_json(json.loads(json.dumps(self.engine.snapshot().to_json())))

    def close(self) -> None:
        self.engine.command("stop")
        self.engine.pump()
