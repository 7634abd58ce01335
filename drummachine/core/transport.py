"""Time: clocks, and the transport that says when each 16th step starts.

Musical time is an integer step count (ticks within a step at ``PPQ``); seconds appear only when
an event is handed to an output. The transport keeps an *anchor* (a step and the time it starts)
and a tempo; every step's time is computed from the anchor, never accumulated, so an hour of
playing ends where the bar count says. A tempo change re-anchors at the step where it takes
effect; a ramp is a tempo change on every step of its span.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

PPQ = 960  #: ticks per quarter note
STEP_TICKS = PPQ // 4
STEPS_PER_BAR = 16
STEPS_PER_BEAT = 4
BPM_RANGE = (40.0, 300.0)
FEELS = {"half": 0.5, "normal": 1.0, "double": 2.0}


def next_beat(step: int) -> int:
    """The first beat line at or after ``step``."""
    return -(-step // STEPS_PER_BEAT) * STEPS_PER_BEAT


def next_bar(step: int) -> int:
    """The first bar line at or after ``step``."""
    return -(-step // STEPS_PER_BAR) * STEPS_PER_BAR


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told: for tests (no sleeps, no wall time)."""

    def __init__(self, start: float = 0.0):
        self.t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        with self._lock:
            self.t += seconds
        return self.t

    def set(self, t: float) -> None:
        self.t = t


@dataclass(frozen=True)
class Anchor:
    step: int  #: the step that starts at ``time``
    time: float  #: seconds on the clock's scale
    bpm: float  #: song tempo from ``step`` on
    feel: float = 1.0  #: steps per 16th of song time: 0.5 half time, 2 double time

    def step_seconds(self) -> float:
        return 60.0 / (self.bpm * 4.0 * self.feel)


def _anchor_in(anchors: list[Anchor], step: int) -> Anchor:
    for a in reversed(anchors):
        if a.step <= step:
            return a
    return anchors[0]


#: tap tempo: the steps before the re-locked bar line may be at most this much shorter or longer
#: than at the tapped tempo (from the 4th bar line on, half a bar off fits within it)
TAP_SPREAD = (0.85, 1.2)


class Transport:
    """Step times under tempo changes, ramps, half/double time and tap re-locks."""

    def __init__(self, bpm: float, start_time: float = 0.0, start_step: int = 0):
        self.anchors: list[Anchor] = [Anchor(start_step, start_time, float(bpm))]
        self.pending: dict[int, tuple[float | None, float | None]] = {}  # step -> (bpm, feel)
        # The engine's two loops ask for step times at once and a question may apply a pending
        # change: changes are made under this lock and ``anchors`` is replaced, never changed in
        # place, so a reader always walks a whole sorted list
        self._changing = threading.Lock()

    @property
    def anchor(self) -> Anchor:
        return self.anchors[-1]

    def _anchor_for(self, step: int) -> Anchor:
        return _anchor_in(self.anchors, step)

    def _apply_pending(self, upto: int) -> None:
        pending = self.pending
        if not pending or min(pending) > upto:
            return
        with self._changing:
            anchors, pending = list(self.anchors), dict(self.pending)
            for step in sorted(s for s in pending if s <= upto):
                bpm, feel = pending.pop(step)
                a = _anchor_in(anchors, step)
                t = a.time + (step - a.step) * a.step_seconds()
                new = Anchor(step, t, bpm if bpm is not None else a.bpm, feel if feel is not None else a.feel)
                # anchors already placed after it (a tap's bar line, a follower's beat, a change
                # asked for earlier) start where the new tempo brings their step: left where they
                # were, the steps before them could run past them and come back in time
                later = [x for x in anchors if x.step > step]
                anchors = [x for x in anchors if x.step <= step] + [new]
                for x in later:
                    prev = anchors[-1]
                    anchors.append(Anchor(x.step, prev.time + (x.step - prev.step) * prev.step_seconds(), x.bpm, x.feel))
            self.anchors, self.pending = anchors[-64:], pending  # old anchors are never asked for again

    def time_of(self, step: float) -> float:
        """When step (fractional steps allowed: step + offset) starts, in clock seconds."""
        self._apply_pending(int(step))
        a = self._anchor_for(int(step))
        return a.time + (step - a.step) * a.step_seconds()

    def step_seconds(self, step: int) -> float:
        self._apply_pending(step)
        return self._anchor_for(step).step_seconds()

    def bpm_at(self, step: int) -> float:
        self._apply_pending(step)
        return self._anchor_for(step).bpm

    def feel_at(self, step: int) -> float:
        self._apply_pending(step)
        return self._anchor_for(step).feel

    def step_at(self, t: float) -> float:
        """The (fractional) step playing at clock time t."""
        a = self.anchors[0]
        for cand in self.anchors:
            if cand.time <= t:
                a = cand
        return a.step + (t - a.time) / a.step_seconds()

    def set_tempo(self, bpm: float, at_step: int, ramp_steps: int = 0) -> None:
        """Tempo ``bpm`` from ``at_step`` (at once), or reached linearly over ``ramp_steps`` steps."""
        if ramp_steps <= 0:
            self._merge(at_step, bpm, None)
            return
        start = self.bpm_at(at_step)
        for i in range(1, ramp_steps + 1):
            self._merge(at_step + i - 1, start + (bpm - start) * i / ramp_steps, None)

    def set_feel(self, feel: str, at_step: int) -> None:
        self._merge(at_step, None, FEELS[feel])

    def _merge(self, step: int, bpm, feel) -> None:
        with self._changing:
            old = self.pending.get(step, (None, None))
            pending = dict(self.pending)
            pending[step] = (bpm if bpm is not None else old[0], feel if feel is not None else old[1])
            self.pending = pending

    def follow(self, beat: int, beat_time: float | None, bpm: float, now: float) -> bool:
        """MIDI clock in: make ``beat`` (a beat line) fall on the leader's beat nearest to it, at the
        leader's tempo. ``beat_time``: the time of one of the leader's beats (None: not known yet).
        True when the transport moved."""
        if beat_time is None:
            return False
        ours = self.time_of(beat)
        step_s = 60.0 / (bpm * 4.0)
        while beat_time < ours - 2 * step_s:  # the leader's beat nearest to ours
            beat_time += STEPS_PER_BEAT * step_s
        while beat_time > ours + 2 * step_s:
            beat_time -= STEPS_PER_BEAT * step_s
        if abs(beat_time - ours) <= 0.001 and abs(self.bpm_at(beat) - bpm) <= 0.05:
            return False
        self.relock(beat, max(beat_time, now + 0.002), bpm)
        return True

    def relock_to_tap(self, open_step: int, bpm: float, first_tap: float, earliest: float) -> None:
        """Tap tempo: the tapped tempo, and a bar line on the band's one (the first tap moved on by
        whole bars, no earlier than ``earliest``). The steps from ``open_step`` to that bar line
        are spread evenly up to it, so they never run past it (a bar line before the steps that
        lead to it sent the steps after it back in time: a burst of overdue notes). It is the
        next bar line, or a later one where the steps before it would otherwise rush or drag by
        more than ``TAP_SPREAD``; the grid point nearest where they would end at the new tempo."""
        bar_s = 60.0 / bpm * 4.0 / self.feel_at(open_step)
        step_s = bar_s / STEPS_PER_BAR
        bar_line = next_bar(open_step)
        if bar_line == open_step:  # on the bar line itself: nothing between to spread
            t = first_tap
            while t < earliest:
                t += bar_s
            self.relock(bar_line, t, bpm)
            return
        start = self.time_of(open_step)
        low, high = TAP_SPREAD
        for extra_bars in range(4):
            line = bar_line + extra_bars * STEPS_PER_BAR
            natural = start + (line - open_step) * step_s
            t = first_tap + round((natural - first_tap) / bar_s) * bar_s
            while t < earliest:
                t += bar_s
            ratio = (t - start) / ((line - open_step) * step_s)  # the steps between, longer by
            if low <= ratio <= high:
                break
        self.set_tempo(bpm / ratio, open_step)
        self.relock(line, t, bpm)

    def relock(self, at_step: int, time: float, bpm: float) -> None:
        """Make ``at_step`` start at ``time`` with tempo ``bpm`` (tap tempo)."""
        with self._changing:
            self.pending = {s: v for s, v in self.pending.items() if s < at_step}
        self._apply_pending(at_step)
        with self._changing:
            feel = self._anchor_for(at_step).feel
            self.anchors = [a for a in self.anchors if a.step < at_step] + [Anchor(at_step, time, float(bpm), feel)]


class TapTempo:
    """Tap the quarter notes: three or more taps within a musical range set the tempo.

    The taps' average interval gives the bpm; the first tap of the run is the downbeat, so the
    next bar line lands on the band's "one".
    """

    def __init__(self, min_bpm: float = 40.0, max_bpm: float = 300.0, timeout_beats: float = 2.0):
        self.min_bpm, self.max_bpm, self.timeout_beats = min_bpm, max_bpm, timeout_beats
        self.taps: list[float] = []

    def tap(self, t: float) -> tuple[float, float] | None:
        """Record a tap; returns (bpm, time of the first tap) once the run is long enough."""
        if self.taps:
            gap = t - self.taps[-1]
            longest = 60.0 / self.min_bpm * self.timeout_beats / 2.0
            if gap > longest or gap < 60.0 / self.max_bpm:
                self.taps = []
        self.taps.append(t)
        self.taps = self.taps[-8:]
        if len(self.taps) < 3:
            return None
        intervals = [b - a for a, b in zip(self.taps[:-1], self.taps[1:])]
        mean = sum(intervals) / len(intervals)
        if any(abs(i - mean) > 0.25 * mean for i in intervals):
            self.taps = self.taps[-2:]  # an uneven tap restarts the run
            return None
        bpm = 60.0 / mean
        if not self.min_bpm <= bpm <= self.max_bpm:
            return None
        return round(bpm, 2), self.taps[0]
