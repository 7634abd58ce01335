"""The listening process's samples and when they came: a ring the audio input's callback (or
PortAudio's reader) fills, the machine's own kit beside it where it comes in, and the input
clock against the monotonic clock (``Timing``). Numpy only; no audio library here."""

from __future__ import annotations

import time

import numpy as np

RING_SECONDS = 4.0
TIMING_CALLBACKS = 4096  #: callbacks the input's clock is measured over (about 10 s)
#: reads whose frame stamp is compared (the lowest kept): a read returns late, never early (a
#: power of 2)
READ_ENVELOPE = 16


def _put(ring: np.ndarray, at: int, block: np.ndarray) -> None:
    """``block`` into ``ring`` from sample ``at`` on, round the end."""
    n = block.shape[0]
    start = at % ring.size
    if start + n <= ring.size:
        ring[start:start + n] = block
    else:
        cut = ring.size - start
        ring[start:] = block[:cut]
        ring[:n - cut] = block[cut:]


def _got(ring: np.ndarray, read: int, written: int) -> np.ndarray:
    """A copy of the ring's samples ``read`` to ``written``."""
    start, n = read % ring.size, written - read
    if n <= 0:
        return ring[:0].copy()
    if start + n <= ring.size:
        return ring[start:start + n].copy()
    return np.concatenate([ring[start:], ring[:n - (ring.size - start)]])


class Capture:
    """Samples from the input's callback, and when they came (the callback's side allocates nothing).

    Per callback it notes the monotonic time, the samples taken so far and the input clock's frame
    counter at the block's end (JACK's frame time; the samples taken, without JACK): a block JACK
    skipped (an xrun on a busy machine) leaves a gap in frames that the samples do not have.
    """

    def __init__(self, rate: int, exact: bool = True, kit: bool = False):
        self.rate = rate
        self.exact = exact  #: frame stamps from the callback (exact) or from a read's return (late, never early)
        self.ring = np.zeros(int(RING_SECONDS * rate), np.float32)
        #: the machine's own kit as it left, sample for sample beside the input (``kit``)
        self.kit_ring = np.zeros_like(self.ring) if kit else None
        self.written = 0
        self.times = np.zeros((TIMING_CALLBACKS, 3), np.float64)  # (monotonic, samples, frames) at each block's end
        self.callbacks = 0
        self.xruns = 0

    def take(self, block: np.ndarray, frame_end: int | None = None, kit: np.ndarray | None = None) -> None:
        """Called from the audio callback; ``kit``: the kit's samples of the same period."""
        n = block.shape[0]
        _put(self.ring, self.written, block)
        if self.kit_ring is not None and kit is not None:
            _put(self.kit_ring, self.written, kit)
        self.written += n
        row = self.times[self.callbacks % self.times.shape[0]]
        row[0] = time.monotonic()
        row[1] = self.written
        row[2] = self.written if frame_end is None else frame_end
        self.callbacks += 1

    def since(self, read: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        """Samples from ``read`` to what is written, the kit's beside them (None without), and
        where the next read starts (the oldest are lost if the reader fell behind)."""
        written = self.written
        read = max(read, written - self.ring.size + 1024)
        kit = None if self.kit_ring is None else _got(self.kit_ring, read, written)
        return _got(self.ring, read, written), kit, written

    def timing(self) -> "Timing":
        """The input clock against the monotonic clock, from the callbacks noted (see Timing)."""
        n = min(self.callbacks, self.times.shape[0])
        # oldest first: the ring turned at its write position
        return Timing(np.roll(self.times, -(self.callbacks % n), axis=0) if self.callbacks > n else self.times[:n].copy(),
                      self.rate, exact=self.exact)


class Timing:
    """Sample number -> monotonic time of when it was heard.

    Samples map to frames of the input clock through the callbacks' notes (the nearest block at or
    after the sample); frames map to monotonic time by a line through (frames, callback time),
    moved down to its lowest point: a callback can run late, never early, so the earliest is the
    truest. Its slope is measured, not 1 / rate: a sound card's clock is not the computer's (JACK's
    dummy driver here runs 0.5% slow on a busy machine).
    """

    def __init__(self, rows: np.ndarray, rate: int, exact: bool = True):
        self.rate = rate
        if rows.shape[0] == 0:
            rows = np.array([[time.monotonic(), 0.0, 0.0]])
        if np.any(rows[1:, 1] < rows[:-1, 1]):
            rows = rows[np.argsort(rows[:, 1])]
        self.samples, self.frames = rows[:, 1], rows[:, 2]
        self.times = rows[:, 0]  #: each callback's (or read's) monotonic time, as noted
        if not exact and rows.shape[0] > 1:
            # a blocking read's frame stamp is when it returned: late by the reader's wake-up, never
            # early; frames minus samples is constant but for blocks JACK skipped (a step up), so
            # the lowest over the last few reads is the truest (a step is taken READ_ENVELOPE reads late)
            lowest = np.concatenate([np.full(READ_ENVELOPE - 1, np.inf), self.frames - self.samples])
            span = 1
            while span < READ_ENVELOPE:  # the lowest over each READ_ENVELOPE reads, by doubling spans
                lowest = np.minimum(lowest[:-span], lowest[span:])
                span *= 2
            self.frames = self.samples + lowest
            rows = np.column_stack([rows[:, 0], self.samples, self.frames])
        slope = 1.0 / rate
        if rows.shape[0] >= 64 and np.ptp(self.frames) > 2 * rate:
            frames = self.frames - self.frames.mean()  # a least-squares line, about the means
            slope = float(np.dot(frames, rows[:, 0] - rows[:, 0].mean()) / np.dot(frames, frames))
            slope = min(max(slope, 0.98 / rate), 1.02 / rate)
        self.per_frame = slope
        self.origin = float(np.min(rows[:, 0] - self.frames * slope))

    def frame(self, sample: float) -> float:
        """The input clock's frame a sample came at."""
        k = min(int(np.searchsorted(self.samples, sample)), self.samples.size - 1)
        return self.frames[k] - (self.samples[k] - sample)

    def heard(self, sample: float) -> float:
        return self.origin + self.frame(sample) * self.per_frame

    @property
    def speed(self) -> float:
        """Input seconds (samples / rate) per monotonic second."""
        return 1.0 / (self.rate * self.per_frame)
