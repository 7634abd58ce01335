"""Audio out with no Python in JACK's real-time thread: rtmixer's C callback plays a ring buffer
that a writer thread here keeps a few blocks full.

The mixer process's third way of mixing (``mixing = "ring"``, the default where rtmixer is
installed and nothing is recorded). rtmixer (MIT; its callback is C, compiled with CFFI) copies
the ring's frames into PortAudio's buffer in JACK's thread and never takes the interpreter lock,
so JACK sees the mixer as it sees a C client. The writer thread, real-time just below JACK's
thread, wakes every half period, reads the engine's events and mixes (``Mixer.mix_turn`` with
``audio.ahead.MixAhead``) until ``depth`` blocks wait in the ring.

Onsets stay on their exact sample: the ring's frames are the stream's frames in order. What is
in the ring cannot be mixed again, so an event for a frame already written plays at the first
frame not yet written (at most ``depth`` blocks late: 10.7 ms at 128 frames and 48 kHz; the
engine hands its steps out 30 ms or more ahead). rtmixer ends a playback whose ring ran short; the
writer counts it (``NOT_READY``: the ring ran dry) and starts another.

The clock: the frames the C callback has taken (written less what waits in the ring) jump a
period's frames per period; PortAudio's stream time (JACK's frame time) runs smoothly. The stream
time less its smallest lead over the frames taken in the last polls is where the frames taken end,
at the period's start; the clock published is a period's take less (the frame the period began
with sounds at its start, by the clock JACK's MIDI ports place their notes by), kept within a
period of the frames taken.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from drummachine.audio.wire import AT_NS, CALLBACKS, FAULTS, FRAMES, NOT_READY, SEQ, UNDERRUNS

RING_FRAMES = 1024  #: the ring's smallest size (a power of two, as PortAudio's ring buffer needs)
#: blocks kept waiting in the ring: the writer may be this many periods late, less one. 4 rather
#: than 3: the ring ran dry 8 against 19 times in 90 s at the same host noise (benchmarks/mixer_rt_ring_depth.json)
DEPTH_BLOCKS = 4
LEAD_POLLS = 64  #: polls the clock's lead is the smallest of (about 85 ms at 128 frames)
#: the callback took nothing for this many periods (and at least this long): the stream stopped
#: (its server gone, or hung), and the clock is no longer published
STALLED_PERIODS, STALLED_MIN_S = 4, 0.05


def available() -> bool:
    try:
        import rtmixer  # noqa: F401
    except Exception:  # not installed, or its CFFI module does not load here
        return False
    return True


def depth_frames(block: int, period: int, depth_blocks: int = DEPTH_BLOCKS) -> int:
    """Frames the writer keeps waiting in the ring: ``depth_blocks`` blocks, and at least the
    host's period (``period`` frames) and a block more. A JACK server at 1,024 frames takes a
    period's frames in one go (PortAudio calls the callback for each block of it back to back):
    a ring holding fewer ran dry every period, and the clock, the frames taken, went at half speed."""
    return max(depth_blocks * block, -(-(period + block) // block) * block)


def host_period(stream, rate: int) -> int:
    """The most frames the stream's host takes at once: PortAudio's output latency (over JACK, the
    server's period: 128, 256, 1,024 frames at -p 128, 256, 1024)."""
    latency = stream.latency
    return int(round(float(latency[1] if isinstance(latency, tuple) else latency) * rate))


def open_ring_stream(device, rate: int, blocksize: int, channels: int, latency, depth_blocks: int = DEPTH_BLOCKS):
    """An rtmixer output stream (not started) on the device and its ring, big enough for the
    writer's depth at the host's period."""
    import rtmixer

    stream = rtmixer.Mixer(device=device, samplerate=rate, blocksize=blocksize, channels=channels,
                           latency=latency)
    depth = depth_frames(blocksize, host_period(stream, rate), depth_blocks)
    ring = rtmixer.RingBuffer(4 * channels, max(RING_FRAMES, 1 << (depth + 2 * blocksize - 1).bit_length()))
    return stream, ring


class RingPlayer:
    """Keeps rtmixer's ring ``depth`` blocks full from the mixer's voices; publishes the clock."""

    def __init__(self, mixer, stream, ring, depth: int = DEPTH_BLOCKS, period: int = 0):
        self.mixer = mixer
        self.stream = stream
        self.ring = ring
        self.block = mixer.ahead.block
        #: the most frames the callback takes in one go (the host's period, at least a block)
        self.period = max(self.block, period)
        self.depth = depth_frames(self.block, self.period, depth)
        self.out = np.zeros((self.block, mixer.voices.channels), np.float32)
        h = mixer.h
        self.start = 0
        if h[AT_NS]:  # a restarted mixer: go on from where the clock is now (see Mixer._begin)
            self.start = int(h[FRAMES]) + (time.monotonic_ns() - int(h[AT_NS])) * mixer.rate // 1_000_000_000
        self.written = self.start
        # the header's counters go on from a mixer that died (the engine's watchdog and reports add up)
        self.callbacks0, self.underruns0 = int(h[CALLBACKS]), int(h[UNDERRUNS])
        mixer.ahead.rendered = mixer.ahead.valid_from = self.start
        self.leads = np.full(LEAD_POLLS, np.inf)
        self.polls = 0
        #: how far the frames taken moved at each of the last changes seen: a period's take (a
        #: block's, or the JACK period's where PortAudio calls back for each block of it at once)
        self.takes = np.zeros(LEAD_POLLS, np.int64)
        self.changes = 0
        self.taken = self.start  #: frames the C callback had taken at the last look, and when it moved
        self.taken_at_ns = time.monotonic_ns()
        self.stalled_ns = int(max(STALLED_PERIODS * self.period / mixer.rate, STALLED_MIN_S) * 1e9)
        self.action = None
        self.running = False
        self.thread: threading.Thread | None = None

    def fill(self) -> int:
        """Mix and write blocks until ``depth`` frames wait in the ring; returns how many blocks."""
        mixer, ahead, ring, out, block = self.mixer, self.mixer.ahead, self.ring, self.out, self.block
        done = 0
        while ring.read_available + block <= self.depth:
            ahead.playhead = self.written - block  # the frames before ``written`` are in the ring for good
            mixer.mix_turn()
            if not ahead.copy_out(out, self.written, block):
                out.fill(0.0)
                mixer.h[FAULTS] += 1  # cannot happen: the turn mixed this block
            ring.write(out)
            self.written += block
            done += 1
        return done

    def publish(self) -> None:
        """The clock from what the C callback has taken and the stream's (JACK's) time; nothing
        while the callback has taken nothing for a few periods (the server stopped or hangs): the
        engine's clock then runs on by the wall from the last block taken (``SharedAudioClock``)
        instead of standing still at it, and the groove with it (it stood 2 s, until the watchdog
        started another mixer, at each JACK restart)."""
        h = self.mixer.h
        taken = self.written - self.ring.read_available
        now_ns = time.monotonic_ns()
        if taken != self.taken:
            self.takes[self.changes % LEAD_POLLS] = taken - self.taken
            self.changes += 1
            self.taken, self.taken_at_ns = taken, now_ns
        elif now_ns - self.taken_at_ns > self.stalled_ns:
            return
        now_frames = self.stream.time * self.mixer.rate
        self.leads[self.polls % LEAD_POLLS] = now_frames - taken
        self.polls += 1
        frames = int(now_frames - self.leads.min())
        frames = min(max(frames, taken), taken + self.period) - self.period_take()
        h[SEQ] += 1
        h[FRAMES] = frames
        h[AT_NS] = now_ns
        h[SEQ] += 1
        h[CALLBACKS] = self.callbacks0 + (taken - self.start) // self.block  # blocks played
        h[UNDERRUNS] = self.underruns0 + int(self.stream._state.stats.output_underflows)  # PortAudio's flag, counted in C

    def period_take(self) -> int:
        """The frames the callback takes a period: the median of the last moves of the frames
        taken (a writer late by a period sees two at once; a look between PortAudio's calls of one
        JACK period, part of one)."""
        seen = self.takes[:min(self.changes, LEAD_POLLS)]
        return int(np.median(seen)) if seen.size else self.block

    def begin(self) -> None:
        """Fill the ring, start playing it (call after the stream started), start the writer."""
        self.fill()
        self.action = self.stream.play_ringbuffer(self.ring)
        self.running = True
        self.thread = threading.Thread(target=self.run, name="ring-writer", daemon=True)
        self.thread.start()

    def run(self) -> None:
        """The writer's loop: every half period, restart a playback the ring ended, fill, publish;
        a turn that fails is counted and the next goes on."""
        pause = self.block / self.mixer.rate / 2
        while self.running:
            try:
                self.run_once()
            except Exception:
                self.mixer.h[FAULTS] += 1
            time.sleep(pause)

    def run_once(self) -> None:
        """One wake-up: restart a playback that ran dry, fill, publish the clock."""
        if self.action not in self.stream.actions:  # the ring ran short: rtmixer ended its playback
            self.mixer.h[NOT_READY] += 1
            self.leads.fill(np.inf)  # the silence moved the frames against JACK's time
            self.fill()
            self.action = self.stream.play_ringbuffer(self.ring)
        self.fill()
        self.publish()

    def end(self) -> None:
        self.running = False
        if self.thread is not None:
            self.thread.join(1.0)
