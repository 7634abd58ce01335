"""The shipped model file: an ONNX graph with its metadata, loaded and checked (ONNX Runtime edge).

The runtime never unpickles anything and never imports torch. A model whose metadata does not
match this runtime's schema, or a file that is not a readable ONNX model, is refused with one
line naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from drummachine.core.conditioning import CONT_NAMES, Conditioning
from drummachine.core.errors import DrumMachineError
from drummachine.core.places import shipped
from drummachine.core.voices import VOICE_NAMES

log = logging.getLogger("drummachine")
METADATA_KEY = "drummachine"
SCHEMA_VERSION = 3  #: 2: the kit palette joined the continuous inputs; 3: a KV cache input and output per layer
MODELS_DIR = shipped("models")
#: the shipped int8 model is 0.9 MB and the fp32 3.4 MB; a file far larger is not one of ours (and
#: is not read into memory to find out)
MAX_MODEL_BYTES = 256_000_000
#: what the generator needs from the metadata's config: positive whole numbers
CONFIG_KEYS = ("n_layer", "n_head", "d_model", "context", "vel_bins", "off_bins")
DEFAULT_MODEL = MODELS_DIR / "groove.int8.onnx"
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    meta: dict
    conditioning: Conditioning

    @property
    def config(self) -> dict:
        return self.meta["config"]

    @property
    def vel_bins(self) -> int:
        return int(self.config["vel_bins"])

    @property
    def context(self) -> int:
        return int(self.config["context"])


def choose_providers(requested: str | None, available: list[str]) -> list[str]:
    """TensorRT or CUDA when present (a Jetson), else CPU; ``requested`` overrides (e.g. 'cpu', 'cuda')."""
    if requested:
        names = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}
        want = names.get(requested.lower(), requested)
        if want not in available:
            raise DrumMachineError("provider", f"{requested!r} is not available here; available: "
                                   f"{', '.join(available)}")
        return [want] + (["CPUExecutionProvider"] if want != "CPUExecutionProvider" else [])
    return [p for p in PROVIDER_ORDER if p in available] or ["CPUExecutionProvider"]


def session_options(threads: int = 1):
    """ONNX Runtime's options for the generator: ``threads`` intra-op threads, no spinning."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # shapes change every step (the cache grows, then slides): an arena would keep a block for
    # each size it ever saw; a small model is better served by plain allocations
    opts.enable_cpu_mem_arena = False
    opts.enable_mem_pattern = False
    # a small CPU shared with audio: threads sleep instead of spinning between steps
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def load_model(path: str | Path | None = None, threads: int = 1, provider: str | None = None):
    """(ModelInfo, onnxruntime.InferenceSession) for a drummachine model file.

    A model file is data, never code or a way out of its folder: it is opened with this module's
    SessionOptions and no custom operator library (an operator ONNX Runtime does not know is a
    refused file), and tensors stored outside the file (external data) must lie inside the model's
    own folder (checked here before ONNX Runtime opens it; ONNX Runtime >= 1.19 checks too). The
    metadata, the graph's inputs and outputs and one probe step (finite outputs: no NaN weights)
    are checked before the model is handed out, so a broken file is one line, never a mid-song fault.
    """
    import onnxruntime as ort

    path = Path(path) if path else DEFAULT_MODEL
    if not path.is_file():
        raise DrumMachineError(str(path), "no such model file")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise DrumMachineError(str(path), f"{size / 1e6:.0f} MB is too large for a drummachine model; "
                               f"allowed: up to {MAX_MODEL_BYTES / 1e6:g} MB")
    check_external_data(path, path.read_bytes())
    opts = session_options(threads)
    providers = choose_providers(provider, ort.get_available_providers())
    # ONNX Runtime's Python wrapper prints four lines to stdout and retries when a session fails with
    # a ValueError (a damaged name in the file is one): held here, so a refusal stays one line.
    # read_config_from_model=0: the file's own metadata ("ort_config") never sets session options.
    # ONNX Runtime's C++ side also reads ORT_LOAD_CONFIG_FROM_MODEL (with it set to 1, a model's
    # metadata changed intra_op_num_threads; with the flag 0 as well, the load failed): this process
    # takes its session options from session_options() alone, so the variable goes.
    os.environ.pop("ORT_LOAD_CONFIG_FROM_MODEL", None)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            session = ort.InferenceSession(str(path), sess_options=opts, providers=providers,
                                           read_config_from_model=0)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise DrumMachineError(str(path), f"not a readable ONNX model ({first})") from None
    finally:
        if printed.getvalue().strip():
            log.info("ONNX Runtime on %s: %s", path, " ".join(printed.getvalue().split())[:300])
    try:
        raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    except UnicodeDecodeError as exc:  # ONNX Runtime hands the metadata over as str: a damaged byte ends here
        raise DrumMachineError(str(path), f"the model's metadata is not UTF-8 text (byte {exc.start})") from None
    if raw is None:
        raise DrumMachineError(str(path), "not a drummachine model (no drummachine metadata)")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise DrumMachineError(str(path), "the model's drummachine metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise DrumMachineError(str(path), "the model's drummachine metadata must be a JSON object")
    schema = meta.get("schema")
    if schema != SCHEMA_VERSION:
        raise DrumMachineError(str(path), f"model metadata schema {str(schema)[:40]}; this runtime reads schema "
                               f"{SCHEMA_VERSION}: re-export the model with this version")
    raw_voices = meta.get("voices", [])
    voices = [v.get("name") if isinstance(v, dict) else v for v in raw_voices] if isinstance(raw_voices, list) \
        else raw_voices
    if not isinstance(voices, list) or tuple(voices) != VOICE_NAMES:
        raise DrumMachineError(str(path), f"model voices {str(voices)[:120]} do not match the runtime's "
                               f"{list(VOICE_NAMES)}")
    cont = meta.get("cont", ())
    if not isinstance(cont, (list, tuple)) or tuple(cont) != CONT_NAMES:
        raise DrumMachineError(str(path), f"model inputs {str(cont)[:120]} do not match the runtime's "
                               f"{list(CONT_NAMES)}: re-export the model with this version")
    _check_config(path, meta.get("config"))
    try:
        cond = Conditioning.from_json(json.dumps(meta["conditioning"]))
    except KeyError as exc:
        raise DrumMachineError(str(path), f"model metadata lacks {exc}") from None
    except DrumMachineError as exc:
        raise DrumMachineError(str(path), f"model metadata conditioning: {exc.what}") from None
    except Exception as exc:  # conditioning of the wrong shape or type: the file is broken, say which part
        raise DrumMachineError(str(path), f"model metadata conditioning is malformed ({exc.__class__.__name__}: "
                               f"{str(exc)[:80]})") from None
    if not cond.styles or not all(isinstance(s, str) for s in cond.styles):
        raise DrumMachineError(str(path), "model metadata conditioning names no styles")
    for key in VOICE_CORRECTIONS.values():
        _check_voices(path, key, meta.get(key))
    bias = meta.get("voice_bias") or {}
    if not isinstance(bias, dict):
        raise DrumMachineError(str(path), "model metadata voice_bias must be a table of style = numbers")
    for style, values in bias.items():
        _check_voices(path, f"voice_bias[{style!r}]", values)
    info = ModelInfo(path, meta, cond)
    _check_graph(path, info, session)
    return info, session


def _check_config(path, config) -> None:
    if not isinstance(config, dict):
        raise DrumMachineError(str(path), "model metadata lacks its config")
    for key in CONFIG_KEYS:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 100_000:
            raise DrumMachineError(str(path), f"model metadata config.{key} must be a positive whole number; "
                                   f"got {str(value)[:40]}")
    if config["d_model"] % config["n_head"]:
        raise DrumMachineError(str(path), f"model metadata config: d_model {config['d_model']} is not a multiple "
                               f"of n_head {config['n_head']}")


def _check_graph(path, info: ModelInfo, session) -> None:
    """The graph takes and gives what the generator feeds and reads (names, fixed dimensions), and
    one step from silence gives finite logits of the right shape (NaN or infinite weights do not)."""
    import numpy as np

    cfg = info.config
    n_layer, n_head = cfg["n_layer"], cfg["n_head"]
    head_dim = cfg["d_model"] // n_head
    want_in = {"prev": 3 * len(VOICE_NAMES), "cats": 3, "cont": len(CONT_NAMES)}
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    need = list(want_in) + cache_names(n_layer, "past")
    want_out = ["logits"] + cache_names(n_layer, "present")
    if set(inputs) != set(need) or outputs != want_out:
        odd = [f"missing input {n}" for n in need if n not in inputs][:3] + \
              [f"unknown input {n}" for n in inputs if n not in need][:3] + \
              ([f"outputs {', '.join(outputs[:3])}... where the runtime reads {', '.join(want_out[:3])}..."]
               if outputs != want_out else [])
        raise DrumMachineError(str(path), f"the graph is not what its metadata says (n_layer {n_layer}): "
                               f"{'; '.join(odd)}")
    for name, width in want_in.items():
        last = inputs[name].shape[-1] if inputs[name].shape else None
        if isinstance(last, int) and last != width:
            raise DrumMachineError(str(path), f"model input {name} is {last} wide; the runtime feeds {width}")
    feed = {"prev": np.zeros((1, 1, want_in["prev"]), np.float32), "cats": np.zeros((1, 1, 3), np.int64),
            "cont": np.zeros((1, 1, want_in["cont"]), np.float32)}
    feed.update({n: np.zeros((1, n_head, 0, head_dim), np.float32) for n in cache_names(n_layer, "past")})
    try:
        logits = session.run(["logits"], feed)[0]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise DrumMachineError(str(path), f"the model does not run one step ({first})") from None
    width = 1 + cfg["vel_bins"] + cfg["off_bins"]
    if logits.shape != (1, 1, len(VOICE_NAMES), width):
        raise DrumMachineError(str(path), f"model logits have shape {logits.shape}; the runtime reads "
                               f"(1, 1, {len(VOICE_NAMES)}, {width})")
    if not np.isfinite(logits).all():
        raise DrumMachineError(str(path), "the model's outputs are not finite numbers (NaN or infinite weights)")


# --- external data: where an ONNX file may make the runtime read -------------------------------------
# The ONNX protobuf, walked by field number (the onnx package is not a runtime dependency): every
# TensorProto that can hold weights, in graphs, nodes' attributes, subgraphs and functions.
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODES, _GRAPH_INITIALIZERS, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTES, _FUNCTION_NODES = 5, 7
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_MAX_DEPTH = 64  #: subgraphs nested deeper than this are not a model, they are an attack on the walker


def _fields(buf: memoryview):
    """(field number, wire type, value) of one protobuf message; value is an int or a memoryview."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = None, i + 8
        elif wire == 5:
            value, i = None, i + 4
        elif wire == 2:
            length, i = _varint(buf, i)
            if i + length > n:
                raise ValueError("a field runs past the end of the file")
            value, i = buf[i:i + length], i + length
        else:
            raise ValueError(f"wire type {wire}")
        if i > n:
            raise ValueError("truncated")
        yield number, wire, value


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("a truncated number")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def external_data_locations(data: bytes) -> list[str]:
    """Every external-data ``location`` an ONNX file's tensors name (empty for a self-contained
    file). Raises ValueError for bytes that are not a protobuf message."""
    found: list[str] = []
    kinds = {  # message kind -> {field number: kind of the sub-message}
        "model": {_MODEL_GRAPH: "graph", _MODEL_FUNCTIONS: "function"},
        "graph": {_GRAPH_NODES: "node", _GRAPH_INITIALIZERS: "tensor", _GRAPH_SPARSE: "sparse"},
        "function": {_FUNCTION_NODES: "node"},
        "node": {_NODE_ATTRIBUTES: "attribute"},
        "attribute": {_ATTR_TENSOR: "tensor", _ATTR_GRAPH: "graph", _ATTR_TENSORS: "tensor",
                      _ATTR_GRAPHS: "graph", _ATTR_SPARSE: "sparse", _ATTR_SPARSES: "sparse"},
        "sparse": {_SPARSE_VALUES: "tensor", _SPARSE_INDICES: "tensor"},
    }
    stack = [("model", memoryview(data), 0)]
    while stack:
        kind, buf, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ValueError("graphs nested too deep")
        if kind == "tensor":
            entries = [v for number, wire, v in _fields(buf) if number == _TENSOR_EXTERNAL_DATA and wire == 2]
            for entry in entries:
                pairs = {k: bytes(v) for k, w, v in _fields(entry) if w == 2}
                if pairs.get(1) == b"location":
                    found.append(pairs.get(2, b"").decode("utf-8", "replace"))
            continue
        for number, wire, value in _fields(buf):
            sub = kinds[kind].get(number)
            if sub and wire == 2:
                stack.append((sub, value, depth + 1))
    return found


def check_external_data(path: Path, data: bytes) -> None:
    """Refuse a model whose tensors live outside its own folder (an absolute location, ``..``, a
    symbolic link that leads out): a model file must not make the runtime read other files."""
    try:
        locations = external_data_locations(data)
    except (ValueError, IndexError):
        raise DrumMachineError(str(path), "not a readable ONNX model (not a protobuf message)") from None
    folder = path.resolve().parent
    for location in locations:
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise DrumMachineError(str(path), f"its weights point outside the model's folder ({location[:80]}); "
                                   "a model may only use external data beside it")


def cache_names(n_layer: int, prefix: str) -> list[str]:
    """The KV cache's inputs (``prefix`` "past") or outputs ("present"): a key and a value per
    layer, each (batch, heads, steps, head dim). One tensor per layer, not one stacked tensor:
    stacking cost the graph about 30 nodes a step (splits, squeezes, re-stacking)."""
    return [f"{prefix}_{kv}_{i}" for i in range(n_layer) for kv in "kv"]


#: sampling corrections a model file may carry, one number per voice, by the kind
#: training/calibrate.py fits (its record is under "<kind>_calibration")
VOICE_CORRECTIONS = {"fill": "fill_voice_bias", "played": "played_voice_bias", "again": "again_voice_bias",
                     "velocity": "velocity_tilt"}


def _check_voices(path, key: str, values) -> None:
    """A correction is absent or one finite number per voice; anything else would fail mid-song."""
    if values is None:
        return
    ok = isinstance(values, list) and len(values) == len(VOICE_NAMES) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in values)
    if not ok:
        raise DrumMachineError(str(path), f"model metadata {key} must be {len(VOICE_NAMES)} finite numbers, "
                               f"one per voice; got {str(values)[:60]}")
