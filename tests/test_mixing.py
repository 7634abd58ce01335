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


def test_a_voice_rings_at_most_polyphony_hits_at_once_live_as_offline():
    """A fifth ride hit fades out the first (one cymbal does not ring five times over); the live
    mixer does exactly what the renderer does."""
    from drummachine.audio.render import POLYPHONY
    from drummachine.core.voices import RIDE

    kit = synth_kit()
    step = 6000  # the ride rings 2.2 s: without a limit all five would still sound at the end
    onsets = [k * step for k in range(POLYPHONY + 1)]
    n = onsets[-1] + 12000
    alone = mixer.render(kit, onsets[:1], [RIDE], [0.8], n)
    five = mixer.render(kit, onsets, [RIDE] * len(onsets), [0.8] * len(onsets), n)
    four = mixer.render(kit, onsets[1:], [RIDE] * POLYPHONY, [0.8] * POLYPHONY, n)
    cut = onsets[-1] + int(0.004 * 48000)
    assert np.abs(alone[cut:]).max() > 0.01  # the first hit alone still rings there
    np.testing.assert_allclose(five[cut:], four[cut:], atol=1e-6)  # ... but not after a fifth hit
    v = Voices(kit)
    out = np.zeros((n, 2), np.float32)
    for o in onsets:
        v.add(o, RIDE, 0.8)
    for b in range(0, n, 128):
        blk = out[b:b + 128]
        v.mix(blk, b)
    np.testing.assert_allclose(out, five, atol=1e-6)
