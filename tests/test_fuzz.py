"""Hostile input, fuzzed (bounded, seeded): mutations of real files through every parser and loader.

The case makers and the runner are benchmarks/fuzz.py's (its long run writes counts per parser);
here each parser gets one seeded round, in seconds. Every case must end refused in one line or
accepted and working: never a traceback, a hang, a multi-line error or a half-written output.
Below the rounds, one regression test per defect the fuzzing found, and a sample of cases through
the real ``drummachine`` command in a subprocess (exit 2 and one line; memory bounded).
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from drummachine.core.errors import DrumMachineError

from .conftest import jack_probe

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("benchmarks_fuzz", ROOT / "benchmarks" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["benchmarks_fuzz"] = fuzz  # dataclasses look their module up there
_spec.loader.exec_module(fuzz)


def run_all(cases) -> dict:
    tally = fuzz.Tally()
    for case in cases:
        outcome, detail = fuzz.run_case(case)
        tally.add(case, outcome, detail)
    assert not tally.failures, "\n\n".join(f"{f['parser']}: {f['case']}\n{f['detail']}" for f in tally.failures)
    return tally.counts


# --- one seeded round per parser ------------------------------------------------------------------

def test_midi_files_through_info_and_render(tmp_path):
    counts = run_all(fuzz.midi_cases(random.Random(15), tmp_path, n_files=1, render=True, max_bytes=20_000,
                                     render_every=3))
    info = counts["midi info"]
    assert info["cases"] >= 40 and info["refused"] >= 20 and info["accepted"] >= 3, counts
    assert counts["midi render"]["accepted"] >= 1 and counts["midi render"]["refused"] >= 5, counts
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.wav"))


def test_dataset_build_reader(tmp_path):
    counts = run_all(fuzz.corpus_cases(random.Random(15), tmp_path))
    assert counts["dataset build"]["accepted"] >= 1 and counts["dataset build"]["refused"] >= 2, counts


def test_every_preset_kind(tmp_path):
    counts = run_all(fuzz.preset_cases(random.Random(15), tmp_path))
    for kind in ("songs", "setlists", "controllers", "notemaps", "styles"):
        row = counts[f"preset {kind}"]
        assert row["refused"] >= 5 and row["accepted"] >= 1, (kind, row)


def test_controller_byte_stream():
    counts = run_all(fuzz.controller_cases(random.Random(15), n_messages=1500))
    assert counts["controller bytes"]["accepted"] == counts["controller bytes"]["cases"] >= 5


def test_command_values():
    counts = run_all(fuzz.command_cases(random.Random(15)))
    assert counts["command values"]["refused"] >= 100 and counts["command values"]["accepted"] >= 10, counts


def test_model_files(tmp_path):
    pytest.importorskip("onnx")  # the structured cases are written with the onnx package (a [train] extra)
    counts = run_all(fuzz.model_cases(random.Random(15), tmp_path, structured=True))
    assert counts["model file"]["refused"] >= 30, counts


def test_the_runner_catches_what_it_must():
    """The fuzz runner itself: a traceback, a hang and a two-line error are failures."""
    def boom():
        raise KeyError("x")

    def hang():
        while True:
            pass

    def two_lines():
        raise DrumMachineError("here", "one\ntwo")

    for run in (boom, hang, two_lines):
        assert fuzz.run_case(fuzz.Case("t", run.__name__, run), seconds=0.3)[0] == fuzz.FAILED
    assert fuzz.run_case(fuzz.Case("t", "ok", lambda: None))[0] == fuzz.ACCEPTED


# --- regressions: each defect the fuzzing found ---------------------------------------------------

def _midi(tmp_path, name: str, body: bytes, header: bytes = b"\x00\x00\x00\x01\x01\xe0") -> Path:
    path = tmp_path / name
    path.write_bytes(b"MThd\x00\x00\x00\x06" + header + b"MTrk" + len(body).to_bytes(4, "big") + body)
    return path


NOTE = b"\x00\x99\x24\x64\x60\x99\x26\x64"
END = b"\x00\xff\x2f\x00"


def test_tempo_0_is_one_line_not_a_zero_division(tmp_path):
    """`drummachine info` on a file whose tempo is 0 ended in a ZeroDivisionError traceback."""
    path = _midi(tmp_path, "tempo0.mid", b"\x00\xff\x51\x03\x00\x00\x00" + NOTE + END)
    r = subprocess.run([sys.executable, "-m", "drummachine", "info", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"drummachine: error: {path}: tempo 0 at tick 0: not a tempo; allowed: " \
                               "1 to 16777215 microseconds per beat"


def test_limits_on_midi_files(tmp_path):
    from drummachine.midi.files import MAX_BARS, MAX_MIDI_BYTES, MAX_NOTES, read_midi

    million = _midi(tmp_path, "million.mid", b"\x00\x99\x24\x64" + b"\x01\x24\x64" * 1_000_000 + END)
    with pytest.raises(DrumMachineError, match=r"3\.0 MB is too large .* up to 1 MB"):
        read_midi(million)
    assert million.stat().st_size > MAX_MIDI_BYTES
    many = tmp_path / "many.mid"
    many.write_bytes(fuzz.notes_over_cap())
    with pytest.raises(DrumMachineError, match=f"more than {MAX_NOTES:,} notes"):
        read_midi(many)
    far = _midi(tmp_path, "far.mid", NOTE + b"\xff\xff\xff\x7f\x99\x24\x64" + END)  # 2^28 ticks later
    with pytest.raises(DrumMachineError, match=f"bars in; allowed: up to {MAX_BARS:,} bars"):
        read_midi(far)


def test_a_render_too_long_for_memory_is_refused_and_writes_nothing(tmp_path):
    """The slowest tempo (16.7 s a beat) made a 3-minute performance a 32-minute render: 2.2 GB of
    memory. Now: one line, exit 2, no output and no temporary file left."""
    slow = _midi(tmp_path, "slow.mid", b"\x00\xff\x51\x03\xff\xff\xff" + NOTE + b"\x83\x60\x99\x24\x64" * 60 + END,
                 header=b"\x00\x00\x00\x01\x00\x60")
    out = tmp_path / "out.wav"
    r = subprocess.run([sys.executable, "-m", "drummachine", "render", str(slow), "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "render takes up to 30 minutes" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow.mid"]


def test_toml_nested_too_deep_is_one_line():
    """tomllib recurses into nested arrays: `a = [[[[...` ended in a RecursionError traceback."""
    from drummachine.core.song import song_from_toml

    with pytest.raises(DrumMachineError, match="nested too deep"):
        song_from_toml("a = " + "[" * 5000 + "]" * 5000, "deep.toml")


@pytest.mark.parametrize("text,needle", [
    ('cymbal = { a = 1 }\n[[sections]]\nname = "v"', r"song\.toml:1 \(cymbal\): \{'a': 1\} is not allowed"),
    ('cymbal = [[1], [2]]\n[[sections]]\nname = "v"', r"\(cymbal\): \[\[1\], \[2\]\] is not allowed"),
    ('[[sections]]\nname = "v"\nkind = []', r"song\.toml:3 \(sections\[0\]\.kind\): unknown section kind \[\]"),
])
def test_a_song_value_of_the_wrong_type_is_one_line(text, needle):
    """A table or array where a cymbal or a section kind goes ended in `TypeError: unhashable type`."""
    from drummachine.core.song import song_from_toml

    with pytest.raises(DrumMachineError, match=needle):
        song_from_toml(text, "song.toml")


def test_a_controller_value_of_inf_is_one_line():
    """TOML's inf as a whole-number command's value ended in OverflowError (commands.parse's int())."""
    from drummachine.core.controller import controller_from_toml

    with pytest.raises(DrumMachineError, match=r"c\.toml:3 \(map\[0\]\.value\): inf is not a number"):
        controller_from_toml('[[map]]\ncc = 1\nvalue = inf\naction = "next"\n', "c.toml")


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("name", ["next", "program", "tempo"])
def test_commands_refuse_infinity_in_one_line(name, value):
    """commands.parse, the boundary every command crosses (controller presets, the UI's socket, whose
    JSON has Infinity): a whole-number command given inf ended in OverflowError."""
    from drummachine.core import commands

    with pytest.raises(DrumMachineError, match=f"command {name}: .* not a number"):
        commands.parse(name, value)


def test_preset_files_that_are_not_text(tmp_path):
    """A controller or setlist file with a byte that is not UTF-8 ended in a UnicodeDecodeError
    traceback (songs and note maps said so in one line; now all of them do, through one reader)."""
    from drummachine.core.notemap import load_notemap
    from drummachine.core.song import load_song
    from drummachine.live.presets import load_controller, load_setlist

    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'name = "\xff"\n')
    for load in (load_controller, load_setlist, load_song, load_notemap):
        with pytest.raises(DrumMachineError, match=r"bad\.toml: not UTF-8 text \(byte 8\)"):
            load(str(bad))
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 1_000_001)
    with pytest.raises(DrumMachineError, match="too large for a preset"):
        load_song(big)


def test_dataset_index_short_rows_and_bytes(tmp_path):
    """A short row of info.csv ended in a TypeError (None / path), an index that is not UTF-8 in a
    UnicodeDecodeError: now a short row is skipped with its reason, a bad index is one line."""
    from drummachine.corpus.build import build

    src = sorted(fuzz.midi_sources())[0]
    (tmp_path / "a.mid").write_bytes(src.read_bytes())
    header = "drummer,session,id,style,bpm,beat_type,time_signature,midi_filename,audio_filename,duration,split\n"
    (tmp_path / "info.csv").write_text(header + "d1,s1,1,rock,120,beat,4-4,a.mid,,1,train\nd1,s1\n")
    _, report = build(tmp_path)
    assert report.used == 1 and report.skipped == [("info.csv row 3", "row without beat_type, bpm, midi_filename, "
                                                    "split, style, time_signature")]
    (tmp_path / "info.csv").write_bytes(header.encode() + b"\xff\xfe\n")
    with pytest.raises(DrumMachineError, match="not UTF-8 text"):
        build(tmp_path)


def test_model_metadata_of_the_wrong_type(tmp_path):
    """Metadata that is a JSON list, or a config with a string, ended in AttributeError/ValueError
    tracebacks in load_model or the generator: now one line naming what."""
    onnx = pytest.importorskip("onnx")
    from drummachine.model.model_file import METADATA_KEY, load_model

    base = onnx.load(str(fuzz.MODEL))
    for value, needle in (("[1, 2]", "must be a JSON object"), ('{"schema": 3, "voices": 5}', "model voices 5")):
        for p in base.metadata_props:
            if p.key == METADATA_KEY:
                p.value = value
        path = tmp_path / "m.onnx"
        path.write_bytes(base.SerializeToString())
        with pytest.raises(DrumMachineError, match=needle):
            load_model(path)


def test_model_metadata_that_is_not_utf8(tmp_path):
    """A damaged byte in the metadata (found by the long run's bit flips) ended in a
    UnicodeDecodeError traceback out of ONNX Runtime's get_modelmeta()."""
    from drummachine.model.model_file import load_model

    data = bytearray(fuzz.MODEL.read_bytes())
    at = data.index(b'"schema"')  # inside the drummachine metadata's JSON
    data[at + 1] = 0xF0  # a 4-byte UTF-8 lead with no continuation
    path = tmp_path / "m.onnx"
    path.write_bytes(bytes(data))
    with pytest.raises(DrumMachineError, match=r"the model's metadata is not UTF-8 text \(byte \d+\)"):
        load_model(path)


def test_a_damaged_model_is_one_line_and_nothing_on_stdout(tmp_path):
    """A damaged name in a model file (invalid UTF-8) made ONNX Runtime's wrapper print four lines
    of "EP Error ... Falling back ... retrying" to stdout before the one error line."""
    data = bytearray(fuzz.MODEL.read_bytes())
    at = data.index(b"step_in")  # a node name
    data[at + 1] = 0xF3
    path = tmp_path / "damaged.onnx"
    path.write_bytes(bytes(data))
    r = subprocess.run([sys.executable, "-m", "drummachine", "generate", "--model", str(path), "--bars", "1",
                        "-o", str(tmp_path / "g.mid")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith(f"drummachine: error: {path}: not a readable ONNX model")
    assert not (tmp_path / "g.mid").exists()


def test_garbage_from_the_midi_backend_is_dropped_without_a_traceback(caplog):
    """A malformed callback event (not (bytes, delta)) was logged as a fault with its traceback."""
    from drummachine.core.transport import ManualClock
    from drummachine.midi.midi_in import MidiInput
    from drummachine.midi.ports import Faults

    got = []
    inp = MidiInput.__new__(MidiInput)
    inp.handler, inp.clock, inp.faults, inp.dropped = (lambda m, t: got.append(m)), ManualClock(0.0), Faults(), 0
    for event in (None, (), ([0x90, 300, 1], 0.0), ([0xB0, 7, 100], 0.001)):
        inp._handle(event, 0.0)
    assert got == [[0xB0, 7, 100]] and inp.dropped == 3 and inp.faults.count == 0
    assert "Traceback" not in caplog.text


def test_a_read_of_several_messages_times_each_by_the_gaps_rtmidi_measured():
    from drummachine.core.transport import ManualClock
    from drummachine.midi.midi_in import MidiInput
    from drummachine.midi.ports import Faults

    got = []
    inp = MidiInput.__new__(MidiInput)
    inp.handler, inp.clock, inp.faults, inp.dropped = (lambda m, t: got.append((m[1], t))), ManualClock(10.0), Faults(), 0
    inp._deliver([([0xB0, 1, 1], 0.0), ([0xB0, 2, 1], 0.02), (None, None), ([0xB0, 3, 1], 0.01)])
    assert [m for m, _ in got] == [1, 2, 3] and inp.dropped == 1
    assert [round(t, 6) for _, t in got] == [9.97, 9.99, 10.0]


# --- outputs: written whole or not at all -----------------------------------------------------------

def test_atomic_write_leaves_nothing_half_written_and_a_normal_mode(tmp_path):
    from drummachine.midi.files import atomic_write

    target = tmp_path / "out.bin"
    target.write_bytes(b"before")

    def dies_half_way(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, dies_half_way)
    assert target.read_bytes() == b"before" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    # mkstemp's 0600 is not what a rendered file should get: the umask's mode, like any new file
    new = tmp_path / "new.bin"
    old = os.umask(0o022)
    try:
        atomic_write(new, lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(new.stat().st_mode) == 0o644


WRITES = re.compile(r"""open\(.*["'](w|wb|a|ab|x|xb|w\+|wb\+)["']|\.write_text\(|\.write_bytes\(|savez|"""
                    r"""np\.save\(|\.tofile\(|soundfile\.write|sf\.write""")


def test_every_output_goes_through_atomic_write():
    """Every file the runtime writes is written then renamed: a write is to a temporary file
    (``tmp``) in a module that renames it into place, or inside a writer that atomic_write calls;
    the listed exceptions say why."""
    writers = {("audio/wavfile.py", 'wave.open(str(path), "wb")'),  # write_wav: render calls it via atomic_write
               ("corpus/dataset.py", "np.savez_compressed")}  # Dataset.save: dataset build, via atomic_write
    appended = {("live/session.py", 'open(opts.midi_schedule, "a")')}  # a log written as it goes, not an output
    for path in (ROOT / "drummachine").rglob("*.py"):
        rel = path.relative_to(ROOT / "drummachine").as_posix()
        text = path.read_text()
        renames = "os.replace(" in text or ".replace(path)" in text or "atomic_write" in text
        for line in text.splitlines():
            code = line.split("#")[0]
            if not WRITES.search(code):
                continue
            to_tmp = re.search(r"\btmp\b", code) is not None
            listed = any(a[0] == rel and a[1] in code for a in writers | appended)
            assert listed or (to_tmp and renames), f"{rel}: {line.strip()} writes a file without write-then-rename"


# --- a sample through the real command, memory bounded ---------------------------------------------

def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (3 * 1024 ** 3, 3 * 1024 ** 3))


@pytest.mark.parametrize("mutation", ["a million notes", "enormous delta times, many", "running status with no "
                                      "status", "SMPTE division"])
def test_real_command_on_hostile_midi(tmp_path, mutation):
    src = fuzz.midi_sources()[3]
    data = dict(fuzz.midi_mutations(random.Random(1), src.read_bytes()))[mutation]
    path = tmp_path / "in.mid"
    path.write_bytes(data)
    for argv in (["info", str(path)], ["render", str(path), "-o", str(tmp_path / "out.wav")]):
        r = subprocess.run([sys.executable, "-m", "drummachine", *argv], capture_output=True, text=True,
                           timeout=120, preexec_fn=_limited)
        assert "Traceback" not in r.stderr, r.stderr
        assert r.returncode in (0, 2), (argv, r.returncode, r.stderr)
        if r.returncode == 2:
            assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"drummachine: error: {path}"), r.stderr
        assert not list(tmp_path.glob(".*.part"))


# --- the controller byte stream over a real JACK MIDI port -----------------------------------------

def test_hostile_controller_over_jack_midi(jack_server):
    """A stand-in controller on a real JACK server sends 1,500 hostile messages (truncated,
    unknown, running status, SysEx, note-on velocity 0, real-time bytes; not the unterminated SysEx
    of the next test) with a known CC (tempo_up
    on channel 16) every tenth, about 1,000 a second: the input's callback never faults, every known CC gets through and
    becomes its command, and the engine it drives plays on with no fault."""
    import time

    import rtmidi

    from drummachine.core.controller import PresetControl
    from drummachine.core.engine import Engine
    from drummachine.core.events import MemorySink
    from drummachine.core.fake_generator import FakeGenerator
    from drummachine.core.song import jam
    from drummachine.core.transport import ManualClock
    from drummachine.live.presets import controller_stack
    from drummachine.midi.midi_in import MidiInput
    from drummachine.midi.ports import find_port

    clock = ManualClock(10.0)
    sink = MemorySink()
    engine = Engine(FakeGenerator(3), jam("rock", 100.0), clock, [sink])
    control = PresetControl(controller_stack(None, []), lambda: engine.playing)
    marker = [0xBF, 80, 1]  # CC 80 on channel 16: tempo_up by 1 in the default preset
    received, commands = [], []

    def handler(message, t):
        received.append(message)
        for command in control.handle(message, t):
            commands.append(command.name)
            engine.command(command.name, command.value)

    inp = MidiInput("jack", None, handler, clock, label="fuzz in")
    sender = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "fuzz-controller")
    # a plain JACK-Client recorder on the same output: what a JACK MIDI input gets from this sender
    # on this machine at this moment (a loaded host can drop or split an event before any input sees it)
    ref = jack_probe().RecorderProcess("fuzz-reference", port="ref")
    try:
        assert inp.connected, inp.message
        sender.open_port(find_port(sender.get_ports(), "fuzz in", "fuzz in"), "out")
        ports = subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout.split("\n")
        out_port = next(p for p in ports if p.startswith("fuzz-controller") and p.endswith(":out"))
        subprocess.run(["jack_connect", out_port, ref.name], check=True)
        rng = random.Random(15)
        sent_markers = 0
        engine.command("start")
        for n, message in enumerate(fuzz.controller_messages(rng, 1500)):
            if n % 10 == 0:
                sender.send_message(marker)
                sent_markers += 1
            if message and message[0] == 0xF0 and message[-1] != 0xF7:
                continue  # an unterminated SysEx deafens rtmidi's JACK input: the xfail test below
            try:
                sender.send_message(message)
                sent_markers += message == marker  # the dice made one too
            except (ValueError, TypeError):
                pass  # rtmidi refuses it before it leaves (empty, over 3 bytes without SysEx)
            if n % 5 == 0:
                time.sleep(0.004)  # bursts of about 1,000 messages a second, as a stamping foot's storm
            if n % 50 == 0:
                engine.pump_generator()
                engine.pump()
                clock.advance(0.05)
        deadline = time.monotonic() + 3.0
        while received.count(marker) < sent_markers and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(100):
            engine.pump_generator()
            engine.pump()
            clock.advance(0.02)
        reference = [data for _, _, _, data, _ in ref.events if data[0] not in (0xF0, 0xFE)]  # as the input ignores
    finally:
        sender.close_port()
        sender.delete()
        ref.close()
        inp.close()
    reference = [data for _, _, _, data, _ in ref.events if data[0] not in (0xF0, 0xFE)]  # as the input ignores
    # what the reference recorder got is what was delivered (python-rtmidi's callback input, which
    # waits for the GIL in JACK's thread, lost or repeated a few under load in benchmarks/fuzz.py
    # --midi-input). Within 1% of it; where the reference itself missed periods (a host stall),
    # the input lost no more than it did
    assert abs(len(received) - len(reference)) <= 0.01 * len(reference) or \
        0 < ref.skipped and len(received) >= 0.99 * len(reference), (len(received), len(reference), ref.skipped)
    # and the known CCs came through (a loaded host has lost one or two before any input saw them)
    assert received.count(marker) >= 0.98 * sent_markers and sent_markers >= 150
    assert commands.count("tempo_up") >= received.count(marker)
    assert inp.faults.count == 0 and sum(engine.stats.faults.values()) == 0, engine.stats.faults
    assert len(received) > 1000 and sink.notes(), "the engine played on"


def _rtmidi_reads_jack_midi() -> bool:
    from drummachine.midi.ports import own_jack_client

    return not own_jack_client("jack")


# drummachine's own JACK client (midi/jack_midi.py) reads each JACK event as one message: it passes
@pytest.mark.xfail(_rtmidi_reads_jack_midi(), strict=True,
                   reason="python-rtmidi 1.5.8's JACK input appends every event after a SysEx "
                   "that never ends (F0 without F7) to that SysEx until an F7 comes: the controller is deaf "
                   "meanwhile (and the held bytes grow). Not fixable from our side of rtmidi's queue; needs our own JACK "
                   "MIDI reader (built: midi/jack_midi.c) or an rtmidi fix")
def test_an_unterminated_sysex_does_not_deafen_the_controller(jack_server):
    import time

    import rtmidi

    from drummachine.core.transport import ManualClock
    from drummachine.midi.midi_in import MidiInput
    from drummachine.midi.ports import find_port

    received = []
    inp = MidiInput("jack", None, lambda m, t: received.append(m), ManualClock(0.0), label="sysex in")
    sender = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "sysex-controller")
    try:
        sender.open_port(find_port(sender.get_ports(), "sysex in", "sysex in"))
        sender.send_message([0xF0, 0x7E])  # a dump cut off: the cable pulled mid-SysEx
        time.sleep(0.05)
        for _ in range(20):
            sender.send_message([0xB0, 80, 1])
            time.sleep(0.003)
        time.sleep(0.3)
    finally:
        sender.close_port()
        sender.delete()
        inp.close()
    assert received.count([0xB0, 80, 1]) == 20


# --- while playing: a bad item is skipped with a notice, the groove goes on ------------------------

def test_while_playing_hostile_songs_and_bytes_are_skipped(tmp_path, monkeypatch, caplog):
    """The real Session (stand-in model, recording sink, manual clock): a setlist of mutated song
    files is stepped through by program change while playing, and 3,000 hostile controller
    messages arrive through the session's own MIDI handler (MIDI learn armed for part of them).
    Each broken song is one warning and is skipped; nothing faults; every bar keeps playing."""
    import logging

    from drummachine.core.events import MemorySink
    from drummachine.core.transport import ManualClock
    from drummachine.live.session import Options, Session

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    rng = random.Random(15)
    good = (fuzz.PRESETS / "songs" / "slow_funk.toml").read_text()
    songs = []
    for n, (name, text) in enumerate(fuzz.toml_mutations(rng, good)):
        path = tmp_path / f"song{n}.toml"
        path.write_text(text)
        songs.append(str(path))
    bad = tmp_path / "bytes.toml"
    bad.write_bytes(b"\xff\xfe" + good.encode())
    songs += [str(bad), "../../etc/passwd", "highway_rock"]
    clock, sink = ManualClock(10.0), MemorySink()
    s = Session(Options(fake_model=True, audio=False, setlist=["slow_funk"] + songs, song="slow_funk"),
                sinks=[sink], clock=clock)

    def run(seconds, dt=0.02):
        for _ in range(int(seconds / dt)):
            s.poll()
            s.engine.pump_generator()
            s.engine.pump()
            clock.advance(dt)

    s.command("start")
    run(2.0)
    caplog.set_level(logging.WARNING, logger="drummachine")
    messages = fuzz.controller_messages(rng, 3000)
    for k in range(1, len(songs) + 1):
        s.on_midi([0xC0, k], clock.now())  # program change k: the setlist's song k+1
        run(0.5)
    for n, message in enumerate(messages):
        if n == 1000:
            s.learning = "fill"  # MIDI learn armed: the next control message is bound
        s.on_midi(message, clock.now())
        if n % 20 == 0:
            run(0.05)
    # the storm held stops, pauses and outros (a musician's own cues): stop, start, and it must play
    s.on_midi([0xFC], clock.now())
    run(0.5)
    played_before = len(sink.notes())
    s.on_midi([0xFA], clock.now())
    run(6.0)
    refused = [r for r in caplog.records if r.levelno == logging.WARNING and ("song" in r.getMessage() or
                                                                               ".toml" in r.getMessage())]
    assert len(refused) >= 10, [r.getMessage() for r in caplog.records][:20]
    assert any("bytes.toml: not UTF-8 text" in r.getMessage() for r in refused)
    assert any("../../etc/passwd: a song file must end in .toml" in r.getMessage() for r in refused)
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert sum(s.engine.stats.faults.values()) == 0, s.engine.stats.faults
    assert s.engine.playing and len(sink.notes()) - played_before >= 20, "it plays on after the storm"
    assert s.learned, "MIDI learn took a control from the storm"
