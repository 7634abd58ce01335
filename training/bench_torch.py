"""The torch model, eager, one step at a time: the reference column of ``drummachine bench``.

It lives with the training code because it needs torch, which the runtime never imports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drummachine.core.conditioning import Conditioning
from drummachine.core.sampling import Steering, sample_step
from training.model import GrooveTransformer, ModelConfig


def torch_stepper(path: Path):
    """The same on the torch model, eager, with plain sampling: (step function, facts), or None
    without torch or the weights file."""
    try:
        import torch
    except ImportError:
        return None
    if not path.is_file():
        return None

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
