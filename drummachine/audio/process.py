"""Audio out in its own process: the mixing shares no interpreter lock with the engine.

The engine process (generator, commit loop, MIDI) and the mixer process talk through one block of
shared memory and never wait on each other (``audio.wire``: the event ring, the shared sample
clock, the counters).

The kit is decoded once, in the engine process (or read from its cache: the built-in kit's
synthesis too), into a second block of shared memory (``kit.SharedKit``) that the mixer maps
without a copy; a restarted mixer maps it again instead of decoding.

The mixer process is ``python -m drummachine.audio.process``, set up by one JSON line on its
standard input and answering one JSON line (ready, with the stream's latency and what it could
not get: real-time priority, locked memory; or the error). It stops when that pipe closes — so it
never outlives the engine. Nothing is pickled.

In the mixer process no Python mixes in JACK's real-time thread (``MIXINGS``, measured side by
side by ``benchmarks/mixer_rt.py``):
- "ring" (the default where rtmixer is installed): rtmixer's C callback plays a ring buffer that
  a writer thread keeps a few blocks full (``audio.ring_out``): no Python in JACK's thread at all;
- "ahead" (without rtmixer): the Python callback only copies blocks that a mixing thread, woken
  by each callback, mixed ahead of it (``audio.ahead``); one not ready it mixes itself;
- "callback": the Python callback reads the events and mixes (the path before: for comparison,
  and for the tests' loopback recordings, which need a duplex callback).
The mixing thread (or the writer) gets real-time priority just below JACK's thread where the
system allows, and the process locks its memory (no page faults in either); each says in one
line when it could not. The main thread sleeps in a blocking read. Collection by the garbage
collector is off (no thread makes cyclic garbage).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np

from drummachine.audio.ahead import AHEAD_BLOCKS, MixAhead
from drummachine.audio.devices import find_output
from drummachine.audio.mixing import CLICK, CLICK_ACCENT, CUE, Voices
from drummachine.audio.wire import (AT_NS, CALLBACKS, CAPACITY, FAULTS, FRAMES, LATE_EVENTS, LEVEL, MIX_WORST_NS,
                                    NOT_READY, OVERLAPS, PANIC, SILENT, READ, REMIXED, SEQ, TIMING_BIN_NS, TIMING_BINS, UNDERRUNS,
                                    WORST_GAP_NS, WORST_NS, WRITTEN, EventRing, SharedAudioClock, SharedBlock)
from drummachine.core.events import Event, Sink
from drummachine.core.errors import DrumMachineError
from drummachine.core.transport import STEPS_PER_BAR, STEPS_PER_BEAT

CLICK_LEVEL = 0.5
#: how the mixer process feeds the stream: name -> blocks its MixAhead keeps (0: none), in words
MIXINGS = {
    "ring": (2, "rtmixer's C callback plays a ring a writer thread keeps full: no Python in JACK's thread"),
    "ahead": (AHEAD_BLOCKS, "the Python callback copies blocks a mixing thread mixed ahead"),
    "callback": (0, "the Python callback reads the events and mixes (before; for comparison)"),
}
SWITCH_INTERVAL = 0.0005  #: s; how long the callback may wait for the interpreter lock the mixing thread holds
log = logging.getLogger("drummachine")


class AudioProcessSink(Sink):
    """Plays note events through a mixer process; its sample counter is ``clock``.

    The kit (``kit_path``, ``--kit``; None: the built-in) is decoded here (from its cache: a
    read) while the mixer's interpreter starts, and a broken one raises DrumMachineError with
    ``kit`` set; then ``start`` returns at once (the mixer opens the stream meanwhile, while the
    engine loads its model); ``wait_ready`` raises DrumMachineError if the mixer could not start.
    ``outs`` chooses the output channels (``mixing.OUTS``); ``cue`` adds the cue bus after them.
    ``mixing``: how the mixer feeds the stream (``MIXINGS``); "ring" falls back to "ahead" where
    rtmixer is missing, and to "callback" where a recording is kept (the loopback tests record
    through a duplex callback).
    ``ring_blocks``: blocks the ring keeps waiting (0: ``ring_out.DEPTH_BLOCKS``).
    """

    click_level = CLICK_LEVEL  #: the click's level on the cue bus; the engine sets it (its click_level)

    def __init__(self, kit_path: str | None = None, rate: int = 48000, device=None, blocksize: int = 128,
                 hostapi: str | None = None, record_seconds: float = 0.0, latency: str = "low",
                 outs: str = "stereo", cue: bool = False, click: bool = True, mixing: str = "ring",
                 ring_blocks: int = 0):
        from drummachine.audio.mixing import out_channels

        self.rate = rate
        self.kit = None
        self.cue = cue
        self.click = click  #: the click on the cue bus (needs the engine's clock events: midi_clock=True)
        self._beat_step = -1
        self.channels = out_channels(outs, cue)  # an unknown layout is one error, before anything starts
        self.block = SharedBlock(record_frames=int(record_seconds * rate), channels=len(self.channels))
        self.clock = SharedAudioClock(self.block.header, rate)
        self.events = EventRing(self.block)
        self.latency = 0.0
        self.restarts = 0
        self._recording = None
        self.setup = {"shm": self.block.name, "kit": None, "kit_layout": None, "rate": rate, "device": device,
                      "blocksize": blocksize, "hostapi": hostapi, "record_frames": int(record_seconds * rate),
                      "outs": outs, "cue": cue, "mixing": mixing, "ring_blocks": int(ring_blocks),
                      "latency": latency}
        self.notes: list[str] = []  #: what the mixer could not get (real-time priority, locked memory)
        self._spawn_process()  # its interpreter starts and imports while the kit decodes here
        from drummachine.audio.kit import SharedKit, built_in, decode

        try:
            self.kit = SharedKit(decode(kit_path, rate) if kit_path else built_in(rate))
        except DrumMachineError as exc:
            exc.kit = bool(kit_path)
            self.close()
            raise
        self.setup["kit"], self.setup["kit_layout"] = self.kit.name, self.kit.layout
        self._send_setup()

    def _spawn(self) -> None:
        self._spawn_process()
        self._send_setup()

    def _spawn_process(self) -> None:
        # the mixer needs no BLAS threads and no malloc arena per thread: less memory to lock
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
        self.proc = subprocess.Popen([sys.executable, "-m", "drummachine.audio.process"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.ready = False

    def _send_setup(self) -> None:
        self.proc.stdin.write(json.dumps(self.setup) + "\n")
        self.proc.stdin.flush()

    def restart_if_gone(self) -> bool:
        """If the mixer process died, start another that goes on where the clock is when its
        first block plays (the clock runs on wall time meanwhile: see Mixer). True when it
        restarted; call it from a watchdog, not the real-time path (it waits for the new mixer)."""
        if self.block.header is None or self.alive:
            return False
        self.block.header[READ] = self.events.written  # what waited for the dead mixer is too late now
        self.block.header[SEQ] += self.block.header[SEQ] & 1  # killed mid-update: the lock is free again
        self._spawn()
        self.wait_ready(close_on_error=False)
        self.restarts += 1
        return True

    def wait_ready(self, timeout: float = 20.0, close_on_error: bool = True) -> "AudioProcessSink":
        if self.ready:
            return self
        import select

        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else ""
        try:
            reply = json.loads(line) if line else {"error": "the audio process did not answer"}
        except json.JSONDecodeError:
            reply = {"error": f"the audio process said {line.strip()[:120]!r}"}
        if "error" in reply:
            if close_on_error:
                self.close()
            else:
                self.proc.kill()
            exc = DrumMachineError(reply.get("where", "audio"), reply["error"])
            exc.kit = bool(reply.get("kit"))  # the user's kit is broken: not a reason to go on silently
            raise exc
        self.latency = float(reply.get("latency", 0.0))
        self.notes = list(reply.get("notes", ()))
        self.mixing = reply.get("mixing", self.setup["mixing"])  #: how the mixer feeds the stream, as it started
        for note in self.notes:
            log.info("mixer: %s", note)
        self.ready = True
        return self

    # --- Sink -----------------------------------------------------------------------------
    def send(self, events: list[Event]) -> None:
        for e in events:
            if e.kind == "note":
                self.events.push(round(e.time * self.rate), e.voice, e.velocity)
            elif e.kind == "clock" and self.cue and self.click and e.step != self._beat_step:
                # a step's first clock pulse is its start: on a beat, a click (the bar's first: accented)
                self._beat_step = e.step
                if e.step % STEPS_PER_BEAT == 0:
                    self.events.push(round(e.time * self.rate), CLICK_ACCENT if e.step % STEPS_PER_BAR == 0 else CLICK,
                                     self.click_level)
            elif e.kind == "cue" and self.cue:  # an engine that announces a section change a bar ahead
                self.events.push(round(e.time * self.rate), CUE, e.velocity or 1.0)

    def cue_sound(self, time: float, level: float = 1.0) -> None:
        """The section cue on the cue bus at ``time`` (clock seconds): one bar before a section change."""
        if self.cue:
            self.events.push(round(time * self.rate), CUE, level)

    def set_level(self, bus: str, level: float) -> None:
        """``main`` or ``cue`` bus level, 0..1 (MIDI CC 108 / 109), from the mixer's next block.
        The ring has one writer: call it from the thread that calls ``send`` (the engine's commit
        loop, as a command's handler), never from a MIDI callback."""
        self.events.push(0, LEVEL + ("main", "cue").index(bus), level)

    def panic(self) -> None:
        self.block.header[PANIC] += 1

    # --- what the mixer reports -----------------------------------------------------------
    @property
    def underruns(self) -> int:
        return int(self._header()[UNDERRUNS])

    @property
    def faults(self) -> int:
        """Blocks the mixer's callback failed on and played as silence (it went on)."""
        return int(self._header()[FAULTS])

    @property
    def callbacks(self) -> int:
        return int(self._header()[CALLBACKS])

    @property
    def worst_callback_ms(self) -> float:
        """The longest the mixer's callback took (its own work), in ms."""
        return int(self._header()[WORST_NS]) / 1e6

    @property
    def worst_gap_ms(self) -> float:
        """The longest time between two callbacks' starts, in ms (one period when all is well)."""
        return int(self._header()[WORST_GAP_NS]) / 1e6

    @property
    def not_ready(self) -> int:
        """Blocks the callback found not mixed ahead in time (it mixed them itself, or played
        silence: ``silent_blocks``), or times the ring ran dry; 0 when mixing in the callback."""
        return int(self._header()[NOT_READY])

    @property
    def silent_blocks(self) -> int:
        """Blocks not ready that the callback could not mix either (the mixing thread was mid-turn):
        played as silence (mixing ahead only)."""
        return int(self._header()[SILENT])

    @property
    def remixed(self) -> int:
        """Blocks mixed again because an event came for them after they were mixed."""
        return int(self._header()[REMIXED])

    @property
    def late_events(self) -> int:
        """Hits that came for the block playing next or earlier: they sounded up to a period late."""
        return int(self._header()[LATE_EVENTS])

    @property
    def overlaps(self) -> int:
        """Mixing turns a callback came during (the callback may have waited for the interpreter lock)."""
        return int(self._header()[OVERLAPS])

    @property
    def worst_mix_ms(self) -> float:
        """The mixing thread's longest turn (reading the ring, mixing the blocks due), in ms."""
        return int(self._header()[MIX_WORST_NS]) / 1e6

    def callback_us(self) -> dict:
        """The callback's own durations so far: p50, p99 (5 µs bins: the bin's upper edge) and max, µs."""
        counts = self.block.timings if self.block.timings is not None else self._final_timings
        return timing_summary(counts, int(self._header()[WORST_NS]))

    def _header(self) -> np.ndarray:
        return self.block.header if self.block.header is not None else self._final

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def recording(self) -> np.ndarray | None:
        return self._recording if self._recording is not None else (
            None if self.block.recording is None else self.block.recording.copy())

    def __enter__(self) -> "AudioProcessSink":
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.panic()
        self.close()

    @property
    def kit_name(self) -> str:
        return self.kit.layout["name"]

    def close(self) -> None:
        if self.block.header is None:
            return
        try:
            self.proc.stdin.close()  # the mixer stops its stream and exits
        except OSError:
            pass
        try:
            self.proc.wait(3.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._final = self.block.header.copy()
        self._final_timings = self.block.timings.copy()
        self._final[SEQ] += self._final[SEQ] & 1
        if self.block.recording is not None:
            self._recording = self.block.recording.copy()
        self.clock.header = self._final  # time goes on by the wall clock from the last callback
        self.block.close()
        if self.kit is not None:
            self.kit.close()
        if self.proc.stdout:
            self.proc.stdout.close()


# --- the mixer process ------------------------------------------------------------------------

def timing_summary(counts: np.ndarray, worst_ns: int) -> dict:
    """p50/p99 (upper edge of the 5 µs bin) and max (exact) of a callback-duration histogram, µs."""
    total = int(counts.sum())
    if not total:
        return {"count": 0, "p50_us": 0.0, "p99_us": 0.0, "max_us": 0.0}
    cum = np.cumsum(counts)
    edge = lambda q: float((int(np.searchsorted(cum, q * total)) + 1) * TIMING_BIN_NS / 1000)  # noqa: E731
    return {"count": total, "p50_us": edge(0.5), "p99_us": edge(0.99), "max_us": round(worst_ns / 1000, 1)}


class Mixer:
    """The callback side: publishes the clock and plays the voices.

    With ``ahead`` (blocks), the callback copies what the mixing thread (``run_mixing``) mixed
    ahead of it (``audio.ahead.MixAhead``) and wakes it; a block not ready plays as silence and is
    counted. With ``ahead=0`` the callback reads the ring and mixes itself (the path before).
    """

    def __init__(self, block: SharedBlock, voices: Voices, rate: int = 48000, ahead: int = 0, blocksize: int = 128):
        self.block = block
        self.rate = rate
        self.voices = voices
        self.h = block.header
        self.ring = block.ring
        self.timings = block.timings
        self.read = int(self.h[READ])  # a restarted mixer goes on where the last one stopped
        self.frame = 0
        self.panic = int(self.h[PANIC])
        self.started = 0
        self.ahead = MixAhead(voices, blocksize, ahead) if ahead > 0 else None
        self.wake = threading.Lock()  # released by each callback: the mixing thread's turn
        self.wake.acquire()
        self.turn_lock = threading.Lock()  # held by a mixing turn: the callback never mixes during one
        self.mixing = False
        self.callback_thread = 0  #: the callback's OS thread id (its real-time priority is JACK's)

    def callback(self, outdata, frames, time_info, status) -> None:
        """The stream's callback: copy (or mix), and never raise (PortAudio would stop the stream):
        a block that fails plays silence, the clock goes on, and the fault is counted in the header."""
        block_start = self.frame
        try:
            if self.ahead is None:
                self._mix_block(outdata, frames, status)
            else:
                self._copy_block(outdata, frames, status)
        except Exception:
            outdata.fill(0.0)
            h = self.h
            h[FAULTS] += 1
            if self.frame == block_start:
                self.frame = block_start + frames
            if h[SEQ] & 1:
                h[SEQ] += 1
            if self.ahead is not None:
                self.ahead.playhead = self.frame

    def _begin(self, started: int, status) -> None:
        h = self.h
        if not self.started:
            self.callback_thread = threading.get_native_id()
            if h[AT_NS]:
                # a restarted mixer: the clock ran on the wall since the last one's last block, so the
                # first block goes on from there, however long this process took to start (a frame
                # counted from when the restart began would send the clock back and stall the engine)
                self.frame = int(h[FRAMES]) + (started - int(h[AT_NS])) * self.rate // 1_000_000_000
        if self.started and started - self.started > h[WORST_GAP_NS]:
            h[WORST_GAP_NS] = started - self.started  # how late the system woke the callback, at worst
        self.started = started
        if status.output_underflow:
            h[UNDERRUNS] += 1

    def _publish(self, frame: int, started: int) -> None:
        h = self.h
        self.frame = frame
        h[SEQ] += 1
        h[FRAMES] = frame
        h[AT_NS] = time.monotonic_ns()
        h[SEQ] += 1
        h[CALLBACKS] += 1
        took = time.monotonic_ns() - started
        if took > h[WORST_NS]:
            h[WORST_NS] = took  # the mixer's own work, at worst: an underrun is ours only if this nears a period
        self.timings[min(took // TIMING_BIN_NS, TIMING_BINS - 1)] += 1

    def _copy_block(self, outdata, frames, status) -> None:
        started = time.monotonic_ns()
        self._begin(started, status)
        frame, ahead = self.frame, self.ahead
        if not ahead.copy_out(outdata, frame, frames):
            # not mixed in time (the mixing thread was late): mix this one block here, as before,
            # unless the mixing thread is mid-turn (never wait for it: then silence)
            self.h[NOT_READY] += 1
            mixed = False
            if frames == ahead.block and self.turn_lock.acquire(False):
                try:
                    ahead.playhead = frame
                    self.mix_turn(limit=1)
                    mixed = ahead.copy_out(outdata, frame, frames)
                finally:
                    self.turn_lock.release()
            if not mixed:
                outdata.fill(0.0)
                self.h[SILENT] += 1
        ahead.playhead = frame + frames
        self._publish(frame + frames, started)
        if self.wake.locked():  # only this thread releases it: never twice
            self.wake.release()

    def _mix_block(self, outdata, frames, status) -> None:
        started = time.monotonic_ns()
        self._begin(started, status)
        h, ring, voices = self.h, self.ring, self.voices
        block_start = self.frame
        written = int(h[WRITTEN])
        r = self.read
        while r < written:
            row = ring[r % CAPACITY]
            if row[3] != r + 1:  # not all of the slot is visible yet: next block
                break
            frame, voice = int(row[0]), int(row[1])
            if voice >= LEVEL:  # a level change: from this block on
                voices.set_level(voice - LEVEL, float(row[2]))
            else:
                voices.add(frame if frame >= block_start else block_start, voice, float(row[2]))
            r += 1
        self.read = r
        h[READ] = r
        outdata.fill(0.0)
        panic = int(h[PANIC])
        if panic != self.panic:
            voices.clear()
            self.panic = panic
        voices.mix(outdata, block_start)
        voices.limit(outdata)
        self._publish(block_start + frames, started)

    # --- the mixing thread (with ahead) ---------------------------------------------------
    def mix_turn(self, limit: int | None = None) -> int:
        """One turn of the mixing thread: the ring's new events, a panic, then the blocks due (at
        most ``limit``); returns how many blocks it mixed."""
        started = time.monotonic_ns()
        h, ring, ahead = self.h, self.ring, self.ahead
        callbacks = int(h[CALLBACKS])
        written = int(h[WRITTEN])
        r = self.read
        while r < written:
            row = ring[r % CAPACITY]
            if row[3] != r + 1:  # not all of the slot is visible yet: next turn
                break
            ahead.schedule(int(row[0]), int(row[1]), float(row[2]))
            r += 1
        self.read = r
        h[READ] = r
        panic = int(h[PANIC])
        if panic != self.panic:
            ahead.panic()
            self.panic = panic
        done = ahead.advance(limit)
        h[REMIXED] = ahead.remixed
        h[LATE_EVENTS] = ahead.late
        took = time.monotonic_ns() - started
        if took > h[MIX_WORST_NS]:
            h[MIX_WORST_NS] = took
        if int(h[CALLBACKS]) != callbacks:
            h[OVERLAPS] += 1  # a callback came meanwhile: it may have waited for the interpreter lock
        return done

    def run_mixing(self) -> None:
        """The mixing thread's loop: a turn after each callback (or every 50 ms without one);
        a turn that fails is counted and the next one goes on."""
        while self.mixing:
            self.wake.acquire(timeout=0.05)
            try:
                with self.turn_lock:
                    self.mix_turn()
            except Exception:
                self.h[FAULTS] += 1

    def start_mixing(self) -> threading.Thread | None:
        """Mix the first blocks (a fresh start plays from frame 0) and start the mixing thread."""
        if self.ahead is None:
            return None
        if not self.h[AT_NS]:
            self.mix_turn()
        self.mixing = True
        thread = threading.Thread(target=self.run_mixing, name="mix-ahead", daemon=True)
        thread.start()
        return thread

    def stop_mixing(self, thread: threading.Thread | None) -> None:
        self.mixing = False
        if thread is not None:
            if self.wake.locked():
                self.wake.release()
            thread.join(1.0)

    def duplex(self, indata, outdata, frames, time_info, status) -> None:
        rec = self.block.recording
        start = self.frame
        if start < len(rec):
            n = min(frames, len(rec) - start)
            rec[start:start + n] = indata[:n]
        self.callback(outdata, frames, time_info, status)


def open_stream(mixer: Mixer, rate: int, device=None, hostapi: str | None = None, blocksize: int = 128,
                latency="low", ring: bool = False):
    """A sounddevice stream (not started) whose callback is the mixer's: duplex when the mixer's
    block keeps a recording (the loopback tests), else output only; with ``ring``, rtmixer's
    stream and its ring instead (``audio.ring_out``)."""
    import sounddevice as sd

    device = find_output(device, hostapi)
    channels = mixer.voices.channels
    info = sd.query_devices(device)
    if info["max_output_channels"] < channels:
        raise DrumMachineError("--outs", f"{channels} output channels needed; {info['name']} has "
                               f"{info['max_output_channels']} (under JACK: as many as the server's playback ports)")
    if ring:
        from drummachine.audio.ring_out import open_ring_stream

        return open_ring_stream(device, rate, blocksize, channels, latency)
    common = dict(samplerate=rate, blocksize=blocksize, channels=channels, dtype="float32", latency=latency)
    if mixer.block.recording is not None:
        return sd.Stream(device=(device, device), callback=mixer.duplex, **common)
    return sd.OutputStream(device=device, callback=mixer.callback, **common)


MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4  # <sys/mman.h> on Linux (MCL_ONFAULT: 4.4 and later)


def lock_memory() -> str | None:
    """mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) where the memlock limit allows it: a page
    the callback or the mixing thread has touched is never paged out again, so no page fault stalls
    them (ONFAULT: pages never touched, as OpenBLAS's 32 MB buffer, stay unmapped instead of
    resident). None when locked, else the one line saying why not (a Pi's default limit is 8 MB:
    the user joins the audio group, see docs/raspberry-pi.md)."""
    import ctypes
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:
        # a limit that fits today's pages would fail tomorrow's allocations under MCL_FUTURE
        return (f"memory not locked: the memlock limit is {soft // 1024} kB (allow 'memlock unlimited' "
                f"for the audio group in /etc/security/limits.d/ and join the group)")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0 and libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
            return f"memory not locked: mlockall failed ({os.strerror(ctypes.get_errno())})"
    except (OSError, AttributeError) as exc:
        return f"memory not locked: no mlockall here ({exc})"
    return None


def realtime_below(thread_id: int, callback_thread: int) -> str | None:
    """SCHED_FIFO for the mixing thread one step below the callback's priority (JACK gives the
    callback its own), so it runs as soon as a callback wakes it and never delays one; without
    the right, nice -10, and without that the thread runs as it is. None, or the one line why not."""
    try:
        callback_priority = os.sched_getparam(callback_thread).sched_priority if callback_thread else 0
        if os.sched_getscheduler(callback_thread) not in (os.SCHED_FIFO, os.SCHED_RR):
            callback_priority = 0
    except OSError:
        callback_priority = 0
    priority = max(1, callback_priority - 1) if callback_priority else 0
    if priority:
        try:
            os.sched_setscheduler(thread_id, os.SCHED_FIFO, os.sched_param(priority))
            return None
        except OSError as exc:
            why = f"no real-time priority for the mixing thread ({exc.strerror})"
    else:
        why = "no real-time priority for the mixing thread (the audio callback has none to stay below)"
    try:
        os.setpriority(os.PRIO_PROCESS, thread_id, -10)  # a thread's own nice value on Linux
        return why + "; it runs at nice -10"
    except OSError:
        return why + "; it runs at normal priority (allow rtprio for the audio group: docs/raspberry-pi.md)"


def serve(stdin=sys.stdin, stdout=sys.stdout) -> int:
    """The mixer process: set up from one JSON line, answer, play until stdin closes."""
    import gc
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle; it closes the pipe

    def answer(d: dict) -> None:
        stdout.write(json.dumps(d) + "\n")
        stdout.flush()

    try:  # while the engine sends the set-up (it may be decoding a kit): PortAudio's start-up
        import sounddevice  # noqa: F401
    except Exception:
        pass  # open_stream says what is wrong, in the answer
    try:
        setup = json.loads(stdin.readline())
        from drummachine.audio.mixing import out_channels

        outs, cue = setup.get("outs", "stereo"), bool(setup.get("cue"))
        block = SharedBlock(setup["shm"], setup["record_frames"], len(out_channels(outs, cue)))
        try:  # Python < 3.13 tracks attached blocks too, and would unlink the engine's at exit
            from multiprocessing import resource_tracker

            resource_tracker.unregister(block.shm._name, "shared_memory")
        except Exception:
            pass
    except Exception as exc:
        answer({"error": f"bad set-up ({exc.__class__.__name__})"})
        return 2
    stream = None
    shared_kit = None
    try:
        from drummachine.audio.kit import SharedKit, synth_kit

        rate = int(setup["rate"])
        if setup["kit"]:  # decoded by the engine process: mapped, not copied
            shared_kit = SharedKit(name=setup["kit"], layout=setup["kit_layout"])
            try:  # as the event block: Python < 3.13 would unlink the engine's kit at this one's exit
                from multiprocessing import resource_tracker

                resource_tracker.unregister(shared_kit.shm._name, "shared_memory")
            except Exception:
                pass
            kit = shared_kit.kit()
        else:
            kit = synth_kit(rate)
    except DrumMachineError as exc:
        answer({"error": exc.what, "where": exc.where, "kit": True})
        return 2
    except OSError as exc:
        answer({"error": f"the kit's shared memory is gone ({exc})", "kit": True})
        return 2
    notes = []
    mixing = None
    player = None
    try:
        from drummachine.audio import ring_out

        blocksize = int(setup["blocksize"])
        how = setup.get("mixing", "ahead")
        if how not in MIXINGS:
            raise DrumMachineError("mixing", f"unknown way of mixing {how!r}; allowed: {', '.join(MIXINGS)}")
        if how == "ring" and not ring_out.available():
            notes.append("rtmixer is not installed: the mixer's Python callback copies blocks mixed ahead")
            how = "ahead"
        if how == "ring" and setup["record_frames"]:
            # a recording (the tests' loopback) needs a duplex callback; mixing in it keeps the
            # recording whole however late the host runs the threads (what it checks is the mix)
            how = "callback"
        if not blocksize:
            how = "callback"  # PortAudio's own (varying) block size: mix in the callback
        mixer = Mixer(block, Voices(kit, block_max=8192, outs=outs, cue=cue), rate, ahead=MIXINGS[how][0],
                      blocksize=blocksize)
        if how == "ring":
            stream, ring = open_stream(mixer, rate, setup["device"], setup["hostapi"], blocksize, setup["latency"],
                                       ring=True)
        else:
            stream = open_stream(mixer, rate, setup["device"], setup["hostapi"], blocksize, setup["latency"])
        gc.collect()
        gc.freeze()
        gc.disable()
        if how != "callback":
            sys.setswitchinterval(SWITCH_INTERVAL)
            note = lock_memory()
            if note:
                notes.append(note)
        if how == "ring":
            stream.start()
            player = ring_out.RingPlayer(mixer, stream, ring, int(setup.get("ring_blocks") or ring_out.DEPTH_BLOCKS))
            player.begin()
        else:
            mixing = mixer.start_mixing()
            stream.start()
    except DrumMachineError as exc:
        answer({"error": exc.what, "where": exc.where})
        return 2
    except Exception as exc:
        answer({"error": f"no audio output ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})"})
        return 2
    if mixing is not None:
        waited = time.monotonic() + 2.0
        while not mixer.callback_thread and time.monotonic() < waited:
            time.sleep(0.005)  # the first callback tells which thread (and priority) JACK gave it
        note = realtime_below(mixing.native_id, mixer.callback_thread)
        if note:
            notes.append(note)
    if player is not None:
        note = realtime_below(player.thread.native_id, ring_out.jack_thread())
        if note:
            notes.append(note)
    lat = stream.latency
    answer({"ready": True, "latency": float(lat[1] if isinstance(lat, tuple) else lat), "notes": notes,
            "mixing": how})
    try:
        while stdin.readline():  # nothing is sent after the set-up: this waits for the pipe to close
            pass
    except (OSError, KeyboardInterrupt):
        pass
    try:
        if player is not None:
            player.end()
        stream.stop()
        stream.close()
        mixer.stop_mixing(mixing)
    finally:
        block.close()
        if shared_kit is not None:
            del kit, mixer
            shared_kit.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
