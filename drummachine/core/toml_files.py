"""TOML files as the presets use them: parsed with one-line errors that name the file, line and key."""

from __future__ import annotations

import tomllib
from pathlib import Path

from drummachine.core.errors import DrumMachineError

#: a preset is a page of text; anything far larger is not one (and is not read into memory whole)
MAX_TOML_BYTES = 1_000_000


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
    except RecursionError:  # tomllib nests arrays and inline tables by recursion: `a = [[[[...` ends here
        raise DrumMachineError(str(path), "malformed TOML: arrays or tables nested too deep") from None


def read_text(path: str | Path, what: str = "file") -> str:
    """A preset file's text: one line naming the file when it is missing, unreadable, not UTF-8
    or far too large for a preset (see MAX_TOML_BYTES)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TOML_BYTES + 1)
    except FileNotFoundError:
        raise DrumMachineError(str(path), f"no such {what}") from None
    except OSError as exc:
        raise DrumMachineError(str(path), f"cannot read: {exc.__class__.__name__}: {exc.strerror or exc}") from None
    if len(raw) > MAX_TOML_BYTES:
        raise DrumMachineError(str(path), f"too large for a preset; allowed: up to {MAX_TOML_BYTES / 1e6:g} MB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DrumMachineError(str(path), f"not UTF-8 text (byte {exc.start})") from None


def read_toml(path: str | Path) -> tuple[dict, str]:
    """Read and parse a TOML file; returns (data, text)."""
    text = read_text(path)
    return parse_toml(text, path), text
