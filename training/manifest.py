"""Write models/manifest.json for the shipped model files.

    python -m training.manifest --checkpoint runs/main/best.pt --evaluation models/evaluation.json

Without --checkpoint it refreshes the existing manifest (file hashes, the corrections in the model
files' metadata, and any report given) and keeps its training record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from .train import load_checkpoint

CREDIT = ("Trained on the Groove MIDI Dataset (Jon Gillick, Adam Roberts, Jesse Engel, Douglas Eck, David Bamman: "
          "\"Learning to Groove with Inverse Sequence Transformations\", ICML 2019), licensed CC BY 4.0 "
          "(https://creativecommons.org/licenses/by/4.0/).")


TUNED_ON = ("validation split: the checkpoint kept (best validation loss), and the corrections whose calibration "
            "record says so (training/calibrate.py --split validation, with a cross-fit)")


def from_checkpoint(path: str) -> dict:
    ckpt = load_checkpoint(path)
    last_path = Path(path).with_name("last.pt")
    last = load_checkpoint(last_path) if last_path.exists() else ckpt
    history = last["history"]
    best = min((h for h in history if "val_total" in h), key=lambda h: h["val_total"])
    return {
        "model": "groove transformer (causal decoder, one 16th step per token, ALiBi, KV cache)",
        "parameters": ckpt.get("parameters"),
        "config": ckpt["config"],
        "training": {
            "args": json.loads(ckpt["args"]),
            "epochs_run": ckpt["epoch"],
            "optimizer_steps": ckpt["step"],
            "wall_seconds_to_this_checkpoint": round(ckpt["seconds"], 1),
            "whole_run": {"epochs": last["epoch"], "wall_seconds": round(last["seconds"], 1)},
            "machine": "2-core x86_64 CPU, no GPU (the development machine)",
            "best_epoch": best["epoch"],
            "best_validation": {k: v for k, v in best.items() if k.startswith("val_")},
        },
        "data": {"train": "Groove MIDI Dataset v1.0.0, train split (4/4 performances)",
                 "tuned_on": TUNED_ON, "credit": CREDIT},
    }


GRAPHS = {"fused": "built node by node from the weights with ONNX Runtime's fused operators (training/step_graph.py)",
          "traced": "torch.onnx's export of the torch model"}


def metadata(path: Path) -> dict:
    """A model file's drummachine metadata."""
    import onnx

    from drummachine.model.model_file import METADATA_KEY

    m = onnx.load(str(path), load_external_data=False)
    return json.loads(next(p.value for p in m.metadata_props if p.key == METADATA_KEY))


def export_record(meta: dict) -> dict:
    """How the model files were made from the weights."""
    graph = meta.get("graph", "traced")
    return {"graph": graph, "how": GRAPHS.get(graph, graph),
            "int8": "ONNX Runtime dynamic quantization (quantize_dynamic, int8 weights, MatMul)",
            "command": "python -m training.export CHECKPOINT --out models/groove [--corrections-from ONNX]"}


def corrections(meta: dict) -> dict:
    """The sampling corrections stored in the model file's metadata (training/calibrate.py)."""
    from drummachine.model.model_file import VOICE_CORRECTIONS

    out = {"voice_bias": "none" if not meta.get("voice_bias") else "per style (see the model metadata)",
           "palette_off": "voices the kit palette turns off are never played (drummachine/conditioning.py)",
           "palette_on": "a voice the kit palette plays comes at least once a bar: until it has, each 8th note "
                         "floors its hit probability at 1 / (8th notes left) (conditioning.due_floor)"}
    for kind, key in VOICE_CORRECTIONS.items():
        if meta.get(key):
            fc = meta.get(f"{kind}_calibration", {})
            out[key] = meta[key]
            out[f"{kind}_calibration"] = {k: v for k, v in fc.items() if k != "history"}
            if fc.get("history"):
                out[f"{kind}_calibration"]["last_round"] = fc["history"][-1]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="the checkpoint the model files were exported from (default: keep the "
                                         "existing manifest's training record)")
    ap.add_argument("--models", default="models")
    ap.add_argument("--evaluation", help="JSON from drummachine evaluate --out")
    ap.add_argument("--bench", help="JSON from drummachine bench --json")
    ap.add_argument("--augmentation", help="JSON with the augmentation ablation")
    args = ap.parse_args(argv)
    models = Path(args.models)
    files = {}
    for p in sorted(models.glob("groove.*")):
        files[p.name] = {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
    if args.checkpoint:
        manifest = from_checkpoint(args.checkpoint)
    else:
        old = models / "manifest.json"
        if not old.is_file():
            raise SystemExit(f"{old}: no manifest to refresh; give --checkpoint")
        manifest = json.loads(old.read_text())
    manifest["files"] = files
    manifest.setdefault("data", {})["tuned_on"] = TUNED_ON
    meta = metadata(models / "groove.int8.onnx")
    manifest["export"] = export_record(meta)
    manifest["corrections"] = corrections(meta)
    if args.evaluation:
        manifest["evaluation"] = json.loads(Path(args.evaluation).read_text())
    if args.bench:
        manifest["bench"] = json.loads(Path(args.bench).read_text())
    if args.augmentation:
        manifest["augmentation_ablation"] = json.loads(Path(args.augmentation).read_text())
    (models / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {models / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
