"""A playing session: model, song, engine, outputs and controller wired together (``drummachine play``).

Every part that can fail at the edges fails soft once playing: a missing controller is reported
and watched for; no audio device means MIDI alone (or a clear exit if no output is left).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from drummachine.core import commands
from drummachine.core.controller import CLOCK, CONTINUE, SPP, START, STOP, ClockFollower, PresetControl
from drummachine.core.engine import Engine, hand_out_margin
from drummachine.core.snapshot import Snapshot
from drummachine.core.errors import DrumMachineError
from drummachine.live.audio_output import AUDIO_RETRY_S, AudioOutput
from drummachine.live.offline import choose_song, shipped_performer, starting_commands
from drummachine.live.presets import controller_stack, find, learn_binding
from drummachine.core.song import Song, load_song
from drummachine.core.transport import MonotonicClock

log = logging.getLogger("drummachine")


#: SCHED_FIFO priority of the engine's commit loop: under JACK's (10) and its clients', above
#: everything not real-time. Under 4 CPU hogs on the 2 cores it handed steps out at most 0.41 ms
#: past their deadline, against 3.3-4.0 ms as a normal thread (benchmarks/commit_priority.json)
COMMIT_PRIORITY = 3


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
    #: ms from a note-on to the drum module's sound: notes go out that much early (None: the note map's)
    midi_latency: float | None = None
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
        #: the listening input's state in words (``play --listen``: set by the CLI), or None
        self.band_input: Callable[[], str] | None = None
        self.schedule: list = []  # (scheduled time, message) of what the MIDI out sent, until poll writes it
        self.schedule_file = open(opts.midi_schedule, "a") if opts.midi_schedule else None
        t0 = time.perf_counter()
        self.audio_output = AudioOutput(opts, self.warnings)
        starting = None if sinks else self.audio_output.start()  # the mixer sets itself up while the model loads
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
        self.engine = Engine(self.generator, self.song, clock, self.sinks, lookahead=opts.lookahead,
                             margin=self.hand_out_margin(),
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

    def _outputs(self, starting=None) -> None:
        o = self.opts
        if starting is not None:
            pending, exc = self.audio_output.ready(starting)
            if exc is None:
                self.audio = pending
                self.sinks.append(self.audio)
                self.audio_output.connect_cue(self.audio)
                self.audio_output.say_latency(self.audio)
            else:
                if getattr(exc, "kit", False):
                    pending.close()
                    raise exc
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
                latency_ms, whose = ((notemap.latency_ms, f"{notemap.name}'s latency_ms") if o.midi_latency is None
                                     else (o.midi_latency, "--midi-latency"))
                self.midi = MidiOutSink(api_name(o.midi_api), o.midi_out, MonotonicClock(), notemap,
                                        send_clock=o.clock_out, strict=not self.sinks, on_sent=on_sent,
                                        latency_s=latency_ms / 1000.0)
                if latency_ms:
                    log.info("MIDI out: each note sent %.1f ms before its time, for the module (%s)", latency_ms, whose)
                self.midi.on_ahead = self._midi_ahead_changed
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
    def midi_ahead_s(self) -> float:
        """How long before its time the MIDI out sends a note (``--midi-latency`` and JACK's figure
        for its port; 0 without MIDI out)."""
        return self.midi.ahead_s if self.midi is not None else 0.0

    def hand_out_margin(self) -> float:
        """How far ahead the engine hands its steps out: for the audio output's mixer as it is now
        (its ring, its output latency) and the MIDI out's lead."""
        return hand_out_margin(getattr(self.audio, "ahead_s", 0.0), self.midi_ahead_s)

    def _midi_ahead_changed(self) -> None:
        """JACK's figure for the MIDI out's path changed (a port connected): hand steps out as much sooner."""
        if getattr(self, "engine", None) is not None:  # (the port may be read before the engine is made)
            self.engine.margin = self.hand_out_margin()

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
            watchdog = threading.Thread(target=self.audio_output.watch,
                                        args=(self.audio, self.stop_event, self.engine, self.hand_out_margin),
                                        name="audio-watchdog", daemon=True)
            watchdog.start()
            self.threads.append(watchdog)

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
            last_midi_at=self.last_midi_at, band_input=self._band_input())

    def _band_input(self) -> str:
        if self.band_input is None:
            return ""
        try:
            return self.band_input()
        except Exception:  # a listener closing under the snapshot: its state is not known
            return "?"

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
