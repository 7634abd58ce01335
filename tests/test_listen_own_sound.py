"""The machine's own kit taken out of what it hears (``listen.own_sound``): the canceller on a real
drummer's kit through a stage's path, the tracker following the band and not itself, and the
listening process on JACK taking the kit's ports in beside the band's."""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import pytest

from drummachine.listen import own_sound
from drummachine.listen.own_sound import OwnSoundCanceller, open_canceller
from drummachine.listen.capture import Capture
from drummachine.listen.process import own_kit_taken_out
from drummachine.listen.tracker import BeatTracker

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
material = pytest.importorskip("follow_material")

needs_groove = pytest.mark.skipif(not (material.GROOVE / "info.csv").exists(),
                                  reason="the Groove MIDI Dataset is not on this machine")
needs_speex = pytest.mark.skipif(open_canceller(16000)[0] is None, reason="libspeexdsp is not installed")
BLOCK = 160


@pytest.fixture(scope="module")
def band_and_kit():
    """A drummer's band (no drums) for 16 bars, and the machine's kit: the same drummer's groove on a
    steady grid half a beat off the band's (its backbeat on the band's beats: the worst case)."""
    performance = material.validation_performances(1)[0]
    clip = material.make_clip(*performance, "steady", "band", bars=16)
    return clip, material.own_kit(*performance, clip.seconds)


def cleaned(heard: np.ndarray, kit: np.ndarray) -> np.ndarray:
    canceller = OwnSoundCanceller(16000)
    return np.concatenate([canceller.process(heard[i:i + BLOCK], kit[i:i + BLOCK]) for i in range(0, heard.size, BLOCK)])


def tracked(heard: np.ndarray, kit: np.ndarray, bpm: float, cancel: bool, tracker: BeatTracker | None = None) -> np.ndarray:
    tracker = tracker or BeatTracker(16000, bpm, record_beats=True, canceller=OwnSoundCanceller(16000) if cancel else None)
    for i in range(0, heard.size, BLOCK):
        tracker.process(heard[i:i + BLOCK], kit[i:i + BLOCK])
    return np.array(tracker.beats)


def band_beats_to_lock(beats: np.ndarray, truth: np.ndarray) -> int:
    """The band's beats until 4 in a row have one of ``beats`` within 30 ms."""
    near = [beats.size > 0 and float(np.min(np.abs(beats - t))) < 0.03 for t in truth]
    return next((i for i in range(len(near) - 3) if all(near[i:i + 4])), len(near))


@needs_groove
@needs_speex
def test_the_kit_alone_through_the_stage_is_taken_out(band_and_kit):
    """The kit as a mic hears it (12 ms late, nine reflections to 84 ms): after the filter has
    learnt the path (the clip's first half), what is left is over 20 dB under it (34 dB here)."""
    clip, kit = band_and_kit
    echo = material.with_own_kit(clip, kit, 0.0) - clip.audio
    left = cleaned(echo, kit)
    half = left.size // 2
    removed = 10 * np.log10(np.sum(echo[half:left.size] ** 2) / np.sum(left[half:] ** 2))
    assert removed > 20.0, removed


@needs_groove
@needs_speex
@pytest.mark.parametrize("kit_peak_db", [-36.0, -24.0, 0.0])
def test_a_quiet_kit_is_taken_out_as_deep_as_a_loud_one(band_and_kit, kit_peak_db):
    """SpeexDSP takes out as much as its reference is loud: the kit leaving the mixer with its
    loudest hits at -36 dBFS (a soft intro, a kit recorded low) was taken out by 2 dB, at -24 by
    about 21, at 0 by 31, wherever the echo was in the input. Its gain into the filter is set from
    its own peaks: over 25 dB out at each level (28-37 here). The echo is as loud in each (its
    peaks at -12 dBFS): only the kit's level as the mixer gives it changes."""
    clip, kit = band_and_kit
    kit = kit * (10 ** (kit_peak_db / 20) / float(np.abs(kit).max()))
    echo = np.convolve(kit, material.room_path(16000))[:kit.size].astype(np.float32)
    echo *= 10 ** (-12 / 20) / float(np.abs(echo).max())
    left = cleaned(echo, kit)
    half = left.size // 2
    removed = 10 * np.log10(np.sum(echo[half:left.size] ** 2) / np.sum(left[half:] ** 2))
    assert removed > 25.0, removed


@needs_speex
def test_the_kits_gain_into_the_filter_is_set_from_its_first_notes_and_moves_only_where_it_must():
    """A kit at a usual level is given as it is. A quiet one (a shaker at -40 dBFS) is raised after
    its first half second to 6 dB under full scale, and the filter learns the path again (the
    input taken for the kit alone meanwhile, as over its first notes: the echo's rise is not the
    band's entry); a hit it would put past full scale steps it down at once (to 6 dB under that
    hit), never under 1 (a usual kit's rare hit past full scale is clipped); every hit 24 dB under full scale
    for 8 s of the kit playing steps it up 6 dB; silence does not."""
    loud = OwnSoundCanceller(16000)
    noise = np.random.default_rng(1).uniform(-1.0, 1.0, 16000 * 8).astype(np.float32)
    hits = lambda peak, seconds: noise[:int(seconds * 16000)] * np.float32(peak)  # noqa: E731
    loud.process(np.zeros(32000, np.float32), hits(0.3, 2.0))
    loud.process(np.zeros(128, np.float32), hits(3.0, 0.008))  # a mixer's sum 10 dB past full scale
    assert loud.ref_gain == 1.0 and loud.gain_steps == 0
    canceller = OwnSoundCanceller(16000)
    canceller.process(np.zeros(16000, np.float32), hits(0.01, 1.0))
    assert canceller.ref_gain == 32.0 and canceller.gain_steps == 1 and canceller.learning
    while canceller.learning:
        canceller.process(np.zeros(1600, np.float32), hits(0.01, 0.1))
    canceller.process(np.zeros(128, np.float32), hits(0.1, 0.008))  # a hit 20 dB louder
    assert canceller.ref_gain == 4.0 and canceller.gain_steps == 2 and canceller.learning
    canceller.process(np.zeros(16000 * 30, np.float32), np.zeros(16000 * 30, np.float32))
    assert canceller.ref_gain == 4.0  # silence is not a quiet kit
    canceller.process(np.zeros(16000 * 7, np.float32), hits(0.01, 7.0))  # back at -40 dBFS for 7 s
    assert canceller.ref_gain == 4.0
    canceller.process(np.zeros(32000, np.float32), hits(0.01, 2.0))
    assert canceller.ref_gain == 8.0 and canceller.gain_steps == 3


@needs_groove
@needs_speex
@pytest.mark.parametrize("level_db", [0.0, 6.0])
def test_with_its_kit_as_loud_as_the_band_it_follows_the_band_once_the_kit_is_taken_out(band_and_kit, level_db):
    """Its own kit at the band's level (and 6 dB over) in the input: the tracker alone follows the
    kit (half a beat off: no band beat found), with the kit taken out it finds the band's."""
    clip, kit = band_and_kit
    heard = material.with_own_kit(clip, kit, level_db)
    assert material.scored_beats(clip, tracked(heard, kit, clip.bpm, cancel=False)) < 0.5
    assert material.scored_beats(clip, tracked(heard, kit, clip.bpm, cancel=True)) >= 0.9


@needs_groove
@needs_speex
def test_at_48k_the_kit_is_low_passed_before_the_canceller_gets_it():
    """The kit at 48 kHz through a stage's path (8 ms: not a whole number of the 3 input samples an
    analysis sample averages), the tracker at 48 kHz: its top octave folded by the plain average
    differs between the kit as it left and as the room returned it, and the canceller took 17 dB out
    (a funk's hats and ride; 13-23 dB over the validation drummers); low-passed first, over 24."""
    performance = material.validation_performances(4)[3]
    kit = material.own_kit(*performance, 8.0, rate=48000)
    echo = np.convolve(kit, material.room_path(48000, 8.0))[:kit.size].astype(np.float32)
    tracker = BeatTracker(48000, performance[1], canceller=OwnSoundCanceller(16000))
    for i in range(0, kit.size, 3 * BLOCK):
        tracker.process(echo[i:i + 3 * BLOCK], kit[i:i + 3 * BLOCK])
    assert tracker.canceller.removed_db > 24.0, tracker.canceller.removed_db


@needs_groove
@needs_speex
def test_playing_alone_before_the_band_it_still_hears_the_band_come_in(band_and_kit):
    """Listening starts in silence, the machine starts playing (its kit 6 dB over the band to come, as
    a mic on stage hears it) and plays 8 beats alone, then the band comes in half a beat off. The
    kit's first notes are not the band's entry (they were, and the band's own then went unheard),
    and while the filter learns what is left of the kit falls by 15 dB: the band's entry is heard
    over what is left then, not over the kit's first second. The tracker starts over there and
    finds the band within 8 of its beats. Each part checked: with the level sinking 0.5 dB a second
    (as for a room alone), or the entry judged against the level alone, no entry is heard; with the
    kit's first notes allowed to be the band's entry, it found the band after 16 beats."""
    clip, _ = band_and_kit
    silence, lead = 8000, int(round(8 * 60 / clip.bpm * 16000))  # 8 beats: the kit stays half a beat off the band
    band = dataclasses.replace(clip, audio=np.concatenate([np.zeros(silence + lead, np.float32), clip.audio]),
                               beats=clip.beats + (silence + lead) / 16000)
    kit = np.concatenate([np.zeros(silence, np.float32), material.own_kit(band.name, band.bpm, band.seconds)])
    heard = material.with_own_kit(band, kit, 6.0)
    tracker = BeatTracker(16000, band.bpm, record_beats=True, canceller=OwnSoundCanceller(16000))
    beats = tracked(heard, kit, band.bpm, True, tracker)
    assert tracker.entries == 1
    assert band_beats_to_lock(beats, band.beats) <= 8


@needs_groove
@needs_speex
def first_sure_readings(band, kit: np.ndarray, kit_db: float | None) -> tuple[BeatTracker, list, float]:
    """The tracker with its canceller over the band and the machine's ``kit`` (heard ``kit_db`` against
    the band through a stage's path; None: not in the input), from the kit's first notes: the tracker,
    its first 4 readings the follower would lock on (when, the band's next beat), and when the
    canceller's first learning ended."""
    heard = band.audio if kit_db is None else material.with_own_kit(band, kit, kit_db)
    tracker = BeatTracker(16000, band.bpm, canceller=OwnSoundCanceller(16000))
    sure, learnt_at = [], None
    for i in range(0, heard.size, BLOCK):
        tracker.process(heard[i:i + BLOCK], kit[i:i + BLOCK])
        now = tracker.samples / 16000
        if learnt_at is None and tracker.kit_first_notes_over:
            learnt_at = now
        if tracker.confidence >= 0.5 and tracker.next_beat > 0 and len(sure) < 4:
            sure.append((now, tracker.next_beat))
    return tracker, sure, learnt_at


def misses(band, sure: list) -> list[float]:
    return [float(np.min(np.abs(band.beats - beat))) for _, beat in sure]


@needs_groove
@needs_speex
def test_a_band_coming_in_while_the_canceller_learns_is_not_folded_with_the_kit(band_and_kit):
    """Listening starts with the machine's kit (6 dB over the band, as a mic on stage hears it), and
    the band comes in a second later, half a beat off it: while the canceller learns the kit's first
    notes no entry can be heard, and the kit is in the input nearly whole. The tracker estimates
    nothing until the canceller has learnt, then forgets what it heard meanwhile: its first sure
    readings put the band's next beat within 30 ms of the band's. (Before, its first estimates
    were made on the kit and the band folded together, 203 ms off here; on JACK the follower came
    in on them 45-66 ms off the band's beat.)"""
    clip, _ = band_and_kit
    late = 16000  # the band a second after the kit's first notes
    band = dataclasses.replace(clip, audio=np.concatenate([np.zeros(late, np.float32), clip.audio]),
                               beats=clip.beats + late / 16000)
    tracker, sure, learnt_at = first_sure_readings(band, material.own_kit(band.name, band.bpm, band.seconds), 6.0)
    assert tracker.entries == 0  # no entry heard: the band came in under the kit
    assert tracker.kit_was_heard and tracker.canceller.removed_treble_db > 1.0
    assert len(sure) == 4 and sure[0][0] > learnt_at  # nothing estimated while it learnt
    assert max(misses(band, sure)) < 0.030, misses(band, sure)


@needs_groove
@needs_speex
def test_with_no_kit_in_the_input_a_band_already_playing_is_not_forgotten(band_and_kit):
    """The band playing from the first sample and the machine's kit beside the input but not in it
    (an aux send without the machine): what the canceller takes out while it learns, its bass left
    out, says no kit (it said 2-5 dB with the bass, which SpeexDSP's DC notch takes whatever the
    input), nothing is forgotten, and the tracker is sure 2.3 s in (the first 4 validation drummers'
    bands: 2.3-2.6 s; 4.0-4.2 when the canceller's first seconds were forgotten whatever they held)."""
    clip, _ = band_and_kit
    tracker, sure, learnt_at = first_sure_readings(clip, material.own_kit(clip.name, clip.bpm, clip.seconds), None)
    assert learnt_at is not None and not tracker.kit_was_heard
    assert tracker.canceller.removed_treble_db < 0.5
    assert len(sure) == 4 and sure[0][0] < 2.5
    assert max(misses(clip, sure)) < 0.030, misses(clip, sure)


@needs_speex
def test_the_band_alone_is_left_as_it_was_when_the_kit_is_silent():
    """No kit playing: the input comes out as it went in, but for SpeexDSP's DC notch (the lowest
    bass a few dB down, and a phase shift: 5 degrees at 1 kHz): a tone at 1 kHz keeps its level
    within 0.2 dB, and what changed is 20 dB under it."""
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    band = (0.2 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = cleaned(band + 0.001 * rng.standard_normal(t.size).astype(np.float32), np.zeros_like(band))
    assert out.size == band.size // own_sound.FRAME * own_sound.FRAME
    was, now = band[4000:out.size], out[4000:]
    assert abs(10 * np.log10(np.sum(now ** 2) / np.sum(was ** 2))) < 0.2
    assert 10 * np.log10(np.sum(was ** 2) / np.sum((now - was) ** 2)) > 20


@needs_speex
def test_learning_afresh_keeps_every_sample_in_its_place():
    """``restart`` (the kit read elsewhere against the input) forgets the path, not the samples
    waiting for a frame: what comes out is the input as it went in, none dropped (a dropped one
    would put every onset after it early)."""
    rng = np.random.default_rng(1)
    heard = rng.standard_normal(16000).astype(np.float32) * 0.1
    canceller = OwnSoundCanceller(16000)
    out = [canceller.process(heard[:1000], np.zeros(1000, np.float32))]
    canceller.restart()
    out.append(canceller.process(heard[1000:], np.zeros(15000, np.float32)))
    out = np.concatenate(out)
    assert out.size == 16000 // own_sound.FRAME * own_sound.FRAME
    assert np.corrcoef(out[2000:], heard[2000:out.size])[0, 1] > 0.95  # sample for sample


def test_without_speexdsp_the_canceller_is_one_line_and_nothing_is_taken_out(monkeypatch):
    monkeypatch.setattr(own_sound, "_lib", False)
    canceller, why = open_canceller(16000)
    assert canceller is None and why == "libspeexdsp is not installed (apt-get install libspeexdsp1)"
    tracker = BeatTracker(48000, 120.0)
    said, tap = own_kit_taken_out({"kit_ports": ["drummachine:out_0"]}, Capture(48000, kit=True), tracker)
    assert said == f"its own kit is not taken out of what it hears: {why}" and tracker.canceller is None and tap is None


@needs_speex
def test_the_kit_is_taken_out_where_it_comes_in_beside_the_input_or_the_mixer_gives_it():
    """The kit's ports beside the input first; else the mixer's block, read by time
    (``listen.kit_tap``); else nothing; a block that is gone is one line."""
    from drummachine.audio.wire import SharedBlock
    from drummachine.listen.process import TAKEN_OUT_BY_TIME

    tracker = BeatTracker(48000, 120.0)
    assert own_kit_taken_out({"kit_ports": []}, Capture(48000, kit=False), tracker) == ("", None)
    said, tap = own_kit_taken_out({"kit_ports": ["drummachine:out_0"]}, Capture(48000, kit=False), tracker)
    assert said.startswith("its own kit is not taken out of this input") and tracker.canceller is None
    said, tap = own_kit_taken_out({"kit_ports": ["drummachine:out_0"]}, Capture(48000, kit=True), tracker)
    assert said == "taken out" and tap is None
    assert tracker.canceller is not None and tracker.canceller.rate == 16000
    mixer_block = SharedBlock()
    try:
        tracker = BeatTracker(48000, 120.0)
        said, tap = own_kit_taken_out({"kit_ports": ["drummachine:out_0"], "kit_tap": mixer_block.name},
                                      Capture(48000, kit=False), tracker)
        assert said == TAKEN_OUT_BY_TIME and tap is not None and tracker.canceller is not None
        tap.close()
        from multiprocessing import resource_tracker

        # the reader let go of the tracker's hold, as in the listening process; here it was the owner's
        resource_tracker.register(mixer_block.shm._name, "shared_memory")
    finally:
        mixer_block.close()
    tracker = BeatTracker(48000, 120.0)
    said, tap = own_kit_taken_out({"kit_tap": "psm_no_such_block"}, Capture(48000), tracker)
    assert said.startswith("its own kit is not taken out of what it hears: the mixer's block is gone"), said
    assert tap is None


def test_the_capture_keeps_the_kit_sample_for_sample_beside_the_input_round_the_ring():
    capture = Capture(1000, kit=True)  # a 4,000-sample ring
    read = 0
    for k in range(13):  # 13 blocks of 700: round the ring twice
        block = np.arange(k * 700, (k + 1) * 700, dtype=np.float32)
        capture.take(block, None, -block)
        if k % 3 == 2:
            x, kit, read = capture.since(read)
            assert np.array_equal(kit, -x) and x[-1] == (k + 1) * 700 - 1
    assert Capture(1000).since(0)[1] is None


@needs_speex
@pytest.mark.jack
def test_on_jack_the_listening_process_takes_the_kits_ports_in_and_its_sound_out(jack_server):
    """The listening process on the suite's JACK server: a band player and a kit player whose port
    is given as the machine's kit; the kit's port also reaches the band's input (a mic hearing
    the wedges). The process connects the kit to its second channel and says so; with the kit
    6 dB over the band, what it hears is over 6 dB quieter with the kit taken out after a bar of
    the band (12 dB here; about 11 offline)."""
    import jack

    from drummachine.core.transport import MonotonicClock
    from drummachine.listen.listener import Listener

    if not (material.GROOVE / "info.csv").exists():
        pytest.skip("the Groove MIDI Dataset is not on this machine")
    performance = material.validation_performances(1)[0]
    clip = material.make_clip(*performance, "steady", "band", rate=48000, bars=1)
    kit = material.own_kit(*performance, clip.seconds, rate=48000)
    band_audio = 0.25 * clip.audio
    kit = kit * (2.0 * np.sqrt(np.mean(band_audio ** 2)) / np.sqrt(np.mean(kit ** 2)))  # 6 dB over the band
    assert np.max(np.abs(band_audio)) + np.max(np.abs(kit)) < 0.99  # not clipping
    band = material.BandPlayer(band_audio, "band-own")
    own = material.BandPlayer(kit, "kit-own")
    look = jack.Client("own-look", no_start_server=True)
    try:
        with Listener(band.port_name, clip.bpm, MonotonicClock(), client="listen-own",
                      kit_ports=(own.port_name,)) as listener:
            assert listener.own_kit == "taken out"
            listening = [p.name for p in look.get_all_connections(band.port_name)]
            assert listening
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and not look.get_all_connections(own.port_name):
                time.sleep(0.05)
            assert {p.name for p in look.get_all_connections(own.port_name)} - set(listening)
            for port in listening:  # the wedges into the mic
                look.connect(own.port_name, port)
            band.start()
            own.start()
            while not band.done:
                time.sleep(0.1)
            removed = listener.own_kit_removed_db()
            assert listener.status() == "listening"
    finally:
        for client in (band, own):
            client.close()
        look.close()
    assert removed > 6.0, removed


@needs_speex
@pytest.mark.jack
@pytest.mark.waiting
def test_the_kits_ports_that_come_after_listening_began_are_taken_in(jack_server, caplog):
    """The kit's JACK ports not there when the listening process started (after a JACK restart the
    band's port can be back before the engine's client): listening goes on without them, and once
    they are there the listening process starts again with them and takes the kit out (before, the
    kit's ports were those of when listening began, looked up once), its tracker going on from
    the last one's."""
    import logging
    import re

    import jack

    from drummachine.listen.process import RESUME_WITHIN

    from drummachine.core.transport import MonotonicClock
    from drummachine.listen.listener import KIT_LOOK_SECONDS, Listener

    from .conftest import wait_for

    caplog.set_level(logging.INFO, logger="drummachine")
    band = material.BandPlayer(np.zeros(48000, np.float32), "band-first")
    kit_ports: list[str] = []
    look = jack.Client("kit-late-look", no_start_server=True)
    own = None
    try:
        with Listener(band.port_name, 120.0, MonotonicClock(), client="listen-kit-late",
                      kit_ports=lambda: tuple(kit_ports)) as listener:
            listener.link(lambda reading: None)
            assert listener.own_kit == "" and listener.setup["kit_ports"] == []
            time.sleep(2 * KIT_LOOK_SECONDS)
            assert listener.restarts == 0
            own = material.BandPlayer(np.zeros(48000, np.float32), "kit-late")
            kit_ports.append(own.port_name)
            wait_for(lambda: listener.restarts and look.get_all_connections(own.port_name), 4 * KIT_LOOK_SECONDS + 10.0)
            assert listener.restarts == 1 and listener.own_kit == "taken out", (listener.restarts, listener.own_kit)
            assert listener.setup["kit_ports"] == [own.port_name]
            assert look.get_all_connections(own.port_name), "the kit's port into the listening process"
            time.sleep(2 * KIT_LOOK_SECONDS)
            assert listener.restarts == 1 and listener.status() in ("listening", "silence"), listener.status()
            said = [r.message for r in caplog.records if "taken over from the last listening process" in r.message]
            assert len(said) == 1, [r.message for r in caplog.records]
            assert float(re.search(r"\(([\d.]+) s not heard\)", said[0]).group(1)) < RESUME_WITHIN, said
    finally:
        for client in (band, own):
            if client is not None:
                client.close()
        look.close()
