"""The band's loudness as the tracker hears it: the RMS of the last 400 ms, its playing level (a
slow peak), whether the band just came in, stopped, or is under the musician's gate. Numpy only."""

from __future__ import annotations

import math

import numpy as np

#: the band came in: its 400 ms loudness this many dB over the slow peak of what was heard before
#: (the room, or nothing). The tracker starts over from there: its first estimate, the song's
#: tempo held for AUTOCORRELATION_AFTER and the onset strength it folds all count from the band's
#: first notes, not from when the listening began (a machine waiting for the band, or playing
#: alone before the band comes in, had folded seconds of the room: with 4 s of a room 20 dB under
#: the band before it, the machine locked after 16.5 beats (median, train split) and 6.1 with
#: this; waiting for the band, it comes in about 4 beats later for it: docs/follow.md)
ENTRY_RISE_DB = 12.0
#: ... counted from the lowest playing level of this many seconds before: the 400 ms loudness takes
#: its own length to rise, and against the level of one update before, a band 20 dB over the room
#: (its first 50 ms in the window: +11.3 dB at its average level; one traced clip rose 8 then 11 dB)
#: went unheard in 16 of 20 performances after 2 s of the room (docs/follow.md, "The band's entry,
#: counted over the loudness's own window")
ENTRY_RISE_SECONDS = 0.4
#: the band stopped: its loudness over the last 400 ms this many dB under its playing level (a
#: slow peak of that loudness) means nobody plays, whatever the onset strength says (the flux is
#: of log magnitudes: a room's noise 20 dB under the band gives as much of it as the band, and a
#: 2-bar break kept the confidence at 0.8-1.0 throughout). Fully playing 4 dB above that: a verse
#: 10 dB down is still the band (the dynamics). 0: off
BREAK_DB = 16.0
LEVEL_DECAY_DB = 0.5  #: dB a second the playing level sinks by while the band is quieter
#: before the band first came in, while the input is the machine's own kit alone
#: (``OwnSoundCanceller.kit_alone_since_asked``: its canceller learning the path, or taking most of the input out), no
#: rise is the band's entry (the machine starts playing as it starts listening: its first notes
#: were taken for the band's), the level follows what is left of the kit down at this many dB a
#: second (it falls 15-25 dB in the kit's first 4 s), and the band's entry is heard against it for
#: KIT_FLOOR_HOLD_SECONDS after: its 400 ms loudness rises over a few updates, each one less than
#: ENTRY_RISE_DB, where a band coming in over a room 20 dB under it rises that much in the first.
#: Without these the band's entry went unheard, and the tracker folded the kit's beat with the
#: band's for 22-28 band beats (docs/follow.md, "The band's entry over its own kit")
KIT_ALONE_DECAY_DB = 10.0
KIT_FLOOR_HOLD_SECONDS = 0.6
#: under this the input is silence (the stage shows it so), and nothing in it is the band: the
#: gate where the musician set none (``play --listen-gate``). An idle interface's or desk send's
#: hiss at -70 to -90 dBFS was heard as a beat in its first seconds (7-10 of 24 rooms, from 2.5 s
#: on), the follower locked on it, and the machine playing alone moved its beat by up to 286 ms
#: and its tempo by up to 6% before the band came in (docs/follow.md, "Hiss is not a band")
SILENCE_DB = -70.0


class BandLoudness:
    """``add`` the samples as they come; ``update`` at each of the tracker's estimates."""

    def __init__(self, samples: int, gate_db: float | None = None):
        self.energy = np.zeros(samples, np.float32)  # the last ``samples`` samples, a ring
        self.energy_at = 0
        self.level_db = -120.0  # the band's playing loudness: a slow peak of the 400 ms loudness
        self.levels_before: list[float] = []  # the playing level at the updates of the last ENTRY_RISE_SECONDS
        self.since_entry = math.inf  # seconds since the band's entry was last heard
        #: under this loudness (dBFS) nothing plays (``play --listen-gate``; SILENCE_DB where none is set)
        self.gate_db = SILENCE_DB if gate_db is None else gate_db
        self.updates = 0
        self.came_in = False  # the band's entry was heard once
        self.kit_floor_db = -120.0  # the level at the last update the input was the machine's kit alone
        self.since_kit_alone = math.inf  # seconds

    def add(self, x: np.ndarray) -> None:
        e = self.energy
        if x.size >= e.size:
            e[:] = x[-e.size:]
            self.energy_at = 0
            return
        end = self.energy_at + x.size
        if end <= e.size:
            e[self.energy_at:end] = x
        else:
            cut = e.size - self.energy_at
            e[self.energy_at:] = x[:cut]
            e[:end - e.size] = x[cut:]
        self.energy_at = end % e.size

    def db(self) -> float:
        """RMS of the last 400 ms, dBFS."""
        e = self.energy.astype(np.float64)
        rms = math.sqrt(float(np.dot(e, e)) / e.size)
        return 20 * math.log10(max(rms, 1e-6))

    def update(self, seconds: float, kit_alone: bool = False) -> bool:
        """The playing level ``seconds`` after the last update; True: the band just came in (the
        first update only sets the level). ``kit_alone``: the input was the machine's kit alone."""
        loud = self.db()
        floor = min(self.levels_before, default=self.level_db)
        self.since_kit_alone += seconds
        if self.since_kit_alone <= KIT_FLOOR_HOLD_SECONDS:
            floor = min(floor, self.kit_floor_db)
        self.since_entry += seconds
        came_in = (self.updates > 0 and not kit_alone and loud > floor + ENTRY_RISE_DB
                   and self.since_entry > ENTRY_RISE_SECONDS)
        if came_in:
            self.came_in, self.since_kit_alone = True, math.inf
            self.since_entry = 0.0  # one entry: its rise goes on over the next updates
        decay = KIT_ALONE_DECAY_DB if kit_alone and not self.came_in else LEVEL_DECAY_DB
        self.level_db = max(loud, self.level_db - decay * seconds)
        if kit_alone and not self.came_in:
            self.kit_floor_db, self.since_kit_alone = self.level_db, 0.0
        self.levels_before.append(self.level_db)
        del self.levels_before[:-max(1, round(ENTRY_RISE_SECONDS / seconds))]
        self.updates += 1
        return came_in

    def playing(self) -> float:
        """0..1: how much the loudness says the band plays (0 under the gate, or a break's level
        under its playing level)."""
        loud = self.db()
        if loud < self.gate_db:
            return 0.0  # under the gate: the room, not the band
        if BREAK_DB <= 0:
            return 1.0
        return float(np.clip((loud - self.level_db + BREAK_DB) / 4.0, 0.0, 1.0))
