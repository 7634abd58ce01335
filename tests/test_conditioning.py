"""The conditioning: cues and the kit palette as model inputs (pure numpy)."""

import numpy as np
import pytest

from drummachine.core.conditioning import (AUTO, CLOSED_HAT, CONT_NAMES, N_CONT, NO_PALETTE, OFF, ON, RIDE, Conditioning,
                                      Cues, again_bias, cymbal_name, cymbal_palette, due_floor, palette_features, palette_of,
                                      silenced, step_bias)
from drummachine.corpus import build as corpus
from drummachine.core.errors import DrumMachineError
from drummachine.corpus.windows import PALETTE_ALL_AUTO, Windows, fit_conditioning

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def groove_dataset():
    """Real drummers' bars: the test fixtures from the Groove MIDI Dataset."""
    return corpus.build(FIXTURES)[0]


def test_palette_features_and_cymbals():
    assert len(CONT_NAMES) == N_CONT == 6 + 18
    ride = cymbal_palette("ride")
    assert ride[RIDE] == ON and ride[CLOSED_HAT] == OFF and ride[0] == AUTO
    assert cymbal_name(ride) == "ride" and cymbal_name(NO_PALETTE) == "auto"
    assert cymbal_name(cymbal_palette("hats")) == "hats"
    f = palette_features(ride)
    assert f[RIDE] == 1 and f[9 + RIDE] == 1 and f[CLOSED_HAT] == 1 and f[9 + CLOSED_HAT] == 0 and f[0] == f[9] == 0
    with pytest.raises(DrumMachineError, match="unknown cymbal 'gong'; allowed: auto, hats, open_hats, ride"):
        cymbal_palette("gong")
    with pytest.raises(DrumMachineError, match="palette"):
        Cues(palette=(2,) * 9)
    cond = Conditioning(("any",), {a: list(np.linspace(0, 1, 101)) for a in ("loudness", "density")})
    cont = cond.cont(120.0, Cues(palette=ride))
    assert cont.shape == (N_CONT,) and cont[6 + RIDE] == 1 and cont[6 + 9 + RIDE] == 1


def test_silenced_voices_are_the_palette_offs():
    cond = Conditioning(("any",), {a: list(np.linspace(0, 1, 101)) for a in ("loudness", "density")})
    ride = cymbal_palette("ride")
    off = silenced(cond.cont(120.0, Cues(palette=ride)))
    assert off.tolist() == [p == OFF for p in ride] and off.sum() == 2
    assert not silenced(cond.cont(120.0, Cues())).any()  # nothing known: nothing silenced
    assert not silenced(cond.cont(120.0, Cues(palette=(ON,) * 9))).any()


def test_step_bias_from_the_model_files_corrections():
    cond = Conditioning(("any",), {a: list(np.linspace(0, 1, 101)) for a in ("loudness", "density")})
    style, fill_bias = np.full(9, 0.1), np.array([0, 0, 0, 0, 0.5, 0.5, 0.5, 0, 0.0])
    ride = cymbal_palette("ride")
    assert step_bias(cond.cont(120.0, Cues()), None, fill_bias) is None  # a beat bar, nothing off
    np.testing.assert_allclose(step_bias(cond.cont(120.0, Cues()), style, fill_bias), style)
    on_fill = step_bias(cond.cont(120.0, Cues(fill=True)), style, fill_bias)
    np.testing.assert_allclose(on_fill, style + fill_bias)
    toms_known = (AUTO,) * 4 + (OFF, ON, AUTO) + (AUTO,) * 2  # low tom off, mid tom asked: no fill bias there
    b = step_bias(cond.cont(120.0, Cues(fill=True, palette=toms_known)), None, fill_bias)
    assert b[4] == -np.inf and b[5] == 0.0 and b[6] == 0.5
    b = step_bias(cond.cont(120.0, Cues(palette=ride)), style, None)
    assert np.isneginf(b[[CLOSED_HAT, CLOSED_HAT + 1]]).all() and b[RIDE] == pytest.approx(0.1)
    played = np.full(9, 0.3)  # only where the palette says the bar plays the voice
    b = step_bias(cond.cont(120.0, Cues(fill=True, palette=toms_known)), None, fill_bias, played)
    assert b[4] == -np.inf and b[5] == pytest.approx(0.3) and b[6] == 0.5 and b[0] == 0.0
    assert step_bias(cond.cont(120.0, Cues()), None, None, played) is None


def test_due_floor_keeps_the_palettes_on_once_a_bar_on_an_eighth():
    cond = Conditioning(("any",), {a: list(np.linspace(0, 1, 101)) for a in ("loudness", "density")})
    mid = 5
    palette = tuple(ON if v == mid else OFF if v == CLOSED_HAT else AUTO for v in range(9))
    cont = cond.cont(120.0, Cues(palette=palette))
    none = np.zeros(9, bool)
    f = due_floor(cont, none, 0)
    assert f[mid] == pytest.approx(2 / 16) and f.sum() == f[mid]  # only the voice asked on, not yet played
    assert due_floor(cont, none, 1) is None  # 16ths between the 8ths are the model's alone
    assert due_floor(cont, none, 14)[mid] == 1.0  # the bar's last 8th: now or never
    assert due_floor(cont, none, 16 + 8)[mid] == pytest.approx(2 / 8)  # the step counts within its bar
    played = none.copy()
    played[mid] = True
    assert due_floor(cont, played, 8) is None  # played once: the model's own odds from here
    assert due_floor(cond.cont(120.0, Cues()), none, 14) is None  # nothing asked on, no floor


def test_sampling_floor_never_overrides_a_silenced_voice():
    from drummachine.core.sampling import Steering, sample_step

    logits = np.full((9, 1 + 16 + 24), -30.0)  # the model would play nothing
    floor = np.zeros(9)
    floor[[5, 6]] = 1.0
    bias = np.zeros(9)
    bias[6] = -np.inf  # muted, or the palette's off
    rng = np.random.default_rng(0)
    for _ in range(20):
        hits, vel, _ = sample_step(logits, 16, Steering(), rng, calibration=bias, floor=floor)
        assert hits.tolist() == [v == 5 for v in range(9)] and vel[5] > 0


def test_again_bias_acts_once_the_bar_has_played_a_voice_it_was_asked_for():
    cond = Conditioning(("any",), {a: list(np.linspace(0, 1, 101)) for a in ("loudness", "density")})
    crash = 7
    palette = tuple(ON if v in (crash, 4) else OFF if v == CLOSED_HAT else AUTO for v in range(9))
    cont = cond.cont(120.0, Cues(palette=palette))
    bias = np.full(9, -0.4)
    played = np.zeros(9, bool)
    assert again_bias(cont, played, bias) is None  # nothing played yet: the first hit is left alone
    played[[crash, 0, CLOSED_HAT]] = True  # the kick is left to the model, the hat is off
    b = again_bias(cont, played, bias)
    assert b[crash] == -0.4 and (np.delete(b, crash) == 0).all()
    assert again_bias(cond.cont(120.0, Cues()), played, bias) is None  # no palette: no again bias


def test_velocity_tilt_moves_the_mean_velocity_of_the_voices_tilted():
    from drummachine.core.sampling import Steering, sample_step

    logits = np.zeros((9, 1 + 16 + 24))
    logits[:, 0] = 30.0  # every voice hits; flat velocity distribution (mean 0.5)
    tilt = np.zeros(9)
    tilt[8], tilt[0] = 3.0, -3.0
    rng = np.random.default_rng(0)
    vel = np.stack([sample_step(logits, 16, Steering(), rng, velocity_tilt=tilt)[1] for _ in range(400)])
    mean = vel.mean(axis=0)
    # an exponential tilt of a flat 0..1 density by 3: mean 1/(1 - e^-3) - 1/3 = 0.72
    assert mean[8] == pytest.approx(0.72, abs=0.03) and mean[0] == pytest.approx(0.28, abs=0.03)
    assert mean[4] == pytest.approx(0.5, abs=0.03)
    assert vel.max() <= 1.0 and vel.min() > 0


def _plain_sample_step(logits, vel_bins, steering, rng, calibration=None, floor=None, velocity_tilt=None):
    """What sampling.sample_step computes, written plainly, voice by voice (it is written for few
    numpy calls): the same uniforms, in the same order, as it draws them."""
    from drummachine.core.sampling import sigmoid

    h, v, o = logits[:, 0], logits[:, 1:1 + vel_bins], logits[:, 1 + vel_bins:]
    if velocity_tilt is not None:
        v = v + velocity_tilt[:, None] * ((np.arange(vel_bins) + 0.5) / vel_bins)
    bias = np.asarray(steering.voice_bias, np.float64) + (0.0 if calibration is None else calibration)
    p = (h + bias > 0).astype(float) if steering.temperature <= 1e-6 else sigmoid((h + bias) / steering.temperature)
    if floor is not None:
        p = np.where(np.isneginf(bias), p, np.maximum(p, floor))
    n_off = o.shape[-1]
    r = rng.random(9 * (3 + vel_bins + n_off))
    u, g = r[:27].reshape(3, 9), r[27:].reshape(9, vel_bins + n_off)
    hits = u[0] < p
    t = steering.timing_temperature

    def draw(lg, noise):  # Gumbel-max: argmax of logits / temperature + Gumbel noise
        return int(np.argmax(lg)) if t <= 1e-6 else int(np.argmax(lg / t - np.log(-np.log(noise))))

    vi = np.array([draw(v[i], g[i, :vel_bins]) for i in range(9)])
    oi = np.array([draw(o[i], g[i, vel_bins:]) for i in range(9)])
    vel = np.where(hits, (vi + u[1]) / vel_bins, 0.0)
    off = np.where(hits, (oi + u[2]) / n_off - 0.5, 0.0)
    return hits, np.clip(vel, 1.0 / 127.0, 1.0) * hits, off


def test_sampling_draws_velocity_and_offset_bins_as_the_softmax_says():
    """The Gumbel-max draw is a draw from softmax(logits / temperature): 40,000 draws of two voices'
    bins against the softmax itself, at two temperatures, one voice tilted."""
    from drummachine.core.sampling import Steering, sample_step, softmax

    rng = np.random.default_rng(3)
    logits = rng.normal(scale=1.5, size=(9, 1 + 16 + 24))
    logits[:, 0] = 40.0  # every voice hits
    tilt = np.zeros(9)
    tilt[2] = 2.0
    for t in (1.0, 0.6):
        draws = [sample_step(logits, 16, Steering(1.0, t), rng, velocity_tilt=tilt) for _ in range(40_000)]
        vel = np.stack([d[1] for d in draws])
        off = np.stack([d[2] for d in draws])
        for voice in (2, 5):
            v_bins = np.bincount(np.minimum((vel[:, voice] * 16).astype(int), 15), minlength=16) / len(draws)
            o_bins = np.bincount(np.minimum(((off[:, voice] + 0.5) * 24).astype(int), 23), minlength=24) / len(draws)
            v_want = softmax((logits[voice, 1:17] + tilt[voice] * (np.arange(16) + 0.5) / 16) / t)
            o_want = softmax(logits[voice, 17:] / t)
            assert np.abs(v_bins - v_want).max() < 0.01, (t, voice)
            assert np.abs(o_bins - o_want).max() < 0.01, (t, voice)


def test_sampling_draws_what_the_plain_arithmetic_draws():
    from drummachine.core.sampling import Steering, sample_step

    rng = np.random.default_rng(1)
    for t in range(600):
        logits = rng.normal(scale=3, size=(9, 1 + 16 + 24)).astype(np.float32)
        steering = Steering((1.0, 0.7, 0.0)[t % 3], (1.0, 0.8, 0.0)[(t // 3) % 3],
                            tuple(rng.normal(size=9)) if t % 5 == 0 else (0.0,) * 9)
        calib = None if t % 2 else rng.normal(size=9)
        if calib is not None and t % 4 == 0:
            calib[3] = -np.inf
        floor = None if t % 3 else rng.random(9) * 0.3
        tilt = None if t % 7 else rng.normal(size=9)
        got = sample_step(logits, 16, steering, np.random.default_rng(t), calibration=calib, floor=floor,
                          velocity_tilt=tilt)
        want = _plain_sample_step(logits, 16, steering, np.random.default_rng(t), calib, floor, tilt)
        assert np.array_equal(got[0], want[0]), t
        np.testing.assert_allclose(got[1], want[1], atol=1e-12)
        np.testing.assert_allclose(got[2], want[2], atol=1e-12)


def test_palette_of_bars():
    bars = np.zeros((2, 16, 3, 9), np.float32)
    bars[0, 3, 0, RIDE] = 1
    bars[1, :, 0, CLOSED_HAT] = 1
    p = palette_of(bars)
    assert p[0, RIDE] == ON and p[0, CLOSED_HAT] == OFF and p[1, CLOSED_HAT] == ON and p[1, RIDE] == OFF


def test_windows_show_hide_or_mask_the_palette(groove_dataset):
    cond = fit_conditioning(groove_dataset)
    w = Windows(groove_dataset, "train", cond, bars=2)
    windows = w.all_windows()[:40]
    target, mask, _, auto = w.batch(windows, palette="auto")
    _, _, _, known = w.batch(windows, palette="known")
    _, _, _, masked = w.batch(windows, palette="masked", palette_rng=np.random.default_rng(0))
    assert auto.shape[-1] == N_CONT and not auto[..., 6:].any()
    m = mask > 0
    assert (known[..., 6:15][m] == 1).all()  # every voice known...
    bar_hits = target[:, :, 0].reshape(len(windows), -1, 16, 9).sum(axis=2) > 0  # ...and played as measured
    played = known[:, ::16, 15:24] > 0
    assert (played[m[:, ::16]] == bar_hits.reshape(len(windows), -1, 9)[m[:, ::16]]).all()
    shown = masked[..., 6:15][m]
    assert 0.0 < shown.mean() < 1.0  # partly hidden, at random
    assert (masked[..., 15:24][m] <= known[..., 15:24][m]).all()  # never claims a voice the bar lacks
    hidden_windows = (masked[:, 0, 6:15].sum(axis=1) == 0).mean()
    assert abs(hidden_windows - PALETTE_ALL_AUTO) < 0.25
