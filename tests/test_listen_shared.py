"""The listening process's shared blocks: the tracker's state handed from one listening process
to the next (``listen.shared.TrackerStateBlock``)."""

from __future__ import annotations

import numpy as np

from drummachine.listen.shared import SEQ, TrackerStateBlock
from drummachine.listen.tracker import BeatTracker


def a_tracker_that_heard_something() -> BeatTracker:
    rng = np.random.default_rng(7)
    tracker = BeatTracker(16000, 120.0)
    clicks = np.zeros(16000 * 6, np.float32)
    clicks[::8000] = 1.0  # a click every half second
    tracker.process(clicks + rng.normal(0, 0.01, clicks.size).astype(np.float32))
    return tracker


def test_a_state_saved_is_taken_whole():
    tracker = a_tracker_that_heard_something()
    state = tracker.state()
    block = TrackerStateBlock()
    reader = TrackerStateBlock(block.name)  # the successor's view, by name
    try:
        assert reader.taken() is None  # nothing saved yet: the first listening process starts cold
        block.save(state, saved_at=12.5, mono_now=12.25)
        got = reader.taken()
        assert got["saved_at"] == 12.5 and got["mono_now"] == 12.25
        for name, value in state.items():
            assert np.allclose(got[name], value), name
        assert got["history"].size == tracker.history.size and got["onsets"].size == len(tracker._onset_times) > 0
    finally:
        reader.close()
        block.close()


def test_a_save_cut_off_by_its_writers_death_is_not_taken_and_frees_the_lock():
    tracker = a_tracker_that_heard_something()
    block = TrackerStateBlock()
    try:
        block.save(tracker.state(), saved_at=1.0, mono_now=1.0)
        block.slots[SEQ] += 1  # killed between the two halves of the sequence lock
        block.slots[-1] = np.nan  # ... with half its history written
        assert block.taken() is None
        assert int(block.slots[SEQ]) % 2 == 0  # the next writer's saves are whole again
        block.save(tracker.state(), saved_at=2.0, mono_now=2.0)
        assert block.taken()["saved_at"] == 2.0
    finally:
        block.close()
