"""The wire between the engine process and the mixer process: one block of shared memory (0600)
holding a header of counters and clocks, the event ring and, for tests, a recording. Neither side
ever waits on the other:

- events (frame, voice, velocity) go one way through a single-producer, single-consumer ring
  (voices past the kit's nine are the cue bus's sounds; ``LEVEL`` + bus sets a bus's level);
- the stream's sample clock comes back as (frames done, monotonic time of that callback) under a
  sequence lock, so the engine's clock is the audio clock, read without a system call;
- counters (callbacks, underruns, faults, blocks not mixed in time, blocks mixed again), a panic
  generation number, and a histogram of the callback's durations (``TIMING_BIN_NS`` bins);
- the kit as mixed (``KitTap``): each block's main channels summed, at its frame, for the listening
  process to take the machine's own sound out of what it hears where the kit does not play through
  the engine's JACK ports (``listen.kit_tap`` reads it by time, with the clock above and the output
  latency the engine writes in ``OUT_LATENCY_NS``).
"""

from __future__ import annotations

import time

import numpy as np

from drummachine.core.shared_block import release

CAPACITY = 4096  #: events in flight; the engine hands out at most a few beats ahead (about 100)
#: ring rows whose voice is LEVEL + bus set that bus's level (main 0, cue 1) to the row's value
LEVEL = 100
HEADER = 24
SEQLOCK_TRIES = 10_000
# header slots (int64)
(WRITTEN, READ, SEQ, FRAMES, AT_NS, UNDERRUNS, CALLBACKS, PANIC, DROPPED, WORST_NS, WORST_GAP_NS,
 FAULTS, NOT_READY, REMIXED, LATE_EVENTS, MIX_WORST_NS, OVERLAPS, SILENT, TAPPED, TAP_RATE,
 OUT_LATENCY_NS) = range(21)
# NOT_READY: blocks the callback found not mixed (it played silence); REMIXED: blocks mixed again for an
# event that came after they were mixed; LATE_EVENTS: hits that came for the block playing next or
# earlier; MIX_WORST_NS: the mixing thread's longest turn (audio.ahead); OVERLAPS: its turns that a
# callback came during (the two then took turns at the interpreter lock); SILENT: blocks not ready
# that the callback could not mix itself either (the mixing thread was mid-turn): played as silence;
# TAPPED: the kit tap holds frames up to this one (exclusive); TAP_RATE: its rate (the mixer's);
# OUT_LATENCY_NS: from a frame's place on the clock to the sound card's output (the engine's figure)
TIMING_BINS = 512
TIMING_BIN_NS = 5_000  #: the callback's durations, 5 µs bins; the last bin holds everything longer
#: frames of the kit as mixed kept for the listening process (5.5 s at 48 kHz): it reads a sample
#: the input's latency, PortAudio's input ring (up to 0.5 s) and its own poll after it sounded
TAP_FRAMES = 1 << 18


class SharedBlock:
    """The shared memory: header (int64), event ring (float64 rows), the callback's timings
    (int64 counts), the kit tap (float32, mono), optional recording (float32)."""

    def __init__(self, name: str | None = None, record_frames: int = 0, channels: int = 2):
        from multiprocessing import shared_memory

        timings_at = HEADER * 8 + CAPACITY * 4 * 8
        tap_at = timings_at + TIMING_BINS * 8
        recording_at = tap_at + TAP_FRAMES * 4
        size = recording_at + record_frames * channels * 4
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=size)
            self.owner = True
        else:
            self.shm = shared_memory.SharedMemory(name=name)
            self.owner = False
        buf = self.shm.buf
        self.header = np.ndarray((HEADER,), np.int64, buf, 0)
        self.ring = np.ndarray((CAPACITY, 4), np.float64, buf, HEADER * 8)
        self.timings = np.ndarray((TIMING_BINS,), np.int64, buf, timings_at)
        self.tap = np.ndarray((TAP_FRAMES,), np.float32, buf, tap_at)
        self.recording = np.ndarray((record_frames, channels), np.float32, buf, recording_at) \
            if record_frames else None
        if self.owner:
            self.header[:] = 0
            self.ring[:] = 0
            self.timings[:] = 0

    @property
    def name(self) -> str:
        return self.shm.name

    def close(self) -> None:
        self.header = self.ring = self.timings = self.tap = self.recording = None
        release(self.shm, self.owner)


class EventRing:
    """The engine's end of the event ring: one writer, never waits (a full ring drops and counts)."""

    def __init__(self, block: SharedBlock):
        self.header, self.ring = block.header, block.ring
        self.written = int(self.header[WRITTEN])

    def push(self, frame: int, voice: int, velocity: float) -> bool:
        h = self.header
        if self.written - int(h[READ]) >= CAPACITY:  # the mixer is gone or stalled
            h[DROPPED] += 1
            return False
        row = self.ring[self.written % CAPACITY]
        row[0] = frame
        row[1] = voice
        row[2] = velocity
        row[3] = self.written + 1  # the slot's sequence number, written last: the mixer checks it
        self.written += 1
        h[WRITTEN] = self.written
        return True


class KitTap:
    """The mixer's end of the kit tap: each block as it leaves (after the limiter), its main
    channels summed (not the cue bus: the in-ears reach no mic), written at its frame. A block
    mixed again overwrites its frames. Allocates nothing per block (the mixing thread is real-time)."""

    def __init__(self, block: SharedBlock, rate: int, mains: int, block_max: int = 8192):
        self.header, self.tap = block.header, block.tap
        self.mains = mains
        self.mono = np.zeros(block_max, np.float32)
        self.failed = 0
        self.tap[:] = 0.0  # a mixer started again (perhaps at another rate): nothing of the last one's
        self.header[TAPPED] = 0
        self.header[TAP_RATE] = rate

    def write(self, out: np.ndarray, start: int) -> None:
        """Never raises: the block is already mixed, and the mix must go on (a block the tap cannot
        take is counted in ``failed`` and left out)."""
        try:
            n = out.shape[0]
            i = start % TAP_FRAMES
            if i + n <= TAP_FRAMES:  # summed straight into the tap: 2 µs a block against 9 through a copy
                self._sum(out, self.tap[i:i + n])
            else:
                mono = self.mono[:n]
                self._sum(out, mono)
                k = TAP_FRAMES - i
                self.tap[i:] = mono[:k]
                self.tap[:n - k] = mono[k:]
            if start + n > self.header[TAPPED]:
                self.header[TAPPED] = start + n
        except Exception:
            self.failed += 1

    def _sum(self, out: np.ndarray, into: np.ndarray) -> None:
        if self.mains == 2:
            np.add(out[:, 0], out[:, 1], out=into)
        elif self.mains == 1:
            into[:] = out[:, 0]
        else:
            np.sum(out[:, :self.mains], axis=1, out=into)


class SharedAudioClock:
    """Seconds from the mixer's sample counter, interpolated between callbacks."""

    def __init__(self, header: np.ndarray, rate: int):
        self.header = header
        self.rate = rate
        self.origin = time.monotonic()
        self.last = 0.0

    def sample(self) -> tuple[int, int]:
        h = self.header
        for _ in range(SEQLOCK_TRIES):
            s1 = int(h[SEQ])
            if s1 & 1:
                continue
            frames, at = int(h[FRAMES]), int(h[AT_NS])
            if int(h[SEQ]) == s1:
                return frames, at
        # a mixer killed between its two sequence steps leaves the lock odd: never spin on it
        return int(h[FRAMES]), int(h[AT_NS])

    def now(self) -> float:
        frames, at = self.sample()
        if at == 0:
            t = time.monotonic() - self.origin
        else:
            # between callbacks: interpolate; if the mixer stops (it died, it is restarting) the
            # time goes on by the wall clock, so MIDI out and the engine never stall
            t = frames / self.rate + (time.monotonic() - at * 1e-9)
        if t < self.last:
            t = self.last
        self.last = t
        return t


def timing_summary(counts: np.ndarray, worst_ns: int) -> dict:
    """p50/p99 (upper edge of the 5 µs bin) and max (exact) of a callback-duration histogram, µs."""
    total = int(counts.sum())
    if not total:
        return {"count": 0, "p50_us": 0.0, "p99_us": 0.0, "max_us": 0.0}
    cum = np.cumsum(counts)
    edge = lambda q: float((int(np.searchsorted(cum, q * total)) + 1) * TIMING_BIN_NS / 1000)  # noqa: E731
    return {"count": total, "p50_us": edge(0.5), "p99_us": edge(0.99), "max_us": round(worst_ns / 1000, 1)}
