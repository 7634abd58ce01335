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
