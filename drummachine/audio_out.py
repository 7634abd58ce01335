"""Audio out through sounddevice: the built-in (or a user) kit, mixed sample-accurately.

The stream's sample counter is the clock when audio runs (``AudioClock``): an event at clock time
t starts at frame round(t * rate), exactly. The callback fills the whole buffer every time,
allocates no arrays, never waits on a lock and never logs: events arrive through a deque, voices
live in preallocated slots, and a limiter keeps the mix below full scale.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from .drumkit import Kit
from .engine import Event, Sink
from .errors import DrumMachineError
from .kit import CHOKES
from .mixer import CEILING

SLOTS = 48
FADE_SECONDS = 0.004
RELEASE_PER_BLOCK = 1.02  # limiter gain recovery per block (about 1.5 dB/10 ms at 128 frames)


class AudioClock:
    """Seconds from the audio stream's sample counter, interpolated between callbacks."""

    def __init__(self, rate: int):
        self.rate = rate
        self.frames = 0
        self.at = None  # monotonic time of the last callback
        self.origin = time.monotonic()
        self.last = 0.0

    def now(self) -> float:
        if self.at is None:
            t = time.monotonic() - self.origin
        else:
            t = self.frames / self.rate + min(time.monotonic() - self.at, 0.05)
        if t < self.last:
            t = self.last
        self.last = t
        return t

    def tick(self, frames_done: int) -> None:
        self.frames = frames_done
        self.at = time.monotonic()


class Voices:
    """Preallocated playback slots and the mixing of one block.

    Slot bookkeeping is plain Python numbers and the sample arithmetic writes into preallocated
    buffers (``out=``), so mixing a block creates no arrays.
    """

    def __init__(self, kit: Kit, block_max: int = 4096):
        self.kit = kit
        self.start = [-1] * SLOTS  # frame the sample starts at; -1: free
        self.voice = [0] * SLOTS
        self.gain = [0.0] * SLOTS
        self.end = [0] * SLOTS  # frame after the last one to play
        self.fade_at = [-1] * SLOTS  # choke: frame where the fade-out starts
        self.samples: list[np.ndarray | None] = [None] * SLOTS
        pans = kit.pan_gains()
        self.pans = [(float(pans[v, 0]), float(pans[v, 1])) for v in range(len(pans))]
        self.fade = max(1, int(FADE_SECONDS * kit.sample_rate))
        self.fade_ramp = np.linspace(1.0, 0.0, self.fade, dtype=np.float32)
        self.scratch = np.zeros(block_max, np.float32)
        self.scratch2 = np.zeros(block_max, np.float32)
        self.absbuf = np.zeros((block_max, 2), np.float32)
        self.ramp = np.zeros(block_max, np.float32)
        self.ramp_n = 0
        self.limiter_gain = 1.0
        self.chokers = {v: c for c, vs in CHOKES.items() for v in vs}
        self.stolen = 0

    def clear(self) -> None:
        for i in range(SLOTS):
            self.start[i] = -1
            self.samples[i] = None

    def add(self, frame: int, voice: int, velocity: float) -> None:
        sample, gain = self.kit.sample(voice, velocity)
        slot = -1
        oldest = 0
        for i in range(SLOTS):
            st = self.start[i]
            if st < 0:
                if slot < 0:
                    slot = i
                continue
            if st < self.start[oldest] or self.start[oldest] < 0:
                oldest = i
            if st < frame and self.fade_at[i] < 0 and self.chokers.get(self.voice[i]) == voice:
                self.fade_at[i] = frame
                self.end[i] = min(self.end[i], frame + self.fade)
        if slot < 0:  # all busy: steal the slot that started longest ago
            slot = oldest
            self.stolen += 1
        self.start[slot] = frame
        self.voice[slot] = voice
        self.gain[slot] = gain
        self.samples[slot] = sample
        self.end[slot] = frame + len(sample)
        self.fade_at[slot] = -1

    def mix(self, out: np.ndarray, block_start: int) -> None:
        """Add every sounding slot into ``out`` (frames, 2), which the caller has zeroed."""
        block_end = block_start + out.shape[0]
        for i in range(SLOTS):
            s = self.start[i]
            if s < 0 or s >= block_end:
                continue
            e = self.end[i]
            if e <= block_start:
                self.start[i] = -1
                self.samples[i] = None
                continue
            a = s if s > block_start else block_start
            b = e if e < block_end else block_end
            n = b - a
            seg = self.scratch[:n]
            np.multiply(self.samples[i][a - s:b - s], self.gain[i], out=seg)
            f = self.fade_at[i]
            if f >= 0 and b > f:  # choked: fade out from f, silence after the fade
                lo = f if f > a else a
                k0, k1 = lo - f, min(b - f, self.fade)
                if k1 > k0:
                    np.multiply(seg[lo - a:lo - a + k1 - k0], self.fade_ramp[k0:k1], out=seg[lo - a:lo - a + k1 - k0])
                if f + self.fade < b:
                    seg[max(f + self.fade, a) - a:] = 0.0
            gl, gr = self.pans[self.voice[i]]
            tmp = self.scratch2[:n]
            o = out[a - block_start:b - block_start]
            np.multiply(seg, gl, out=tmp)
            np.add(o[:, 0], tmp, out=o[:, 0])
            np.multiply(seg, gr, out=tmp)
            np.add(o[:, 1], tmp, out=o[:, 1])

    def limit(self, out: np.ndarray) -> None:
        """A peak limiter: instant attack within the block, slow release, never above the ceiling."""
        n = out.shape[0]
        if not n:
            return
        absb = self.absbuf[:n]
        np.abs(out, out=absb)
        peak = float(absb.max())
        target = CEILING / peak if peak * self.limiter_gain > CEILING else 1.0
        new = min(target, self.limiter_gain * RELEASE_PER_BLOCK, 1.0)
        if new <= self.limiter_gain or new - self.limiter_gain < 1e-6:
            if new != 1.0:
                out *= new
        else:  # releasing: ramp up across the block, from the old gain
            if self.ramp_n != n:
                self.ramp[:n] = np.arange(1, n + 1, dtype=np.float32) / n
                self.ramp_n = n
            ramp = self.scratch[:n]
            np.multiply(self.ramp[:n], new - self.limiter_gain, out=ramp)
            np.add(ramp, self.limiter_gain, out=ramp)
            np.multiply(out[:, 0], ramp, out=out[:, 0])
            np.multiply(out[:, 1], ramp, out=out[:, 1])
        self.limiter_gain = new


class AudioSink(Sink):
    """Plays note events through a sounddevice output stream; its sample counter drives ``clock``."""

    def __init__(self, kit: Kit, device=None, blocksize: int = 128, latency="low", hostapi: str | None = None,
                 record_seconds: float = 0.0):
        """``record_seconds`` > 0 opens a duplex stream and keeps that much input (a loopback test)."""
        import sounddevice as sd

        self.kit = kit
        self.rate = kit.sample_rate
        self.clock = AudioClock(self.rate)
        self.queue: deque = deque()
        self.voices = Voices(kit, block_max=8192)
        self.frame = 0
        self.underruns = 0
        self.callbacks = 0
        self.panic_requested = False
        self.on_block = None  # optional hook(frame, out) for tests; never set on stage
        self.recording = np.zeros((int(record_seconds * self.rate), 2), np.float32) if record_seconds else None
        try:
            device = _find_device(device, hostapi)
            if self.recording is not None:
                self.stream = sd.Stream(samplerate=self.rate, blocksize=blocksize, channels=2, dtype="float32",
                                        latency=latency, device=(device, device), callback=self._duplex)
            else:
                self.stream = sd.OutputStream(samplerate=self.rate, blocksize=blocksize, channels=2,
                                              dtype="float32", latency=latency, device=device,
                                              callback=self._callback)
            self.stream.start()
        except DrumMachineError:
            raise
        except Exception as exc:
            raise DrumMachineError("audio", f"no audio output ({str(exc).splitlines()[0]})") from None
        lat = self.stream.latency
        self.latency = float(lat[1] if isinstance(lat, tuple) else lat)

    def _callback(self, outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            self.underruns += 1
        block_start = self.frame
        q = self.queue
        while q:
            try:
                frame, voice, vel = q.popleft()
            except IndexError:
                break
            self.voices.add(frame if frame >= block_start else block_start, voice, vel)
        outdata.fill(0.0)
        if self.panic_requested:
            self.voices.clear()
            self.panic_requested = False
        self.voices.mix(outdata, block_start)
        self.voices.limit(outdata)
        if self.on_block is not None:
            self.on_block(block_start, outdata)
        self.frame = block_start + frames
        self.callbacks += 1
        self.clock.tick(self.frame)

    def _duplex(self, indata, outdata, frames, time_info, status) -> None:
        start = self.frame
        rec = self.recording
        if start < len(rec):
            n = min(frames, len(rec) - start)
            rec[start:start + n] = indata[:n]
        self._callback(outdata, frames, time_info, status)

    def send(self, events: list[Event]) -> None:
        for e in events:
            if e.kind == "note":
                self.queue.append((int(round(e.time * self.rate)), e.voice, e.velocity))

    def panic(self) -> None:
        self.queue.clear()
        self.panic_requested = True

    def close(self) -> None:
        try:
            self.stream.stop()
            self.stream.close()
        except Exception:
            pass


def _find_device(device, hostapi: str | None):
    import sounddevice as sd

    try:
        devices = sd.query_devices()
    except Exception as exc:
        raise DrumMachineError("audio", f"cannot list audio devices ({exc})") from None
    outputs = [i for i, d in enumerate(devices) if d["max_output_channels"] >= 2]
    if hostapi:
        apis = sd.query_hostapis()
        outputs = [i for i in outputs if hostapi.lower() in apis[devices[i]["hostapi"]]["name"].lower()]
    if device is None:
        if not outputs:
            raise DrumMachineError("audio", "no audio output device" + (f" on {hostapi}" if hostapi else ""))
        default = sd.default.device[1]
        return default if default in outputs else outputs[0]
    if isinstance(device, int) or str(device).isdigit():
        return int(device)
    hits = [i for i in outputs if str(device).lower() in devices[i]["name"].lower()]
    if len(hits) != 1:
        names = ", ".join(devices[i]["name"] for i in outputs) or "none"
        raise DrumMachineError("--audio-device", f"{device!r} matches {len(hits)} outputs; outputs: {names}")
    return hits[0]
