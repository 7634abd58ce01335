"""The folder tree is the architecture: import rules read off the import graph of the package."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from .conftest import ROOT

PACKAGE = ROOT / "drummachine"
#: subpackage -> the other subpackages it may import (core imports none)
ALLOWED = {
    "core": set(),
    "model": {"core"},
    "audio": {"core"},
    "midi": {"core"},
    "corpus": {"core", "midi"},
    "listen": {"core", "audio"},  # audio.wire only: the mixer's shared block, whose kit tap it reads
    "live": {"core", "model", "audio", "midi"},
    "ui": {"core", "live"},
    "cli": {"core", "model", "audio", "midi", "live", "ui", "corpus", "listen"},
    "data": set(),
}
#: third-party libraries and the subpackages that may import each (the listening process opens its
#: own audio input: sounddevice, or JACK through JACK-Client's module ``jack``)
ONLY_IN = {"sounddevice": ("audio", "listen"), "jack": ("listen",), "mido": ("midi",), "rtmidi": ("midi",), "rtmixer": ("audio",),
           "onnxruntime": ("model",), "textual": ("ui",), "rich": ("ui",)}
NEVER = ("torch", "training")
#: the one exception: the developer commands (train, export, bench's torch column) reach into training/
TRAINING_ALLOWED_IN = {"drummachine.cli.model"}
CORE_THIRD_PARTY = {"numpy"}


def module_name(path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module a source file imports, at any depth (function-level imports too), absolute."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # "from pkg import module"
    return found


def violations(module: str, imported: set[str]) -> list[str]:
    """What breaks the layout's rules when ``module`` imports ``imported``."""
    parts = module.split(".")
    sub = parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else None
    bad = []
    stdlib = sys.stdlib_module_names
    for name in sorted(imported):
        top = name.split(".")[0]
        if top in NEVER and not (top == "training" and module in TRAINING_ALLOWED_IN):
            bad.append(f"{module} imports {name}: the runtime never imports torch or training/")
        elif top in ONLY_IN and sub not in ONLY_IN[top]:
            bad.append(f"{module} imports {name}: only {' or '.join('drummachine.' + p for p in ONLY_IN[top])} may")
        elif top == "drummachine" and sub is not None and len(name.split(".")) > 1:
            other = name.split(".")[1]
            if other in ALLOWED and other != sub and other not in ALLOWED.get(sub, set()):
                bad.append(f"{module} imports {name}: drummachine.{sub} may import only "
                           f"{sorted(ALLOWED[sub]) or 'no other subpackage'}")
        elif sub == "core" and top not in stdlib and top not in CORE_THIRD_PARTY and top != "drummachine":
            bad.append(f"{module} imports {name}: the core imports only the standard library and numpy")
    return bad


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), path


def test_every_module_keeps_the_import_rules():
    problems = []
    for name, path in modules():
        problems += violations(name, imports_of(path.read_text(), name, path.name == "__init__.py"))
    assert not problems, "\n".join(problems)


def test_every_module_lives_in_a_subpackage():
    loose = [name for name, path in modules() if path.parent == PACKAGE and path.stem not in ("__init__", "__main__")]
    assert not loose, f"modules outside a subpackage: {loose}"


@pytest.mark.parametrize("source, rule", [
    ("import sounddevice", "only drummachine.audio"),
    ("from drummachine.live.session import Session", "may import only"),
    ("import mido", "only drummachine.midi"),
    ("import scipy", "standard library and numpy"),
    ("import torch", "never imports torch"),
])
def test_the_rules_catch_a_core_module_that_breaks_them(source, rule):
    found = violations("drummachine.core.engine", imports_of(source, "drummachine.core.engine"))
    assert found and rule in found[0]


def test_relative_imports_are_resolved():
    assert "drummachine.audio.kit" in imports_of("from ..audio.kit import Kit", "drummachine.core.engine")
    assert violations("drummachine.core.engine", imports_of("from ..audio import kit", "drummachine.core.engine"))


def test_importing_the_core_loads_no_io_library():
    core = [name for name, path in modules() if name.startswith("drummachine.core")]
    code = (f"import sys\nfor m in {core!r}: __import__(m)\n"
            "print(','.join(m for m in ('mido', 'rtmidi', 'sounddevice', 'onnxruntime', 'textual', 'torch') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
