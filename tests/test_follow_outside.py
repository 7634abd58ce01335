"""The outside material's bookkeeping (benchmarks/follow_outside.py): which songs, where their
beats are, what is read from a file. POP909 itself is not on CI's machines: a song folder of the
same shape is written here."""

from __future__ import annotations

import shutil
import sys

import mido
import numpy as np
import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
outside = pytest.importorskip("follow_outside")


def song_folder(root, name="001", bpm=100.0, offset=0.5, tempi=1):
    """A POP909-shaped song: MELODY and PIANO on the file's grid moved by ``offset`` beats, the
    annotation's beats (and bar starts every 4) on the music's beat, not on the grid."""
    folder = root / name
    folder.mkdir()
    midi = mido.MidiFile(ticks_per_beat=480)
    meta = mido.MidiTrack()
    midi.tracks.append(meta)
    for k in range(tempi):
        meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm + k), time=0 if k == 0 else 480 * 8))
    for track_name, pitch in (("MELODY", 72), ("PIANO", 48)):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=track_name, time=0))
        midi.tracks.append(track)
        now = 0
        for beat in range(40):
            start = int((beat + offset) * 480)
            track.append(mido.Message("note_on", note=pitch, velocity=90, time=start - now))
            track.append(mido.Message("note_off", note=pitch, velocity=0, time=120))
            now = start + 120
    midi.save(folder / f"{name}.mid")
    period = 60.0 / bpm
    rows = [f"{(k + offset) * period:.6f} {1.0 if k % 2 == 0 else 0.0} {1.0 if k % 4 == 0 else 0.0}" for k in range(40)]
    (folder / "beat_midi.txt").write_text("\n".join(rows) + "\n")
    return folder


def test_the_beats_are_the_annotations_not_the_files_grid(tmp_path):
    folder = song_folder(tmp_path, offset=0.5)
    phase, downbeats = outside.beat_grid(folder, 100.0)
    assert phase == pytest.approx(0.5, abs=1e-3)
    assert downbeats[:3] == pytest.approx([0.5, 4.5, 8.5], abs=1e-3)
    notes = outside.read_notes(folder / "001.mid")
    assert {n.track for n in notes} == {"MELODY", "PIANO"}
    assert notes[0].beat == pytest.approx(0.5) and notes[0].length == pytest.approx(0.25)
    assert len(notes) == 80


def test_an_offset_near_a_whole_beat_is_not_averaged_to_half_a_beat(tmp_path):
    """0.98 and 0.02 beats off the grid are the same place: a plain mean would say 0.5."""
    folder = song_folder(tmp_path, offset=0.98)
    lines = (folder / "beat_midi.txt").read_text().splitlines()
    period = 0.6
    lines[1::2] = [f"{(2 * k + 1 + 1.02) * period:.6f} 0.0 0.0" for k in range(len(lines[1::2]))]
    (folder / "beat_midi.txt").write_text("\n".join(lines) + "\n")
    phase, _ = outside.beat_grid(folder, 100.0)
    assert min(phase, 1.0 - phase) == pytest.approx(0.0, abs=0.03)


def test_only_one_tempo_songs_within_the_range_are_chosen_and_skip_counts_from_the_first(tmp_path):
    song_folder(tmp_path, "001", bpm=100.0)
    song_folder(tmp_path, "002", bpm=100.0, tempi=2)  # a tempo map: left out
    song_folder(tmp_path, "003", bpm=60.0)  # a ballad: left out
    song_folder(tmp_path, "004", bpm=120.0)
    assert [(p.split("/")[-1], b) for p, b in outside.single_tempo_songs(tmp_path, 8)] == [("001", 100.0), ("004", 120.0)]
    assert [p.split("/")[-1] for p, _ in outside.single_tempo_songs(tmp_path, 8, skip=1)] == ["004"]


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not outside.SOUNDFONT.exists(),
                    reason="fluidsynth and the FluidR3 GM soundfont render the songs (benchmarks only)")
def test_a_rendered_clip_sounds_on_its_truths_beats(tmp_path):
    folder = song_folder(tmp_path, offset=0.5)
    clip = outside.make_clip(folder, 100.0, "steady", bars=4)
    assert clip.beats[0] == pytest.approx(0.0, abs=0.005) and np.diff(clip.beats) == pytest.approx(0.6, abs=1e-6)
    assert clip.sounds_after == outside.sounds_after(folder, 100.0) > 0  # on JACK too: the instrument's clips
    envelope = np.abs(clip.audio)
    at = lambda t: float(envelope[int(t * clip.rate):int((t + 0.05) * clip.rate)].max())  # noqa: E731
    assert min(at(b) for b in clip.beats[1:12]) > 3 * max(at(b + 0.4) for b in clip.beats[1:12])


def test_a_notes_onset_is_where_its_envelope_comes_within_15_db_of_its_peak():
    rate = 44100
    t = np.arange(int(0.2 * rate)) / rate
    tone = np.sin(2 * np.pi * 440 * t)
    sharp = tone * np.exp(-t / 0.05)  # full level at once
    slow = tone * np.minimum(1.0, t / 0.020)  # a 20 ms linear attack: -15 dB at 0.178 of it
    late = np.concatenate([np.zeros(int(0.010 * rate)), sharp])[:t.size]
    assert outside.attack_delay(sharp, rate) < 0.001
    assert outside.attack_delay(slow, rate) == pytest.approx(0.020 * 10 ** (-15 / 20), abs=0.0015)
    assert outside.attack_delay(late, rate) == pytest.approx(0.010, abs=0.001)
    assert outside.attack_delay(np.zeros(1000), rate) == 0.0


def test_the_phase_error_against_the_sound_takes_the_instruments_attack_off():
    """A machine 10 ms behind the score, on a band whose instruments sound 8 ms after their
    note-ons: 10 ms off the score, 2 ms off what the room hears."""
    import follow_instrument
    import follow_material as material

    from dataclasses import replace

    period = 0.6
    band = np.arange(40) * period
    clip = material.Clip("x", "steady", "pop909", 16000, np.zeros(10, np.float32), 100.0, band,
                         np.ones(40, bool), np.full(40, 100.0), played=band)
    run = {"band_frames": band * follow_instrument.RATE, "played_frames": band * follow_instrument.RATE,
           "drummer_frames": (band + 0.010) * follow_instrument.RATE, "audible": clip.audible, "tempo": clip.tempo,
           "misses": None, "underruns": None, "listener_cpu_share": None, "summary": ""}
    assert "phase_error_vs_sound_ms_p95" not in follow_instrument.measure(run, clip, "steady")
    row = follow_instrument.measure(run, replace(clip, sounds_after=0.008), "steady")
    assert row["phase_error_ms_p95"] == pytest.approx(10.0, abs=0.01)
    assert row["phase_error_vs_sound_ms_p95"] == pytest.approx(2.0, abs=0.01)
    assert row["sounds_after_ms"] == 8.0


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not outside.SOUNDFONT.exists(),
                    reason="fluidsynth and the FluidR3 GM soundfont render the songs (benchmarks only)")
def test_a_songs_beats_sound_a_few_milliseconds_after_their_note_ons(tmp_path):
    folder = song_folder(tmp_path, offset=0.5)
    delay = outside.sounds_after(folder, 100.0)
    keys = {(0, 72), (2, 48), (outside.BASS_CHANNEL, 36)}  # the melody, the piano and its bass
    assert keys <= set(outside._ATTACKS)
    assert 0.002 < delay < 0.030
    assert delay == pytest.approx(float(np.median([outside._ATTACKS[k] for k in keys])), abs=1e-9)


def test_a_kept_clip_comes_back_with_when_it_sounds(tmp_path, monkeypatch):
    """The clip cache keeps ``sounds_after``: a song read back from it is judged against its sound
    as the one just rendered."""
    import follow_material as material

    monkeypatch.setenv("DRUMMACHINE_CLIP_CACHE", str(tmp_path))
    beats = np.arange(8) * 0.6
    made = material.Clip("x", "steady", "pop909", 16000, np.zeros(10, np.float32), 100.0, beats, np.ones(8, bool),
                         np.full(8, 100.0), played=beats, sounds_after=0.007)
    calls = []

    def make():
        calls.append(1)
        return made

    first = material.kept("key", "x", "steady", "pop909", 16000, 100.0, make)
    again = material.kept("key", "x", "steady", "pop909", 16000, 100.0, make)
    assert len(calls) == 1 and first.sounds_after == again.sounds_after == 0.007
