"""The cue bus for the in-ears, wired into play: the engine's clicks (count-in included), the section
cue a bar before each change, the levels by command and by CC 108/109, a song's click settings,
--cue-out's JACK ports; MIDI out the same with or without it. The logic on a manual clock; the
sound through the real mixer process on a JACK server of our own (four ports a side)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from drummachine.core.conductor import COUNT_IN, ENDING, FINAL, GROOVE, BarPlan, announces_change
from drummachine.core.engine import CUE
from drummachine.core.errors import DrumMachineError
from drummachine.core.events import CLOCK, MemorySink
from drummachine.core.song import song_from_toml

from .conftest import ROOT, Harness, own_jack_server, wait_for

#: 240 bpm: a bar a second. Bars: 0 count-in, 1-2 intro, 3-4 verse, 5 the final hit
SHORT = """
name = "Short"
style = "rock"
bpm = 240
count_in = 1

[[sections]]
name = "intro"
bars = 2
fill_every = 0

[[sections]]
name = "verse"
bars = 2
fill_every = 0
"""


class CueSink(MemorySink):
    """An output with a cue bus, as the mixer's sink is (``cue``, ``click``, ``click_level``,
    ``set_level``): records what it is sent and, per beat's first clock pulse, whether it clicks."""

    def __init__(self):
        super().__init__()
        self.cue, self.click, self.click_level = True, True, 0.5
        self.levels: list[tuple[str, float]] = []
        self.clicks: list[tuple[int, bool]] = []  # (step, click on) at each beat's first pulse

    def send(self, events):
        for e in events:
            if e.kind == CLOCK and e.step % 4 == 0 and (not self.clicks or self.clicks[-1][0] != e.step):
                self.clicks.append((e.step, self.click))
        super().send(events)

    def set_level(self, bus, level):
        self.levels.append((bus, level))


def harness(song=SHORT, **kw):
    h = Harness(song, start=100.0, **kw)
    cue = CueSink()
    h.engine.sinks.append(cue)
    h.engine._click_to_sinks()
    return h, cue


# --- the logic, on a manual clock ------------------------------------------------------------

def plan(kind, section=0, bar_in_section=0):
    return BarPlan(0, kind, section, bar_in_section, "rock", 120.0, 0.5)


@pytest.mark.parametrize("before, after, announced", [
    (plan(GROOVE, 0, 1), plan(GROOVE, 1, 0), True),  # a new section
    (plan(GROOVE, 2, 3), plan(GROOVE, 2, 0), True),  # the same again (a go-to)
    (plan(GROOVE, 0, 1), plan(GROOVE, 0, 2), False),  # the section goes on
    (plan(COUNT_IN, -1), plan(GROOVE, 0, 0), False),  # never the first section
    (plan(GROOVE, 1, 5), plan(ENDING, 1, 5), True),  # the outro
    (plan(GROOVE, 1, 1), plan(FINAL, 1, 1), True),  # the song's last bar, then its final hit
    (plan(ENDING, 1, 5), plan(FINAL, 1, 5), False),  # the outro's final hit: announced with the outro
])
def test_which_bar_lines_the_cue_bus_announces(before, after, announced):
    assert announces_change(before, after) == announced


def test_a_section_cue_one_bar_before_each_change_on_the_cue_bus_only():
    h, cue = harness(cue_bus=True)
    h.engine.command("start")
    h.run(7.0)
    t = h.engine.transport.time_of
    cues = [e.time for e in cue.events if e.kind == CUE]
    # the intro's second bar (the verse is next), the verse's second (the final hit is next)
    assert cues == [t(2 * 16), t(4 * 16)]
    assert [h.engine.conductor.plan(b).kind for b in (0, 1, 3, 5)] == [COUNT_IN, GROOVE, GROOVE, FINAL]
    # the other output (MIDI's place) gets neither the cue nor the clock pulses made for the click
    assert not [e for e in h.sink.events if e.kind in (CUE, CLOCK)]
    beats = [s for s, _ in cue.clicks]
    assert beats[:8] == [0, 4, 8, 12, 16, 20, 24, 28]  # every beat from the count-in's first


def test_a_change_cued_live_after_its_bar_line_is_announced_at_once():
    h, cue = harness(SHORT.replace("bars = 2", "bars = 0"), cue_bus=True)  # open-ended sections
    h.engine.command("start")
    h.run(2.6)  # into the intro's second bar (bar 2), past its first beat
    h.engine.command("next")
    asked = h.clock.now()
    h.run(2.0)
    cues = [e for e in cue.events if e.kind == CUE]
    change = next(b for b in range(1, 6) if h.engine.conductor.plan(b).section == 1)
    assert len(cues) == 1 and asked <= cues[0].time < h.engine.transport.time_of(change * 16)
    h.engine.command("outro")
    asked = h.clock.now()
    h.run(3.0)
    ending = next(b for b in range(change, change + 4) if h.engine.conductor.plan(b).kind == ENDING)
    cues = [e for e in cue.events if e.kind == CUE]
    assert len(cues) == 2 and asked <= cues[1].time < h.engine.transport.time_of(ending * 16)


@pytest.mark.parametrize("clock_out", [False, True])
def test_midi_out_is_the_same_with_or_without_the_cue_bus(clock_out):
    sent = []
    for cue_bus in (False, True):
        h = Harness(SHORT, start=100.0, cue_bus=cue_bus, midi_clock=clock_out)
        h.engine.command("start")
        h.run(7.0)
        sent.append(h.sink.events)
    assert sent[0] == sent[1] and len(sent[0]) > 20
    assert any(e.kind == CLOCK for e in sent[0]) == clock_out


def test_the_count_in_clicks_in_a_song_with_the_click_off():
    h, cue = harness(SHORT.replace('style = "rock"', 'style = "rock"\nclick = false\nclick_level = 0.3'),
                     cue_bus=True)
    assert cue.click is False and cue.click_level == 0.3
    h.engine.command("start")
    h.run(3.0)
    assert [on for s, on in cue.clicks if s < 16] == [True] * 4  # the count-in
    assert cue.clicks[4:] and not any(on for s, on in cue.clicks if s >= 16)  # then the song's: off


def test_levels_and_the_click_by_command_reach_the_outputs_and_a_new_song_sets_its_click():
    h, cue = harness(cue_bus=True, click=False)
    assert cue.click is False  # --click off, and the song sets none
    for name, value in (("main_level", 0.25), ("cue_level", 0.75), ("click", None), ("click_level", 0.9)):
        h.engine.command(name, value)
    h.engine.pump()
    assert cue.levels == [("main", 0.25), ("cue", 0.75)] and h.engine.levels == {"main": 0.25, "cue": 0.75}
    assert cue.click is True and cue.click_level == 0.9
    h.engine.command("click", False)
    h.engine.pump()
    assert cue.click is False
    song = song_from_toml(SHORT.replace("count_in = 1", "count_in = 1\nclick = true\nclick_level = 0.2"), "s.toml")
    h.engine.command("song", song)
    h.engine.pump()
    assert cue.click is True and cue.click_level == 0.2


def test_the_click_level_the_engine_sets_is_the_level_the_sink_clicks_at():
    from drummachine.audio.mixing import CLICK_ACCENT
    from drummachine.audio.process import AudioProcessSink
    from drummachine.core.events import Event

    pushed = []
    sink = AudioProcessSink.__new__(AudioProcessSink)  # its send alone: no mixer process
    sink.rate, sink.cue, sink.click, sink._beat_step = 48000, True, True, -1
    sink.events = type("Ring", (), {"push": lambda self, *row: pushed.append(row)})()
    h = Harness(SHORT.replace("count_in = 1", "count_in = 1\nclick_level = 0.2"), start=100.0, cue_bus=True)
    h.engine.sinks.append(sink)
    h.engine._click_to_sinks()
    sink.send([Event(1.0, CLOCK, step=0)])
    assert pushed == [(48000, CLICK_ACCENT, 0.2)]


def test_cc_108_and_109_set_the_main_and_cue_levels():
    from drummachine.core.controller import PresetControl
    from drummachine.live.presets import controller_stack

    warnings = []
    control = PresetControl(controller_stack(None, warnings))
    assert not warnings
    got = [control.handle([0xB0, cc, byte], 0.0) for cc, byte in ((108, 127), (108, 0), (109, 64), (109, 5))]
    assert [(c.name, c.value) for cmds in got for c in cmds] == [
        ("main_level", 1.0), ("main_level", 0.0), ("cue_level", round(64 / 127, 3)), ("cue_level", round(5 / 127, 3))]


@pytest.mark.parametrize("text, needle", [
    ("click = 1", "(click): 1 is not allowed; allowed: true or false"),
    ('click = "on"', "allowed: true or false"),
    ("click_level = 1.5", "(click_level): 1.5 is not allowed; allowed: a number 0..1"),
])
def test_a_bad_click_setting_in_a_song_is_one_line(text, needle):
    with pytest.raises(DrumMachineError) as e:
        song_from_toml(text + '\n[[sections]]\nname = "a"\n', "song.toml")
    assert needle in str(e.value) and str(e.value).startswith("song.toml:1") and "\n" not in str(e.value)


def test_a_song_without_click_settings_takes_the_defaults():
    song = song_from_toml(SHORT, "s.toml")
    assert song.click is None and song.click_level is None


@pytest.mark.parametrize("spec, ports", [
    ("channels", ()), ("system:playback_3,system:playback_4", ("system:playback_3", "system:playback_4")),
    ("ears", ("ears",)),
])
def test_cue_out_names_ports_or_the_devices_channels(spec, ports):
    from drummachine.audio.cue_out import cue_ports

    assert cue_ports(spec) == ports


@pytest.mark.parametrize("spec", ["a,b,c", "a,", ""])
def test_a_malformed_cue_out_is_one_line(spec):
    from drummachine.audio.cue_out import cue_ports

    with pytest.raises(DrumMachineError) as e:
        cue_ports(spec)
    assert str(e.value).startswith("--cue-out:") and "\n" not in str(e.value)


def test_the_mixers_ports_and_a_port_by_a_unique_part_of_its_name():
    from drummachine.audio.cue_out import find_port, mixer_ports

    graph = {"system:playback_1": True, "system:playback_2": True, "ears:in_l": True, "PortAudio:out_0": False,
             "PortAudio:out_1": False, "PortAudio:out_2": False, "PortAudio:out_3": False,
             "PortAudio-01:out_0": False, "PortAudio-01:out_1": False, "PortAudio:in_0": True}
    assert mixer_ports(4, graph) == tuple(f"PortAudio:out_{k}" for k in range(4))
    assert mixer_ports(2, graph) == ("PortAudio-01:out_0", "PortAudio-01:out_1")
    assert find_port("ears", graph) == "ears:in_l"
    with pytest.raises(DrumMachineError, match="matches 2 JACK input ports"):
        find_port("playback", graph)
    with pytest.raises(DrumMachineError, match="cannot tell the mixer's JACK client"):
        mixer_ports(3, graph)


def test_play_refuses_a_malformed_cue_out_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "drummachine", "play", "--headless", "--fake-model", "--no-audio",
                        "--cue-out", "a,b,c", "--duration", "1", "--log", os.devnull,
                        "--socket", str(tmp_path / "engine.sock")], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "--cue-out" in r.stderr


# --- through the mixer process, on JACK --------------------------------------------------------

@pytest.fixture
def jack4(monkeypatch):
    """Four ports a side: the main bus and the cue bus."""
    # the tests' Sessions run in this process: the kit through PortAudio in the mixer process, not
    # through drummachine's own JACK client here (libjack in one process takes one server: this
    # process has clients on the shared one); that path is `play`'s, in a process of its own, below
    monkeypatch.setenv("DRUMMACHINE_JACK_AUDIO", "portaudio")
    yield from own_jack_server(monkeypatch, 4, "cue")


@pytest.fixture
def jack2(monkeypatch):
    """Two ports a side: a stereo interface, no room for the cue bus."""
    monkeypatch.setenv("DRUMMACHINE_JACK_AUDIO", "portaudio")  # as jack4's
    yield from own_jack_server(monkeypatch, 2, "cue")


def connections() -> dict[str, list[str]]:
    from drummachine.audio.cue_out import _graph

    return _graph()[1]


@pytest.mark.jack
def test_play_with_cue_out_opens_the_cue_bus_and_connects_it_to_the_ports(jack4):
    from drummachine.live.session import Options, Session

    with Session(Options(fake_model=True, cue_out="playback_4", performer=False)) as session:
        assert session.audio.cue and session.engine.cue_bus and not session.warnings
        links = connections()
        assert links["PortAudio:out_2"] == ["system:playback_4"] == links["PortAudio:out_3"]  # only there
        assert links["PortAudio:out_0"] == ["system:playback_1"]  # the main bus stays where it was
        session.command("cue_level", 0.5)
        session.engine.pump()
        assert session.engine.levels["cue"] == 0.5
    with Session(Options(fake_model=True, cue_out="nosuch", performer=False)) as session:
        assert session.engine.cue_bus  # a port that is not there: a warning, the cue bus plays on
        assert [w for w in session.warnings if w.startswith("--cue-out: 'nosuch' matches 0 JACK input ports")]


@pytest.mark.jack
def test_a_restarted_mixer_has_its_cue_bus_connected_again(jack4):
    from drummachine.live.session import Options, Session

    # swapped, so that PortAudio's own connections (out_2 to playback_3) are not what is asked
    with Session(Options(fake_model=True, cue_out="system:playback_4,system:playback_3", performer=False)) as session:
        session.start_threads()
        pid = session.audio.proc.pid
        session.audio.proc.kill()  # the mixer dies; the watchdog starts another
        deadline = time.monotonic() + 10
        while (session.audio.restarts == 0 or session.audio.proc.pid == pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session.audio.restarts == 1
        for _ in range(20):  # the watchdog connects right after the restart
            links = connections()
            if links.get("PortAudio:out_2") == ["system:playback_4"] and \
                    links.get("PortAudio:out_3") == ["system:playback_3"]:
                break
            time.sleep(0.1)
        assert links["PortAudio:out_2"] == ["system:playback_4"] and links["PortAudio:out_3"] == ["system:playback_3"]


@pytest.mark.jack
def test_with_too_few_channels_for_the_cue_bus_play_goes_on_without_it(jack2):
    from drummachine.live.session import Options, Session

    with Session(Options(fake_model=True, cue_out="channels", performer=False)) as session:
        assert session.audio is not None and not session.audio.cue and not session.engine.cue_bus
        assert [w for w in session.warnings if w.startswith("--cue-out: 4 output channels needed") and
                w.endswith("playing without the cue bus")]


@pytest.mark.jack
def test_play_through_its_own_jack_client_sends_the_cue_bus_where_asked(jack4, monkeypatch, tmp_path):
    """`play` as on stage: the kit's ports are the engine's own JACK client's (drummachine:out_N),
    the cue bus on them connected where --cue-out says and nowhere else."""
    import sys

    monkeypatch.delenv("DRUMMACHINE_JACK_AUDIO")
    log = tmp_path / "play.log"
    play = subprocess.Popen([sys.executable, "-m", "drummachine", "play", "--headless", "--fake-model", "--cue-out",
                             "playback_4", "--duration", "3", "--log", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: log.exists() and "cue bus: " in log.read_text(), 15), \
            log.read_text() if log.exists() else "no log"
        links = connections()
        _, err = play.communicate(timeout=30)
    finally:
        if play.poll() is None:
            play.kill()
    assert play.returncode == 0, err
    assert "the kit plays through drummachine's own JACK client" in log.read_text()
    assert links["drummachine:out_2"] == ["system:playback_4"] == links["drummachine:out_3"]  # only there
    assert links["drummachine:out_0"] == ["system:playback_1"]  # the main bus stays where it was
    assert not [p for p in links if p.startswith("PortAudio")], links


@pytest.mark.jack
def test_through_its_own_jack_client_too_few_playback_ports_drop_the_cue_bus(jack2, monkeypatch):
    """As PortAudio's JACK device had as many channels as the server's playback ports, the
    engine's own client refuses a layout the sound card cannot take whole: the cue bus goes first."""
    import sys

    monkeypatch.delenv("DRUMMACHINE_JACK_AUDIO")
    play = subprocess.run([sys.executable, "-m", "drummachine", "play", "--headless", "--fake-model", "--cue-out",
                           "channels", "--duration", "2"], capture_output=True, text=True, timeout=60)
    assert play.returncode == 0, play.stderr
    assert "--cue-out: 4 output channels needed; system has 2" in play.stderr
    assert "playing without the cue bus" in play.stderr


@pytest.mark.jack
def test_clicks_on_the_beat_with_the_drums_and_the_section_cue_a_bar_ahead_at_the_levels_asked(jack4):
    """The engine's clock pulses click on the cue bus on each beat's exact sample, the drums on
    both buses on theirs (one loopback delay everywhere: 0 samples apart); the section cue on
    the bar line a bar before the verse and before the final hit, on the cue bus alone; CC 108
    and 109 (the default controller map) scale the main and cue buses from the next block."""
    from drummachine.audio.cue_out import connect_cue
    from drummachine.audio.mixing import CUE_DRUMS_LEVEL, cue_sound
    from drummachine.audio.process import AudioProcessSink
    from drummachine.core.controller import PresetControl
    from drummachine.core.engine import Engine
    from drummachine.core.fake_generator import FakeKicks
    from drummachine.core.voices import KICK
    from drummachine.live.presets import controller_stack

    rate = 48000
    sink = AudioProcessSink(None, rate, record_seconds=12.0, cue=True).wait_ready()
    sent = []
    try:
        for k in (0, 1):  # the main bus into the recording's inputs 0, 1; nothing else in
            subprocess.run(["jack_disconnect", f"system:capture_{k + 1}", f"PortAudio:in_{k}"], capture_output=True)
            subprocess.run(["jack_connect", f"PortAudio:out_{k}", f"PortAudio:in_{k}"], check=True)
        for k in (2, 3):
            subprocess.run(["jack_disconnect", f"system:capture_{k + 1}", f"PortAudio:in_{k}"], capture_output=True)
        # --cue-out's way: the cue bus to the recording's inputs 2, 3, and nowhere else
        assert connect_cue("PortAudio:in_2,PortAudio:in_3", 4) == (("PortAudio:out_2", "PortAudio:in_2"),
                                                                    ("PortAudio:out_3", "PortAudio:in_3"))
        song = song_from_toml(SHORT, "short.toml")
        engine = Engine(FakeKicks(), song, sink.clock, [sink], start_delay=0.3, cue_bus=True)
        orig = sink.send
        sink.send = lambda events: (sent.extend(events), orig(events))
        engine.command("cue_level", 0.5)  # the cue bus's sounds and drums add up: below the limiter
        stop = threading.Event()
        threads = engine.run_threads(stop)
        engine.command("start")
        deadline = time.monotonic() + 10
        while (engine.playing or not engine.stats.steps) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(2)
        # the levels by CC, then one kick: the buses' levels from the next block (this thread is now
        # the ring's one writer)
        sink.panic()  # the final crash still rings: silence it, the kick alone then
        time.sleep(0.1)
        control = PresetControl(controller_stack(None, []))
        for cmd in control.handle([0xB0, 108, 64], 0.0) + control.handle([0xB0, 109, 32], 0.0):
            engine.command(cmd.name, cmd.value)
        engine.pump()
        kick_at = round((sink.clock.now() + 0.3) * rate)
        sink.events.push(kick_at, KICK, 0.9)
        time.sleep(0.8)
    finally:
        sink.close()
    rec = sink.recording
    beats = {}
    for e in sent:
        if e.kind == CLOCK and e.step % 4 == 0 and e.step not in beats:
            beats[e.step] = round(e.time * rate)
    notes = sorted(round(e.time * rate) for e in sent if e.kind == "note")
    cues = [round(e.time * rate) for e in sent if e.kind == CUE]
    assert len(beats) >= 20 and cues == [beats[32], beats[64]]  # bars 2 and 4 of 0-5

    def onset(channel, frame):
        loud = np.flatnonzero(np.abs(rec[frame - 200:frame + 2048, channel]) > 1e-6)
        return int(loud[0]) - 200 if loud.size else None

    # the count-in's first hat, on the first beat: the loopback's delay, less the output latency
    # the sink hands each hit over early by (so that it sounds on its time at the sound card)
    delay = onset(0, notes[0])
    assert 0 <= delay + sink.early_frames <= 3 * 128 and notes[0] == beats[0]
    assert [onset(0, f) for f in notes[1:4]] == [delay] * 3  # the drums on their samples (the count-in's hats)
    # the cue bus: its drums are the main bus's at CUE_DRUMS_LEVEL, the rest its own sounds, all at
    # cue_level 0.5: the click (0.5, the bar's first accented) and the section cue, sample for sample
    level = 0.5
    own = rec[:, 2] - level * CUE_DRUMS_LEVEL * rec[:, 0]
    assert np.abs(own[beats[0] - 4800:beats[0] + delay]).max() < 1e-5  # nothing before the first beat
    click, accent, section = (cue_sound(n, rate) for n in ("click", "click_accent", "cue"))
    worst = 0.0
    for step, frame in sorted(beats.items()):
        expected = 0.5 * (accent if step % 16 == 0 else click)
        if frame in cues:
            expected = np.pad(expected, (0, len(section) - len(expected))) + section
        got = own[frame + delay:frame + delay + len(expected)]
        np.testing.assert_allclose(got, level * expected, atol=2e-4, err_msg=f"step {step}")
        worst = max(worst, float(np.abs(got - level * expected).max()))
        assert np.abs(own[frame + delay - 64:frame + delay]).max() < 1e-5, step  # not a sample early
    # (the main bus carries none of them: else taking it away would leave them different)
    # CC 108 at 64 and CC 109 at 32: one kick, main at 64/127, the cue bus's drums at 32/127
    main_level, cue_level = round(64 / 127, 3), round(32 / 127, 3)
    from drummachine.audio.kit import built_in, from_packed
    from drummachine.audio.mixing import Voices

    kit = built_in(rate)
    alone = Voices(from_packed(kit.data, kit.layout), block_max=4800, cue=True)  # the kick at full levels, offline
    alone.add(0, KICK, 0.9)
    full = np.zeros((4800, 4), np.float32)
    alone.mix(full, 0)
    kick_at += delay + sink.early_frames  # pushed to the mixer itself, not handed over early
    kick = rec[kick_at:kick_at + 4800]
    np.testing.assert_allclose(kick[:, :2], main_level * full[:, :2], atol=1e-5)
    np.testing.assert_allclose(kick[:, 2:], cue_level * full[:, 2:], atol=1e-5)
    assert np.abs(full[:, 0]).max() > 0.1
    print(f"cue bus: {len(beats)} beats (count-in included) and {len(cues)} section cues, loopback delay "
          f"{delay} samples on every bus; the cue bus's own sounds against the expected click and cue at "
          f"their samples: worst {worst:.1e}; levels after CC 108/109: main "
          f"{np.abs(kick[:, 0]).max() / np.abs(full[:, 0]).max():.4f} (asked {main_level}), cue "
          f"{np.abs(kick[:, 2]).max() / np.abs(full[:, 2]).max():.4f} (asked {cue_level})")
