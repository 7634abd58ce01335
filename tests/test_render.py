import numpy as np
import pytest

from drummachine.audio import render as mixer
from drummachine.audio.kit import load_kit, synth_kit
from drummachine.core.groove import Meter, Notes
from drummachine.core.voices import VOICES
from drummachine.midi.files import write_midi
from drummachine.audio.wavfile import read_wav, write_wav

from .conftest import run_cli


def detect_onsets(x: np.ndarray, rate: int, threshold: float = 1e-3, gap: float = 0.15) -> np.ndarray:
    """First sample above threshold after at least ``gap`` seconds of quiet."""
    loud = np.nonzero(np.abs(x) > threshold)[0]
    if not loud.size:
        return loud
    starts = [loud[0]]
    for a, b in zip(loud[:-1], loud[1:]):
        if b - a > gap * rate:
            starts.append(b)
    return np.array(starts)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_rendered_onsets_line_up_with_the_midi(tmp_path, rate):
    bpm = 97.0
    tpb = 480
    # one hit every ~3 beats plus odd ticks, so onsets fall between samples and steps
    ticks = np.array([7 + i * 1467 for i in range(12)])
    voices = [VOICES[i % 3 * 1 + (i % 3 == 2)].gm_note for i in range(12)]  # kick, snare, closed hat
    notes = Notes(ticks, np.array(voices, np.int16), np.full(12, 100, np.int16), tpb)
    mid = tmp_path / "hits.mid"
    write_midi(mid, notes, bpm, Meter())
    wav = tmp_path / "hits.wav"
    r = run_cli("render", mid, "-o", wav, "--rate", rate)
    assert r.returncode == 0, r.stderr
    audio, sr = read_wav(wav)
    assert sr == rate and audio.shape[1] == 2
    found = detect_onsets(audio.mean(axis=1), rate)
    expected = ticks * 60.0 / (bpm * tpb)
    assert len(found) == len(expected)
    err_ms = np.abs(found / rate - expected) * 1000
    assert err_ms.max() <= 1.0, err_ms


def test_closed_hat_chokes_open_hat():
    kit = synth_kit()
    rate = kit.sample_rate
    open_only = mixer.render(kit, [0], [3], [0.8], rate)
    choked = mixer.render(kit, [0, rate // 10], [3, 2], [0.8, 0.1], rate)
    alone = mixer.render(kit, [rate // 10], [2], [0.1], rate)
    tail = slice(rate // 10 + 400, rate // 2)
    assert np.abs(open_only[tail]).max() > 0.01
    np.testing.assert_allclose(choked[tail], alone[tail], atol=1e-6)


def test_velocity_makes_it_louder():
    kit = synth_kit()
    peaks = [np.abs(mixer.render(kit, [0], [1], [v], 4800)).max() for v in (0.1, 0.5, 1.0)]
    assert peaks[0] < peaks[1] < peaks[2]


def test_built_in_kit_is_deterministic():
    a, b = synth_kit(), synth_kit()
    assert all(np.array_equal(x, y) for va, vb in zip(a.layers, b.layers) for x, y in zip(va, vb))


def test_user_kit_from_wavs(tmp_path):
    rate = 44100
    for v in VOICES:
        write_wav(tmp_path / f"{v.name}.wav", np.sin(np.arange(2000) / 10.0) * 0.5, rate)
    kit = load_kit(tmp_path, 48000)
    assert kit.sample_rate == 48000 and len(kit.layers) == 9
    assert abs(len(kit.layers[0][0]) - round(2000 * 48000 / 44100)) <= 1
