"""The evaluation's measures (logic, on hand-made bars and the stand-in generator), and the
control measure on the shipped model: asking for more intensity must give louder, busier bars."""

import numpy as np
import pytest

from drummachine.corpus import evaluation
from drummachine.core.fake_generator import FakeGenerator
from drummachine.core.voices import VOICE_NAMES
from drummachine.core.sections import cues_for


def test_density_by_bar_kind():
    gen, real = np.zeros((3, 16, 3, 9)), np.zeros((3, 16, 3, 9))
    real[:, :4, 0, 4] = 1  # four low-tom hits in every bar
    gen[0, :2, 0, 4] = 1  # the fill bar: half of them
    gen[1:, :4, 0, 4] = 1
    out = evaluation.density_by_bar_kind(gen, real, np.array([True, False, False]))
    assert out["fill_bars"]["low_tom"] == 0.5 and out["beat_bars"]["low_tom"] == 1.0
    assert np.isnan(out["fill_bars"]["kick"])


def test_spearman_ranks_with_ties():
    assert evaluation.spearman(np.arange(10.0), np.arange(10.0) ** 3) == pytest.approx(1.0)
    assert evaluation.spearman(np.arange(10.0), -np.arange(10.0)) == pytest.approx(-1.0)
    a, b = np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])
    expected = np.corrcoef([0.0, 1.5, 1.5, 3.0], [0.0, 1.0, 2.0, 3.0])[0, 1]  # ties share their mean rank
    assert evaluation.spearman(a, b) == pytest.approx(expected)
    assert np.isnan(evaluation.spearman(a, np.ones(4)))


def test_overlap_of_distributions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    assert evaluation.overlap(x, x) == pytest.approx(1.0)
    assert evaluation.overlap(x, x + 100.0) == pytest.approx(0.0)
    assert 0.3 < evaluation.overlap(x, x + 1.0) < 0.8


def _bar(hits: dict[int, list[int]], velocity=0.5, offset=0.0) -> np.ndarray:
    bar = np.zeros((16, 3, 9), np.float32)
    for voice, steps in hits.items():
        bar[steps, 0, voice] = 1.0
        bar[steps, 1, voice] = velocity
        bar[steps, 2, voice] = offset
    return bar


def test_per_bar_statistics_on_hand_made_bars():
    rock = _bar({0: [0, 8], 1: [4, 12], 2: list(range(0, 16, 2))}, velocity=0.5, offset=0.1)
    busier = _bar({0: [0, 8, 10], 1: [4, 12], 2: list(range(16))}, velocity=0.8)
    s = evaluation.per_bar_stats(np.stack([rock, busier]), np.stack([rock, rock]))
    assert s[f"density_{VOICE_NAMES[2]}"].tolist() == [8, 16]
    assert s["velocity_mean"] == pytest.approx([0.5, 0.8])
    assert s["velocity_spread"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert s["offset_mean"] == pytest.approx([0.1, 0.0])
    # repetition: the share of a bar's hits the bar before also had
    assert s["repetition"] == pytest.approx([1.0, 12 / 21])
    cmp = evaluation.compare(s, s)
    assert cmp["velocity_mean"]["ratio"] == pytest.approx(1.0) and cmp["velocity_mean"]["overlap"] == 1.0


def test_voice_intervals_draw_whole_performances():
    rng = np.random.default_rng(0)
    real = np.zeros((40, 16, 3, 9))
    real[:, :, 0] = rng.random((40, 16, 9)) < 0.3
    real[:, :, 1] = np.where(real[:, :, 0] > 0, 0.5, 0.0)
    spans = [(slot, 4) for slot in range(10)]
    same = evaluation.voice_intervals(real, real, spans)
    assert all(v["density"] == pytest.approx([1, 1]) and v["velocity_mean"] == pytest.approx([1, 1])
               for v in same.values())
    gen = real.copy()
    gen[:20, :, 0, 0] = 0  # half the performances never kick: the ratio is 0.5, and hangs on which are drawn
    gen[:, :, 1, 8] *= 1.2  # the ride 20% louder everywhere: no doubt about it
    iv = evaluation.voice_intervals(gen, real, spans, draws=500)
    assert iv["kick"]["density"][0] < 0.4 and 0.6 < iv["kick"]["density"][1] < 1.0
    assert iv["ride"]["velocity_mean"] == pytest.approx([1.2, 1.2]) and iv["ride"]["density"] == pytest.approx([1, 1])
    # a second seed's pass over the same performances adds to them, not to new ones
    twice = evaluation.voice_intervals(np.concatenate([gen, gen]), np.concatenate([real, real]), spans + spans,
                                       draws=500)
    assert twice["kick"]["density"] == pytest.approx(iv["kick"]["density"], abs=1e-9)
    # a voice only one performance of ten plays: many draws have none of it, and no ratio; the
    # interval is over the draws that have one (it was [x, nan] from the fixture's ride)
    rare = real.copy()
    rare[4:, :, :, 7] = 0
    gen_rare = rare.copy()
    gen_rare[:, :, 0, 7] = np.maximum(gen_rare[:, :, 0, 7], rare[:, :, 0, 0])  # the model plays it everywhere
    lone = evaluation.voice_intervals(gen_rare, rare, spans, draws=500)
    assert np.isfinite(lone[VOICE_NAMES[7]]["density"]).all() and lone[VOICE_NAMES[7]]["density"][1] > 2


def test_control_measures_what_the_cues_do():
    gen = FakeGenerator(seed=0)  # velocity follows the intensity cue; fills run down the toms
    c = evaluation.control(gen, lambda s, i, f: cues_for(gen.cond, s, i, f), ["rock", "funk"],
                           lambda s: 110.0, levels=5, bars_per_level=2)
    assert c["intensity_vs_loudness_spearman_bars"] > 0.95
    assert c["intensity_vs_loudness_spearman_bars_within_style"] > 0.95
    assert c["loudness_low_high"][1] > c["loudness_low_high"][0] + 0.3
    assert c["fill_vs_beat_snare_tom_activity"] > 1.5
    assert set(c["intensity_vs_density_spearman_bars_per_style"]) == {"rock", "funk"}


def test_control_finds_a_generator_that_ignores_intensity():
    class Deaf(FakeGenerator):
        def _pattern(self, step_in_bar, cont):
            hvo = super()._pattern(step_in_bar, np.full_like(cont, 0.5))
            hvo[1] = np.where(hvo[0] > 0, self.rng.uniform(0.3, 0.9, 9), 0.0)
            return hvo

    gen = Deaf(seed=0)
    c = evaluation.control(gen, lambda s, i, f: cues_for(gen.cond, s, i, f), ["rock"], lambda s: 110.0,
                           levels=6, bars_per_level=4)
    assert abs(c["intensity_vs_loudness_spearman_bars"]) < 0.5


def test_shipped_model_obeys_intensity():
    from drummachine.model.generator import Generator

    gen = Generator(None, seed=3)
    c = evaluation.control(gen, lambda s, i, f: cues_for(gen.cond, s, i, f), ["rock"],
                           lambda s: 110.0, levels=3, bars_per_level=3)
    lo, hi = c["loudness_low_high"], c["density_low_high"]
    assert hi[0] > lo[0] * 1.3 and hi[1] > lo[1] * 1.2, c
    assert c["fill_vs_beat_snare_tom_activity"] > 1.2, c


def test_evaluate_command_pools_seeds_and_reports_each(tmp_path):
    """`drummachine evaluate` end to end on the shipped model and the real fixture bars."""
    import json

    from .conftest import run_cli, short_fixture

    data = short_fixture(tmp_path)  # stepping the model over the whole fixture took 75 s of the suite
    out = tmp_path / "evaluation.json"
    r = run_cli("evaluate", "--data", data, "--split", "train", "--seeds", "2", "--control-styles", "rock",
                "--out", out)
    assert r.returncode == 0, r.stderr
    assert "lowest-highest seed" in r.stdout
    result = json.loads(out.read_text())
    for key in ("generation", "generation_cymbal_palette", "generation_auto_palette"):
        g = result[key]
        assert g["seeds"] == [0, 1]
        assert set(g["density_ratio_by_seed"]) == set(VOICE_NAMES)
        assert set(g["fill_bars"]) == set(g["beat_bars"]) == set(VOICE_NAMES)
        assert set(g["velocity_by_voice"]) == set(VOICE_NAMES)
        assert all(0.5 < v["mean"] < 2.0 for v in g["velocity_by_voice"].values() if v["mean"] == v["mean"])
        assert all(len(v) == 2 for v in g["density_ratio_by_seed"].values())
        for voice, iv in g["interval_by_voice"].items():  # the pooled ratio lies inside its interval
            pooled = g["all"][f"density_{voice}"]["ratio"]
            if pooled == pooled:
                assert iv["density"][0] - 1e-6 <= pooled <= iv["density"][1] + 1e-6, (voice, iv, pooled)
        # the pooled ratio lies between the seeds' own
        for voice, ratios in g["density_ratio_by_seed"].items():
            pooled = g["all"][f"density_{voice}"]["ratio"]
            assert min(ratios) - 1e-6 <= pooled <= max(ratios) + 1e-6, (voice, ratios, pooled)
    assert result["generation"]["bars"] == sum(c["bars"] for c in result["generation"]["per_style"].values())
    # the split against itself: the drummers do not differ
    for row in ("hits_per_bar_using", "velocity_mean"):
        assert all(v == pytest.approx(1.0) for v in result["drummers_differ"][row].values() if v == v)
    assert result["prediction"]["model"]["hit_nll"] < result["prediction"]["baseline_markov_patterns"]["hit_nll"]


def test_voice_velocities_compare_each_voices_hits():
    from drummachine.corpus.evaluation import voice_velocities

    real = np.zeros((4, 16, 3, 9))
    real[:, ::4, 0, 0] = 1
    real[:, ::4, 1, 0] = np.linspace(0.2, 0.8, 16).reshape(4, 4)
    soft = real.copy()
    soft[:, :, 1, 0] *= 0.5  # half as loud, half the spread
    soft[:, 2, 0, 1], soft[:, 2, 1, 1] = 1, 0.9  # a voice the real bars lack: no ratio
    v = voice_velocities(soft, real)
    assert v["kick"]["mean"] == pytest.approx(0.5) and v["kick"]["spread"] == pytest.approx(0.5)
    assert np.isnan(v["snare"]["mean"]) and set(v) == set(VOICE_NAMES)
