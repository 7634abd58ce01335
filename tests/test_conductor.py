"""The song conductor on its own: where cues land."""

from drummachine.core.conductor import Conductor
from drummachine.core.song import song_from_toml

from .conftest import SONG


def test_conductor_phrase_end():
    song = song_from_toml(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 0"), "t")
    c = Conductor(song)
    c.plan(0)
    c.next_section(16 + 3, at_phrase=True)  # in bar 1: the phrase ends after bar 3
    assert c.queued.at_bar == 4
    assert c.plan(3).fill_from == 0 and c.plan(4).section == 1
