"""The listening process's readings, in one small block of shared memory.

The listening process writes a reading (the band's tempo, next beat, confidence, loudness, onset
density, all times on the monotonic clock every process shares) under a sequence lock; the
engine's process reads it without waiting. The engine writes back the tempo it plays (the
tracker's prior), and where the musician tapped the band's beat (TAPPED_BEAT, monotonic; TAPS
counts them: the listening process acts on a new count). Python's shared memory is created with
mode 0600: only this user can map it.
"""

from __future__ import annotations

import numpy as np

from drummachine.core.shared_block import release, untrack
from drummachine.listen.tracker import HANDED_OVER, LOUDNESS_HANDED_OVER, ONSETS_KEPT, PROFILE_BINS

SLOTS = 24
SEQLOCK_TRIES = 10_000
# slots (float64)
(SEQ, HEARD, BPM, NEXT_BEAT, CONFIDENCE, LOUDNESS, DENSITY, STATUS, CPU, RATE, CLIPPED, PRIOR, BLOCKS,
 STARTED, XRUNS, OWN_KIT_REMOVED_DB, TAPPED_BEAT, TAPS) = range(18)
#: what the input is doing (STATUS), one table: code -> words on the stage
STATUSES = {0: "listening", 1: "silence", 2: "clipping", 3: "input gone", 4: "starting"}
LISTENING, SILENCE, CLIPPING, GONE, STARTING = range(5)


class ReadingBlock:
    """The shared block: made in the engine's process (no ``name``), attached by name in the listener's."""

    SIZE = SLOTS  #: float64 slots, SEQ first

    def __init__(self, name: str | None = None):
        from multiprocessing import shared_memory

        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=self.SIZE * 8)
            self.owner = True
        else:
            self.shm = shared_memory.SharedMemory(name=name)
            self.owner = False
            untrack(self.shm)
        self.slots = np.ndarray((self.SIZE,), np.float64, self.shm.buf, 0)
        if self.owner:
            self.slots[:] = 0.0
            self.slots[STATUS] = STARTING

    @property
    def name(self) -> str:
        return self.shm.name

    def write(self, values: dict[int, float]) -> None:
        """One reading, published whole (the reader never sees half of it)."""
        s = self.slots
        s[SEQ] += 1  # odd: being written
        for slot, value in values.items():
            s[slot] = value
        s[SEQ] += 1

    def free_lock(self) -> bool:
        """A writer killed mid-write left the lock taken (SEQ odd): free it for the next writer.
        True if it was taken (what the dead writer left is half written)."""
        if int(self.slots[SEQ]) & 1:
            self.slots[SEQ] += 1
            return True
        return False

    def read(self) -> np.ndarray:
        """A consistent copy of the slots (the last complete reading)."""
        s = self.slots
        for _ in range(SEQLOCK_TRIES):
            before = s[SEQ]
            if int(before) & 1:
                continue
            copy = s.copy()
            if s[SEQ] == before:
                return copy
        return s.copy()  # a writer killed mid-reading: take it as it is

    def close(self) -> None:
        self.slots = None
        release(self.shm, self.owner)


class TrackerStateBlock(ReadingBlock):
    """The tracker's state (``BeatTracker.state``), written by the listening process with each of
    its estimates into a block the engine's process keeps: a listening process started again (the
    last one died, or the kit's ports came) takes it over (``BeatTracker.resume``) instead of
    starting cold. Its times: the tracker's stream seconds, and ``mono_now``, the monotonic time
    of its ``now``, to place them on the successor's stream."""

    SCALARS = ("saved_at", "mono_now", "frames", "now", "fps") + HANDED_OVER + \
        tuple(f"loudness.{name}" for name in LOUDNESS_HANDED_OVER)
    ARRAYS = (("profile", PROFILE_BINS), ("onsets", ONSETS_KEPT), ("history", 2048))  # (name, most)
    SIZE = 1 + len(SCALARS) + len(ARRAYS) + sum(most for _, most in ARRAYS)

    def __init__(self, name: str | None = None):
        super().__init__(name)
        if self.owner:
            self.slots[:] = 0.0

    def save(self, state: dict, saved_at: float, mono_now: float) -> None:
        values = np.zeros(self.SIZE - 1)
        state = state | {"saved_at": saved_at, "mono_now": mono_now}
        values[:len(self.SCALARS)] = [state[name] for name in self.SCALARS]
        at = len(self.SCALARS)
        for name, most in self.ARRAYS:
            a = np.asarray(state[name], np.float64)[-most:]
            values[at], values[at + 1:at + 1 + a.size] = a.size, a
            at += 1 + most
        s = self.slots
        s[SEQ] += 1  # odd: being written (as ``write``, the values in one copy)
        s[1:] = values
        s[SEQ] += 1

    def taken(self) -> dict | None:
        """The last state saved whole; None: none yet, or its writer died in the middle of a save
        (the lock is then freed: only the successor that takes the state over writes after it)."""
        if self.free_lock():
            return None
        s = self.read()
        if s[SEQ] < 2:
            return None
        state = dict(zip(self.SCALARS, s[1:1 + len(self.SCALARS)].tolist()))
        at = 1 + len(self.SCALARS)
        for name, most in self.ARRAYS:
            state[name] = s[at + 1:at + 1 + int(s[at])].copy()
            at += 1 + most
        return state
