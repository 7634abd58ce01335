import pytest

from drummachine.core.errors import DrumMachineError
from drummachine.core.notemap import GM_NOTEMAP, load_notemap, notemap_from_toml
from drummachine.core.voices import INPUT_MAPS, N_VOICES, VOICE_INDEX, input_map
from drummachine.midi.files import read_midi

from .conftest import ROOT, fixture_midis


def _notes_in(paths):
    notes = set()
    for p in paths:
        notes.update(read_midi(p).notes.pitches.tolist())
    return notes


def test_every_fixture_note_maps_to_a_voice():
    notes = _notes_in(fixture_midis())
    assert notes, "fixtures hold notes"
    for name in ("td11", "gm"):
        missing = {n for n in notes if n not in INPUT_MAPS[name]}
        assert not missing, f"{name} map misses {sorted(missing)}"


@pytest.mark.dataset
def test_every_dataset_note_maps_to_a_voice(full_dataset):
    notes = _notes_in(sorted(full_dataset.rglob("*.mid")))
    # the notes the Groove MIDI Dataset is known to use
    assert notes == {22, 26, 36, 37, 38, 40, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 55, 57, 58, 59}
    assert all(n in INPUT_MAPS["td11"] for n in notes)


@pytest.mark.parametrize("note,voice", [
    (36, "kick"), (38, "snare"), (40, "snare"), (37, "snare"), (22, "closed_hat"), (44, "closed_hat"),
    (26, "open_hat"), (46, "open_hat"), (43, "low_tom"), (58, "low_tom"), (45, "mid_tom"), (47, "mid_tom"),
    (48, "high_tom"), (50, "high_tom"), (49, "crash"), (55, "crash"), (57, "crash"), (52, "crash"),
    (51, "ride"), (53, "ride"), (59, "ride"),
])
def test_td11_table(note, voice):
    assert input_map("td11")[note] == VOICE_INDEX[voice]


def test_gm_output_map_is_one_note_per_voice():
    assert len(set(GM_NOTEMAP.notes)) == N_VOICES
    assert all(input_map("gm")[n] == i for i, n in enumerate(GM_NOTEMAP.notes))


def test_shipped_notemaps_load():
    paths = sorted((ROOT / "presets" / "notemaps").glob("*.toml"))
    assert len(paths) >= 3
    for p in paths:
        m = load_notemap(p)
        assert len(m.notes) == N_VOICES and 1 <= m.channel <= 16


@pytest.mark.parametrize("text,message", [
    ("name = 'x'\n[notes]\nkick = 200\n", "kick): 200 is not a note number; allowed: 0-127"),
    ("name = 'x'\n[notes]\ncowbell = 56\n", "unknown voice"),
    ("channel = 17\n", "allowed: 1-16"),
    ("name = 'x'\ncolor = 'red'\n", "unknown key"),
    ("name = \n", "malformed TOML"),
    ("latency_ms = 300\n", "300 is out of range; allowed: 0-200 (ms)"),
    ("latency_ms = 'fast'\n", "'fast' is out of range; allowed: 0-200 (ms)"),
])
def test_bad_notemap_is_one_clear_line(text, message):
    with pytest.raises(DrumMachineError) as exc:
        notemap_from_toml(text, "my.toml")
    assert message in str(exc.value) and "my.toml" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_notemap_carries_its_modules_latency():
    assert notemap_from_toml("name = 'x'\nlatency_ms = 6.5\n", "my.toml").latency_ms == 6.5
    assert notemap_from_toml("name = 'x'\n", "my.toml").latency_ms == 0.0


def test_notemap_error_names_the_line():
    with pytest.raises(DrumMachineError, match=r"my.toml:4 \(snare\)"):
        notemap_from_toml("name = 'x'\n[notes]\nkick = 36\nsnare = -1\n", "my.toml")


# --- the kit's layers --------------------------------------------------------------------------

def _ranged_kit(ranges, round_robin=False):
    import numpy as np

    from drummachine.audio.kit import Kit, synth_kit

    base = synth_kit(48000)
    layers = list(base.layers)
    layers[0] = tuple(np.full(10, k, np.float32) for k in range(len(ranges)))  # layer k holds the value k
    all_ranges = [((0.0, 1.0),) * len(v) for v in base.layers]
    all_ranges[0] = tuple(ranges)
    return Kit("t", 48000, tuple(layers), ranges=tuple(all_ranges),
               round_robin=(round_robin,) + (False,) * (N_VOICES - 1))


@pytest.mark.parametrize("ranges,velocity,layer", [
    (((0.0, 0.5), (0.5, 1.0)), 0.2, 0),
    (((0.0, 0.5), (0.5, 1.0)), 0.9, 1),
    (((0.0, 0.2029), (0.2029, 0.3768), (0.3696, 0.7319)), 0.372, 1),  # overlapping ranges: the first that fits
    (((0.0, 0.3), (0.6, 1.0)), 0.4, 0),  # a gap: the nearest
    (((0.0, 0.3), (0.6, 1.0)), 0.55, 1),
])
def test_the_velocity_chooses_the_layer(ranges, velocity, layer):
    kit = _ranged_kit(ranges)
    assert kit.sample(0, velocity)[0][0] == layer


def test_round_robin_among_equal_layers_only_unless_the_kit_asks_for_it():
    kit = _ranged_kit(((0.0, 1.0), (0.0, 1.0), (0.5, 1.0)))
    assert [int(kit.sample(0, 0.8)[0][0]) for _ in range(4)] == [0, 1, 0, 1]
    kit.rewind()
    assert int(kit.sample(0, 0.8)[0][0]) == 0
    rr = _ranged_kit(((0.0, 1.0), (0.0, 1.0), (0.5, 1.0)), round_robin=True)  # Hydrogen's ROUND_ROBIN
    assert [int(rr.sample(0, 0.8)[0][0]) for _ in range(3)] == [0, 1, 2]
    assert [int(rr.sample(0, 0.2)[0][0]) for _ in range(3)] == [1, 0, 1]  # the turn is the voice's


def test_a_packed_kit_unpacks_to_the_same_sounds(tmp_path):
    import numpy as np

    from drummachine.audio.kit import from_packed, open_kit, pack, synth_kit
    from drummachine.audio.wavfile import write_wav
    from drummachine.core.voices import VOICES

    built_in = synth_kit(48000)
    again = from_packed(*pack(built_in).__dict__.values())
    for v in range(N_VOICES):
        for velocity in (0.1, 0.4, 0.6, 0.99):
            np.testing.assert_array_equal(again.sample(v, velocity)[0], built_in.sample(v, velocity)[0])
    assert open_kit(None).name == "built-in"
    for v in VOICES:
        write_wav(tmp_path / f"{v.name}.wav", np.ones(100) * 0.3, 44100)
    folder_kit = open_kit(str(tmp_path), 48000)
    assert folder_kit.name == tmp_path.name and len(folder_kit.layers[0][0]) == round(100 * 48000 / 44100)
