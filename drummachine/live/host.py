"""Where the engine runs: in this process (tests, headless) or in a process of its own (the UI).

The stage UI draws and reads keys in one process; the engine (generator, commit loop, MIDI
threads) runs in another, so a busy screen can never stall the generator or the MIDI out; the
audio callback runs in a third (``audio_process``), so neither can hold the GIL it needs.
UI and engine talk through a pipe in JSON (commands down, snapshots up): nothing is unpickled.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from dataclasses import asdict

from drummachine.core.errors import DrumMachineError
from drummachine.core.snapshot import Snapshot
from drummachine.live import tuning
from drummachine.live.session import Options, Session

SNAPSHOT_SECONDS = 0.025


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
        # through the pipe's JSON form, as the UI on stage gets it
        return Snapshot.from_json(json.loads(json.dumps(self.engine.snapshot().to_json())))

    def close(self) -> None:
        self.engine.command("stop")
        self.engine.pump()


class LocalClient:
    """The engine in this process."""

    def __init__(self, session: Session, start_threads: bool = True):
        self.session = session
        self.info = {"song": session.song.name, "sections": [s.name for s in session.song.sections],
                     "warnings": list(session.warnings)}
        if start_threads:
            session.start_threads()

    def command(self, name: str, value=None) -> None:
        self.session.command(name, value)

    def latest(self) -> Snapshot:
        self.session.poll()
        return self.session.status()

    def close(self) -> None:
        self.session.close()


def _serve(opts_dict: dict, conn) -> None:
    """The engine process: build the session, then relay commands in and snapshots out."""
    tuning.for_real_time()
    try:
        session = Session(Options(**opts_dict))
        tuning.settle()
    except DrumMachineError as exc:
        conn.send_bytes(json.dumps({"error": str(exc)}).encode())
        return
    session.start_threads()
    conn.send_bytes(json.dumps({"ready": {"song": session.song.name, "warnings": session.warnings,
                                          "setup_seconds": session.setup_seconds}}).encode())
    pongs: list = []
    next_snapshot = 0.0
    try:
        while True:
            # wait for a command until the next snapshot is due: a key reaches the engine at once
            if conn.poll(max(0.0, next_snapshot - time.monotonic())):
                msg = json.loads(conn.recv_bytes())
                if msg.get("quit"):
                    return
                if msg["name"] == "ping":  # latency probe: when the engine process got it
                    pongs = (pongs + [[msg.get("value"), time.monotonic()]])[-64:]
                else:
                    session.command(msg["name"], msg.get("value"))
                continue
            session.poll()
            conn.send_bytes(json.dumps(session.status().with_(pongs=tuple(pongs)).to_json()).encode())
            next_snapshot = time.monotonic() + SNAPSHOT_SECONDS
    except (EOFError, BrokenPipeError, OSError):
        return
    finally:
        session.close()


class ProcessClient:
    """The engine in a process of its own; ``latest()`` is the newest snapshot it sent."""

    def __init__(self, opts: Options, timeout: float = 30.0):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(asdict(opts), child), name="drummachine-engine", daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(timeout):
            self.proc.terminate()
            raise DrumMachineError("engine", f"did not start within {timeout:g} s")
        first = json.loads(self.conn.recv_bytes())
        if "error" in first:
            self.proc.join(2)
            raise DrumMachineError("", first["error"])
        self.info = first["ready"]
        self._latest: dict | None = None
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="engine-snapshots", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                msg = Snapshot.from_json(json.loads(self.conn.recv_bytes()))
            except (EOFError, OSError):
                return
            except (ValueError, TypeError):  # a snapshot that does not parse: the next one will
                continue
            with self._lock:
                self._latest = msg

    def command(self, name: str, value=None) -> None:
        try:
            self.conn.send_bytes(json.dumps({"name": name, "value": value}).encode())
        except (BrokenPipeError, OSError):
            pass

    def latest(self) -> Snapshot | None:
        with self._lock:
            return self._latest

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def close(self) -> None:
        try:
            self.conn.send_bytes(json.dumps({"quit": True}).encode())
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(3)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2)
