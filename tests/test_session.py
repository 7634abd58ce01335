"""A session's routing without devices: controller messages, session commands, setlists, MIDI learn
and the defects found on stage, through the real Session with a recording sink and a manual clock."""

import pytest

from drummachine.core.events import MemorySink
from drummachine.core.transport import ManualClock
from drummachine.live.presets import LEARNED
from drummachine.live.session import Options, Session


@pytest.fixture
def session(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # the user's learned mappings go here

    def make(**opts):
        clock = ManualClock(10.0)
        sink = MemorySink()
        s = Session(Options(fake_model=True, audio=False, **opts), sinks=[sink], clock=clock)

        def run(seconds, dt=0.005):
            for _ in range(int(seconds / dt)):
                s.poll()
                s.engine.pump_generator()
                s.engine.pump()
                clock.advance(dt)
        return s, sink, run
    return make


def test_the_default_pedal_ccs_reach_the_engine(session):
    s, sink, run = session(song="highway_rock")
    s.on_midi([0xFA], s.clock.now())  # MIDI Start
    run(1.0)
    assert s.engine.playing
    s.on_midi([0xB0, 82, 127], s.clock.now())  # half time
    run(4.5)
    assert s.engine.transport.feel_at(s.engine.commit_cursor) == 0.5
    s.on_midi([0xB0, 82, 127], s.clock.now())  # and back: the same message toggles
    run(4.5)
    assert s.engine.transport.feel_at(s.engine.commit_cursor) == 1.0
    assert sink.notes()


def test_a_song_message_while_stopped_is_refused_and_the_session_lives(session):
    """Regression: a binding of `song` sent ("song", None) and the engine's pump raised
    AttributeError while stopped (play --headless --wait crashed with a traceback)."""
    s, sink, run = session()
    s.command("song", None)
    run(0.2)
    assert s.engine.stats.refused == 1 and s.engine.stats.faults == {}
    s.command("start")
    run(1.5)
    assert s.engine.playing and sink.notes()


def test_a_program_change_picks_a_song_of_the_setlist_when_stopped(session):
    s, sink, run = session(song="highway_rock", setlist=["highway_rock", "slow_funk"])
    s.on_midi([0xC0, 1], s.clock.now())
    run(0.1)
    assert s.engine.song.name == s._song("slow_funk").name
    s.on_midi([0xC0, 9], s.clock.now())  # no such song: a warning, nothing changes
    run(0.1)
    assert s.engine.song.name == s._song("slow_funk").name


def test_next_song_while_playing_waits_for_the_song_to_end(session):
    s, sink, run = session(song="highway_rock", setlist=["highway_rock", "slow_funk"])
    s.command("start")
    run(0.5)
    s.command("next_song")
    run(0.5)
    assert s.pending_song is not None and s.engine.song.name == "Highway (rock)"


def test_midi_learn_binds_a_control_saves_it_and_uses_it_at_once(session, tmp_path):
    s, sink, run = session()
    s.command("learn", "drop")
    assert s.learning == "drop"
    s.on_midi([0xB0, 20, 127], s.clock.now())  # the control the musician moves
    assert s.learning is None and s.learned == "cc 20 -> drop"
    saved = (tmp_path / "drummachine" / "controllers" / f"{LEARNED}.toml").read_text()
    assert 'action = "drop"' in saved and "cc = 20" in saved
    s.command("start")
    run(2.5)
    s.on_midi([0xB0, 20, 127], s.clock.now())
    run(0.05)
    assert s.engine.conductor.voice_overrides, "the learned control sends drop"
    # a second session loads what was learned
    s2, _, _ = session()
    assert any(m.action == "drop" for m in s2.preset_control.preset.mappings)


def test_learn_refuses_what_cannot_be_bound(session):
    s, sink, run = session()
    s.command("learn", "song")
    assert s.learning is None


def test_a_broken_learned_file_is_a_warning_not_a_failure(session, tmp_path):
    folder = tmp_path / "drummachine" / "controllers"
    folder.mkdir(parents=True)
    (folder / f"{LEARNED}.toml").write_text('[[map]]\ncc = 1\naction = "song"\n')
    s, sink, run = session()
    assert any("learned mappings ignored" in w for w in s.warnings)
    s.on_midi([0xB0, 112, 127], s.clock.now())  # the default map still answers
    run(0.05)


def test_a_styles_intensity_is_the_jams_level_not_the_knobs_offset(session):
    """styles.toml's intensity sets a jam's level; the intensity knob (an offset from the song's)
    starts at 0 — the two must not be confused when the style's knobs are applied."""
    s, sink, run = session(style="funk")
    assert s.engine.conductor.intensity_offset == 0.0 and s.engine.knobs["intensity"] == 0.0
    assert s.song.sections[0].intensity == s.styles.get("funk")["intensity"]
