"""The listening process's readings, in one small block of shared memory.

The listening process writes a reading (the band's tempo, next beat, confidence, loudness, onset
density, all times on the monotonic clock every process shares) under a sequence lock; the
engine's process reads it without waiting. The engine writes back the tempo it plays (the
tracker's prior). Python's shared memory is created with mode 0600: only this user can map it.
"""

from __future__ import annotations

import numpy as np

from drummachine.core.shared_block import release, untrack

SLOTS = 24
SEQLOCK_TRIES = 10_000
# slots (float64)
(SEQ, HEARD, BPM, NEXT_BEAT, CONFIDENCE, LOUDNESS, DENSITY, STATUS, CPU, RATE, CLIPPED, PRIOR, BLOCKS,
 STARTED, XRUNS, OWN_KIT_REMOVED_DB) = range(16)
#: what the input is doing (STATUS), one table: code -> words on the stage
STATUSES = {0: "listening", 1: "silence", 2: "clipping", 3: "input gone", 4: "starting"}
LISTENING, SILENCE, CLIPPING, GONE, STARTING = range(5)


class ReadingBlock:
    """The shared block: ``create`` in the engine's process, attach by name in the listener's."""

    def __init__(self, name: str | None = None):
        from multiprocessing import shared_memory

        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=SLOTS * 8)
            self.owner = True
        else:
            self.shm = shared_memory.SharedMemory(name=name)
            self.owner = False
            untrack(self.shm)
        self.slots = np.ndarray((SLOTS,), np.float64, self.shm.buf, 0)
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
