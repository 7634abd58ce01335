"""Hydrogen kits: drumkit.xml read, instruments mapped onto voices, velocity layers, round robin and
the hi-hat choke heard in rendered audio, broken kits as one line, the cache and the shared kit.

The kit is tests/fixtures/hydrogen_kit ("Test Tones", CC0): every sample a tone of its own
frequency, so the loudest frequency of a rendered stretch says which sample played."""

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from drummachine.audio import hydrogen
from drummachine.audio import render as mixer
from drummachine.audio.kit import SharedKit, decode, from_packed, open_kit
from drummachine.audio.mixing import Voices
from drummachine.core.errors import DrumMachineError
from drummachine.core.voices import CLOSED_HAT, CRASH, KICK, OPEN_HAT, RIDE, SNARE

from .conftest import ROOT, run_cli

KIT = ROOT / "tests" / "fixtures" / "hydrogen_kit"
RATE = 48000


@pytest.fixture(autouse=True)
def private_places(tmp_path, monkeypatch):
    """Each test its own cache and config (no user's kits.toml, no cache from another test)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def loudest_hz(audio: np.ndarray, start: int, frames: int = 2048) -> float:
    seg = audio[start:start + frames, 0] + audio[start:start + frames, 1]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    return float(np.argmax(spectrum) * RATE / len(seg))


def test_the_kit_maps_by_name_and_says_what_stands_in():
    kit = hydrogen.read_drumkit(KIT)
    assert kit.name == "Test Tones" and kit.license == "CC0 1.0"
    # the empty slot is left out
    assert [i.name for i in kit.instruments] == ["Kick", "Snare", "Hi-Hat Closed", "Hi-Hat Open", "Crash"]
    sources = {s.voice: s for s in hydrogen.map_voices(kit)}
    assert {v: s.instrument.name for v, s in sources.items() if s.instrument} == {
        "kick": "Kick", "snare": "Snare", "closed_hat": "Hi-Hat Closed", "open_hat": "Hi-Hat Open", "crash": "Crash",
        "ride": "Crash"}
    assert sources["ride"].how == "stand-in: crash"
    for tom in ("low_tom", "mid_tom", "high_tom"):
        assert sources[tom].instrument is None and sources[tom].how == "built-in"
    assert kit.instruments[4].pan == -0.5 and kit.instruments[4].gain == 0.5  # pan_R 0.5: to the left; volume


def test_the_velocity_picks_the_layer_in_rendered_audio():
    kit = open_kit(str(KIT), RATE)
    audio = mixer.render(kit, [0, 12000], [KICK, KICK], [0.3, 0.9])
    assert loudest_hz(audio, 0) == pytest.approx(150, abs=25)
    assert loudest_hz(audio, 12000) == pytest.approx(600, abs=25)


def test_equal_layers_take_turns_and_a_render_is_reproducible():
    kit = open_kit(str(KIT), RATE)
    onsets = [0, 6000, 12000, 18000]
    audio = mixer.render(kit, onsets, [SNARE] * 4, [0.7] * 4)
    heard = [loudest_hz(audio, o, 2048) for o in onsets]
    assert heard == pytest.approx([1000, 1500, 1000, 1500], abs=25)
    np.testing.assert_array_equal(audio, mixer.render(kit, onsets, [SNARE] * 4, [0.7] * 4))


def test_the_closed_hat_chokes_the_open_hat_in_rendered_audio():
    kit = open_kit(str(KIT), RATE)
    assert CLOSED_HAT in kit.chokes[OPEN_HAT] and OPEN_HAT in kit.chokes[CLOSED_HAT]  # one mute group
    ringing = mixer.render(kit, [0], [OPEN_HAT], [0.8], frames=24000)
    choked = mixer.render(kit, [0, 4800], [OPEN_HAT, CLOSED_HAT], [0.8, 0.8], frames=24000)
    after = slice(4800 + 960 + 200, 24000)  # past the closed hat (20 ms) and the choke's fade (4 ms)
    assert np.abs(ringing[after]).max() > 0.1
    assert np.abs(choked[after]).max() == 0.0
    np.testing.assert_array_equal(choked[:4800], ringing[:4800])


def test_the_live_mixer_plays_the_kit_as_the_renderer_does():
    kit = open_kit(str(KIT), RATE)
    onsets, voices, vels = [100, 3000, 5000, 5300, 9000, 12000], [OPEN_HAT, SNARE, SNARE, CLOSED_HAT, KICK, RIDE], \
        [0.8, 0.5, 0.6, 0.9, 0.2, 0.7]
    n = 20096
    ref = mixer.render(kit, onsets, voices, vels, n)
    live = Voices(kit)
    for o, v, ve in zip(onsets, voices, vels):
        live.add(o, v, ve)
    out = np.zeros((n, 2), np.float32)
    for b in range(0, n, 128):
        blk = np.zeros((128, 2), np.float32)
        live.mix(blk, b)
        out[b:b + 128] = blk
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_flac_and_stereo_44k_samples_are_decoded_to_the_output_rate():
    kit = open_kit(str(KIT), RATE)
    crash = kit.layers[CRASH][0]
    assert crash.dtype == np.float32 and abs(len(crash) - 0.2 * RATE) < 0.01 * RATE  # 0.2 s at 44.1 kHz, resampled
    assert loudest_hz(np.stack([crash, crash], axis=1), 0) == pytest.approx(4000, abs=25)
    left, right = kit.pan_gains()[CRASH]
    assert left > right  # panned to the left by pan_L/pan_R
    assert abs(float(np.abs(kit.layers[KICK][1]).max()) - 0.5) < 0.01  # the FLAC layer, gains applied (1 x 1 x 1)


def broken_copy(tmp_path, how):
    kit = tmp_path / "Broken Kit"
    shutil.copytree(KIT, kit)
    if how == "missing sample":
        (kit / "snare_b.wav").unlink()
    elif how == "bad xml":
        (kit / "drumkit.xml").write_text("<drumkit_info><name>x</name")
    elif how == "unreadable flac":
        (kit / "kick_hard.flac").write_bytes(b"fLaC not really")
    elif how == "no instruments":
        (kit / "drumkit.xml").write_text("<drumkit_info><name>x</name><instrumentList/></drumkit_info>")
    elif how == "bad number":
        text = (kit / "drumkit.xml").read_text().replace("<max>0.5</max>", "<max>half</max>")
        (kit / "drumkit.xml").write_text(text)
    return kit


@pytest.mark.parametrize("how,where,what", [
    ("missing sample", "snare_b.wav", "missing sample"),
    ("bad xml", "drumkit.xml", "not a readable drumkit.xml"),
    ("unreadable flac", "kick_hard.flac", "unreadable sample"),
    ("no instruments", "drumkit.xml", "no instrument with a sample"),
    ("bad number", "instrument 'Kick'", "not a number"),
])
def test_a_broken_kit_is_one_clear_line(tmp_path, how, where, what):
    with pytest.raises(DrumMachineError) as exc:
        open_kit(str(broken_copy(tmp_path, how)), RATE)
    assert where in str(exc.value) and what in str(exc.value) and "\n" not in str(exc.value)


def test_render_with_a_broken_kit_exits_2_with_one_line(tmp_path):
    r = run_cli("render", "-o", tmp_path / "o.wav", "--kit", broken_copy(tmp_path, "unreadable flac"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "kick_hard.flac: unreadable sample" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o.wav").exists()


def test_kits_are_found_by_name_in_the_kit_path(tmp_path, monkeypatch):
    shutil.copytree(KIT, tmp_path / "kits" / "TestTones")
    monkeypatch.setenv(hydrogen.KIT_PATH_VARIABLE, str(tmp_path / "kits"))
    assert hydrogen.find_kit("testtones") == tmp_path / "kits" / "TestTones"
    assert hydrogen.find_kit("Test Tones") == tmp_path / "kits" / "TestTones"  # the name in its drumkit.xml
    with pytest.raises(DrumMachineError, match="no kit called 'Cowbell Heaven'; kits: .*TestTones"):
        hydrogen.find_kit("Cowbell Heaven")
    r = run_cli("kits", "test tones")
    assert r.returncode == 0, r.stderr
    assert "TestTones (Test Tones) [CC0 1.0]; lacks low_tom (built-in stands in)" in r.stdout
    assert "ride       Crash (1 layer, by stand-in: crash)" in r.stdout
    r = run_cli("render", "-o", tmp_path / "o.wav", "--kit", "TestTones")
    assert r.returncode == 0 and "kit Test Tones" in r.stdout, r.stderr


def test_the_override_table_wins_and_a_bad_row_is_one_line(tmp_path):
    kit = hydrogen.read_drumkit(KIT)
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "drummachine"
    config.mkdir(parents=True)
    (config / "kits.toml").write_text('["Test Tones"]\nride = "built-in"\nlow_tom = "Snare"\n')
    sources = {s.voice: s for s in hydrogen.map_voices(kit)}
    assert sources["ride"].instrument is None and sources["ride"].how == "built-in"
    assert sources["low_tom"].instrument.name == "Snare" and sources["low_tom"].how == "override"
    assert sources["snare"].instrument.name == "Snare"  # an override does not take it from its own voice
    (config / "kits.toml").write_text('["Test Tones"]\nkick = "Kick"\ncowbell = "Kick"\n')
    with pytest.raises(DrumMachineError, match=r"kits.toml:3 \(cowbell\): unknown voice"):
        hydrogen.map_voices(kit)
    (config / "kits.toml").write_text('["Test Tones"]\nkick = "Bass Drum"\n')
    with pytest.raises(DrumMachineError, match=r"kits.toml:2 \(kick\): 'Bass Drum' is no instrument of Test Tones"):
        hydrogen.map_voices(kit)


def write_kit(folder: Path, instruments: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(KIT / "kick_soft.wav", folder / "a.wav")
    (folder / "drumkit.xml").write_text(f"<drumkit_info><name>{folder.name}</name><instrumentList>{instruments}"
                                        "</instrumentList></drumkit_info>")
    return folder


def test_general_midi_notes_map_what_names_do_not(tmp_path):
    rows = "".join(f"<instrument><name>Sound {k}</name><midiOutNote>{note}</midiOutNote>"
                   "<layer><filename>a.wav</filename></layer></instrument>" for k, note in enumerate((36, 40, 42, 51)))
    sources = hydrogen.map_voices(hydrogen.read_drumkit(write_kit(tmp_path / "gm", rows)), {})
    got = {s.voice: (s.instrument.name, s.how) for s in sources if s.instrument}
    assert got == {"kick": ("Sound 0", "note"), "snare": ("Sound 1", "note"), "closed_hat": ("Sound 2", "note"),
                   "ride": ("Sound 3", "note"), "crash": ("Sound 3", "stand-in: ride"),
                   "open_hat": ("Sound 2", "stand-in: closed_hat")}
    same = "".join(f"<instrument><name>Sound {k}</name><midiOutNote>60</midiOutNote>"
                   "<layer><filename>a.wav</filename></layer></instrument>" for k in range(4))
    sources = hydrogen.map_voices(hydrogen.read_drumkit(write_kit(tmp_path / "same", same)), {})
    assert all(s.instrument is None for s in sources)  # one note for all: the author set none


def test_the_three_generations_of_the_format_are_read(tmp_path):
    old = "<instrument><name>Kick</name><filename>a.wav</filename></instrument>"
    component = ("<instrument><name>Kick</name><pan>0.25</pan><sampleSelectionAlgo>ROUND_ROBIN</sampleSelectionAlgo>"
                 "<instrumentComponent><layer><filename>a.wav</filename><min>0.1</min><max>0.9</max></layer>"
                 "</instrumentComponent></instrument>")
    a = hydrogen.read_drumkit(write_kit(tmp_path / "old", old)).instruments[0]
    b = hydrogen.read_drumkit(write_kit(tmp_path / "new", component)).instruments[0]
    assert (a.layers[0].low, a.layers[0].high, a.round_robin) == (0.0, 1.0, False)
    assert (b.layers[0].low, b.layers[0].high, b.pan, b.round_robin) == (0.1, 0.9, 0.25, True)


def test_the_decoded_kit_is_cached_and_the_cache_follows_the_samples(tmp_path):
    folder = tmp_path / "kit"
    shutil.copytree(KIT, folder)
    kit = hydrogen.read_drumkit(folder)
    sources = hydrogen.map_voices(kit)
    first, cached = hydrogen.decode_kit(kit, sources, RATE)
    assert not cached
    again, cached = hydrogen.decode_kit(kit, sources, RATE)
    assert cached and again.layout == first.layout
    np.testing.assert_array_equal(again.data, first.data)
    data = (folder / "snare_a.wav").read_bytes()
    (folder / "snare_a.wav").write_bytes(data)  # the same sound, a new time stamp: decode again
    os.utime(folder / "snare_a.wav", ns=(1, 1))
    assert not hydrogen.decode_kit(kit, sources, RATE)[1]


def test_the_shared_kit_is_mapped_not_copied_and_private():
    decoded = decode(str(KIT), RATE)
    owner = SharedKit(decoded)
    try:
        mode = stat.S_IMODE(os.stat(f"/dev/shm/{owner.name.lstrip('/')}").st_mode)
        assert mode == 0o600  # readable by this user only
        other = SharedKit(name=owner.name, layout=owner.layout)  # as the mixer process attaches
        kit = other.kit()
        assert all(np.shares_memory(layer, other.data) for voice in kit.layers[:4] for layer in voice)
        assert not kit.layers[KICK][0].flags.writeable
        ref = from_packed(decoded.data, decoded.layout)
        for a, b in zip(kit.layers, ref.layers):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)
        del kit
        other.close()
    finally:
        owner.close()


@pytest.mark.jack
def test_a_hydrogen_kit_plays_through_the_mixer_process_over_jack(jack_server):
    """The kit decoded here, shared with the mixer process, played through a JACK loopback: every
    onset on its sample, the layer its velocity asks for, equal layers in turn, the hat choked."""
    import subprocess
    import time

    from drummachine.audio.process import AudioProcessSink

    sink = AudioProcessSink(str(KIT), RATE, blocksize=128, record_seconds=4.0).wait_ready()
    try:
        subprocess.run(["jack_disconnect", "system:capture_1", "PortAudio:in_0"], capture_output=True)
        subprocess.run(["jack_connect", "PortAudio:out_0", "PortAudio:in_0"], check=True, capture_output=True)
        base = int(sink.clock.now() * RATE) + RATE // 2
        hits = [(0, KICK, 0.3, 150), (9000, KICK, 0.9, 600), (18000, SNARE, 0.7, 1000), (27000, SNARE, 0.7, 1500),
                (36000, OPEN_HAT, 0.8, 2000), (40800, CLOSED_HAT, 0.8, 3000)]
        for offset, voice, velocity, _ in hits:
            assert sink.events.push(base + offset, voice, velocity)
        time.sleep((base + 60000) / RATE - sink.clock.now() + 0.2)
    finally:
        sink.close()
    rec = np.repeat(sink.recording[:, :1], 2, axis=1)
    found = []
    for offset, *_ in hits[:5]:  # (the closed hat starts over the ringing open hat)
        f = base + offset
        loud = np.flatnonzero(np.abs(rec[f: f + 1024, 0]) > 1e-5)
        found.append(int(loud[0]) if loud.size else -1)
    assert min(found) >= 0 and len(set(found)) == 1, found  # one fixed loopback delay: each on its sample
    delay = found[0]
    for offset, _, _, hz in hits[:4]:
        assert loudest_hz(rec, base + offset + delay, 2048) == pytest.approx(hz, abs=25)
    choke_end = base + 40800 + delay + 960 + 200
    assert np.abs(rec[choke_end:base + 60000, 0]).max() == 0.0  # the open hat (0.5 s) cut by the closed
    assert sink.underruns <= 0.02 * sink.callbacks


def test_the_shipped_override_table_names_real_voices():
    import tomllib

    table = tomllib.loads((ROOT / "presets" / "kits.toml").read_text())
    assert table and all(set(rows) <= set(hydrogen.VOICE_NAMES) and all(isinstance(v, str) for v in rows.values())
                         for rows in table.values())


@pytest.mark.jack
def test_play_with_a_broken_kit_warns_once_and_plays_the_built_in_kit(jack_server, tmp_path):
    r = run_cli("play", "--fake-model", "--no-ui", "--duration", "2", "--kit", broken_copy(tmp_path, "missing sample"),
                timeout=120)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("drummachine: warning:")]
    assert len(warnings) == 1 and "snare_b.wav: missing sample" in warnings[0]
    assert "the built-in kit plays instead" in warnings[0] and "Traceback" not in r.stderr
    import re

    played = re.search(r"played (\d+) steps", r.stdout)
    assert played and int(played.group(1)) > 0, r.stdout  # it played on, through the built-in kit


def test_a_changed_kit_replaces_its_old_cache_entry(tmp_path):
    folder = tmp_path / "kit"
    shutil.copytree(KIT, folder)
    kit = hydrogen.read_drumkit(folder)
    hydrogen.decode_kit(kit, hydrogen.map_voices(kit), RATE)
    os.utime(folder / "snare_a.wav", ns=(1, 1))
    hydrogen.decode_kit(kit, hydrogen.map_voices(kit), RATE)
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "drummachine" / "kits"
    assert len(list(cache.glob("*.f32"))) == 1 and len(list(cache.glob("*.json"))) == 1
