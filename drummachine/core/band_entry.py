"""Where the band came in, and so where its "one" is: what a machine waiting for the band
(``play --wait-for-band``) comes in on. Pure logic, the standard library only: the readings'
loudness in, the band's first "one" after a time out."""

from __future__ import annotations

import math
from collections import deque

#: the band's "one" (``BandEntry.one_after``), counted in bars from where it came in: the first
#: reading within ENTRY_BELOW_DB of its playing level (the median loudness of its last
#: ENTRY_LEVEL_READINGS readings), if it came in from at least ENTRY_RISE_DB under that level (else
#: it was already playing when the machine began to listen, or only the room is heard: the machine
#: waiting for the band waits on; the start command starts it). A band starts
#: a song, and comes back in after an intro, on a "one"; a quiet pickup before it stays under the
#: level. The band must have played at that level for ENTRY_SETTLE_SECONDS before the "one" is
#: taken from it (the tracker can be sure of a beat from a pickup or a count-in before the band
#: has come in). The loudness is of the last 400 ms, so it rises after the first note: the band's
#: first beat is the last one up to ENTRY_TOLERANCE seconds after that reading. The first
#: ENTRY_SKIP_READINGS readings are not looked at: their 400 ms hold the silence from before the
#: stream began (a band already playing would seem to have come in just then)
ENTRY_BELOW_DB = 6.0
ENTRY_SKIP_READINGS = 8
ENTRY_RISE_DB = 12.0
ENTRY_LEVEL_READINGS = 20
ENTRY_SETTLE_SECONDS = 1.5
ENTRY_MEMORY_READINGS = 1200  #: a minute of readings is looked back on
ENTRY_TOLERANCE = 0.05
BEATS_PER_BAR = 4


class BandEntry:
    """The last minute of the band's loudness, and where it came in from the quiet."""

    def __init__(self):
        self.levels: deque[tuple[float, float]] = deque(maxlen=ENTRY_MEMORY_READINGS)  # (time, loudness dB)
        self.heard = 0  # readings heard

    def hear(self, time: float, loudness_db: float) -> None:
        self.heard += 1
        if self.heard > ENTRY_SKIP_READINGS:
            self.levels.append((time, loudness_db))

    def came_in_at(self) -> float | None:
        """When the band came in (the reading that heard it; see ENTRY_BELOW_DB), or None: it was
        playing when the readings began, or has not played for long enough to know its level."""
        levels = self.levels
        if len(levels) < ENTRY_LEVEL_READINGS:
            return None
        recent = sorted(db for _, db in list(levels)[-ENTRY_LEVEL_READINGS:])
        playing = recent[len(recent) // 2]
        if playing - min(db for _, db in levels) < ENTRY_RISE_DB:
            return None
        return next(t for t, db in levels if db >= playing - ENTRY_BELOW_DB)

    def one_after(self, beat: float, period: float, now: float) -> float | None:
        """The band's first "one" at or after its beat ``beat`` (``period`` apart), its bars counted
        from where it came in. None: it came in too lately to say (at ``now``), or has not come in
        (nothing rose out of the quiet: a band already playing when the readings began, or only
        the room, of whose noise the tracker can be sure: docs/follow.md)."""
        entry = self.came_in_at()
        if entry is None or now - entry < ENTRY_SETTLE_SECONDS:
            return None
        first = beat - period * math.ceil((beat - entry - ENTRY_TOLERANCE) / period)  # its first beat
        since = round((beat - first) / period)
        return beat + period * (-since % BEATS_PER_BAR)
