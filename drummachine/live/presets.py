"""The preset library: shipped presets under presets/, the user's in their config folder.

Kinds: songs, setlists, controllers, notemaps (one TOML file each) and styles (one table per
style in styles.toml). A user file with the same name as a shipped one wins; a user file that
does not parse is reported (``problems``) and never stops the shipped ones from loading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from drummachine.core.controller import ControllerPreset, controller_from_toml
from drummachine.core.commands import KNOBS, ranges
from drummachine.core.errors import DrumMachineError
from drummachine.core.places import shipped, user_dir
from drummachine.core.transport import BPM_RANGE
from drummachine.core.toml_files import parse_toml, read_text

SHIPPED = shipped("presets")
KINDS = ("songs", "setlists", "controllers", "notemaps")
#: what styles.toml may set per style: the jam's tempo and intensity (0..1), and the knobs' starting points
STYLE_KEYS = {"bpm": BPM_RANGE, "intensity": (0.0, 1.0), **ranges(n for n in KNOBS if n != "intensity")}


def folders(kind: str) -> list[Path]:
    """Where presets of a kind live, shipped first (later ones win)."""
    return [SHIPPED / kind, user_dir() / kind]


#: a preset NAME: letters, digits, "_" and "-" (no dots, no slashes: a name cannot leave its folders)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def is_path(name: str) -> bool:
    """The rule for what the user typed: anything with a slash or a ``.toml`` suffix is a file path
    (the user's own choice, taken as given); anything else is a preset name, looked up only in
    the preset folders."""
    return "/" in name or "\\" in name or name.endswith(".toml")


def find(kind: str, name: str) -> Path:
    """A preset file by path, or by name (user folder first). A name resolves only inside the
    preset folders of ``kind``: ``../x`` and the like are refused (see ``is_path`` and ``NAME``)."""
    what = kind[:-1]
    if is_path(name):
        p = Path(name)
        if p.suffix != ".toml":
            raise DrumMachineError(name, f"a {what} file must end in .toml (a {what} name has no slash: "
                                   f"{', '.join(names(kind)) or 'none'})")
        if not p.is_file():
            raise DrumMachineError(str(p), f"no such {what} file")
        return p
    if not NAME.fullmatch(name):
        raise DrumMachineError(what, f"{name!r} is not a {what} name (letters, digits, _ and - only; a file "
                               f"needs a slash or .toml); available: {', '.join(names(kind)) or 'none'}")
    for folder in reversed(folders(kind)):
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    raise DrumMachineError(what, f"no {what} {name!r}; available: {', '.join(names(kind)) or 'none'}")


def names(kind: str) -> list[str]:
    return sorted({f.stem for folder in folders(kind) if folder.is_dir() for f in folder.glob("*.toml")})


def load_controller(name: str) -> ControllerPreset:
    path = find("controllers", name)
    return controller_from_toml(read_text(path, "controller file"), path)


DEFAULT_CONTROLLER = "default"
LEARNED = "learned"  #: the user's controllers/learned.toml, written by MIDI learn


def controller_stack(name: str | None, warnings: list[str]) -> ControllerPreset:
    """What answers the controller: the default preset (the pedal drum machines' CCs), the preset
    ``name`` on top of it, and the user's learned mappings on top of both. A broken learned file
    is a warning (appended to ``warnings``), never a reason not to play."""
    preset = load_controller(DEFAULT_CONTROLLER)
    if name and name != DEFAULT_CONTROLLER:
        preset = load_controller(name).over(preset)
    learned = user_dir() / "controllers" / f"{LEARNED}.toml"
    if learned.is_file():
        try:
            preset = controller_from_toml(read_text(learned), learned).over(preset)
        except DrumMachineError as exc:
            warnings.append(f"{exc}: learned mappings ignored")
    return preset


def learn_binding(control: tuple[str, int], action: str) -> str:
    """Bind ``control`` (("cc" | "note", number)) to ``action`` in the user's learned.toml (kept
    with the others learned before; written to a temporary file, then renamed). Returns what was
    learned, as shown on stage."""
    path = user_dir() / "controllers" / f"{LEARNED}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = []
    if path.is_file():
        try:
            entries = [(m.kind, m.number, m.action) for m in
                       controller_from_toml(read_text(path), path).mappings]
        except DrumMachineError:
            entries = []  # a broken file is replaced by what is learned now
    entries = [e for e in entries if (e[0], e[1]) != control] + [(control[0], control[1], action)]
    text = "# Learned in the stage UI (MIDI learn). Edit freely; the schema is that of presets/controllers.\n"
    text += "".join(f'\n[[map]]\n{k} = {n}\naction = "{a}"\n' for k, n, a in entries)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return f"{control[0]} {control[1]} -> {action}"


@dataclass(frozen=True)
class Setlist:
    name: str
    songs: tuple[str, ...]


def setlist_from_toml(text: str, path="<setlist>", known_songs: list[str] | None = None) -> Setlist:
    """``name = "..."`` and ``songs = ["highway_rock", "slow_funk", ...]`` (song names or files)."""
    data = parse_toml(text, path)
    for key in data:
        if key not in ("name", "songs"):
            raise DrumMachineError(f"{path} ({key})", "unknown key; allowed: name, songs")
    songs = data.get("songs")
    if not isinstance(songs, list) or not songs or not all(isinstance(s, str) for s in songs):
        raise DrumMachineError(f"{path} (songs)", "a list of song names, at least one")
    if known_songs is not None:
        for s in songs:
            if s not in known_songs and not s.endswith(".toml"):
                raise DrumMachineError(f"{path} (songs)", f"unknown song {s!r}; songs: {', '.join(known_songs)}")
    return Setlist(str(data.get("name", Path(str(path)).stem)), tuple(songs))


def load_setlist(name: str) -> Setlist:
    path = find("setlists", name)
    return setlist_from_toml(read_text(path, "setlist file"), path, names("songs"))


@dataclass
class StyleDefaults:
    """The default knobs for each style: shipped styles.toml, then the user's on top."""

    styles: dict[str, dict[str, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def get(self, style: str) -> dict[str, float]:
        return dict(self.styles.get(style, {}))


def styles_from_toml(text: str, path, known: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    data = parse_toml(text, path)
    out = {}
    for style, table in data.items():
        if known is not None and style not in known:
            raise DrumMachineError(f"{path} ({style})", f"unknown style; allowed: {', '.join(known)}")
        if not isinstance(table, dict):
            raise DrumMachineError(f"{path} ({style})", "must be a table of knob = value")
        for key, value in table.items():
            if key not in STYLE_KEYS:
                raise DrumMachineError(f"{path} ({style}.{key})", f"unknown knob; allowed: {', '.join(STYLE_KEYS)}")
            lo, hi = STYLE_KEYS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise DrumMachineError(f"{path} ({style}.{key})", f"{value!r}; allowed: {lo:g}..{hi:g}")
        out[style] = {k: float(v) for k, v in table.items()}
    return out


def load_styles(known: tuple[str, ...] | None = None) -> StyleDefaults:
    result = StyleDefaults()
    for folder in (SHIPPED, user_dir()):
        path = folder / "styles.toml"
        if not path.is_file():
            continue
        try:
            styles = styles_from_toml(read_text(path), path, known)
        except DrumMachineError as exc:
            if folder == SHIPPED:
                raise
            result.problems.append(str(exc))  # a bad user file: reported, the shipped styles stay
            continue
        for style, knobs in styles.items():
            result.styles.setdefault(style, {}).update(knobs)
    return result


def check_all(styles: tuple[str, ...] | None = None) -> list[str]:
    """Load every preset (shipped and user); return one line per problem found."""
    from drummachine.core.notemap import load_notemap
    from drummachine.core.song import load_song

    problems = []
    loaders = {"songs": lambda p: load_song(p, styles), "setlists": lambda p: setlist_from_toml(
        read_text(p), p, names("songs")), "controllers": lambda p: load_controller(str(p)),
        "notemaps": load_notemap}
    for kind in KINDS:
        for folder in folders(kind):
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.toml")):
                try:
                    loaders[kind](path)
                except DrumMachineError as exc:
                    problems.append(str(exc))
    problems += load_styles(styles).problems
    return problems
