"""Does a performance survive MIDI -> groove -> MIDI file -> groove? (onset and velocity errors)"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drummachine.core.groove import groove_from_notes
from drummachine.core.voices import input_map
from drummachine.midi.files import read_midi, write_midi


@dataclass(frozen=True)
class RoundTrip:
    path: str
    notes: int  #: mapped notes in the original
    matched: int  #: original notes found again within the bounds
    hits_matched: int  #: hits read back that are an original note (within the bounds)
    merged: int  #: notes the groove merged into a louder hit on the same step and voice
    hits: int  #: hits in the groove read back
    max_onset_ms: float  #: worst onset error among matched notes
    max_velocity: int  #: worst velocity error among matched notes

    @property
    def ok(self) -> bool:
        """Every note comes back except those merged into a louder one (or an equal one within the
        bounds), and every hit read back is one of the original notes."""
        return self.notes - self.matched <= self.merged and self.hits == self.hits_matched


def round_trip(path: str | Path, onset_ms: float = 1.0, velocity: int = 1, in_map: str = "td11") -> RoundTrip:
    """Convert a file to a groove, write it as MIDI, read it back and match every original note."""
    perf = read_midi(path)
    groove, report = groove_from_notes(perf.notes, input_map(in_map), perf.bpm, perf.meter)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "back.mid"
        write_midi(out, groove.to_notes(perf.notes.ticks_per_beat), perf.bpm, perf.meter)
        back = read_midi(out)
    again, _ = groove_from_notes(back.notes, input_map("gm"), back.bpm, back.meter)

    lut = np.full(128, -1)
    for note, v in input_map(in_map).items():
        lut[note] = v
    voice = lut[perf.notes.pitches]
    mapped = voice >= 0
    t = perf.seconds()[mapped]
    voice = voice[mapped]
    vel = perf.notes.velocities[mapped].astype(np.int64)
    step_s = again.step_seconds
    # the step from the tick (exact), not from seconds: a note exactly half a step off lands reliably
    pos = perf.notes.ticks[mapped] / (perf.notes.ticks_per_beat / 4.0)
    step = np.floor(pos + 0.5).astype(np.int64)
    inside = step < again.steps
    step_c = np.minimum(step, again.steps - 1)
    hit = again.hits[step_c, voice] & inside
    t_back = (step_c + again.offsets[step_c, voice].astype(np.float64)) * step_s
    v_back = np.rint(again.velocities[step_c, voice] * 127.0).astype(np.int64)
    err_ms = np.abs(t_back - t) * 1000.0
    err_v = np.abs(v_back - vel)
    match = hit & (err_ms <= onset_ms) & (err_v <= velocity)
    hits_matched = len(set(zip(step_c[match].tolist(), voice[match].tolist())))
    return RoundTrip(str(path), int(mapped.sum()), int(match.sum()), hits_matched, report.merged, int(again.hits.sum()),
                     float(err_ms[match].max()) if match.any() else 0.0,
                     int(err_v[match].max()) if match.any() else 0)
