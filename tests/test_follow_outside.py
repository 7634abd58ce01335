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
    clip = outside.make_clip(song_folder(tmp_path, offset=0.5), 100.0, "steady", bars=4)
    assert clip.beats[0] == pytest.approx(0.0, abs=0.005) and np.diff(clip.beats) == pytest.approx(0.6, abs=1e-6)
    envelope = np.abs(clip.audio)
    at = lambda t: float(envelope[int(t * clip.rate):int((t + 0.05) * clip.rate)].max())  # noqa: E731
    assert min(at(b) for b in clip.beats[1:12]) > 3 * max(at(b + 0.4) for b in clip.beats[1:12])
