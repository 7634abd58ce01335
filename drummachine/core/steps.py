"""A step of the groove — a (3, 9) array of hits, velocities and offsets — and what it becomes:
the steps that need no model (count-in, final hit, silence), the accent, and the events a step
hands to the outputs. Pure functions of their arguments."""

from __future__ import annotations

import numpy as np

from drummachine.core.events import CLOCK, NOTE, Event
from drummachine.core.transport import Transport
from drummachine.core.voices import CLOSED_HAT, CRASH, HITS, KICK, N_VOICES, OFFSETS, SNARE, TOMS, VELOCITIES

MIDI_CLOCKS_PER_STEP = 6  #: 24 pulses a quarter note


def empty_step() -> np.ndarray:
    return np.zeros((3, N_VOICES), np.float32)


def count_in_step(step_in_bar: int) -> np.ndarray:
    """The count-in: the closed hat on every beat, the one louder."""
    hvo = empty_step()
    if step_in_bar % 4 == 0:
        hvo[HITS, CLOSED_HAT] = 1.0
        hvo[VELOCITIES, CLOSED_HAT] = 0.95 if step_in_bar == 0 else 0.6
    return hvo


def final_step(step_in_bar: int) -> np.ndarray:
    """The song's last bar: crash and kick on the one, then silence."""
    hvo = empty_step()
    if step_in_bar == 0:
        hvo[HITS, [CRASH, KICK]] = 1.0
        hvo[VELOCITIES, [CRASH, KICK]] = 1.0
    return hvo


def sounds_fill(hvo: np.ndarray, bar_before: np.ndarray | None) -> bool:
    """Whether a step holds a note that belongs to a fill and not to the groove: a tom, or a snare
    where the same step of the bar before had none (a backbeat snare is the groove's)."""
    return bool((hvo[HITS, list(TOMS)] > 0.5).any() or
                (hvo[HITS, SNARE] > 0.5 and (bar_before is None or bar_before[HITS, SNARE] < 0.5)))


def accented(hvo: np.ndarray) -> np.ndarray:
    """The step with a crash and a kick on the grid, at least as loud as an accent wants."""
    hvo = hvo.copy()
    hvo[HITS, [CRASH, KICK]] = 1.0
    hvo[VELOCITIES, CRASH] = max(hvo[VELOCITIES, CRASH], 0.9)
    hvo[VELOCITIES, KICK] = max(hvo[VELOCITIES, KICK], 0.85)
    hvo[OFFSETS, [CRASH, KICK]] = 0.0
    return hvo


def feel_offsets(hvo: np.ndarray, step: int, swing: float, humanize: float) -> np.ndarray:
    """The played offsets (in steps): humanize scales the drummer's micro-timing, swing delays the
    off 16ths (up to a third of a step: a triplet feel)."""
    off = hvo[OFFSETS] * humanize
    if swing and step % 2 == 1:
        off = off + swing / 3.0
    return np.clip(off, -0.5, 0.5)


def step_events(hvo: np.ndarray, step: int, transport: Transport, *, swing: float = 0.0, humanize: float = 1.0,
                audible: bool = True, muted=(), solo=(), midi_clock: bool = False) -> list[Event]:
    """The events of one step, in time order: MIDI clock pulses (when sent) and the notes it plays,
    each at its grid time moved by its offset and the feel; muted voices (and, with a solo, the
    others) stay silent."""
    events: list[Event] = []
    if midi_clock:
        per_step = MIDI_CLOCKS_PER_STEP / transport.feel_at(step)
        k = 0
        while k < per_step - 1e-9:
            events.append(Event(transport.time_of(step + k / per_step), CLOCK, step=step))
            k += 1
    if audible:
        offsets = feel_offsets(hvo, step, swing, humanize)
        for v in np.nonzero(hvo[HITS] > 0.5)[0]:
            v = int(v)
            if v in muted or (solo and v not in solo):
                continue
            events.append(Event(transport.time_of(step + float(offsets[v])), NOTE, v, float(hvo[VELOCITIES, v]), step))
    events.sort(key=lambda e: e.time)
    return events
