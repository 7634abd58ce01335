"""Playing offline what the stage plays: the same song choice, the same starting knobs, the same
engine, conductor and performer, driven on a manual clock as fast as the model goes.

``drummachine generate`` is built on this, so what a musician previews at home is what
``drummachine play`` hands out on stage with the same seed, song and tempo.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from drummachine.core import commands
from drummachine.core.conductor import BarPlan
from drummachine.core.engine import Engine
from drummachine.core.errors import DrumMachineError
from drummachine.core.events import NOTE, MemorySink
from drummachine.core.performer import Performer
from drummachine.core.places import shipped
from drummachine.core.song import Song, jam
from drummachine.core.steps import feel_offsets
from drummachine.core.transport import STEPS_PER_BAR, ManualClock
from drummachine.core.voices import OFFSETS

OPEN_BARS = 8  #: how long an open-ended section plays offline before the next-section cue
PERFORMER_FILE = "performer.json"  #: beside the model: the per-bar cue plan learned from the drummers


def shipped_performer(seed: int, warnings: list[str] | None = None) -> Performer | None:
    """The shipped performer (models/performer.json), seeded; None, with a warning, if it is
    missing or broken: the groove then plays with the section's cues held, never not at all."""
    path = shipped("models", PERFORMER_FILE)
    try:
        return Performer.load(path, seed)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"{path}: cannot read the performer ({exc.__class__.__name__}: {exc}); playing the sections' cues as written"
        if warnings is not None:
            warnings.append(msg)
        return None


def choose_song(generator, styles, song: Song | None = None, style: str = "rock", bpm: float | None = None,
                intensity: float | None = None) -> Song:
    """The song ``play`` plays: the one given, else a jam in ``style`` at ``bpm`` (default: the
    style's own, from styles.toml or the model's data) and ``intensity``."""
    if song is not None:
        return song
    known = generator.cond.styles
    if style not in known:
        raise DrumMachineError("--style", f"unknown style {style!r}; allowed: {', '.join(known)}")
    knobs = styles.get(style)
    bpm = bpm or knobs.get("bpm") or generator.cond.style_bpm.get(style, [0, 110, 0])[1]
    level = intensity if intensity is not None else knobs.get("intensity", 0.5)
    return jam(style, round(float(bpm)), level)


def starting_commands(styles, song: Song, bpm: float | None = None) -> list[tuple[str, object]]:
    """What ``play`` tells the engine before it starts: the tempo asked for, and the first style's
    knobs from styles.toml (its ``intensity`` is a jam's level, not the knob's offset: see choose_song)."""
    out: list[tuple[str, object]] = [("tempo", float(bpm))] if bpm else []
    out += [(knob, value) for knob, value in styles.get(song.sections[0].style).items()
            if knob in commands.KNOBS and knob != "intensity"]
    return out


@dataclass
class Take:
    """What the engine handed out, step by step."""

    hvo: np.ndarray  #: (steps, 3, 9), offsets as played (humanize and swing applied)
    bpm: np.ndarray  #: (steps,) the tempo of each step
    plans: list[BarPlan]  #: one per bar
    events: list  #: the note events with their clock times (seconds from the start)
    song: Song

    def markers(self) -> list[tuple[int, str]]:
        """(step, section name) where each section starts."""
        out, last = [], None
        for p in self.plans:
            if p.section != last:
                name = self.song.sections[p.section].name if p.section >= 0 else "count-in"
                out.append((p.bar * STEPS_PER_BAR, name))
                last = p.section
        return out

    def tempo_changes(self) -> list[tuple[int, float]]:
        """(step, bpm) at the start and wherever the tempo changes."""
        out = []
        for step, bpm in enumerate(self.bpm.tolist()):
            if not out or abs(bpm - out[-1][1]) > 1e-6:
                out.append((step, bpm))
        return out


def play_offline(generator, song: Song, setup: list[tuple[str, object]] = (), *, bars: int | None = None,
                 open_bars: int = OPEN_BARS, performer=None, max_bars: int = 10_000) -> Take:
    """Play ``song`` through the engine on a manual clock: ``bars`` bars (then stop), or the whole
    song (an open-ended section gets ``open_bars`` bars, then the next-section cue; the last one an
    outro). ``setup``: commands given before the start (``starting_commands``)."""
    clock = ManualClock(0.0)
    sink = MemorySink()
    engine = Engine(generator, song, clock, [sink], performer=performer)
    for name, value in setup:
        if not engine.command(name, value):
            raise DrumMachineError(f"command {name}", f"{value!r} was refused")
    engine.pump()
    engine.command("start")
    engine.pump()
    steps, bpms, plans, cued = [], [], [], set()
    limit = (bars if bars is not None else max_bars) * STEPS_PER_BAR
    while engine.playing and len(steps) < limit:  # never a miss: each step is generated before it is due
        engine.pump_generator()
        engine.pump()
        c = engine.commit_cursor
        while len(steps) < c and len(steps) < limit:
            s = len(steps)
            if s % STEPS_PER_BAR == 0:  # as it plays: the conductor forgets the plans of bars long played
                plans.append(engine.conductor.plan(s // STEPS_PER_BAR))
            hvo = engine.played[s].copy()
            hvo[OFFSETS] = feel_offsets(hvo, s, engine.knobs["swing"], engine.knobs["humanize"])
            steps.append(hvo)
            bpms.append(engine.transport.bpm_at(s) * engine.transport.feel_at(s))
        if bars is None:
            _cue_open_sections(engine, open_bars, cued)
        deadline = engine.next_deadline()
        if deadline is not None:
            clock.set(max(clock.now(), deadline))
    if engine.stats.misses:
        raise RuntimeError(f"offline play missed {engine.stats.misses} steps: a bug, the loop generates first")
    start = engine.transport.time_of(0)
    events = [replace(e, time=e.time - start) for e in sink.events if e.kind == NOTE and e.step < len(steps)]
    return Take(np.stack(steps) if steps else np.zeros((0, 3, 9), np.float32), np.asarray(bpms), plans, events, song)


def _cue_open_sections(engine: Engine, open_bars: int, cued: set) -> None:
    """At the start of an open-ended section's last bar offline: the next section (or the outro
    after the last), so the bar before the change is the transition fill, as on stage."""
    c = engine.commit_cursor
    if c % STEPS_PER_BAR:
        return
    plan = engine.conductor.plan(c // STEPS_PER_BAR)
    if plan.section < 0 or engine.song.sections[plan.section].bars or plan.bar_in_section < open_bars - 1:
        return
    key = (plan.section, plan.bar - plan.bar_in_section)
    if key in cued:
        return
    cued.add(key)
    engine.command("outro" if plan.section == len(engine.song.sections) - 1 else "next")
