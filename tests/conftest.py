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


# --- the one engine harness: an engine on a manual clock, a fake generator, a recording sink ---

SONG = """
name = "Test"
style = "rock"
bpm = 120
count_in = 1

[[sections]]
name = "intro"
bars = 2
fill_every = 0

[[sections]]
name = "verse"
bars = 0
fill_every = 0
"""


class Harness:
    """An engine driven by hand: ``run(seconds)`` pumps both loops on a manual clock (no sleeps)."""

    def __init__(self, song_text: str = SONG, gen=None, start: float = 100.0, **kw):
        from drummachine.core.engine import Engine
        from drummachine.core.events import MemorySink
        from drummachine.core.fake_generator import FakeGenerator
        from drummachine.core.song import song_from_toml
        from drummachine.core.transport import ManualClock

        self.clock = ManualClock(start)
        self.sink = MemorySink()
        self.song = song_from_toml(song_text, "test.toml", ("any", "rock", "funk"))
        self.engine = Engine(gen or FakeGenerator(), self.song, self.clock, [self.sink], **kw)

    def run(self, seconds: float, dt: float = 0.004, generate: bool = True) -> None:
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            if generate:
                self.engine.pump_generator()
            self.engine.pump()
            self.clock.advance(dt)

    def bar_notes(self, bar: int, voice: int | None = None):
        return [e for e in self.sink.notes() if e.step // 16 == bar and (voice is None or e.voice == voice)]


@pytest.fixture
def harness():
    """A factory: ``harness(song_text=..., gen=..., **engine options)`` -> Harness."""
    return Harness
