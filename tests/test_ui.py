"""The stage UI: every binding through Pilot to a real engine, a snapshot of the main screen, and
`drummachine play` in a real terminal (tmux) against a JACK server."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from drummachine.core.commands import COMMANDS
from drummachine.core.snapshot import QueuedCue, Snapshot
from drummachine.live.host import EngineClient
from drummachine.ui.app import StageApp, grid_text

from .conftest import ROOT, Harness

SONG = """
name = "Pilot song"
style = "rock"
bpm = 120
[[sections]]
name = "verse"
[[sections]]
name = "chorus"
[[sections]]
name = "outro"
bars = 2
"""


#: under Textual's test driver a refresh and the wait for the screen to settle take about 56 ms
#: here, so at the stage's 30 fps the app is never idle and each key press in a test waited about
#: 2 s for it (in a real terminal a redraw costs about 7 ms: benchmarks/stage.py)
TEST_FPS = 5.0


def make_client():
    h = Harness(SONG, start=0.0)
    return EngineClient(h.engine), h.engine, lambda seconds: h.run(seconds, dt=0.005)


KEY_COMMANDS = [
    ("space", ("toggle", None)), ("f", ("fill", None)), ("n", ("next", None)), ("o", ("outro", None)),
    ("a", ("accent", None)), ("t", ("tap", None)), ("up", ("tempo_up", None)), ("down", ("tempo_down", None)),
    ("p", ("pause", None)), ("k", ("keep", None)), ("r", ("regenerate", None)), ("h", ("half_time", None)),
    ("d", ("double_time", None)), ("x", ("drop", None)), ("1", ("mute", 0)), ("9", ("mute", 8)),
    ("exclamation_mark", ("solo", 0)),
]


async def test_the_buses_line_shows_the_levels_and_the_click_once_there_is_a_cue_bus():
    """No cue bus and full levels: no line (the main screen's snapshot is unchanged). With a cue
    bus: main and cue levels, the click on or off and its level; `i` toggles it on screen."""
    plain = Harness(SONG, start=0.0)
    app = StageApp(EngineClient(plain.engine), fps=TEST_FPS)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not app.w_buses.display
        plain.engine.command("main_level", 0.5)  # a musician turned the PA down: now it shows
        plain.run(0.05)
        app.refresh_view()
        await pilot.pause()
        assert app.w_buses.display and "main 0.50" in str(app.w_buses.render())
        assert "no cue bus" in str(app.w_buses.render())
    h = Harness(SONG, start=0.0, cue_bus=True)
    app = StageApp(EngineClient(h.engine), fps=TEST_FPS)
    async with app.run_test(size=(80, 24)) as pilot:
        h.engine.command("cue_level", 0.25)
        h.run(0.05)
        app.refresh_view()
        await pilot.pause()
        shown = str(app.w_buses.render())
        assert app.w_buses.display and "main 1.00" in shown and "cue 0.25" in shown and "click ON" in shown
        await pilot.press("i")
        h.run(0.05)
        app.refresh_view()
        await pilot.pause()
        assert "click OFF" in str(app.w_buses.render())
        assert len(str(app.w_buses.render())) <= 80


async def test_every_binding_sends_its_command():
    """Each key in turn in one app (an app per key made this file a minute longer)."""
    client, engine, play = make_client()
    app = StageApp(client, fps=TEST_FPS)
    async with app.run_test(size=(80, 24)) as pilot:
        for key, command in KEY_COMMANDS:
            sent = len(app.commands_sent)
            await pilot.press(key)
            await pilot.pause()
            assert len(app.commands_sent) == sent + 1, key
            assert app.commands_sent[-1][0] == command[0], key
            if command[1] is not None:
                assert app.commands_sent[-1][1] == pytest.approx(command[1]), key


@pytest.mark.parametrize("key,offset", [("right", 0.05), ("left", -0.05)])
async def test_the_intensity_keys_move_the_knob_by_a_step(key, offset):
    client, engine, play = make_client()
    app = StageApp(client, fps=TEST_FPS)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(key)
        await pilot.pause()
        assert app.commands_sent[-1][0] == "intensity"
        assert app.commands_sent[-1][1] == pytest.approx(offset)


async def test_cue_paths_reach_the_engine_and_show_on_screen():
    client, engine, play = make_client()
    app = StageApp(client, fps=TEST_FPS)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("space")
        play(2.5)
        assert engine.playing
        await pilot.press("n")
        await pilot.pause(0.1)
        assert engine.conductor.queued is not None
        for _ in range(40):  # the screen is redrawn TEST_FPS times a second (a loaded host: later)
            song_text = str(app.query_one("#song").render())
            if "chorus at bar" in song_text:
                break
            await pilot.pause(0.05)
        assert "chorus at bar" in song_text  # the queued cue is shown until it takes effect
        play(4.0)
        assert engine.snapshot().section == "chorus"
        await pilot.press("f")
        play(0.05)
        assert engine.conductor.fill_requests
        await pilot.press("right_square_bracket")  # choose the density knob
        await pilot.press("right")
        play(0.05)
        assert engine.knobs["density"] == pytest.approx(0.1)
        await pilot.press("o")
        play(8.0)
        assert not engine.playing
        await pilot.press("q")
    assert ("stop", None) in app.commands_sent


async def test_help_screen_lists_the_keys():
    client, engine, play = make_client()
    app = StageApp(client, fps=TEST_FPS)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        text = str(app.screen.query_one("#help").render())
        for word in ("Start/stop", "Fill", "Next section", "Outro", "Accent", "Tap", "Quit", "Drop",
                     COMMANDS["drop"].help):
            assert word in text
        lines = {line.split()[0] for line in text.splitlines() if line.strip()}
        # regression: keys as a musician reads them, not Textual's internal names
        assert {"]", "[", "?,f1", "↑"} <= lines
        assert "right_square_bracket" not in text and "question_mark" not in text
        await pilot.press("escape")


class StaticClient:
    """A fixed snapshot: what the snapshot test draws."""

    def __init__(self):
        grid = np.zeros((16, 3, 9))
        for s in range(0, 16, 2):
            grid[s, 0, 2], grid[s, 1, 2] = 1, 0.5 + 0.3 * (s % 4 == 0)
        for s in (0, 8, 10):
            grid[s, 0, 0], grid[s, 1, 0] = 1, 0.9
        for s in (4, 12):
            grid[s, 0, 1], grid[s, 1, 1] = 1, 0.8
        self.snap = Snapshot(
            playing=True, bar=6, step=9, bpm=128.0, grid=grid.astype(np.float32), steps=105, gen_ms_p99=0.31,
            song="Highway (rock)", kind="groove", section="verse", section_index=1, bar_in_section=2,
            section_bars=16, style="rock", intensity=0.6, queued=QueuedCue("next", 8, "chorus"),
            knobs={"density": 0.0, "swing": 0.2, "humanize": 1.0, "temperature": 1.0}, cpu=21.0, muted=(3,),
            midi_out="connected", midi_in=("connected",), sections=("intro", "verse", "chorus", "outro"))

    def latest(self):
        return self.snap

    def command(self, name, value=None):
        pass


def test_main_screen_snapshot(snap_compare):
    app = StageApp(StaticClient(), fps=1.0)
    assert snap_compare(app, terminal_size=(80, 24))


def test_grid_text_marks_the_playhead_and_mutes():
    t = grid_text(StaticClient().snap)
    lines = t.plain.splitlines()
    assert lines[0].startswith(" ♩  1")
    assert any(line.startswith(" OH") for line in lines)


@pytest.mark.jack
def test_play_in_a_real_terminal_under_tmux(jack_server, tmp_path):
    session = f"dm{int(time.time())}"
    tmux = ["tmux", "-L", f"dm-ui-{os.getpid()}"]  # a tmux server of the test's own
    run = tmp_path / "run"  # the engine's socket folder: this test's own (see live.host)
    run.mkdir(mode=0o700)
    cmd = (f"cd {ROOT} && python -m drummachine play --fake-model --no-audio --midi-virtual --song "
           f"presets/songs/slow_funk.toml; echo EXIT=$? > {tmp_path / 'exit'}")
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-e",
                    f"XDG_RUNTIME_DIR={run}", cmd], check=True)

    def screen():
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    def wait_for(text, timeout=20.0):
        end = time.time() + timeout
        while time.time() < end:
            s = screen()
            if text in s:
                return s
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never showed; screen:\n{screen()}")

    try:
        wait_for("PLAYING")
        wait_for("Slow funk")
        wait_for("bar 2:")  # past the count-in bar, into the verse
        subprocess.run([*tmux, "send-keys", "-t", session, "n"], check=True)
        wait_for("→ chorus at bar")
        subprocess.run([*tmux, "send-keys", "-t", session, "Up"], check=True)
        wait_for("97.0 bpm")
        subprocess.run([*tmux, "send-keys", "-t", session, "space"], check=True)
        wait_for("STOPPED")
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True)
        end = time.time() + 15
        while not (tmp_path / "exit").exists() and time.time() < end:
            time.sleep(0.2)
        assert (tmp_path / "exit").read_text().strip() == "EXIT=0"
        assert not (run / "drummachine" / "engine.sock").exists(), "quit stopped the engine behind the UI"
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        if (run / "drummachine" / "engine.sock").exists():
            subprocess.run([sys.executable, "-m", "drummachine", "stop", "--socket",
                            str(run / "drummachine" / "engine.sock")], capture_output=True, timeout=30)


async def test_midi_learn_sends_the_chosen_action():
    client, engine, play = make_client()
    app = StageApp(client, fps=TEST_FPS)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("l")
        await pilot.pause()
        await pilot.press("down", "enter")  # the second action: stop
        await pilot.pause()
        assert app.commands_sent[-1] == ("learn", "stop")
        await pilot.press("escape")
        await pilot.pause()
        assert app.commands_sent[-1] == ("learn", None)


async def test_the_mouse_picks_a_knob_and_mutes_a_voice():
    client, engine, play = make_client()
    app = StageApp(client, fps=TEST_FPS)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.click("#knobs", offset=(2, 2))  # third row: swing
        await pilot.pause()
        assert app.w_knobs.selected == 2
        await pilot.click("#grid", offset=(1, 1))  # the first voice row's label: ride
        await pilot.pause()
        assert app.commands_sent[-1] == ("mute", 8)
