"""Output note maps: where each voice goes on a drum module (TOML presets)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drummachine.core.errors import DrumMachineError
from drummachine.core.toml_files import parse_toml, read_text, where
from drummachine.core.voices import VOICE_INDEX, VOICE_NAMES, VOICES


#: the module's latency from a note to its sound, in ms (``latency_ms``, ``--midi-latency``)
LATENCY_MS = (0.0, 200.0)


@dataclass(frozen=True)
class NoteMap:
    """Where each voice goes on a drum module: one note per voice and a MIDI channel (1-16), and
    how long the module takes from a note to its sound (its notes go out that much early)."""

    name: str
    notes: tuple[int, ...]  #: note number per voice index
    channel: int = 10  #: MIDI channel, 1-based as printed on modules
    latency_ms: float = 0.0

    def note(self, voice: int) -> int:
        return self.notes[voice]


GM_NOTEMAP = NoteMap("General MIDI", tuple(v.gm_note for v in VOICES), 10)


def notemap_from_toml(text: str, path: str | Path = "<notemap>") -> NoteMap:
    """Parse an output note map.

    Schema: ``name`` (string), ``channel`` (1-16, default 10), ``latency_ms`` (0-200, default 0:
    the module's own latency) and a ``[notes]`` table with one entry per voice name (0-127).
    Voices left out keep their General MIDI note.
    """
    data = parse_toml(text, path)
    allowed_top = {"name", "channel", "latency_ms", "notes"}
    for key in data:
        if key not in allowed_top:
            raise DrumMachineError(where(path, text, key), f"unknown key; allowed: {', '.join(sorted(allowed_top))}")
    name = data.get("name", Path(str(path)).stem)
    if not isinstance(name, str):
        raise DrumMachineError(where(path, text, "name"), "must be a string")
    channel = data.get("channel", 10)
    if not isinstance(channel, int) or isinstance(channel, bool) or not 1 <= channel <= 16:
        raise DrumMachineError(where(path, text, "channel"), f"{channel!r} is not a MIDI channel; allowed: 1-16")
    latency = data.get("latency_ms", 0.0)
    lo, hi = LATENCY_MS
    if not isinstance(latency, (int, float)) or isinstance(latency, bool) or not lo <= latency <= hi:
        raise DrumMachineError(where(path, text, "latency_ms"), f"{latency!r} is out of range; allowed: {lo:g}-{hi:g} (ms)")
    table = data.get("notes", {})
    if not isinstance(table, dict):
        raise DrumMachineError(where(path, text, "notes"), "must be a table of voice = note")
    notes = list(GM_NOTEMAP.notes)
    for key, value in table.items():
        if key not in VOICE_INDEX:
            raise DrumMachineError(where(path, text, key), f"unknown voice; allowed: {', '.join(VOICE_NAMES)}")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 127:
            raise DrumMachineError(where(path, text, key), f"{value!r} is not a note number; allowed: 0-127")
        notes[VOICE_INDEX[key]] = value
    return NoteMap(name, tuple(notes), channel, float(latency))


def load_notemap(path: str | Path) -> NoteMap:
    """Load an output note map from a TOML file."""
    return notemap_from_toml(read_text(path, "note map file"), path)
