"""The tracker with a path of beats in its fold's place (benchmarks/follow_path.py: measured, not
shipped; docs/follow.md, "The beat as a path of beats"), on a real drummer's timing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from drummachine.listen.tracker import BeatTracker

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
material = pytest.importorskip("follow_material")
follow_path = pytest.importorskip("follow_path")

if not (material.GROOVE / "info.csv").exists():
    pytest.skip("the Groove MIDI Dataset is not on this machine", allow_module_level=True)


@pytest.fixture(scope="module")
def performance():
    return material.validation_performances(1)[0]


def test_the_path_of_beats_and_the_fold_keep_near_the_band(performance):
    """The tracker's predicted beats against where the band played each beat (the drummer's
    timing, from beat 16 on), the path's and the fold's: on this drummer (rock, 115) the path 38 ms
    at p95, the fold 62 while it folded at the tempo estimate's period alone and 35 since it looks
    for the period too (docs/follow.md, "The fold's period searched for the phase"; over the 8
    validation drummers, steady and accelerando, the path was nearer in 15 of 16 clips, and is in
    11 of 16 now, by less). (On the real instrument over JACK the path was no nearer: why it is
    not shipped.)"""
    clip = material.cached_clip(*performance, "steady", "band")
    played = clip.played[16:][clip.audible[16:]]

    def p95_ms(tracker):
        for i in range(0, clip.audio.size, 160):
            tracker.process(clip.audio[i:i + 160])
        beats = np.array(tracker.beats)
        k = np.clip(np.searchsorted(beats, played), 1, beats.size - 1)
        nearest = np.where(np.abs(beats[k] - played) < np.abs(beats[k - 1] - played), beats[k], beats[k - 1])
        return float(np.percentile(np.abs(nearest - played), 95)) * 1000

    path = p95_ms(follow_path.PathTracker(clip.rate, clip.bpm, record_beats=True))
    fold = p95_ms(BeatTracker(clip.rate, clip.bpm, record_beats=True))
    assert path < 45.0 and fold < 45.0, (path, fold)


def test_a_flip_off_the_off_beat_moves_the_path_with_the_loop(performance):
    """As tests/test_listen.py's off-beat lock (the keys alone on the "and" first): the path alone
    leaves the off-beat 10 beats after the beat/off-beat check would; with the check, one flip, and
    the path moved with it (unmoved, it took the loop back to the off-beat for 5 beats)."""
    clip = material.make_clip(*performance, "steady", "band", bars=16)
    period = 60.0 / clip.bpm
    audio = material.with_keys_on_the_off_beat(clip)
    tracker = follow_path.PathTracker(clip.rate, clip.bpm, record_beats=True)
    for i in range(0, audio.size, 160):
        tracker.process(audio[i:i + 160])
    beats = np.array(tracker.beats)
    off = lambda b: np.abs(((b - clip.beats[0]) / period + 0.5) % 1.0 - 0.5) < 0.1  # noqa: E731 (on the beat)
    assert not off(beats[(beats > 2.0) & (beats < 6.0)]).any()
    assert off(beats[beats > clip.beats[-16]]).all() and tracker.flips == 1
