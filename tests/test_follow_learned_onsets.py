"""The learned weight on the tracker's onsets (benchmarks/follow_learned_onsets.py: measured, not
shipped; docs/follow.md, "Tried once more"): the numpy network is the trained one, frame-block by
frame-block as the listening process would run it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
learned = pytest.importorskip("follow_learned_onsets")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A few training steps on made-up clips: what matters here is that the numpy port runs the
    network torch trained."""
    pytest.importorskip("torch")
    data = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for i in range(3):
        frames = 2000
        mags = rng.gamma(1.0, 0.05, (frames, 16)).astype(np.float32)
        beats = np.arange(0.5, frames * learned.HOP / learned.RATE, 0.5)
        for b in beats:  # a loud frame at each beat
            mags[int(b * learned.RATE / learned.HOP)] *= 30
        np.savez(data / f"clip{i}.npz", mags=mags, beats=beats)
    out = data / "weights.npz"
    learned.train(data, out, steps=3)
    return out


def test_the_numpy_network_is_the_trained_one_block_by_block(weights):
    import torch
    from torch import nn

    z = np.load(weights, allow_pickle=False)
    rng = np.random.default_rng(1)
    mags = rng.gamma(1.0, 0.05, (700, 16)).astype(np.float32)
    feats = learned.LevelFeatures(learned.RATE / learned.HOP)(mags)

    x = torch.from_numpy(feats.T[None].copy())
    dilations = [int(d) for d in z["dilations"]]
    names = ["first"] + [f"layers.{i}" for i in range(len(dilations) - 1)]
    for k, (name, d) in enumerate(zip(names, dilations)):
        y = torch.relu(nn.functional.conv1d(nn.functional.pad(x, (2 * d, 0)), torch.from_numpy(z[f"{name}.weight"]),
                                            torch.from_numpy(z[f"{name}.bias"]), dilation=d))
        x = y if k == 0 else x + y
    expected = torch.sigmoid(nn.functional.conv1d(x, torch.from_numpy(z["out.weight"]),
                                                  torch.from_numpy(z["out.bias"])))[0, 0].numpy()

    network = learned.LearnedActivation(weights, learned.RATE / learned.HOP)
    got = np.concatenate([network.frames(mags[a:b]) for a, b in ((0, 1), (1, 4), (4, 4), (4, 300), (300, 700))])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_weighted_tracker_weights_each_frames_onset_strength_by_its_activation(weights):
    """The benchmark's tracker (installed as the runtime's, as ``follow.py --learned-onsets`` does)
    takes each frame's onset strength times FLOOR plus that frame's activation: against the shipped
    tracker on the same audio, every frame's ratio is within [FLOOR, FLOOR + 1] and follows the
    network's output frame by frame (a missing or shifted weight fails)."""
    from drummachine.listen import tracker as tracker_module

    shipped = tracker_module.BeatTracker
    learned.install(weights)
    try:
        weighted = tracker_module.BeatTracker(16000, 120.0)
        assert isinstance(weighted, learned.WeightedTracker)
    finally:
        tracker_module.BeatTracker = shipped
    plain = shipped(16000, 120.0)
    rng = np.random.default_rng(2)
    audio = 0.01 * rng.standard_normal(16000 * 4).astype(np.float32)
    audio[::8000] += 1.0  # a click at 120
    a, b = (onset_strengths(tracker, audio) for tracker in (plain, weighted))
    network = learned.LearnedActivation(weights, learned.RATE / learned.HOP)
    expected = learned.FLOOR + network.frames(learned.band_magnitudes(audio))
    sure = a > 1e-6
    assert a.size == b.size == expected.size and sure.sum() > 20
    np.testing.assert_allclose(b[sure] / a[sure], expected[sure], rtol=1e-4)


def onset_strengths(tracker, audio: np.ndarray) -> np.ndarray:
    """Every frame's onset strength as the tracker takes it, the audio fed in 10 ms blocks."""
    taken = []
    strength = tracker._onset_strength

    def kept(flux):
        taken.append(strength(flux))
        return taken[-1]

    tracker._onset_strength = kept
    for i in range(0, audio.size, 160):
        tracker.process(audio[i:i + 160])
    return np.array(taken)
