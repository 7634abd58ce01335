"""Audio out in its own process: the mixing shares no interpreter lock with the engine.

The engine process (generator, commit loop, MIDI) and the mixer process talk through one block of
shared memory and never wait on each other (``audio.wire``: the event ring, the shared sample
clock, the counters).

The kit is decoded once, in the engine process (or read from its cache: the built-in kit's
synthesis too), into a second block of shared memory (``kit.SharedKit``) that the mixer maps
without a copy; a restarted mixer maps it again instead of decoding.

The mixer process is ``python -m drummachine.audio.mixer`` (``audio.mixer``), set up by one JSON line on its
standard input and answering one JSON line (ready, with the output's latency and what it could
not get: real-time priority, locked memory; or the error). It stops when that pipe closes — so it
never outlives the engine. Nothing is pickled.

The clock is the frames the stream's callback has taken; a frame taken reaches the sound card's
output the output's latency later (over JACK, the server's periods: 2 × 1,024 frames is 43 ms).
The sink hands each hit to the mixer that much earlier, so a hit timed at ``t`` on the clock
sounds at ``t`` at the sound card: where the listener places the band's beat (its capture latency
taken off). The engine hands steps out that much sooner (``ahead_s``).

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
import time

import numpy as np

from drummachine.audio.mixing import CLICK, CLICK_ACCENT, CUE
from drummachine.audio.wire import (AT_NS, CALLBACKS, FAULTS, FRAMES, LATE_EVENTS, LEVEL, MIX_WORST_NS,
                                    NOT_READY, OUT_LATENCY_NS, OVERLAPS, PANIC, SILENT, READ, REMIXED, SEQ, UNDERRUNS,
                                    WORST_GAP_NS, WORST_NS, EventRing, SharedAudioClock, SharedBlock,
                                    timing_summary)
from drummachine.core.command_handlers import CLICK_LEVEL  # the click's level when no song sets one
from drummachine.core.events import Event, Sink
from drummachine.core.errors import DrumMachineError
from drummachine.core.transport import STEPS_PER_BAR, STEPS_PER_BEAT

log = logging.getLogger("drummachine")
LATENCY_CHANGE_S = 0.0001  #: a change in JACK's latency for the kit's ports smaller than this is not taken


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
    ``jack_ports``: ``(ring address, channels) -> ports`` (``midi.jack_audio.JackAudioPorts``): the
    kit plays through the engine's own JACK client, from a ring the mixer writes (``mixing =
    "jack"``, ``audio.jack_ring``), and the mixer process never touches JACK.
    """

    click_level = CLICK_LEVEL  #: the click's level on the cue bus; the engine sets it (its click_level)
    output_latency_s = 0.0  #: from the callback to the sound card's output (``devices.playback_latency``)
    output_latency_from = ""  #: whose figure that is: JACK's, or PortAudio's

    def __init__(self, kit_path: str | None = None, rate: int = 48000, device=None, blocksize: int = 128,
                 hostapi: str | None = None, record_seconds: float = 0.0, latency: str = "low",
                 outs: str = "stereo", cue: bool = False, click: bool = True, mixing: str = "ring",
                 ring_blocks: int = 0, jack_ports=None):
        from drummachine.audio.mixing import out_channels

        self.rate = rate
        self.kit_path = kit_path
        self.kit = None
        self.ahead_s = 0.0
        self.cue = cue
        self.click = click  #: the click on the cue bus (needs the engine's clock events: midi_clock=True)
        self._beat_step = -1
        self.channels = out_channels(outs, cue)  # an unknown layout is one error, before anything starts
        self.block = SharedBlock(record_frames=int(record_seconds * rate), channels=len(self.channels))
        self.clock = SharedAudioClock(self.block.header, rate)
        self.events = EventRing(self.block)
        self.jack_ring = self.jack_ports = None
        if jack_ports is not None:
            from drummachine.audio.jack_ring import CAPACITY, AudioRing

            mixing = "jack"
            # room for the writer's depth at a long JACK period (4,096 frames) with large blocks too
            capacity = max(CAPACITY, 1 << (16 * blocksize - 1).bit_length())
            self.jack_ring = AudioRing(len(self.channels), capacity=capacity)
            self.jack_ports = jack_ports(self.jack_ring.address, len(self.channels))
            self.jack_ports.open()  # no server yet: the mixer says so, and the watch tries again
        self.restarts = 0
        self.opened = False  #: a mixer has played (False: the output was not there yet)
        self._recording = None
        self.setup = {"shm": self.block.name, "kit": None, "kit_layout": None, "rate": rate, "device": device,
                      "blocksize": blocksize, "hostapi": hostapi, "record_frames": int(record_seconds * rate),
                      "outs": outs, "cue": cue, "mixing": mixing, "ring_blocks": int(ring_blocks),
                      "latency": latency, "jack_ring": self.jack_ring.name if self.jack_ring else None}
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
        jack = ["--jack"] if self.jack_ring is not None else []  # PortAudio never loaded there
        self.proc = subprocess.Popen([sys.executable, "-m", "drummachine.audio.mixer", *jack], stdin=subprocess.PIPE,
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
        h = self.block.header
        h[READ] = self.events.written  # what waited for the dead mixer is too late now
        h[SEQ] += h[SEQ] & 1  # killed mid-update: the lock is free again
        if not h[AT_NS]:
            # no mixer has played yet (the output was not there at the start): the clock ran on
            # the wall since this sink was made; the first mixer goes on from there, as a
            # restarted one does (from frame 0 it would send the clock back and stall the engine)
            frames = round(self.clock.now() * self.rate)
            h[SEQ] += 1
            h[FRAMES] = frames
            h[AT_NS] = time.monotonic_ns()
            h[SEQ] += 1
        for pipe in (self.proc.stdin, self.proc.stdout):  # the dead mixer's: closed now, not when collected
            try:
                pipe.close()
            except OSError:
                pass
        played_before = self.opened
        self._spawn()
        self.wait_ready(close_on_error=False)
        self.restarts += played_before  # the first mixer to play, late, is no restart
        return True

    def play_at(self, rate: int) -> None:
        """While no mixer plays (an output that came late, or a sound server back at another rate):
        the sink, its clock and its kit at ``rate``, the clock going on from where it is. Events
        already in the ring are dropped by the next ``restart_if_gone``."""
        from drummachine.audio.kit import SharedKit, built_in, decode

        if self.alive:
            raise DrumMachineError("audio", "the sample rate changes only while no mixer plays")
        kit = SharedKit(decode(self.kit_path, rate) if self.kit_path else built_in(rate))
        h = self.block.header
        # the frame count first, the rate after: a clock read between the two sees time stand
        # still a moment (it never goes back), not jump ahead by the ratio of the rates
        now = self.clock.now()
        h[SEQ] += 1
        h[FRAMES] = round(now * rate)
        h[AT_NS] = time.monotonic_ns()
        h[SEQ] += 1
        self.rate = self.clock.rate = rate
        old, self.kit = self.kit, kit
        self.setup.update(rate=rate, kit=kit.name, kit_layout=kit.layout)
        if old is not None:
            old.close()

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
                try:
                    self.proc.wait(5)  # gone before anyone asks whether a mixer plays
                except subprocess.TimeoutExpired:
                    pass
            exc = DrumMachineError(reply.get("where", "audio"), reply["error"])
            exc.kit = bool(reply.get("kit"))  # the user's kit is broken: not a reason to go on silently
            exc.device_rate = reply.get("device_rate")  # the output plays at this rate only
            raise exc
        self.output_latency_s = float(reply.get("output_latency_s", 0.0))
        self.output_latency_from = reply.get("output_latency_from", "")
        if self.jack_ports is not None:  # the engine's own JACK client: its ports' figure
            self.jack_ports.check()
            self.output_latency_s, self.output_latency_from = self.jack_ports.playback_latency_s, "JACK"
        self.block.header[OUT_LATENCY_NS] = round(self.output_latency_s * 1e9)  # for the listening process
        #: how far ahead of the clock a hit must come: the mixer's ring, and the output latency
        #: it is handed over before its time
        self.ahead_s = float(reply.get("ahead_s", 0.0)) + self.output_latency_s
        self.notes = list(reply.get("notes", ()))
        self.mixing = reply.get("mixing", self.setup["mixing"])  #: how the mixer feeds the stream, as it started
        for note in self.notes:
            log.info("mixer: %s", note)
        self.ready = self.opened = True
        return self

    @property
    def early_frames(self) -> int:
        """Frames each hit goes to the mixer before its time: the output latency."""
        return round(self.output_latency_s * self.rate)

    # --- Sink -----------------------------------------------------------------------------
    def send(self, events: list[Event]) -> None:
        # the rate read once: a sound server back at another rate changes it from the watchdog
        rate = self.rate
        early = round(self.output_latency_s * rate)
        for e in events:
            if e.kind == "note":
                self.events.push(round(e.time * rate) - early, e.voice, e.velocity)
            elif e.kind == "clock" and self.cue and self.click and e.step != self._beat_step:
                # a step's first clock pulse is its start: on a beat, a click (the bar's first: accented)
                self._beat_step = e.step
                if e.step % STEPS_PER_BEAT == 0:
                    self.events.push(round(e.time * rate) - early,
                                     CLICK_ACCENT if e.step % STEPS_PER_BAR == 0 else CLICK, self.click_level)
            elif e.kind == "cue" and self.cue:  # an engine that announces a section change a bar ahead
                self.events.push(round(e.time * rate) - early, CUE, e.velocity or 1.0)

    def cue_sound(self, time: float, level: float = 1.0) -> None:
        """The section cue on the cue bus at ``time`` (clock seconds): one bar before a section change."""
        if self.cue:
            self.events.push(round(time * self.rate) - self.early_frames, CUE, level)

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

    @property
    def output_ports(self) -> tuple[str, ...]:
        """The kit's JACK output ports where the engine's own client plays them, else ()."""
        return tuple(self.jack_ports.names) if self.jack_ports_there() else ()

    @property
    def kit_tap(self) -> str:
        """The shared block holding the kit as mixed (``wire.KitTap``), for the listening process."""
        return self.block.name if self.block.header is not None else ""

    def jack_ports_there(self) -> bool:
        """Where the engine's own JACK client plays the kit: its ports are registered (a server is there)."""
        return self.jack_ports is not None and self.jack_ports.slot is not None

    def keep_up(self) -> bool:
        """From the audio watch, once a second: the engine's JACK client's ports (the server gone
        and back, their connections, their latency). A mixer whose ports went to a new client
        (the server back, perhaps at another rate) exits by itself (``jack_ring.EXIT_NEW_CLIENT``),
        and the watch starts the next from the clock, at the server's rate. True when JACK's
        latency for the ports changed (routed through another client, or to nothing): the hits
        go that much earlier from now on, and the engine's hand-out margin is to be reckoned again."""
        if self.jack_ports is None:
            return False
        self.jack_ports.check()
        latency = self.jack_ports.playback_latency_s
        if not self.ready or self.jack_ports.slot is None or abs(latency - self.output_latency_s) < LATENCY_CHANGE_S:
            return False
        self.ahead_s += latency - self.output_latency_s
        self.output_latency_s = latency
        self.block.header[OUT_LATENCY_NS] = round(latency * 1e9)
        return True

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
        if self.jack_ports is not None:  # the ports first: JACK's callback reads the ring until they go
            self.jack_ports.close()
            if not self.jack_ports.left_allocated:  # else left mapped: a late callback may still read it
                self.jack_ring.close()
        self.block.close()
        if self.kit is not None:
            self.kit.close()
        if self.proc.stdout:
            self.proc.stdout.close()


# --- the mixer process ------------------------------------------------------------------------
