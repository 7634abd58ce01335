"""The one-step ONNX graph, three ways, side by side in one process, from the same weights
(models/groove.pt), each quantized to int8 the same way:

- ``stacked``: torch.onnx's export with the KV cache as one stacked tensor (model schema 2);
- ``traced``: torch.onnx's export with a key and a value tensor per layer (schema 3);
- ``fused``: training/step_graph.py, built node by node with ONNX Runtime's fused operators
  (MultiHeadAttention, SkipLayerNormalization), the same inputs and outputs as ``traced`` (what ships).

Two timings, interleaved in blocks so the host's drift falls on all alike: the bare ONNX Runtime
call, with the cache growing from 111 to 127 steps as the generator's does; and, for ``traced`` and
``fused``, a whole ``Generator.step`` (the call, the cache's slide and sampling with the shipped
corrections), as ``drummachine bench`` times it. It also checks that the graphs give the same logits.
Needs torch (the training extra). Usage: python benchmarks/step_graph.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def export_stacked(model, path: Path) -> None:
    """The schema-2 graph: past_k / past_v stacked over layers, (L, B, H, P, hd)."""
    import torch

    from training.export import example_inputs

    prev, cats, cont, cache = example_inputs(model.cfg)
    args = (prev, cats, cont, torch.stack(cache[0::2]), torch.stack(cache[1::2]))
    B, T, P = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("steps", min=1, max=4096), \
        torch.export.Dim("past", min=0, max=4096)
    shapes = ({0: B, 1: T}, {0: B, 1: T}, {0: B, 1: T}, {1: B, 3: P}, {1: B, 3: P})

    class Step(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, prev, cats, cont, past_k, past_v):
            return self.m(prev, cats, cont, past_k, past_v)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Step(model.eval()), args, str(path), dynamo=True,
                          input_names=["prev", "cats", "cont", "past_k", "past_v"],
                          output_names=["logits", "present_k", "present_v"], dynamic_shapes=shapes,
                          external_data=False, verbose=False)


def session(path: Path):
    import onnxruntime as ort

    from drummachine.model.model_file import session_options

    return ort.InferenceSession(str(path), sess_options=session_options(1), providers=["CPUExecutionProvider"])


def nodes_after_ort(path: Path, tmp: Path) -> int:
    """Nodes left after ONNX Runtime's own graph optimizations (what it runs each step)."""
    import onnx
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.optimized_model_filepath = str(tmp / f"{path.stem}.opt.onnx")
    o.log_severity_level = 3
    ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])
    return len(onnx.load(o.optimized_model_filepath).graph.node)


def summary(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "groove.pt"))
    ap.add_argument("--corrections-from", default=str(ROOT / "models" / "groove.int8.onnx"),
                    help="the model file whose sampling corrections the generator steps use")
    ap.add_argument("--blocks", type=int, default=15, help="blocks of 160 steps per graph, interleaved")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    from drummachine.model.generator import Generator
    from drummachine.model.model_file import cache_names
    from drummachine.core.sections import cues_for
    from training.export import export, quantize
    from training.train import load_checkpoint, model_from_checkpoint

    model, cfg, _ = model_from_checkpoint(load_checkpoint(args.checkpoint))
    L, H, hd = cfg.n_layer, cfg.n_head, cfg.d_model // cfg.n_head
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {}
        export_stacked(model, tmp / "stacked.fp32.onnx")
        quantize(tmp / "stacked.fp32.onnx", tmp / "stacked.int8.onnx")
        paths["stacked"] = tmp / "stacked.int8.onnx"
        for graph in ("traced", "fused"):
            paths[graph] = export(args.checkpoint, tmp / graph, corrections_from=args.corrections_from,
                                  graph=graph)[1]
        sessions = {name: session(p) for name, p in paths.items()}
        nodes = {name: nodes_after_ort(p, tmp) for name, p in paths.items()}
        generators = {name: Generator(str(paths[name]), seed=0, threads=1) for name in ("traced", "fused")}

    rng = np.random.default_rng(0)
    base = {"prev": rng.random((1, 1, 27), dtype=np.float32), "cats": np.array([[[1, 0, 0]]], np.int64),
            "cont": rng.random((1, 1, cfg.n_cont), dtype=np.float32)}

    def feed(name, k, v):
        if name == "stacked":
            return {**base, "past_k": k, "past_v": v}
        return {**base, **dict(zip(cache_names(L, "past"), [t[i] for i in range(L) for t in (k, v)]))}

    k = rng.standard_normal((L, 1, H, 120, hd), dtype=np.float32)
    v = rng.standard_normal((L, 1, H, 120, hd), dtype=np.float32)
    logits = {n: s.run(None, feed(n, k, v))[0] for n, s in sessions.items()}
    same = {n: float(np.abs(logits[n] - logits["traced"]).max()) for n in ("stacked", "fused")}
    # the cache grows from 111 to 127 steps, as the generator's does; contiguous arrays, as the
    # generator keeps them
    feeds = {name: [{key: np.ascontiguousarray(x) for key, x in feed(name, k[:, :, :, :n], v[:, :, :, :n]).items()}
                    for n in range(111, 128)] for name in sessions}
    gen0 = generators["fused"]
    cont = gen0.cond.cont(120.0, cues_for(gen0.cond, "rock" if "rock" in gen0.styles else "any", 0.6,
                                          cymbal="hats", voices=(("low_tom", "on"),)))
    step = {name: 0 for name in generators}
    for name, g in generators.items():  # warm up: fill the cache towards its working size
        for i in range(128):
            g.step(1, i % 16, (i // 16) % 4, cont)
        step[name] = 128
    bare: dict[str, list[float]] = {name: [] for name in sessions}
    steps: dict[str, list[float]] = {name: [] for name in generators}
    for _ in range(args.blocks):
        for name, s in sessions.items():
            for i in range(160):
                f = feeds[name][i % 17]
                t0 = time.perf_counter()
                s.run(None, f)
                bare[name].append(time.perf_counter() - t0)
        for name, g in generators.items():
            for _ in range(160):
                i = step[name]
                t0 = time.perf_counter()
                g.step(1, i % 16, (i // 16) % 4, cont)
                steps[name].append(time.perf_counter() - t0)
                step[name] = i + 1
    result = {"steps_per_graph": len(bare["traced"]), "max_abs_logit_difference_vs_traced": same,
              "nodes_after_ort": nodes,
              "bare_call": {name: summary(t) for name, t in bare.items()},
              "generator_step": {name: summary(t) for name, t in steps.items()}}
    p50 = {kind: {n: result[kind][n]["p50_ms"] for n in result[kind]} for kind in ("bare_call", "generator_step")}
    result["ratios_p50"] = {
        "bare_call_traced_over_stacked": round(p50["bare_call"]["traced"] / p50["bare_call"]["stacked"], 3),
        "bare_call_fused_over_traced": round(p50["bare_call"]["fused"] / p50["bare_call"]["traced"], 3),
        "generator_step_fused_over_traced": round(p50["generator_step"]["fused"] / p50["generator_step"]["traced"], 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
