"""The spectral flux under the tracker: where the onsets are, and the same whatever the blocks."""

import numpy as np

from drummachine.listen.onsets import WINDOW, SpectralFlux

RATE, HOP = 16000, 80


def clicks(seconds=2.0, every=0.5):
    x = np.zeros(int(seconds * RATE), np.float32)
    for t in np.arange(0.25, seconds, every):
        i = int(t * RATE)
        x[i:i + 160] = np.random.default_rng(int(t * 100)).standard_normal(160) * np.hanning(160)
    return x


def test_the_flux_peaks_where_each_click_enters_the_window_and_is_zero_in_silence():
    flux = SpectralFlux(RATE, HOP).frames(clicks())
    assert np.all(SpectralFlux(RATE, HOP).frames(np.zeros(RATE, np.float32)) == 0.0)
    peaks = [i for i in range(1, flux.size - 1) if flux[i] > flux[i - 1] and flux[i] >= flux[i + 1]
             and flux[i] > 0.5 * flux.max()]
    # frame i covers samples i*HOP .. i*HOP+WINDOW: a click at t enters it once i*HOP+WINDOW > t*RATE
    entered = [(int(t * RATE) - WINDOW) / HOP for t in (0.25, 0.75, 1.25, 1.75)]
    assert len(peaks) == 4 and all(abs(p - e) <= WINDOW / HOP for p, e in zip(peaks, entered)), (peaks, entered)


def test_blocks_of_any_size_give_the_same_frames():
    x = clicks()
    whole = SpectralFlux(RATE, HOP).frames(x)
    flux = SpectralFlux(RATE, HOP)
    parts, i = [], 0
    for n in (1, 37, 80, 511, 513, 1000) * 20:
        parts.append(flux.frames(x[i:i + n]))
        i += n
        if i >= x.size:
            break
    np.testing.assert_allclose(np.concatenate(parts), whole[:sum(p.size for p in parts)], rtol=1e-5, atol=1e-6)
