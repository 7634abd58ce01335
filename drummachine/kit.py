"""The drum kit as data: the nine voices, input note maps and output note maps.

The nine voices are those of the Groove MIDI Dataset paper (Gillick et al. 2019). Input maps
reduce any incoming note to one of them; an output map sends each voice to one note of a
drum module.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import DrumMachineError


@dataclass(frozen=True)
class Voice:
    """One voice of the reduced kit."""

    index: int
    name: str  #: identifier used in files, flags and presets
    label: str  #: two-letter label for step grids
    gm_note: int  #: General MIDI note this voice is sent to by default


VOICES: tuple[Voice, ...] = (
    Voice(0, "kick", "BD", 36),
    Voice(1, "snare", "SD", 38),
    Voice(2, "closed_hat", "CH", 42),
    Voice(3, "open_hat", "OH", 46),
    Voice(4, "low_tom", "LT", 43),
    Voice(5, "mid_tom", "MT", 47),
    Voice(6, "high_tom", "HT", 50),
    Voice(7, "crash", "CR", 49),
    Voice(8, "ride", "RD", 51),
)
N_VOICES = len(VOICES)
VOICE_NAMES: tuple[str, ...] = tuple(v.name for v in VOICES)
VOICE_INDEX: dict[str, int] = {v.name: v.index for v in VOICES}
TOMS: tuple[int, ...] = (4, 5, 6)
#: voices that cut off another voice's ringing sample: a closed hat chokes the open hat
CHOKES: dict[int, tuple[int, ...]] = {2: (3,)}

# Input maps: note number -> voice index. Table rows are (voice, notes).
_GM_ROWS = (
    ("kick", (35, 36)),
    ("snare", (27, 28, 31, 32, 33, 34, 37, 38, 39, 40, 56, 65, 66, 75, 85)),
    ("closed_hat", (22, 42, 44, 54, 68, 69, 70, 71, 73, 78, 80)),
    ("open_hat", (26, 46, 67, 72, 74, 79, 81)),
    ("low_tom", (29, 41, 43, 45, 61, 64, 84)),
    ("mid_tom", (47, 48, 60, 63, 77, 86, 87)),
    ("high_tom", (30, 50, 62, 76, 83)),
    ("crash", (49, 52, 55, 57, 58)),
    ("ride", (51, 53, 59, 82)),
)
# The Roland TD-11 mapping the Groove MIDI Dataset was recorded with (as in Magenta's
# GrooVAE): 22/26 are hi-hat edge hits, 58 the floor-tom rim, 45 the mid tom.
_TD11_ROWS = (
    ("kick", (36,)),
    ("snare", (37, 38, 40)),
    ("closed_hat", (22, 42, 44)),
    ("open_hat", (26, 46)),
    ("low_tom", (43, 58)),
    ("mid_tom", (45, 47)),
    ("high_tom", (48, 50)),
    ("crash", (49, 52, 55, 57)),
    ("ride", (51, 53, 59)),
)


def _table(rows) -> dict[int, int]:
    return {note: VOICE_INDEX[name] for name, notes in rows for note in notes}


INPUT_MAPS: dict[str, dict[int, int]] = {"gm": _table(_GM_ROWS), "td11": _table(_TD11_ROWS)}


def input_map(name: str) -> dict[int, int]:
    """The input note map called ``name`` (``gm`` or ``td11``)."""
    try:
        return INPUT_MAPS[name]
    except KeyError:
        raise DrumMachineError("input map", f"unknown map {name!r}; allowed: {', '.join(INPUT_MAPS)}") from None


@dataclass(frozen=True)
class NoteMap:
    """Where each voice goes on a drum module: one note per voice and a MIDI channel (1-16)."""

    name: str
    notes: tuple[int, ...]  #: note number per voice index
    channel: int = 10  #: MIDI channel, 1-based as printed on modules

    def note(self, voice: int) -> int:
        return self.notes[voice]


GM_NOTEMAP = NoteMap("General MIDI", tuple(v.gm_note for v in VOICES), 10)


def line_of(text: str, key: str) -> int | None:
    """1-based line of the first line that assigns ``key`` in TOML ``text`` (for messages)."""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(key) and stripped[len(key):].lstrip().startswith("="):
            return number
    return None


def where(path: str | Path, text: str | None = None, key: str | None = None) -> str:
    """``file:line (key)`` for an error message."""
    line = line_of(text, key) if (text is not None and key) else None
    place = f"{path}:{line}" if line else str(path)
    return f"{place} ({key})" if key else place


def parse_toml(text: str, path: str | Path) -> dict:
    """TOML text as a dict; syntax errors become one-line errors naming the file."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DrumMachineError(str(path), f"malformed TOML: {exc}") from None


def read_toml(path: str | Path) -> tuple[dict, str]:
    """Read and parse a TOML file; returns (data, text)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DrumMachineError(str(path), f"cannot read: {exc.__class__.__name__}: {exc}") from None
    return parse_toml(text, path), text


def notemap_from_toml(text: str, path: str | Path = "<notemap>") -> NoteMap:
    """Parse an output note map.

    Schema: ``name`` (string), ``channel`` (1-16, default 10) and a ``[notes]`` table with one
    entry per voice name (0-127). Voices left out keep their General MIDI note.
    """
    data = parse_toml(text, path)
    allowed_top = {"name", "channel", "notes"}
    for key in data:
        if key not in allowed_top:
            raise DrumMachineError(where(path, text, key), f"unknown key; allowed: {', '.join(sorted(allowed_top))}")
    name = data.get("name", Path(str(path)).stem)
    if not isinstance(name, str):
        raise DrumMachineError(where(path, text, "name"), "must be a string")
    channel = data.get("channel", 10)
    if not isinstance(channel, int) or isinstance(channel, bool) or not 1 <= channel <= 16:
        raise DrumMachineError(where(path, text, "channel"), f"{channel!r} is not a MIDI channel; allowed: 1-16")
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
    return NoteMap(name, tuple(notes), channel)


def load_notemap(path: str | Path) -> NoteMap:
    """Load an output note map from a TOML file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DrumMachineError(str(path), f"cannot read note map: {exc.__class__.__name__}") from None
    return notemap_from_toml(text, path)
