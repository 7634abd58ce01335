"""The song conductor on its own: where cues land."""

from drummachine.core.conductor import GROOVE, Conductor
from drummachine.core.song import song_from_toml

from .conftest import SONG


def test_conductor_phrase_end():
    song = song_from_toml(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 0"), "t")
    c = Conductor(song)
    c.plan(0)
    c.next_section(16 + 3, at_phrase=True)  # in bar 1: the phrase ends after bar 3
    assert c.queued.at_bar == 4
    assert c.plan(3).fill_from == 0 and c.plan(4).section == 1


def shipped_performer(seed=0):
    from drummachine.live.offline import shipped_performer as load

    performer = load(seed)
    assert performer is not None
    return performer


SONG_AB = SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8").replace(
    "bars = 0", "bars = 8")


def test_the_performer_moves_each_bar_and_replans_the_same():
    song = song_from_toml(SONG_AB, "ab.toml", ("any", "rock"))
    a, b = Conductor(song, performer=shipped_performer(3)), Conductor(song, performer=shipped_performer(3))
    plans = [a.plan(bar) for bar in range(16)]
    assert all(p.kind == GROOVE and p.feel is not None for p in plans)
    assert len({round(p.feel.intensity, 4) for p in plans}) > 8, "the bars breathe"
    assert [p.feel for p in plans] == [b.plan(bar).feel for bar in range(16)], "seeded: the same plan again"
    a._drop_from(5)  # a cue replans what is not heard yet
    assert [a.plan(bar).feel for bar in range(16)] == [p.feel for p in plans]
    other = Conductor(song, performer=shipped_performer(4))
    assert [other.plan(bar).feel for bar in range(16)] != [p.feel for p in plans], "another seed, another drummer"


def test_the_performers_own_fills_are_fills_and_a_kept_section_replays_its_feel():
    song = song_from_toml(SONG_AB.replace("bars = 8", "bars = 0"), "ab.toml", ("any", "rock"))
    c = Conductor(song, performer=shipped_performer(1))
    plans = [c.plan(bar) for bar in range(64)]
    unasked = [p for p in plans if p.feel.fill]
    assert unasked and all(p.fill_from == 0 for p in unasked)
    assert 0.03 < len(unasked) / len(plans) < 0.4, "about the drummers' rate"
    c.keep(0)
    first = [c.plan(bar).feel for bar in range(4)]
    c.next_section(4 * 16)  # on to the verse, then back to the kept intro
    c.next_section(6 * 16, target=0)
    back = next(b for b in range(7, 20) if c.plan(b).section == 0 and c.plan(b).bar_in_section == 0)
    assert [c.plan(back + k).feel for k in range(4)] == first
    c.regenerate(back * 16)
    assert c.plan(back + 2).feel != first[2], "regenerate asks the performer for another variant"


def test_the_drop_and_the_songs_cymbal_win_over_the_performers_palette():
    from drummachine.core.conditioning import OFF, ON, cymbal_palette
    from drummachine.core.conductor import with_feel
    from drummachine.core.performer import BarFeel
    from drummachine.core.sections import cues_for
    from drummachine.core.voices import CLOSED_HAT, RIDE, SNARE
    from drummachine.model.generator import Generator

    cond = Generator(None).cond
    base = cues_for(cond, "rock", 0.5, cymbal="hats")
    feel = BarFeel(voices=((RIDE, ON), (CLOSED_HAT, OFF), (SNARE, ON)))
    played = with_feel(base, feel)
    assert played.palette[RIDE] == OFF and played.palette[CLOSED_HAT] == ON  # the song's cymbal wins
    assert played.palette[SNARE] == ON  # a voice the song leaves to the model: the performer's pick
    assert base.palette == cymbal_palette("hats")


def test_a_fill_the_foot_asks_for_keeps_its_toms_and_snare_whatever_the_performer_picked():
    from drummachine.core.conditioning import AUTO, OFF, Cues
    from drummachine.core.conductor import with_feel
    from drummachine.core.performer import BarFeel
    from drummachine.core.voices import HIGH_TOM, LOW_TOM, RIDE, SNARE

    feel = BarFeel(fill_voices=((LOW_TOM, OFF), (HIGH_TOM, OFF), (SNARE, OFF), (RIDE, OFF)))
    fill = Cues(fill=True)
    assert with_feel(fill, feel).palette[LOW_TOM] == OFF  # the performer's own fill may leave the toms out
    asked = with_feel(fill, feel, asked_fill=True).palette
    assert asked[LOW_TOM] == asked[HIGH_TOM] == asked[SNARE] == AUTO and asked[RIDE] == OFF


def test_a_fill_asked_in_the_last_beat_starts_at_once_and_runs_through_the_next_bar():
    c = Conductor(song_from_toml(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8"), "t"))
    c.fill(16 + 14)
    assert c.fill_requests == {1: 14, 2: 0}
    assert c.plan(1).fill_from == 14 and c.plan(2).fill_from == 0


def test_an_hours_jam_keeps_a_bounded_plan_and_plans_the_same_bars():
    """1,800 bars (an hour at 120 bpm) of an endless section: the plans behind the playhead and the
    feels past KEPT_FEELS_BARS are forgotten, and the bars planned are the ones a conductor that
    kept everything plans."""
    from drummachine.core.conductor import KEPT_FEELS_BARS, PLANS_KEPT_BEHIND

    song = song_from_toml(SONG.replace("count_in = 1", "count_in = 0"), "t", ("any", "rock"))
    playing, keeping = Conductor(song, performer=shipped_performer()), Conductor(song, performer=shipped_performer())
    for bar in range(1800):
        assert playing.plan(bar) == keeping.plan(bar), bar
        playing.plan(bar + 1)
        playing.take_effect(bar)
        if bar % 50 == 0:
            playing.accent(bar * 16 + 3)
    assert len(playing.plans) <= PLANS_KEPT_BEHIND + 2
    assert len(playing.kept_feels) <= KEPT_FEELS_BARS + 2
    assert len(playing.accents) <= 1
