"""The engine as a display sees it: one typed, immutable picture, shared by the engine, the
session, the host (which sends it up a pipe as JSON) and the UI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from drummachine.core.transport import STEPS_PER_BAR
from drummachine.core.voices import N_VOICES


@dataclass(frozen=True)
class QueuedCue:
    """A cue waiting for its bar line, shown on stage until it lands."""

    what: str  #: next, goto, outro
    at_bar: int
    target: str | None = None  #: the section it goes to


def empty_grid() -> np.ndarray:
    return np.zeros((STEPS_PER_BAR, 3, N_VOICES), np.float32)


@dataclass(frozen=True)
class Snapshot:
    # transport
    playing: bool = False
    paused: bool = False
    bar: int = 0
    step: int = 0  #: the step in the bar last handed out
    bpm: float = 0.0
    feel: float = 1.0  #: 0.5 half time, 2 double time
    open_step: int = 0  #: the first step not yet handed to the outputs
    # the song
    song: str = ""
    sections: tuple[str, ...] = ()
    kind: str = ""
    section: str = ""
    section_index: int = -1
    bar_in_section: int = 0
    section_bars: int = 0
    style: str = ""
    section_bpm: float = 0.0
    intensity: float = 0.0
    fill: bool = False
    queued: QueuedCue | None = None
    locked: bool = False
    cymbal: str = "auto"
    # what plays
    grid: np.ndarray = field(default_factory=empty_grid)  #: the current bar, (16, 3, 9)
    knobs: dict = field(default_factory=dict)
    muted: tuple[int, ...] = ()
    solo: tuple[int, ...] = ()
    # health
    steps: int = 0
    misses: int = 0
    late_cues: int = 0  #: steps played as generated before a cue (its new version was late)
    gen_ms_p99: float = 0.0
    faults: dict = field(default_factory=dict)  #: loop -> exceptions caught and survived
    refused: int = 0  #: commands refused for a bad value
    # following the band (core.follow.FollowStatus)
    follow_mode: str = "off"
    follow_state: str = "off"  #: off, listening, following, holding
    band_bpm: float = 0.0
    band_phase_ms: float = 0.0  #: the band's beat minus ours at our last beat
    band_confidence: float = 0.0
    band_intensity: float = 0.0  #: the dynamics' offset to the intensity
    band_level_db: float | None = None  #: the band's input level (400 ms, dBFS), None: not read yet
    #: the listening input's state (listen.shared.STATUSES' words, "listener stopped", "not there");
    #: "": not listening
    band_input: str = ""
    # the audio out's buses (main_level, cue_level, click, click_level)
    cue_bus: bool = False  #: a cue bus is there (play --cue-out)
    click: bool = False
    click_level: float = 0.0
    main_level: float = 1.0
    cue_level: float = 1.0
    # the session around the engine
    cpu: float = 0.0
    underruns: int = 0
    audio_restarts: int = 0
    audio_out: str | None = None  #: "playing", "waiting" (no output yet: MIDI alone), None: no audio
    midi_out: str | None = None
    midi_in: tuple[str, ...] = ()
    learning: str | None = None
    learned: str = ""
    last_midi: tuple[int, ...] = ()
    last_midi_at: float = 0.0
    pongs: tuple = ()

    def with_(self, **changes) -> "Snapshot":
        return replace(self, **changes)

    def to_json(self) -> dict:
        """A dict of plain JSON values (the grid rounded to 3 decimals)."""
        d = asdict(self)
        d["grid"] = np.round(self.grid, 3).tolist()
        return d

    @staticmethod
    def from_json(d: dict) -> "Snapshot":
        known = {f.name for f in fields(Snapshot)}
        values = {k: v for k, v in d.items() if k in known}
        if values.get("grid") is not None:
            values["grid"] = np.asarray(values["grid"], np.float32)
        if values.get("queued"):
            values["queued"] = QueuedCue(**values["queued"])
        for k in ("sections", "muted", "solo", "midi_in", "last_midi"):
            if k in values and values[k] is not None:
                values[k] = tuple(values[k])
        if "pongs" in values:
            values["pongs"] = tuple(tuple(p) for p in values["pongs"])
        return Snapshot(**values)

    @property
    def faults_total(self) -> int:
        return sum(self.faults.values())
