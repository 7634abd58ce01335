"""Checkpoint -> ONNX (one step per token with a KV cache) -> int8, with the runtime's metadata.

``python -m training.export CHECKPOINT --out models/groove`` writes ``groove.fp32.onnx`` and
``groove.int8.onnx``. The model's config, voice map, conditioning vocabulary and tables travel in
the ONNX metadata under the key ``drummachine`` (JSON), checked against the runtime's schema.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from drummachine.core.voices import VOICES
from drummachine.model.model_file import METADATA_KEY, SCHEMA_VERSION, cache_names

from .model import CONT_NAMES, GrooveTransformer, ModelConfig
from .train import entry, load_checkpoint, model_from_checkpoint


def inputs(n_layer: int) -> list[str]:
    return ["prev", "cats", "cont"] + cache_names(n_layer, "past")


def outputs(n_layer: int) -> list[str]:
    return ["logits"] + cache_names(n_layer, "present")


def example_inputs(cfg: ModelConfig, batch: int = 2, steps: int = 3, past: int = 4):
    """Inputs where every dynamic dimension is at least 2 and all differ (exporter pitfall):
    prev, cats, cont and the cache as (k0, v0, k1, v1, ...), each (batch, heads, past, head dim)."""
    hd = cfg.d_model // cfg.n_head
    g = torch.Generator().manual_seed(0)
    prev = torch.rand(batch, steps, 27, generator=g)
    cats = torch.zeros(batch, steps, 3, dtype=torch.int64)
    cont = torch.rand(batch, steps, cfg.n_cont, generator=g)
    cache = tuple(torch.randn(batch, cfg.n_head, past, hd, generator=g) for _ in range(2 * cfg.n_layer))
    return prev, cats, cont, cache


def metadata(cfg: ModelConfig, conditioning_json: str, extra: dict | None = None) -> dict:
    return {
        "schema": SCHEMA_VERSION,
        "config": cfg.to_dict(),
        "voices": [{"name": v.name, "gm_note": v.gm_note} for v in VOICES],
        "inputs": inputs(cfg.n_layer),
        "outputs": outputs(cfg.n_layer),
        "cont": list(CONT_NAMES),
        "cats": ["style", "step_in_bar", "bar_in_phrase"],
        "conditioning": json.loads(conditioning_json),
        **(extra or {}),
    }


def _strip_provenance(model) -> None:
    """The exporter tags nodes with Python stack traces (absolute paths of the machine that
    exported): drop them, the graph does not need them."""
    graphs = [model.graph] + [f for f in model.functions]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            del node.metadata_props[:]
            node.doc_string = ""
            graphs += [a.g for a in node.attribute if a.HasField("g")] + [x for a in node.attribute for x in a.graphs]
    del model.graph.metadata_props[:]
    model.doc_string = ""


def set_metadata(path: Path, meta: dict) -> None:
    model = onnx.load(str(path))
    _strip_provenance(model)
    del model.metadata_props[:]
    prop = model.metadata_props.add()
    prop.key = METADATA_KEY
    prop.value = json.dumps(meta)
    onnx.save(model, str(path))


GRAPHS = ("fused", "traced")  #: how the step graph is made: training.step_graph (shipped) or torch.onnx


def export_onnx(model: GrooveTransformer, path: Path, graph: str = "fused") -> None:
    """The one-step graph with its KV cache: ``fused`` builds it node by node from the weights with
    ONNX Runtime's fused operators (training.step_graph: 59 nodes a step where the traced graph
    runs 130); ``traced`` exports the torch model with torch.onnx (dynamo). Same inputs and outputs."""
    if graph == "fused":
        from .step_graph import build

        onnx.save(build({k: v.numpy() for k, v in model.state_dict().items()}, model.cfg.to_dict()), str(path))
        return
    if graph != "traced":
        raise ValueError(f"graph {graph!r}: allowed {', '.join(GRAPHS)}")
    cfg = model.cfg
    args = example_inputs(cfg)
    B, T, P = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("steps", min=1, max=4096), \
        torch.export.Dim("past", min=0, max=4096)
    shapes = ({0: B, 1: T}, {0: B, 1: T}, {0: B, 1: T}, tuple({0: B, 2: P} for _ in args[3]))

    class Step(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, prev, cats, cont, cache):
            logits, present = self.m.forward_layers(prev, cats, cont, cache)
            return (logits, *present)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Step(model.eval()), args, str(path), dynamo=True, input_names=inputs(cfg.n_layer),
                          output_names=outputs(cfg.n_layer), dynamic_shapes=shapes, external_data=False,
                          verbose=False)


def quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization; quantize the plain graph if it fails
            pre = fp32
        # the fused graph's com.microsoft nodes escape ONNX shape inference: their outputs are float
        quantize_dynamic(str(pre), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corrections_of(path: str | Path, meta: dict) -> dict:
    """The metadata of an earlier export of the same model that ``meta`` does not have: the
    sampling corrections training/calibrate.py wrote, and their calibration records."""
    model = onnx.load(str(path), load_external_data=False)
    old = json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
    if old.get("config") != meta["config"] or old.get("conditioning") != meta["conditioning"]:
        raise SystemExit(f"{path}: another model (its config or conditioning differ): its corrections do not apply")
    return {k: v for k, v in old.items() if k not in meta and k != "precision"}


def export(checkpoint: str | Path, out: str | Path, extra: dict | None = None,
           corrections_from: str | Path | None = None, graph: str = "fused") -> tuple[Path, Path]:
    """Write OUT.fp32.onnx, OUT.int8.onnx and OUT.pt (weights + config) from a checkpoint;
    ``corrections_from``: an earlier export of the same checkpoint whose corrections to keep;
    ``graph``: see ``export_onnx``."""
    ckpt = load_checkpoint(checkpoint)
    model, cfg, cond = model_from_checkpoint(ckpt)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = out.with_name(out.name + ".fp32.onnx")
    int8 = out.with_name(out.name + ".int8.onnx")
    meta = metadata(cfg, ckpt["conditioning"], {"parameters": sum(p.numel() for p in model.parameters()),
                                                "graph": graph, **(extra or {})})
    if corrections_from:
        meta.update(corrections_of(corrections_from, meta))
    slim = out.with_name(out.name + ".pt")  # tensors + config only: for torch parity tests and benchmarks
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "conditioning": ckpt["conditioning"]}, slim)
    export_onnx(model, fp32, graph)
    set_metadata(fp32, {**meta, "precision": "fp32"})
    quantize(fp32, int8)
    set_metadata(int8, {**meta, "precision": "int8"})
    return fp32, int8


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="drummachine export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--out", default="models/groove", help="output prefix (default models/groove)")
    ap.add_argument("--corrections-from", metavar="ONNX",
                    help="keep the sampling corrections of an earlier export of the same checkpoint (re-exporting "
                         "after a change of the graph, say)")
    ap.add_argument("--graph", choices=GRAPHS, default="fused",
                    help="fused: built node by node with ONNX Runtime's fused operators (default, faster); "
                         "traced: torch.onnx's export of the torch model")
    args = ap.parse_args(argv)
    fp32, int8 = export(args.checkpoint, args.out, corrections_from=args.corrections_from, graph=args.graph)
    for p in (fp32, int8):
        print(f"{p}: {p.stat().st_size / 1e6:.2f} MB sha256 {sha256(p)[:16]}")
    return 0


if __name__ == "__main__":
    entry(main)
