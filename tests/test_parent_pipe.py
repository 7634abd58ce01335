"""A helper process leaves when its parent's pipe closes, even if its clean-up hangs."""

from __future__ import annotations

import subprocess
import sys
import time

from .conftest import ROOT

HUNG_CHILD = """
import sys, time
from drummachine.core.parent_pipe import end_with_parent
ended = end_with_parent(sys.stdin, grace_s=0.5, exit_code=3)
print("ready", flush=True)
ended.wait()
time.sleep(60)  # a stream's close that never returns (PortAudio on a JACK server that died)
"""


def test_a_child_whose_clean_up_hangs_leaves_within_the_grace_after_its_pipe_closes():
    child = subprocess.Popen([sys.executable, "-c", HUNG_CHILD], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        assert child.poll() is None, "alive while the pipe is open"
        closed = time.monotonic()
        child.stdin.close()  # as when the parent quits or is SIGKILLed
        code = child.wait(10)
        took = time.monotonic() - closed
    finally:
        if child.poll() is None:
            child.kill()
    assert code == 3 and 0.4 < took < 5.0, (code, took)
