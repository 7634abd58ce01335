"""The path of beats in every Python process of a benchmark run (benchmarks/follow_jack_ab.py
--this-tightness): with DRUMMACHINE_BENCH_TIGHTNESS set and this folder on PYTHONPATH, the
runtime's tracker class is follow_path.PathTracker from interpreter start, so ``play`` and its
listening process use it without a switch in the runtime (the path is not shipped: docs/follow.md)."""

import os
import sys

_tightness = os.environ.get("DRUMMACHINE_BENCH_TIGHTNESS")
if _tightness:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import follow_path

    follow_path.install(float(_tightness))
