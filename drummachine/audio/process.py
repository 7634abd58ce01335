"""Audio out in its own process: the mixing callback shares no interpreter lock with the engine.

The engine process (generator, commit loop, MIDI) and the mixer process talk through one block of
shared memory and never wait on each other (``audio.wire``: the event ring, the shared sample
clock, the counters).

The kit is decoded once, in the engine process (or read from its cache: the built-in kit's
synthesis too), into a second block of shared memory (``kit.SharedKit``) that the mixer maps
without a copy; a restarted mixer maps it again instead of decoding.

The mixer process is ``python -m drummachine.audio.process``, set up by one JSON line on its
standard input and answering one JSON line (ready, with the stream's latency, or the error). It
stops when that pipe closes — so it never outlives the engine. Nothing is pickled.

In the mixer process, the callback is the only Python thread that runs: the main thread sleeps
in a blocking read. Collection by the garbage collector is off (the callback allocates no
containers).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from drummachine.audio.devices import find_output
from drummachine.audio.mixing import CLICK, CLICK_ACCENT, CUE, Voices
from drummachine.audio.wire import (AT_NS, CALLBACKS, CAPACITY, FAULTS, FRAMES, LEVEL, PANIC, READ, SEQ, UNDERRUNS,
                                    WORST_GAP_NS, WORST_NS, WRITTEN, EventRing, SharedAudioClock, SharedBlock)
from drummachine.core.events import Event, Sink
from drummachine.core.errors import DrumMachineError
from drummachine.core.transport import STEPS_PER_BAR, STEPS_PER_BEAT

CLICK_LEVEL = 0.5


class AudioProcessSink(Sink):
    """Plays note events through a mixer process; its sample counter is ``clock``.

    The kit (``kit_path``, ``--kit``; None: the built-in) is decoded here (from its cache: a
    read) while the mixer's interpreter starts, and a broken one raises DrumMachineError with
    ``kit`` set; then ``start`` returns at once (the mixer opens the stream meanwhile, while the
    engine loads its model); ``wait_ready`` raises DrumMachineError if the mixer could not start.
    ``outs`` chooses the output channels (``mixing.OUTS``); ``cue`` adds the cue bus after them.
    """

    def __init__(self, kit_path: str | None = None, rate: int = 48000, device=None, blocksize: int = 128,
                 hostapi: str | None = None, record_seconds: float = 0.0, latency: str = "low",
                 outs: str = "stereo", cue: bool = False, click: bool = True):
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
                      "outs": outs, "cue": cue,
                      "latency": latency}
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
        self.proc = subprocess.Popen([sys.executable, "-m", "drummachine.audio.process"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
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
                                     CLICK_LEVEL)
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

class Mixer:
    """The callback side: reads the ring, mixes the voices, publishes the clock."""

    def __init__(self, block: SharedBlock, voices: Voices, rate: int = 48000):
        self.block = block
        self.rate = rate
        self.voices = voices
        self.h = block.header
        self.ring = block.ring
        self.read = int(self.h[READ])  # a restarted mixer goes on where the last one stopped
        self.frame = 0
        self.panic = int(self.h[PANIC])
        self.started = 0

    def callback(self, outdata, frames, time_info, status) -> None:
        """The stream's callback: mix, and never raise (PortAudio would stop the stream): a block
        that fails plays silence, the clock goes on, and the fault is counted in the header."""
        block_start = self.frame
        try:
            self._mix_block(outdata, frames, status)
        except Exception:
            outdata.fill(0.0)
            h = self.h
            h[FAULTS] += 1
            if self.frame == block_start:
                self.frame = block_start + frames
            if h[SEQ] & 1:
                h[SEQ] += 1

    def _mix_block(self, outdata, frames, status) -> None:
        started = time.monotonic_ns()
        h, ring, voices = self.h, self.ring, self.voices
        if not self.started and h[AT_NS]:
            # a restarted mixer: the clock ran on the wall since the last one's last block, so the
            # first block goes on from there, however long this process took to start (a frame
            # counted from when the restart began would send the clock back and stall the engine)
            self.frame = int(h[FRAMES]) + (started - int(h[AT_NS])) * self.rate // 1_000_000_000
        if self.started and started - self.started > h[WORST_GAP_NS]:
            h[WORST_GAP_NS] = started - self.started  # how late the system woke the callback, at worst
        self.started = started
        if status.output_underflow:
            h[UNDERRUNS] += 1
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
        self.frame = block_start + frames
        h[SEQ] += 1
        h[FRAMES] = self.frame
        h[AT_NS] = time.monotonic_ns()
        h[SEQ] += 1
        h[CALLBACKS] += 1
        took = time.monotonic_ns() - started
        if took > h[WORST_NS]:
            h[WORST_NS] = took  # the mixer's own work, at worst: an underrun is ours only if this nears a period

    def duplex(self, indata, outdata, frames, time_info, status) -> None:
        rec = self.block.recording
        start = self.frame
        if start < len(rec):
            n = min(frames, len(rec) - start)
            rec[start:start + n] = indata[:n]
        self.callback(outdata, frames, time_info, status)


def open_stream(mixer: Mixer, rate: int, device=None, hostapi: str | None = None, blocksize: int = 128,
                latency="low"):
    """A sounddevice stream (not started) whose callback is the mixer's: duplex when the mixer's
    block keeps a recording (the loopback tests), else output only."""
    import sounddevice as sd

    device = find_output(device, hostapi)
    channels = mixer.voices.channels
    info = sd.query_devices(device)
    if info["max_output_channels"] < channels:
        raise DrumMachineError("--outs", f"{channels} output channels needed; {info['name']} has "
                               f"{info['max_output_channels']} (under JACK: as many as the server's playback ports)")
    common = dict(samplerate=rate, blocksize=blocksize, channels=channels, dtype="float32", latency=latency)
    if mixer.block.recording is not None:
        return sd.Stream(device=(device, device), callback=mixer.duplex, **common)
    return sd.OutputStream(device=device, callback=mixer.callback, **common)


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
    try:
        mixer = Mixer(block, Voices(kit, block_max=8192, outs=outs, cue=cue), rate)
        stream = open_stream(mixer, rate, setup["device"], setup["hostapi"], setup["blocksize"], setup["latency"])
        gc.collect()
        gc.freeze()
        gc.disable()
        stream.start()
    except DrumMachineError as exc:
        answer({"error": exc.what, "where": exc.where})
        return 2
    except Exception as exc:
        answer({"error": f"no audio output ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})"})
        return 2
    lat = stream.latency
    answer({"ready": True, "latency": float(lat[1] if isinstance(lat, tuple) else lat)})
    try:
        while stdin.readline():  # nothing is sent after the set-up: this waits for the pipe to close
            pass
    except (OSError, KeyboardInterrupt):
        pass
    try:
        stream.stop()
        stream.close()
    finally:
        block.close()
        if shared_kit is not None:
            del kit, mixer
            shared_kit.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
