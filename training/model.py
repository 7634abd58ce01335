"""The groove transformer: a small causal decoder that plays one 16th step per token.

Each token is one step. Its input is what was played on the step before (hits, velocities and
offsets of the nine voices) plus the conditioning of the step being played: style, tempo, step
in bar, bar in phrase and the bar's cue attributes (intensity, density, complexity,
syncopation, fill) and kit palette (per voice: played in this bar, not played, or left to the
model). Its output, per voice: a hit logit, and categorical distributions over
velocity bins and offset bins *given a hit*, so a sampled velocity and timing always belong to a
hit, and the hit logits can be biased voice by voice at sampling time.

There is no absolute position embedding: attention is biased by distance (ALiBi), and the only
positions the model sees are musical ones. So a KV cache can drop its oldest steps at any time
and the context slides without a glitch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from drummachine.core.conditioning import CONT_NAMES, N_CONT  # noqa: F401 (re-exported for export.py)

N_VOICES = 9
STEP_FEATURES = 3 * N_VOICES


@dataclass
class ModelConfig:
    """Everything needed to rebuild the model; stored in checkpoints and in the ONNX metadata."""

    n_styles: int = 20  #: style vocabulary size (index 0 = any style)
    d_model: int = 128  #: width of the residual stream
    n_layer: int = 4  #: transformer blocks
    n_head: int = 4  #: attention heads
    d_ff: int = 512  #: hidden width of each block's MLP
    dropout: float = 0.1  #: dropout in training
    context: int = 128  #: steps of attention window (8 bars of 4/4)
    steps_per_bar: int = 16  #: step-in-bar vocabulary
    phrase_bars: int = 4  #: bar-in-phrase vocabulary
    vel_bins: int = 16  #: velocity categories over 0..1
    off_bins: int = 24  #: offset categories over -0.5..0.5 step
    n_cont: int = N_CONT  #: continuous inputs (conditioning.CONT_NAMES)

    @property
    def out_per_voice(self) -> int:
        return 1 + self.vel_bins + self.off_bins

    def to_dict(self) -> dict:
        return asdict(self)


def alibi_slopes(n_head: int) -> torch.Tensor:
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / n_head) for h in range(n_head)])


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.d_model // cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.register_buffer("slopes", alibi_slopes(cfg.n_head).view(1, cfg.n_head, 1, 1), persistent=False)

    def forward(self, x, past_k, past_v):
        # x: (B, T, d); past_k/v: (B, H, P, hd)
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = torch.cat([past_k, k], dim=2)  # (B, H, P+T, hd)
        v = torch.cat([past_v, v], dim=2)
        S = k.shape[2]
        q_pos = torch.arange(T, device=x.device) + (S - T)
        k_pos = torch.arange(S, device=x.device)
        dist = (q_pos.view(T, 1) - k_pos.view(1, S)).to(x.dtype)  # (T, S), >= 0 where allowed
        bias = -self.slopes * dist  # (1, H, T, S)
        bias = bias.masked_fill(dist < 0, float("-inf"))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim)) + bias
        att = self.drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        return self.proj(y), k, v


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x, past_k, past_v):
        a, k, v = self.attn(self.ln1(x), past_k, past_v)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, k, v


class GrooveTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.step_in = nn.Linear(STEP_FEATURES, d)
        self.cont_in = nn.Linear(cfg.n_cont, d)
        self.style = nn.Embedding(cfg.n_styles, d)
        self.pos = nn.Embedding(cfg.steps_per_bar, d)
        self.phrase = nn.Embedding(cfg.phrase_bars, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, N_VOICES * cfg.out_per_voice)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def empty_cache(self, batch: int = 1):
        hd = self.cfg.d_model // self.cfg.n_head
        z = torch.zeros(self.cfg.n_layer, batch, self.cfg.n_head, 0, hd)
        return z, z.clone()

    def forward(self, prev, cats, cont, past_k=None, past_v=None):
        """prev: (B, T, 27) previous steps; cats: (B, T, 3) int64 style/step/phrase;
        cont: (B, T, n_cont) float. past_k/v: (L, B, H, P, hd). Returns logits (B, T, 9, out) and caches."""
        B = prev.shape[0]
        if past_k is None:
            past_k, past_v = self.empty_cache(B)
            past_k, past_v = past_k.to(prev.device), past_v.to(prev.device)
        logits, cache = self.forward_layers(prev, cats, cont, [t for i in range(len(self.blocks))
                                                                for t in (past_k[i], past_v[i])])
        return logits, torch.stack(cache[0::2]), torch.stack(cache[1::2])

    def forward_layers(self, prev, cats, cont, past):
        """As ``forward``, with the cache as one key and one value per layer: ``past`` is
        (k0, v0, k1, v1, ...), each (B, H, P, hd); returns logits and the cache the same way
        (what the ONNX export runs: drummachine.model.model_file.cache_names)."""
        B, T, _ = prev.shape
        x = (self.step_in(prev) + self.cont_in(cont) + self.style(cats[..., 0]) + self.pos(cats[..., 1])
             + self.phrase(cats[..., 2]))
        x = self.drop(x)
        cache = []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, past[2 * i], past[2 * i + 1])
            cache += [k, v]
        logits = self.head(self.ln_f(x)).view(B, T, N_VOICES, self.cfg.out_per_voice)
        return logits, cache


def bins(values: torch.Tensor, lo: float, hi: float, n: int) -> torch.Tensor:
    """Index of the bin of each value in n equal bins over [lo, hi]."""
    return ((values - lo) / (hi - lo) * n).floor().clamp(0, n - 1).long()


def loss_terms(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: ModelConfig):
    """Hit BCE per voice-step, and velocity/offset cross-entropy where there is a hit.

    logits: (B, T, 9, out); target: (B, T, 3, 9) HVO; mask: (B, T) 1 for real steps.
    Returns (hit, velocity, offset) mean losses (nats).
    """
    hit_logit = logits[..., 0]
    vel_logit = logits[..., 1:1 + cfg.vel_bins]
    off_logit = logits[..., 1 + cfg.vel_bins:]
    hits = target[:, :, 0]
    m = mask.unsqueeze(-1).expand_as(hits)
    hit_loss = (F.binary_cross_entropy_with_logits(hit_logit, hits, reduction="none") * m).sum() / m.sum().clamp(min=1)
    on = (hits > 0.5) & (m > 0)
    if on.any():
        vb = bins(target[:, :, 1], 0.0, 1.0, cfg.vel_bins)
        ob = bins(target[:, :, 2], -0.5, 0.5, cfg.off_bins)
        vel_loss = F.cross_entropy(vel_logit[on], vb[on])
        off_loss = F.cross_entropy(off_logit[on], ob[on])
    else:
        vel_loss = off_loss = hit_logit.sum() * 0.0
    return hit_loss, vel_loss, off_loss
