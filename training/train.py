"""Train the groove transformer: ``python -m training.train --data DIR_OR_NPZ --out runs/NAME``.

Runs on one process, or under ``torchrun --nproc_per_node=N`` with DistributedDataParallel
(gloo on CPU, nccl on GPUs). Checkpoints hold only tensors, numbers, strings and the config, and
load with ``torch.load(weights_only=True)``. ``--resume`` continues from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from drummachine.core.conditioning import Conditioning
from drummachine.corpus.dataset import Dataset
from drummachine.core.errors import DrumMachineError

from .data import Augment, Windows, fit_conditioning
from .model import GrooveTransformer, ModelConfig, loss_terms


def load_dataset(path: str) -> Dataset:
    """A dataset .npz, or a Groove MIDI Dataset folder built on the fly."""
    p = Path(path)
    if p.is_dir():
        from drummachine.corpus import build as corpus

        ds, report = corpus.build(p)
        if _rank() == 0:
            print(report.summary().split("\nskipped")[0], file=sys.stderr)
        return ds
    return Dataset.load(p)


#: model settings that follow from the data and the conditioning, not from the command line
FIXED_CONFIG = ("context", "n_styles", "steps_per_bar", "phrase_bars", "n_cont")


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def to_torch(batch, device):
    target, mask, cats, cont = (torch.from_numpy(a).to(device) for a in batch)
    B, T = mask.shape
    flat = target.reshape(B, T, 27)
    prev = torch.cat([torch.zeros_like(flat[:, :1]), flat[:, :-1]], dim=1)
    return prev, cats, cont, target, mask


@torch.no_grad()
def own_steps(model, prev, cats, cont, rate: float, cfg: ModelConfig) -> torch.Tensor:
    """Scheduled sampling in two passes (Mihaylova & Martins 2019): the model predicts every step
    from the real ones, a step is sampled from each prediction, and a random share of the input
    steps (each window its own, uniform in 0..2*rate) becomes the model's own. On stage the model
    hears only itself; trained only on real drumming it drifts when its own steps are less clean
    (measured: snare 1.5x and hi-hat 0.6x the real densities when it plays alone)."""
    B, T, _ = prev.shape
    logits, _, _ = model(prev, cats, cont)
    hit = torch.bernoulli(torch.sigmoid(logits[..., 0]))
    vel_logit = logits[..., 1:1 + cfg.vel_bins]
    off_logit = logits[..., 1 + cfg.vel_bins:]
    vb = torch.distributions.Categorical(logits=vel_logit).sample()
    ob = torch.distributions.Categorical(logits=off_logit).sample()
    vel = ((vb + torch.rand_like(hit)) / cfg.vel_bins).clamp(1 / 127, 1.0) * hit
    off = ((ob + torch.rand_like(hit)) / cfg.off_bins - 0.5) * hit
    own = torch.cat([hit, vel, off], dim=-1)  # (B, T, 27): what the model would have played at t
    own_prev = torch.cat([prev[:, :1], own[:, :-1]], dim=1)  # ... heard as the input of t+1
    share = torch.rand(B, 1, 1, device=prev.device) * 2 * rate
    swap = torch.rand(B, T, 1, device=prev.device) < share
    return torch.where(swap, own_prev, prev)


@torch.no_grad()
def evaluate_loss(model, windows: Windows, device, batch_size: int = 64) -> dict:
    """Mean hit NLL per voice-step, velocity and offset NLL per hit over every validation window,
    with the kit palette shown as in training (masked at random, the same way every time)."""
    model.eval()
    all_w = windows.all_windows()
    palette_rng = np.random.default_rng(0)
    sums = np.zeros(3)
    counts = np.zeros(3)
    for i in range(0, len(all_w), batch_size):
        prev, cats, cont, target, mask = to_torch(windows.batch(all_w[i:i + batch_size], palette="masked",
                                                                  palette_rng=palette_rng), device)
        logits, _, _ = model(prev, cats, cont)
        h, v, o = loss_terms(logits, target, mask, model.cfg)
        n_steps = float(mask.sum()) * 9
        n_hits = float(((target[:, :, 0] > 0.5) & (mask.unsqueeze(-1) > 0)).sum())
        sums += [float(h) * n_steps, float(v) * n_hits, float(o) * n_hits]
        counts += [n_steps, n_hits, n_hits]
    model.train()
    h, v, o = (float(x) for x in sums / np.maximum(counts, 1))
    # plain floats: checkpoints must hold nothing but tensors and Python primitives (weights_only)
    return {"hit_nll": h, "velocity_nll": v, "offset_nll": o, "total": h + (v + o) * float(counts[1] / counts[0])}


def save_checkpoint(path: Path, model, opt, cfg, cond: Conditioning, state: dict) -> None:
    raw = model.module if hasattr(model, "module") else model
    ckpt = {
        "model": raw.state_dict(),
        "optimizer": opt.state_dict(),
        "config": cfg.to_dict(),
        "conditioning": cond.to_json(),
        "torch_rng": torch.get_rng_state(),
        **state,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint as a dict of tensors and plain values (never unpickles arbitrary objects)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DrumMachineError(str(path), "no such checkpoint") from None
    except Exception as exc:
        raise DrumMachineError(str(path), f"not a readable checkpoint ({exc.__class__.__name__})") from None


def model_from_checkpoint(ckpt: dict) -> tuple[GrooveTransformer, ModelConfig, Conditioning]:
    names = {f.name for f in fields(ModelConfig)}
    cfg = ModelConfig(**{k: v for k, v in ckpt["config"].items() if k in names})
    model = GrooveTransformer(cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, cfg, Conditioning.from_json(ckpt["conditioning"])


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def progress_line(epoch, epochs, done, total, loss, t0):
    width = 24
    fill = width * done // max(total, 1)
    sys.stderr.write(f"\repoch {epoch}/{epochs} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} "
                     f"loss {loss:.4f} {time.time() - t0:6.0f}s")
    sys.stderr.flush()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="drummachine train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset .npz (drummachine dataset build) or a Groove MIDI "
                    "Dataset folder")
    ap.add_argument("--out", required=True, help="run folder for checkpoints and the log")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=0, help="stop after the epoch that passes this wall time")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (tests)")
    ap.add_argument("--batch", type=int, default=32, help="windows per optimizer step per process")
    ap.add_argument("--bars", type=int, default=8, help="bars per training window")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0: leave default)")
    ap.add_argument("--no-augment", action="store_true", help="train without data augmentation")
    ap.add_argument("--style-dropout", type=float, default=0.1, help="share of windows trained as style 'any'")
    ap.add_argument("--scheduled-sampling", type=float, default=0.2,
                    help="mean share of input steps replaced by the model's own sampled steps (0: off)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument("--init", default="", help="fine-tune: start from this checkpoint's weights and conditioning "
                                               "(a fresh optimizer and schedule; the model's shape must match)")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--val-split", default="validation")
    ap.add_argument("--val-every", type=int, default=1, help="validate every N epochs")
    ap.add_argument("--dump-ranks", action="store_true", help="each process saves its final weights to "
                    "OUT/rank<N>.pt (to check that distributed ranks agree)")
    for f in fields(ModelConfig):
        if f.name not in FIXED_CONFIG:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device("cpu")
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world = _rank(), _world()
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    ds = load_dataset(args.data)
    ckpt = load_checkpoint(out / "last.pt") if args.resume and (out / "last.pt").exists() else None
    init = load_checkpoint(args.init) if args.init and not ckpt else None
    source = ckpt or init
    cond = Conditioning.from_json(source["conditioning"]) if source else fit_conditioning(ds)
    train = Windows(ds, args.train_split, cond, args.bars)
    val = Windows(ds, args.val_split, cond, args.bars)
    if not len(train.files):
        raise DrumMachineError(args.data, f"no 4/4 performances in split {args.train_split!r}")

    cfg = ModelConfig(n_styles=len(cond.styles), context=args.bars * 16,
                      **{f.name: getattr(args, f.name) for f in fields(ModelConfig)
                         if f.name not in FIXED_CONFIG})
    torch.manual_seed(args.seed)
    model = GrooveTransformer(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "style" not in n and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "style" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    state = {"epoch": 0, "step": 0, "history": [], "seconds": 0.0, "best": float("inf")}
    rng = np.random.default_rng([args.seed, rank])
    if init:
        if dict(init["config"]) != asdict(cfg):
            raise DrumMachineError(args.init, f"model shape {dict(init['config'])} does not match the "
                                              f"options' {asdict(cfg)}")
        model.load_state_dict(init["model"])
    if ckpt:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = {k: ckpt[k] for k in state}
        saved = json.loads(ckpt["numpy_rng"])
        if rank < len(saved):
            rng.bit_generator.state = saved[rank]
    ddp = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    windows_per_epoch = max(1, train.total_bars // args.bars)
    steps_per_epoch = max(1, windows_per_epoch // (args.batch * world))
    total_steps = steps_per_epoch * args.epochs
    augment = Augment.none() if args.no_augment else Augment()
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        print(f"model: {n_params:,} parameters; {train.total_bars} train bars, {val.total_bars} validation bars; "
              f"{steps_per_epoch} steps/epoch x {world} process(es); augmentation "
              f"{'off' if args.no_augment else 'on'}", file=sys.stderr)
    t_start = time.time() - state["seconds"]
    stop = False
    while state["epoch"] < args.epochs and not stop:
        epoch = state["epoch"] + 1
        running = 0.0
        for i in range(steps_per_epoch):
            batch = train.batch(train.random_windows(args.batch, rng), rng, augment, args.style_dropout, "masked")
            prev, cats, cont, target, mask = to_torch(batch, device)
            if args.scheduled_sampling > 0:
                prev = own_steps(model, prev, cats, cont, args.scheduled_sampling, cfg)
            for g in opt.param_groups:
                g["lr"] = lr_at(state["step"], total_steps, args.lr, warmup=min(200, total_steps // 10 + 1))
            logits, _, _ = ddp(prev, cats, cont)
            h, v, o = loss_terms(logits, target, mask, cfg)
            loss = h + 0.25 * (v + o)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            state["step"] += 1
            running = 0.98 * running + 0.02 * loss.item() if i else loss.item()
            if rank == 0 and (i % 5 == 0 or i == steps_per_epoch - 1):
                progress_line(epoch, args.epochs, i + 1, steps_per_epoch, running, t_start)
            if args.max_steps and state["step"] >= args.max_steps:
                stop = True
                break
        state["epoch"] = epoch
        state["seconds"] = time.time() - t_start
        if args.minutes and state["seconds"] > args.minutes * 60:
            stop = True
        rngs = [None] * world
        if distributed:
            dist.all_gather_object(rngs, json.dumps(rng.bit_generator.state))
        else:
            rngs = [json.dumps(rng.bit_generator.state)]
        if rank == 0:
            record = {"epoch": epoch, "step": state["step"], "seconds": round(state["seconds"], 1),
                      "train_loss": round(running, 5)}
            if val.total_bars and (epoch % args.val_every == 0 or stop or epoch == args.epochs):
                record.update({f"val_{k}": round(v, 5) for k, v in evaluate_loss(model, val, device).items()})
            state["history"].append(record)
            sys.stderr.write("\n" + json.dumps(record) + "\n")
            extra = {**state, "numpy_rng": json.dumps([json.loads(r) for r in rngs]), "args": json.dumps(vars(args)),
                     "parameters": n_params}
            save_checkpoint(out / "last.pt", model, opt, cfg, cond, extra)
            if record.get("val_total", float("inf")) < state["best"]:
                state["best"] = record["val_total"]
                extra["best"] = state["best"]
                save_checkpoint(out / "best.pt", model, opt, cfg, cond, extra)
            with open(out / "history.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        if distributed:
            dist.barrier()
    if args.dump_ranks:
        torch.save(model.state_dict(), out / f"rank{rank}.pt")
    if distributed:
        dist.destroy_process_group()
    return 0


def entry(main_fn) -> None:
    """Run a training command as a script: user errors are one line and exit status 2."""
    try:
        sys.exit(main_fn())
    except DrumMachineError as exc:
        print(f"drummachine: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    entry(main)
