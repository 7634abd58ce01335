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
#: the band stopped: its loudness over the last 400 ms this many dB under its playing level (a
#: slow peak of that loudness) means nobody plays, whatever the onset strength says (the flux is
#: of log magnitudes: a room's noise 20 dB under the band gives as much of it as the band, and a
#: 2-bar break kept the confidence at 0.8-1.0 throughout). Fully playing 4 dB above that: a verse
#: 10 dB down is still the band (the dynamics). 0: off
BREAK_DB = 16.0
LEVEL_DECAY_DB = 0.5  #: dB a second the playing level sinks by while the band is quieter


class BandLoudness:
    """``add`` the samples as they come; ``update`` at each of the tracker's estimates."""

    def __init__(self, samples: int, gate_db: float | None = None):
        self.energy = np.zeros(samples, np.float32)  # the last ``samples`` samples, a ring
        self.energy_at = 0
        self.level_db = -120.0  # the band's playing loudness: a slow peak of the 400 ms loudness
        self.gate_db = gate_db  #: under this loudness (dBFS) nothing plays (``play --listen-gate``)
        self.updates = 0

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
        rms = float(np.sqrt(np.mean(self.energy.astype(np.float64) ** 2)))
        return 20 * math.log10(max(rms, 1e-6))

    def update(self, seconds: float) -> bool:
        """The playing level ``seconds`` after the last update; True: the band just came in (the
        first update only sets the level)."""
        loud = self.db()
        came_in = self.updates > 0 and loud > self.level_db + ENTRY_RISE_DB
        self.level_db = max(loud, self.level_db - LEVEL_DECAY_DB * seconds)
        self.updates += 1
        return came_in

    def playing(self) -> float:
        """0..1: how much the loudness says the band plays (0 under the gate, or a break's level
        under its playing level)."""
        loud = self.db()
        if self.gate_db is not None and loud < self.gate_db:
            return 0.0  # under the gate: the room, not the band
        if BREAK_DB <= 0:
            return 1.0
        return float(np.clip((loud - self.level_db + BREAK_DB) / 4.0, 0.0, 1.0))
