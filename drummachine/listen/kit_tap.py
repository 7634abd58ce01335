"""The machine's own kit beside what it hears, by time, where it does not come in beside the input.

On JACK the engine's own ports are connected to the listening process's second channel, and the
kit comes in sample for sample beside the band. Elsewhere (the kit through PortAudio, over ALSA or
over a JACK server that came after ``play``; a sounddevice input) the listening process reads the
kit as the mixer mixed it (``audio.wire.KitTap``) at the moments its input's samples were heard,
for the canceller (``listen.own_sound``).

Both ends are on the monotonic clock: an input sample by the input's clock frame (``capture.Timing``),
less its capture latency, a kit frame by the mixer's published clock (a frame's place in its
period), plus the output latency the engine writes. Each clock is a line along the lowest of its
callbacks' times over the last seconds (a callback runs late, never early: ``lower_line``), not a
least-squares line through them all, whose slope and lowest point moved the map by samples a
second (the canceller, fed that, took out 0-4 dB of a kit it took 8-28 dB out of fed the kit in
time, in a first version of ``tests/test_listen_kit_tap.py``). The map from input samples to kit
frames is then a line too, with the two sound cards' drift in its slope. The canceller models the
path from the kit to the input up to 250 ms long and needs the kit before its echo: the kit is read
``LEAD_SECONDS`` after the moment heard. The map moves at most ``STEER_FRAMES`` a block while it is
near (a reference that moves is a path the canceller learns again), and at once where it is far
(an input block lost, the mixer started again).
"""

from __future__ import annotations

import numpy as np

from drummachine.audio.wire import OUT_LATENCY_NS, TAP_FRAMES, TAP_RATE, TAPPED, SharedAudioClock, SharedBlock
from drummachine.core import shared_block
from drummachine.listen.capture import Timing

#: the kit is read this much after the moment an input sample was heard: an input or output latency
#: said that much too large still leaves the kit ahead of its echo (one said too small, or the air,
#: only puts it further ahead). Not more: the canceller learns a path that starts later more slowly
#: (on JACK, the kit alone: 2-10 dB out after 2 s and 18-22 after 8 s at 30 ms; 10-11 and 25-31 at 10 ms)
LEAD_SECONDS = 0.01
CLOCK_ROWS = 1024  #: the mixer's clock readings the line is fitted to (about 10 s at a poll each 10 ms)
FIT_SECONDS = 0.5
LINE_POINTS = 16  #: a clock's readings a row whose lowest the line is drawn through
STEER_FRAMES = 0.05  #: the most the map moves a block while near: a frame in 20 blocks
#: the map a block takes is its own one moved towards the two lines' by its length over this
SMOOTH_SECONDS = 5.0
JUMP_SECONDS = 0.002  #: farther than this, the map is taken at once
#: until both lines are drawn along this much of their clocks, the map keeps where it was first put
#: (but for a jump) at the nominal rates' ratio: a line along a fraction of a second tilts, and a
#: map that followed it moved by tens of samples (the canceller learnt less in its first seconds)
SETTLE_SECONDS = 2.0
#: the most two sound cards' clocks are taken to differ (200 ppm is a poor crystal's)
MOST_DRIFT = 0.001
#: input samples wait at most this long for the kit beside them to be mixed (the mixer mixes a
#: few blocks ahead of its output; a mixer gone or starting again mixes nothing)
HOLD_SECONDS = 0.1


def lower_line(x: np.ndarray, t: np.ndarray, per: float) -> tuple[float, float]:
    """The line ``t = origin + per * x`` along the lowest of the points. Times noted late by a
    varying wake-up, never early, lie on or above their clock's true line: the lowest of each
    ``LINE_POINTS`` in a row (times less ``per`` first, the nominal slope) is nearly on it, unless
    the whole stretch came late (a reader that fell behind a busy host and caught up); the lower
    hull of those lowest points leaves such stretches out, and its edge over the middle is the line.
    A least-squares line through all the lowest points tilted with the late stretches (0.4% on a
    busy host); a hull of the single points, with whichever two lay nearest the middle."""
    order = np.argsort(x, kind="stable")
    x, residual = x[order], t[order] - per * x[order]
    whole = x.size // LINE_POINTS * LINE_POINTS  # the newest are kept: the oldest whole stretch left out
    stretches = residual[x.size - whole:].reshape(-1, LINE_POINTS)
    lowest = x.size - whole + np.arange(0, whole, LINE_POINTS) + np.argmin(stretches, axis=1)
    xs, rs = x[lowest].tolist(), residual[lowest].tolist()
    hull: list[int] = []
    for i in range(len(xs)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (rs[b] - rs[a]) * (xs[i] - xs[a]) >= (rs[i] - rs[a]) * (xs[b] - xs[a]):  # b not under a-i
                hull.pop()
            else:
                break
        hull.append(i)
    middle = 0.5 * (xs[0] + xs[-1]) if xs else 0.0
    for a, b in zip(hull, hull[1:]):
        if xs[b] >= middle and xs[b] > xs[a]:
            tilt = (rs[b] - rs[a]) / (xs[b] - xs[a])
            return rs[a] - tilt * xs[a], per + tilt
    raise ValueError("fewer than two distinct points")


class KitTapReader:
    """Reads the kit tap of the mixer's shared block ``name`` beside the input's samples.
    ``untrack``: as another process than the block's owner (the listening process): Python < 3.13
    tracks attached blocks too, and would unlink the engine's at this one's exit."""

    def __init__(self, name: str, untrack: bool = True):
        self.block = SharedBlock(name)
        if untrack:
            shared_block.untrack(self.block.shm)
        self.header, self.tap = self.block.header, self.block.tap
        self.clock = SharedAudioClock(self.header, 1)
        self.rows = np.zeros((CLOCK_ROWS, 2), np.float64)  # (monotonic, frame) per new clock reading
        self.count = 0
        self.last_frame = -1
        self.rate = 0
        self.line: tuple[float, float] | None = None  #: the mixer's clock: frame -> monotonic (origin, per frame)
        self.fitted_at = 0.0
        self.input_line: tuple[float, float] | None = None  #: the input's clock frame -> monotonic
        self.input_fitted_at = 0.0
        self.position: float | None = None  #: the kit frame of the next input sample
        self.next_sample = -1
        self.jumps = 0  #: times the map was taken at once (after the first)

    def note_clock(self, now: float) -> None:
        """A reading of the mixer's clock (each poll: its callbacks come every few ms)."""
        rate = int(self.header[TAP_RATE])
        if rate != self.rate:  # a mixer started (again, perhaps at another rate): a new line
            self.rate, self.count, self.line, self.position = rate, 0, None, None
        frame, at = self.clock.sample()
        if at and frame != self.last_frame:
            self.rows[self.count % CLOCK_ROWS] = (at * 1e-9, frame)
            self.count += 1
            self.last_frame = frame
        if self.rate and self.count >= 2 * LINE_POINTS and now - self.fitted_at >= FIT_SECONDS:
            rows = self.rows[:min(self.count, CLOCK_ROWS)]
            self.fitted_at = now
            try:
                self.line = lower_line(rows[:, 1], rows[:, 0], 1.0 / self.rate)
            except ValueError:  # no two frames apart yet: the line there was
                pass

    def rows_seconds(self) -> float:
        """How long a stretch of the mixer's clock its line is drawn along."""
        rows = self.rows[:min(self.count, CLOCK_ROWS), 0]
        return float(np.ptp(rows)) if rows.size else 0.0

    def beside(self, first: int, n: int, heard: Timing, latency: float, now: float) -> np.ndarray:
        """The kit at the input's samples from ``first`` on (``heard``: the input's timing,
        ``latency``: its capture latency), as many of the ``n`` as it has: the kit ``LEAD_SECONDS``
        after the moment heard may not be mixed yet, and those samples wait for the next call
        (held at most ``HOLD_SECONDS``; then with no kit). Zeros where there is no kit (no mixer)."""
        if now - self.input_fitted_at >= FIT_SECONDS and heard.frames.size >= 2 * LINE_POINTS:
            self.input_fitted_at = now
            try:
                self.input_line = lower_line(heard.frames, heard.times, 1.0 / heard.rate)
            except ValueError:
                pass
        if n == 0:
            return np.zeros(0, np.float32)
        if self.line is None or self.input_line is None:
            self.position = None
            return np.zeros(n, np.float32)
        (out_origin, out_per), (in_origin, in_per) = self.line, self.input_line
        lead = LEAD_SECONDS - self.header[OUT_LATENCY_NS] * 1e-9
        start = (in_origin + heard.frame(first) * in_per - latency + lead - out_origin) / out_per
        settled = min(np.ptp(heard.times), self.rows_seconds()) >= SETTLE_SECONDS
        # kit frames per input sample: the lines' while they are young would drift the map
        step = in_per / out_per if settled else self.rate / heard.rate
        if abs(step * heard.rate / self.rate - 1.0) > MOST_DRIFT:  # a line that tilted: no sound card drifts so
            step = self.rate / heard.rate
        position = self.position
        if position is None or first != self.next_sample or abs(start - position) > JUMP_SECONDS * self.rate:
            self.jumps += position is not None and settled
            position = start
        elif settled:  # towards the map a little each block: the lines' own noise averaged over seconds
            position += min(max((start - position) * min(1.0, n / (SMOOTH_SECONDS * heard.rate)), -STEER_FRAMES),
                            STEER_FRAMES)
        at = position + step * np.arange(n)
        mixed = int(self.header[TAPPED])
        k = int(np.searchsorted(at, mixed - 1))
        if k < n and in_origin + heard.frame(first + k) * in_per - latency < now - HOLD_SECONDS:
            k = n  # the mixer is not mixing (gone, or starting again): no longer held
        at = at[:k]
        self.position, self.next_sample = position + step * k, first + k
        out = np.zeros(k, np.float32)
        whole = np.floor(at).astype(np.int64)
        there = (whole >= mixed - TAP_FRAMES + 1) & (whole + 1 < mixed)
        if there.any():
            w = whole[there]
            a, b = self.tap[w % TAP_FRAMES], self.tap[(w + 1) % TAP_FRAMES]
            out[there] = a + (at[there] - w).astype(np.float32) * (b - a)
        return out

    def close(self) -> None:
        self.header = self.tap = None
        self.block.close()
