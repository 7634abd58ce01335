"""The mixer process: ``python -m drummachine.audio.mixer``, started by ``audio.process``'s sink.

Set up by one JSON line on its standard input, it answers one JSON line (ready, with the stream's
output latency and what it could not get: real-time priority, locked memory; or the error) and stops when
that pipe closes, so it never outlives the engine. It maps the shared block (``audio.wire``) and
the kit, and feeds the stream one of three ways (``MIXINGS``; ``audio.process`` says why).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time

import numpy as np

from drummachine.audio import realtime
from drummachine.audio.ahead import AHEAD_BLOCKS, MixAhead
from drummachine.audio.devices import find_output, playback_latency
from drummachine.audio.mixing import Voices
from drummachine.audio.wire import (AT_NS, CALLBACKS, CAPACITY, FAULTS, FRAMES, LATE_EVENTS, LEVEL, MIX_WORST_NS,
                                    NOT_READY, OVERLAPS, PANIC, SILENT, READ, REMIXED, SEQ, TIMING_BIN_NS, TIMING_BINS, UNDERRUNS,
                                    WORST_GAP_NS, WORST_NS, WRITTEN, KitTap, SharedBlock)
from drummachine.core.errors import DrumMachineError
from drummachine.core.parent_pipe import end_with_parent
from drummachine.core.shared_block import untrack

#: how the mixer process feeds the stream: name -> blocks its MixAhead keeps (0: none), in words
MIXINGS = {
    "jack": (2, "the engine's JACK client's C callback plays a ring a writer thread here keeps full: no Python "
                "in JACK's thread, and the mixer's death leaves the JACK graph as it was"),
    "ring": (2, "rtmixer's C callback plays a ring a writer thread keeps full: no Python in JACK's thread"),
    "ahead": (AHEAD_BLOCKS, "the Python callback copies blocks a mixing thread mixed ahead"),
    "callback": (0, "the Python callback reads the events and mixes (before; for comparison)"),
}
SWITCH_INTERVAL = 0.0005  #: s; how long the callback may wait for the interpreter lock the mixing thread holds
log = logging.getLogger("drummachine")


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
        self.time_info = None  #: PortAudio's times for the block in hand
        self.dac_leads = np.full(64, np.inf)  #: each last block's DAC time less the stream's time then
        self.dac_calls = 0
        self.ahead = MixAhead(voices, blocksize, ahead) if ahead > 0 else None
        self.wake = threading.Lock()  # released by each callback: the mixing thread's turn
        self.wake.acquire()
        self.turn_lock = threading.Lock()  # held by a mixing turn: the callback never mixes during one
        self.mixing = False
        self.callback_thread = 0  #: the callback's OS thread id (its real-time priority is JACK's)
        #: the kit as mixed, for the listening process (``wire.KitTap``); set with ``tap_into``
        self.tap = None

    def tap_into(self, tap) -> None:
        """Each block mixed (here or ahead) also into ``tap``."""
        self.tap = tap
        if self.ahead is not None:
            self.ahead.tap = tap

    def callback(self, outdata, frames, time_info, status) -> None:
        """The stream's callback: copy (or mix), and never raise (PortAudio would stop the stream):
        a block that fails plays silence, the clock goes on, and the fault is counted in the header."""
        block_start = self.frame
        self.time_info = time_info
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

    def _begin(self, started: int, status) -> int:
        """The callback's start; returns when its block's first frame begins its period: later by
        the block's place in the host's period (PortAudio calls back for each block of a JACK
        period at once, each block's DAC time a block after the one before; the least lead of the
        DAC time on the stream's time in the last calls is a period's first block)."""
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
        t = self.time_info
        lead = t.outputBufferDacTime - t.currentTime if t is not None and t.outputBufferDacTime else 0.0
        if not math.isfinite(lead) or not lead:  # a host without DAC times: the callback's start
            return started
        self.dac_leads[self.dac_calls % self.dac_leads.size] = lead
        self.dac_calls += 1
        return started + int(min(lead - self.dac_leads.min(), 0.2) * 1e9)

    def _publish(self, frame: int, frames: int, started: int, sounds_ns: int) -> None:
        """The clock: the block's first frame when it begins its period (``_begin``). The frame
        after the block, stamped as the callback ends, would put the kit a period behind the clock
        (and behind the MIDI notes placed by it)."""
        h = self.h
        self.frame = frame + frames
        h[SEQ] += 1
        h[FRAMES] = frame
        h[AT_NS] = sounds_ns
        h[SEQ] += 1
        h[CALLBACKS] += 1
        took = time.monotonic_ns() - started
        if took > h[WORST_NS]:
            h[WORST_NS] = took  # the mixer's own work, at worst: an underrun is ours only if this nears a period
        self.timings[min(took // TIMING_BIN_NS, TIMING_BINS - 1)] += 1

    def _copy_block(self, outdata, frames, status) -> None:
        started = time.monotonic_ns()
        sounds_ns = self._begin(started, status)
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
        self._publish(frame, frames, started, sounds_ns)
        if self.wake.locked():  # only this thread releases it: never twice
            self.wake.release()

    def _mix_block(self, outdata, frames, status) -> None:
        started = time.monotonic_ns()
        sounds_ns = self._begin(started, status)
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
        if self.tap is not None:
            self.tap.write(outdata, block_start)
        self._publish(block_start, frames, started, sounds_ns)

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
                latency="low", ring: bool = False, depth_blocks: int = 0):
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
    own_rate = int(round(info["default_samplerate"]))
    if own_rate != rate:
        try:
            sd.check_output_settings(device=device, samplerate=rate, channels=channels, dtype="float32")
        except Exception:
            # a JACK server plays at its own rate only (an interface set to 44.1 kHz): PortAudio's
            # "Invalid sample rate" says neither what the device plays at nor what to do
            exc = DrumMachineError("audio", f"{info['name']} plays at {own_rate} Hz, not at {rate} Hz")
            exc.device_rate = own_rate
            raise exc from None
    if ring:
        from drummachine.audio.ring_out import DEPTH_BLOCKS, open_ring_stream

        return open_ring_stream(device, rate, blocksize, channels, latency, depth_blocks or DEPTH_BLOCKS)
    common = dict(samplerate=rate, blocksize=blocksize, channels=channels, dtype="float32", latency=latency)
    if mixer.block.recording is not None:
        return sd.Stream(device=(device, device), callback=mixer.duplex, **common)
    return sd.OutputStream(device=device, callback=mixer.callback, **common)


def serve(stdin=sys.stdin, stdout=sys.stdout, portaudio: bool = True) -> int:
    """The mixer process: set up from one JSON line, answer, play until stdin closes.
    ``portaudio``: False where the engine's JACK client plays (``mixing = "jack"``): PortAudio is
    never loaded then (its JACK host API would open a client of this process's own)."""
    import gc
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle; it closes the pipe

    def answer(d: dict) -> None:
        stdout.write(json.dumps(d) + "\n")
        stdout.flush()

    if portaudio:
        try:  # while the engine sends the set-up (it may be decoding a kit): PortAudio's start-up
            import sounddevice  # noqa: F401
        except Exception:
            pass  # open_stream says what is wrong, in the answer
    try:
        setup = json.loads(stdin.readline())
        from drummachine.audio.mixing import out_channels

        outs, cue = setup.get("outs", "stereo"), bool(setup.get("cue"))
        block = SharedBlock(setup["shm"], setup["record_frames"], len(out_channels(outs, cue)))
        untrack(block.shm)
    except Exception as exc:
        answer({"error": f"bad set-up ({exc.__class__.__name__})"})
        return 2
    # the engine's pipe closed (it quit or died): stop, and leave within the grace however the
    # stream's start or close goes (PortAudio's can hang on a JACK server that died)
    ended = end_with_parent(stdin)
    stream = None
    shared_kit = None
    try:
        from drummachine.audio.kit import SharedKit, synth_kit

        rate = int(setup["rate"])
        if setup["kit"]:  # decoded by the engine process: mapped, not copied
            shared_kit = SharedKit(name=setup["kit"], layout=setup["kit_layout"])
            untrack(shared_kit.shm)
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
        if not blocksize and how != "jack":
            how = "callback"  # PortAudio's own (varying) block size: mix in the callback
        if how == "jack" and portaudio:
            raise DrumMachineError("mixing", "the JACK ring's mixer is started with --jack")
        mixer = Mixer(block, Voices(kit, block_max=8192, outs=outs, cue=cue), rate, ahead=MIXINGS[how][0],
                      blocksize=blocksize)
        mixer.tap_into(KitTap(block, rate, len(out_channels(outs))))
        if how == "jack":
            from drummachine.audio.jack_ring import open_for_mix

            ring = open_for_mix(setup.get("jack_ring"), rate, mixer.voices.channels)
        elif how == "ring":
            depth_blocks = int(setup.get("ring_blocks") or ring_out.DEPTH_BLOCKS)
            stream, ring = open_stream(mixer, rate, setup["device"], setup["hostapi"], blocksize, setup["latency"],
                                       ring=True, depth_blocks=depth_blocks)
        else:
            stream = open_stream(mixer, rate, setup["device"], setup["hostapi"], blocksize, setup["latency"])
        gc.collect()
        gc.freeze()
        gc.disable()
        if how != "callback":
            sys.setswitchinterval(SWITCH_INTERVAL)
            note = realtime.lock_memory()
            if note:
                notes.append(note)
        if how == "jack":
            from drummachine.audio.jack_ring import JackRingPlayer

            player = JackRingPlayer(mixer, ring, int(setup.get("ring_blocks") or 0))
            player.begin()
        elif how == "ring":
            stream.start()
            player = ring_out.RingPlayer(mixer, stream, ring, depth_blocks, ring_out.host_period(stream, rate))
            player.begin()
        else:
            mixing = mixer.start_mixing()
            stream.start()
    except DrumMachineError as exc:
        answer({"error": exc.what, "where": exc.where, "device_rate": getattr(exc, "device_rate", None)})
        return 2
    except Exception as exc:
        answer({"error": f"no audio output ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})"})
        return 2
    if mixing is not None:
        waited = time.monotonic() + 2.0
        while not mixer.callback_thread and time.monotonic() < waited:
            time.sleep(0.005)  # the first callback tells which thread (and priority) JACK gave it
        note = realtime.realtime_below(mixing.native_id, mixer.callback_thread)
        if note:
            notes.append(note)
    if player is not None:  # JACK's thread: the engine's, where its client plays the ring
        note = realtime.realtime_below(player.thread.native_id,
                                       realtime.jack_thread(os.getppid() if how == "jack" else 0))
        if note:
            notes.append(note)
    try:
        # over the engine's JACK client, the engine reads its ports' latency itself
        output_latency, latency_from = (0.0, "") if how == "jack" else playback_latency(stream, rate)
    except Exception as exc:  # noqa: BLE001 - a figure it could not read is no reason not to play
        output_latency, latency_from = 0.0, f"not read ({exc.__class__.__name__})"
    # how far ahead of the clock a hit must come to be mixed on its sample: what the ring keeps
    # waiting and the period the clock's frame (a period's first) trails the frames taken by; else
    # about a block and the host's period
    ahead = (player.depth + player.period if player is not None
             else max(blocksize, ring_out.host_period(stream, rate)) + blocksize)
    answer({"ready": True, "output_latency_s": output_latency, "output_latency_from": latency_from,
            "notes": notes, "mixing": how, "ahead_s": ahead / rate})
    ended.wait()  # nothing is sent after the set-up: the pipe closes
    try:
        if player is not None:
            player.end()
        if stream is not None:
            stream.stop()
            stream.close()
        mixer.stop_mixing(mixing)
    finally:
        if how == "jack":
            ring.close()
        block.close()
        if shared_kit is not None:
            del kit, mixer
            shared_kit.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(portaudio="--jack" not in sys.argv))
