"""A groove: hits, velocities and micro-timing offsets per 16th step and voice (HVO).

The representation of Magenta's GrooveConverter: for every 16th-note step and each of the nine
voices, whether it is hit, how hard (0..1) and how far from the grid (in fractions of a step,
within half a step either side). Tempo and meter travel with it. Conversions to and from notes
are vectorized numpy and exact to the tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from drummachine.core.errors import DrumMachineError
from drummachine.core.notemap import GM_NOTEMAP, NoteMap
from drummachine.core.voices import N_VOICES

STEPS_PER_QUARTER = 4
MAX_OFFSET = 0.5  #: offsets are clamped to half a step either side of their step


@dataclass(frozen=True)
class Meter:
    """A time signature; bars are counted in 16th steps."""

    numerator: int = 4
    denominator: int = 4

    def __post_init__(self):
        if self.numerator < 1 or self.denominator not in (1, 2, 4, 8, 16):
            raise DrumMachineError("meter", f"{self} is not supported; allowed: N/1, N/2, N/4, N/8, N/16")

    @property
    def steps_per_bar(self) -> int:
        return self.numerator * 16 // self.denominator

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"


@dataclass(frozen=True)
class Notes:
    """Drum notes as parallel arrays, sorted by time: onsets in ticks, pitches, velocities."""

    ticks: np.ndarray  # (n,) int64
    pitches: np.ndarray  # (n,) int16
    velocities: np.ndarray  # (n,) int16, 1..127
    ticks_per_beat: int

    def __len__(self) -> int:
        return int(self.ticks.shape[0])

    def seconds(self, bpm: float) -> np.ndarray:
        """Onsets in seconds at a constant tempo."""
        return self.ticks.astype(np.float64) * (60.0 / (bpm * self.ticks_per_beat))


@dataclass(frozen=True)
class ConversionReport:
    """What happened to the notes on the way into a groove."""

    notes: int = 0  #: note-ons read
    unmapped: int = 0  #: notes whose pitch no voice takes
    merged: int = 0  #: notes dropped because a louder note of the same voice shared the step


@dataclass(frozen=True, eq=False)
class Groove:
    """Hits, velocities (0..1) and offsets (steps, -0.5..0.5) per step and voice."""

    hits: np.ndarray  # (steps, 9) bool
    velocities: np.ndarray  # (steps, 9) float32, 0 where there is no hit
    offsets: np.ndarray  # (steps, 9) float32, 0 where there is no hit
    bpm: float = 120.0
    meter: Meter = field(default_factory=Meter)

    def __post_init__(self):
        shape = self.hits.shape
        if len(shape) != 2 or shape[1] != N_VOICES or self.velocities.shape != shape or self.offsets.shape != shape:
            raise ValueError(f"groove arrays must all be (steps, {N_VOICES}); got {shape}, "
                             f"{self.velocities.shape}, {self.offsets.shape}")
        if not 1.0 <= self.bpm <= 999.0:
            raise DrumMachineError("bpm", f"{self.bpm} is out of range; allowed: 1-999")

    @property
    def steps(self) -> int:
        return int(self.hits.shape[0])

    @property
    def step_seconds(self) -> float:
        return 60.0 / (self.bpm * STEPS_PER_QUARTER)

    @property
    def bars(self) -> int:
        return -(-self.steps // self.meter.steps_per_bar)

    def bar(self, index: int) -> "Groove":
        """One bar as a groove of its own (the last one padded with silence)."""
        spb = self.meter.steps_per_bar
        return self.padded()._slice(index * spb, (index + 1) * spb)

    def padded(self) -> "Groove":
        """This groove extended with silence to a whole number of bars."""
        spb = self.meter.steps_per_bar
        missing = self.bars * spb - self.steps
        if missing == 0:
            return self
        pad = ((0, missing), (0, 0))
        return Groove(np.pad(self.hits, pad), np.pad(self.velocities, pad), np.pad(self.offsets, pad),
                      self.bpm, self.meter)

    def bar_array(self) -> np.ndarray:
        """(bars, steps_per_bar, 3, voices): hits, velocities, offsets of every bar."""
        g = self.padded()
        hvo = np.stack([g.hits.astype(np.float32), g.velocities, g.offsets], axis=1)
        return hvo.reshape(self.bars, self.meter.steps_per_bar, 3, N_VOICES)

    def _slice(self, start: int, stop: int) -> "Groove":
        return Groove(self.hits[start:stop], self.velocities[start:stop], self.offsets[start:stop],
                      self.bpm, self.meter)

    def onsets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions in steps, voice indices, velocities 0..1) of every hit, sorted by time."""
        step, voice = np.nonzero(self.hits)
        pos = step.astype(np.float64) + self.offsets[step, voice].astype(np.float64)
        order = np.lexsort((voice, pos))
        return pos[order], voice[order], self.velocities[step, voice][order]

    def to_notes(self, ticks_per_beat: int = 480, notemap: NoteMap = GM_NOTEMAP) -> Notes:
        """The hits as notes: ticks from step + offset, MIDI velocities 1..127."""
        pos, voice, vel = self.onsets()
        ticks_per_step = ticks_per_beat / STEPS_PER_QUARTER
        ticks = np.maximum(np.rint(pos * ticks_per_step), 0).astype(np.int64)
        pitches = np.asarray(notemap.notes, dtype=np.int16)[voice]
        velocities = np.clip(np.rint(vel * 127.0), 1, 127).astype(np.int16)
        order = np.argsort(ticks, kind="stable")
        return Notes(ticks[order], pitches[order], velocities[order], ticks_per_beat)

    def onset_seconds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(seconds, voices, velocities 0..1) of every hit at this groove's tempo."""
        pos, voice, vel = self.onsets()
        return np.maximum(pos, 0.0) * self.step_seconds, voice, vel

    @staticmethod
    def empty(steps: int, bpm: float = 120.0, meter: Meter | None = None) -> "Groove":
        shape = (steps, N_VOICES)
        return Groove(np.zeros(shape, bool), np.zeros(shape, np.float32), np.zeros(shape, np.float32),
                      bpm, meter or Meter())

    @staticmethod
    def from_hvo(hvo: np.ndarray, bpm: float = 120.0, meter: Meter | None = None) -> "Groove":
        """A groove from a (steps, 3, voices) array of hits, velocities, offsets."""
        hits = hvo[:, 0] > 0.5
        vel = np.where(hits, np.clip(hvo[:, 1], 0.0, 1.0), 0.0).astype(np.float32)
        off = np.where(hits, np.clip(hvo[:, 2], -MAX_OFFSET, MAX_OFFSET), 0.0).astype(np.float32)
        return Groove(hits, vel, off, bpm, meter or Meter())

    def concat(self, other: "Groove") -> "Groove":
        """This groove followed by ``other`` (bars are kept whole)."""
        a = self.padded()
        return Groove(np.concatenate([a.hits, other.hits]), np.concatenate([a.velocities, other.velocities]),
                      np.concatenate([a.offsets, other.offsets]), self.bpm, self.meter)


def groove_from_notes(notes: Notes, note_map: dict[int, int], bpm: float, meter: Meter | None = None,
                      ) -> tuple[Groove, ConversionReport]:
    """Quantize notes to 16th steps, keeping each note's distance from its step as its offset.

    A note belongs to the nearest step, so offsets lie within half a step. When two notes of
    one voice share a step, the louder is kept (the other is counted as merged).
    """
    meter = meter or Meter()
    lut = np.full(128, -1, dtype=np.int64)
    for note, voice in note_map.items():
        lut[note] = voice
    voice = lut[np.clip(notes.pitches, 0, 127).astype(np.int64)]
    mapped = voice >= 0
    ticks_per_step = notes.ticks_per_beat / STEPS_PER_QUARTER
    pos = notes.ticks[mapped].astype(np.float64) / ticks_per_step
    voice = voice[mapped]
    vel = notes.velocities[mapped].astype(np.int64)
    step = np.floor(pos + 0.5).astype(np.int64)
    offset = np.clip(pos - step, -MAX_OFFSET, MAX_OFFSET)

    n_steps = int(step.max()) + 1 if step.size else 0
    spb = meter.steps_per_bar
    n_steps = -(-n_steps // spb) * spb
    hits = np.zeros((n_steps, N_VOICES), bool)
    velocities = np.zeros((n_steps, N_VOICES), np.float32)
    offsets = np.zeros((n_steps, N_VOICES), np.float32)
    kept = 0
    if step.size:
        # Sort by cell then velocity: the last of each cell is the loudest (ties: the later).
        cell = step * N_VOICES + voice
        order = np.lexsort((vel, cell))
        cell, step, voice, vel, offset = cell[order], step[order], voice[order], vel[order], offset[order]
        last = np.append(cell[1:] != cell[:-1], True)
        step, voice, vel, offset = step[last], voice[last], vel[last], offset[last]
        hits[step, voice] = True
        velocities[step, voice] = vel / 127.0
        offsets[step, voice] = offset
        kept = int(step.size)
    report = ConversionReport(notes=len(notes), unmapped=int((~mapped).sum()), merged=int(mapped.sum()) - kept)
    return Groove(hits, velocities, offsets, float(bpm), meter), report


def ticks_to_seconds(ticks: np.ndarray, ticks_per_beat: int, tempos: list[tuple[int, int]]) -> np.ndarray:
    """Seconds at each tick under a tempo map of (tick, microseconds per beat) changes."""
    ticks = np.asarray(ticks, dtype=np.float64)
    changes = sorted(tempos) if tempos else [(0, 500_000)]
    if changes[0][0] != 0:
        changes.insert(0, (0, 500_000))
    starts = np.array([t for t, _ in changes], dtype=np.float64)
    rates = np.array([us for _, us in changes], dtype=np.float64) / (1e6 * ticks_per_beat)
    # seconds at the start of each segment
    base = np.concatenate([[0.0], np.cumsum(np.diff(starts) * rates[:-1])])
    seg = np.searchsorted(starts, ticks, side="right") - 1
    return base[seg] + (ticks - starts[seg]) * rates[seg]
