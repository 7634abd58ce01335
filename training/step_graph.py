"""The one-step ONNX graph, built node by node from the model's weights with ONNX Runtime's fused
operators.

The traced export (torch.onnx, ``training.export.export_onnx``) spells attention out: split,
reshape, transpose, concat the cache, matmul, add the ALiBi bias, softmax, matmul, transpose,
reshape, per layer; ONNX Runtime runs 130 nodes a step. Here each layer is nine nodes: the QKV
projection, a split, ONNX Runtime's ``MultiHeadAttention`` (com.microsoft; it takes the cache
and the ALiBi bias and returns the grown cache), the output projection, a
``SkipLayerNormalization`` (residual add and layer norm in one), the MLP's two projections and
its GELU, and a second ``SkipLayerNormalization``. The ALiBi bias is worked out once for all
layers. A one-token step is dominated by per-node overhead, not arithmetic, so fewer nodes is
what makes it faster (benchmarks/step_graph.py measures it against the traced graph).

Same inputs, outputs and shapes as the traced graph (any batch, any number of steps, any cache
length), so the runtime cannot tell them apart; parity with torch is tested as for the traced
one. The weights come in as numpy arrays.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from drummachine.model.model_file import cache_names

from .model import alibi_slopes

OPSET = 20  #: the traced export's opset
MS = "com.microsoft"


class _Graph:
    """Nodes and initializers, added in order."""

    def __init__(self):
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", name: str | None = None,
           **attrs) -> str | list[str]:
        self._n += 1
        base = name or f"{op_type.lower()}_{self._n}"
        outs = [base] if n_out == 1 else [f"{base}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=base, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs


def _f32(t) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(t, np.float32))


def build(weights: dict[str, np.ndarray], cfg: dict) -> onnx.ModelProto:
    """The step graph of a GrooveTransformer from its state dict (as numpy arrays) and config."""
    d, H, L = int(cfg["d_model"]), int(cfg["n_head"]), int(cfg["n_layer"])
    hd, out = d // H, 1 + int(cfg["vel_bins"]) + int(cfg["off_bins"])
    n_cont, eps = int(cfg["n_cont"]), 1e-5
    w = {k: _f32(v) for k, v in weights.items()}
    g = _Graph()

    def linear(x: str, prefix: str, name: str) -> str:
        """x @ W^T + b as MatMul then Add: ONNX Runtime fuses the pair, quantized or not."""
        y = g.op("MatMul", [x, g.const(f"{prefix}.weight_t", w[f"{prefix}.weight"].T.copy())], name=f"{name}_mm")
        return g.op("Add", [y, g.const(f"{prefix}.bias", w[f"{prefix}.bias"])], name=name)

    # --- input: the previous step, the conditioning and the three embeddings
    x = g.op("Add", [linear("prev", "step_in", "step_in"), linear("cont", "cont_in", "cont_in")], name="inputs")
    sizes = [w[f"{t}.weight"].shape[0] for t in ("style", "pos", "phrase")]
    table = np.concatenate([w[f"{t}.weight"] for t in ("style", "pos", "phrase")])
    offsets = np.cumsum([0] + sizes[:-1]).astype(np.int64)
    rows = g.op("Add", ["cats", g.const("embedding_offsets", offsets)], name="embedding_rows")
    emb = g.op("Gather", [g.const("embeddings", table), rows], name="embedding_lookup", axis=0)  # (B, T, 3, d)
    emb = g.op("ReduceSum", [emb, g.const("axis_2", np.array([2], np.int64))], name="embedding", keepdims=0)
    h = g.op("Add", [x, emb], name="x0")

    # --- the ALiBi bias (1, H, T, P+T), once for all layers: -slope * distance, -inf ahead
    past = g.op("Shape", [cache_names(L, "past")[0]], name="past_len", start=2, end=3)  # (1,)
    steps = g.op("Shape", ["prev"], name="steps", start=1, end=2)
    total = g.op("Add", [past, steps], name="total_len")
    zero, one = g.const("zero", np.array(0, np.int64)), g.const("one", np.array(1, np.int64))
    scalar = g.const("axis_0", np.array([0], np.int64))
    q_pos = g.op("Range", [g.op("Squeeze", [past, scalar], name="past_scalar"),
                           g.op("Squeeze", [total, scalar], name="total_scalar"), one], name="q_pos")
    k_pos = g.op("Range", [zero, g.op("Squeeze", [total, scalar], name="total_scalar_k"), one], name="k_pos")
    dist = g.op("Sub", [g.op("Unsqueeze", [q_pos, g.const("axis_1", np.array([1], np.int64))], name="q_col"), k_pos],
                name="distance")  # (T, S)
    dist = g.op("Cast", [dist], name="distance_f", to=TensorProto.FLOAT)
    slopes = alibi_slopes(H).numpy().astype(np.float32).reshape(1, H, 1, 1)
    alibi = g.op("Mul", [dist, g.const("neg_slopes", -slopes)], name="alibi_raw")  # (1, H, T, S)
    ahead = g.op("Less", [dist, g.const("f_zero", np.array(0.0, np.float32))], name="ahead")
    alibi = g.op("Where", [ahead, g.const("minus_inf", np.array(-np.inf, np.float32)), alibi], name="alibi")

    # --- the blocks
    y = g.op("LayerNormalization", [h, g.const("blocks.0.ln1.weight", w["blocks.0.ln1.weight"]),
                                    g.const("blocks.0.ln1.bias", w["blocks.0.ln1.bias"])],
             name="ln1_0", axis=-1, epsilon=eps)
    presents = cache_names(L, "present")
    for i in range(L):
        p = f"blocks.{i}"
        qkv = linear(y, f"{p}.attn.qkv", f"qkv_{i}")
        q, k, v = g.op("Split", [qkv, g.const(f"split_{i}", np.array([d, d, d], np.int64))], n_out=3,
                       name=f"qkv_split_{i}", axis=-1)
        att = f"attention_{i}"
        g.nodes.append(helper.make_node(
            "MultiHeadAttention", [q, k, v, "", "", alibi, f"past_k_{i}", f"past_v_{i}"],
            [att, presents[2 * i], presents[2 * i + 1]], name=att, domain=MS, num_heads=H,
            scale=1.0 / math.sqrt(hd)))
        a = linear(att, f"{p}.attn.proj", f"proj_{i}")
        y, _, _, h = g.op("SkipLayerNormalization", [a, h, g.const(f"{p}.ln2.weight", w[f"{p}.ln2.weight"]),
                                                     g.const(f"{p}.ln2.bias", w[f"{p}.ln2.bias"])],
                          n_out=4, domain=MS, name=f"ln2_{i}", epsilon=eps)
        m = g.op("Gelu", [linear(y, f"{p}.mlp.0", f"fc1_{i}")], name=f"gelu_{i}", domain=MS)
        m = linear(m, f"{p}.mlp.2", f"fc2_{i}")
        ln = f"blocks.{i + 1}.ln1" if i + 1 < L else "ln_f"
        y, _, _, h = g.op("SkipLayerNormalization", [m, h, g.const(f"{ln}.weight", w[f"{ln}.weight"]),
                                                     g.const(f"{ln}.bias", w[f"{ln}.bias"])],
                          n_out=4, domain=MS, name=f"ln1_{i + 1}" if i + 1 < L else "ln_f", epsilon=eps)
    head = linear(y, "head", "head")
    g.nodes.append(helper.make_node("Reshape", [head, g.const("logits_shape", np.array([0, 0, 9, out], np.int64))],
                                    ["logits"], name="logits"))

    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    ins = [helper.make_tensor_value_info("prev", f, ["batch", "steps", 27]),
           helper.make_tensor_value_info("cats", i64, ["batch", "steps", 3]),
           helper.make_tensor_value_info("cont", f, ["batch", "steps", n_cont])]
    ins += [helper.make_tensor_value_info(n, f, ["batch", H, "past", hd]) for n in cache_names(L, "past")]
    outs = [helper.make_tensor_value_info("logits", f, ["batch", "steps", 9, out])]
    outs += [helper.make_tensor_value_info(n, f, ["batch", H, "past + steps", hd]) for n in presents]
    graph = helper.make_graph(g.nodes, "groove_step", ins, outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
                              producer_name="drummachine")
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model
