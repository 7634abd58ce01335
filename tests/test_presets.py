"""Controller presets with foot-switch gestures (manual clock), setlists, styles, user overrides."""

import pytest

from drummachine.live import presets
from drummachine.core.controller import PresetControl, controller_from_toml
from drummachine.core.errors import DrumMachineError

from .conftest import ROOT

FOOT = (ROOT / "presets" / "controllers" / "footswitch.toml").read_text()


def control(playing=True):
    state = {"playing": playing}
    return PresetControl(controller_from_toml(FOOT, "footswitch.toml"), lambda: state["playing"]), state


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
    ([0xB0, 66, 127], [("intensity", 0.1)]),
    ([0xB0, 67, 127], [("intensity", -0.1)]),
    ([0xB0, 68, 127], [("next_song", None)]),
    ([0xC0, 2], [("program", 2)]),
    ([0xFA], [("start", None)]),
])
def test_footswitch_maps(message, expected):
    c, _ = control()
    assert c.handle(message, 0.0) == expected


def test_knob_controller_is_continuous():
    knobs = presets.load_controller("knobs")
    c = PresetControl(knobs)
    assert c.handle([0xB0, 23, 127], 0.0) == [("swing", 1.0)]
    assert c.handle([0xB0, 21, 0], 0.0) == [("intensity_to", -1.0)]


def test_a_pad_can_name_the_cymbal_that_keeps_time():
    text = "[[map]]\nnote = 51\naction = \"cymbal\"\nvalue = \"ride\"\n[[map]]\nnote = 42\naction = \"cymbal\"\n"
    c = PresetControl(controller_from_toml(text, "pads.toml"))
    assert c.handle([0x99, 51, 100], 0.0) == [("cymbal", "ride")]
    assert c.handle([0x99, 42, 100], 0.0) == [("cymbal", None)]  # no value: the next of hats, ride, auto


@pytest.mark.parametrize("text,needle", [
    ("[[map]]\ncc = 1\naction = \"explode\"\n", "x.toml:3 (map[0].action): unknown action 'explode'"),
    ("[[map]]\ncc = 1\naction = \"tap\"\n[[map]]\ncc = 1\naction = \"fill\"\n", "cc 1 is already mapped"),
    ("[[map]]\ncc = 300\naction = \"tap\"\n", "300; allowed: 0-127"),
    ("[[switch]]\ncc = 1\nlong = \"next\"\n", "unknown key"),
    ("channel = 20\n", "allowed: 0 (any) or 1-16"),
    ("[[map\n", "malformed TOML"),
    ("[[map]]\ncc = 1\naction = \"cymbal\"\nvalue = \"cowbell\"\n", "x.toml:4 (map[0].value): 'cowbell'; allowed: auto"),
    ("[[map]]\ncc = 1\naction = \"tap\"\nvalue = \"ride\"\n", "'ride'; allowed: a number"),
])
def test_bad_controller_presets(text, needle):
    with pytest.raises(DrumMachineError) as exc:
        controller_from_toml(text, "x.toml")
    assert needle in str(exc.value)


def test_shipped_presets_all_load():
    assert set(presets.names("controllers")) >= {"footswitch", "pads", "knobs"}
    assert presets.load_setlist("friday_gig").songs[0] == "highway_rock"
    assert presets.check_all() == []


def test_a_bad_user_preset_never_stops_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    user = tmp_path / "drummachine"
    (user / "controllers").mkdir(parents=True)
    (user / "controllers" / "broken.toml").write_text("[[map]]\ncc = 1\naction = \"nope\"\n")
    (user / "controllers" / "pads.toml").write_text("name = \"My pads\"\n[[map]]\nnote = 60\naction = \"fill\"\n")
    (user / "styles.toml").write_text("[rock]\nswing = 5.0\n")
    problems = presets.check_all()
    assert any("broken.toml" in p and "unknown action" in p for p in problems)
    assert any("styles.toml" in p and "rock.swing" in p for p in problems)
    assert presets.load_controller("pads").name == "My pads"  # the user's wins
    assert presets.load_controller("footswitch").switches  # the shipped ones still load
    assert presets.load_styles().get("rock") == presets.load_styles().get("rock")
