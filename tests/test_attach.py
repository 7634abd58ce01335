"""The groove outlives the UI: the engine behind `play`'s UI runs in a session of its own, on a
Unix socket only its user can open; a UI killed, crashed or hung up only detaches, and
`drummachine attach` shows the engine still playing. Real parts: a JACK server, a JACK MIDI
recorder, the UI in a real terminal (tmux, on a tmux server of the test's own)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drummachine.core.errors import DrumMachineError
from drummachine.live import engine_socket as host  # the socket's place, and a UI's end of it

from .conftest import ROOT, midi_recorder, run_cli

TMUX = ["tmux", "-L", f"dm-attach-{os.getpid()}"]  # never the default tmux server others use


# --- the engine process's end is bounded (no JACK needed) --------------------------------
def test_an_engine_stuck_at_its_end_leaves_within_its_time_and_says_so(tmp_path):
    """Once the engine stops, its process ends within ``EXIT_WITHIN_S`` whatever it waits for
    (here an exit handler that never returns, as libjack waiting on a stalled server): the log
    and stderr say why, and the exit code is the one it was leaving with."""
    log = tmp_path / "engine.log"
    script = (
        "import atexit, logging, threading, time\n"
        f"logging.basicConfig(filename={str(log)!r}, level=logging.INFO)\n"
        "from drummachine.live.host import leave_within\n"
        "atexit.register(lambda: threading.Event().wait())  # never returns\n"
        "leave_within(1.0, 3)\n")
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - t < 10
    assert r.returncode == 3, r.stderr
    assert "did not end within 1 s of stopping" in r.stderr
    assert "did not end within 1 s of stopping" in log.read_text()


# --- the socket's place and permissions (no JACK needed) ---------------------------------
def test_the_socket_is_private_and_a_second_engine_is_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir(mode=0o755)
    path = host.socket_path(str(folder / "engine.sock"))
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, "a folder of ours open to others is closed first"
    sock = host.bind(path)
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(DrumMachineError, match="an engine is already playing here"):
            host.bind(path)
    finally:
        sock.close()
    # a socket left by a killed engine is taken over
    host.bind(path).close()
    # not a socket: never replaced
    path.unlink()
    path.write_text("mine")
    with pytest.raises(DrumMachineError, match="is not a socket"):
        host.bind(path)
    assert path.read_text() == "mine"


def test_a_second_engine_listens_beside_the_first(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    # the other places attach looks at: none here (an engine may be playing in the real ones)
    monkeypatch.setattr(host, "SYSTEM_SOCKET", tmp_path / "none" / "engine.sock")
    monkeypatch.setattr(host.tempfile, "gettempdir", lambda: str(tmp_path / "none"))
    first, sock1, notice1 = host.listen()
    second, sock2, notice2 = host.listen()
    try:
        assert first == tmp_path / "drummachine" / "engine.sock" and not notice1
        assert second.name == f"engine-{os.getpid()}.sock" and f"attach --socket {second}" in notice2
        assert host.find_engine() == first
        sock1.close()
        first.unlink()
        assert host.find_engine() == second, "the one engine that answers"
        with pytest.raises(DrumMachineError, match="an engine is already playing here"):
            host.listen(str(second))  # a socket given by name is never swapped for another
    finally:
        sock1.close()
        sock2.close()


def test_a_folder_of_another_user_is_refused(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to give a folder away")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(DrumMachineError, match="belongs to user 65534"):
        host.socket_path(str(theirs / "engine.sock"))
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(DrumMachineError, match="is not a folder"):
        host.socket_path(str(link / "engine.sock"))


def test_attach_and_stop_without_an_engine_are_one_clear_line(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    r = run_cli("stop", "--socket", folder / "engine.sock", timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().endswith("no engine is playing here (start one with `drummachine play`, or "
                                     "`play --headless`)")


# --- for real: JACK, a recorder, tmux ------------------------------------------------------
def notes_between(got, t0, t1):
    return [m for t, m in list(got) if t0 <= t < t1 and m[0] & 0xF0 == 0x90 and m[2] > 0]


class Terminal:
    """A real terminal: a tmux session on the test's own tmux server."""

    def __init__(self, name, command, env):
        self.name = name
        exports = " ".join(f"-e {k}={v}" for k, v in env.items())
        subprocess.run([*TMUX, "new-session", "-d", "-s", name, "-x", "100", "-y", "30", *exports.split(),
                        command], check=True)

    def screen(self):
        return subprocess.run([*TMUX, "capture-pane", "-p", "-t", self.name], capture_output=True,
                              text=True).stdout

    def wait_for(self, text, timeout=20.0):
        end = time.time() + timeout
        while time.time() < end:
            s = self.screen()
            if text in s:
                return s
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never showed; screen:\n{self.screen()}")

    def pid(self):
        """The pane's process: the command itself (it is started with exec)."""
        out = subprocess.run([*TMUX, "list-panes", "-t", self.name, "-F", "#{pane_pid}"], capture_output=True,
                             text=True).stdout
        return int(out.split()[0])

    def keys(self, *keys):
        subprocess.run([*TMUX, "send-keys", "-t", self.name, *keys], check=True)

    def kill(self):
        subprocess.run([*TMUX, "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def stage(jack_server, tmp_path):
    """A runtime folder of the test's own, a recorder on JACK MIDI, and tmux cleaned up after."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(run), "DRUMMACHINE_MIDI_API": "jack",
           "JACK_DEFAULT_SERVER": os.environ.get("JACK_DEFAULT_SERVER", "default")}
    port, got = midi_recorder("rec-attach")
    yield env, run / "drummachine" / "engine.sock", got
    subprocess.run([*TMUX, "kill-server"], capture_output=True)
    sock = run / "drummachine" / "engine.sock"
    if sock.exists():  # an engine a failed test left playing
        subprocess.run([sys.executable, "-m", "drummachine", "stop", "--socket", str(sock)], capture_output=True,
                       timeout=30)
    port.close()  # the JACK client goes too: the next test's recorder gets the same name


PLAY = (f"cd {ROOT} && exec {sys.executable} -m drummachine play --fake-model --no-audio --midi-out rec-attach:rx "
        "--style rock --bpm 120")


def engine_log(sock: Path) -> str:
    p = sock.parent / "engine.log"
    return p.read_text() if p.exists() else ""


@pytest.mark.jack
def test_sigkill_of_the_ui_leaves_the_groove_playing_and_attach_shows_it(stage):
    env, sock, got = stage
    ui = Terminal("play", PLAY, env)
    ui.wait_for("PLAYING")
    ui.wait_for("bar 2:")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
    time.sleep(3.0)
    os.kill(ui.pid(), signal.SIGKILL)  # as a crash would, or the OOM killer
    killed = time.monotonic()
    time.sleep(4.5)
    # 4 s either side: at about a note a beat, one note the performer leaves out is a large share
    # of a shorter window (2.5 s: 6 before, 4 after, with the groove playing on)
    before, after = notes_between(got, killed - 4.0, killed), notes_between(got, killed + 0.5, killed + 4.5)
    assert len(before) >= 5 and len(after) >= 0.7 * len(before), \
        f"the groove stopped with the UI: {len(before)} notes in the 4 s before the kill, {len(after)} after"
    assert "UI detached (pid" in engine_log(sock) and "playing on headless" in engine_log(sock)
    ui.kill()

    back = Terminal("back", f"cd {ROOT} && exec {sys.executable} -m drummachine attach", env)
    screen = back.wait_for("PLAYING")
    bar = int(screen.split("bar ", 1)[1].split(":", 1)[0])
    assert bar >= 4, "attach shows the engine where it is, not a new one from the top"
    back.wait_for("MIDI out connected")
    back.keys("Up")  # the attached UI steers the engine
    back.wait_for("121.0 bpm")
    back.keys("q")  # the quit key stops the engine
    end = time.time() + 15
    while sock.exists() and time.time() < end:
        time.sleep(0.1)
    assert not sock.exists(), "the engine stopped and removed its socket"
    stopped = time.monotonic()
    time.sleep(0.5)
    assert not notes_between(got, stopped + 0.2, stopped + 0.5), "nothing plays after quit"
    assert "engine stopping: quit asked by pid" in engine_log(sock)


@pytest.mark.jack
def test_a_textual_exception_and_a_hangup_only_detach(stage):
    env, sock, got = stage
    ui = Terminal("crash", PLAY.replace("exec ", "") + "; echo EXIT=$?; sleep 30",
                  {**env, "DRUMMACHINE_UI_FAULT_AFTER": "2"})
    screen = ui.wait_for("EXIT=1")
    assert "RuntimeError: injected UI fault" in screen
    assert "the engine plays on (pid" in screen.replace("\n", " ")
    t = time.monotonic()
    time.sleep(1.5)
    assert len(notes_between(got, t, t + 1.5)) >= 2, "the groove goes on after the UI's exception"

    hup = Terminal("hup", f"cd {ROOT} && exec {sys.executable} -m drummachine attach", env)
    hup.wait_for("PLAYING")
    hup.kill()  # the terminal closes: SIGHUP to the UI
    t = time.monotonic()
    time.sleep(1.5)
    assert len(notes_between(got, t, t + 1.5)) >= 2, "the groove goes on after the terminal closed"
    assert engine_log(sock).count("UI detached (pid") == 2

    r = run_cli("stop", "--socket", sock, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("stopped the engine (pid"), r.stderr
    assert not sock.exists()


@pytest.mark.jack
def test_headless_engine_takes_any_line_and_answers_health(stage, tmp_path):
    """`play --headless` serves the same socket: bad lines and bad values are one log line each,
    the client stays attached, every command of the table goes through the one parser."""
    env, sock, got = stage
    log = tmp_path / "play.log"
    proc = subprocess.Popen([sys.executable, "-m", "drummachine", "play", "--headless", "--fake-model", "--no-audio",
                             "--midi-out", "rec-attach:rx", "--log", str(log), "--duration", "30"],
                            env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    try:
        end = time.time() + 20
        while not sock.exists() and time.time() < end:
            time.sleep(0.1)
        client = host.SocketClient(sock)
        assert client.info["pid"] == proc.pid and client.info["protocol"] == host.PROTOCOL
        end = time.time() + 10
        while not (client.wait_snapshot() and client.latest().playing) and time.time() < end:
            time.sleep(0.05)
        assert client.latest().playing
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(str(sock))
        raw.sendall(b"not json\n[1,2]\n{\"value\": 3}\n")
        client.command("tempo", 500)  # out of range
        client.command("mute", "cowbell")  # no such voice
        client.command("no_such_command")
        client.command("tempo", 90)
        time.sleep(2.5)  # the tempo lands at the next bar line
        health = client.ask_health()
        assert health is not None and health["dead"] == [] and health["bad_lines"] == 3
        assert {"commit", "generate", "midi-out-watch"} <= set(health["expected"])  # "midi-out": rtmidi's only
        from drummachine.midi import jack_midi

        if jack_midi.available():  # the own JACK client's counts: the soak's per-window lateness
            assert health["midi_out"]["written"] > 0 and health["midi_out"]["periods"] > 0, health["midi_out"]
            assert {"late", "stale", "off_dll"} <= set(health["midi_out"])
        s = client.latest()
        assert s.refused == 3 and s.bpm == pytest.approx(90.0) and s.playing
        raw.close()
        client.close()
        text = log.read_text()
        assert "command tempo: 500 is out of range" in text and "'cowbell' is not a voice" in text
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped: SIGTERM" in err, err
    assert not sock.exists()
