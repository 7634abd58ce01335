"""Following the band on the stage UI: the follow line and its key through Textual's driver on an
engine fed band readings, and `drummachine play --listen` behind the UI in a real terminal (tmux)
against a JACK server, a player client being the band."""

import os
import re
import subprocess
import sys
import time

import pytest

from drummachine.core.follow import FollowConfig, Follower
from drummachine.core.snapshot import Snapshot
from drummachine.live.host import EngineClient
from drummachine.ui.app import StageApp, band_text

from .conftest import ROOT, Harness
from .test_follow import band_beats, feed

TEST_FPS = 5.0  # see tests/test_ui.py: under Textual's test driver a refresh costs ~56 ms


def test_the_follow_line_says_state_tempo_phase_and_confidence():
    widest = Snapshot(follow_mode="all", follow_state="following", band_bpm=199.9, band_phase_ms=-249.0,
                      band_confidence=1.0, band_intensity=-0.4, band_level_db=-99.0)
    assert len(band_text(widest).plain) <= 80  # the stage's terminal: nothing cut off
    s = Snapshot(follow_mode="beat", follow_state="holding", band_bpm=118.4, band_phase_ms=-12.0,
                 band_confidence=0.21, band_level_db=-41.3)
    line = band_text(s).plain
    assert "in -41dB" in line  # the input's level: where to set --listen-gate
    assert "BAND HOLDING" in line and "beat" in line
    assert "118.4 bpm" in line and "-12 ms" in line and "conf 0.21" in line
    assert "dyn" not in line  # the dynamics' offset only in mode all
    line = band_text(Snapshot(follow_mode="all", follow_state="listening", band_intensity=-0.3)).plain
    assert "BAND LISTENING" in line and "not heard yet" in line and "dyn -0.30" in line
    # switched off while listening: it says off, whatever the follower's last state
    assert "BAND OFF" in band_text(Snapshot(follow_mode="off", follow_state="following", band_bpm=120.0)).plain


@pytest.mark.parametrize("state, shown", [("clipping", "in CLIP"), ("input gone", "in GONE"),
                                          ("not there", "in GONE"), ("listener stopped", "in DOWN")])
def test_the_follow_line_says_an_input_to_act_on_in_place_of_its_level(state, shown):
    widest = Snapshot(follow_mode="all", follow_state="holding", band_bpm=199.9, band_phase_ms=-249.0,
                      band_confidence=1.0, band_intensity=-0.4, band_level_db=-3.0, band_input=state)
    line = band_text(widest).plain
    assert shown in line and "dB" not in line
    assert len(line) <= 80
    # listening (or silent: its level says so) the level is shown
    for state in ("listening", "silence", ""):
        assert "in -3dB" in band_text(widest.with_(band_input=state)).plain


async def test_the_b_key_cycles_following_and_the_screen_shows_the_band():
    h = Harness(start=100.0)
    h.engine.follower = Follower(FollowConfig(mode="off"), 120.0)
    client = EngineClient(h.engine)
    app = StageApp(client, fps=TEST_FPS)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not app.w_band.display  # not listening, following off: no band line
        await pilot.press("b")
        assert app.commands_sent[-1] == ("follow_band", None)
        assert h.engine.follower.mode == "tempo"
        await pilot.press("b")
        assert h.engine.follower.mode == "beat"
        h.engine.command("start")
        feed(h, band_beats(lambda b: 126.0, 200, start=100.3), 12.0)
        app.refresh_view()
        await pilot.pause()
        assert app.w_band.display
        shown = str(app.w_band.render())
        assert "BAND FOLLOWING" in shown and "126.0 bpm" in shown
        await pilot.press("b")
        await pilot.press("b")
        assert h.engine.follower.mode == "off"
        app.refresh_view()
        await pilot.pause()
        assert app.w_band.display  # kept: off is shown as off
        assert "BAND OFF" in str(app.w_band.render())
        await pilot.press("question_mark")
        await pilot.pause()
        assert "follow the band" in str(app.screen.query_one("#help").render())


def tmux_session(tmp_path, cmd):
    """A tmux server of the test's own running ``cmd`` in an 80x24 terminal; (tmux argv, name,
    screen(), run folder)."""
    session = f"dmf{int(time.time())}"
    tmux = ["tmux", "-L", f"dm-follow-{os.getpid()}"]
    run = tmp_path / "run"  # the engine's socket folder: this test's own (see live.host)
    run.mkdir(mode=0o700)
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-e",
                    f"XDG_RUNTIME_DIR={run}", f"cd {ROOT} && {cmd}; echo EXIT=$? > {tmp_path / 'exit'}"],
                   check=True)

    def screen():
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    return tmux, session, screen, run


def wait_for(screen, predicate, what, timeout=30.0):
    end = time.time() + timeout
    while time.time() < end:
        s = screen()
        if predicate(s):
            return s
        time.sleep(0.2)
    raise AssertionError(f"{what} never showed; screen:\n{screen()}")


def quit_and_check(tmux, session, tmp_path, run):
    subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True)
    end = time.time() + 15
    while not (tmp_path / "exit").exists() and time.time() < end:
        time.sleep(0.2)
    assert (tmp_path / "exit").read_text().strip() == "EXIT=0"
    assert not (run / "drummachine" / "engine.sock").exists(), "quit stopped the engine behind the UI"


def cleanup(tmux, run):
    subprocess.run([*tmux, "kill-server"], capture_output=True)
    if (run / "drummachine" / "engine.sock").exists():
        subprocess.run([sys.executable, "-m", "drummachine", "stop", "--socket",
                        str(run / "drummachine" / "engine.sock")], capture_output=True, timeout=30)


def drummers_band(bars: int):
    """A real drummer's performance as a band mix (no drums), its bpm; skipped without the dataset."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    material = pytest.importorskip("follow_material")
    if not (material.GROOVE / "info.csv").exists():
        pytest.skip("the Groove MIDI Dataset is not on this machine")
    path, bpm = material.validation_performances(1)[0]
    return material, material.make_clip(path, bpm, "steady", "band", rate=48000, bars=bars), bpm


@pytest.mark.jack
@pytest.mark.slow
def test_listen_behind_the_stage_ui_follows_a_band_in_a_real_terminal(jack_server, tmp_path):
    """Issue 13 on stage: `play --listen band:out` with its UI; the band is a player client
    playing a real drummer's performance (band mix, no drums) 4% faster than the song; the screen
    shows the band's tempo while following, and the b key switches following off."""
    material, clip, bpm = drummers_band(16)
    player = material.BandPlayer(clip.audio, "band-ui")
    tmux, session, screen, run = tmux_session(
        tmp_path, f"python -m drummachine play --fake-model --no-audio --midi-virtual --listen {player.port_name} "
                  f"--follow beat --bpm {bpm * 0.96:.2f} --log {tmp_path / 'engine.log'}")
    try:
        wait_for(screen, lambda s: "PLAYING" in s, "PLAYING")
        wait_for(screen, lambda s: "BAND LISTENING" in s, "the band line (listening)")
        player.start()
        shown = wait_for(screen, lambda s: "BAND FOLLOWING" in s, "BAND FOLLOWING", timeout=40.0)
        line = next(x for x in shown.splitlines() if "BAND FOLLOWING" in x)
        heard = float(re.search(r"beat +([0-9.]+) bpm", line).group(1))
        assert heard == pytest.approx(bpm, rel=0.03)  # the band's tempo, not the song's 4% below it
        level = float(re.search(r"in (-[0-9]+)dB", line).group(1))
        assert -60 < level < 0  # the band's input level, as heard (where to set --listen-gate)
        subprocess.run([*tmux, "send-keys", "-t", session, "b"], check=True)  # beat -> all
        wait_for(screen, lambda s: re.search(r"BAND (FOLLOWING|HOLDING) +all ", s), "mode all")
        subprocess.run([*tmux, "send-keys", "-t", session, "b"], check=True)  # all -> off
        wait_for(screen, lambda s: "BAND OFF" in s, "BAND OFF")
        quit_and_check(tmux, session, tmp_path, run)
    finally:
        cleanup(tmux, run)
        player.close()


@pytest.mark.jack
@pytest.mark.slow
def test_an_input_that_clips_then_goes_is_on_the_screen_and_in_the_log(jack_server, tmp_path):
    """The band's send too hot (a real drummer's band mix driven 18 dB into full scale), then its
    port gone (the player client closed: a cable pulled, an interface off): the band line says
    "in CLIP", then "in GONE", the engine's log says each once, and the machine plays on."""
    import numpy as np

    material, clip, bpm = drummers_band(8)
    hot = np.clip(clip.audio * 8.0, -1.0, 1.0).astype(np.float32)
    assert np.mean(np.abs(hot) >= 0.999) > 0.001  # it clips
    player = material.BandPlayer(hot, "band-hot")
    port = player.port_name
    log_path = tmp_path / "engine.log"
    tmux, session, screen, run = tmux_session(
        tmp_path, f"python -m drummachine play --fake-model --no-audio --midi-virtual --listen {port} "
                  f"--follow beat --bpm {bpm:.2f} --log {log_path}")
    try:
        wait_for(screen, lambda s: "BAND LISTENING" in s, "the band line (listening)")
        player.start()
        wait_for(screen, lambda s: re.search(r"BAND .* in CLIP", s), "in CLIP", timeout=20.0)
        player.close()
        player = None
        shown = wait_for(screen, lambda s: re.search(r"BAND .* in GONE", s), "in GONE", timeout=10.0)
        assert "PLAYING" in shown and "Traceback" not in shown
        quit_and_check(tmux, session, tmp_path, run)
    finally:
        cleanup(tmux, run)
        if player is not None:
            player.close()
    text = log_path.read_text()
    assert text.count(f"{port} clips") == 1, text
    assert text.count(f"{port} is gone") == 1, text


@pytest.mark.jack
def test_listen_behind_the_ui_to_a_port_that_is_not_there_plays_on(jack_server, tmp_path):
    tmux, session, screen, run = tmux_session(
        tmp_path, f"python -m drummachine play --fake-model --no-audio --midi-virtual --listen no-such-band "
                  f"--log {tmp_path / 'engine.log'}")
    try:
        wait_for(screen, lambda s: "PLAYING" in s, "PLAYING")
        wait_for(screen, lambda s: "no-such-band" in s, "the warning naming the port")
        wait_for(screen, lambda s: "in GONE" in s, "the band line: its input gone")
        assert "Traceback" not in screen()
        quit_and_check(tmux, session, tmp_path, run)
    finally:
        cleanup(tmux, run)
