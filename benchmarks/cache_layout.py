"""The KV cache's layout in the ONNX graph, side by side: one stacked tensor (model schema 2)
against a key and a value tensor per layer (schema 3, what ships).

Both graphs are exported here from the same weights (models/groove.pt) and quantized the same
way; one process then times the bare ONNX Runtime call of each, interleaved in blocks, with the
cache growing and sliding as the generator's does, and checks that both give the same logits.
Needs torch (the training extra). Usage: python benchmarks/cache_layout.py [--json OUT]
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

    o = ort.SessionOptions()  # as drummachine.model_file.load_model sets them
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.enable_cpu_mem_arena = False
    o.enable_mem_pattern = False
    o.log_severity_level = 3
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "groove.pt"))
    ap.add_argument("--blocks", type=int, default=15, help="blocks of steps per layout, interleaved")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    import onnx
    import onnxruntime as ort

    from drummachine.model_file import cache_names
    from training.export import export_onnx, quantize
    from training.train import load_checkpoint, model_from_checkpoint

    model, cfg, _ = model_from_checkpoint(load_checkpoint(args.checkpoint))
    L, H, hd = cfg.n_layer, cfg.n_head, cfg.d_model // cfg.n_head
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, export in (("stacked", export_stacked), ("per_layer", export_onnx)):
            fp32, int8 = Path(tmp) / f"{name}.fp32.onnx", Path(tmp) / f"{name}.int8.onnx"
            export(model, fp32)
            quantize(fp32, int8)
            paths[name] = int8
        sessions = {name: session(p) for name, p in paths.items()}
        nodes = {}
        for name, p in paths.items():  # nodes left after ONNX Runtime's own graph optimizations
            o = ort.SessionOptions()
            o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            o.optimized_model_filepath = str(Path(tmp) / f"{name}.opt.onnx")
            o.log_severity_level = 3
            ort.InferenceSession(str(p), sess_options=o, providers=["CPUExecutionProvider"])
            nodes[name] = len(onnx.load(o.optimized_model_filepath).graph.node)

    rng = np.random.default_rng(0)
    base = {"prev": rng.random((1, 1, 27), dtype=np.float32), "cats": np.array([[[1, 0, 0]]], np.int64),
            "cont": rng.random((1, 1, cfg.n_cont), dtype=np.float32)}

    def feed(name, k, v):
        if name == "stacked":
            return {**base, "past_k": k, "past_v": v}
        return {**base, **dict(zip(cache_names(L, "past"), [t[i] for i in range(L) for t in (k, v)]))}

    k = rng.standard_normal((L, 1, H, 120, hd), dtype=np.float32)
    v = rng.standard_normal((L, 1, H, 120, hd), dtype=np.float32)
    a, b = (sessions[n].run(None, feed(n, k, v))[0] for n in ("stacked", "per_layer"))
    same = float(np.abs(a - b).max())
    # the cache grows from 111 to 127 steps, then drops a bar, as the generator's does; contiguous
    # arrays, as the generator keeps them
    feeds = {name: [{key: np.ascontiguousarray(x) for key, x in feed(name, k[:, :, :, :n], v[:, :, :, :n]).items()}
                    for n in range(111, 128)] for name in sessions}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.blocks):
        for name, s in sessions.items():
            for i in range(160):
                f = feeds[name][i % 17]
                t0 = time.perf_counter()
                s.run(None, f)
                times[name].append(time.perf_counter() - t0)
    result = {"steps_per_layout": len(times["stacked"]), "max_abs_logit_difference": same, "nodes_after_ort": nodes}
    for name, t in times.items():
        ms = np.array(t) * 1e3
        result[name] = {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4)}
    result["per_layer_over_stacked_p50"] = round(result["per_layer"]["p50_ms"] / result["stacked"]["p50_ms"], 3)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
