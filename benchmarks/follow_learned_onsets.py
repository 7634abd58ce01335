"""A learned weight on the tracker's onset strength: measured, not shipped (docs/follow.md, "Tried
once more").

The shipped tracker hears onsets as band-weighted spectral flux (``drummachine.listen.onsets``). Here a
small causal network, trained on clips whose beats are known, says how much each 5 ms frame sounds
like the band's beat; the tracker's onset strength is then multiplied by ``FLOOR`` plus that
activation (``WeightedTracker``), so the flux keeps the timing and the network chooses which onsets
count. The network: 7 dilated causal convolutions (kernel 3, dilations 1..64: 1.3 s of context), 32
channels, residual, 21,761 parameters, fed the 16 bands' log magnitudes (less their running level)
and their rises; trained on bumps (sigma 10 ms) at the band's beats as played. Inference is numpy,
frame-block by frame-block (``LearnedActivation``), as the listening process would run it.

In the replays the validation drummers came out as often worse as better; the 16 held-out POP909
songs better (steady 12.6 -> 9.4 ms at p95) only when the network had trained on other POP909
songs: trained on the drummers alone it was worse there on four scenarios of five. It learns the
material it is trained on; hence not shipped.

    python benchmarks/follow_learned_onsets.py --make-data DIR --groove 80 --pop909 POP909 --pop909-songs 60
    python benchmarks/follow_learned_onsets.py --train DIR --weights W.npz --steps 5000
    python benchmarks/follow.py --replay --learned-onsets W.npz ...   # the replays, as with --tightness

The training clips: the train split's longest performances (both mixes, the five scenarios) and,
with ``--pop909``, POP909's songs from the 41st of those ``follow_outside`` chooses (the first 24
tuned the tracker, the 16 after them are the held-out check). Torch is needed to train only.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import follow_material as material  # noqa: E402

from drummachine.listen import onsets  # noqa: E402
from drummachine.listen import tracker as tracker_module  # noqa: E402

RATE = 16000  #: the clips' rate (the tracker's analysis rate)
HOP = int(round(RATE * tracker_module.FRAME_SECONDS))
FEATURE_EPS = 1e-4  #: the log magnitudes' floor
LEVEL_SECONDS = 1.0  #: the running level taken off the log magnitudes (the band's loudness must not matter)
TARGET_SIGMA = 0.010  #: the training target's bump at each beat, seconds
FLOOR = 0.5  #: onset strength x (FLOOR + activation): 0.2 and 0.5 tried on the validation drummers
POP909_FIRST = 40  #: training songs start after the 24 tuning songs and the 16 held-out ones
DILATIONS = (1, 2, 4, 8, 16, 32, 64)


def band_magnitudes(audio: np.ndarray) -> np.ndarray:
    """(frames, 16): each band's mean magnitude, framed as the tracker's ``SpectralFlux`` frames."""
    flux = onsets.SpectralFlux(RATE, HOP)
    n = (audio.size - onsets.WINDOW) // HOP + 1
    idx = np.arange(onsets.WINDOW)[None, :] + HOP * np.arange(n)[:, None]
    return (np.abs(np.fft.rfft(audio[idx] * flux.hann, axis=1)) @ flux.bands).astype(np.float32)


class LevelFeatures:
    """Band magnitudes -> features, causally: the log magnitudes less their running level, and their rises."""

    def __init__(self, fps: float):
        self.a = 1.0 / (LEVEL_SECONDS * fps)
        self.level: float | None = None
        self.previous: np.ndarray | None = None

    def __call__(self, mags: np.ndarray) -> np.ndarray:
        logs = np.log(FEATURE_EPS + mags.astype(np.float64))
        out = np.empty((logs.shape[0], 2 * logs.shape[1]), np.float32)
        for i, row in enumerate(logs):
            mean = float(row.mean())
            if self.level is None:
                self.level, self.previous = mean, row
            self.level += self.a * (mean - self.level)
            out[i, :row.size] = row - self.level
            out[i, row.size:] = np.maximum(0.0, row - self.previous)
            self.previous = row
        return out


def frame_times(n: int) -> np.ndarray:
    """The tracker's time of each frame's onset (``BeatTracker.frame_time``)."""
    return (np.arange(n) * HOP + onsets.WINDOW / 2) / RATE - tracker_module.ONSET_LAG


def beat_target(times: np.ndarray, beats: np.ndarray) -> np.ndarray:
    k = np.searchsorted(beats, times)
    before = beats[np.clip(k - 1, 0, beats.size - 1)]
    after = beats[np.clip(k, 0, beats.size - 1)]
    d = np.minimum(np.abs(times - before), np.abs(times - after))
    return np.exp(-0.5 * (d / TARGET_SIGMA) ** 2).astype(np.float32)


def make_data(out: Path, groove: int, pop909: Path | None, pop909_songs: int) -> int:
    """Each clip's band magnitudes and its beats as played (audible ones), one .npz a clip."""
    import follow_outside

    jobs = [(f"groove-{i}-{scenario}-{mix}", lambda p=p, b=b, s=scenario, m=mix: material.cached_clip(p, b, s, m))
            for i, (p, b) in enumerate(material.validation_performances(groove, split="train"))
            for scenario in material.SCENARIOS for mix in material.MIXES]
    if pop909 is not None:
        songs = follow_outside.single_tempo_songs(pop909, pop909_songs, skip=POP909_FIRST)
        jobs += [(f"pop909-{Path(s).name}-{scenario}", lambda s=s, b=b, sc=scenario: follow_outside.cached_clip(s, b, sc))
                 for s, b in songs for scenario in ("steady", "accelerando", "jump", "ritardando")]
    out.mkdir(parents=True, exist_ok=True)
    for name, clip_of in jobs:
        file = out / f"{name}.npz"
        if not file.exists():
            clip = clip_of()
            np.savez(file, mags=band_magnitudes(clip.audio),
                     beats=clip.played[clip.audible] + clip.sounds_after)
    return len(jobs)


def train(data: Path, weights: Path, steps: int, channels: int = 32, seed: int = 0) -> None:
    """Fit the network on random 8 s crops; save its weights as plain arrays (no pickle)."""
    import torch
    from torch import nn

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    clips = []
    for file in sorted(glob.glob(str(data / "*.npz"))):
        z = np.load(file)
        gain = 10 ** (rng.uniform(-20, 6) / 20)  # the band's level must not matter
        feats = LevelFeatures(RATE / HOP)(z["mags"] * gain)
        clips.append((feats, beat_target(frame_times(feats.shape[0]), z["beats"])))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv1d(32, channels, 3, dilation=DILATIONS[0])
            self.layers = nn.ModuleList([nn.Conv1d(channels, channels, 3, dilation=d) for d in DILATIONS[1:]])
            self.out = nn.Conv1d(channels, 1, 1)

        def forward(self, x):  # (batch, 32, frames) -> (batch, frames) logits
            x = torch.relu(self.first(nn.functional.pad(x, (2 * DILATIONS[0], 0))))
            for layer, d in zip(self.layers, DILATIONS[1:]):
                x = x + torch.relu(layer(nn.functional.pad(x, (2 * d, 0))))
            return self.out(x)[:, 0]

    net = Net()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    crop, batch, context = 1600, 16, 300
    for step in range(steps):
        picks = [clips[i] for i in rng.integers(len(clips), size=batch)]
        n = min(crop, min(f.shape[0] for f, _ in picks))
        starts = [int(rng.integers(0, f.shape[0] - n + 1)) for f, _ in picks]
        x = torch.from_numpy(np.stack([f[s:s + n] for (f, _), s in zip(picks, starts)])).transpose(1, 2)
        y = torch.from_numpy(np.stack([t[s:s + n] for (_, t), s in zip(picks, starts)]))
        loss = nn.functional.binary_cross_entropy_with_logits(net(x)[:, context:], y[:, context:],
                                                              pos_weight=torch.tensor(4.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == int(0.7 * steps):
            for group in opt.param_groups:
                group["lr"] = 5e-4
        if step % 500 == 0:
            print(step, round(loss.item(), 4), flush=True)
    np.savez(weights, dilations=np.array(DILATIONS), **{k: v.detach().numpy() for k, v in net.state_dict().items()})


class LearnedActivation:
    """The network in numpy, streaming: band magnitudes in, each frame's activation (0..1) out."""

    def __init__(self, weights: str | os.PathLike, fps: float):
        z = np.load(weights, allow_pickle=False)
        self.dilations = [int(d) for d in z["dilations"]]
        names = ["first"] + [f"layers.{i}" for i in range(len(self.dilations) - 1)]
        self.w = [z[f"{n}.weight"].astype(np.float32) for n in names]  # (out, in, 3)
        self.b = [z[f"{n}.bias"].astype(np.float32) for n in names]
        self.w_out = z["out.weight"][0, :, 0].astype(np.float32)
        self.b_out = float(z["out.bias"][0])
        self.past = [np.zeros((2 * d, w.shape[1]), np.float32) for d, w in zip(self.dilations, self.w)]
        self.features = LevelFeatures(fps)

    def frames(self, mags: np.ndarray) -> np.ndarray:
        h = self.features(mags)
        for k, (d, w, b) in enumerate(zip(self.dilations, self.w, self.b)):
            full = np.concatenate([self.past[k], h])
            self.past[k] = full[-2 * d:]
            n = h.shape[0]
            y = np.maximum(b + full[:n] @ w[:, :, 0].T + full[d:d + n] @ w[:, :, 1].T + full[2 * d:] @ w[:, :, 2].T, 0.0)
            h = y if k == 0 else h + y
        return 1.0 / (1.0 + np.exp(-(h @ self.w_out + self.b_out)))


class WeightedFlux(onsets.SpectralFlux):
    """The shipped flux; each frame's band magnitudes also go through the network (``activations``)."""

    def __init__(self, rate: float, hop: int, weights: str | os.PathLike):
        super().__init__(rate, hop)
        self.network = LearnedActivation(weights, rate / hop)
        self.activations: list[float] = []  # the frames' of the last call, oldest first

    def frames(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self.pending, x])
        n = (buf.size - onsets.WINDOW) // self.hop + 1 if buf.size >= onsets.WINDOW else 0
        if n <= 0:
            self.pending = buf
            return np.zeros(0, np.float32)
        idx = np.arange(onsets.WINDOW)[None, :] + self.hop * np.arange(n)[:, None]
        mags = np.abs(np.fft.rfft(buf[idx] * self.hann, axis=1)) @ self.bands
        self.pending = buf[n * self.hop:]
        self.activations = self.network.frames(mags).tolist()
        spec = np.log1p(100.0 * mags).astype(np.float32)
        prev = np.concatenate([[self.prev_spec if self.prev_spec is not None else spec[0]], spec[:-1]])
        self.prev_spec = spec[-1]
        return (np.maximum(spec - prev, 0.0) * self.band_weight).sum(axis=1)


WEIGHTS: dict = {"path": None}


class WeightedTracker(tracker_module.BeatTracker):
    """The shipped tracker whose onset strength is weighted by the network's activation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flux = WeightedFlux(self.arate, self.hop, WEIGHTS["path"])

    def _onset_strength(self, flux: float) -> float:
        # the tracker takes a call's frames in order, one _onset_strength each
        weight = FLOOR + (self.flux.activations.pop(0) if self.flux.activations else 0.0)
        return super()._onset_strength(flux) * weight


def install(weights: str | os.PathLike) -> None:
    """Every tracker made from now on in this process is a ``WeightedTracker`` (as follow_path.install)."""
    WEIGHTS["path"] = weights
    tracker_module.BeatTracker = WeightedTracker


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-data", type=Path, metavar="DIR")
    ap.add_argument("--groove", type=int, default=80, help="--make-data: the train split's longest performances")
    ap.add_argument("--pop909", type=Path, default=None, help="--make-data: the POP909-Dataset's POP909 folder")
    ap.add_argument("--pop909-songs", type=int, default=60)
    ap.add_argument("--train", type=Path, metavar="DIR")
    ap.add_argument("--weights", type=Path, default=Path("learned_onsets.npz"))
    ap.add_argument("--steps", type=int, default=5000)
    args = ap.parse_args(argv)
    if args.make_data:
        print(make_data(args.make_data, args.groove, args.pop909, args.pop909_songs), "clips")
    if args.train:
        train(args.train, args.weights, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
