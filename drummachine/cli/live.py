"""Subcommands for the stage: play (and the engine it starts behind its UI), ports, doctor."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
import time
from pathlib import Path

from drummachine.core.asked import Asked
from drummachine.core.errors import DrumMachineError
from drummachine.midi import jack_midi
from drummachine.midi.jack_server import jack_server_identity


def cmd_play(args) -> int:
    """Play live: the model drums through the built-in kit and/or MIDI, steered by song and controller."""
    opts = _options(args)
    if not args.headless and not args.no_ui and sys.stdout.isatty():
        return _play_ui(opts, args)
    if args.headless or args.log:
        _log_to(Path(args.log) if args.log else Path("drummachine.log"))
    return _run_engine(opts, args, print_bars=not args.headless)


def cmd_engine(args) -> int:
    """The engine alone, for a UI to attach (what `play` starts behind its UI): it says it is ready
    with one JSON line on its standard output, then logs only to --log."""
    import json

    from drummachine.live.session import Options

    _log_to(Path(args.log))
    try:
        opts = Options(**json.loads(args.options))
    except (ValueError, TypeError) as exc:
        raise DrumMachineError("--options", f"not the engine's options: {exc}") from None

    def ready(host) -> None:
        print(json.dumps({"ready": host.hello()}), flush=True)
        devnull = os.open(os.devnull, os.O_RDWR)  # nobody reads these any more: the UI may go any time
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(log_fd, 2)  # what a library prints (a thread's traceback) goes to the log too
        os.close(log_fd)

    return _run_engine(opts, args, ready=ready)


def _log_to(path: Path) -> None:
    logging.basicConfig(filename=str(path), level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


def _options(args):
    from drummachine.live.session import Options

    setlist = []
    if args.setlist:
        if "," in args.setlist or args.setlist.endswith(".toml") is False and args.setlist not in _setlists():
            setlist = args.setlist.split(",")
        else:
            from drummachine.live.presets import load_setlist

            setlist = list(load_setlist(args.setlist).songs)
    song = args.song or (setlist[0] if setlist else None)
    return Options(song=song, setlist=setlist, style=args.style,
                   bpm=args.bpm, intensity=args.intensity, audio=args.audio, audio_device=args.audio_device,
                   audio_api=args.audio_api, blocksize=args.blocksize, rate=args.rate, kit=args.kit, outs=args.outs,
                   cue_out=args.cue_out, click=args.click == "on",
                   midi_out=args.midi_out, midi_virtual=args.midi_virtual, midi_in=args.midi_in,
                   midi_latency=args.midi_latency,
                   midi_api=args.midi_api, clock=args.clock, clock_out=args.clock_out, notemap=args.notemap,
                   model=args.model, fake_model=args.fake_model, seed=args.seed, controller=args.controller,
                   performer=args.performer, midi_schedule=args.midi_schedule,
                   listen=args.listen, follow=args.follow, follow_range=args.follow_range,
                   wait_for_band=args.wait_for_band, listen_gate=args.listen_gate)


def _run_engine(opts, args, print_bars: bool = False, ready=None) -> int:
    """The engine in this process, served on its socket until a quit, a signal, --duration or the
    song's end (with --stop-when-done); a summary line at the end."""
    from drummachine.live import host, tuning
    from drummachine.live.session import Session, status_line

    import faulthandler

    faulthandler.enable()  # a crash in a C extension (rtmidi, PortAudio) leaves every thread's stack on stderr
    t0 = time.perf_counter()
    band = None
    path, listener, notice = host.listen(args.socket)  # before anything opens: a bad --socket fails at once
    if notice:
        logging.warning("%s", notice)
        if ready is None:
            print(f"drummachine: {notice}", file=sys.stderr)
    try:
        tuning.for_real_time()
        with Session(opts) as session:
            tuning.settle()
            for w in session.warnings:
                logging.warning("%s", w)
                if ready is None:
                    print(f"drummachine: warning: {w}", file=sys.stderr)
            session.start_threads()
            band = _listen(session, opts, quiet=ready is not None)
            if not args.wait and not (band and opts.wait_for_band):
                session.command("start")
            took = time.perf_counter() - t0
            logging.info("ready in %.2f s; listening on %s", took, path)
            seen = {"bar": -1, "first_beat": None}

            def on_snapshot(s) -> None:
                if seen["first_beat"] is None and s.steps > 0:
                    seen["first_beat"] = time.perf_counter() - t0
                    logging.info("first beat after %.2f s", seen["first_beat"])
                if s.bar != seen["bar"] and (s.playing or seen["bar"] >= 0):
                    seen["bar"] = s.bar
                    line = status_line(s)
                    logging.info("%s", line)
                    if print_bars:
                        try:
                            print(line, flush=True)
                        except OSError:  # the terminal went (SIGHUP): the log still has it
                            pass

            s, reason = host.serve(session, path, listener, log_path=args.log, duration=args.duration,
                                   stop_when_done=args.stop_when_done, on_snapshot=on_snapshot, ready=ready)
    finally:
        if band is not None:
            band.close()
        listener.close()
        path.unlink(missing_ok=True)
    first_beat = seen["first_beat"]
    restarts = f" ({s.audio_restarts} audio restarts)" if s.audio_restarts else ""
    not_ready = session.audio.not_ready if session.audio is not None else 0
    restarts += f" ({not_ready} blocks the mixer had not mixed in time)" if not_ready else ""
    late = session.audio.late_events if session.audio is not None else 0
    restarts += f" ({late} hits came after their frames were mixed: played up to a period late)" if late else ""
    restarts += f" ({s.faults_total} faults caught and played through: {s.faults})" if s.faults_total else ""
    summary = (f"played {s.steps} steps, {s.misses} generator misses, {s.underruns} underruns{restarts}; "
               f"ready in {took:.2f} s" + (f", first beat after {first_beat:.2f} s" if first_beat else "")
               + f"; stopped: {reason}")
    logging.info("%s", summary)
    if ready is not None:  # the engine behind a UI: its standard streams are the log's already
        return 0
    try:
        print(summary, file=sys.stderr if getattr(args, "headless", True) else sys.stdout)
    except OSError:
        pass
    return 0


def _listen(session, opts, quiet: bool = False):
    """``--listen PORT``: the listening process, its readings handed to the engine as "band"
    commands, the follower set up from --follow and --follow-range (all in ``opts``: the engine
    behind the stage UI gets them so). An input that cannot be opened is one warning (on stderr,
    or with ``quiet`` in the session's warnings, which the UI shows) and the machine plays on by
    its own tempo."""
    if not opts.listen:
        return None
    from drummachine.core.follow import FollowConfig, Follower
    from drummachine.listen.listener import InputWhenThere, Listener

    engine = session.engine
    bpm = engine.transport.bpm_at(0)
    engine.follower = Follower(FollowConfig(mode=opts.follow, window=opts.follow_range), bpm)
    engine.wait_for_band = bool(opts.wait_for_band)

    def make():
        return Listener(opts.listen, bpm, session.clock, window=opts.follow_range + 0.05,
                        gate_db=opts.listen_gate).wait_ready()

    def link(band, came: str = "") -> None:
        def send(reading) -> None:
            engine.command("band", reading)
            band.set_tempo(engine.transport.bpm_at(engine.commit_cursor))

        band.link(send)
        logging.info("listening to %s (%d Hz, %s capture), following: %s%s", band.input.name, band.rate,
                     band.capture or "?", opts.follow, came)

    try:
        band = make()
    except DrumMachineError as exc:
        engine.wait_for_band = False  # the machine plays by its own tempo meanwhile
        missing = getattr(exc, "missing", False)
        said = f"{exc}; playing without following" + (", listening for it every few seconds" if missing else "")
        logging.warning("%s", said)
        session.warnings.append(said)
        if not quiet:
            print(f"drummachine: warning: {said}", file=sys.stderr)
        if not missing:
            return None
        return InputWhenThere(make, lambda band: link(band, " (the input is there now)"))
    link(band)
    return band


def _setlists() -> list[str]:
    from drummachine.live.presets import names

    return names("setlists")


def _play_ui(opts, args) -> int:
    """The engine in a process (and a session) of its own, the stage UI here, attached to it: the
    UI may crash or its terminal close, the groove goes on."""
    from drummachine.cli.attach import run_ui
    from drummachine.live import host

    path = host.socket_path(args.socket)
    log_path = Path(args.log) if args.log else path.parent / "engine.log"
    host.start_engine(opts, path, log_path, duration=args.duration, wait=args.wait,
                      stop_when_done=args.stop_when_done)
    return run_ui(host.SocketClient(path))


#: how long `ports` and `doctor` wait for the audio or MIDI system's answer (libjack waits for a
#: JACK server that stalls with no time limit); once one did not answer, 1 s for the rest
SYSTEM_ANSWER_S = 5.0


class SystemQuestions:
    """`ports`' and `doctor`'s questions to the audio and MIDI systems, each in a thread waited
    for SYSTEM_ANSWER_S. The JACK server is asked first, through drummachine's own client (ctypes
    lets the wait be given up; python-rtmidi holds the interpreter's lock while libjack waits):
    if it does not answer (``stalled``), nothing that goes through JACK is asked."""

    def __init__(self):
        self.unanswered: list[Asked] = []
        self.stalled: str | None = None
        lib = jack_midi.library()
        if jack_server_identity() is not None and lib is not None:
            try:
                self(self._open_and_close, lib)
            except TimeoutError:
                self.stalled = f"the JACK server does not answer (waited {SYSTEM_ANSWER_S:.0f} s)"

    @staticmethod
    def _open_and_close(lib) -> None:
        status = ctypes.c_int(0)
        handle = lib.dm_open(f"{jack_midi.CLIENT}-asking".encode(), ctypes.byref(status))
        if handle:
            lib.dm_close(handle)

    def __call__(self, question, *args, through_jack: bool = True):
        """``question(*args)``'s answer; a TimeoutError saying why there is none."""
        if through_jack and self.stalled:
            raise TimeoutError(self.stalled)
        wait = 1.0 if self.unanswered else SYSTEM_ANSWER_S
        asked = Asked(question, *args, name="asking-the-system")
        if not asked.wait(wait):
            self.unanswered.append(asked)
            raise TimeoutError(f"no answer within {wait:.0f} s (a JACK server that stalls?)")
        return asked.result()

    def leave(self, code: int) -> int:
        """The command's exit code; with a question still unanswered, the process leaves at once
        (libjack's exit handlers would wait for that server too)."""
        if self.unanswered:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code


def cmd_ports(args) -> int:
    """List audio output devices and MIDI ports."""
    from drummachine.midi.ports import APIS, list_ports

    from drummachine.audio.devices import outputs

    ask = SystemQuestions()
    if ask.stalled:
        print(f"{ask.stalled}: restart it; its audio and MIDI ports are not listed")
    try:
        found = ask(outputs)
        print("audio outputs:")
        for d in found:
            print(f"  [{d['index']}] {d['name']} ({d['api']}, {d['channels']} ch, {d['rate']:.0f} Hz)")
        if not found:
            print("  none")
    except Exception as exc:
        print(f"audio outputs: unavailable ({exc})")
    from drummachine.listen.inputs import inputs

    try:
        found_inputs = ask(inputs)
        print("audio inputs (play --listen):")
        for i in found_inputs:
            print(f"  {i.name}" if i.backend == "jack" else f"  sd:{i.index} {i.name}")
        if not found_inputs:
            print("  none")
    except TimeoutError as exc:
        print(f"audio inputs (play --listen): unavailable ({exc})")
    for api in APIS:
        for direction in ("out", "in"):
            try:
                names = ask(list_ports, api, direction, through_jack=api == "jack")
                print(f"MIDI {direction} ({api}): " + (", ".join(names) if names else "none"))
            except DrumMachineError:
                print(f"MIDI {direction} ({api}): unavailable")
            except TimeoutError as exc:
                print(f"MIDI {direction} ({api}): unavailable ({exc})")
    return ask.leave(0)


def cmd_doctor(args) -> int:
    """Check audio, MIDI, the model and the CPU, and say what to fix."""
    problems = 0

    def report(ok: bool, what: str, fix: str = "") -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FIX '} {what}" + ("" if ok else f": {fix}"))

    try:
        from drummachine.model.generator import Generator

        t0 = time.perf_counter()
        gen = Generator(args.model, seed=0)
        load = time.perf_counter() - t0
        cont = gen.cond.cont(120.0, gen.cond.defaults("any"))
        times = []
        for i in range(64):
            t = time.perf_counter()
            gen.step(0, i % 16, 0, cont)
            times.append(time.perf_counter() - t)
        worst = sorted(times)[-2] * 1000
        report(worst < 20, f"model {gen.info.path.name}: loads in {load:.2f} s, a step takes up to {worst:.2f} ms",
               "the CPU is too slow or too busy for the model")
    except DrumMachineError as exc:
        report(False, "model", str(exc))
    ask = SystemQuestions()
    try:
        from drummachine.audio.devices import outputs

        outs = [d for d in ask(outputs) if d["channels"] >= 2]
        report(bool(outs), f"audio: {len(outs)} stereo output(s)",
               "no audio output: plug in a sound card, or start JACK/PipeWire; MIDI out still works")
    except TimeoutError as exc:
        report(False, "audio", f"{exc}: restart the JACK server")
    except Exception as exc:
        report(False, "audio", f"PortAudio is missing or broken ({exc}); apt-get install libportaudio2")
    else:
        if any("JACK" in d["api"] for d in outs):
            from drummachine.core.jack_latency import jack_lsp_latencies

            # the sound card's outputs (what PortAudio connects the kit to): JACK's periods to them
            frames = [v["playback"] for k, v in jack_lsp_latencies().items() if k.startswith("system:playback_")]
            rate = next(int(d["rate"]) for d in outs if "JACK" in d["api"])
            if frames and rate:
                ms = max(frames) / rate * 1000
                print(f"     JACK's output latency {ms:.1f} ms: the kit's hits go to the mixer that much early"
                      + ("; a shorter period (jackd -p) brings the foot's cues in sooner" if ms > 25 else ""))
    from drummachine.midi.ports import APIS, list_ports

    reachable = []
    for api in APIS:
        try:
            ask(list_ports, api, through_jack=api == "jack")
            reachable.append(api)
        except TimeoutError as exc:
            report(False, f"MIDI: {api}", str(exc))
        except DrumMachineError:
            pass
    report(bool(reachable), f"MIDI: {', '.join(reachable) or 'no'} API reachable",
           "no MIDI system: load snd-seq (ALSA) or start a JACK server")
    cpus = os.cpu_count() or 1
    report(cpus >= 2, f"CPU: {cpus} cores", "one core: audio and the model will compete")
    try:
        param = os.sched_param(10)
        os.sched_setscheduler(0, os.SCHED_FIFO, param)
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        report(True, "real-time scheduling allowed")
    except (PermissionError, OSError, AttributeError):
        report(False, "real-time scheduling not allowed",
               "add the user to the 'audio' group with an rtprio limit (/etc/security/limits.d)")
    print("all good" if not problems else f"{problems} thing(s) to fix")
    return ask.leave(0 if not problems else 1)


def _dbfs(text: str) -> float:
    """--listen-gate: -100..0 dBFS."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; allowed: -100..0 (dBFS)") from None
    if not -100.0 <= value <= 0.0:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range; allowed: -100..0 (dBFS)")
    return value


def _fraction(text: str) -> float:
    """--follow-range: 0.01..0.5 (a fraction of the song's tempo)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; allowed: 0.01..0.5") from None
    if not 0.01 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range; allowed: 0.01..0.5")
    return value


def _midi_latency(text: str) -> float:
    """--midi-latency: milliseconds (``core.notemap.LATENCY_MS``)."""
    from drummachine.core.notemap import LATENCY_MS

    lo, hi = LATENCY_MS
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; allowed: {lo:g}..{hi:g} (ms)") from None
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range; allowed: {lo:g}..{hi:g} (ms)")
    return value


def register(sub) -> None:
    p = sub.add_parser("play", help="play live (audio and/or MIDI, songs, controller)", description=cmd_play.__doc__)
    p.add_argument("--song", help="song file or name (presets/songs or your config folder); default: a jam")
    p.add_argument("--setlist", help="a setlist preset, or comma-separated songs; program change N picks song "
                   "N+1 (the first song plays first)")
    p.add_argument("--controller", help="controller preset (presets/controllers: footswitch, pads, knobs) or "
                   "file; default: the pedal-drum-machine CC map")
    p.add_argument("--style", default="rock", help="style for a jam without a song (default rock)")
    p.add_argument("--bpm", type=float, help="tempo (default: the song's, or the style's typical)")
    p.add_argument("--intensity", type=float, help="0..1 for a jam (default: the style's, presets/styles.toml)")
    p.add_argument("--audio", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="play through the built-in (or --kit) sounds (default on)")
    p.add_argument("--audio-device", help="output device name (part) or number; see drummachine ports")
    p.add_argument("--audio-api", help="host API, e.g. JACK, ALSA (default: the system's default device)")
    p.add_argument("--blocksize", type=int, default=128, help="audio frames per buffer (default 128)")
    p.add_argument("--rate", type=int, choices=(44100, 48000),
                   help="sample rate (default: the output's own; 48000 where it plays any)")
    p.add_argument("--outs", default="stereo", choices=("stereo", "groups", "voices"),
                   help="audio outputs: stereo (default); groups: kick, snare, toms L/R, overheads L/R, hats; "
                   "voices: one per voice (as JACK ports out_0.., or a multichannel device's channels)")
    p.add_argument("--cue-out", metavar="PORTS|channels", help="a cue bus for the in-ears (drums, a click, the "
                   "count-in, a cue a bar before each section change): one or two JACK ports (left,right; a unique "
                   "part of a name will do), or 'channels': the device's two after the main outputs")
    p.add_argument("--click", choices=("on", "off"), default="on", help="with --cue-out: the click on the beat "
                   "(default on; a song's click setting wins; the count-in clicks either way)")
    p.add_argument("--kit", metavar="NAME|DIR", help="a Hydrogen kit by name (drummachine kits) or folder, or a "
                   "folder of WAV samples named by voice (default: the built-in kit)")
    p.add_argument("--midi-out", metavar="PORT", help="send notes to this MIDI port (name or a unique part)")
    p.add_argument("--midi-virtual", action="store_true", help="open a virtual MIDI out port for others to connect")
    p.add_argument("--midi-latency", type=_midi_latency, default=None, metavar="MS",
                   help="how long your drum module (and MIDI interface) takes from a note to its sound: notes go "
                   "out that much early, so they sound on the beat (default: the note map's latency_ms, else 0; "
                   "the MIDI clock keeps its time)")
    p.add_argument("--midi-in", metavar="PORT", help="controller input port (name or a unique part)")
    p.add_argument("--midi-api", choices=("jack", "alsa"), help="MIDI system (default: $DRUMMACHINE_MIDI_API, "
                   "else JACK when running, else ALSA)")
    p.add_argument("--clock", choices=("internal", "midi"), default="internal",
                   help="follow a MIDI clock on --midi-in, or lead (default internal)")
    p.add_argument("--clock-out", action="store_true", help="send MIDI clock (24 PPQN) and start/stop on MIDI out")
    p.add_argument("--notemap", metavar="FILE.toml", help="output note map for your drum module")
    p.add_argument("--model", metavar="FILE.onnx", help="model file (default: the shipped int8 model)")
    p.add_argument("--fake-model", action="store_true", help=__import__("argparse").SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help="the same seed plays the same grooves (as generate)")
    p.add_argument("--performer", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="vary each bar's dynamics, kit and fills as drummers do (default on; off: every bar of a "
                   "section asks the same)")
    p.add_argument("--headless", action="store_true", help="no screen: driven by the controller, logging to "
                   "--log (default drummachine.log)")
    p.add_argument("--no-ui", action="store_true", help="print a status line per bar instead of the stage UI")
    p.add_argument("--log", metavar="FILE", help="log file")
    p.add_argument("--wait", action="store_true", help="wait for a start cue instead of starting at once")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--stop-when-done", action="store_true", help="exit when the song has ended")
    p.add_argument("--socket", metavar="PATH", help="where a UI attaches (default: $XDG_RUNTIME_DIR/drummachine/"
                   "engine.sock, else /tmp/drummachine-UID/engine.sock; its folder must be yours alone)")
    p.add_argument("--midi-schedule", metavar="FILE", help=argparse.SUPPRESS)  # timing benchmarks
    p.add_argument("--listen", metavar="PORT", help="follow the band: a JACK audio port (band's mix, e.g. "
                   "system:capture_1) or sd:N / sd:NAME for an input device; see drummachine ports")
    p.add_argument("--follow", choices=("off", "tempo", "beat", "all"), default="beat",
                   help="with --listen: follow the band's tempo, tempo and beat (default), or all (and dynamics)")
    p.add_argument("--wait-for-band", action="store_true", help="with --listen: wait for the band to start, "
                   "then come in on its 'one' (counted from where it came in) once locked; start by hand to come in now")
    p.add_argument("--listen-gate", type=_dbfs, default=None, metavar="DBFS",
                   help="with --listen: the input's level under which nothing is heard (a mic in a noisy "
                        "room: just above the room's level, e.g. -45); default none")
    p.add_argument("--follow-range", type=_fraction, default=0.10, metavar="FRACTION",
                   help="with --listen: how far the tempo may follow from the song's (default 0.10: ±10%%)")
    p.set_defaults(func=cmd_play)

    # what play starts behind its UI; no help line: not for musicians
    e = sub.add_parser("engine", description=cmd_engine.__doc__)
    e.add_argument("--options", required=True, help="the session's options (JSON)")
    e.add_argument("--socket", required=True, metavar="PATH")
    e.add_argument("--log", required=True, metavar="FILE")
    e.add_argument("--duration", type=float)
    e.add_argument("--wait", action="store_true")
    e.add_argument("--stop-when-done", action="store_true")
    e.set_defaults(func=cmd_engine)

    from drummachine.cli import attach

    attach.register(sub)

    p = sub.add_parser("ports", help="list audio devices and MIDI ports", description=cmd_ports.__doc__)
    p.set_defaults(func=cmd_ports)
    p = sub.add_parser("doctor", help="check audio, MIDI, model and CPU", description=cmd_doctor.__doc__)
    p.add_argument("--model", metavar="FILE.onnx")
    p.set_defaults(func=cmd_doctor)
