"""The conditioning: cues and the kit palette as model inputs (pure numpy)."""

import numpy as np
import pytest

from drummachine.conditioning import (AUTO, CLOSED_HAT, CONT_NAMES, N_CONT, NO_PALETTE, OFF, ON, RIDE, Conditioning,
                                      Cues, amount_features, cymbal_name, cymbal_palette, palette_features,
                                      palette_of, silenced, step_bias)
from drummachine import corpus
from drummachine.errors import DrumMachineError
from drummachine.windows import AMOUNTS_SHOWN, PALETTE_ALL_AUTO, Windows, fit_conditioning

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def groove_dataset():
    """Real drummers' bars: the test fixtures from the Groove MIDI Dataset."""
    return corpus.build(FIXTURES)[0]


def test_palette_features_and_cymbals():
    assert len(CONT_NAMES) == N_CONT == 6 + 18 + 10
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
    # told how much of each voice, the model needs no correction of how much it plays
    b = step_bias(cond.cont(120.0, Cues(palette=toms_known, amounts=(1.0,) * 9)), None, None, played)
    assert b[4] == -np.inf and b[5] == 0.0


def test_amounts_are_multiples_of_a_voices_typical_hits():
    toms = (AUTO,) * 4 + (OFF, ON, ON) + (AUTO,) * 2
    f = amount_features(toms, (1.0,) * 5 + (2.0, 0.5) + (4.0,) * 2)
    assert f[0] == 1.0 and f[1 + 5] == 1.0 and f[1 + 6] == -1.0
    assert not f[1:6].any() and not f[8:].any()  # only the voices the palette plays carry an amount
    assert not amount_features(toms).any()  # not given
    np.testing.assert_allclose(amount_features(toms, (100.0,) * 9)[1 + 5], 3.0)  # clipped to 8x
    with pytest.raises(DrumMachineError, match="amounts"):
        Cues(palette=toms, amounts=(1.0,) * 8)
    with pytest.raises(DrumMachineError, match=r"amounts.*0.125..8"):
        Cues(palette=toms, amounts=(1.0,) * 8 + (0.0,))
    hits = np.zeros((6, 9))
    hits[:, 0] = [4, 4, 4, 8, 0, 0]  # kick: median 4 over the bars that play it
    hits[:3, 6] = [12, 2, 2]
    cond = Conditioning.fit(["rock"], {a: np.linspace(0, 1, 6) for a in ("loudness", "density", "complexity",
                                                                            "syncopation")},
                            np.array(["rock"] * 6), np.full(6, 100.0), hits)
    assert cond.voice_typical[0] == 4.0 and cond.voice_typical[6] == 2.0 and cond.voice_typical[1] == 1.0
    assert Conditioning.from_json(cond.to_json()).voice_typical == cond.voice_typical
    np.testing.assert_allclose(cond.amounts(hits[0])[[0, 6]], [1.0, 6.0])
    cont = cond.cont(100.0, Cues(palette=toms, amounts=(1.0,) * 6 + (6.0,) + (1.0,) * 2))
    assert cont[CONT_NAMES.index("amounts")] == 1.0
    assert cont[CONT_NAMES.index("amount_high_tom")] == pytest.approx(np.log2(6.0))


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
    assert not known[..., 24:].any()  # "known" shows the palette, not the amounts
    _, _, _, amounts = w.batch(windows, palette="amounts")
    np.testing.assert_array_equal(amounts[..., :24], known[..., :24])
    assert (amounts[..., 24][m] == 1).all()
    bar_counts = target[:, :, 0].reshape(len(windows), -1, 16, 9).sum(axis=2)  # hits per bar and voice
    expect = np.where(bar_counts > 0, np.log2(np.clip(bar_counts / np.array(cond.voice_typical), 0.125, 8)), 0)
    np.testing.assert_allclose(amounts[:, ::16, 25:34][m[:, ::16]], expect[m[:, ::16]], atol=1e-6)
    given = masked[:, 0, 24]
    shown_windows = given[masked[:, 0, 6:15].sum(axis=1) > 0]
    assert abs(shown_windows.mean() - AMOUNTS_SHOWN) < 0.3  # amounts shown with the palette, half the time
    assert (masked[..., 25:34][masked[..., 15:24] == 0] == 0).all()  # none for a voice not shown as played
