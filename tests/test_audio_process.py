"""The audio process's shared-memory parts, without a process or a sound device: the event ring,
the mixer's callback and the clock it publishes. (tests/test_jack.py runs the real process.)"""

from types import SimpleNamespace

import numpy as np
import pytest

from drummachine.audio.mixing import Voices
from drummachine.audio.mixer import Mixer
from drummachine.audio.wire import (AT_NS, CAPACITY, DROPPED, FAULTS, FRAMES, PANIC, READ, SEQ, UNDERRUNS,
                                    WORST_GAP_NS, WORST_NS, EventRing, SharedAudioClock, SharedBlock)
from drummachine.audio.kit import synth_kit

from .conftest import own_jack_server

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
    # the last block's first frame, stamped as its callback began (it sounds from its period's start)
    assert block.header[FRAMES] == 48000 - 128 and block.header[SEQ] % 2 == 0 and block.header[AT_NS] > 0
    assert mixer.frame == 48000  # the next block's
    assert (48000 - 128) / 48000 <= clock.now() < 1.05  # frames / rate, plus the time since that callback
    a = clock.now()
    assert clock.now() >= a  # never backwards


def test_blocks_of_one_long_period_are_stamped_at_their_place_in_it(parts):
    """PortAudio calls back for each 128-frame block of a 1,024-frame JACK period at once, each
    block's DAC time a block after the one before and the stream's time the period's: each block's
    first frame is stamped a block after the one before, not at the (same) moment of its call;
    times a host cannot give (0, NaN) leave the call's moment."""
    import time

    block, _, mixer, _ = parts
    out = np.zeros((128, 2), np.float32)
    block_ns = 128 / 48000 * 1e9
    for period in range(3):
        for k in range(8):
            times = SimpleNamespace(currentTime=10.0 + period * 1024 / 48000,
                                    outputBufferDacTime=10.0 + period * 1024 / 48000 + (2048 + 128 * k) / 48000)
            before = time.monotonic_ns()
            mixer.callback(out, 128, times, OK)
            after = time.monotonic_ns()
            assert block.header[FRAMES] == (period * 8 + k) * 128
            # the call's start, later by k blocks (2.67 ms each): whenever the host ran the call
            assert before + k * block_ns - 1e3 <= block.header[AT_NS] <= after + k * block_ns + 1e3, (period, k)
    for bad in (SimpleNamespace(currentTime=1.0, outputBufferDacTime=0.0),
                SimpleNamespace(currentTime=1.0, outputBufferDacTime=float("nan"))):
        before = time.monotonic_ns()
        mixer.callback(out, 128, bad, OK)
        assert before <= block.header[AT_NS] <= time.monotonic_ns() and block.header[FAULTS] == 0


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
    assert a >= 0 and clock.now() >= a  # the block's first frame (0) and the time since its callback began


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
    assert np.abs(out).max() > 0 and block.header[FRAMES] == 128  # the second block's first frame


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


@pytest.fixture
def jack_with_ports(monkeypatch):
    """Nine ports a side: one per voice (--outs voices), or the main and the cue bus."""
    yield from own_jack_server(monkeypatch, 9, "ports")


def loop_back(channels: int) -> None:
    """Each of the mixer's outputs into its own input (the recording), nothing else in."""
    import subprocess

    for k in range(channels):
        subprocess.run(["jack_disconnect", f"system:capture_{k + 1}", f"PortAudio:in_{k}"], capture_output=True)
        subprocess.run(["jack_connect", f"PortAudio:out_{k}", f"PortAudio:in_{k}"], check=True, capture_output=True)


def wait_for_the_mixer(sink, until: float, longest: float = 5.0) -> None:
    """Until the mixer's own clock has played ``until``: a host that drops JACK cycles slows the
    stream's clock against the wall's, and a test that slept by the wall found its last hit missing."""
    import time

    deadline = time.monotonic() + longest
    while sink.clock.now() < until and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.jack
def test_one_jack_port_per_voice_each_onset_on_its_sample(jack_with_ports):
    """--outs voices: each voice on its own port, alone, on its sample; every port with the same
    loopback delay."""
    from drummachine.audio.process import AudioProcessSink

    sink = AudioProcessSink(None, 48000, record_seconds=15.0, outs="voices").wait_ready()
    try:
        loop_back(9)
        base = int(sink.clock.now() * 48000) + 24000
        for v in range(9):
            assert sink.events.push(base + v * 6000, v, 0.9)
        wait_for_the_mixer(sink, (base + 9 * 6000) / 48000 + 0.2)
    finally:
        sink.close()
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


@pytest.mark.jack
def test_the_cue_bus_clicks_on_the_beat_sample_locked_to_the_drums(jack_with_ports):
    """The engine's clock pulses make the click on the cue bus (accented on the bar's first beat),
    on the beat's exact sample; the drums sound on both buses on theirs, the same loopback delay
    everywhere: click and drums are 0 samples apart from where they belong. A level change reaches
    the next block; the cue's sounds never reach the main bus."""
    import time

    from drummachine.audio.process import AudioProcessSink
    from drummachine.core.engine import Engine
    from drummachine.core.fake_generator import FakeKicks
    from drummachine.core.song import jam

    sink = AudioProcessSink(None, 48000, record_seconds=15.0, cue=True).wait_ready()
    sent = []
    try:
        loop_back(4)
        engine = Engine(FakeKicks(), jam("rock", 120), sink.clock, [sink], start_delay=0.3, midi_clock=True)
        orig = sink.send
        sink.send = lambda events: (sent.extend(events), orig(events))
        stop = __import__("threading").Event()
        threads = engine.run_threads(stop)
        started = sink.clock.now()
        engine.command("start")
        # 3 s of the mixer's own clock (a host dropping JACK cycles slows it against the wall's;
        # by the wall the stop's panic cut the last beat's click, step 20, twice)
        wait_for_the_mixer(sink, started + 3.0, longest=8.0)
        stopped = sink.clock.now()
        engine.command("stop")
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(2)
        cue_frame = round((sink.clock.now() + 0.8) * 48000)
        sink.cue_sound(cue_frame / 48000)
        time.sleep(1.3)
    finally:
        sink.close()
    rec = sink.recording
    assert rec.shape[1] == 4
    beats = {}
    for e in sent:  # the beats that sounded before the stop (one handed out for later is cut by it)
        if e.kind == "clock" and e.step % 4 == 0 and e.step not in beats and e.time < stopped - 0.05:
            beats[e.step] = round(e.time * 48000)
    kicks = [round(e.time * 48000) for e in sent if e.kind == "note" and e.voice == 0]
    assert len(beats) >= 4 and len(kicks) >= 4

    def onset(channel, frame):
        loud = np.flatnonzero(np.abs(rec[frame - 200:frame + 2048, channel]) > 1e-6)
        return int(loud[0]) - 200 if loud.size else None

    from drummachine.audio.mixing import CUE_DRUMS_LEVEL

    main_kicks = [onset(0, f) for f in kicks[:4]]
    delay = main_kicks[0]
    # each kick on its sample: the loopback's delay less the output latency it was handed over early by
    assert main_kicks == [delay] * 4 and 0 <= delay + sink.early_frames <= 3 * 128
    # the cue bus is the drums at their level plus the cue sounds: take the drums away, the rest
    # is the click, and the drums there are the main bus's, sample for sample (no limiter acted)
    click = rec[:, 2] - CUE_DRUMS_LEVEL * rec[:, 0]
    first = min(beats.values())
    assert np.abs(click[first - 4800:first + delay]).max() < 1e-5  # nothing before the first beat
    for step, frame in list(beats.items())[:8]:
        loud = np.flatnonzero(np.abs(click[frame:frame + 2048]) > 1e-4)
        assert loud.size and loud[0] - delay in (0, 1), (step, loud[:1], delay)  # on the beat (a sine starts at 0)
    downbeat = [f for s_, f in beats.items() if s_ % 16 == 0][0]
    other = [f for s_, f in beats.items() if s_ % 16 == 4][0]
    assert np.abs(click[downbeat + delay:downbeat + delay + 300]).max() > \
        1.3 * np.abs(click[other + delay:other + delay + 300]).max()  # the bar's first click is louder
    # the section cue: on the cue bus at its sample, never on the main bus
    cue_at = cue_frame + delay
    loud = np.flatnonzero(np.abs(click[cue_at - 100:cue_at + 2048]) > 1e-4)
    assert loud.size and loud[0] - 100 in (0, 1)
    assert not rec[cue_at - 100:cue_at + 4800, :2].any()


def test_a_level_change_through_the_ring_scales_its_bus_from_the_next_block():
    from drummachine.audio.wire import LEVEL

    owner = SharedBlock(channels=4)
    try:
        ring = EventRing(owner)
        attached = SharedBlock(owner.name, channels=4)
        mixer = Mixer(attached, Voices(synth_kit(48000), cue=True))
        ring.push(0, LEVEL + 0, 0.5)  # the main bus at half
        ring.push(0, LEVEL + 1, 0.0)  # the cue bus silent
        ring.push(10, 0, 1.0)
        out = np.zeros((128, 4), np.float32)
        mixer.callback(out, 128, None, OK)
        full = Voices(synth_kit(48000), cue=True)
        full.add(10, 0, 1.0)
        ref = np.zeros((128, 4), np.float32)
        full.mix(ref, 0)
        np.testing.assert_allclose(out[:, :2], 0.5 * ref[:, :2], atol=1e-6)
        assert ref[:, 2:].any() and not out[:, 2:].any()
        attached.close()
    finally:
        owner.close()


def test_the_sink_turns_clock_pulses_into_clicks_and_cue_events_into_the_cue_sound(monkeypatch):
    """Only the first pulse of a step on a beat clicks (accented on the bar's first); notes and
    cue events pass as they are; without the cue bus, no click."""
    from drummachine.audio.mixing import CLICK, CLICK_ACCENT, CUE
    from drummachine.audio.process import AudioProcessSink
    from drummachine.core.events import Event

    pushed = []
    sink = AudioProcessSink.__new__(AudioProcessSink)  # its send alone: no mixer process
    sink.rate, sink.cue, sink.click, sink._beat_step = 48000, True, True, -1
    sink.events = type("Ring", (), {"push": lambda self, *row: pushed.append(row)})()
    events = []
    for step in range(0, 9):
        events += [Event(step * 0.125 + k * 0.125 / 6, "clock", step=step) for k in range(6)]
    events.append(Event(0.5, "note", 0, 0.9, 4))
    events.append(Event(1.0, "cue", velocity=0.7))
    sink.send(events)
    assert pushed == [(0, CLICK_ACCENT, 0.5), (24000, CLICK, 0.5), (48000, CLICK, 0.5), (24000, 0, 0.9),
                      (48000, CUE, 0.7)]
    pushed.clear()
    sink.cue, sink._beat_step = False, -1
    sink.send(events)
    assert pushed == [(24000, 0, 0.9)]
