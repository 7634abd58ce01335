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


def _mixed(kit, outs, onsets, voices, vels, n=24064):
    v = Voices(kit, outs=outs)
    for o, vo, ve in zip(onsets, voices, vels):
        v.add(o, vo, ve)
    out = np.zeros((n, v.channels), np.float32)
    for b in range(0, n, 128):
        v.mix(out[b:b + 128], b)
    return out


def test_groups_and_voices_outs_carry_their_voices_and_sum_to_the_stereo_mix():
    from drummachine.audio.mixing import out_channels
    from drummachine.core.voices import VOICE_NAMES

    kit = synth_kit()
    onsets, voices, vels = [100, 2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000], list(range(9)), [0.8] * 9
    stereo = _mixed(kit, "stereo", onsets, voices, vels)
    mono = stereo.sum(axis=1)
    for outs in ("groups", "voices"):
        out = _mixed(kit, outs, onsets, voices, vels)
        assert out.shape[1] == len(out_channels(outs))
        np.testing.assert_allclose(out.sum(axis=1), mono, atol=1e-5)  # nothing lost, nothing twice
    per_voice = _mixed(kit, "voices", onsets, voices, vels)
    for v, name in enumerate(VOICE_NAMES):
        alone = _mixed(kit, "stereo", [onsets[v]], [v], [0.8]).sum(axis=1)
        np.testing.assert_allclose(per_voice[:, v], alone, atol=1e-5)  # channel v: voice v, nothing else
    groups = dict(zip(out_channels("groups"), _mixed(kit, "groups", onsets, voices, vels).T))
    by_voice = dict(zip(VOICE_NAMES, per_voice.T))
    for group, members in (("kick", ("kick",)), ("snare", ("snare",)), ("hats", ("closed_hat", "open_hat")),
                           ("toms", ("low_tom", "mid_tom", "high_tom")), ("overheads", ("crash", "ride"))):
        got = groups[group] if group in groups else groups[group + "_left"] + groups[group + "_right"]
        np.testing.assert_allclose(got, sum(by_voice[m] for m in members), atol=1e-5)
    low_tom = VOICE_NAMES.index("low_tom")  # panned left: more of it in the left tom channel
    hit = slice(onsets[low_tom], onsets[low_tom] + 2000)
    assert np.abs(groups["toms_left"][hit]).max() > 1.5 * np.abs(groups["toms_right"][hit]).max()


def test_an_unknown_outs_layout_is_one_clear_line():
    import pytest

    from drummachine.audio.mixing import out_channels
    from drummachine.core.errors import DrumMachineError

    with pytest.raises(DrumMachineError, match="--outs: unknown layout 'quad'; allowed: stereo, groups, voices"):
        out_channels("quad")
