"""The ring that carries the kit's audio from the mixer process to drummachine's own JACK client.

Over JACK the kit's output ports are ports of the engine's one JACK client (the MIDI client,
``midi.jack_midi``; its ports for the kit: ``midi.jack_audio``), whose C callback copies each
period's frames out of this ring; the mixer process only mixes and writes here. So no Python
runs in JACK's thread, and a mixer that dies (killed, crashed) takes nothing out of the JACK
graph: the ports stay, play silence until the next mixer writes, and JACK never sees a client
leave or join (a SIGKILLed PortAudio client cost the graph 2.6 blamed periods a kill in the
hour's soak, a C client 1.3: docs/faults.md).

The ring is a block of shared memory the engine creates: a header the C side defines (``dm_ring``
in ``midi/jack_midi.c``), then the frames, interleaved float32. Its C half is compiled into the
same library as the JACK client and loaded here by its file (the ring needs no libjack): one
writer (the mixer: ``write``), one reader (JACK's callback), positions counted in frames since
the ring was made. What the callback publishes with each period (the frames taken at its start,
the start on CLOCK_MONOTONIC, its length) is the mixer's clock.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
import threading
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from drummachine.audio.ring_out import DEPTH_BLOCKS, STALLED_MIN_S, STALLED_PERIODS, depth_frames
from drummachine.audio.wire import AT_NS, CALLBACKS, FAULTS, FRAMES, NOT_READY, SEQ, UNDERRUNS
from drummachine.core.errors import DrumMachineError
from drummachine.core.shared_block import untrack

#: ``dm_ring_state``'s fields, in its order
STATE = ("write", "read", "skip_to", "dry", "rate", "period", "ports", "periods", "cycle_read", "cycle_ns",
         "cycle_frames", "outputs", "opens", "xruns")
EXIT_NEW_CLIENT = 3  #: the mixer's exit status when the ports it played went to a new client
CAPACITY = 8192  #: frames the ring holds (a power of two): 170 ms at 48 kHz, above any depth the writer keeps

_library: ctypes.CDLL | None = None


def library() -> ctypes.CDLL | None:
    """The ring's C half (in the JACK client's library), or None where that is not built."""
    global _library
    if _library is None:
        folder = Path(__file__).resolve().parent.parent / "midi"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"_jack_midi{suffix}"
            if path.exists():
                try:
                    lib = ctypes.CDLL(str(path))
                except OSError:
                    return None
                c = ctypes
                for name, restype, argtypes in (
                        ("dm_ring_bytes", c.c_size_t, [c.c_uint32, c.c_uint32]),
                        ("dm_ring_init", c.c_int, [c.c_void_p, c.c_uint32, c.c_uint32]),
                        ("dm_ring_space", c.c_uint32, [c.c_void_p]),
                        ("dm_ring_write", c.c_int, [c.c_void_p, c.c_void_p, c.c_uint32]),
                        ("dm_ring_skip", c.c_uint64, [c.c_void_p]),
                        ("dm_ring_state", None, [c.c_void_p, c.POINTER(c.c_uint64)])):
                    fn = getattr(lib, name)
                    fn.restype, fn.argtypes = restype, argtypes
                _library = lib
                break
    return _library


def available() -> bool:
    return library() is not None


class AudioRing:
    """The ring in shared memory: made by the engine (``channels``), mapped by the mixer (``name``)."""

    def __init__(self, channels: int = 0, name: str | None = None, capacity: int = CAPACITY):
        lib = library()
        if lib is None:
            raise DrumMachineError("audio", "drummachine's JACK client is not built here")
        self.lib = lib
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=lib.dm_ring_bytes(channels, capacity))
            self.owner = True
        else:
            self.shm = shared_memory.SharedMemory(name=name)
            self.owner = False
            untrack(self.shm)
        self._bytes = np.frombuffer(self.shm.buf, np.uint8)
        self.address = self._bytes.ctypes.data
        if self.owner and lib.dm_ring_init(self.address, channels, capacity) != 0:
            self.close()
            raise DrumMachineError("audio", f"no ring for {channels} channels of {capacity} frames")
        state = np.frombuffer(self.shm.buf, np.uint64, count=16)
        self.channels, self.capacity = int(state[13]), int(state[14])  # dm_ring's channels, capacity
        del state
        self._state = (ctypes.c_uint64 * len(STATE))()

    @property
    def name(self) -> str:
        return self.shm.name

    def space(self) -> int:
        return int(self.lib.dm_ring_space(self.address))

    def write(self, frames: np.ndarray) -> bool:
        """Append ``frames`` ((n, channels) float32, C order); False (nothing written) when they do not fit."""
        return self.lib.dm_ring_write(self.address, frames.ctypes.data, len(frames)) == 0

    def skip(self) -> int:
        """What waits in the ring is not played (a dead mixer's frames); returns the frames written."""
        return int(self.lib.dm_ring_skip(self.address))

    def state(self) -> dict[str, int]:
        self.lib.dm_ring_state(self.address, self._state)
        return dict(zip(STATE, (int(v) for v in self._state)))

    def close(self) -> None:
        if self.shm is None:
            return
        self._bytes = None  # the export on the buffer goes first, or the mapping cannot close
        self.shm.close()
        if self.owner:
            self.shm.unlink()
        self.shm = None


class JackRingPlayer:
    """The mixer process's writer over JACK: keeps the ring ``depth`` frames full from the mixer's
    voices (as ``ring_out.RingPlayer`` keeps rtmixer's) and publishes the clock from what the
    engine's JACK callback took and when its period began."""

    def __init__(self, mixer, ring: AudioRing, depth_blocks: int = 0):
        self.mixer, self.ring = mixer, ring
        self.block = mixer.ahead.block
        state = ring.state()
        self.period = max(self.block, state["period"])
        self.depth = depth_frames(self.block, self.period, depth_blocks or DEPTH_BLOCKS)
        if self.depth + self.block > ring.capacity:
            raise DrumMachineError("audio", f"JACK's period ({state['period']} frames) is longer than the ring holds")
        self.out = np.zeros((self.block, mixer.voices.channels), np.float32)
        h = mixer.h
        self.start = 0
        if h[AT_NS]:  # a mixer after another: go on from where the clock is now (see ring_out.RingPlayer)
            self.start = int(h[FRAMES]) + (time.monotonic_ns() - int(h[AT_NS])) * mixer.rate // 1_000_000_000
        # what a dead mixer left waiting was mixed for a time gone: not played; ours follows
        self.skipped_to = ring.skip()
        self.offset = self.start - self.skipped_to  #: the clock's frame = the ring's frame + offset
        self.written = self.start
        self.callbacks0, self.not_ready0, self.dry0 = int(h[CALLBACKS]), int(h[NOT_READY]), state["dry"]
        self.underruns0, self.xruns0 = int(h[UNDERRUNS]), state["xruns"]
        mixer.ahead.rendered = mixer.ahead.valid_from = self.start
        self.taken = self.start
        self.taken_at_ns = time.monotonic_ns()
        self.opens = state["opens"]  #: the client whose ports this mixer plays
        self.stalled_ns = int(max(STALLED_PERIODS * self.period / mixer.rate, STALLED_MIN_S) * 1e9)
        self.running = False
        self.thread = None

    def _taken(self, state: dict) -> int:
        """The clock's frame up to which the callback has taken frames."""
        return max(state["read"], self.skipped_to) + self.offset

    def fill(self, state: dict | None = None) -> int:
        """Mix and write blocks until ``depth`` frames wait in the ring; returns how many blocks."""
        mixer, ahead, out, block = self.mixer, self.mixer.ahead, self.out, self.block
        taken = self._taken(state or self.ring.state())
        done = 0
        while self.written - taken + block <= self.depth:
            ahead.playhead = self.written - block  # the frames before ``written`` are in the ring for good
            mixer.mix_turn()
            if not ahead.copy_out(out, self.written, block):
                out.fill(0.0)
                mixer.h[FAULTS] += 1  # cannot happen: the turn mixed this block
            if not self.ring.write(out):
                break  # cannot happen: the depth is under the ring's size
            self.written += block
            done += 1
        return done

    def publish(self, state: dict) -> None:
        """The clock: the frame the callback's latest period began with, and the time since that
        period began; nothing while the callback has taken nothing for a few periods or the
        engine's client has no ports (the server gone): the engine's clock then runs on by the wall
        (as ``ring_out.RingPlayer.publish``)."""
        h = self.mixer.h
        taken = self._taken(state)
        now_ns = time.monotonic_ns()
        if taken != self.taken:
            self.taken, self.taken_at_ns = taken, now_ns
        elif now_ns - self.taken_at_ns > self.stalled_ns or not state["ports"]:
            return
        if state["cycle_ns"] and state["cycle_read"] + self.offset >= self.start:
            # the frame the period began with sounds at the period's start by JACK's clock, the
            # one the MIDI port places its notes by (counted from the period's last frame, the kit
            # would sound a period after its notes: 2.7 ms at 128 frames, 21 ms at 1,024)
            since = max(0, now_ns - state["cycle_ns"]) * self.mixer.rate // 1_000_000_000
            frames = state["cycle_read"] + self.offset + since
        else:
            frames = taken
        frames = min(max(frames, taken - state["cycle_frames"]), taken + self.period)
        h[SEQ] += 1
        h[FRAMES] = frames
        h[AT_NS] = now_ns
        h[SEQ] += 1
        h[CALLBACKS] = self.callbacks0 + (taken - self.start) // self.block  # blocks played
        h[NOT_READY] = self.not_ready0 + state["dry"] - self.dry0  # periods the ring ran short
        h[UNDERRUNS] = self.underruns0 + state["xruns"] - self.xruns0  # JACK's xruns, as PortAudio's flag counted them

    def begin(self) -> None:
        self.fill()
        self.running = True
        self.thread = threading.Thread(target=self.run, name="jack-ring-writer", daemon=True)
        self.thread.start()

    def run(self) -> None:
        """Every half period: fill, publish; a turn that fails is counted and the next goes on."""
        pause = self.block / self.mixer.rate / 2
        while self.running:
            try:
                state = self.ring.state()
                if state["opens"] != self.opens:
                    # the ports are on a new client (the JACK server came back): what waits in the
                    # ring, and the clock counted from it, are from before the outage, while the
                    # engine's clock ran on by the wall; the next mixer goes on from there
                    os._exit(EXIT_NEW_CLIENT)
                self.fill(state)
                self.publish(state)
            except Exception:
                self.mixer.h[FAULTS] += 1
            time.sleep(pause)

    def end(self) -> None:
        self.running = False
        if self.thread is not None:
            self.thread.join(1.0)


def open_for_mix(name: str | None, rate: int, channels: int) -> AudioRing:
    """The engine's ring (``name``), in the mixer process, checked against its mix: ports there (a
    JACK server), at the mix's ``rate``, enough ``channels`` on the ring and on the sound card."""
    try:
        if not name:
            raise FileNotFoundError(name)
        ring = AudioRing(name=name)
    except OSError as exc:  # FileNotFoundError: the engine's block is gone
        raise DrumMachineError("audio", f"the JACK ring is gone ({exc.__class__.__name__})") from None
    state = ring.state()
    problem = None
    if not state["ports"]:
        problem = DrumMachineError("audio", "JACK: drummachine's client has no audio ports (no server?)")
    elif state["rate"] != rate:
        problem = DrumMachineError("audio", f"JACK plays at {state['rate']} Hz, not at {rate} Hz")
        problem.device_rate = state["rate"]
    elif ring.channels < channels or state["outputs"] < channels:
        # as PortAudio's JACK device has as many channels as the server's playback ports: a layout
        # the sound card cannot take whole is refused (and the cue bus dropped first, by the engine)
        problem = DrumMachineError("--outs", f"{channels} output channels needed; system has {state['outputs']} "
                                   "(under JACK: as many as the server's playback ports)")
    if problem is not None:
        ring.close()
        raise problem
    return ring
