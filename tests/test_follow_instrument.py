"""The follow benchmarks' measures: the drummer's beats from the MIDI recorder's clock, its notes'
velocity bar by bar, how far each beat moved against the beats before it."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from follow_instrument import beat_moves, beats_from_clocks, dynamics_steps, velocity_by_bar  # noqa: E402

TICK = 1040.0  # frames between clocks at 115 bpm and 48 kHz


def ticks(n, start=1000.0):
    return start + TICK * np.arange(n)


def test_every_24th_clock_from_the_start():
    clocks = ticks(24 * 5 + 1)
    got = beats_from_clocks(list(clocks) + [0.0], [clocks[0]])  # a clock before the Start: not counted
    assert np.allclose(got, clocks[::24])


def test_a_clock_the_recorder_lost_in_a_period_it_was_not_called_for_is_counted():
    clocks = ticks(24 * 4 + 1)
    lost = 30  # between two beats
    kept = np.delete(clocks, lost)
    unheard = [(clocks[lost] - 50, clocks[lost] + 78)]
    assert np.allclose(beats_from_clocks(kept, [clocks[0]], unheard), clocks[::24])
    # without knowing of the unheard period every later beat is a clock late
    assert np.allclose(beats_from_clocks(kept, [clocks[0]])[2:], clocks[25::24][1:])


def test_a_lost_beat_clock_is_put_between_its_neighbours():
    clocks = ticks(24 * 4 + 1)
    kept = np.delete(clocks, 48)
    got = beats_from_clocks(kept, [clocks[0]], [(clocks[48] - 10, clocks[48] + 118)])
    assert np.allclose(got, clocks[::24])


def test_a_beat_moved_by_the_follower_is_not_taken_for_lost_clocks():
    clocks = ticks(24 * 4 + 1)
    clocks[40:] += 1.9 * TICK  # the follower snapped onto the band: one long gap, no clock lost
    assert np.allclose(beats_from_clocks(clocks, [clocks[0]]), clocks[::24])


def test_velocity_by_bar_is_the_mean_of_the_notes_between_the_bands_bar_lines():
    band = 1000 + 500 * np.arange(13)  # 3 bars of 4 beats
    notes = np.array([[999, 36, 127], [1000, 36, 80], [2999, 38, 60], [3000, 42, 90], [7100, 36, 50]])
    got = velocity_by_bar({"band_frames": band, "note_ons": notes})
    assert got == [70.0, 90.0, None]  # the note before the first bar line and after the last: no bar's


def test_the_steps_are_counted_from_the_bar_the_band_changed_to_half_way():
    loud, quiet = 80.0, 50.0
    velocity = [loud] * 8 + [loud, 70.0, 52.0, quiet, quiet, quiet, quiet, quiet] + [55.0, 60.0, 72.0, loud]
    steps = dynamics_steps(velocity, 8, 16)
    # half way is 65: bar 10 is the first under it (2 bars after), bar 18 the first over (2 after)
    assert steps == {"loud_velocity": loud, "quiet_velocity": quiet, "bars_to_lower": 2, "bars_to_recover": 2}
    assert dynamics_steps([loud] * 20, 8, 16)["bars_to_lower"] is None  # it never went down
    assert dynamics_steps(velocity[:8] + [None] + velocity[9:], 8, 16)["bars_to_lower"] == 2  # a bar without notes


def test_a_beat_moved_in_one_go_is_one_move_and_a_ramp_or_small_steps_are_not_moves():
    beats = 0.5 * np.arange(40)
    beats[20:] -= 0.060  # a re-lock onto the band's beat 60 ms earlier, in one go
    moves = beat_moves(beats, lock=2)
    assert (moves > 0.020).sum() == 1 and moves.max() == pytest.approx(0.060)
    ramp = np.cumsum(0.5 * (1 - 0.003) ** np.arange(40))  # 0.3% faster each beat, no jump
    stepped = 0.5 * np.arange(40) + 0.005 * np.clip(np.arange(40) - 10, 0, 10)  # 5 ms a beat for 10 beats
    assert beat_moves(ramp, lock=2).max() < 0.005 and beat_moves(stepped, lock=2).max() <= 0.005 + 1e-9
    assert beat_moves(beats, lock=None).size == 0  # never locked: nothing counted


def test_after_a_kill_the_windows_the_relock_and_the_log_lines_are_counted_from_the_kill():
    """``after_the_kill``: a band at 120 and the machine on it, 150 ms ahead from the kill for 6
    beats, then back on it: the 8 s after hold the error, the rest not; 4 beats within 30 ms come
    after the new process's first line; the log's listening lines are kept with their seconds."""
    import time

    from follow_instrument import RATE, after_the_kill

    band = np.arange(60) * 0.5 + 1.0
    ours = band.copy()
    kill = 15.0
    ours[(band > kill) & (band <= kill + 3.0)] -= 0.150
    wall = time.mktime(time.strptime("2026-12-07 10:00:00", "%Y-%m-%d %H:%M:%S"))
    log = ("2026-12-07 09:59:58,000 INFO playing bar 7\n"
           "2026-12-07 10:00:00,020 WARNING listen: the listening process stopped (exit -9); listening again\n"
           "2026-12-07 10:00:00,330 WARNING listen: listening to band:out again (48000 Hz, portaudio capture)\n")
    out = after_the_kill({"band_frames": band * RATE, "drummer_frames": ours * RATE, "killed_frame": kill * RATE,
                          "killed_at": (kill - 1.0, wall)}, log)
    assert out["before_ms"]["p95"] == 0.0 and out["first_8s_ms"]["p95"] == pytest.approx(150.0)
    assert out["first_8s_ms"]["signed_median"] == 0.0 and out["after_8s_ms"]["p95"] == 0.0
    assert out["band_beats_from_kill_to_4_within_30ms"] == 7.0  # the first beat on the band after 18 s
    assert [s for s, _ in out["log_after_kill"]] == [0.02, 0.33]
