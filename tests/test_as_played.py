"""The as-played evaluation: plans, the features it compares, overlap, copies, the control check."""

from __future__ import annotations

import numpy as np
import pytest

from drummachine.core.conditioning import AUTO, ON
from drummachine.core.fake_generator import FakeGenerator
from drummachine.core.performer import ANY, CUE_NAMES, Performer, Take, fit
from drummachine.core.voices import CLOSED_HAT, KICK, N_VOICES, RIDE, SNARE
from drummachine.corpus import as_played as ap


def bar(hits: dict[int, list[int]], vel=0.8, off=0.0) -> np.ndarray:
    b = np.zeros((16, 3, N_VOICES), np.float32)
    for v, steps in hits.items():
        b[steps, 0, v] = 1.0
        b[steps, 1, v] = vel
        b[steps, 2, v] = off
    return b


def test_features_by_hand():
    a = bar({KICK: [0, 8], SNARE: [4, 12], CLOSED_HAT: [0, 2, 4, 6, 8, 10, 12, 14]})
    b = bar({KICK: [0, 8, 11], SNARE: [4, 12], CLOSED_HAT: [0, 2, 4, 6, 8, 10, 12, 14]})
    f = ap.features(np.stack([a, b, b]))
    assert f["density_total"].tolist() == [12, 13, 13]
    assert f["density_kick"].tolist() == [2, 3, 3]
    assert np.isnan(f["repetition"][0])
    assert f["repetition"][1] == pytest.approx(12 / 13) and f["repetition"][2] == 1.0  # Jaccard
    assert f["odd_share"][1] == pytest.approx(1 / 13)
    assert f["velocity_spread"][0] == pytest.approx(0.0, abs=1e-6)
    # repetition restarts with each performance
    g = ap.features_of([np.stack([a, b]), np.stack([b, b])])
    assert np.isnan(g["repetition"][[0, 2]]).all() and g["repetition"][3] == 1.0
    # swing: odd 16ths later than even ones
    s = bar({CLOSED_HAT: list(range(16))})
    s[1::2, 2, CLOSED_HAT] = 0.2
    assert ap.features(s[None])["swing"][0] == pytest.approx(0.2)


def test_overlap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    assert ap.overlap(x, x) == 1.0
    assert ap.overlap(x, x + 100) == 0.0
    assert 0.5 < ap.overlap(x, x + 1.0) < 0.7  # two unit normals a sd apart share 62%
    assert np.isnan(ap.overlap(np.array([np.nan]), x))


def test_copies():
    a, b = bar({KICK: [0]}), bar({KICK: [0], SNARE: [4]}, vel=0.3, off=0.1)
    keys = ap.train_keys(np.stack([a]))
    assert ap.copy_share(np.stack([a, b, bar({KICK: [0]}, vel=0.1)]), keys) == pytest.approx(2 / 3)
    assert ap.copy_share(np.stack([np.zeros_like(a), b]), ap.train_keys(np.zeros_like(a)[None]), nonempty=True) == 0.0


def test_constant_plan_is_todays():
    gen = FakeGenerator()
    cues = ap.constant_plan(gen.cond)("rock", 110.0, 17, seed=0)
    fills = [c.fill for c in cues]
    assert [i for i, f in enumerate(fills) if f] == [7, 15]
    beats = {c for c, f in zip(cues, fills) if not f}
    assert len(beats) == 1 and next(iter(beats)).palette == (AUTO,) * N_VOICES


def tiny_table():
    rng = np.random.default_rng(0)
    takes = []
    for k in range(12):
        n = 24
        cues = np.clip(0.5 + 0.1 * rng.standard_normal((n, 4)), 0, 1)
        pal = np.where(rng.random((n, N_VOICES)) < 0.5, ON, -1)
        takes.append(Take("rock", 110.0, cues, pal, rng.random(n) < 0.1, np.arange(n)))
    return fit(takes, {s: {c: 0.5 for c in CUE_NAMES} for s in ("rock", ANY)})


def test_performer_plan_and_generation():
    gen = FakeGenerator()
    perf = Performer(tiny_table())
    plan = ap.performer_plan(gen.cond, perf)
    cues = plan("rock", 110.0, 16, seed=5)
    assert cues == plan("rock", 110.0, 16, seed=5) and cues != plan("rock", 110.0, 16, seed=6)
    assert cues[7].fill and cues[15].fill  # asked fills still land
    assert len({c.intensity for c in cues}) > 4  # the dynamics move
    assert all(c.palette[RIDE] != AUTO for c in cues if not c.fill)  # the performer picks the kit
    perfs = [("rock", 110.0, np.zeros((5, 16, 3, 9), np.float32)), ("funk", 95.0, np.zeros((3, 16, 3, 9), np.float32))]
    bars, styles = ap.generate_as_played(gen, perfs, plan, seeds=(0, 1))
    assert [len(b) for b in bars] == [5, 3, 5, 3] and styles == ["rock", "funk"] * 2
    # the jam starts from silence, bar_in_phrase counts bars mod 4, and the style is told
    steps = [c for c in gen.calls if c[0] == "step"]
    assert steps[-1][3] == 2 and steps[-1][1] == gen.cond.style_index("funk")
    # palette OFF picks are obeyed by what plays (the first pass, first performance: plan seed 0)
    for b, c in zip(bars[0], plan("rock", 110.0, 5, seed=0)):
        for v in range(N_VOICES):
            if c.palette[v] == -1:
                assert b[:, 0, v].sum() == 0


def test_table_targets_and_format():
    rng = np.random.default_rng(1)
    real = [np.stack([bar({KICK: [0, 8], SNARE: [4, 12], CLOSED_HAT: list(range(0, 16, 2 + int(rng.integers(2))))},
                          vel=float(rng.uniform(0.4, 0.9))) for _ in range(8)]) for _ in range(6)]
    same = ap.table(real, ["rock"] * 6, real, ["rock"] * 6)
    assert same["pooled"]["mean_overlap"] == 1.0 and same["per_style"]["rock"]["bars"] == 48
    loop = [np.repeat(r[:1], 8, axis=0) for r in real]
    t = ap.table(loop, ["rock"] * 6, real, ["rock"] * 6)
    assert t["pooled"]["features"]["repetition"]["ratio"] > 1.0
    t["copies"] = 0.0
    got = ap.targets(t, same, copies_real=0.01)
    assert got["copies<=drummers"][1] and not got["repetition_ratio_within_15%"][1]
    text = ap.format_table({"real": same, "loop": t})
    assert "| repetition |" in text and "mean overlap, rock" in text


def test_intensity_control_with_a_plan():
    gen = FakeGenerator()
    perf = Performer(tiny_table())
    res = ap.intensity_control(gen, lambda lv: ap.performer_plan(gen.cond, perf.with_options(drift=0.0, level=0.0),
                                                                 intensity=lv),
                               ["rock"], lambda s: 110.0, levels=6, bars=3)
    assert res["rock"]["loudness_levels"] == pytest.approx(1.0)  # the fake plays louder as asked
    assert res["rock"]["loudness_low_high"][0] < res["rock"]["loudness_low_high"][1]


def test_the_baselines_play_what_they_were_fitted_on_per_style():
    from drummachine.corpus.baselines import BaselinePlayer

    rock = np.zeros((200, 16, 3, N_VOICES), np.float32)  # enough bars that the smoothing is small
    rock[:, ::4, 0, KICK], rock[:, ::4, 1, KICK] = 1.0, 0.8  # four on the floor
    funk = np.zeros((200, 16, 3, N_VOICES), np.float32)
    funk[:, ::2, 0, CLOSED_HAT] = 1.0  # hats alternate with silence: a pattern Markov can follow
    funk[:, ::2, 1, CLOSED_HAT] = 0.5
    perfs, styles = [rock, funk], ["rock", "funk"]
    for kind in BaselinePlayer.KINDS:
        player = BaselinePlayer.fit(kind, perfs, styles)
        played = player.play("rock", 6, np.random.default_rng(0))
        assert played.shape == (6, 16, 3, N_VOICES)
        kicks = played[:, :, 0, KICK].sum() / 6
        assert 3.0 <= kicks <= 5.0 and played[:, :, 0, CLOSED_HAT].sum() < 3  # rock's, not funk's
        assert np.allclose(played[:, :, 1, KICK][played[:, :, 0, KICK] > 0], 0.8)
    markov = BaselinePlayer.fit("markov", perfs, styles).play("funk", 4, np.random.default_rng(1))
    hats = markov[:, :, 0, CLOSED_HAT].reshape(-1)
    assert (hats[1:] + hats[:-1] <= 1).mean() > 0.8  # after a hat, mostly silence
    with pytest.raises(ValueError):
        BaselinePlayer.fit("neural", perfs, styles)
