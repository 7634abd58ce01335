"""TOML files as the presets use them: parsed with one-line errors that name the file, line and key."""

from __future__ import annotations

import tomllib
from pathlib import Path

from drummachine.core.errors import DrumMachineError


def line_of(text: str, key: str) -> int | None:
    """1-based line of the first line that assigns ``key`` in TOML ``text`` (for messages)."""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(key) and stripped[len(key):].lstrip().startswith("="):
            return number
    return None


def where(path: str | Path, text: str | None = None, key: str | None = None) -> str:
    """``file:line (key)`` for an error message."""
    line = line_of(text, key) if (text is not None and key) else None
    place = f"{path}:{line}" if line else str(path)
    return f"{place} ({key})" if key else place


def parse_toml(text: str, path: str | Path) -> dict:
    """TOML text as a dict; syntax errors become one-line errors naming the file."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DrumMachineError(str(path), f"malformed TOML: {exc}") from None


def read_toml(path: str | Path) -> tuple[dict, str]:
    """Read and parse a TOML file; returns (data, text)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DrumMachineError(str(path), f"cannot read: {exc.__class__.__name__}: {exc}") from None
    return parse_toml(text, path), text
