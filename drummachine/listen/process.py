"""The listening process: an audio input, the beat tracker, readings into shared memory.

Its own interpreter, like the mixer: the tracker's numpy work never holds the engine's lock.
``python -m drummachine.listen.process`` is set up by one JSON line on its standard input,
answers one JSON line (ready, or the error in words), and stops when that pipe closes.

The input's callback (JACK's process thread, or sounddevice's) only copies samples into a ring
and notes when it ran; the main thread runs the tracker every ~10 ms and publishes a reading.
Times: a sample's time on the monotonic clock comes from the input clock's frame counter and
the callbacks' times (``Timing``), less the input's capture latency.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time

import numpy as np

from drummachine.listen import shared
from drummachine.listen.tracker import BeatTracker

RING_SECONDS = 4.0
POLL_SECONDS = 0.01
SILENCE_DB = -70.0
CLIP_LEVEL = 0.999
CHECK_PORT_SECONDS = 0.5
SWITCH_INTERVAL = 0.0002  #: seconds (see run)
TIMING_CALLBACKS = 4096  #: callbacks the input's clock is measured over (about 10 s)


class Capture:
    """Samples from the input's callback, and when they came (the callback's side allocates nothing).

    Per callback it notes the monotonic time, the samples taken so far and the input clock's frame
    counter at the block's end (JACK's frame time; the samples taken, without JACK): a block JACK
    skipped (an xrun on a busy machine) leaves a gap in frames that the samples do not have.
    """

    def __init__(self, rate: int):
        self.rate = rate
        self.ring = np.zeros(int(RING_SECONDS * rate), np.float32)
        self.written = 0
        self.times = np.zeros((TIMING_CALLBACKS, 3), np.float64)  # (monotonic, samples, frames) at each block's end
        self.callbacks = 0
        self.xruns = 0

    def take(self, block: np.ndarray, frame_end: int | None = None) -> None:
        """Called from the audio callback."""
        n = block.shape[0]
        start = self.written % self.ring.size
        end = start + n
        if end <= self.ring.size:
            self.ring[start:end] = block
        else:
            cut = self.ring.size - start
            self.ring[start:] = block[:cut]
            self.ring[:n - cut] = block[cut:]
        self.written += n
        row = self.times[self.callbacks % self.times.shape[0]]
        row[0] = time.monotonic()
        row[1] = self.written
        row[2] = self.written if frame_end is None else frame_end
        self.callbacks += 1

    def since(self, read: int) -> tuple[np.ndarray, int]:
        """Samples from ``read`` to what is written, and where the next read starts (the oldest
        are lost if the reader fell behind)."""
        written = self.written
        read = max(read, written - self.ring.size + 1024)
        start, n = read % self.ring.size, written - read
        if n <= 0:
            return self.ring[:0], written
        if start + n <= self.ring.size:
            return self.ring[start:start + n].copy(), written
        return np.concatenate([self.ring[start:], self.ring[:n - (self.ring.size - start)]]), written

    def timing(self) -> "Timing":
        """The input clock against the monotonic clock, from the callbacks noted (see Timing)."""
        n = min(self.callbacks, self.times.shape[0])
        return Timing(self.times[:n].copy(), self.rate)


class Timing:
    """Sample number -> monotonic time of when it was heard.

    Samples map to frames of the input clock through the callbacks' notes (the nearest block at or
    after the sample); frames map to monotonic time by a line through (frames, callback time),
    moved down to its lowest point: a callback can run late, never early, so the earliest is the
    truest. Its slope is measured, not 1 / rate: a sound card's clock is not the computer's (JACK's
    dummy driver here runs 0.5% slow on a busy machine).
    """

    def __init__(self, rows: np.ndarray, rate: int):
        self.rate = rate
        if rows.shape[0] == 0:
            rows = np.array([[time.monotonic(), 0.0, 0.0]])
        rows = rows[np.argsort(rows[:, 1])]
        self.samples, self.frames = rows[:, 1], rows[:, 2]
        slope = 1.0 / rate
        if rows.shape[0] >= 64 and np.ptp(self.frames) > 2 * rate:
            slope = float(np.polyfit(self.frames, rows[:, 0], 1)[0])
            slope = min(max(slope, 0.98 / rate), 1.02 / rate)
        self.per_frame = slope
        self.origin = float(np.min(rows[:, 0] - self.frames * slope))

    def heard(self, sample: float) -> float:
        k = min(int(np.searchsorted(self.samples, sample)), self.samples.size - 1)
        frame = self.frames[k] - (self.samples[k] - sample)
        return self.origin + frame * self.per_frame

    @property
    def speed(self) -> float:
        """Input seconds (samples / rate) per monotonic second."""
        return 1.0 / (self.rate * self.per_frame)


def open_jack(setup: dict, capture: Capture | None):
    """A JACK client with one input port connected to the port asked for."""
    import jack

    client = jack.Client(setup.get("client", "drummachine-listen"), no_start_server=True)
    rate = client.samplerate
    capture = Capture(rate)
    port = client.inports.register("in")

    @client.set_process_callback
    def process(frames):
        capture.take(port.get_array(), client.last_frame_time + frames)

    @client.set_xrun_callback
    def xrun(delay):
        capture.xruns += 1

    client.activate()
    source = setup["port"]
    client.connect(source, port)
    return client, capture, port


def run(setup: dict, stdin, answer) -> int:
    # the input's callback runs in JACK's real-time thread and needs the interpreter lock: with
    # the default 5 ms switch interval the tracker's main thread could hold it past a 2.7 ms
    # period, and a late client makes the whole JACK cycle late (the mixer's underruns with it)
    sys.setswitchinterval(SWITCH_INTERVAL)
    block = shared.ReadingBlock(setup["shm"])
    client = stream = None
    try:
        if setup["backend"] == "jack":
            try:
                import jack
            except (ImportError, OSError) as exc:
                answer({"error": f"JACK is not available ({exc})"})
                return 2
            try:
                client, capture, port = open_jack(setup, None)
            except jack.JackError as exc:
                answer({"error": f"cannot listen to {setup['port']} ({exc})"})
                return 2
            rate = client.samplerate
            # JACK's capture latency counts the period the samples were captured in, which the
            # callback's time already does (its last sample was heard as it starts)
            latency = max(0, capture_latency(setup["port"]) - client.blocksize) / rate
        else:
            import sounddevice as sd

            info = sd.query_devices(setup["device"])
            rate = int(info["default_samplerate"])
            capture = Capture(rate)

            def callback(indata, frames, time_info, status):
                if status.input_overflow:
                    capture.xruns += 1
                capture.take(indata[:, 0])

            try:
                stream = sd.InputStream(device=setup["device"], channels=1, samplerate=rate, dtype="float32",
                                        callback=callback, latency="low")
                stream.start()
            except Exception as exc:
                answer({"error": f"cannot open input {info['name']!r} ({str(exc).splitlines()[0]})"})
                return 2
            latency = float(stream.latency)
    except Exception as exc:  # whatever the input's library raises: one line, never a traceback
        answer({"error": f"cannot open the input ({exc.__class__.__name__}: {exc})"})
        return 2
    answer({"ready": True, "rate": rate, "latency": latency})
    stop = threading.Event()

    def watch_stdin():
        try:
            while stdin.readline():
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    tracker = BeatTracker(rate, float(setup["bpm"]), window=float(setup.get("window", 0.15)))
    read = 0
    clipped_until = 0.0
    clipped = 0
    next_check = next_fit = 0.0
    timing = capture.timing()
    status = shared.LISTENING
    started = time.monotonic()
    prior = float(setup["bpm"])
    while not stop.is_set():
        time.sleep(POLL_SECONDS)
        now = time.monotonic()
        try:
            x, read = capture.since(read)
            if x.size:
                tracker.process(x)
                if np.max(np.abs(x)) >= CLIP_LEVEL:
                    clipped += 1
                    clipped_until = now + 1.0
            if client is not None and now >= next_check:
                next_check = now + CHECK_PORT_SECONDS
                status = _check_jack(client, port, setup["port"])
            est = tracker.estimate()
            if now >= next_fit:
                next_fit = now + 0.1
                timing = capture.timing()

            def heard(t):  # stream seconds -> monotonic
                return timing.heard(t * rate) - latency
            speed = timing.speed
            if status != shared.GONE:
                status = shared.CLIPPING if now < clipped_until else \
                    shared.SILENCE if est.loudness_db < SILENCE_DB else shared.LISTENING
            block.write({shared.HEARD: heard(est.time), shared.BPM: est.bpm * speed,
                         shared.NEXT_BEAT: heard(est.next_beat) if est.next_beat > 0 else 0.0,
                         shared.CONFIDENCE: est.confidence if status != shared.GONE else 0.0,
                         shared.LOUDNESS: est.loudness_db, shared.DENSITY: est.onsets_per_second,
                         shared.STATUS: status, shared.CPU: time.process_time(), shared.RATE: rate,
                         shared.CLIPPED: clipped, shared.BLOCKS: capture.callbacks, shared.STARTED: started,
                         shared.XRUNS: capture.xruns})
            want = float(block.slots[shared.PRIOR])
            if want > 0 and not math.isclose(want, prior, rel_tol=1e-4):
                prior = want
                tracker.set_prior(want)
        except Exception as exc:  # the listener goes on: the engine holds meanwhile
            print(f"listen: {exc.__class__.__name__}: {exc}", file=sys.stderr)
    try:
        if client is not None:
            client.deactivate()
            client.close()
        if stream is not None:
            stream.stop()
            stream.close()
    finally:
        block.close()
    return 0


def capture_latency(port: str) -> int:
    """The source port's capture latency in frames (JACK-Client has no call for it; jackd2's
    jack_lsp prints it). 0 when unknown: a player client's port has none."""
    import re
    import subprocess

    try:
        out = subprocess.run(["jack_lsp", "-l", port], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    m = re.search(r"capture latency = \[ *(\d+) +(\d+) *\]", out)
    return int(m.group(2)) if m else 0


def _check_jack(client, port, source: str) -> int:
    """Is the source still there and connected? Reconnect it when it comes back."""
    try:
        if port.is_connected_to(source):
            return shared.LISTENING
        if client.get_ports(source):
            client.connect(source, port)
            return shared.LISTENING
    except Exception:
        pass
    return shared.GONE


def serve(stdin=sys.stdin, stdout=sys.stdout) -> int:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's: it closes the pipe

    def answer(d: dict) -> None:
        stdout.write(json.dumps(d) + "\n")
        stdout.flush()

    try:
        setup = json.loads(stdin.readline())
    except Exception as exc:
        answer({"error": f"bad set-up ({exc.__class__.__name__})"})
        return 2
    return run(setup, stdin, answer)


if __name__ == "__main__":
    sys.exit(serve())
