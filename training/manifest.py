"""Write models/manifest.json for the shipped model files.

    python -m training.manifest --checkpoint runs/main/best.pt --evaluation models/evaluation.json
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--models", default="models")
    ap.add_argument("--evaluation", help="JSON from drummachine evaluate --out")
    ap.add_argument("--bench", help="JSON from drummachine bench --json")
    ap.add_argument("--augmentation", help="JSON with the augmentation ablation")
    args = ap.parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint)
    models = Path(args.models)
    files = {}
    for p in sorted(models.glob("groove.*")):
        files[p.name] = {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
    last_path = Path(args.checkpoint).with_name("last.pt")
    last = load_checkpoint(last_path) if last_path.exists() else ckpt
    history = last["history"]
    best = min((h for h in history if "val_total" in h), key=lambda h: h["val_total"])
    manifest = {
        "model": "groove transformer (causal decoder, one 16th step per token, ALiBi, KV cache)",
        "files": files,
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
                 "tuned_on": "validation split", "credit": CREDIT},
    }
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
