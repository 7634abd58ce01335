"""Tuning the engine's process for real time: called by whoever starts an engine process (the
command line, the UI's engine host), not by the session, which only wires parts together."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys


def for_real_time() -> None:
    """Before the parts start: the audio callback runs in a process of its own, but the commit loop
    handing out steps and the MIDI threads still want the interpreter lock soon after they ask;
    glibc gives every thread its own malloc arena, and a handful of threads need only a couple."""
    sys.setswitchinterval(0.0005)
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-8, 2)  # M_ARENA_MAX


def settle() -> None:
    """After set-up: give back what loading took, and make garbage collections fewer and shorter
    (a collection holds the lock; everything built so far is frozen out of the collector's view)."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
