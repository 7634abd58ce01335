"""The live mixer's voices: sample for sample what the offline renderer makes, under the ceiling."""

import numpy as np

from drummachine.audio import render as mixer
from drummachine.audio.kit import synth_kit
from drummachine.audio.mixing import Voices


def test_live_voices_mix_exactly_like_the_offline_renderer():
    kit = synth_kit()
    onsets, voices, vels = [100, 5000, 5300, 9000, 12000], [3, 1, 2, 0, 7], [0.8, 0.5, 0.6, 0.9, 0.7]
    n = 20096
    ref = mixer.render(kit, onsets, voices, vels, n)
    v = Voices(kit)
    for o, vo, ve in zip(onsets, voices, vels):
        v.add(o, vo, ve)
    out = np.zeros((n, 2), np.float32)
    for b in range(0, n, 128):
        blk = np.zeros((128, 2), np.float32)
        v.mix(blk, b)
        out[b:b + 128] = blk
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_limiter_never_exceeds_the_ceiling():
    kit = synth_kit()
    v = Voices(kit)
    for k in range(40):  # a pile-up of loud hits
        v.add(k * 7, k % 9, 1.0)
    peak = 0.0
    for b in range(0, 48000, 128):
        blk = np.zeros((128, 2), np.float32)
        v.mix(blk, b)
        v.limit(blk)
        peak = max(peak, float(np.abs(blk).max()))
    assert peak <= mixer.CEILING + 1e-6
