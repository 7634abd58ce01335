"""The shipped model file: an ONNX graph with its metadata, loaded and checked (ONNX Runtime edge).

The runtime never unpickles anything and never imports torch. A model whose metadata does not
match this runtime's schema, or a file that is not a readable ONNX model, is refused with one
line naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from drummachine.core.conditioning import CONT_NAMES, Conditioning
from drummachine.core.errors import DrumMachineError
from drummachine.core.places import shipped
from drummachine.core.voices import VOICE_NAMES

METADATA_KEY = "drummachine"
SCHEMA_VERSION = 3  #: 2: the kit palette joined the continuous inputs; 3: a KV cache input and output per layer
MODELS_DIR = shipped("models")
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
    """(ModelInfo, onnxruntime.InferenceSession) for a drummachine model file."""
    import onnxruntime as ort

    path = Path(path) if path else DEFAULT_MODEL
    if not path.is_file():
        raise DrumMachineError(str(path), "no such model file")
    opts = session_options(threads)
    providers = choose_providers(provider, ort.get_available_providers())
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise DrumMachineError(str(path), f"not a readable ONNX model ({first})") from None
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise DrumMachineError(str(path), "not a drummachine model (no drummachine metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise DrumMachineError(str(path), "the model's drummachine metadata is not valid JSON") from None
    schema = meta.get("schema")
    if schema != SCHEMA_VERSION:
        raise DrumMachineError(str(path), f"model metadata schema {schema!r}; this runtime reads schema "
                               f"{SCHEMA_VERSION}: re-export the model with this version")
    voices = [v.get("name") for v in meta.get("voices", [])]
    if tuple(voices) != VOICE_NAMES:
        raise DrumMachineError(str(path), f"model voices {voices} do not match the runtime's {list(VOICE_NAMES)}")
    if tuple(meta.get("cont", ())) != CONT_NAMES:
        raise DrumMachineError(str(path), f"model inputs {meta.get('cont')} do not match the runtime's "
                               f"{list(CONT_NAMES)}: re-export the model with this version")
    try:
        cond = Conditioning.from_json(json.dumps(meta["conditioning"]))
    except (KeyError, TypeError) as exc:
        raise DrumMachineError(str(path), f"model metadata lacks {exc}") from None
    for key in VOICE_CORRECTIONS.values():
        _check_voices(path, key, meta.get(key))
    for style, values in (meta.get("voice_bias") or {}).items():
        _check_voices(path, f"voice_bias[{style!r}]", values)
    return ModelInfo(path, meta, cond), session


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
