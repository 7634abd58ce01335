"""The pure core imports only the standard library and numpy."""

import subprocess
import sys

import pytest

CORE = ["errors", "kit", "groove", "attributes", "dataset", "drumkit", "mixer", "wavfile", "grid", "conditioning",
        "sampling", "sections", "baselines", "evaluation", "windows", "song", "transport", "conductor", "engine",
        "fake_generator", "controller"]
FORBIDDEN = ["mido", "rtmidi", "sounddevice", "onnxruntime", "textual", "torch"]


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io_library(module):
    code = (f"import sys, drummachine.{module}; "
            f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]; print(','.join(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"drummachine.{module} pulls in {r.stdout.strip()}"
