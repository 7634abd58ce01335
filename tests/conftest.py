from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "groove"
FULL_DATASET = Path(os.environ.get("DRUMMACHINE_GROOVE", ROOT.parent / "shared" / "data" / "groove"))


def fixture_midis() -> list[Path]:
    return sorted(FIXTURES.rglob("*.mid"))


@pytest.fixture(scope="session")
def full_dataset() -> Path:
    if not (FULL_DATASET / "info.csv").is_file():
        pytest.skip(f"no Groove MIDI Dataset at {FULL_DATASET}")
    return FULL_DATASET


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``drummachine`` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "drummachine", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def jack_server():
    """A real JACK server with the dummy backend (no sound card needed), started once for the run."""
    import shutil
    import time

    if not shutil.which("jackd"):
        pytest.skip("jackd is not installed (the README's set-up installs jackd2)")
    running = subprocess.run(["jack_wait", "-c"], capture_output=True, text=True).stdout
    proc = None
    if "not running" in running or not running:
        log = open(ROOT / ".pytest_cache" / "jackd.log", "w") if (ROOT / ".pytest_cache").is_dir() else \
            subprocess.DEVNULL
        proc = subprocess.Popen(["jackd", "-d", "dummy", "-r", "48000", "-p", "128"],
                                stdout=log, stderr=subprocess.STDOUT)
        r = subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, text=True)
        assert "available" in r.stdout, f"JACK did not start: {r.stdout} {r.stderr}"
        time.sleep(0.2)
    os.environ["DRUMMACHINE_MIDI_API"] = "jack"
    yield "jack"
    try:  # PortAudio must let go of JACK before the server goes, or it aborts at exit
        import sounddevice as sd

        sd._terminate()
    except Exception:
        pass
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)
