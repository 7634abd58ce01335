"""Installed the ordinary way — a wheel in a fresh virtual environment, outside the checkout — the
instrument finds its shipped model and presets and plays. (Regression: they were found through the
source tree, so an installed wheel stopped with "no such model file".)"""

import importlib.metadata
import subprocess
import sys
import zipfile

import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    where = tmp_path_factory.mktemp("wheel")
    # the installed setuptools builds the wheel when it can (71 and later need no `wheel` package);
    # otherwise pip fetches a build environment from the package index
    try:
        builds_here = int(importlib.metadata.version("setuptools").split(".")[0]) >= 71
    except (importlib.metadata.PackageNotFoundError, ValueError):
        builds_here = False
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *(["--no-build-isolation"] if builds_here
                    else []), "-w", str(where / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((where / "dist").glob("drummachine-*.whl"))
    # the dependencies come from this machine's environment; drummachine itself only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(where / "venv")], check=True)
    py = where / "venv" / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    return where, wheel, py


def test_the_wheel_carries_the_model_and_the_presets(installed):
    _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("drummachine/data/models/groove.int8.onnx", "drummachine/data/models/manifest.json",
                   "drummachine/data/models/performer.json",
                   "drummachine/data/presets/songs/highway_rock.toml",
                   "drummachine/data/presets/controllers/default.toml", "drummachine/data/demo.mid",
                   "drummachine/ui/app.tcss"):
        assert needed in names, needed
    assert not any(n.endswith(".pt") for n in names), "the torch checkpoint is not for the stage"


def test_installed_it_generates_and_plays_from_its_own_files(installed, jack_server):
    where, _, py = installed
    run = dict(capture_output=True, text=True, timeout=120, cwd=where)  # outside the checkout
    found = subprocess.run([str(py), "-c", "import drummachine, drummachine.model.model_file as m; "
                            "print(drummachine.__file__); print(m.DEFAULT_MODEL)"], **run)
    assert found.returncode == 0, found.stderr
    assert all(line.startswith(str(where / "venv")) for line in found.stdout.split()), found.stdout
    bin_ = where / "venv" / "bin" / "drummachine"
    gen = subprocess.run([str(bin_), "generate", "--style", "funk", "--bpm", "100", "--bars", "2", "-o", "g.mid"],
                         **run)
    assert gen.returncode == 0 and (where / "g.mid").stat().st_size > 100, gen.stderr
    play = subprocess.run([str(bin_), "play", "--headless", "--no-audio", "--midi-virtual", "--song", "highway_rock",
                           "--duration", "4", "--log", str(where / "play.log")], **run)
    assert play.returncode == 0, play.stderr
    assert "played" in play.stderr and " 0 steps" not in play.stderr, play.stderr
    assert "performer" not in play.stderr, "the performer travels in the wheel too"
