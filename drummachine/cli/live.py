"""Subcommands for the stage: play (and the engine it starts behind its UI)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from drummachine.core.errors import DrumMachineError


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
                        gate_db=opts.listen_gate, kit_ports=lambda: _kit_ports(session, opts),
                        kit_tap=_kit_tap(session)).wait_ready()

    def link(band, came: str = "") -> None:
        def send(reading) -> None:
            engine.command("band", reading)
            band.set_tempo(engine.transport.bpm_at(engine.commit_cursor))

        band.link(send, lambda: engine.band_beat_tapped)  # the band's beat tapped: to the listening process
        logging.info("listening to %s (%d Hz, %s capture), following: %s%s", band.input.name, band.rate,
                     band.capture or "?", opts.follow, came)
        band.say_own_kit()

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
        waiting = InputWhenThere(make, lambda band: link(band, " (the input is there now)"))
        session.band_input = waiting.status
        return waiting
    link(band)
    session.band_input = band.status
    return band


def _kit_ports(session, opts) -> tuple[str, ...]:
    """The kit's main JACK ports (not the cue bus: the in-ears do not reach a mic) where the
    engine's own client plays them: the listening process takes what they play out of what it
    hears. () without audio over JACK, or with ``DRUMMACHINE_LISTEN_OWN_KIT=keep`` (the
    benchmark's side-by-side)."""
    import os

    from drummachine.audio.mixing import out_channels

    if os.environ.get("DRUMMACHINE_LISTEN_OWN_KIT", "").lower() == "keep" or session.audio is None:
        return ()
    return session.audio.output_ports[:len(out_channels(opts.outs))]


def _kit_tap(session) -> str:
    """The mixer's shared block, whose kit as mixed the listening process reads by time where the
    kit does not play through the engine's JACK ports (PortAudio, ALSA; a sounddevice input). ""
    without a kit, or with ``DRUMMACHINE_LISTEN_OWN_KIT=keep``."""
    import os

    if os.environ.get("DRUMMACHINE_LISTEN_OWN_KIT", "").lower() == "keep" or session.audio is None:
        return ""
    return getattr(session.audio, "kit_tap", "")


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
                        "room: just above the room's level, e.g. -45); default -70 (silence: an idle input's hiss)")
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

