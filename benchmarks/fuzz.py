"""Hostile input, fuzzed: mutations of real files through every parser and loader.

Every case ends one of three ways: *refused* (one line naming what and where: DrumMachineError, or
exit 2 with one stderr line for a command), *accepted* (it read, and what reads it next worked),
or *failed* (a traceback, a hang past the case's time limit, a multi-line error, a half-written
output file). A failure is a defect. The material is real: drummers' MIDI files (the Groove MIDI
Dataset if present, else tests/fixtures), the shipped presets and the shipped model.

    python benchmarks/fuzz.py --seconds 600 --out benchmarks/fuzz.json

writes counts per parser (cases, refused, accepted, failed) and the first failures. The same case
makers run, seeded and bounded, in tests/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import os
import signal
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drummachine.core.errors import DrumMachineError  # noqa: E402
from drummachine.midi.files import atomic_write  # noqa: E402

GROOVE = ROOT.parent / "shared" / "data" / "groove"
FIXTURES = ROOT / "tests" / "fixtures" / "groove"
PRESETS = ROOT / "presets"
MODEL = ROOT / "models" / "groove.int8.onnx"
REFUSED, ACCEPTED, FAILED = "refused", "accepted", "failed"
CASE_SECONDS = 10.0  #: a case still running after this is a hang
#: render's case limit: a file it accepts may ask for up to 30 minutes of audio, ~10 s of mixing here
RENDER_SECONDS = 60.0


class Hang(Exception):
    pass


@dataclass
class Case:
    parser: str
    name: str
    run: Callable[[], object]  #: returns normally (accepted) or raises DrumMachineError (refused)


@dataclass
class Tally:
    counts: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    def add(self, case: Case, outcome: str, detail: str = "", seconds: float = 0.0) -> None:
        row = self.counts.setdefault(case.parser, {"cases": 0, REFUSED: 0, ACCEPTED: 0, FAILED: 0,
                                                   "slowest_case_s": 0.0})
        row["cases"] += 1
        row[outcome] += 1
        row["slowest_case_s"] = round(max(row["slowest_case_s"], seconds), 3)
        if outcome == FAILED:
            self.failures.append({"parser": case.parser, "case": case.name, "detail": detail[-1500:]})


def run_case(case: Case, seconds: float = CASE_SECONDS) -> tuple[str, str]:
    """(outcome, detail). A hang is cut by SIGALRM (main thread only; pure-Python parsers)."""
    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        case.run()
        return ACCEPTED, ""
    except DrumMachineError as exc:
        text = str(exc)
        if "\n" in text or not text.strip():
            return FAILED, f"not one line: {text!r}"
        return REFUSED, text
    except Hang as exc:
        return FAILED, f"hang: {exc}"
    except Exception:
        return FAILED, traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --- MIDI: structure-aware mutations of real files ------------------------------------------------

def midi_sources() -> list[Path]:
    base = GROOVE if GROOVE.is_dir() else FIXTURES
    return sorted(base.rglob("*.mid"))


def vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def chunks(data: bytes) -> tuple[bytes, list[bytes]]:
    """(MThd body, [MTrk body, ...]) of a well-formed file."""
    header = data[8:14]
    tracks, i = [], 14
    while i + 8 <= len(data):
        length = struct.unpack(">I", data[i + 4:i + 8])[0]
        tracks.append(data[i + 8:i + 8 + length])
        i += 8 + length
    return header, tracks


def assemble(header: bytes, tracks: list[bytes], lengths: dict[int, int] | None = None) -> bytes:
    out = b"MThd" + struct.pack(">I", len(header)) + header
    for n, body in enumerate(tracks):
        out += b"MTrk" + struct.pack(">I", (lengths or {}).get(n, len(body))) + body
    return out


def _insert_event(rng: random.Random, body: bytes, event: bytes) -> bytes:
    """``event`` (delta time included) as the track's first event: an event boundary known for sure."""
    return event + body


def midi_mutations(rng: random.Random, data: bytes) -> list[tuple[str, bytes]]:
    """Named mutations of one real MIDI file (bytes)."""
    header, tracks = chunks(data)
    fmt, ntrk, division = struct.unpack(">HHH", header[:6])
    t = rng.randrange(len(tracks)) if tracks else 0
    body = tracks[t] if tracks else b""

    def with_track(new: bytes) -> bytes:
        return assemble(header, tracks[:t] + [new] + tracks[t + 1:])

    cut = rng.randrange(1, max(2, len(data)))
    a, b = sorted(rng.randrange(len(data)) for _ in range(2))
    flipped = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(flipped))
        flipped[i] ^= 1 << rng.randrange(8)
    garbage = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    pos = rng.randrange(len(data))
    notes = b"\x00\x99\x24\x64" + b"\x01\x24\x64" * 1_000_000 + b"\x00\xff\x2f\x00"
    return [
        ("truncated file", data[:cut]),
        ("truncated track chunk (declared length kept)", assemble(header, tracks[:t] + [body[:len(body) // 2]],
                                                                   {t: len(body)})),
        ("track length too long", assemble(header, tracks, {t: len(body) + rng.randint(1, 1000)})),
        ("track length too short", assemble(header, tracks, {t: max(0, len(body) - rng.randint(1, 50))})),
        ("track length 4 GB", assemble(header, tracks, {t: 0xFFFFFFFF})),
        ("header length wrong", b"MThd" + struct.pack(">I", rng.choice([0, 2, 5, 7, 1000])) + data[8:]),
        ("enormous delta time before a note", with_track(_insert_event(rng, body, vlq(0x0FFFFFFF) + b"\x99\x24\x64"))),
        ("enormous delta times, many", with_track(b"".join(vlq(0x0FFFFFFF) + b"\x99\x26\x50" for _ in range(50))
                                                    + body)),
        ("five-byte delta time", with_track(b"\xff\xff\xff\xff\x7f\x99\x24\x64" + body)),
        ("running status with no status", with_track(b"\x00\x24\x64" + body)),
        ("running status after a meta event", with_track(b"\x00\xff\x01\x01x\x00\x24\x64" + body)),
        ("running status after sysex", with_track(b"\x00\xf0\x02\x01\xf7\x00\x24\x64" + body)),
        ("data byte above 127", with_track(b"\x00\x99\xa4\xe4" + body)),
        ("sysex with a length past the end", with_track(b"\x00\xf0" + vlq(0x0FFFFFFF) + b"\x01\x02")),
        ("meta with a length past the end", with_track(b"\x00\xff\x01" + vlq(0x0FFFFFFF) + b"abc")),
        ("tempo 0", with_track(b"\x00\xff\x51\x03\x00\x00\x00" + body)),
        ("tempo 0 later", with_track(body[:-4] + b"\x10\xff\x51\x03\x00\x00\x00" + body[-4:])),
        ("tempo slowest", with_track(b"\x00\xff\x51\x03\xff\xff\xff" + body)),
        ("tempo with a short payload", with_track(b"\x00\xff\x51\x01\x07" + body)),
        ("time signature 0/4", with_track(b"\x00\xff\x58\x04\x00\x02\x18\x08" + body)),
        ("time signature 4/2^200", with_track(b"\x00\xff\x58\x04\x04\xc8\x18\x08" + body)),
        ("time signature 255/16", with_track(b"\x00\xff\x58\x04\xff\x04\x18\x08" + body)),
        ("key signature out of range", with_track(b"\x00\xff\x59\x02\x40\x05" + body)),
        ("a million notes", assemble(header, [notes])),
        ("SMPTE division", assemble(header[:4] + struct.pack(">H", 0xE728), tracks)),
        ("ticks per beat 0", assemble(header[:4] + b"\x00\x00", tracks)),
        ("ticks per beat 1", assemble(header[:4] + b"\x00\x01", tracks)),
        ("type 2", assemble(struct.pack(">HHH", 2, ntrk, division), tracks)),
        ("type 7", assemble(struct.pack(">HHH", 7, ntrk, division), tracks)),
        ("track count too high", assemble(struct.pack(">HHH", fmt, 65535, division), tracks)),
        ("track count 0", assemble(struct.pack(">HHH", fmt, 0, division), tracks)),
        ("no notes (velocity 0 only)", assemble(header, [b"\x00\x99\x24\x00\x00\xff\x2f\x00"])),
        ("bit flips", bytes(flipped)),
        ("random bytes inserted", data[:pos] + garbage + data[pos:]),
        ("range deleted", data[:a] + data[b:]),
        ("range duplicated", data[:b] + data[a:b] + data[b:]),
        ("chunk type garbled", data[:14] + b"MTRK" + data[18:]),
        ("unknown chunk before the track", data[:14] + b"XFIH" + struct.pack(">I", 4) + b"abcd" + data[14:]),
        ("bit flips in a truncated copy with junk inserted", bytes(flipped[:max(cut, 15)]) + garbage),
        ("empty file", b""),
        ("header only", data[:14]),
        ("not MIDI", garbage),
    ]


def notes_over_cap() -> bytes:
    """Just under the size cap, over the note cap: refused after parsing, in seconds."""
    from drummachine.midi.files import MAX_NOTES

    body = b"\x00\x99\x24\x64" + b"\x01\x24\x64" * MAX_NOTES + b"\x00\xff\x2f\x00"
    return assemble(struct.pack(">HHH", 0, 1, 480), [body])


def _cli(*argv: str) -> None:
    """The real command in this process: exit 0 is accepted, exit 2 with one line is refused."""
    from drummachine.cli.main import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(list(argv))
    lines = err.getvalue().strip().splitlines()
    if code == 2:
        if len(lines) != 1 or not lines[0].startswith("drummachine: error: "):
            raise AssertionError(f"exit 2 without one error line: {err.getvalue()!r}")
        raise DrumMachineError("exit 2", lines[0][len("drummachine: error: "):])
    if code != 0:
        raise AssertionError(f"exit {code}: {err.getvalue()[-500:]}")


def check_no_partial(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.name.endswith(".part") or p.name.endswith(".tmp")]
    if left:
        raise AssertionError(f"half-written files left behind: {left}")


def midi_cases(rng: random.Random, work: Path, n_files: int = 2, render: bool = True,
               max_bytes: int | None = None, render_every: int = 1) -> list[Case]:
    """info (in process, the real command: the reader under dataset build too) and render (every
    ``render_every``-th mutation) on mutations of ``n_files`` real files (of at most ``max_bytes``)."""
    sources = [p for p in midi_sources() if max_bytes is None or p.stat().st_size <= max_bytes]
    cases = []
    for src in rng.sample(sources, min(n_files, len(sources))):
        for k, (name, data) in enumerate(midi_mutations(rng, src.read_bytes())):
            path = work / f"m{len(cases)}.mid"
            path.write_bytes(data)
            label = f"{src.name}: {name}"
            cases.append(Case("midi info", label, lambda p=path: _cli("info", str(p))))
            if render and k % render_every == 0:
                out = work / f"r{len(cases)}.wav"

                def do_render(p=path, out=out):
                    try:
                        _cli("render", str(p), "-o", str(out))
                    finally:
                        check_no_partial(out.parent)
                        out.unlink(missing_ok=True)
                cases.append(Case("midi render", label, do_render))
    return cases


def corpus_cases(rng: random.Random, work: Path) -> list[Case]:
    """dataset build's reader: a folder with an info.csv listing mutated and broken rows."""
    from drummachine.corpus import build as corpus

    sources = midi_sources()
    folder = work / "corpus"
    folder.mkdir(exist_ok=True)
    src = rng.choice(sources)
    muts = midi_mutations(rng, src.read_bytes())
    header = "drummer,session,id,style,bpm,beat_type,time_signature,midi_filename,audio_filename,duration,split\n"
    rows = []
    for n, (name, data) in enumerate(rng.sample(muts, 6)):
        (folder / f"{n}.mid").write_bytes(data)
        rows.append(f"d1,d1/s1,d1/s1/{n},rock,120,beat,4-4,{n}.mid,,10,train\n")
    (folder / "good.mid").write_bytes(src.read_bytes())
    good = "d1,d1/s1,d1/s1/g,funk,120,beat,4-4,good.mid,,10,train\n"
    broken_rows = ["d1,d1/s1\n", "d1,d1/s1,x,rock,120,beat,4-4,missing.mid,,10,train\n",
                   "d1,d1/s1,x,rock,120,beat,4-4,,,10,train\n", "\"unterminated,quote\n", "\x00\x01\x02\n"]
    cases = []
    for label, text in [("mutated files", header + "".join(rows) + good),
                        ("broken rows", header + good + "".join(broken_rows)),
                        ("no header", "".join(rows)), ("empty index", ""),
                        ("index not UTF-8", header + "\xff\xfe".encode("latin-1").decode("latin-1") + good)]:
        def run(text=text):
            index = folder / "info.csv"
            index.write_bytes(text.encode("latin-1", "replace") if "\xff" in text else text.encode())
            corpus.build(folder)
        cases.append(Case("dataset build", label, run))
    return cases


# --- TOML presets -----------------------------------------------------------------------------------

HOSTILE_VALUES = ["-1", "0", "1e309", "-1e309", "nan", "inf", "true", "[]", "{}", "[1, 2]", '"x"', '""',
                  '"' + "x" * 5000 + '"', "99999999999999999999999", "1979-05-27T07:32:00Z", "07:32:00",
                  '"../../../etc/passwd"', '"\\u0000"', "{ a = 1 }", "[[1], [2]]", '"rock"', "3.5", "127", "128",
                  '"on"', '"cc"', "[" * 3000 + "]" * 3000]


def preset_sources() -> dict[str, list[Path]]:
    kinds = {k: sorted((PRESETS / k).glob("*.toml")) for k in ("songs", "setlists", "controllers", "notemaps")}
    kinds["styles"] = [PRESETS / "styles.toml"]
    return kinds


def toml_mutations(rng: random.Random, text: str) -> list[tuple[str, str]]:
    lines = text.splitlines()
    assigns = [i for i, line in enumerate(lines) if "=" in line and not line.lstrip().startswith("#")]
    out = []
    for _ in range(4):
        if assigns:
            i = rng.choice(assigns)
            key = lines[i].split("=", 1)[0]
            value = rng.choice(HOSTILE_VALUES)
            out.append((f"line {i + 1} = {value[:20]}", "\n".join(lines[:i] + [f"{key}= {value}"] + lines[i + 1:])))
    i = rng.randrange(len(lines)) if lines else 0
    j = rng.randrange(len(lines)) if lines else 0
    swapped = list(lines)
    if lines:
        swapped[i], swapped[j] = swapped[j], swapped[i]
    cut = rng.randrange(len(text) + 1)
    pos = rng.randrange(len(text) + 1)
    out += [
        ("line deleted", "\n".join(lines[:i] + lines[i + 1:])),
        ("line duplicated", "\n".join(lines[:i + 1] + lines[i:])),
        ("lines swapped", "\n".join(swapped)),
        ("truncated", text[:cut]),
        ("junk inserted", text[:pos] + "".join(rng.choice("[]{}=\"',.#\n\\ az09") for _ in range(12)) + text[pos:]),
        ("unknown key", "bogus_key = 1\n" + text),
        ("array of tables made a table", text.replace("[[", "[").replace("]]", "]")),
        ("empty", ""),
        ("only a comment", "# nothing\n"),
        ("nested too deep", "x = " + "[" * 5000 + "]" * 5000),
        ("top level not a table", "[[x]]\n" * 3),
    ]
    return out


def _preset_loader(kind: str):
    from drummachine.core.controller import PresetControl, controller_from_toml
    from drummachine.core.notemap import notemap_from_toml
    from drummachine.core.song import song_from_toml
    from drummachine.live import presets

    styles = tuple(presets.styles_from_toml(presets.read_text(PRESETS / "styles.toml"), "styles.toml"))

    def controller(text, path):
        preset = controller_from_toml(text, path)
        control = PresetControl(preset)  # what a loaded preset does next: answer messages
        for status in (0xB0, 0x90, 0x80, 0xC0):
            for number in range(0, 128, 7):
                control.handle([status, number, 127], 0.0)
                control.handle([status, number, 0], 0.1)
        control.tick(1.0)

    return {"songs": lambda t, p: song_from_toml(t, p, styles),
            "setlists": lambda t, p: presets.setlist_from_toml(t, p, presets.names("songs")),
            "styles": lambda t, p: presets.styles_from_toml(t, p, styles),
            "controllers": controller,
            "notemaps": notemap_from_toml}[kind]


def _preset_file_loader(kind: str):
    from drummachine.core.notemap import load_notemap
    from drummachine.core.song import load_song
    from drummachine.live import presets

    return {"songs": load_song, "setlists": lambda p: presets.load_setlist(str(p)),
            "styles": lambda p: presets.styles_from_toml(presets.read_text(p), p),
            "controllers": lambda p: presets.load_controller(str(p)), "notemaps": load_notemap}[kind]


def preset_cases(rng: random.Random, work: Path) -> list[Case]:
    cases = []
    for kind, files in preset_sources().items():
        loader = _preset_loader(kind)
        file_loader = _preset_file_loader(kind)
        for src in files:
            text = src.read_text(encoding="utf-8")
            for name, mutated in toml_mutations(rng, text):
                cases.append(Case(f"preset {kind}", f"{src.name}: {name}",
                                  lambda t=mutated, p=src.name, f=loader: f(t, p)))
            # as files: bytes that are not UTF-8, a folder, a huge file
            raw = bytearray(text.encode())
            if raw:
                raw[rng.randrange(len(raw))] = rng.choice([0xFF, 0xC3, 0x80, 0xFE])
            bad = work / f"{kind}_{src.stem}_bad.toml"
            bad.write_bytes(bytes(raw))
            cases.append(Case(f"preset {kind}", f"{src.name}: a byte that is not UTF-8",
                              lambda p=bad, f=file_loader: f(p)))
        huge = work / f"{kind}_huge.toml"
        if not huge.exists():
            huge.write_bytes(b"# " + b"x" * 2_000_000 + b"\n")
        cases.append(Case(f"preset {kind}", "a 2 MB file", lambda p=huge, f=file_loader: f(p)))
        folder = work / f"{kind}_folder.toml"
        folder.mkdir(exist_ok=True)
        cases.append(Case(f"preset {kind}", "a folder named .toml", lambda p=folder, f=file_loader: f(p)))
    return cases


# --- the controller byte stream ---------------------------------------------------------------------

def controller_messages(rng: random.Random, n: int) -> list[list[int]]:
    """What a broken or hostile controller sends: unknown and truncated messages, SysEx, running
    status (data bytes with no status), note-on with velocity 0, real-time bytes in between."""
    makers = [
        lambda: [rng.randrange(256) for _ in range(rng.randint(0, 6))],  # anything
        lambda: [rng.choice([0xB0, 0x90, 0x80, 0xC0, 0xE0, 0xA0, 0xD0]) | rng.randrange(16)],  # truncated
        lambda: [0xB0 | rng.randrange(16), rng.randrange(128)],  # CC without its value
        lambda: [rng.randrange(128), rng.randrange(128)],  # running status: data bytes alone
        lambda: [0xF0] + [rng.randrange(128) for _ in range(rng.randint(0, 40))] + [0xF7],  # SysEx
        lambda: [0xF0, 0x7E],  # SysEx never ended
        lambda: [0x90 | rng.randrange(16), rng.randrange(128), 0],  # note-on velocity 0 (a note-off)
        lambda: [0x90 | rng.randrange(16), rng.randrange(128), rng.randrange(128)],
        lambda: [0xB0 | rng.randrange(16), rng.randrange(128), rng.randrange(128)],
        lambda: [0xC0 | rng.randrange(16), rng.randrange(128)],
        lambda: [rng.choice([0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF9, 0xFD])],
        lambda: [0xB0, 0xFF, 0xFF],  # data bytes with the high bit set
        lambda: [0xF2, 0x7F],  # song position, truncated
        lambda: [0x90, 0x24, 0x64, 0x26, 0x64],  # two notes in one message (running status)
    ]
    return [rng.choice(makers)() for _ in range(n)]


def controller_cases(rng: random.Random, n_messages: int = 2000) -> list[Case]:
    """Every shipped controller preset (on the default one), and the engine they drive: each
    message's commands go to a real engine on a manual clock (the stand-in generator)."""
    from drummachine.core.controller import PresetControl
    from drummachine.core.engine import Engine
    from drummachine.core.events import MemorySink
    from drummachine.core.fake_generator import FakeGenerator
    from drummachine.core.song import jam
    from drummachine.core.transport import ManualClock
    from drummachine.live import presets

    cases = []
    for name in presets.names("controllers"):
        messages = controller_messages(rng, n_messages)

        def run(name=name, messages=messages):
            warnings: list[str] = []
            clock = ManualClock(100.0)
            sink = MemorySink()
            engine = Engine(FakeGenerator(1), jam("rock", 110.0), clock, [sink])
            control = PresetControl(presets.controller_stack(name, warnings), lambda: engine.playing)
            engine.command("start")
            for n, message in enumerate(messages):
                for command in control.handle(message, clock.now()) + control.tick(clock.now()):
                    try:
                        engine.command(command.name, command.value)
                    except DrumMachineError:
                        pass  # a command the engine refuses (a song's cue in a jam): one line, dropped
                if n % 10 == 0:
                    engine.pump_generator()
                    engine.pump()
                    clock.advance(0.01)
            for _ in range(200):
                engine.pump_generator()
                engine.pump()
                clock.advance(0.01)
            if sum(engine.stats.faults.values()):
                raise AssertionError(f"the engine caught faults from controller commands: {engine.stats.faults}")
        cases.append(Case("controller bytes", f"{name}: {n_messages} messages", run))

    def callback_shapes():
        """rtmidi's callback with what a broken backend might hand it: never an exception out."""
        from drummachine.midi.midi_in import MidiInput

        got = []
        inp = MidiInput.__new__(MidiInput)  # the callback alone: no port is opened
        from drummachine.midi.ports import Faults
        from drummachine.core.transport import ManualClock as Clock
        inp.handler, inp.clock, inp.faults, inp.dropped = (lambda m, t: got.append(m)), Clock(0.0), Faults(), 0
        for event in [None, (), ([],), ([0x90, 36, 100], 0.0), ("abc", 0.0), ([0x90, 36, 300], 0.0),
                      ([0x90, -1, 5], 0.0), ([0xF0] * 100_000, 0.0), (None, None), 5]:
            inp._handle(event, 0.0)
        if inp.faults.count:
            raise AssertionError(f"{inp.faults.count} malformed events reached the handler and raised")
        if got != [[0x90, 36, 100], [0xF0] * 100_000] or inp.dropped != 8:
            raise AssertionError(f"what the handler got: {[g[:4] for g in got]}, {inp.dropped} dropped")
    cases.append(Case("controller bytes", "rtmidi callback, malformed events", callback_shapes))
    return cases


# --- command values: what a preset, the UI's socket (JSON) or a script may hand commands.parse -------

HOSTILE_COMMAND_VALUES = [None, True, False, 0, -1, 1, 7, 127, 128, 1e308, float("inf"), float("-inf"),
                          float("nan"), "", "x" * 10_000, "kick", "1", "../../x", [], {}, [1], {"a": 1}, 2 ** 70,
                          -2 ** 70, 0.5, (120.0, None), (1e9, 1.0), ("a", None), (120.0, "x")]


def command_cases(rng: random.Random) -> list[Case]:
    from drummachine.core import commands

    cases = []
    for name in commands.COMMANDS:
        values = rng.sample(HOSTILE_COMMAND_VALUES, 12) + [rng.uniform(-1e6, 1e6), rng.randint(-1000, 1000)]
        for value in values:
            cases.append(Case("command values", f"{name} {str(value)[:30]}",
                              lambda n=name, v=value: commands.parse(n, v)))
    return cases


# --- model files ------------------------------------------------------------------------------------

def model_cases(rng: random.Random, work: Path, structured: bool = True) -> list[Case]:
    """Truncated and bit-flipped copies of the shipped model, and (with the onnx package, a training
    dependency) wrong metadata, wrong shapes, NaN weights, external data and custom operators."""
    from drummachine.model.generator import Generator
    from drummachine.model.model_file import load_model

    data = MODEL.read_bytes()
    cases = []
    folder = work / "models"
    folder.mkdir(exist_ok=True)

    def loads(path):
        def run():
            gen = Generator(str(path), seed=0, loaded=load_model(path))
            gen.bar("rock" if "rock" in gen.styles else gen.styles[0], 110.0)  # accepted: it must also play
        return run

    variants: list[tuple[str, bytes]] = []
    for cut in sorted(rng.sample(range(1, len(data)), 4)) + [16, len(data) - 1]:
        variants.append((f"truncated at {cut}", data[:cut]))
    for k in range(3):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 30)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        variants.append((f"bit flips {k}", bytes(flipped)))
    variants += [("empty", b""), ("not a model", b"MThd" + bytes(rng.randrange(256) for _ in range(200)))]
    for name, blob in variants:
        path = folder / f"{len(cases)}.onnx"
        path.write_bytes(blob)
        cases.append(Case("model file", name, loads(path)))
    if structured:
        cases += _structured_model_cases(rng, folder, loads)
    return cases


def _structured_model_cases(rng, folder: Path, loads) -> list[Case]:
    try:
        import numpy as np
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        return []
    from drummachine.model.model_file import METADATA_KEY

    base = onnx.load(str(MODEL))
    meta = json.loads(next(p.value for p in base.metadata_props if p.key == METADATA_KEY))
    cases = []

    def variant(name, edit, sub=""):
        model = onnx.ModelProto()
        model.CopyFrom(base)
        where = folder / sub if sub else folder
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"s{len(cases)}.onnx"
        edit(model, path)
        path.write_bytes(model.SerializeToString())
        cases.append(Case("model file", name, loads(path)))

    def set_meta(value):
        def edit(model, path):
            for p in model.metadata_props:
                if p.key == METADATA_KEY:
                    p.value = value if isinstance(value, str) else json.dumps(value)
        return edit

    def meta_with(**changes):
        m = json.loads(json.dumps(meta))
        for k, v in changes.items():
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
        return m

    variant("metadata not JSON", set_meta("{not json"))
    variant("metadata a list", set_meta([1, 2]))
    variant("metadata nested too deep", set_meta("[" * 100_000 + "]" * 100_000))
    variant("metadata without config", set_meta(meta_with(config=None)))
    variant("config n_layer a string", set_meta(meta_with(config={**meta["config"], "n_layer": "4"})))
    variant("config n_layer 100", set_meta(meta_with(config={**meta["config"], "n_layer": 100})))
    variant("config n_head 3", set_meta(meta_with(config={**meta["config"], "n_head": 3})))
    variant("config vel_bins 0", set_meta(meta_with(config={**meta["config"], "vel_bins": 0})))
    variant("config vel_bins wrong", set_meta(meta_with(config={**meta["config"], "vel_bins": 15})))
    variant("config context huge", set_meta(meta_with(config={**meta["config"], "context": 10 ** 12})))
    variant("voices a string", set_meta(meta_with(voices="kick")))
    variant("voices of numbers", set_meta(meta_with(voices=[1, 2, 3])))
    variant("cont not a list", set_meta(meta_with(cont=5)))
    variant("conditioning missing", set_meta(meta_with(conditioning=None)))
    variant("conditioning a number", set_meta(meta_with(conditioning=7)))
    variant("conditioning styles empty", set_meta(meta_with(conditioning={**meta["conditioning"], "styles": []})))
    variant("conditioning quantiles junk", set_meta(meta_with(conditioning={**meta["conditioning"],
                                                                             "quantiles": "x"})))
    variant("voice_bias a list", set_meta(meta_with(voice_bias=[1, 2])))
    variant("velocity_tilt with NaN", set_meta(meta_with(velocity_tilt=[float("nan")] * 9)))
    variant("schema 2", set_meta(meta_with(schema=2)))

    def nan_weights(model, path):
        big = max(model.graph.initializer, key=lambda t: len(t.raw_data) if t.raw_data else 0)
        arr = numpy_helper.to_array(big).copy()
        if arr.dtype.kind == "f":
            arr.flat[rng.randrange(arr.size)] = np.nan
        big.CopyFrom(numpy_helper.from_array(arr, big.name))
        floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and
                  numpy_helper.to_array(t).size > 16]
        t = rng.choice(floats)
        a = numpy_helper.to_array(t).copy()
        a[...] = np.nan
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    variant("NaN weights", nan_weights)

    def inf_weights(model, path):
        floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and
                  numpy_helper.to_array(t).size > 16]
        t = floats[0]
        a = numpy_helper.to_array(t).copy()
        a[...] = np.inf
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    variant("infinite weights", inf_weights)

    def wrong_input_width(model, path):
        for i in model.graph.input:
            if i.name == "cont":
                i.type.tensor_type.shape.dim[-1].dim_value = 23
    variant("input cont 23 wide", wrong_input_width)

    def renamed_input(model, path):
        old = model.graph.input[0].name
        model.graph.input[0].name = "other"
        for node in model.graph.node:
            for k, name in enumerate(node.input):
                if name == old:
                    node.input[k] = "other"
    variant("input renamed", renamed_input)

    def dropped_output(model, path):
        del model.graph.output[-1]
    variant("an output dropped", dropped_output)

    def external(location, sub=""):
        def edit(model, path):
            floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.raw_data]
            t = floats[0]
            raw = t.raw_data
            target = (path.parent / location) if not Path(location).is_absolute() else Path(location)
            if not location.startswith("/etc"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(raw)
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
        return edit

    variant("external data outside the folder (..)", external("../outside.bin"), "ext1")
    variant("external data at an absolute path", external(str(folder / "abs.bin")), "ext2")
    variant("external data /etc/passwd", external("/etc/passwd"), "ext3")
    variant("external data beside the model (allowed)", external("weights.bin"), "ext4")
    variant("external data missing", lambda m, p: (external("gone.bin")(m, p), (p.parent / "gone.bin").unlink()),
            "ext5")

    def symlink_out(model, path):
        outside = folder / "secret.bin"
        external("../secret.bin")(model, path)  # writes the weights outside
        link = path.parent / "link.bin"
        if not link.exists():
            link.symlink_to(outside.resolve())
        for t in model.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = "link.bin"
    variant("external data through a symlink out", symlink_out, "ext6")

    def custom_op(model, path):
        model.graph.node.append(helper.make_node("Evil", [model.graph.output[0].name], ["evil_out"],
                                                 domain="com.example.evil"))
        model.graph.output.append(helper.make_tensor_value_info("evil_out", onnx.TensorProto.FLOAT, None))
        model.opset_import.append(helper.make_opsetid("com.example.evil", 1))
    variant("custom operator domain", custom_op)
    return cases


# --- the real command in a subprocess, memory bounded ----------------------------------------------

CLI_MEMORY_BYTES = 3 * 1024 ** 3  #: address space a command may take (the mix of a 30-minute render fits)


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CLI_MEMORY_BYTES, CLI_MEMORY_BYTES))


def subprocess_cases(rng: random.Random, work: Path, n: int = 3) -> list[Case]:
    """``drummachine info`` and ``render`` as a user runs them, on ``n`` mutated files: exit 0, or
    exit 2 with one line on stderr; no traceback, no half-written output, under 3 GB and 120 s."""
    import subprocess

    src = rng.choice(midi_sources())
    cases = []
    for name, data in rng.sample(midi_mutations(rng, src.read_bytes()), n):
        path = work / f"cli{len(cases)}.mid"
        path.write_bytes(data)
        for argv in (["info", str(path)], ["render", str(path), "-o", str(work / "cli.wav")]):
            def run(argv=argv):
                r = subprocess.run([sys.executable, "-m", "drummachine", *argv], capture_output=True, text=True,
                                   timeout=120, preexec_fn=_limit_memory)
                lines = r.stderr.strip().splitlines()
                check_no_partial(work)
                (work / "cli.wav").unlink(missing_ok=True)
                if "Traceback" in r.stderr or r.returncode not in (0, 2):
                    raise AssertionError(f"exit {r.returncode}: {r.stderr[-800:]}")
                if r.returncode == 2:
                    if len(lines) != 1 or not lines[0].startswith("drummachine: error: "):
                        raise AssertionError(f"exit 2 without one error line: {r.stderr!r}")
                    raise DrumMachineError("exit 2", lines[0][len("drummachine: error: "):])
            cases.append(Case(f"midi {argv[0]} (subprocess)", f"{src.name}: {name}", run))
    data = bytearray(MODEL.read_bytes())
    for _ in range(rng.randint(1, 20)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    model = work / "cli.onnx"
    model.write_bytes(bytes(data))

    def generate():
        r = subprocess.run([sys.executable, "-m", "drummachine", "generate", "--model", str(model), "--bars", "2",
                            "-o", str(work / "cli.mid")], capture_output=True, text=True, timeout=120,
                           preexec_fn=_limit_memory)
        check_no_partial(work)
        (work / "cli.mid").unlink(missing_ok=True)
        if "Traceback" in r.stderr or r.returncode not in (0, 2):
            raise AssertionError(f"exit {r.returncode}: {r.stderr[-800:]}")
        if r.returncode == 2:
            if r.stdout or r.stderr.count("\n") != 1:
                raise AssertionError(f"exit 2 with more than one line: {r.stdout!r} {r.stderr!r}")
            raise DrumMachineError("exit 2", r.stderr.strip())
    cases.append(Case("model generate (subprocess)", "bit flips", generate))
    return cases


# --- the controller input under load: python-rtmidi's callback against its queue --------------------

def midi_input_under_load(runs: int = 3, messages: int = 3000) -> dict:
    """On a running JACK server: one stand-in controller sends the hostile stream (about 1,000
    messages a second, no unterminated SysEx) to two inputs in this process while a thread does
    Python work (the engine's loops): one read through a callback as MidiInput does (python-rtmidi
    calls it in JACK's process thread, where it waits for the GIL), one through RtMidi's queue,
    read by a Python thread (JACK's thread never touches Python). Messages each got, per run."""
    import subprocess
    import threading

    import rtmidi

    rows = []
    for run in range(runs):
        by_callback, by_queue = [], []
        done = threading.Event()

        def handler(event, data=None):
            x = 0
            for i in range(2000):  # a handler's own work: the preset lookup, the command's checks
                x += i
            by_callback.append(event[0])

        cb = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, f"fuzz-callback-{run}")
        q = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, f"fuzz-queue-{run}", queue_size_limit=16384)
        for port in (cb, q):
            port.ignore_types(sysex=True, timing=False, active_sense=True)
        cb.set_callback(handler)
        cb.open_virtual_port("in")
        q.open_virtual_port("in")

        def read_queue():
            while not done.is_set():
                event = q.get_message()
                if event is None:
                    time.sleep(0.0005)
                    continue
                x = 0
                for i in range(2000):
                    x += i
                by_queue.append(event[0])

        def busy():
            while not done.is_set():
                x = 0
                for i in range(200_000):
                    x += i

        out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, f"fuzz-sender-{run}")
        out.open_virtual_port("out")
        time.sleep(0.2)
        for target in (f"fuzz-callback-{run}:in", f"fuzz-queue-{run}:in"):
            subprocess.run(["jack_connect", f"fuzz-sender-{run}:out", target], check=True)
        threads = [threading.Thread(target=f, daemon=True) for f in (read_queue, busy)]
        for t in threads:
            t.start()
        sent = 0
        for n, message in enumerate(controller_messages(random.Random(0), messages)):  # the same stream each run
            if message and message[0] == 0xF0 and message[-1] != 0xF7:
                continue
            try:
                out.send_message(message)
                sent += 1
            except (ValueError, TypeError):
                pass
            if n % 5 == 0:
                time.sleep(0.004)
        time.sleep(1.5)
        done.set()
        for t in threads:
            t.join(2)
        for port in (cb, q, out):
            port.close_port()
            port.delete()
        rows.append({"sent": sent, "callback": len(by_callback), "queue": len(by_queue),
                     "callback_same_as_queue": sorted(map(tuple, by_callback)) == sorted(map(tuple, by_queue))})
    return {"runs": rows}


# --- the run ----------------------------------------------------------------------------------------

def all_cases(rng: random.Random, work: Path, midi_files: int = 2, render: bool = True,
              structured_models: bool = True, controller_messages_per_preset: int = 2000) -> list[Case]:
    return (midi_cases(rng, work, midi_files, render) + corpus_cases(rng, work) + preset_cases(rng, work)
            + controller_cases(rng, controller_messages_per_preset) + command_cases(rng)
            + model_cases(rng, work, structured_models))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="run rounds of cases until this much time has passed")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "fuzz.json"))
    ap.add_argument("--midi-input", action="store_true", help="only measure the controller input under load "
                    "(needs a running JACK server) and write that JSON")
    args = ap.parse_args(argv)
    if args.midi_input:
        result = {"command": "python benchmarks/fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "midi_input_under_load": midi_input_under_load()}
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
        print(json.dumps(result["midi_input_under_load"]))
        return 0
    import logging

    logging.disable(logging.WARNING)  # the engine logs refused commands; the counts are the result here
    tally = Tally()
    t0 = time.monotonic()
    rounds = 0
    rng = random.Random(args.seed)
    while True:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            cases = all_cases(rng, Path(tmp), midi_files=3, structured_models=(rounds % 3 == 0))
            cases += subprocess_cases(rng, Path(tmp))
            for case in cases:
                started = time.monotonic()
                limit = 130.0 if "subprocess" in case.parser else RENDER_SECONDS if "render" in case.parser \
                    else CASE_SECONDS
                outcome, detail = run_case(case, limit)
                tally.add(case, outcome, detail, time.monotonic() - started)
                if time.monotonic() - t0 > args.seconds:
                    break
        rounds += 1
        print(f"round {rounds}: {sum(r['cases'] for r in tally.counts.values())} cases, "
              f"{len(tally.failures)} failures, {time.monotonic() - t0:.0f} s", file=sys.stderr)
        if time.monotonic() - t0 > args.seconds:
            break
    result = {
        "command": "python benchmarks/fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed, "seconds": round(time.monotonic() - t0, 1), "rounds": rounds,
        "midi_source": os.path.relpath(GROOVE if GROOVE.is_dir() else FIXTURES, ROOT),
        "per_parser": tally.counts,
        "total": {k: sum(r[k] for r in tally.counts.values()) for k in ("cases", REFUSED, ACCEPTED, FAILED)},
        "failures": tally.failures[:50],
        "peak_rss_mb_in_process": round(__import__("resource").getrusage(
            __import__("resource").RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    print(json.dumps(result["total"]))
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
