"""The command table: every command handled exactly once, values checked at the boundary, and every
other vocabulary (controller actions, MIDI learn, UI keys, knob ranges) read from it."""

import pytest

from drummachine.core import commands
from drummachine.core.commands import COMMANDS, ENGINE, SESSION, parse
from drummachine.core.engine import Engine
from drummachine.core.errors import DrumMachineError
from drummachine.live import presets
from drummachine.live.session import Session


def test_every_engine_command_has_a_handler_and_every_handler_a_command():
    handlers = {name[4:] for name in dir(Engine) if name.startswith("_on_")}
    engine_commands = {n for n, s in COMMANDS.items() if s.target == ENGINE}
    assert handlers == engine_commands


def test_every_session_command_has_a_handler():
    session = Session.__new__(Session)
    assert set(session.session_handlers) == {n for n, s in COMMANDS.items() if s.target == SESSION}


def test_what_the_system_sends_cannot_be_bound():
    assert {"song", "follow", "program", "learn"}.isdisjoint(commands.BINDABLE)


@pytest.mark.parametrize("name,value,needle", [
    ("song", None, "needs a value"),
    ("song", "highway_rock", "is not a song"),
    ("tempo", 20, "out of range; allowed: number 40..300"),
    ("tempo", "fast", "not a number"),
    ("tempo", True, "not a number"),
    ("tempo", float("nan"), "not a number"),
    ("next", 2.5, "not a whole number"),
    ("next", 0, "out of range"),
    ("cymbal", "cowbell", "not allowed; allowed: auto, hats, open_hats, ride"),
    ("fill", 3, "takes no value"),
    ("mute", "cowbell", "not a voice"),
    ("follow", (500, None), "allowed: (bpm"),
    ("explode", None, "unknown; allowed:"),
])
def test_a_bad_value_is_one_line_naming_the_command(name, value, needle):
    with pytest.raises(DrumMachineError) as e:
        parse(name, value)
    assert needle in str(e.value) and str(e.value).startswith(f"command {name}") and "\n" not in str(e.value)


@pytest.mark.parametrize("name,value,expected", [
    ("tempo_up", None, 1.0), ("next", None, None), ("next", 3, 3), ("mute", "ride", 8), ("mute", "2", 1),
    ("mute", 0, 0), ("cymbal", None, None), ("pause", None, None), ("intensity", -1, -1.0),
])
def test_good_values_come_out_typed(name, value, expected):
    assert parse(name, value).value == expected


@pytest.mark.parametrize("name,byte,expected", [
    ("swing", 127, 1.0), ("swing", 0, 0.0), ("intensity", 0, -1.0), ("humanize", 127, 2.0),
    ("next", 2, 2), ("next", 0, None), ("next", 100, None), ("tempo_up", 7, 7.0), ("tempo_up", 0, 1.0),
])
def test_a_data_byte_spans_a_knob_or_is_the_number(name, byte, expected):
    assert commands.from_data_byte(name, byte).value == expected


def test_knob_ranges_and_style_knobs_come_from_the_table():
    from drummachine.ui.app import KNOB_RANGE, KNOBS

    assert set(KNOBS) == {"intensity", "density", "swing", "humanize", "temperature"}
    assert KNOB_RANGE["swing"] == (COMMANDS["swing"].value.lo, COMMANDS["swing"].value.hi)
    for knob in ("density", "swing", "humanize", "temperature"):
        assert presets.STYLE_KEYS[knob] == KNOB_RANGE[knob]


def test_the_ui_keys_send_known_bindable_commands():
    from drummachine.ui.app import CUE_KEYS

    for key, name in CUE_KEYS:
        assert name in commands.BINDABLE, key


def test_the_presets_reference_lists_every_action_a_musician_can_bind():
    from .conftest import ROOT

    text = (ROOT / "docs" / "presets.md").read_text()
    listed = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `")}
    assert set(commands.BINDABLE) <= listed
