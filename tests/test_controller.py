"""Controller presets at work (the default pedal CCs, foot-switch gestures on a manual clock, knobs,
pads), their checking, and the MIDI clock follower."""

import numpy as np
import pytest

from drummachine.core.controller import ClockFollower, PresetControl, controller_from_toml
from drummachine.core.errors import DrumMachineError
from drummachine.live import presets

from .conftest import ROOT

FOOT = (ROOT / "presets" / "controllers" / "footswitch.toml").read_text()


class Pairs:
    """A PresetControl whose commands read as (name, value) pairs."""

    def __init__(self, control):
        self.control = control

    def handle(self, message, t=0.0):
        return [(c.name, c.value) for c in self.control.handle(message, t)]

    def tick(self, t):
        return [(c.name, c.value) for c in self.control.tick(t)]


def default_map(channel=0):
    text = (ROOT / "presets" / "controllers" / "default.toml").read_text()
    text = text.replace("channel = 0", f"channel = {channel}")
    return Pairs(PresetControl(controller_from_toml(text, "default.toml")))


@pytest.mark.parametrize("message,expected", [
    ([0xB0, 110, 127], [("accent", None)]),
    ([0xB9, 111, 127], [("pause", None)]),
    ([0xB0, 112, 127], [("fill", None)]),
    ([0xB0, 112, 0], [("fill", None)]),  # the pedal drum machines' convention: any value fires
    ([0xB0, 113, 0], [("next", None)]),
    ([0xB0, 113, 3], [("next", 3)]),  # go to section 3
    ([0xB0, 113, 127], [("next", None)]),
    ([0xB0, 115, 127], [("outro", None)]),
    ([0xB0, 117, 127], [("tap", None)]),
    ([0xB0, 80, 5], [("tempo_up", 5.0)]),
    ([0xB0, 80, 0], [("tempo_up", 1.0)]),
    ([0xB0, 81, 2], [("tempo_down", 2.0)]),
    ([0xB0, 82, 127], [("half_time", None)]),
    ([0xB0, 83, 127], [("double_time", None)]),
    ([0xFA], [("start", None)]),
    ([0xFB], [("start", None)]),
    ([0xFC], [("stop", None)]),
    ([0xC0, 4], [("program", 4)]),
    ([0xB0, 7, 100], []),
    ([0xF8], []),
    ([], []),
    ([0x42, 1, 2], []),  # a data byte where a status should be
    ([0xB0, 110], []),  # truncated
])
def test_the_default_preset_answers_the_pedal_drum_machine_ccs(message, expected):
    assert default_map().handle(message) == expected


def test_half_time_is_the_same_command_every_time():
    """Regression: the old default map toggled half/normal itself while a preset latched half; now
    every control sends half_time and the engine toggles (tests/test_engine.py)."""
    m = default_map()
    assert m.handle([0xB0, 82, 127]) == m.handle([0xB0, 82, 127]) == [("half_time", None)]


def test_channel_filter():
    m = default_map(channel=2)
    assert m.handle([0xB0, 112, 127]) == []
    assert m.handle([0xB1, 112, 127]) == [("fill", None)]


def control(playing=True):
    state = {"playing": playing}
    return Pairs(PresetControl(controller_from_toml(FOOT, "footswitch.toml"), lambda: state["playing"])), state


def test_press_when_stopped_starts_at_once():
    c, _ = control(playing=False)
    assert c.handle([0xB0, 64, 127], 0.0) == [("start", None)]
    assert c.handle([0xB0, 64, 0], 0.1) == []
    assert c.tick(1.0) == []


def test_single_press_is_a_fill_once_the_double_window_passes():
    c, _ = control()
    assert c.handle([0xB0, 64, 127], 10.0) == []
    assert c.handle([0xB0, 64, 0], 10.1) == []
    assert c.tick(10.3) == []  # could still become a double press
    assert c.tick(10.5) == [("fill", None)]
    assert c.tick(11.0) == []


def test_double_press_is_the_outro():
    c, _ = control()
    c.handle([0xB0, 64, 127], 10.0)
    c.handle([0xB0, 64, 0], 10.08)
    assert c.handle([0xB0, 64, 127], 10.25) == [("outro", None)]
    c.handle([0xB0, 64, 0], 10.3)
    assert c.tick(11.0) == []


def test_hold_is_the_transition_to_the_next_section():
    c, _ = control()
    c.handle([0xB0, 64, 127], 10.0)
    assert c.tick(10.5) == []
    assert c.tick(10.61) == [("next", None)]
    assert c.handle([0xB0, 64, 0], 11.5) == []
    assert c.tick(12.0) == []


@pytest.mark.parametrize("message,expected", [
    ([0xB0, 65, 127], [("tap", None)]),
    ([0xB0, 66, 127], [("intensity_up", 0.1)]),
    ([0xB0, 67, 127], [("intensity_down", 0.1)]),
    ([0xB0, 68, 127], [("next_song", None)]),
    ([0xC0, 2], [("program", 2)]),
    ([0xFA], [("start", None)]),
])
def test_footswitch_maps(message, expected):
    c, _ = control()
    assert c.handle(message, 0.0) == expected


def test_knob_controller_is_continuous():
    knobs = presets.load_controller("knobs")
    c = Pairs(PresetControl(knobs))
    assert c.handle([0xB0, 23, 127], 0.0) == [("swing", 1.0)]
    assert c.handle([0xB0, 21, 0], 0.0) == [("intensity", -1.0)]


def test_a_pad_can_name_the_cymbal_that_keeps_time():
    text = "[[map]]\nnote = 51\naction = \"cymbal\"\nvalue = \"ride\"\n[[map]]\nnote = 42\naction = \"cymbal\"\n"
    c = Pairs(PresetControl(controller_from_toml(text, "pads.toml")))
    assert c.handle([0x99, 51, 100], 0.0) == [("cymbal", "ride")]
    assert c.handle([0x99, 42, 100], 0.0) == [("cymbal", None)]  # no value: the next of hats, ride, auto


@pytest.mark.parametrize("text,needle", [
    ("[[map]]\ncc = 1\naction = \"explode\"\n", "x.toml:3 (map[0].action): unknown action 'explode'"),
    ("[[map]]\ncc = 1\naction = \"tap\"\n[[map]]\ncc = 1\naction = \"fill\"\n", "cc 1 is already mapped"),
    ("[[map]]\ncc = 300\naction = \"tap\"\n", "300; allowed: 0-127"),
    ("[[switch]]\ncc = 1\nlong = \"next\"\n", "unknown key"),
    ("channel = 20\n", "allowed: 0 (any) or 1-16"),
    ("[[map\n", "malformed TOML"),
    ("[[map]]\ncc = 1\naction = \"cymbal\"\nvalue = \"cowbell\"\n",
     "x.toml:4 (map[0].value): 'cowbell' is not allowed; allowed: auto"),
    ("[[map]]\ncc = 1\naction = \"tap\"\nvalue = \"ride\"\n", "x.toml:4 (map[0].value): takes no value; got 'ride'"),
])
def test_bad_controller_presets(text, needle):
    with pytest.raises(DrumMachineError) as exc:
        controller_from_toml(text, "x.toml")
    assert needle in str(exc.value)



def test_a_chosen_preset_sits_on_the_default_and_wins_where_both_bind():
    pads = presets.load_controller("pads")
    default = presets.load_controller("default")
    both = Pairs(PresetControl(pads.over(default)))
    assert both.handle([0x99, 37, 100]) == [("fill", None)]  # the pads' own
    assert both.handle([0xB9, 110, 127]) == [("accent", None)]  # the default's CCs stay underneath


@pytest.mark.parametrize("text,needle", [
    ('[[map]]\ncc = 1\naction = "song"', "unknown action 'song'"),
    ('[[map]]\ncc = 1\naction = "explode"', "unknown action"),
    ('[[map]]\ncc = 1\naction = "cymbal"\nvalue = "cowbell"', "'cowbell' is not allowed"),
    ('[[map]]\ncc = 1\naction = "tempo"', "needs a value"),
    ('[[map]]\ncc = 1\naction = "tempo"\nvalue = 999', "out of range"),
    ('[[map]]\ncc = 1\naction = "accent"\nvalue = "cc"', "takes none"),
    ('[[map]]\ncc = 1\naction = "fill"\nfire = "sometimes"', "allowed: press, any"),
    ('[[switch]]\ncc = 1\npress = "tempo"', "needs a value"),
    ('[[map]]\ncc = 1\naction = "fill"\n[[map]]\ncc = 1\naction = "tap"', "already mapped"),
    ('channel = 99', "allowed: 0 (any) or 1-16"),
])
def test_bad_controller_presets_are_one_line_naming_file_and_key(text, needle):
    with pytest.raises(DrumMachineError) as e:
        controller_from_toml(text, "bad.toml")
    assert needle in str(e.value) and str(e.value).startswith("bad.toml") and "\n" not in str(e.value)


def test_a_pad_can_mute_a_voice_by_name():
    c = Pairs(PresetControl(controller_from_toml('[[map]]\nnote = 50\naction = "mute"\nvalue = "ride"', "x")))
    assert c.handle([0x90, 50, 90]) == [("mute", 8)]


def test_clock_follower_smooths_jitter():
    rng = np.random.default_rng(1)
    f = ClockFollower()
    f.start()
    period = 60.0 / (93.0 * 24)
    for k in range(96):
        f.pulse(10.0 + k * period + rng.uniform(-0.002, 0.002))
    assert f.bpm() == pytest.approx(93.0, abs=0.3)
    nb = f.next_beat(10.0 + 95 * period)
    assert nb == pytest.approx(10.0 + 96 * period, abs=0.002)


def test_clock_follower_ignores_pulses_held_back_by_a_stall():
    """A stall (sender or receiver) delivers a burst of late pulses; the tempo must not bend."""
    rng = np.random.default_rng(3)
    period = 60.0 / (100.0 * 24)
    times = np.arange(96) * period + rng.uniform(-0.001, 0.001, 96)
    stalled = (times >= times[70]) & (times < times[70] + 0.12)  # 120 ms late, released together
    times = np.where(stalled, times[70] + 0.12, times)
    follower = ClockFollower()
    follower.start()
    for t in times:
        follower.pulse(float(t))
    plain = 60.0 / (np.polyfit(np.arange(96), times, 1)[0] * 24)
    assert abs(plain - 100.0) > 0.3  # the stall does bend a plain line fit
    assert follower.bpm() == pytest.approx(100.0, abs=0.05)


def test_clock_follower_still_follows_a_real_tempo_change():
    follower = ClockFollower()
    follower.start()
    t = 0.0
    for k in range(24 * 12):  # 8 beats at 100 bpm, then 4 at 90
        t += 60.0 / ((100.0 if k < 24 * 8 else 90.0) * 24)
        follower.pulse(t)
    assert follower.bpm() == pytest.approx(90.0, abs=0.05)
