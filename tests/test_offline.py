"""One plan for every path: `generate` plays the song through the engine, conductor and performer
that `play` uses, so the same seed, song and tempo give the same grooves."""

import mido
import numpy as np

from drummachine.core.events import MemorySink
from drummachine.core.notemap import GM_NOTEMAP
from drummachine.core.transport import STEP_TICKS, ManualClock
from drummachine.live.session import Options, Session

from .conftest import run_cli

BARS = 6


def session_notes(song=None, style="rock", bpm=None, seed=0, bars=BARS):
    """What `play` hands out (its Session, the shipped model, no devices) for the first bars, as
    (tick, note, velocity) the way a MIDI file holds them."""
    clock = ManualClock(0.0)
    sink = MemorySink()
    s = Session(Options(song=song, style=style, bpm=bpm, seed=seed, audio=False), sinks=[sink], clock=clock)
    e = s.engine
    e.command("start")
    e.pump()
    while e.commit_cursor < bars * 16 and e.playing:
        e.pump_generator()
        e.pump()
        deadline = e.next_deadline()
        clock.set(max(clock.now(), deadline))
    start = e.transport.time_of(0)
    out = []
    for ev in sink.notes():
        if ev.step < bars * 16:
            ticks = (ev.time - start) / e.transport.step_seconds(ev.step) * STEP_TICKS
            out.append((int(max(np.rint(ticks), 0)), GM_NOTEMAP.notes[ev.voice],
                        int(np.clip(np.rint(ev.velocity * 127), 1, 127))))
    return sorted(out)


def file_notes(path, bars=BARS):
    mid = mido.MidiFile(path)
    tick, out = 0, []
    for m in mid.tracks[0]:
        tick += m.time
        if m.type == "note_on" and m.velocity > 0 and tick < bars * 16 * STEP_TICKS - STEP_TICKS // 2:
            out.append((tick, m.note, m.velocity))
    return sorted(out)


def test_generate_and_play_hand_out_the_same_groove_for_a_song(tmp_path):
    out = tmp_path / "song.mid"
    r = run_cli("generate", "--song", "highway_rock", "--seed", "3", "-o", out)
    assert r.returncode == 0, r.stderr
    played, written = session_notes(song="highway_rock", seed=3), file_notes(out)
    assert len(played) > 50 and played == written
    markers = [m.text for m in mido.MidiFile(out).tracks[0] if m.type == "marker"]
    assert markers == ["intro", "verse", "chorus", "verse2", "chorus2", "solo", "outro"]


def test_generate_and_play_hand_out_the_same_jam(tmp_path):
    out = tmp_path / "jam.mid"
    r = run_cli("generate", "--style", "funk", "--bpm", "100", "--bars", str(BARS), "--seed", "5", "-o", out)
    assert r.returncode == 0, r.stderr
    played, written = session_notes(style="funk", bpm=100, seed=5), file_notes(out)
    assert len(played) > 30 and played == written
    other = session_notes(style="funk", bpm=100, seed=6)
    assert other != played, "another seed plays another groove"


def test_a_chorus_is_louder_and_busier_than_its_verse_in_every_shipped_song():
    """Intensity still steers with the performer on: the sections' levels are kept in order."""
    from drummachine.core import attributes
    from drummachine.core.song import load_song
    from drummachine.live.offline import play_offline, shipped_performer, starting_commands
    from drummachine.live.presets import find, load_styles, names
    from drummachine.model.generator import Generator

    gen, styles = Generator(None), load_styles(None)
    checked = 0
    for name in names("songs"):
        song = load_song(find("songs", name), gen.cond.styles)
        pairs = [(v.name, c.name) for v, c in zip(song.sections, song.sections[1:])
                 if v.kind == "verse" and c.kind == "chorus"]
        for seed in (0, 1):
            gen.reseed(seed)
            take = play_offline(gen, song, starting_commands(styles, song), performer=shipped_performer(seed))
            bars = take.hvo[: len(take.hvo) // 16 * 16].reshape(-1, 16, 3, 9)
            by = {}
            for plan, loud, dense in zip(take.plans, attributes.loudness(bars), attributes.density(bars)):
                if plan.section >= 0:
                    by.setdefault(song.sections[plan.section].name, []).append((loud, dense))
            for verse, chorus in pairs:
                v, c = np.mean(by[verse], axis=0), np.mean(by[chorus], axis=0)
                assert c[0] > v[0] and c[1] > v[1], (name, seed, verse, v, chorus, c)
                checked += 1
    assert checked >= 6


def test_evaluate_as_played_plays_the_jams_through_the_engine(tmp_path):
    """`evaluate --as-played` plays its jams through the same engine: the command end to end on the
    fixture performances (their own split against itself: the ceiling is exact, every bar is a copy
    of a train bar), with the shipped model and performer."""
    import json

    from .conftest import short_fixture

    out = tmp_path / "as_played.json"
    r = run_cli("evaluate", "--as-played", "--data", short_fixture(tmp_path), "--split", "train", "--seeds", "1",
                "--control-styles", "rock,funk", "--out", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["ceiling"]["pooled"]["mean_overlap"] == 1.0 and d["copies_real"] == 1.0
    for plan in ("as_played", "sections_held"):
        assert 0.3 < d[plan]["pooled"]["mean_overlap"] < 1.0
        assert "mean_overlap_pooled>=0.83" in d[plan]["targets"]
    assert d["as_played"]["pooled"] != d["sections_held"]["pooled"], "the performer changes what plays"
    assert all(c["loudness_bars"] > 0.5 for c in d["intensity_control"].values()), "intensity still steers"
    assert "as played on train" in r.stdout and "mean overlap, pooled" in r.stdout
