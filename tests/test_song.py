"""Songs from TOML: a jam, checked values with file:line messages, voices."""

import pytest

from drummachine.core.errors import DrumMachineError
from drummachine.core.song import jam, song_from_toml

from .conftest import SONG


def test_jam_song_and_bad_song_values():
    assert jam("rock", 100).sections[0].bars == 0
    with pytest.raises(DrumMachineError, match=r"test.toml:\d+ \(sections\[1\].style\): unknown style 'polka'"):
        song_from_toml(SONG.replace('name = "verse"', 'name = "verse"\nstyle = "polka"'), "test.toml",
                       ("any", "rock"))
    with pytest.raises(DrumMachineError, match=r"sections\[0\].bars\): -1 is not allowed"):
        song_from_toml(SONG.replace("bars = 2", "bars = -1"), "test.toml")
    with pytest.raises(DrumMachineError, match="unknown section kind 'coda'"):
        song_from_toml(SONG.replace('name = "intro"', 'name = "intro"\nkind = "coda"'), "test.toml")
    with pytest.raises(DrumMachineError, match="duplicate section name"):
        song_from_toml(SONG.replace('name = "verse"', 'name = "intro"'), "test.toml")
    with pytest.raises(DrumMachineError, match=r"test.toml:10 \(sections\[0\].cymbal\): 'gong' is not allowed; "
                       r"allowed: auto, hats, open_hats, ride"):
        song_from_toml(SONG.replace('bars = 2', 'bars = 2\ncymbal = "gong"'), "test.toml")
    song = song_from_toml(SONG.replace('bpm = 120', 'bpm = 120\ncymbal = "ride"').replace(
        'bars = 2', 'bars = 2\ncymbal = "hats"'), "test.toml")
    assert [s.cymbal for s in song.sections] == ["hats", "ride"]  # the song's, unless a section says


def test_song_voices_and_bad_voices():
    text = SONG.replace('bpm = 120', 'bpm = 120\nvoices = { crash = "off" }').replace(
        'bars = 2', 'bars = 2\nvoices = { high_tom = "on", ride = "on", kick = "auto" }')
    song = song_from_toml(text, "test.toml")
    assert song.sections[0].voices == (("kick", "auto"), ("high_tom", "on"), ("ride", "on"))
    assert song.sections[1].voices == (("crash", "off"),)  # the song's, unless a section says
    for bad, what in (('{ gong = "on" }', r"unknown voice 'gong'; allowed: kick, snare"),
                      ('{ high_tom = 3 }', r"high_tom = 3 is not allowed; allowed: on, off, auto"),
                      ('{ crash = true }', "crash = True is not allowed"),
                      ('"toms"', "a table of voice")):
        with pytest.raises(DrumMachineError, match=r"test.toml:10 \(sections\[0\].voices\): " + what):
            song_from_toml(SONG.replace('bars = 2', f'bars = 2\nvoices = {bad}'), "test.toml")
