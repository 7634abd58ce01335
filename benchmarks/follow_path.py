"""The beat tracker with a path of beats in its fold's place: measured, not shipped (docs/follow.md,
"The beat as a path of beats").

The shipped tracker (``drummachine.listen.tracker.BeatTracker``) gives its phase-locked loop the
peak of the onset strength folded on the period over the last 6 beats: a strict comb, which
wandered 40-80 ms from where a drummer played for seconds. ``PathTracker`` gives it the last beat
of the best path of beats instead (Ellis, "Beat tracking by dynamic programming", 2007, run forward
only): a frame's cumulative score is its onset strength (over its running RMS) plus ``PATH_DECAY``
times the best cumulative score of a frame 0.5 to 2 periods back, less ``TIGHTNESS`` times the
squared log of that spacing over the period; the last beat is the best score within the last
period (the newest 2 frames left out: an onset not yet at its peak). The fold stays the judge of
how sure (the loop's jitter is the fold's disagreement with it: from the path, a room's noise was
sure in 6% of the readings against the test's 5%). A half-beat flip moves the path with the loop.

Tightness 100 bent the path to every fill, 3000 and more held it to the loop's period, which lags
a ramp; 1000 was chosen on the train split. In the replay it is nearer the drummers' band (steady
45 -> 34 ms at p95), further from quantized songs (12.8 -> 16.6 ms), and on the real instrument over
JACK no nearer the band's played beat (6 alternating rounds); hence not shipped.

    python benchmarks/follow.py --replay --tightness 1000 ...   # the replays, the tracker table
"""

from __future__ import annotations

import math

import numpy as np

from drummachine.listen.tracker import BeatTracker

TIGHTNESS = 1000.0
PATH_DECAY = 0.999  #: per beat (0.9 was no better)
PATH_RMS_FRAMES = 1000  #: the onset strength's running RMS, over about this many frames (5 s)


def install(tightness: float) -> None:
    """Every tracker made from now on in this process (the runtime's ``BeatTracker`` looked up at
    call time) is a ``PathTracker`` of this tightness: the benchmarks' switch, none in the runtime."""
    import drummachine.listen.tracker as tracker_module

    global TIGHTNESS
    TIGHTNESS = float(tightness)
    tracker_module.BeatTracker = PathTracker


class PathTracker(BeatTracker):
    def __init__(self, *args, tightness: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tightness = TIGHTNESS if tightness is None else tightness
        self.path = np.zeros(self.history.size)  # the best path's cumulative score ending at each frame
        self.path_ms = 1e-6  # the onset strength's running mean square

    def _onset_strength(self, flux: float) -> float:
        value = super()._onset_strength(flux)  # once a frame, before the frame joins the history
        self._extend_path(value)
        return value

    def _extend_path(self, value: float) -> None:
        self.path_ms += (value * value - self.path_ms) / PATH_RMS_FRAMES
        period = (self.period if self.period > 0 else 60.0 / self.prior_bpm) * self.fps
        lags = np.arange(max(1, int(0.5 * period)), min(int(2.0 * period), self.path.size - 1) + 1)
        before = self.path[-lags]  # the frames those lags before the new one (path[-1] is the newest so far)
        best = float((before - self.tightness * np.log(lags / period) ** 2).max()) if lags.size else 0.0
        self.path[:-1] = self.path[1:]
        self.path[-1] = value / math.sqrt(max(self.path_ms, 1e-12)) + PATH_DECAY * max(best, 0.0)

    def _measured_last_beat(self, fold_last_beat: float, period: float) -> float:
        n = max(1, int(round(period * self.fps)))
        best = int(np.argmax(self.path[-n - 2:-2]))
        return self.frame_time(self.frames - (n + 2) + best)

    def _start_over(self) -> None:
        super()._start_over()
        self.path[:] = 0.0

    def _beat_or_off_beat(self, activity: float) -> None:
        flips = self.flips
        super()._beat_or_off_beat(activity)
        shift = int(round(self.period * self.fps / 2))
        if self.flips > flips and 0 < shift < self.path.size:
            # the path's beats move with the loop: its scores half a beat later (or its off-beat
            # path, still the best for a while, would take the loop back for 5 beats)
            self.path[shift:] = self.path[:-shift].copy()
            self.path[:shift] = 0.0
