"""Song sections and how they shape the cues: what "verse" or "chorus" means to the drummer."""

from __future__ import annotations

from dataclasses import dataclass

from drummachine.core.conditioning import AUTO, OFF, ON, Conditioning, Cues, cymbal_palette
from drummachine.core.errors import DrumMachineError
from drummachine.core.voices import VOICE_NAMES

_CHOICE = {"on": ON, "off": OFF, "auto": AUTO}


def check_voices(value) -> tuple[tuple[str, str], ...]:
    """A mapping voice -> "on" | "off" | "auto", checked, as cues_for takes it (in voice order)."""
    if not isinstance(value, dict):
        raise DrumMachineError("voices", 'a table of voice = "on" | "off" | "auto", e.g. { low_tom = "on" }')
    for voice, choice in value.items():
        if voice not in VOICE_NAMES:
            raise DrumMachineError("voices", f"unknown voice {voice!r}; allowed: {', '.join(VOICE_NAMES)}")
        if not isinstance(choice, str) or choice not in _CHOICE:
            raise DrumMachineError("voices", f"{voice} = {choice!r} is not allowed; allowed: {', '.join(_CHOICE)}")
    return tuple(sorted(value.items(), key=lambda vc: VOICE_NAMES.index(vc[0])))


def parse_voices(text: str) -> tuple[tuple[str, str], ...]:
    """``low_tom=on,crash=off`` (the command line's form) -> check_voices."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        voice, sep, choice = item.partition("=")
        if not sep:
            raise DrumMachineError("--voices", f"{item!r}: each item is voice=on|off|auto")
        out[voice.strip()] = choice.strip()
    try:
        return check_voices(out)
    except DrumMachineError as exc:
        raise DrumMachineError("--voices", exc.what) from None


@dataclass(frozen=True)
class SectionFeel:
    """Defaults for a kind of section: intensity (0..1) and how much busier or more complex."""

    intensity: float
    density_shift: float = 0.0
    complexity_shift: float = 0.0
    fill_every: int = 8  #: a fill in the last bar of every N bars (0: never)


SECTIONS: dict[str, SectionFeel] = {
    "intro": SectionFeel(0.4, -0.1, -0.1, 4),
    "verse": SectionFeel(0.45, 0.0, 0.0, 8),
    "prechorus": SectionFeel(0.6, 0.05, 0.05, 4),
    "chorus": SectionFeel(0.75, 0.1, 0.05, 8),
    "bridge": SectionFeel(0.55, 0.0, 0.1, 4),
    "breakdown": SectionFeel(0.2, -0.25, -0.1, 0),
    "solo": SectionFeel(0.7, 0.1, 0.15, 8),
    "outro": SectionFeel(0.6, 0.0, 0.0, 4),
}


def section_feel(name: str) -> SectionFeel:
    try:
        return SECTIONS[name]
    except KeyError:
        raise DrumMachineError("section", f"unknown section {name!r}; allowed: {', '.join(SECTIONS)}") from None


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def cues_for(cond: Conditioning, style: str, intensity: float, fill: bool = False,
             density_shift: float = 0.0, complexity_shift: float = 0.0, cymbal: str = "auto",
             voices=()) -> Cues:
    """Cues for one bar: intensity drives loudness and density together, around the style's own feel;
    ``voices`` sets single voices in the kit palette: (name, "on" | "off" | "auto"); ``cymbal``
    (conditioning.CYMBALS) then says what keeps time: hats, open hats, ride, or the model's choice
    (a live pedal choice wins over the song's voices)."""
    if not 0.0 <= intensity <= 1.0:
        raise DrumMachineError("intensity", f"{intensity!r} is out of range; allowed: 0..1")
    base = cond.defaults(style)
    delta = intensity - base.intensity
    palette = [AUTO] * len(VOICE_NAMES)
    for voice, choice in voices:
        palette[VOICE_NAMES.index(voice)] = _CHOICE[choice]
    return Cues(
        intensity=_clip(intensity),
        density=_clip(base.density + delta + density_shift + (0.1 if fill else 0.0)),
        complexity=_clip(base.complexity + complexity_shift + (0.2 if fill else 0.0)),
        syncopation=_clip(base.syncopation),
        fill=fill,
        palette=cymbal_palette(cymbal, tuple(palette)),
    )
