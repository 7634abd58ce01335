"""A playing session: model, song, engine, outputs and controller wired together (``drummachine play``).

Every part that can fail at the edges fails soft once playing: a missing controller is reported
and watched for; no audio device means MIDI alone (or a clear exit if no output is left).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from drummachine.core import commands
from drummachine.core.controller import CLOCK, CONTINUE, SPP, START, STOP, ClockFollower, PresetControl
from drummachine.core.engine import Engine, hand_out_margin
from drummachine.core.snapshot import Snapshot
from drummachine.core.errors import DrumMachineError
from drummachine.live.offline import choose_song, shipped_performer, starting_commands
from drummachine.live.presets import controller_stack, find, learn_binding
from drummachine.core.song import Song, load_song
from drummachine.core.transport import MonotonicClock

log = logging.getLogger("drummachine")


#: seconds without a callback from a live mixer after which its stream is taken for dead (a
#: period is 2.7 ms; a loaded host stalls JACK for a few hundred ms at worst)
STREAM_STALLED_S = 2.0
#: SCHED_FIFO priority of the engine's commit loop: under JACK's (10) and its clients', above
#: everything not real-time. Under 4 CPU hogs on the 2 cores it handed steps out at most 0.41 ms
#: past their deadline, against 3.3-4.0 ms as a normal thread (benchmarks/commit_priority.json)
COMMIT_PRIORITY = 3
#: seconds between tries to start a mixer that cannot start (no device, no sound server): the
#: first, then the longest after a minute of tries (each try starts a Python process)
AUDIO_RETRY_S = (2.0, 10.0)


@dataclass
class Options:
    song: str | None = None
    setlist: list[str] = field(default_factory=list)
    style: str = "rock"
    bpm: float | None = None
    intensity: float | None = None
    audio: bool = True
    audio_device: str | None = None
    audio_api: str | None = None
    blocksize: int = 128
    rate: int | None = None  #: the output's sample rate; None: its own (DEFAULT_SAMPLE_RATE where it plays any)
    kit: str | None = None
    outs: str = "stereo"  #: audio outputs: stereo, groups or voices (audio.mixing.OUTS)
    #: the cue bus for the in-ears (audio.cue_out): one or two JACK ports, or "channels" (the
    #: device's after the main outputs); None: no cue bus
    cue_out: str | None = None
    click: bool = True  #: the click on the cue bus (a song's own click setting wins)
    midi_out: str | None = None
    midi_virtual: bool = False
    midi_in: str | None = None
    midi_api: str | None = None
    clock: str = "internal"
    clock_out: bool = False
    notemap: str | None = None
    model: str | None = None
    fake_model: bool = False
    seed: int = 0
    lookahead: int = 8
    controller: str | None = None  #: controller preset name or file (default: the pedal CC map)
    performer: bool = True  #: bar-by-bar cues as drummers move them (False: the sections' cues held)
    midi_schedule: str | None = None  #: write each MIDI message's scheduled time here (timing benchmarks)
    # following the band (docs/follow.md): started by the caller (cli.live._listen), here so that
    # the engine behind the stage UI, which gets only these options, can start it too
    listen: str | None = None  #: the band's input: a JACK capture port, or sd:N / a sounddevice input name
    follow: str = "beat"  #: off, tempo, beat or all (core.follow.FOLLOW_MODES)
    follow_range: float = 0.10  #: how far the tempo may follow from the song's (a fraction)
    wait_for_band: bool = False  #: wait for the band to start; come in on its "one" once locked
    #: the input's level (400 ms, dBFS) under which nothing is heard: a room's noise is no band
    #: (the tracker can be sure of noise alone; docs/follow.md). None: no gate
    listen_gate: float | None = None


class Session:
    """The parts of a playing instrument wired together. Process tuning (GIL switch interval,
    malloc arenas, the garbage collector) is the caller's: see live.tuning."""

    def __init__(self, opts: Options, sinks: list | None = None, clock=None):
        """``sinks`` and ``clock``: outputs and a clock given by the caller (tests of the routing):
        then no audio or MIDI device is opened."""
        self.opts = opts
        self.sinks = list(sinks or [])
        self.inputs = []
        self.audio = None
        self.midi = None
        self.stop_event = threading.Event()
        self.threads = []
        self.pending_song: Song | None = None
        self.follower = ClockFollower() if opts.clock == "midi" else None
        self.preset_control: PresetControl | None = None
        self.song_index = 0
        self.learning: str | None = None
        self.learned: str = ""
        self.last_midi: list[int] = []
        self.last_midi_at = 0.0
        self.warnings: list[str] = []
        self.schedule: list = []  # (scheduled time, message) of what the MIDI out sent, until poll writes it
        self.schedule_file = open(opts.midi_schedule, "a") if opts.midi_schedule else None
        t0 = time.perf_counter()
        starting = None if sinks else self._start_audio()  # the mixer sets itself up while the model loads
        try:
            self.generator = self._generator()
            from drummachine.live.presets import load_styles

            self.styles = load_styles(None)
            self.warnings += self.styles.problems
            self.song = self._song(opts.song)
            if not sinks:
                self._outputs(starting)
        except BaseException:
            if starting is not None:
                starting.close()
            raise
        clock = clock or (self.audio.clock if self.audio else MonotonicClock())
        self.clock = clock
        if self.midi is not None:
            self.midi.clock = clock
        performer = shipped_performer(opts.seed, self.warnings) if opts.performer else None
        margin = hand_out_margin(getattr(self.audio, "ahead_s", 0.0))
        self.engine = Engine(self.generator, self.song, clock, self.sinks, lookahead=opts.lookahead, margin=margin,
                             midi_clock=opts.clock_out and opts.clock != "midi", performer=performer,
                             cue_bus=any(getattr(s, "cue", False) for s in self.sinks), click=opts.click)
        for name, value in starting_commands(self.styles, self.song, opts.bpm):
            self.engine.command(name, value)
        self.engine.pump()
        self._load_controller()
        self._inputs()
        self.setup_seconds = time.perf_counter() - t0

    # --- parts ----------------------------------------------------------------------------
    def _generator(self):
        if self.opts.fake_model:
            from drummachine.core.fake_generator import FakeGenerator

            return FakeGenerator(self.opts.seed)
        from drummachine.model.generator import Generator

        return Generator(self.opts.model, seed=self.opts.seed, threads=1)

    def _song(self, name: str | None) -> Song:
        if name:
            return load_song(find("songs", name), self.generator.cond.styles)
        return choose_song(self.generator, self.styles, None, self.opts.style, self.opts.bpm, self.opts.intensity)

    def _start_audio(self, cue: bool | None = None, rate: int | None = None):
        """The audio process, starting (None without audio): see audio_process. ``cue``: with the
        cue bus (default: when --cue-out asks for it); ``rate``: default --rate, else DEFAULT_SAMPLE_RATE."""
        from drummachine.audio.kit import DEFAULT_SAMPLE_RATE

        o = self.opts
        rate = rate or o.rate or DEFAULT_SAMPLE_RATE
        if o.cue_out:
            from drummachine.audio.cue_out import cue_ports

            cue_ports(o.cue_out)  # a malformed --cue-out is one line before anything starts
        if not o.audio:
            return None
        from drummachine.audio.process import AudioProcessSink

        cue = bool(o.cue_out) if cue is None else cue
        try:
            return AudioProcessSink(o.kit, rate, o.audio_device, o.blocksize, hostapi=o.audio_api, outs=o.outs,
                                    cue=cue)
        except DrumMachineError as exc:  # a broken kit (missing sample, bad XML, bad FLAC): on stage, play on
            if not getattr(exc, "kit", False):
                raise
            self.warnings.append(f"{exc}; the built-in kit plays instead")  # shown and logged by the caller
            return AudioProcessSink(None, rate, o.audio_device, o.blocksize, hostapi=o.audio_api, outs=o.outs,
                                    cue=cue)

    def _start_audio_again(self, failed, exc: DrumMachineError):
        """The audio process once more, where what its output said tells how: at the output's own
        sample rate when --rate was not given (a JACK server plays at its own only: an interface
        set to 44.1 kHz), without the cue bus when there are too few channels for it too. Raises
        where neither helps."""
        from drummachine.audio.kit import SAMPLE_RATES

        o = self.opts
        device_rate = getattr(exc, "device_rate", None)
        if device_rate and device_rate != failed.rate:
            failed.close()
            if o.rate is None and device_rate in SAMPLE_RATES:
                log.info("audio: %s: playing at %d Hz", exc.what, device_rate)
                return self._start_audio(cue=failed.cue, rate=device_rate)
            how = (f"--rate {device_rate} plays there" if device_rate in SAMPLE_RATES else
                   f"drummachine plays at {' or '.join(map(str, SAMPLE_RATES))} Hz: set the device (or JACK) to one")
            # not "audio": that one waits for an output to come, and this one is there
            raise DrumMachineError("sample rate", f"{exc.what}; {how}") from None
        if failed.cue and exc.where == "--outs":
            # too few channels for the cue bus too: the main outputs alone, the in-ears without
            failed.close()
            self.warnings.append(f"--cue-out: {exc.what}; playing without the cue bus")
            return self._start_audio(cue=False, rate=failed.rate)
        raise exc

    def _play_at_the_outputs_rate(self, exc: DrumMachineError) -> bool:
        """An output that came late (JACK started after play) plays at a rate of its own: before
        any mixer has played, and --rate not given, the sink takes it. True when it did."""
        from drummachine.audio.kit import SAMPLE_RATES

        rate = getattr(exc, "device_rate", None)
        if not rate or self.opts.rate or self.audio.opened or rate == self.audio.rate or rate not in SAMPLE_RATES:
            return False
        try:
            self.audio.play_at(rate)
        except Exception as failed:  # the kit at that rate: said, and tried again with the mixer
            log.warning("audio: %s; the kit at %d Hz: %s", exc.what, rate, failed)
            return False
        log.warning("audio: %s: playing at %d Hz", exc.what, rate)
        return True

    def _outputs(self, starting=None) -> None:
        o = self.opts
        if starting is not None:
            pending = starting
            try:
                while True:
                    try:
                        self.audio = pending.wait_ready(close_on_error=False)
                        break
                    except DrumMachineError as exc:
                        pending = self._start_audio_again(pending, exc)
                self.sinks.append(self.audio)
                self._connect_cue()
            except DrumMachineError as exc:
                if getattr(exc, "kit", False):
                    pending.close()
                    raise
                if exc.where == "audio" and (o.midi_out or o.midi_virtual):
                    # no output device or sound server yet (an interface plugged in late, JACK
                    # started after drummachine): MIDI plays meanwhile on the sink's clock, which
                    # runs on the wall, and the watchdog starts a mixer as soon as one can open
                    self.audio = pending
                    self.sinks.append(pending)
                    self.warnings.append(f"{exc}: MIDI alone until the audio output is there (tried again "
                                         f"every {AUDIO_RETRY_S[0]:.0f}-{AUDIO_RETRY_S[1]:.0f} s)")
                else:
                    pending.close()
                    self.warnings.append(f"{exc}: going on with MIDI alone")
                    log.warning("%s: going on with MIDI alone", exc)
        if o.midi_out or o.midi_virtual or not self.sinks:
            from drummachine.core.notemap import GM_NOTEMAP, load_notemap
            from drummachine.midi.ports import MidiOutSink, api_name

            notemap = load_notemap(o.notemap) if o.notemap else GM_NOTEMAP
            try:
                # the time each message was due, on the monotonic clock (the sink runs on the audio clock)
                on_sent = (lambda t, msg: self.schedule.append((t + time.monotonic() - self.clock.now(), msg))) \
                    if self.schedule_file else None
                self.midi = MidiOutSink(api_name(o.midi_api), o.midi_out, MonotonicClock(), notemap,
                                        send_clock=o.clock_out, strict=not self.sinks, on_sent=on_sent)
                self.sinks.append(self.midi)
                if not self.midi.connected:
                    self.warnings.append(f"{self.midi.port.message}; playing on, watching for it")
            except DrumMachineError as exc:
                if not self.sinks:
                    raise DrumMachineError(exc.where, f"{exc.what}; and there is no audio output either: "
                                           "nothing left to play through") from None
                self.warnings.append(str(exc))
                log.warning("%s", exc)
        if not self.sinks:
            raise DrumMachineError("play", "no audio device and no MIDI output: nothing to play through")

    def _connect_cue(self) -> None:
        """--cue-out's JACK ports: the cue bus connected there (again after a mixer restart); a port
        that is not there is a warning, and the cue bus stays where PortAudio put it."""
        o = self.opts
        if self.audio is None or not self.audio.cue:
            return
        from drummachine.audio.cue_out import connect_cue

        try:
            pairs = connect_cue(o.cue_out, len(self.audio.channels))
            if pairs:
                log.info("cue bus: %s", ", ".join(f"{a} -> {b}" for a, b in pairs))
        except DrumMachineError as exc:
            self.warnings.append(f"{exc}; the cue bus plays on the device's channels after the main ones")
            if self.threads:  # after a mixer restart: the caller logged the warnings at the start only
                log.warning("%s", self.warnings[-1])

    def _inputs(self) -> None:
        o = self.opts
        if not (o.midi_in or o.clock == "midi"):
            return
        from drummachine.midi.midi_in import MidiInput
        from drummachine.midi.ports import api_name

        inp = MidiInput(api_name(o.midi_api), o.midi_in, self.on_midi, self.clock)
        if not inp.connected:
            self.warnings.append(f"{inp.message}; playing on, watching for it")
            log.warning("%s; playing on, watching for it", inp.message)
        self.inputs.append(inp)

    # --- control --------------------------------------------------------------------------
    def _load_controller(self) -> None:
        """The default preset, the chosen one on top, the user's learned mappings on top of that."""
        self.preset_control = PresetControl(controller_stack(self.opts.controller, self.warnings),
                                            lambda: self.engine.playing)

    def learn(self, message: list[int]) -> bool:
        """MIDI learn: bind the control that sent ``message`` to the action being learned; saved."""
        kind = message[0] & 0xF0
        if kind == 0xB0 and len(message) >= 3:
            control = ("cc", message[1])
        elif kind == 0x90 and len(message) >= 3 and message[2] > 0:
            control = ("note", message[1])
        else:
            return False
        self.learned = learn_binding(control, self.learning)
        log.info("learned %s", self.learned)
        self.learning = None
        self._load_controller()
        return True

    def on_midi(self, message: list[int], t: float) -> None:
        if message and message[0] < 0xF0:
            self.last_midi = list(message)
            self.last_midi_at = time.monotonic()
        if self.learning and message and message[0] < 0xF0 and self.learn(message):
            return
        if self.follower is not None and message and message[0] in (CLOCK, START, STOP, CONTINUE, SPP):
            self._follow(message, t)
            return
        for cmd in self.preset_control.handle(message, t):
            self.command(cmd.name, cmd.value)

    def _follow(self, message: list[int], t: float) -> None:
        f = self.follower
        status = message[0]
        if status == CLOCK:
            f.pulse(t)
            if f.running and f.position % 24 == 0:
                bpm = f.bpm()
                if bpm:
                    self.engine.command("follow", (bpm, f.next_beat(t + 0.001)))
        elif status in (START, CONTINUE):
            f.start(0 if status == START else f.position)
            self.engine.command("start")
        elif status == STOP:
            f.stop()
            self.engine.command("stop")

    def command(self, name: str, value=None) -> None:
        """A command from anywhere (UI, controller, network): the session's own or the engine's, by
        the command table; a bad one is refused with one line in the log."""
        log.info("cue %s %s", name, "" if value is None else value)
        try:
            cmd = commands.parse(name, value)
        except DrumMachineError as exc:
            self.engine.stats.refused += 1
            log.warning("refused: %s", exc)
            return
        if cmd.spec.target == commands.SESSION:
            self.session_handlers[name](cmd.value)
        else:
            self.engine.command(cmd.name, cmd.value)

    @property
    def session_handlers(self):
        return {"learn": self._on_learn, "program": self.select_song,
                "next_song": lambda _: self.select_song(self.song_index + 1),
                "previous_song": lambda _: self.select_song(self.song_index - 1)}

    def _on_learn(self, action: str | None) -> None:
        if action is not None and action not in commands.BINDABLE:
            self.engine.stats.refused += 1
            log.warning("learn: %r cannot be bound; allowed: %s", action, ", ".join(commands.BINDABLE))
            return
        self.learning = action
        self.learned = ""

    def select_song(self, index: int) -> None:
        if not self.opts.setlist:
            return
        if not 0 <= index < len(self.opts.setlist):
            log.warning("program %d: the setlist has %d songs", index, len(self.opts.setlist))
            return
        try:
            song = self._song(self.opts.setlist[index])
        except DrumMachineError as exc:
            log.warning("%s", exc)
            return
        self.song_index = index
        if self.engine.playing:
            self.pending_song = song
        else:
            self.engine.command("song", song)

    # --- running --------------------------------------------------------------------------
    def start_threads(self) -> None:
        self.threads = self.engine.run_threads(self.stop_event, commit_priority=COMMIT_PRIORITY)
        if self.audio is not None:
            watchdog = threading.Thread(target=self._watch_audio, name="audio-watchdog", daemon=True)
            watchdog.start()
            self.threads.append(watchdog)

    def _watch_audio(self) -> None:
        """The audio process died (killed, crashed), or lives on with a stream the sound server no
        longer runs (JACK stopped or restarted: PortAudio says nothing, its callbacks just stop):
        start another mixer; the groove goes on meanwhile on MIDI and the wall clock, and the sound
        comes back within about a second of the server."""
        counted, since = self.audio.callbacks, time.monotonic()
        failed_since, said = None, ""
        while not self.stop_event.wait(0.25):
            try:
                now, callbacks = time.monotonic(), self.audio.callbacks
                if callbacks != counted:
                    counted, since = callbacks, now
                elif self.audio.alive and now - since > STREAM_STALLED_S:
                    log.warning("audio: no block asked for in %.1f s (the sound server stopped or restarted?); "
                                "starting the mixer again", now - since)
                    self.audio.proc.kill()
                    self.audio.proc.wait()
                played_before = self.audio.opened
                if self.audio.restart_if_gone():
                    if played_before:
                        log.warning("audio process stopped; restarted (%d so far)", self.audio.restarts)
                    else:
                        log.warning("audio: the output is there at last; the kit plays from now")
                    self._connect_cue()  # a new mixer: PortAudio connected its ports anew
                    self.engine.margin = hand_out_margin(self.audio.ahead_s)  # its ring, at the server's period
                    counted, since = self.audio.callbacks, time.monotonic()
                    failed_since, said = None, ""
            except DrumMachineError as exc:
                if self._play_at_the_outputs_rate(exc):
                    continue  # tried again at once, at that rate
                # said once per reason, not on every try; tried less often after the first minute
                failed_since = failed_since or time.monotonic()
                if str(exc) != said:
                    said = str(exc)
                    log.warning("audio process %s: %s; trying again", "stopped and cannot restart"
                                if self.audio.opened else "cannot start", exc)
                first, longest = AUDIO_RETRY_S
                self.stop_event.wait(first if time.monotonic() - failed_since < 60.0 else longest)
                counted, since = self.audio.callbacks, time.monotonic()

    def poll(self) -> None:
        """Housekeeping from the main thread: a song waiting for the current one to end; foot-switch
        gestures that resolve with time (hold, single vs double press)."""
        if self.preset_control is not None:
            for cmd in self.preset_control.tick(self.clock.now()):
                self.command(cmd.name, cmd.value)
        if self.pending_song is not None and not self.engine.playing:
            self.engine.command("song", self.pending_song)
            self.pending_song = None
        if self.schedule_file is not None and self.schedule:
            sent, self.schedule = self.schedule, []  # the dispatcher appends to the new list from now on
            self.schedule_file.write("".join(f"{t:.6f} {' '.join(map(str, m))}\n" for t, m in sent))
            self.schedule_file.flush()

    def cpu_percent(self) -> float:
        """The engine process's CPU use since the last call, in % of one core."""
        import os

        now, cpu = time.monotonic(), sum(os.times()[:2])
        last = getattr(self, "_cpu_last", None)
        self._cpu_last = (now, cpu)
        if last is None or now - last[0] < 0.2:
            return getattr(self, "_cpu_value", 0.0)
        self._cpu_value = round(100.0 * (cpu - last[1]) / (now - last[0]), 1)
        return self._cpu_value

    def status(self) -> Snapshot:
        s = self.engine.snapshot()
        faults = dict(s.faults)
        for loop, n in (("mixer", self.audio.faults if self.audio else 0),
                        ("midi", sum(p.faults.count for p in ([self.midi] if self.midi else []) + self.inputs))):
            if n:
                faults[loop] = n
        return s.with_(
            faults=faults, cpu=self.cpu_percent(), underruns=self.audio.underruns if self.audio else 0,
            audio_restarts=self.audio.restarts if self.audio else 0,
            audio_out=None if self.audio is None else ("playing" if self.audio.opened else "waiting"),
            midi_out=None if self.midi is None else ("connected" if self.midi.connected else "disconnected"),
            midi_in=tuple("connected" if i.connected else "waiting" for i in self.inputs),
            learning=self.learning, learned=self.learned, last_midi=tuple(self.last_midi),
            last_midi_at=self.last_midi_at)

    def close(self) -> None:
        self.engine.command("stop")
        self.engine.pump()
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=1.0)
        for inp in self.inputs:
            inp.close()
        for s in self.sinks:
            try:
                s.panic()
                s.close()
            except Exception:
                pass
        if self.schedule_file is not None:
            self.schedule_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def status_line(s: Snapshot) -> str:
    q = s.queued
    queued = f" | next: {q.target or q.what} at bar {q.at_bar + 1}" if q else ""
    bars = f"{s.bar_in_section + 1}/{s.section_bars or '-'}"
    state = "paused" if s.paused else ("playing" if s.playing else "stopped")
    faults = f" faults {s.faults_total}" if s.faults_total else ""
    return (f"{state} bar {s.bar + 1} | {s.section} {bars} | {s.style} {s.bpm:g} bpm | intensity "
            f"{s.intensity:.2f}{' | fill' if s.fill else ''}{queued} | misses {s.misses} underruns "
            f"{s.underruns}{faults}")
