"""Mixing ahead of the playhead (audio.ahead): the callback copies blocks mixed earlier, and the
sound is the same, sample for sample, as mixing inside the callback — for events that come
before the horizon and for events that come after their block was mixed (it is mixed again).
Driven by hand: one loop plays the callback and the mixing thread in turn, no threads, no sleeps."""

from types import SimpleNamespace

import time

import numpy as np
import pytest

from drummachine.audio.ahead import MixAhead
from drummachine.audio.kit import Kit, synth_kit
from drummachine.audio.mixing import Voices
from drummachine.audio.wire import LEVEL, LATE_EVENTS, NOT_READY, REMIXED, EventRing, SharedBlock
from drummachine.core.voices import CLOSED_HAT, CRASH, KICK, OPEN_HAT, SNARE

BLOCK = 128
OK = SimpleNamespace(output_underflow=False)


def reference(kit, events, n, levels=()):
    """What mixing inside the callback plays: every event known before its block, (frame, voice,
    velocity); ``levels``: (frame, bus, level) applied from the block holding frame."""
    v = Voices(kit)
    out = np.zeros((n, v.channels), np.float32)
    for start in range(0, n, BLOCK):
        for f, bus, level in levels:
            if start <= f < start + BLOCK:
                v.set_level(bus, level)
        for f, voice, vel in events:
            if start <= f < start + BLOCK:
                v.add(f, voice, vel)
        blk = out[start:start + BLOCK]
        v.mix(blk, start)
        v.limit(blk)
    return out


def play(kit, n, arrivals, ahead=3, stall=()):
    """The callback and the mixing thread in turn. ``arrivals``: {block index: [(frame, voice,
    value)]} handed to the mixer before that block's callback (as the engine's ring would); in
    ``stall``, the mixing thread does not run after that block (the callback finds it late)."""
    mix = MixAhead(Voices(kit), BLOCK, ahead)
    mix.advance()  # the first blocks, before the stream starts
    out = np.zeros((n, mix.voices.channels), np.float32)
    not_ready = 0
    for k, start in enumerate(range(0, n, BLOCK)):
        for event in arrivals.get(k, ()):
            if event == "panic":
                mix.panic()
            else:
                mix.schedule(*event)
        if not mix.copy_out(out[start:start + BLOCK], start, BLOCK):
            out[start:start + BLOCK] = 0.0
            not_ready += 1
        mix.playhead = start + BLOCK
        if k not in stall:
            mix.advance()
    return out, mix, not_ready


def groove(n):
    rng = np.random.default_rng(1)
    events = []
    for f in range(3000, n - 2000, 1500):
        events.append((f + int(rng.integers(0, 60)), int(rng.choice([KICK, SNARE, CLOSED_HAT, OPEN_HAT])),
                       float(rng.uniform(0.3, 1.0))))
    return events


def test_events_known_early_play_exactly_as_mixed_in_the_callback():
    kit = synth_kit(48000)
    n = 40 * BLOCK * 10
    events = groove(n)
    # each event reaches the mixer 30 ms before its frame (the engine's margin), in blocks
    arrivals = {}
    for e in events:
        arrivals.setdefault(max(0, (e[0] - 1440) // BLOCK), []).append(e)
    out, mix, not_ready = play(kit, n, arrivals)
    np.testing.assert_allclose(out, reference(kit, events, n), atol=1e-6)
    assert not_ready == 0 and mix.remixed == 0 and mix.late == 0


@pytest.mark.parametrize("blocks_before", [1, 2, 3])
def test_an_event_after_its_block_was_mixed_is_mixed_again_on_its_sample(blocks_before):
    """A hit that arrives 1 or 2 blocks before its block (the horizon is 3 blocks: its block is
    already mixed; 3 blocks before, it is not yet) sounds on its sample, and everything after it
    (chokes, the limiter) is what
    mixing in the callback would have made: the blocks from its own are mixed again."""
    kit = synth_kit(48000)
    n = 60 * BLOCK
    early = [(1000, CRASH, 1.0), (1100, OPEN_HAT, 0.9), (5000, SNARE, 0.8)]
    late_frame = 20 * BLOCK + 37  # a closed hat: it chokes the ringing open hat from its sample
    arrivals = {0: early, 20 - blocks_before: [(late_frame, CLOSED_HAT, 1.0)]}
    out, mix, not_ready = play(kit, n, arrivals)
    ref = reference(kit, early + [(late_frame, CLOSED_HAT, 1.0)], n)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert not_ready == 0 and mix.late == 0
    assert mix.remixed == 3 - blocks_before  # its block and the mixed ones after it


def test_round_robin_turns_survive_a_remix():
    """A kit that alternates two layers: mixing blocks again must not advance its turns twice."""
    t = np.arange(2000) / 48000
    a, b = (np.sin(2 * np.pi * 200 * t) * 0.5).astype(np.float32), (np.sin(2 * np.pi * 300 * t) * 0.5).astype(np.float32)
    base = synth_kit(48000)
    layers = ((a, b),) + base.layers[1:]
    ranges = (((0.0, 1.0), (0.0, 1.0)),) + tuple(tuple((i / len(v), (i + 1) / len(v)) for i in range(len(v)))
                                                 for v in base.layers[1:])
    make = lambda: Kit("rr", 48000, layers, ranges=ranges, round_robin=(True,) + (False,) * 8)  # noqa: E731
    n = 40 * BLOCK
    hits = [(500, KICK, 0.8), (3000, KICK, 0.8), (10 * BLOCK + 5, KICK, 0.8), (15 * BLOCK, KICK, 0.8)]
    out, mix, _ = play(make(), n, {0: hits[:2] + hits[3:], 9: [hits[2]]})
    np.testing.assert_allclose(out, reference(make(), hits, n), atol=1e-6)
    assert mix.remixed > 0


def test_a_hit_for_the_block_playing_next_sounds_at_the_block_after():
    """The block the callback copies next is never mixed again: a hit for it (or for the past,
    an immediate hit) starts on the first frame of the block after — at most one period late."""
    kit = synth_kit(48000)
    n = 30 * BLOCK
    out, mix, _ = play(kit, n, {10: [(10 * BLOCK + 50, KICK, 1.0), (3 * BLOCK, SNARE, 0.7)]})
    ref = reference(kit, [(11 * BLOCK, KICK, 1.0), (11 * BLOCK, SNARE, 0.7)], n)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert mix.late == 2 and not out[:11 * BLOCK].any()


def test_a_level_change_and_a_panic_take_effect_from_the_block_after_the_next():
    kit = synth_kit(48000)
    n = 40 * BLOCK
    crash = [(200, CRASH, 1.0)]
    out, _, _ = play(kit, n, {0: crash, 8: [(0, LEVEL + 0, 0.25)]})
    np.testing.assert_allclose(out, reference(kit, crash, n, levels=[(9 * BLOCK, 0, 0.25)]), atol=1e-6)
    out, _, _ = play(kit, n, {0: crash + [(30 * BLOCK, KICK, 1.0)], 8: ["panic"]})
    ref = reference(kit, crash, n)
    np.testing.assert_allclose(out[:9 * BLOCK], ref[:9 * BLOCK], atol=1e-6)
    assert np.abs(ref[9 * BLOCK:12 * BLOCK]).max() > 0.01  # the crash would still ring
    assert not out[9 * BLOCK:].any()  # silence, and the hit after the panic is gone too


def test_a_panic_keeps_a_level_change_still_pending():
    """CC 108 (main level) and a stop right after it: the panic silences the sounds, not the level."""
    kit = synth_kit(48000)
    n = 40 * BLOCK
    later = [(20 * BLOCK + 5, CRASH, 1.0)]
    out, _, _ = play(kit, n, {8: [(0, LEVEL + 0, 0.25), "panic"], 12: later})
    ref = reference(kit, later, n, levels=[(9 * BLOCK, 0, 0.25)])
    assert np.abs(ref).max() > 0.01
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_a_stalled_mixing_thread_means_silent_blocks_counted_then_it_goes_on_from_the_playhead():
    """The callback never mixes: a block not ready plays silence (counted); the mixing starts
    again from the playhead, a hit meant for the gap sounds at once, later hits on their sample."""
    kit = synth_kit(48000)
    n = 40 * BLOCK
    hits = [(12 * BLOCK + 10, SNARE, 0.9), (30 * BLOCK + 3, KICK, 1.0)]
    out, mix, not_ready = play(kit, n, {0: hits}, stall=set(range(8, 15)))
    # no mixing after blocks 8..14: 8, 9, 10 were ready (mixed by block 7's turn), 11..15 were not
    assert not_ready == 5 and mix.behind == 1
    assert not out[11 * BLOCK:16 * BLOCK].any()
    ref = reference(kit, [(16 * BLOCK, SNARE, 0.9), hits[1]], n)
    np.testing.assert_allclose(out[16 * BLOCK:], ref[16 * BLOCK:], atol=1e-6)


def test_the_mixers_callback_copies_what_its_mixing_turns_mixed_from_the_shared_ring():
    """The process's two halves over the real shared block: the engine's ring, the mixing turn,
    the callback (as the stream calls it): onsets on their sample, counters in the header."""
    from drummachine.audio.mixer import Mixer

    owner = SharedBlock()
    attached = SharedBlock(owner.name)
    try:
        ring = EventRing(owner)
        mixer = Mixer(attached, Voices(synth_kit(48000)), ahead=3)
        mixer.mix_turn()
        ring.push(5 * BLOCK + 17, KICK, 1.0)  # 4 blocks ahead of the first callback: before the horizon
        out = np.zeros((20 * BLOCK, 2), np.float32)
        for k in range(20):
            if k == 7:
                ring.push(9 * BLOCK + 99, SNARE, 0.8)  # after block 9 was mixed (by block 6's turn)
            mixer.callback(out[k * BLOCK:(k + 1) * BLOCK], BLOCK, None, OK)
            mixer.mix_turn()  # the mixing thread's turn, woken by that callback
        ref = reference(synth_kit(48000), [(5 * BLOCK + 17, KICK, 1.0), (9 * BLOCK + 99, SNARE, 0.8)], 20 * BLOCK)
        np.testing.assert_allclose(out, ref, atol=1e-6)
        h = owner.header
        assert h[NOT_READY] == 0 and h[REMIXED] >= 1 and h[LATE_EVENTS] == 0 and owner.timings.sum() == 20
    finally:
        attached.close()
        owner.close()


@pytest.mark.jack
def test_the_mix_ahead_mixer_plays_onsets_on_their_sample_over_jack(jack_server):
    """The real mixer process over JACK, mixing ahead: hits recorded through a loopback each at
    its frame plus the same loopback delay."""
    import subprocess
    import time

    from drummachine.audio.process import AudioProcessSink

    sink = AudioProcessSink(None, 48000, record_seconds=8.0, mixing="ahead").wait_ready()
    try:
        assert sink.mixing == "ahead"  # the duplex callback copying what was mixed ahead
        subprocess.run(["jack_disconnect", "system:capture_1", "PortAudio:in_0"], capture_output=True)
        subprocess.run(["jack_connect", "PortAudio:out_0", "PortAudio:in_0"], check=True, capture_output=True)
        base = int(sink.clock.now() * 48000) + 12000
        frames = [base + k * 9001 for k in range(8)]  # a closed hat rings 8,640 frames
        for f in frames:
            assert sink.events.push(f, CLOSED_HAT, 0.9)
        time.sleep((frames[-1] + 4800) / 48000 - sink.clock.now())
        callbacks, not_ready = sink.callbacks, sink.not_ready
    finally:
        sink.close()
    rec = sink.recording[:, 0]
    delays = []
    for f in frames:
        assert not rec[f - 100:f].any()  # the hit before (8,640 frames, heard two periods late) is over
        loud = np.flatnonzero(np.abs(rec[f:f + 1024]) > 1e-6)
        assert loud.size
        delays.append(int(loud[0]))
    assert len(set(delays)) == 1 and 0 <= delays[0] <= 3 * BLOCK, delays  # every hit on its sample
    assert callbacks > 0 and not_ready <= 0.02 * callbacks, (not_ready, callbacks)


def test_without_the_rights_the_mixer_says_in_one_line_what_it_could_not_get(monkeypatch):
    """A user whose memlock limit is a Pi's default, or a callback with no real-time priority to
    stay below: one line each, naming what to change; the mixer plays on regardless."""
    import os
    import resource
    import threading

    from drummachine.audio import realtime

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (8 * 1024 * 1024, 8 * 1024 * 1024))
    line = realtime.lock_memory()
    assert line.startswith("memory not locked: the memlock limit is 8192 kB") and "limits.d" in line
    said = []
    worker = threading.Thread(target=lambda: said.append(realtime.realtime_below(threading.get_native_id(), 0)))
    worker.start()
    worker.join()
    assert said[0].startswith("no real-time priority for the mixing thread") and "\n" not in said[0]


@pytest.mark.jack
def test_the_ring_mixer_plays_onsets_on_their_sample_over_jack(jack_server):
    """rtmixer's C callback playing the ring (the default where rtmixer is installed): hits
    recorded from the mixer's port by a JACK client of the test's own, each exactly its scheduled
    distance from the first (the ring's frames are the stream's, in order); the clock runs."""
    import time

    import jack

    from drummachine.audio.process import AudioProcessSink

    import importlib.util

    if importlib.util.find_spec("rtmixer") is None:  # never imported here: PortAudio would join JACK as "PortAudio"
        pytest.skip("rtmixer is not installed")
    got = np.zeros(48000 * 6, np.float32)
    filled = [0]
    first_frame = []
    client = jack.Client("ring-rec", no_start_server=True)
    port = client.inports.register("in")

    @client.set_process_callback
    def process(frames):
        # each block where JACK's frame time puts it: a cycle this Python recorder was too late
        # for (the host's doing) leaves a gap in the recording, never a shift of what follows
        if not first_frame:
            first_frame.append(client.last_frame_time)
        at = client.last_frame_time - first_frame[0]
        n = min(frames, len(got) - at)
        if n > 0:
            got[at:at + n] = port.get_array()[:n]
            filled[0] = at + n

    sink = AudioProcessSink(None, 48000).wait_ready()
    try:
        assert sink.mixing == "ring", sink.notes
        client.activate()
        # the mixer's PortAudio client (a mixer of an earlier test may still be leaving: PortAudio-01)
        for out in client.get_ports("PortAudio.*:out_0", is_audio=True, is_output=True):
            client.connect(out, port)
        t0 = sink.clock.now()
        base = int(t0 * 48000) + 12000
        frames = [base + k * 9001 for k in range(8)]  # a closed hat rings 8,640 frames
        for f in frames:
            assert sink.events.push(f, CLOSED_HAT, 0.9)
        time.sleep((frames[-1] + 9000) / 48000 - sink.clock.now())
        ran = sink.clock.now() - t0
        not_ready = sink.not_ready
    finally:
        client.deactivate()
        client.close()
        sink.close()
    onsets = []
    k = 0
    while k < filled[0]:
        # a hit's attack, not the last of the one before: its tail can still be above 1e-6 8,700
        # frames on (the same sample each time, so the onsets' spacing is still exact)
        loud = np.flatnonzero(np.abs(got[k:filled[0]]) > 1e-3)
        if not loud.size:
            break
        onsets.append(k + int(loud[0]))
        k = onsets[-1] + 8700  # past this hit's 8,640 frames
    assert len(onsets) == 8 and not_ready == 0, (onsets, not_ready)
    assert [o - onsets[0] for o in onsets] == [f - frames[0] for f in frames]  # each on its sample
    assert 0.9 * (frames[-1] + 9000 - base + 12000) / 48000 < ran


class FakeRing:
    """rtmixer's RingBuffer as the writer sees it (frames in, frames out), for the logic alone."""

    def __init__(self, channels):
        self.frames = np.zeros((0, channels), np.float32)

    @property
    def read_available(self):
        return len(self.frames)

    def write(self, block):
        self.frames = np.concatenate([self.frames, block])

    def take(self, n):  # what the C callback does each period
        out, self.frames = self.frames[:n], self.frames[n:]
        return out


class FakeRingStream:
    def __init__(self):
        self.time = 0.0
        self.playing = set()
        self.started = 0
        self._state = SimpleNamespace(stats=SimpleNamespace(output_underflows=0))

    @property
    def actions(self):
        return self.playing

    def play_ringbuffer(self, ring):
        self.started += 1
        action = object()
        self.playing = {action}
        return action


def test_the_ring_writer_keeps_its_depth_plays_onsets_on_their_sample_and_restarts_a_dry_ring():
    """audio.ring_out's writer with the C callback played by hand: the frames taken from the ring
    are what mixing in the callback makes, sample for sample; a hit for a frame already written
    plays at the first frame not written; when the writer misses periods the ring runs dry, it is
    counted and playback restarts; the clock stays within the block last taken (its first frame
    sounds at its period's start)."""
    from drummachine.audio.mixer import Mixer
    from drummachine.audio.ring_out import RingPlayer
    from drummachine.audio.wire import FRAMES

    owner = SharedBlock()
    try:
        events = EventRing(owner)
        mixer = Mixer(owner, Voices(synth_kit(48000)), ahead=2)
        ring, stream = FakeRing(2), FakeRingStream()
        player = RingPlayer(mixer, stream, ring, depth=3)
        player.fill()
        player.action = stream.play_ringbuffer(ring)
        assert ring.read_available == 3 * BLOCK
        events.push(10 * BLOCK + 5, KICK, 1.0)
        out = []
        for period in range(40):
            if period == 12:
                events.push(13 * BLOCK, SNARE, 0.8)  # written already (up to block 14): plays at 14
            if period not in (20, 21, 22):  # the writer stalls 3 periods: the ring runs dry at 22
                player.run_once()
                taken = player.written - ring.read_available
                assert taken - BLOCK <= owner.header[FRAMES] <= taken
            got = ring.take(BLOCK)
            if len(got) < BLOCK:  # rtmixer ends a playback whose ring ran short
                stream.playing = set()
                got = np.concatenate([got, np.zeros((BLOCK - len(got), 2), np.float32)])
            out.append(got)
            stream.time += BLOCK / 48000
        assert owner.header[NOT_READY] == 1 and stream.started == 2
        heard = np.concatenate(out)
        ref = reference(synth_kit(48000), [(10 * BLOCK + 5, KICK, 1.0), (14 * BLOCK, SNARE, 0.8)], 22 * BLOCK)
        np.testing.assert_allclose(heard[:22 * BLOCK], ref, atol=1e-6)
        assert not heard[22 * BLOCK:23 * BLOCK].any()  # the dry period: silence
    finally:
        owner.close()


def test_the_ring_writer_keeps_a_hosts_whole_period_waiting():
    """A host that takes 8 blocks at once (JACK at 1,024 frames, the blocks 128): the writer keeps
    a period and a block waiting, so the ring never runs dry, and the clock stays within the period
    last taken. (With 4 blocks it ran dry every period: the clock, the frames
    taken, went at half speed.)"""
    from drummachine.audio.mixer import Mixer
    from drummachine.audio.ring_out import RingPlayer
    from drummachine.audio.wire import FRAMES

    owner = SharedBlock()
    try:
        mixer = Mixer(owner, Voices(synth_kit(48000)), ahead=2)
        ring, stream = FakeRing(2), FakeRingStream()
        period = 8 * BLOCK
        player = RingPlayer(mixer, stream, ring, period=period)
        assert player.depth == period + BLOCK
        player.fill()
        player.action = stream.play_ringbuffer(ring)
        for cycle in range(30):
            got = ring.take(period)  # the whole period in one go, as PortAudio's blocks back to back
            if len(got) < period:
                stream.playing = set()
            stream.time += period / 48000
            for _ in range(3):  # the writer wakes a few times a period
                player.run_once()
                taken = player.written - ring.read_available
                assert taken - period <= owner.header[FRAMES] <= taken
        assert owner.header[NOT_READY] == 0 and stream.started == 1
    finally:
        owner.close()


def test_a_stream_that_stopped_taking_blocks_leaves_the_clock_to_the_wall():
    """The C callback takes nothing any more (the JACK server stopped or restarted): after a few
    periods the writer stops publishing the clock, and the engine's clock runs on by the wall from
    the last block taken. Before, it stood at the frames taken (a period more at most) until the
    watchdog started another mixer 2 s later: the groove stopped for those 2 s."""
    from drummachine.audio.mixer import Mixer
    from drummachine.audio.ring_out import STALLED_MIN_S, RingPlayer
    from drummachine.audio.wire import SharedAudioClock

    owner = SharedBlock()
    try:
        mixer = Mixer(owner, Voices(synth_kit(48000)), ahead=2)
        ring, stream = FakeRing(2), FakeRingStream()
        player = RingPlayer(mixer, stream, ring, depth=3)
        player.fill()
        player.action = stream.play_ringbuffer(ring)
        clock = SharedAudioClock(owner.header, 48000)
        for _ in range(20):  # playing: a period taken, the writer's turn
            ring.take(BLOCK)
            stream.time += BLOCK / 48000
            player.run_once()
        stopped = clock.now()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.3:  # the stream takes nothing; the writer wakes on
            player.run_once()
            time.sleep(0.001)
        went = clock.now() - stopped
        assert went > 0.3 - STALLED_MIN_S - 0.05, went
        assert went < 0.3 + 0.05, went
    finally:
        owner.close()

def test_a_block_the_mixing_thread_missed_is_mixed_in_the_callback_unless_the_thread_is_mid_turn():
    """The fallback: a block not ready is mixed by the callback itself, as before, on its sample
    (counted as not ready); while the mixing thread holds its turn the callback never waits for
    it: silence, counted."""
    from drummachine.audio.mixer import Mixer
    from drummachine.audio.wire import SILENT

    owner = SharedBlock()
    try:
        ring = EventRing(owner)
        mixer = Mixer(owner, Voices(synth_kit(48000)), ahead=3)
        mixer.mix_turn()  # blocks 0-2
        ring.push(4 * BLOCK + 7, KICK, 1.0)
        out = np.zeros((8 * BLOCK, 2), np.float32)
        for k in range(8):  # the mixing thread never runs: from block 3 the callback mixes
            if k == 6:
                mixer.turn_lock.acquire()  # the thread mid-turn: block 6 is silence
            mixer.callback(out[k * BLOCK:(k + 1) * BLOCK], BLOCK, None, OK)
            if k == 6:
                mixer.turn_lock.release()
        ref = reference(synth_kit(48000), [(4 * BLOCK + 7, KICK, 1.0)], 8 * BLOCK)
        np.testing.assert_allclose(out[:6 * BLOCK], ref[:6 * BLOCK], atol=1e-6)
        assert not out[6 * BLOCK:7 * BLOCK].any() and np.abs(out[7 * BLOCK:]).max() > 0
        assert owner.header[NOT_READY] == 5 and owner.header[SILENT] == 1
    finally:
        owner.close()
