"""Songs: a list of sections, each with its length, style, tempo, intensity and fills (TOML).

```toml
name = "Highway"          # shown on stage
style = "rock"            # default for every section
bpm = 128                 # default for every section
count_in = 1              # bars of hi-hat count-in before the first section (0: none)
click = true              # the click on the in-ears' cue bus (play --cue-out); left out: play --click
click_level = 0.5         # 0..1; left out: 0.5

[[sections]]
name = "intro"            # any name; its kind is the name when that is a known kind
bars = 4                  # 0 or left out: open-ended, until the next-section cue
intensity = 0.9           # 0..1
fill_every = 4            # a fill in the last bar of every N bars; 0: none
cymbal = "ride"           # what keeps time: "hats", "open_hats", "ride" or "auto" (the model's choice)
voices = { low_tom = "on", crash = "off" }   # per voice: "on" (every bar plays it), "off", "auto"
```

Every problem is reported before anything plays, as ``file:line (key): what; allowed: ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drummachine.core.conditioning import CYMBALS
from drummachine.core.transport import BPM_RANGE
from drummachine.core.errors import DrumMachineError
from drummachine.core.toml_files import parse_toml, read_text
from drummachine.core.sections import SECTIONS, SectionFeel, check_voices, section_feel

SONG_KEYS = {"name", "style", "bpm", "count_in", "sections", "intensity", "cymbal", "voices", "click", "click_level"}
SECTION_KEYS = {"name", "kind", "bars", "style", "bpm", "intensity", "fill_every", "cymbal", "voices"}


@dataclass(frozen=True)
class Section:
    name: str
    kind: str  #: one of sections.SECTIONS: what the section feels like
    bars: int  #: 0 = open-ended
    style: str
    bpm: float
    intensity: float
    fill_every: int
    cymbal: str = "auto"  #: conditioning.CYMBALS: what keeps time
    #: per voice asked for: "on", "off" or "auto" (see sections.cues_for), in voice order
    voices: tuple[tuple[str, str], ...] = ()

    @property
    def feel(self) -> SectionFeel:
        return section_feel(self.kind)


@dataclass(frozen=True)
class Song:
    name: str
    sections: tuple[Section, ...]
    count_in: int = 0
    source: str = ""
    click: bool | None = None  #: the click on the cue bus; None: the default (play --click)
    click_level: float | None = None  #: its level 0..1; None: the default

    def index(self, name: str) -> int:
        for i, s in enumerate(self.sections):
            if s.name == name:
                return i
        raise DrumMachineError(self.source or self.name, f"no section {name!r}; sections: "
                               f"{', '.join(s.name for s in self.sections)}")


def _section_line(text: str, index: int, key: str | None) -> int | None:
    """Line of ``key`` inside the index-th [[sections]] table (or of the header itself)."""
    count = -1
    header = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[[sections]]"):
            count += 1
            if count == index:
                header = number
                if key is None:
                    return number
            elif count > index:
                break
            continue
        if count == index and key and stripped.startswith(key) and stripped[len(key):].lstrip().startswith("="):
            return number
    return header


def _top_line(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            return None
        if stripped.startswith(key) and stripped[len(key):].lstrip().startswith("="):
            return number
    return None


def song_from_toml(text: str, path: str | Path = "<song>", styles: tuple[str, ...] | None = None) -> Song:
    """Parse and validate a song. ``styles``: the styles the model knows (checked when given)."""
    data = parse_toml(text, path)

    def fail(line, key, what):
        place = f"{path}:{line}" if line else str(path)
        raise DrumMachineError(f"{place} ({key})" if key else place, what)

    def top(key, what):
        fail(_top_line(text, key), key, what)

    for key in data:
        if key not in SONG_KEYS:
            top(key, f"unknown key; allowed: {', '.join(sorted(SONG_KEYS))}")

    def number(value, key, lo, hi, where, integer=False):
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not lo <= value <= hi:
            kind = "a whole number" if integer else "a number"
            where(key, f"{value!r} is not allowed; allowed: {kind} {lo:g}..{hi:g}")
        return value

    def style_ok(value, key, where):
        if not isinstance(value, str):
            where(key, "must be a string")
        if styles is not None and value not in styles:
            where(key, f"unknown style {value!r}; allowed: {', '.join(styles)}")
        return value

    name = data.get("name", Path(str(path)).stem)
    if not isinstance(name, str):
        top("name", "must be a string")
    style = style_ok(data.get("style", "rock"), "style", top)
    bpm = number(data.get("bpm", 110), "bpm", *BPM_RANGE, top)
    count_in = number(data.get("count_in", 0), "count_in", 0, 4, top, integer=True)
    song_intensity = number(data.get("intensity", 0.5), "intensity", 0.0, 1.0, top)
    def cymbal_ok(value, key, where):
        if not isinstance(value, str) or value not in CYMBALS:
            where(key, f"{value!r} is not allowed; allowed: {', '.join(CYMBALS)}")
        return value

    cymbal = cymbal_ok(data.get("cymbal", "auto"), "cymbal", top)
    click = data.get("click")
    if click is not None and not isinstance(click, bool):
        top("click", f"{click!r} is not allowed; allowed: true or false")
    click_level = data.get("click_level")
    if click_level is not None:
        click_level = float(number(click_level, "click_level", 0.0, 1.0, top))

    def voices_ok(value, key, where):
        try:
            return check_voices(value)
        except DrumMachineError as exc:
            where(key, exc.what)

    voices = voices_ok(data.get("voices", {}), "voices", top)
    raw_sections = data.get("sections")
    if not isinstance(raw_sections, list) or not raw_sections:
        top("sections", "a song needs at least one [[sections]] table")
    sections = []
    for i, raw in enumerate(raw_sections):
        def where(key, what, i=i):
            fail(_section_line(text, i, key), f"sections[{i}].{key}" if key else f"sections[{i}]", what)

        if not isinstance(raw, dict):
            where(None, "must be a table")
        for key in raw:
            if key not in SECTION_KEYS:
                where(key, f"unknown key; allowed: {', '.join(sorted(SECTION_KEYS))}")
        sname = raw.get("name")
        if not isinstance(sname, str) or not sname:
            where("name", "every section needs a name")
        kind = raw.get("kind", sname if sname in SECTIONS else "verse")
        if not isinstance(kind, str) or kind not in SECTIONS:
            where("kind", f"unknown section kind {kind!r}; allowed: {', '.join(SECTIONS)}")
        feel = SECTIONS[kind]
        sections.append(Section(
            name=sname,
            kind=kind,
            bars=number(raw.get("bars", 0), "bars", 0, 10_000, where, integer=True),
            style=style_ok(raw.get("style", style), "style", where),
            bpm=float(number(raw.get("bpm", bpm), "bpm", *BPM_RANGE, where)),
            intensity=float(number(raw.get("intensity", feel.intensity if "intensity" not in data
                                           else song_intensity), "intensity", 0.0, 1.0, where)),
            fill_every=number(raw.get("fill_every", feel.fill_every), "fill_every", 0, 64, where, integer=True),
            cymbal=cymbal_ok(raw.get("cymbal", cymbal), "cymbal", where),
            voices=voices_ok(raw["voices"], "voices", where) if "voices" in raw else voices,
        ))
    names = [s.name for s in sections]
    for i, n in enumerate(names):
        if names.index(n) != i:
            fail(_section_line(text, i, "name"), f"sections[{i}].name", f"duplicate section name {n!r}")
    return Song(name, tuple(sections), count_in, str(path), click, click_level)


def load_song(path: str | Path, styles: tuple[str, ...] | None = None) -> Song:
    return song_from_toml(read_text(path, "song file"), path, styles)


def jam(style: str, bpm: float, intensity: float = 0.5) -> Song:
    """An open-ended one-section song: what ``play --style S --bpm N`` plays without a song file."""
    return Song("jam", (Section("groove", "verse", 0, style, float(bpm), intensity, 8),), 0, "")
