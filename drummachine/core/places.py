"""Where things are: the data shipped inside the package, and the user's config folder.

The model files and the presets live in the repository's top-level ``models/`` and ``presets/``
and travel inside the wheel as the packages ``drummachine.data.models`` and
``drummachine.data.presets`` (pyproject's package-dir maps them), so one resolver finds them in
a source checkout, an editable install and an installed wheel alike.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

SHIPPED_PACKAGES = {"models": "drummachine.data.models", "presets": "drummachine.data.presets",
                    "examples": "drummachine.data"}


def shipped(kind: str, *parts: str) -> Path:
    """A path inside the shipped data of ``kind`` (models, presets, examples). Installs are plain
    folders (pip unpacks wheels), so the resource is a real path that ONNX Runtime can open."""
    return Path(str(files(SHIPPED_PACKAGES[kind]).joinpath(*parts)))


def user_dir() -> Path:
    """The user's own presets and learned mappings: ``$XDG_CONFIG_HOME/drummachine``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "drummachine"
