"""The drum kit as data: the nine voices and the input note maps that reduce any drum note to one.

The nine voices are those of the Groove MIDI Dataset paper (Gillick et al. 2019); every other
module names them through this table (``KICK``, ``VOICE_NAMES``, ...), never by bare index.
"""

from __future__ import annotations

from dataclasses import dataclass

from drummachine.core.errors import DrumMachineError

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
KICK, SNARE, CLOSED_HAT, OPEN_HAT, LOW_TOM, MID_TOM, HIGH_TOM, CRASH, RIDE = (VOICE_INDEX[v.name] for v in VOICES)
#: the three planes of a step's (3, 9) array: hit flags, velocities (0..1), offsets (steps, -0.5..0.5)
HITS, VELOCITIES, OFFSETS = 0, 1, 2
TOMS: tuple[int, ...] = (LOW_TOM, MID_TOM, HIGH_TOM)
#: voices that cut off another voice's ringing sample: a closed hat chokes the open hat
CHOKES: dict[int, tuple[int, ...]] = {CLOSED_HAT: (OPEN_HAT,)}

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
