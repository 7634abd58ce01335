"""``drummachine bench``: per-step and per-bar generation latency, model sizes, generator memory.

Engines side by side in one run, one thread each: ONNX Runtime fp32 and int8, and torch eager fp32
when the developer command passes it in (training/bench_torch.py; the runtime never imports torch).
A step is one model call with the KV cache
plus sampling; a bar is 16 steps. The engines take turns, 160 steps at a time, so that a shared
host's drift over the run falls on all of them alike.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from drummachine.model.model_file import MODELS_DIR


def _percentiles(x) -> dict:
    x = np.asarray(x) * 1000.0
    return {"p50_ms": round(float(np.percentile(x, 50)), 4), "p99_ms": round(float(np.percentile(x, 99)), 4),
            "max_ms": round(float(x.max()), 4)}


def _bars(step_times, per_bar: int = 16):
    t = np.asarray(step_times)
    n = len(t) // per_bar
    return t[: n * per_bar].reshape(n, per_bar).sum(axis=1)


def onnx_stepper(path: Path):
    """One generator step at a time on an ONNX model file: (step function, facts)."""
    from drummachine.model.generator import Generator
    from drummachine.core.sections import cues_for

    gen = Generator(str(path), seed=0, threads=1)
    # what a song asks: hats keep time (the ride off), a floor tom in every bar (the per-step bias,
    # the palette's off and the floor that keeps its on all take their share of each step)
    cont = gen.cond.cont(120.0, cues_for(gen.cond, "rock" if "rock" in gen.styles else "any", 0.6, cymbal="hats",
                                         voices=(("low_tom", "on"),)))
    count = itertools.count()

    def step():
        i = next(count)
        gen.step(1, i % 16, (i // 16) % 4, cont)

    return step, {"file_mb": round(path.stat().st_size / 1e6, 3)}


def performer_stepper():
    """The performer planning one bar (what the conductor asks once a bar, off the real-time path),
    or None without the shipped table."""
    import json

    from drummachine.core.performer import Performer
    from drummachine.core.places import shipped

    path = shipped("models", "performer.json")
    if not path.is_file():
        return None
    performer = Performer(json.loads(path.read_text()), seed=0)
    state = {"bar": 0, "prev": None}

    def step():
        b = state["bar"]
        state["prev"] = performer.feel("rock", 120.0, 0, b, 0, False, state["prev"])
        state["bar"] = b + 1

    return step


def reference_stepper():
    """The same numpy work every call (40 small matrix-vector products): how much this host alone
    spreads a fixed job's time, to read the engines' tails against."""
    w = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32) / 12
    x0 = np.ones(128, np.float32)

    def step():
        x = x0
        for _ in range(40):
            x = np.tanh(w @ x)

    return step


def interleaved(steppers: dict, steps: int, block: int = 160, warmup: int = 128) -> dict[str, list[float]]:
    """Each stepper's step times, ``steps`` each, run in turns of ``block`` steps (a whole number of
    bars) so that the host's drift over the run falls on every engine alike; after ``warmup``
    steps each (which fill the cache to its working size)."""
    for step in steppers.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steppers}
    while any(len(t) < steps for t in times.values()):
        for name, step in steppers.items():
            t = times[name]
            for _ in range(min(block, steps - len(t))):
                t0 = time.perf_counter()
                step()
                t.append(time.perf_counter() - t0)
    return times


def generator_memory(path: Path) -> dict:
    """Peak RSS of a process that only loads the int8 generator and plays 100 bars."""
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's size (this one may hold torch)
    hwm = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    code = ("from drummachine.model.generator import Generator; "
            f"g = Generator({str(path)!r}, seed=0); c = g.cond.cont(120.0, g.cond.defaults('any')); "
            "[g.step(0, i % 16, 0, c) for i in range(1600)]; " + hwm)
    base = "import numpy, onnxruntime; " + hwm
    peak = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    floor = int(subprocess.run([sys.executable, "-c", base], capture_output=True, text=True, check=True).stdout)
    return {"peak_rss_mb": round(peak / 1024, 1), "python_numpy_onnxruntime_only_mb": round(floor / 1024, 1),
            "generator_mb": round((peak - floor) / 1024, 1)}


def run(args, more: dict | None = None) -> dict:
    """Time the ONNX engines (and ``more``: name -> (step function, facts), e.g. the torch model
    from training/bench_torch.py) side by side with the host reference."""
    folder = Path(args.model_dir) if args.model_dir else MODELS_DIR
    try:
        os.sched_setaffinity(0, {0})
    except (AttributeError, OSError):
        pass
    result = {"steps": args.steps, "cpu": os.cpu_count(), "threads": 1}
    steppers, facts = {}, {}
    for name, made in (more or {}).items():
        steppers[name], facts[name] = made
    for name, file in (("onnx_fp32", "groove.fp32.onnx"), ("onnx_int8", "groove.int8.onnx")):
        if (folder / file).is_file():
            steppers[name], facts[name] = onnx_stepper(folder / file)
    extra = {"host_reference": reference_stepper()}
    planner = performer_stepper()
    if planner is not None:
        extra["performer"] = planner
    times = interleaved({**steppers, **extra}, args.steps)
    ref = _percentiles(times.pop("host_reference"))
    if "performer" in times:
        result["performer_per_bar"] = {**_percentiles(times.pop("performer")),
                                       "what": "the performer planning one bar, in the same turns"}
    result["host_reference"] = {**ref, "p99_over_p50": round(ref["p99_ms"] / ref["p50_ms"], 2),
                                "what": "a fixed numpy job (40 matrix-vector products), timed in the same turns: "
                                        "the spread this host alone puts on a job that never changes"}
    engines = {name: {"step": _percentiles(t), "bar": _percentiles(_bars(t)), **facts[name]}
               for name, t in times.items()}
    result["engines"] = engines
    if "torch_eager_fp32" in engines and "onnx_int8" in engines:
        result["int8_speedup_vs_torch_eager_p50"] = round(
            engines["torch_eager_fp32"]["step"]["p50_ms"] / engines["onnx_int8"]["step"]["p50_ms"], 2)
    if (folder / "groove.int8.onnx").is_file():
        result["memory"] = generator_memory(folder / "groove.int8.onnx")
    return result


def format_bench(r: dict) -> str:
    lines = [f"{'engine':18s} {'step p50':>9s} {'step p99':>9s} {'bar p50':>9s} {'bar p99':>9s} {'file MB':>8s}"]
    for name, e in r["engines"].items():
        lines.append(f"{name:18s} {e['step']['p50_ms']:8.3f}ms {e['step']['p99_ms']:8.3f}ms "
                     f"{e['bar']['p50_ms']:8.3f}ms {e['bar']['p99_ms']:8.3f}ms {e['file_mb']:8.2f}")
    if "int8_speedup_vs_torch_eager_p50" in r:
        lines.append(f"int8 vs torch eager (step p50): {r['int8_speedup_vs_torch_eager_p50']}x faster")
    if "host_reference" in r:
        h = r["host_reference"]
        lines.append(f"host reference (a fixed numpy job): p50 {h['p50_ms']:.3f}ms p99 {h['p99_ms']:.3f}ms "
                     f"(p99/p50 {h['p99_over_p50']})")
    if "performer_per_bar" in r:
        p = r["performer_per_bar"]
        lines.append(f"performer, a bar's plan: p50 {p['p50_ms']:.3f}ms p99 {p['p99_ms']:.3f}ms (once a bar, off the "
                     "real-time path)")
    if "memory" in r:
        m = r["memory"]
        lines.append(f"generator memory: peak RSS {m['peak_rss_mb']} MB ({m['generator_mb']} MB above python + "
                     f"numpy + onnxruntime)")
    return "\n".join(lines)
