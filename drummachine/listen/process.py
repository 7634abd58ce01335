"""The listening process: an audio input, the beat tracker, readings into shared memory.

Its own interpreter, like the mixer: the tracker's numpy work never holds the engine's lock.
``python -m drummachine.listen.process`` is set up by one JSON line on its standard input,
answers one JSON line (ready, or the error in words), and stops when that pipe closes.

A JACK port is captured by PortAudio's blocking input or JACK-Client's Python callback
(``listen.jack_capture``), a sound device by sounddevice's callback; either only copies samples
into a ring and notes when they came (``listen.capture``); the main thread runs the tracker as its
estimates come due (20 a second) and publishes a reading with each.
Times: a sample's time on the monotonic clock comes from the input clock's frame counter and
the reads' times (``Timing``), less the input's capture latency.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from drummachine.core.parent_pipe import end_with_parent
from drummachine.listen import shared
from drummachine.listen.capture import Capture
from drummachine.listen.inputs import AudioInput, same_device, sounddevice_inputs
from drummachine.listen.jack_capture import (CLIENT_PREFIX, PortAudioCapture, capture_latency, check_jack,
                                             connect_kit, open_jack)
from drummachine.listen.kit_tap import ECHO_KEPT_WITHIN, NEAR_SECONDS, EchoDelay, KitTapReader
from drummachine.listen.loudness import SILENCE_DB
from drummachine.listen.own_sound import open_canceller
from drummachine.listen.tracker import BeatTracker

POLL_SECONDS = 0.01
#: with no new estimate (no samples: the input gone), the last reading is written again this often,
#: with the input's state
REPEAT_SECONDS = 0.1
CLIP_LEVEL = 0.999
#: a clipped block keeps the input's status "clipping" this long: a band clipping on its loud hits
#: (a beat or two apart) reads as clipping throughout, not on and off with each hit
CLIPPING_HELD_SECONDS = 3.0
CHECK_PORT_SECONDS = 0.5
#: an input latency past this is no figure (PortAudio's JACK devices say 2**32 frames: -1 unsigned)
MAX_INPUT_LATENCY = 1.0
SWITCH_INTERVAL = 0.0002  #: seconds (see run)
#: a tracker's state left by the listening process before (``shared.TrackerStateBlock``) is taken
#: over when it was saved at most this long before this one's first sample: the last process died
#: (up again in 0.31-0.35 s on JACK, more on a Pi), or was started again to take the kit out.
#: Longer (an input that stopped for STALLED_SECONDS and more: a JACK restart) the tracker starts
#: cold. In the replay, 1.5 s away, handed over: 4 beats moved over 20 ms in one go in the 16 s
#: after against 16 from cold; from 2.5 s away fewer moves, but a band that moved meanwhile found
#: later; 6 s away it held to its own old beat (p95 from 8 s after 188 ms against 68 from cold
#: through the accelerando): benchmarks/follow_restart_gaps.json
RESUME_WITHIN = 2.0
#: the samples wait this long before the tracker takes over its predecessor's state: its
#: successor's stream is placed on the monotonic clock by the input's timing, which is a read's
#: wake-up late over its first reads (the lowest of the last READ_ENVELOPE is taken)
RESUME_AFTER = 0.25
#: what is done with the kit where it is read from the mixer's tap by time (``listen.kit_tap``)
TAKEN_OUT_BY_TIME = "taken out, read from the mixer by time"


def run(setup: dict, stdin, answer) -> int:
    block = shared.ReadingBlock(setup["shm"])
    client = stream = pa = kit_port = None
    # the engine's pipe closed (it quit or died): stop, and leave within the grace however the
    # input's close goes (PortAudio's and libjack's can hang on a server that died)
    stop = end_with_parent(stdin)
    try:
        if setup["backend"] == "jack":
            try:
                import jack
            except (ImportError, OSError) as exc:
                answer({"error": f"JACK is not available ({exc})"})
                return 2
            try:
                check = jack.Client(f"{CLIENT_PREFIX}-check", no_start_server=True)  # a clear line first
                found = check.get_ports(setup["port"])
                check.close()
                if not found:
                    raise jack.JackError(f"no port {setup['port']}")
            except jack.JackError as exc:
                answer({"error": f"cannot listen to {setup['port']} ({exc})"})
                return 2
            if setup.get("capture", "portaudio") == "portaudio":
                try:
                    pa = PortAudioCapture(setup, stop)
                except Exception as exc:  # PortAudio cannot here: JACK-Client's callback instead
                    print(f"listen: PortAudio capture unavailable ({exc}); a Python callback in JACK's "
                          f"real-time thread instead", file=sys.stderr)
                    pa = None
            if pa is not None:
                capture, rate = pa.capture, pa.rate
                blocksize = pa.blocksize
            else:
                # the callback runs in JACK's real-time thread and needs the interpreter lock: with
                # the default 5 ms switch interval the tracker's main thread could hold it past a
                # 2.7 ms period, and a late client makes the whole JACK cycle late
                sys.setswitchinterval(SWITCH_INTERVAL)
                try:
                    client, capture, port, kit_port = open_jack(setup)
                except jack.JackError as exc:
                    answer({"error": f"cannot listen to {setup['port']} ({exc})"})
                    return 2
                rate, blocksize = client.samplerate, client.blocksize
            # a block's last sample is timed at its read's (or callback's) time, the start of the
            # period it came in: right for a sound card's capture port, whose capture latency (a
            # period and more) says the samples were captured in the period before; a client's
            # port in the graph (a player, a software mixer: no capture latency) wrote them for
            # that very period, its last sample a period later (at 1,024 frames the machine played
            # 21 ms early on a player's band while this was held at 0 or more)
            latency = (capture_latency(setup["port"]) - blocksize) / rate
        else:
            import sounddevice as sd

            chosen = AudioInput("sounddevice", setup["port"], setup["device"], setup.get("words"))
            device = same_device(sounddevice_inputs(), chosen)  # this process's PortAudio lists them now
            if device is None:
                answer({"error": f"input {setup['port']!r} is not there"})
                return 2
            info = sd.query_devices(device)
            rate = int(info["default_samplerate"])
            capture = Capture(rate)

            def callback(indata, frames, time_info, status):
                if status.input_overflow:
                    capture.xruns += 1
                capture.take(indata[:, 0])

            try:
                stream = sd.InputStream(device=device, channels=1, samplerate=rate, dtype="float32",
                                        callback=callback, latency="low")
                stream.start()
            except Exception as exc:
                answer({"error": f"cannot open input {info['name']!r} ({str(exc).splitlines()[0]})"})
                return 2
            latency = float(stream.latency)
            if not 0.0 <= latency <= MAX_INPUT_LATENCY:  # not a figure to time the band's beats by
                print(f"listen: {info['name']!r} says its input latency is {latency:.6g} s; taken as 0",
                      file=sys.stderr)
                latency = 0.0
    except Exception as exc:  # whatever the input's library raises: one line, never a traceback
        answer({"error": f"cannot open the input ({exc.__class__.__name__}: {exc})"})
        return 2
    gate = setup.get("gate_db")
    tracker = BeatTracker(rate, float(setup["bpm"]), window=float(setup.get("window", 0.15)),
                          gate_db=None if gate is None else float(gate))
    own_kit, tap = own_kit_taken_out(setup, capture, tracker)
    handover = shared.TrackerStateBlock(setup["handover"]) if setup.get("handover") else None
    left = handover.taken() if handover is not None else None  # the state the last process left
    answer({"ready": True, "rate": rate, "latency": latency, "own_kit": own_kit,
            "capture": "portaudio" if pa is not None else "callback" if client is not None else "sounddevice"})
    read = 0
    echo = (0, None)  # the map's take the kit's echo is looked for since, and its finder (_echo_found)
    kit_gain = 1.0  # the kit's gain into the canceller, as last said (listen.own_sound.REF_*)
    kit_heard_said = False  # whether the kit was in the input over its first notes (own_sound.KIT_HEARD_DB)
    clipped_until = 0.0
    clipped = 0
    next_check = next_fit = 0.0
    timing = capture.timing()
    status = shared.LISTENING
    started = time.monotonic()
    prior = float(setup["bpm"])
    tapped = float(block.slots[shared.TAPS])  # taps before this process began: its tracker resumed their grid
    published = saved = -1  # the tracker's estimates (``BeatTracker.updates``) as last written, as last saved
    written = (0.0, False)  # when the last reading was written, and whether the input was gone
    while not stop.is_set():
        time.sleep(POLL_SECONDS)
        now = time.monotonic()
        try:
            if tap is not None:
                tap.note_clock(now)
            # the samples wait in the ring until the tracker's next estimate can be made from them
            # (nothing it says moves before): 20 runs a second through the analysis, not 100
            if left is not None and capture.written >= RESUME_AFTER * rate:
                _take_over(tracker, left, capture.timing(), latency)
                left = None
            if left is None and tracker.samples + capture.written - read >= tracker.samples_before_update():
                x, kit, read = capture.since(read)
                if tap is not None:  # the kit by time: samples whose kit is not mixed yet wait
                    kit = tap.beside(read - x.size, x.size, timing, latency, now)
                    read -= x.size - kit.size
                    x = x[:kit.size]
                    echo = _echo_found(tap, echo, x, kit, rate, tracker)
                if x.size:
                    tracker.process(x, kit)
                    kit_gain = _kit_gain_said(tracker.canceller, kit_gain)
                    kit_heard_said = kit_heard_said or _kit_heard_said(tracker)
                    if np.max(np.abs(x)) >= CLIP_LEVEL:
                        clipped += 1
                        clipped_until = now + CLIPPING_HELD_SECONDS
            if now >= next_check and (client is not None or pa is not None):
                next_check = now + CHECK_PORT_SECONDS
                status = pa.check(setup["port"]) if pa is not None else check_jack(client, port, setup["port"])
                if pa is None and kit_port is not None:
                    connect_kit(client, kit_port.name, setup["kit_ports"])
            # a reading as soon as the tracker has a new estimate (the engine's link takes the
            # newest, 50 ms apart at most), and the last one again with none for a while (the
            # input gone: its state is said)
            gone = status == shared.GONE
            if tracker.updates == published and gone == written[1] and now - written[0] < REPEAT_SECONDS:
                continue
            est = tracker.estimate()
            if not gone:
                status = shared.CLIPPING if now < clipped_until else \
                    shared.SILENCE if est.loudness_db < SILENCE_DB else shared.LISTENING
            published, written = tracker.updates, (now, gone)
            if now >= next_fit:
                next_fit = now + 0.1
                timing = capture.timing()

            def heard(t):  # stream seconds -> monotonic
                return timing.heard(t * rate) - latency
            speed = timing.speed
            block.write({shared.HEARD: heard(est.time), shared.BPM: est.bpm * speed,
                         shared.NEXT_BEAT: heard(est.next_beat) if est.next_beat > 0 else 0.0,
                         shared.CONFIDENCE: est.confidence if status != shared.GONE else 0.0,
                         shared.LOUDNESS: est.loudness_db, shared.DENSITY: est.onsets_per_second,
                         shared.STATUS: status, shared.CPU: time.process_time(), shared.RATE: rate,
                         shared.CLIPPED: clipped, shared.BLOCKS: capture.callbacks, shared.STARTED: started,
                         shared.XRUNS: capture.xruns,
                         shared.OWN_KIT_REMOVED_DB: tracker.canceller.removed_db if tracker.canceller else 0.0})
            if handover is not None and tracker.updates != saved:
                saved = tracker.updates
                state = tracker.state()
                handover.save(state, now, heard(state["now"]))
            taps = float(block.slots[shared.TAPS])
            if taps != tapped:  # the musician tapped the band's beat: monotonic -> stream seconds, near now
                tapped = taps
                tracker.hint_beat(est.time + (float(block.slots[shared.TAPPED_BEAT]) - heard(est.time)) * speed)
            want = float(block.slots[shared.PRIOR])
            if want > 0 and not math.isclose(want, prior, rel_tol=1e-4):
                prior = want
                tracker.set_prior(want)
        except Exception as exc:  # the listener goes on: the engine holds meanwhile
            print(f"listen: {exc.__class__.__name__}: {exc}", file=sys.stderr)
    stop.set()
    try:
        if pa is not None:
            pa.close()
        if client is not None:
            client.deactivate()
            client.close()
        if stream is not None:
            stream.stop()
            stream.close()
    finally:
        block.close()
        if handover is not None:
            handover.close()
        if tap is not None:
            tap.close()
    return 0


def _take_over(tracker: BeatTracker, left: dict, timing, latency: float) -> None:
    """The tracker goes on from the state the listening process before it left (``left``), if that
    was saved within RESUME_WITHIN of this one's first sample and at the same frame rate; else it
    starts cold. Said in one line either way."""
    first = timing.heard(0) - latency  # this stream's second 0 on the monotonic clock
    ago = first - left["mono_now"]
    if ago > RESUME_WITHIN:
        print(f"listen: the last listening process stopped {ago:.1f} s before this one heard anything: "
              f"listening from cold", file=sys.stderr, flush=True)
        return
    try:
        # the predecessor's ``now`` was at mono_now; on this stream that is -ago * speed seconds
        tracker.resume(left, left["now"] + ago * timing.speed)
    except ValueError as exc:
        print(f"listen: the last listening process's tempo and beat not taken over ({exc}): listening from cold",
              file=sys.stderr, flush=True)
        return
    bpm = 60.0 / tracker.period if tracker.period > 0 else tracker.bpm
    heard = f"the band at {bpm:.1f} bpm and its beat" if bpm > 0 else "what it heard (no beat yet)"
    print(f"listen: {heard} taken over from the last listening process ({ago:.2f} s not heard)",
          file=sys.stderr, flush=True)


def own_kit_taken_out(setup: dict, capture: Capture, tracker: BeatTracker) -> tuple[str, KitTapReader | None]:
    """The canceller on the tracker where the machine's own kit can be had beside the input: its
    JACK ports in the capture's second channel, else the mixer's kit tap read by time
    (``listen.kit_tap``; returned, for the loop to read). In words, what is done with the kit
    ("" when there is no kit to take out)."""
    ports = bool(setup.get("kit_ports")) and capture.kit_ring is not None
    if not ports and not setup.get("kit_tap"):
        return ("its own kit is not taken out of this input (only a JACK input has the kit beside it)"
                if setup.get("kit_ports") else ""), None
    canceller, why = open_canceller(tracker.arate)
    if canceller is None:
        return f"its own kit is not taken out of what it hears: {why}", None
    tap = None
    if not ports:
        try:
            tap = KitTapReader(setup["kit_tap"])
        except (OSError, ValueError) as exc:
            return f"its own kit is not taken out of what it hears: the mixer's block is gone ({exc})", None
    tracker.canceller = canceller
    return ("taken out" if ports else TAKEN_OUT_BY_TIME), tap


def _kit_gain_said(canceller, said: float) -> float:
    """One line each time the kit's gain into the canceller moves (``own_sound.REF_FIRST_SECONDS``)."""
    if canceller is None or canceller.ref_gain == said:
        return said
    print(f"listen: the kit is handed to its canceller {20 * math.log10(canceller.ref_gain):+.0f} dB from how it "
          f"leaves the mixer (its loudest hits kept within 24 dB of full scale; the path learnt again)",
          file=sys.stderr, flush=True)
    return canceller.ref_gain


def _kit_heard_said(tracker: BeatTracker) -> bool:
    """One line once the canceller has learnt over the kit's first notes: whether the kit is in what
    is heard (``own_sound.KIT_HEARD_DB``); True once said."""
    db = tracker.kit_heard_db
    if db is None:
        return False
    if tracker.kit_was_heard:
        print(f"listen: its own kit is in what it hears ({db:.1f} dB of it taken out over its first notes); "
              f"what was heard meanwhile is forgotten", file=sys.stderr, flush=True)
    else:
        print(f"listen: its own kit is not in what it hears ({db:+.1f} dB taken out over its first notes)",
              file=sys.stderr, flush=True)
    return True


def _echo_found(tap: KitTapReader, echo: tuple, x: np.ndarray, kit: np.ndarray, rate: int, tracker: BeatTracker) -> tuple:
    """The kit by time: look for its echo in the input each time the map is taken afresh (the
    first, a jump, a mixer's start); once found, read the kit just before it and let the canceller
    learn the path afresh (``kit_tap.NEAR_SECONDS``). Then go on looking, and bring it near again
    where the echo has moved (``kit_tap.ECHO_KEPT_WITHIN``)."""
    takes, finder = echo
    if tap.takes != takes:
        takes, finder = tap.takes, EchoDelay(rate)
    if finder is None:
        return echo
    lag = finder.add(x, kit)
    nearest, farthest = ECHO_KEPT_WITHIN
    if lag is None or (tap.found and nearest <= lag <= farthest):
        return takes, finder
    moved = tap.found
    tap.bring_near(lag)
    tracker.canceller.restart()
    where = f"{lag * 1000:.1f} ms after" if lag >= 0 else f"{-lag * 1000:.1f} ms before"
    print(f"listen: the kit's echo is {where} the kit as read{' (it moved)' if moved else ''}; read "
          f"{NEAR_SECONDS * 1000:.0f} ms before it from now on", file=sys.stderr, flush=True)
    return takes, finder  # (which starts its next stretch after each answer)


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
