"""Hydrogen drum kits: ``drumkit.xml`` read, its instruments mapped onto the nine voices, decoded.

Hydrogen (hydrogen-music.org) is the open drum machine whose kit format most free kits ship in;
Debian packages a collection (``apt-get install hydrogen-drumkits``). A kit is a folder with a
``drumkit.xml``: instruments, each with velocity layers (a sample file and the velocity range
``min``..``max`` it plays for, a gain, a pitch), a volume, a gain, a pan and a mute group.
Three generations of the format are read: one ``<filename>`` per instrument (before 0.9.3),
``<layer>`` under ``<instrument>``, and ``<layer>`` under ``<instrumentComponent>`` (0.9.7 on).

Each of the nine voices gets one instrument, chosen by the instrument's name (``NAME_RULES``,
first matching row wins), then by its General MIDI note, then by an override table
(``presets/kits.toml`` shipped, ``~/.config/drummachine/kits.toml`` on top). A voice the kit
lacks is played by a neighbour (``STAND_INS``: a tom by the next tom, pitched; the crash by the
ride) or, failing that, by the built-in kit's voice: ``drummachine kits`` says which.

Samples are decoded with soundfile (libsndfile: WAV, AIFF, FLAC, OGG), mixed to mono, resampled
to the output rate with soxr (see docs/kits.md for why), trimmed of their silent tails, and
held as float32 with the instrument's and layer's gains applied. The decoded kit is cached
(``$XDG_CACHE_HOME/drummachine/kits``), so the next start-up reads one file instead of decoding.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drummachine.core.errors import DrumMachineError
from drummachine.core.places import shipped, user_dir
from drummachine.core.toml_files import read_toml, where
from drummachine.core.voices import CHOKES, INPUT_MAPS, VOICE_INDEX, VOICE_NAMES, VOICES

#: where Hydrogen keeps kits: the system's collection, then the user's own
SYSTEM_KIT_FOLDERS = (Path("/usr/share/hydrogen/data/drumkits"), Path("/usr/local/share/hydrogen/data/drumkits"))
USER_KIT_FOLDER = Path("~/.hydrogen/data/drumkits")
#: more folders to search, before the others (colon-separated), e.g. for a kit collection elsewhere
KIT_PATH_VARIABLE = "DRUMMACHINE_KIT_PATH"
CACHE_FORMAT = 2
SILENCE = 10 ** (-80 / 20)  #: a sample's tail below -80 dBFS is cut (it only costs memory)
#: ... and below -60 dB under its own peak: inaudible under the next hits, and a kit's tails (12 s
#: cymbals, 2 s hats of room noise) would otherwise keep many slots of the mixer busy
TAIL_BELOW_PEAK = 10 ** (-60 / 20)
TAIL_FADE_SECONDS = 0.005
BUILT_IN = "built-in"

#: (voice, name pattern, excluded pattern) in order of preference: for each row, the first
#: instrument in the kit's order whose normalized name (lower case, words) matches and is not
#: excluded, and is not taken yet, plays the voice if no earlier row gave it one.
NAME_RULES: tuple[tuple[str, str, str], ...] = (
    ("kick", r"\bkick|bass ?drum|\bbd\b|\bkck\b", r""),
    ("snare", r"snare", r"rim|roll|stick|brush|ghost|flam|side"),
    ("snare", r"snare|\bsd\b", r""),
    ("closed_hat", r"(hat|hh).*\b(closed|cl|clsd)\b|\b(closed|cl|clsd)\b.*(hat|hh)|\bchh\b", r""),
    ("open_hat", r"(hat|hh).*\b(open|op|opened)\b|\b(open|op|opened)\b.*(hat|hh)|\bohh\b", r"semi|half|side"),
    ("open_hat", r"(hat|hh).*(semi ?open|half)", r""),
    ("closed_hat", r"hat|\bhh\b", r"open|\bop\b|pedal|\bpd\b|semi|half|swish|choke|free|side"),
    ("low_tom", r"tom.*\b(low|lo|floor|fl)\b|\b(low|lo|floor)\b.*tom", r""),
    ("high_tom", r"tom.*\b(high|hi)\b|\b(high|hi)\b.*tom", r""),
    ("mid_tom", r"tom.*\b(mid|middle|med)\b|\b(mid|middle)\b.*tom", r""),
    ("high_tom", r"\btom ?1\b", r""),  # rack tom 1 is the highest
    ("mid_tom", r"\btom ?2\b", r""),
    ("low_tom", r"\btom ?3\b", r""),
    ("ride", r"ride", r"bell|cup|crash|flink|bow"),
    ("ride", r"ride", r"bell|cup|crash"),
    ("crash", r"crash", r"ride|flink|choke"),
    ("crash", r"crash|splash|china|cymbal", r"choke"),
    ("ride", r"ride", r""),
    ("high_tom", r"\btom\b", r""),
    ("low_tom", r"\btom\b", r""),
    ("mid_tom", r"\btom\b", r""),
    # hand-percussion kits: the low hit as the kick, the sharp one as the snare, a shaker as hats
    ("kick", r"thump|\bbass\b", r""),
    ("snare", r"slap|clap", r""),
    ("closed_hat", r"maraca|shaker|tambourine|snaps", r"pedal"),
)

#: a voice the kit lacks, played by another voice's instrument, pitched by semitones
STAND_INS: dict[str, tuple[tuple[str, float], ...]] = {
    "open_hat": (("closed_hat", 0.0),),
    "low_tom": (("mid_tom", -3.0), ("high_tom", -6.0)),
    "mid_tom": (("high_tom", -3.0), ("low_tom", 3.0)),
    "high_tom": (("mid_tom", 3.0), ("low_tom", 6.0)),
    "crash": (("ride", 0.0),),
    "ride": (("crash", 0.0),),
}
#: the voices a kit must have for the built-in's stand-ins not to dominate (for listing)
CORE_VOICES = ("kick", "snare", "closed_hat")


@dataclass(frozen=True)
class Layer:
    """One sample file and the velocity range (0..1, both ends in) it plays for."""

    path: Path
    low: float
    high: float
    gain: float = 1.0
    pitch: float = 0.0  #: semitones


@dataclass(frozen=True)
class Instrument:
    name: str
    note: int | None  #: the kit's MIDI note for it, when given
    gain: float  #: volume × gain
    pan: float  #: -1 left .. +1 right
    mute_group: int  #: -1: none; instruments in one group cut each other off
    layers: tuple[Layer, ...]
    round_robin: bool = False  #: Hydrogen 1.x's sample selection: cycle through the layers that fit


@dataclass(frozen=True)
class DrumKit:
    """A Hydrogen kit as its ``drumkit.xml`` describes it."""

    name: str
    folder: Path
    license: str
    instruments: tuple[Instrument, ...]


@dataclass(frozen=True)
class Source:
    """What plays one voice: an instrument of the kit (maybe a neighbour's, pitched) or the built-in."""

    voice: str
    instrument: Instrument | None  #: None: the built-in kit's voice
    how: str  #: "name", "note", "override", "stand-in for VOICE", "built-in"
    pitch: float = 0.0

    def describe(self) -> str:
        if self.instrument is None:
            return f"{BUILT_IN} ({self.how})" if self.how != BUILT_IN else BUILT_IN
        layers = len(self.instrument.layers)
        text = f"{self.instrument.name} ({layers} layer{'s' if layers != 1 else ''}, by {self.how})"
        if self.pitch:
            text += f", pitched {self.pitch:+g} semitones"
        return text


# --- reading drumkit.xml ----------------------------------------------------------------------

def _text(elem, tag: str, ns: str, default: str = "") -> str:
    found = elem.find(ns + tag)
    return (found.text or "").strip() if found is not None and found.text is not None else default


def _number(elem, tag: str, ns: str, default: float, where_: str) -> float:
    raw = _text(elem, tag, ns)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise DrumMachineError(where_, f"<{tag}> is {raw!r}, not a number") from None


def read_drumkit(folder: str | Path) -> DrumKit:
    """The kit in ``folder`` (its ``drumkit.xml``); a bad file is one DrumMachineError."""
    folder = Path(folder)
    xml = folder / "drumkit.xml"
    try:
        root = ET.parse(xml).getroot()
    except FileNotFoundError:
        raise DrumMachineError(str(xml), "no such file: not a Hydrogen kit folder") from None
    except (ET.ParseError, OSError) as exc:
        raise DrumMachineError(str(xml), f"not a readable drumkit.xml ({exc})") from None
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if root.tag[len(ns):] != "drumkit_info":
        raise DrumMachineError(str(xml), f"the root element is <{root.tag[len(ns):]}>, not <drumkit_info>")
    instruments = []
    for elem in root.iter(ns + "instrument"):
        name = _text(elem, "name", ns)
        here = f"{xml} (instrument {name or _text(elem, 'id', ns)!r})"
        layers = []
        for layer in elem.iter(ns + "layer"):
            file = _text(layer, "filename", ns)
            if file:
                layers.append(Layer(folder / file, _number(layer, "min", ns, 0.0, here),
                                    _number(layer, "max", ns, 1.0, here), _number(layer, "gain", ns, 1.0, here),
                                    _number(layer, "pitch", ns, 0.0, here)))
        old_file = _text(elem, "filename", ns)
        if not layers and old_file:  # the format before layers: one sample, every velocity
            layers.append(Layer(folder / old_file, 0.0, 1.0))
        if not layers or _text(elem, "isMuted", ns) == "true":
            continue  # an empty slot (kits list 32 of them) or an instrument its author muted
        if elem.find(ns + "pan") is not None:  # Hydrogen 1.2: one pan, -1..1
            pan = _number(elem, "pan", ns, 0.0, here)
        else:  # pan_L / pan_R: the two sides' gains, 1 for the louder side
            pan = _number(elem, "pan_R", ns, 1.0, here) - _number(elem, "pan_L", ns, 1.0, here)
        note = _text(elem, "midiOutNote", ns)
        instruments.append(Instrument(
            name=name, note=int(note) if note.lstrip("-").isdigit() else None,
            gain=_number(elem, "volume", ns, 1.0, here) * _number(elem, "gain", ns, 1.0, here),
            pan=max(-1.0, min(1.0, pan)), mute_group=int(_number(elem, "muteGroup", ns, -1, here)),
            layers=tuple(layers),
            round_robin=_text(elem, "sampleSelectionAlgo", ns).upper() in ("ROUND_ROBIN", "RANDOM")))
    if not instruments:
        raise DrumMachineError(str(xml), "the kit has no instrument with a sample")
    return DrumKit(_text(root, "name", ns) or folder.name, folder, _text(root, "license", ns), tuple(instruments))


# --- finding kits -----------------------------------------------------------------------------

def kit_folders() -> list[Path]:
    """The folders searched for kits, in order: $DRUMMACHINE_KIT_PATH, the system's, the user's."""
    extra = [Path(p) for p in os.environ.get(KIT_PATH_VARIABLE, "").split(os.pathsep) if p]
    return extra + list(SYSTEM_KIT_FOLDERS) + [USER_KIT_FOLDER.expanduser()]


def installed_kits() -> list[Path]:
    """Every kit folder found (a folder holding a drumkit.xml), by name."""
    found = []
    for base in kit_folders():
        if base.is_dir():
            found += sorted((p for p in base.iterdir() if (p / "drumkit.xml").is_file()), key=lambda p: p.name.lower())
    return found


def find_kit(name: str) -> Path:
    """A kit folder by folder name or by the name in its drumkit.xml (case and spaces ignored)."""
    want = _normal(name)
    kits = installed_kits()
    for path in kits:
        if _normal(path.name) == want:
            return path
    for path in kits:
        try:
            if _normal(read_drumkit(path).name) == want:
                return path
        except DrumMachineError:
            continue
    partial = [p for p in kits if want and want in _normal(p.name)]
    if len(partial) == 1:  # a unique part of a folder name: "forzee" for ForzeeStereo
        return partial[0]
    names = ", ".join(p.name for p in kits) or "none installed (apt-get install hydrogen-drumkits)"
    raise DrumMachineError("--kit", f"no kit called {name!r}; kits: {names}")


def _normal(name: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9#]+", " ", name.lower()).split())


# --- mapping instruments onto voices ----------------------------------------------------------

def overrides_for(kit: DrumKit) -> dict[str, str]:
    """The override rows for this kit (by its name or folder name): shipped, then the user's on top."""
    rows: dict[str, str] = {}
    user_file = user_dir() / "kits.toml"
    for path in (shipped("presets", "kits.toml"), user_file):
        if not path.is_file():
            continue
        data, text = read_toml(path)
        for kit_name, table in data.items():
            if _normal(kit_name) not in (_normal(kit.name), _normal(kit.folder.name)):
                continue
            if not isinstance(table, dict):
                raise DrumMachineError(where(path, text, kit_name), "a kit's overrides are a table: [\"Kit name\"]")
            for voice, instrument in table.items():
                if voice not in VOICE_INDEX:
                    raise DrumMachineError(where(path, text, voice),
                                           f"unknown voice; allowed: {', '.join(VOICE_NAMES)}")
                names = [i.name for i in kit.instruments]
                if path != user_file and instrument not in names and instrument != BUILT_IN:
                    continue  # the shipped rows fit Debian's versions of the kits; another version: the guess
                if not isinstance(instrument, str) or (instrument != BUILT_IN and instrument not in names):
                    raise DrumMachineError(where(path, text, voice), f"{instrument!r} is no instrument of "
                                           f"{kit.name}; allowed: {BUILT_IN!r}, {', '.join(map(repr, names))}")
                rows[voice] = instrument
    return rows


def map_voices(kit: DrumKit, overrides: dict[str, str] | None = None) -> tuple[Source, ...]:
    """What plays each of the nine voices (in voice order)."""
    overrides = overrides_for(kit) if overrides is None else overrides
    chosen: dict[str, tuple[Instrument | None, str]] = {}
    taken: set[int] = set()
    by_name = {i.name: i for i in kit.instruments}
    for voice, name in overrides.items():  # an instrument named here may still play its own voice too
        chosen[voice] = (None if name == BUILT_IN else by_name[name], "override")
    normal = [(_normal(i.name), i) for i in kit.instruments]
    for voice, pattern, excluded in NAME_RULES:
        if voice in chosen:
            continue
        for text, inst in normal:
            if id(inst) not in taken and re.search(pattern, text) and not (excluded and re.search(excluded, text)):
                chosen[voice] = (inst, "name")
                taken.add(id(inst))
                break
    notes = [i.note for i in kit.instruments if i.note is not None]
    informative = len(set(notes)) > len(notes) // 2 and notes != [36 + k for k in range(len(notes))]
    if informative:  # Hydrogen writes one default note (60, or 36 + id) when the author set none
        gm = INPUT_MAPS["gm"]
        for voice in VOICES:
            if voice.name in chosen:
                continue
            fits = [i for i in kit.instruments
                    if id(i) not in taken and i.note is not None and gm.get(i.note) == voice.index]
            fits.sort(key=lambda i: i.note != voice.gm_note)  # the voice's own note first
            if fits:
                chosen[voice.name] = (fits[0], "note")
                taken.add(id(fits[0]))
    sources = []
    for name in VOICE_NAMES:
        inst, how = chosen.get(name, (None, ""))
        if inst is not None or how == "override":
            sources.append(Source(name, inst, how if inst is not None else BUILT_IN))
            continue
        for other, pitch in STAND_INS.get(name, ()):
            stand_in = chosen.get(other, (None, ""))[0]
            if stand_in is not None:
                sources.append(Source(name, stand_in, f"stand-in: {other}", pitch))
                break
        else:
            sources.append(Source(name, None, BUILT_IN))
    return tuple(sources)


def choke_table(sources: tuple[Source, ...]) -> dict[int, tuple[int, ...]]:
    """Who cuts whom: the core's chokes (a closed hat cuts the open hat) and the kit's mute groups."""
    chokes = {c: set(v) for c, v in CHOKES.items()}
    for a in sources:
        for b in sources:
            if (a is not b and a.instrument is not None and b.instrument is not None
                    and a.instrument.mute_group >= 0 and a.instrument.mute_group == b.instrument.mute_group):
                chokes.setdefault(VOICE_INDEX[a.voice], set()).add(VOICE_INDEX[b.voice])
    return {c: tuple(sorted(v)) for c, v in chokes.items()}


# --- decoding ---------------------------------------------------------------------------------

def decode_sample(path: Path, rate: int, pitch: float = 0.0) -> np.ndarray:
    """One sample file as mono float32 at ``rate`` (pitched by ``pitch`` semitones); one clear error."""
    import soundfile
    import soxr

    try:
        data, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise DrumMachineError(str(path), "missing sample: no such file") from None
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        if not path.is_file():
            raise DrumMachineError(str(path), "missing sample: no such file") from None
        raise DrumMachineError(str(path), f"unreadable sample ({exc})") from None
    if not len(data):
        raise DrumMachineError(str(path), "the sample holds no audio")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    # a pitch of +n semitones plays the sample faster: it is read as if recorded at a higher rate
    effective = source_rate * 2.0 ** (pitch / 12.0)
    if abs(effective - rate) > 1e-6:
        mono = soxr.resample(mono, effective, rate, quality="HQ")
    return _trim(np.ascontiguousarray(mono, dtype=np.float32), rate)


def _trim(x: np.ndarray, rate: int) -> np.ndarray:
    level = np.abs(x)
    loud = np.flatnonzero(level > max(SILENCE, float(level.max(initial=0.0)) * TAIL_BELOW_PEAK))
    if not loud.size:
        return x[:1] * 0.0
    x = x[:loud[-1] + 1].copy()
    fade = min(len(x), max(1, int(TAIL_FADE_SECONDS * rate)))
    x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return x


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "drummachine" / "kits"


def _cache_key(kit: DrumKit, sources: tuple[Source, ...], rate: int) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT} {kit.folder.resolve()} {rate}".encode())
    xml = kit.folder / "drumkit.xml"
    st = xml.stat()
    h.update(f"{st.st_size} {st.st_mtime_ns}".encode())
    for s in sources:
        h.update(f"|{s.voice} {s.instrument.name if s.instrument else ''} {s.pitch}".encode())
        for layer in (s.instrument.layers if s.instrument else ()):
            try:
                st = layer.path.stat()
                h.update(f" {layer.path.name} {st.st_size} {st.st_mtime_ns}".encode())
            except OSError:
                h.update(f" {layer.path.name} missing".encode())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class Decoded:
    """A decoded kit, packed: every layer one after the other in ``data`` (float32, mono), and the
    layout that says where each lies (JSON-able: it crosses to the mixer process)."""

    data: np.ndarray
    layout: dict


def decode_kit(kit: DrumKit, sources: tuple[Source, ...], rate: int, use_cache: bool = True,
               threads: int = 2) -> tuple[Decoded, bool]:
    """The voices' layers decoded at ``rate``, packed; (decoded, whether it came from the cache).

    A missing or unreadable sample of a mapped instrument is one DrumMachineError."""
    def make() -> Decoded:
        jobs = [(s, layer) for s in sources if s.instrument is not None for layer in s.instrument.layers]
        with ThreadPoolExecutor(max(1, threads)) as pool:  # libsndfile and soxr release the GIL
            decoded = list(pool.map(lambda job: decode_sample(job[1].path, rate, job[0].pitch + job[1].pitch), jobs))
        parts, layers, offset = [], [], 0
        for (s, layer), x in zip(jobs, decoded):
            x *= np.float32(s.instrument.gain * layer.gain)
            parts.append(x)
            layers.append({"voice": VOICE_INDEX[s.voice], "offset": offset, "frames": len(x),
                           "low": layer.low, "high": layer.high})
            offset += len(x)
        data = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return Decoded(data, {"format": CACHE_FORMAT, "name": kit.name, "rate": rate, "frames": int(data.size),
                              "layers": layers,
                              "round_robin": [bool(s.instrument and s.instrument.round_robin) for s in sources],
                              "pans": [s.instrument.pan if s.instrument else None for s in sources],
                              "chokes": {str(k): list(v) for k, v in choke_table(sources).items()},
                              "sources": [s.describe() for s in sources]})

    family = "kit-" + hashlib.sha256(f"{kit.folder.resolve()} {rate}".encode()).hexdigest()[:12]
    return cached(f"{family}-{_cache_key(kit, sources, rate)}", make, use_cache, family)


def cached(key: str, make, use_cache: bool = True, family: str | None = None) -> tuple[Decoded, bool]:
    """``make()``'s packed kit, kept in the cache under ``key``; (kit, whether it came from the cache).
    Writing it removes the other entries of its ``family`` (the same kit before it changed)."""
    path = _cache_dir() / f"{key}.f32"
    if use_cache:
        try:
            layout = json.loads(path.with_suffix(".json").read_text())
            data = np.fromfile(path, dtype=np.float32)
            if layout.get("format") == CACHE_FORMAT and data.size == layout["frames"]:
                return Decoded(data, layout), True
        except (OSError, ValueError, KeyError):
            pass
    decoded = make()
    if use_cache:
        try:  # a cache that cannot be written only costs the next start-up its decoding
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.part")
            decoded.data.tofile(tmp)
            os.replace(tmp, path)
            tmp = path.with_suffix(f".{os.getpid()}.json.part")
            tmp.write_text(json.dumps(decoded.layout))
            os.replace(tmp, path.with_suffix(".json"))
            for old in path.parent.glob(f"{family}-*") if family else ():
                if old.stem != key:
                    old.unlink(missing_ok=True)
        except OSError:
            pass
    return decoded, False
