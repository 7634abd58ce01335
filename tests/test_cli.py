"""Bad input at the command line: one line naming the file, exit status 2, no traceback, no output."""

import shutil

import numpy as np
import pytest

from drummachine.core.groove import Meter, Notes
from drummachine.core.voices import VOICES
from drummachine.midi.files import write_midi
from drummachine.audio.wavfile import write_wav

from .conftest import FIXTURES, ROOT, run_cli

DEMO = ROOT / "drummachine" / "data" / "demo.mid"


def assert_clean_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert str(n) in lines[0], lines[0]


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("render", "info", "dataset"):
        assert cmd in r.stdout


def test_render_demo_and_info(tmp_path):
    out = tmp_path / "demo.wav"
    r = run_cli("render", "-o", out)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 100_000
    r = run_cli("info", DEMO, "--bars", "2")
    assert r.returncode == 0
    assert "SD |" in r.stdout and "120 bpm" in r.stdout


@pytest.fixture
def bad_files(tmp_path):
    good = DEMO.read_bytes()
    files = {
        "missing": tmp_path / "nope.mid",
        "truncated": tmp_path / "truncated.mid",
        "not_midi": tmp_path / "text.mid",
        "empty": tmp_path / "empty.mid",
    }
    files["truncated"].write_bytes(good[: len(good) // 3])
    files["not_midi"].write_text("this is not a MIDI file\n")
    files["empty"].write_bytes(b"")
    no_drums = tmp_path / "nodrums.mid"
    write_midi(no_drums, Notes(np.array([0, 480]), np.array([100, 101], np.int16), np.array([90, 90], np.int16), 480),
               120.0, Meter())
    files["no_drums"] = no_drums
    return files


@pytest.mark.parametrize("kind,needle", [("missing", "no such file"), ("truncated", "not a readable MIDI file"),
                                         ("not_midi", "not a readable MIDI file"),
                                         ("empty", "not a readable MIDI file"), ("no_drums", "no drum notes")])
@pytest.mark.parametrize("command", ["render", "info"])
def test_bad_midi(bad_files, tmp_path, kind, needle, command):
    path = bad_files[kind]
    out = tmp_path / "out.wav"
    args = [command, path] + (["-o", out] if command == "render" else [])
    r = run_cli(*args)
    assert_clean_error(r, path.name, needle)
    assert not out.exists()
    assert not list(tmp_path.glob("*.part"))


def test_kit_with_missing_or_bad_sample(tmp_path):
    kit = tmp_path / "kit"
    kit.mkdir()
    for v in VOICES[:-1]:
        write_wav(kit / f"{v.name}.wav", np.ones(100) * 0.3, 48000)
    out = tmp_path / "o.wav"
    assert_clean_error(run_cli("render", "-o", out, "--kit", kit), "ride.wav", "missing sample")
    (kit / "ride.wav").write_bytes(b"RIFF\x00\x00garbage")
    assert_clean_error(run_cli("render", "-o", out, "--kit", kit), "ride.wav", "not a readable PCM WAV")
    assert not out.exists()
    write_wav(kit / "ride.wav", np.ones(100) * 0.3, 22050)
    r = run_cli("render", "-o", out, "--kit", kit)
    assert r.returncode == 0, r.stderr


def test_output_folder_missing(tmp_path):
    assert_clean_error(run_cli("render", "-o", tmp_path / "no" / "x.wav"), "does not exist")
    r = run_cli("dataset", "build", "--data", FIXTURES, "--out", tmp_path / "no" / "x.npz")
    assert_clean_error(r, "does not exist")
    assert "performances" not in r.stdout + r.stderr  # said before the build, not after it


def test_dataset_build_skips_bad_files_and_reports(tmp_path):
    data = tmp_path / "groove"
    shutil.copytree(FIXTURES, data)
    victim = sorted(data.rglob("*fill*.mid"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    out = tmp_path / "ds.npz"
    r = run_cli("dataset", "build", "--data", data, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "files: 30 listed, 29 used, 1 skipped" in r.stdout
    assert victim.name in r.stdout and "not a readable MIDI file" in r.stdout
    assert out.exists()


def test_dataset_build_on_a_folder_without_index(tmp_path):
    out = tmp_path / "ds.npz"
    assert_clean_error(run_cli("dataset", "build", "--data", tmp_path, "--out", out), "info.csv")
    assert not out.exists()


def test_a_listen_gate_out_of_range_is_refused():
    r = run_cli("play", "--headless", "--listen", "band", "--listen-gate", "5")
    assert r.returncode == 2 and "--listen-gate" in r.stderr and "-100..0" in r.stderr
    assert "Traceback" not in r.stderr
