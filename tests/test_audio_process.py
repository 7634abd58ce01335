"""The audio process's shared-memory parts, without a process or a sound device: the event ring,
the mixer's callback and the clock it publishes. (tests/test_jack.py runs the real process.)"""

from types import SimpleNamespace

import numpy as np
import pytest

from drummachine.audio.mixing import Voices
from drummachine.audio.process import (AT_NS, CAPACITY, DROPPED, FAULTS, FRAMES, PANIC, READ, SEQ, UNDERRUNS,
                                       WORST_GAP_NS,
                                       WORST_NS, EventRing, Mixer, SharedAudioClock, SharedBlock)
from drummachine.audio.kit import synth_kit

OK = SimpleNamespace(output_underflow=False)


@pytest.fixture
def parts():
    owner = SharedBlock()
    other = SharedBlock(owner.name)  # as the mixer process attaches
    kit = synth_kit(48000)
    yield owner, EventRing(owner), Mixer(other, Voices(kit)), SharedAudioClock(owner.header, 48000)
    other.close()
    owner.close()


def test_events_reach_the_mixer_on_their_sample(parts):
    _, ring, mixer, clock = parts
    assert ring.push(200, 0, 1.0) and ring.push(300, 1, 0.5)
    out = np.zeros((128, 2), np.float32)
    mixer.callback(out, 128, None, OK)
    assert not out.any()  # both start after this block
    mixer.callback(out, 128, None, OK)
    loud = np.nonzero(np.abs(out[:, 0]) > 0)[0]
    assert loud[0] == 200 - 128  # the kick's first sample is frame 200
    assert mixer.read == 2 and mixer.h[READ] == 2


def test_the_clock_is_the_mixers_sample_counter(parts):
    block, _, mixer, clock = parts
    out = np.zeros((128, 2), np.float32)
    for _ in range(375):  # one second of blocks
        mixer.callback(out, 128, None, OK)
    assert block.header[FRAMES] == 48000 and block.header[SEQ] % 2 == 0 and block.header[AT_NS] > 0
    assert 1.0 <= clock.now() < 1.05  # frames / rate, plus the time since that callback
    a = clock.now()
    assert clock.now() >= a  # never backwards


def test_a_half_written_slot_waits_for_the_next_block(parts):
    block, ring, mixer, _ = parts
    ring.push(10, 0, 1.0)
    block.ring[0, 3] = 0  # as if the sequence number were not visible yet
    mixer.callback(np.zeros((64, 2), np.float32), 64, None, OK)
    assert mixer.read == 0
    block.ring[0, 3] = 1
    mixer.callback(np.zeros((64, 2), np.float32), 64, None, OK)
    assert mixer.read == 1


def test_a_full_ring_drops_and_counts_and_underruns_are_counted(parts):
    block, ring, mixer, _ = parts
    for i in range(CAPACITY):
        assert ring.push(10_000 + i, 0, 0.5)
    assert not ring.push(1, 0, 0.5) and block.header[DROPPED] == 1
    mixer.callback(np.zeros((128, 2), np.float32), 128, None, SimpleNamespace(output_underflow=True))
    assert block.header[UNDERRUNS] == 1 and mixer.read == CAPACITY and ring.push(1, 0, 0.5)


def test_panic_silences_what_is_sounding(parts):
    block, ring, mixer, _ = parts
    ring.push(0, 7, 1.0)  # a crash rings for a long time
    out = np.zeros((128, 2), np.float32)
    mixer.callback(out, 128, None, OK)
    assert np.abs(out).max() > 0
    block.header[PANIC] += 1  # as AudioProcessSink.panic does
    mixer.callback(out, 128, None, OK)
    assert not out.any()


def test_a_mixer_killed_inside_its_clock_update_never_stalls_the_clock(parts):
    block, _, mixer, clock = parts
    out = np.zeros((128, 2), np.float32)
    mixer.callback(out, 128, None, OK)
    block.header[SEQ] += 1  # killed between the two sequence steps: the lock stays odd
    a = clock.now()  # returns (it would spin forever on a plain sequence lock)
    assert a >= 128 / 48000 and clock.now() >= a


def test_the_mixer_reports_its_own_worst_callback_and_wake_up_gap(parts):
    block, _, mixer, _ = parts
    out = np.zeros((128, 2), np.float32)
    for _ in range(5):
        mixer.callback(out, 128, None, OK)
    assert 0 < block.header[WORST_NS] < 1e9 and 0 < block.header[WORST_GAP_NS] < 1e9


def test_a_failing_block_plays_silence_counts_and_the_next_block_plays(parts):
    """The mixer's callback never raises (PortAudio would stop the stream for good)."""
    block, ring, mixer, clock = parts
    real = mixer.voices.mix
    mixer.voices.mix = lambda out, start: (_ for _ in ()).throw(RuntimeError("injected mixer fault"))
    ring.push(10, 0, 1.0)
    out = np.ones((128, 2), np.float32)
    mixer.callback(out, 128, None, OK)
    assert not out.any() and block.header[FAULTS] == 1
    assert mixer.frame == 128 and block.header[SEQ] % 2 == 0  # the clock goes on, its lock is free
    mixer.voices.mix = real
    ring.push(200, 1, 1.0)
    mixer.callback(out, 128, None, OK)
    assert np.abs(out).max() > 0 and block.header[FRAMES] == 256


def test_a_restarted_mixer_goes_on_from_the_clock_however_slowly_it_started(parts):
    """Regression: a restart counted frames from when it began; a mixer slow to start (a loaded
    machine) then sent the clock back, and the engine stalled for as long as it took."""
    import time

    block, ring, mixer, clock = parts
    out = np.zeros((128, 2), np.float32)
    for _ in range(10):
        mixer.callback(out, 128, None, OK)
    before = clock.now()
    time.sleep(0.3)  # the mixer died; the next takes a while to start
    attached = SharedBlock(block.name)
    reborn = Mixer(attached, Voices(synth_kit(48000)))
    reborn.callback(out, 128, None, OK)
    after = clock.now()
    attached.close()
    assert after >= before + 0.29 and reborn.frame >= 1280 + 0.29 * 48000


@pytest.mark.jack
def test_one_jack_port_per_voice_each_onset_on_its_sample(tmp_path, monkeypatch):
    """--outs voices through a JACK server with nine ports a side (its own, started here): each
    voice on its own port, alone, on its sample; every port with the same loopback delay."""
    import os
    import shutil
    import subprocess
    import time

    from drummachine.audio.process import AudioProcessSink

    if not shutil.which("jackd"):
        pytest.skip("jackd is not installed")
    name = f"drummachine-outs-{os.getpid()}"
    server = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p", "128", "-P", "9", "-C", "9"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)  # the mixer process and jack_connect inherit it
    try:
        r = subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, text=True)
        assert "available" in r.stdout, r.stdout + r.stderr
        sink = AudioProcessSink(None, 48000, record_seconds=15.0, outs="voices").wait_ready()
        try:
            for k in range(9):
                subprocess.run(["jack_disconnect", f"system:capture_{k + 1}", f"PortAudio:in_{k}"], capture_output=True)
                subprocess.run(["jack_connect", f"PortAudio:out_{k}", f"PortAudio:in_{k}"], check=True,
                               capture_output=True)
            base = int(sink.clock.now() * 48000) + 24000
            for v in range(9):
                assert sink.events.push(base + v * 6000, v, 0.9)
            time.sleep((base + 9 * 6000) / 48000 - sink.clock.now() + 0.2)
        finally:
            sink.close()
    finally:
        server.terminate()
        server.wait(10)
    rec = sink.recording
    assert rec.shape[1] == 9
    delays = []
    for v in range(9):
        onset = base + v * 6000
        assert not rec[base - 2000:onset, v].any()  # nothing on this port before its own voice sounds
        loud = np.flatnonzero(np.abs(rec[onset:onset + 2048, v]) > 1e-6)
        assert loud.size, v
        delays.append(int(loud[0]))
    assert len(set(delays)) == 1, delays  # sample-locked across the ports
