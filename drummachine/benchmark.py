"""``drummachine bench``: per-step and per-bar generation latency, model sizes, generator memory.

Engines side by side in one run, one thread each: torch eager fp32 (when torch is installed and
the weights file is there), ONNX Runtime fp32 and int8. A step is one model call with the KV cache
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

from .model_file import MODELS_DIR


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
    from .generator import Generator
    from .sections import cues_for

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


def torch_stepper(path: Path):
    """The same on the torch model, eager, with plain sampling: (step function, facts), or None
    without torch or the weights file."""
    try:
        import torch
    except ImportError:
        return None
    if not path.is_file():
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.model import GrooveTransformer, ModelConfig

    from .conditioning import Conditioning
    from .sampling import Steering, sample_step

    torch.set_num_threads(1)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ModelConfig(**ckpt["config"])
    model = GrooveTransformer(cfg).eval()
    model.load_state_dict(ckpt["model"])
    cond = Conditioning.from_json(ckpt["conditioning"])
    cont = torch.from_numpy(cond.cont(120.0, cond.defaults("any"))).view(1, 1, -1)
    rng = np.random.default_rng(0)
    past_k, past_v = model.empty_cache(1)
    state = {"i": 0, "k": past_k, "v": past_v, "prev": torch.zeros(1, 1, 27)}

    def step():
        with torch.inference_mode():
            i, past_k, past_v = state["i"], state["k"], state["v"]
            if past_k.shape[3] > cfg.context - 1:
                past_k, past_v = past_k[:, :, :, -(cfg.context - 1):], past_v[:, :, :, -(cfg.context - 1):]
            cats = torch.tensor([[[1, i % 16, (i // 16) % 4]]])
            logits, state["k"], state["v"] = model(state["prev"], cats, cont, past_k, past_v)
            hits, vel, off = sample_step(logits[0, 0].numpy(), cfg.vel_bins, Steering(), rng)
            state["prev"] = torch.from_numpy(np.concatenate([hits, vel, off]).astype(np.float32)).view(1, 1, 27)
            state["i"] = i + 1

    return step, {"file_mb": round(path.stat().st_size / 1e6, 3),
                  "parameters": sum(p.numel() for p in model.parameters())}


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
    code = ("from drummachine.generator import Generator; "
            f"g = Generator({str(path)!r}, seed=0); c = g.cond.cont(120.0, g.cond.defaults('any')); "
            "[g.step(0, i % 16, 0, c) for i in range(1600)]; " + hwm)
    base = "import numpy, onnxruntime; " + hwm
    peak = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    floor = int(subprocess.run([sys.executable, "-c", base], capture_output=True, text=True, check=True).stdout)
    return {"peak_rss_mb": round(peak / 1024, 1), "python_numpy_onnxruntime_only_mb": round(floor / 1024, 1),
            "generator_mb": round((peak - floor) / 1024, 1)}


def run(args) -> dict:
    folder = Path(args.model_dir) if args.model_dir else MODELS_DIR
    try:
        os.sched_setaffinity(0, {0})
    except (AttributeError, OSError):
        pass
    result = {"steps": args.steps, "cpu": os.cpu_count(), "threads": 1}
    steppers, facts = {}, {}
    made = torch_stepper(folder / "groove.pt")
    if made:
        steppers["torch_eager_fp32"], facts["torch_eager_fp32"] = made
    for name, file in (("onnx_fp32", "groove.fp32.onnx"), ("onnx_int8", "groove.int8.onnx")):
        if (folder / file).is_file():
            steppers[name], facts[name] = onnx_stepper(folder / file)
    times = interleaved({**steppers, "host_reference": reference_stepper()}, args.steps)
    ref = _percentiles(times.pop("host_reference"))
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
    if "memory" in r:
        m = r["memory"]
        lines.append(f"generator memory: peak RSS {m['peak_rss_mb']} MB ({m['generator_mb']} MB above python + "
                     f"numpy + onnxruntime)")
    return "\n".join(lines)
