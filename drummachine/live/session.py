"""A playing session: model, song, engine, outputs and controller wired together (``drummachine play``).

Every part that can fail at the edges fails soft once playing: a missing controller is reported
and watched for; no audio device means MIDI alone (or a clear exit if no output is left).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from drummachine.core.controller import CLOCK, CONTINUE, SPP, START, STOP, ClockFollower, ControlMap
from drummachine.core.engine import Engine
from drummachine.core.errors import DrumMachineError
from drummachine.live.presets import folders
from drummachine.core.song import Song, SongLibrary, jam, load_song
from drummachine.core.transport import MonotonicClock

log = logging.getLogger("drummachine")


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
    rate: int = 48000
    kit: str | None = None
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


class Session:
    def __init__(self, opts: Options):
        import sys

        # the audio callback runs in a process of its own (audio_process); what is left here —
        # the commit loop handing out steps, MIDI out — still wants the GIL soon after it asks
        sys.setswitchinterval(0.0005)
        _limit_malloc_arenas()
        self.opts = opts
        self.sinks = []
        self.inputs = []
        self.audio = None
        self.midi = None
        self.stop_event = threading.Event()
        self.threads = []
        self.pending_song: Song | None = None
        self.follower = ClockFollower() if opts.clock == "midi" else None
        self.control = ControlMap()
        self.preset_control = None
        self.song_index = 0
        self.learning: str | None = None
        self.learned: str = ""
        self.last_midi: list[int] = []
        self.last_midi_at = 0.0
        self.warnings: list[str] = []
        t0 = time.perf_counter()
        starting = self._start_audio()  # the mixer process sets itself up while the model loads
        try:
            self.generator = self._generator()
            from drummachine.live.presets import load_styles

            self.styles = load_styles(None)
            self.warnings += self.styles.problems
            self.library = SongLibrary(folders("songs"))
            self.song = self._song(opts.song)
            self._outputs(starting)
        except BaseException:
            if starting is not None:
                starting.close()
            raise
        _trim_heap()
        clock = self.audio.clock if self.audio else MonotonicClock()
        self.clock = clock
        if self.midi is not None:
            self.midi.clock = clock
        self.engine = Engine(self.generator, self.song, clock, self.sinks, lookahead=opts.lookahead,
                             midi_clock=opts.clock_out and opts.clock != "midi")
        if opts.bpm:
            self.engine.command("tempo", float(opts.bpm))
        for knob, value in self.styles.get(self.song.sections[0].style).items():
            if knob in ("density", "swing", "humanize", "temperature"):
                self.engine.command(knob, value)
        self.engine.pump()
        self._load_controller()
        self._inputs()
        _quiet_gc()
        self.setup_seconds = time.perf_counter() - t0

    # --- parts ----------------------------------------------------------------------------
    def _generator(self):
        if self.opts.fake_model:
            from drummachine.core.fake_generator import FakeGenerator

            return FakeGenerator(self.opts.seed)
        from drummachine.model.generator import Generator

        return Generator(self.opts.model, seed=self.opts.seed, threads=1)

    def _song(self, name: str | None) -> Song:
        styles = self.generator.cond.styles
        if name:
            return load_song(self.library.find(name), styles)
        if self.opts.style not in styles:
            raise DrumMachineError("--style", f"unknown style {self.opts.style!r}; allowed: {', '.join(styles)}")
        knobs = self.styles.get(self.opts.style)
        bpm = self.opts.bpm or knobs.get("bpm") or self.generator.cond.style_bpm.get(self.opts.style, [0, 110, 0])[1]
        intensity = self.opts.intensity if self.opts.intensity is not None else knobs.get("intensity", 0.5)
        return jam(self.opts.style, round(float(bpm)), intensity)

    def _start_audio(self):
        """The audio process, starting (None without audio): see audio_process."""
        o = self.opts
        if not o.audio:
            return None
        from drummachine.audio.process import AudioProcessSink

        return AudioProcessSink(o.kit, o.rate, o.audio_device, o.blocksize, hostapi=o.audio_api)

    def _outputs(self, starting=None) -> None:
        o = self.opts
        if starting is not None:
            try:
                self.audio = starting.wait_ready()
                self.sinks.append(self.audio)
            except DrumMachineError as exc:
                if getattr(exc, "kit", False):
                    raise
                self.warnings.append(f"{exc}: going on with MIDI alone")
                log.warning("%s: going on with MIDI alone", exc)
        if o.midi_out or o.midi_virtual or not self.sinks:
            from drummachine.core.notemap import GM_NOTEMAP, load_notemap
            from drummachine.midi.ports import MidiOutSink, api_name

            notemap = load_notemap(o.notemap) if o.notemap else GM_NOTEMAP
            try:
                self.midi = MidiOutSink(api_name(o.midi_api), o.midi_out, MonotonicClock(), notemap,
                                        send_clock=o.clock_out, strict=not self.sinks)
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
        from drummachine.midi.ports import MidiInput, api_name

        inp = MidiInput(api_name(o.midi_api), o.midi_in, self.on_midi, self.clock)
        if not inp.connected:
            self.warnings.append(f"{inp.message}; playing on, watching for it")
            log.warning("%s; playing on, watching for it", inp.message)
        self.inputs.append(inp)

    # --- control --------------------------------------------------------------------------
    def _load_controller(self) -> None:
        """The controller preset (if any) with the user's learned mappings on top."""
        from drummachine.core.controller import ControllerPreset, PresetControl, controller_from_toml
        from drummachine.live.presets import load_controller, user_dir

        preset = load_controller(self.opts.controller) if self.opts.controller else \
            ControllerPreset("default", None, {}, [])
        learned = user_dir() / "controllers" / "learned.toml"
        if learned.is_file():
            try:
                extra = controller_from_toml(learned.read_text(encoding="utf-8"), learned)
                keys = {(m.kind, m.number) for m in extra.mappings}
                preset.mappings = list(extra.mappings) + [m for m in preset.mappings if (m.kind, m.number) not in keys]
            except DrumMachineError as exc:
                self.warnings.append(f"{exc}: learned mappings ignored")
        self.preset_control = PresetControl(preset, lambda: self.engine.playing) \
            if (preset.mappings or preset.switches) else None

    def learn(self, message: list[int]) -> bool:
        """MIDI learn: bind the control that sent ``message`` to the action being learned; saved."""
        from drummachine.live.presets import user_dir

        kind = message[0] & 0xF0
        if kind == 0xB0:
            control = ("cc", message[1])
        elif kind == 0x90 and message[2] > 0:
            control = ("note", message[1])
        else:
            return False
        path = user_dir() / "controllers" / "learned.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = []
        if path.is_file():
            from drummachine.core.controller import controller_from_toml

            try:
                entries = [(m.kind, m.number, m.action) for m in
                           controller_from_toml(path.read_text(encoding="utf-8"), path).mappings]
            except DrumMachineError:
                entries = []
        entries = [e for e in entries if (e[0], e[1]) != control] + [(control[0], control[1], self.learning)]
        text = "# Learned in the stage UI (MIDI learn). Edit freely; the schema is that of presets/controllers.\n"
        text += "".join(f'\n[[map]]\n{k} = {n}\naction = "{a}"\n' for k, n, a in entries)
        path.write_text(text, encoding="utf-8")
        self.learned = f"{control[0]} {control[1]} -> {self.learning}"
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
        commands = self.preset_control.handle(message, t) if self.preset_control else []
        if not commands:
            commands = self.control.handle(message)
        for name, value in commands:
            self.command(name, value)

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
        log.info("cue %s %s", name, "" if value is None else value)
        if name == "learn":
            self.learning = value or None
            self.learned = ""
            return
        if name == "program":
            self.select_song(int(value))
            return
        if name in ("next_song", "previous_song"):
            self.select_song(self.song_index + (1 if name == "next_song" else -1))
            return
        self.engine.command(name, value)

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
        self.threads = self.engine.run_threads(self.stop_event)
        if self.audio is not None:
            watchdog = threading.Thread(target=self._watch_audio, name="audio-watchdog", daemon=True)
            watchdog.start()
            self.threads.append(watchdog)

    def _watch_audio(self) -> None:
        """The audio process died (killed, crashed): start another; the groove goes on meanwhile
        on MIDI and the wall clock, and the sound comes back within about a second."""
        while not self.stop_event.wait(0.25):
            try:
                if self.audio.restart_if_gone():
                    log.warning("audio process stopped; restarted (%d so far)", self.audio.restarts)
            except DrumMachineError as exc:
                log.warning("audio process stopped and cannot restart: %s; trying again", exc)
                self.stop_event.wait(2.0)

    def poll(self) -> None:
        """Housekeeping from the main thread: a song waiting for the current one to end; foot-switch
        gestures that resolve with time (hold, single vs double press)."""
        if self.preset_control is not None:
            for name, value in self.preset_control.tick(self.clock.now()):
                self.command(name, value)
        if self.pending_song is not None and not self.engine.playing:
            self.engine.command("song", self.pending_song)
            self.pending_song = None

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

    def status(self) -> dict:
        s = self.engine.snapshot()
        s["cpu"] = self.cpu_percent()
        s["underruns"] = self.audio.underruns if self.audio else 0
        s["audio_restarts"] = self.audio.restarts if self.audio else 0
        s["midi_out"] = None if self.midi is None else ("connected" if self.midi.connected else "disconnected")
        s["midi_in"] = [("connected" if i.connected else "waiting") for i in self.inputs]
        s["learning"], s["learned"], s["last_midi"] = self.learning, self.learned, self.last_midi
        s["last_midi_at"] = self.last_midi_at
        return s

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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives every thread its own malloc arena; a handful of threads need only a couple."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-8, n)  # M_ARENA_MAX


def _quiet_gc() -> None:
    """Fewer, shorter garbage collections: a collection holds the GIL, and the audio callback needs
    it within a buffer. Everything built so far is frozen out of the collector's view."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _trim_heap() -> None:
    import gc

    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def status_line(s: dict) -> str:
    q = s.get("queued")
    queued = f" | next: {q['target'] or q['what']} at bar {q['at_bar'] + 1}" if q else ""
    bars = f"{s['bar_in_section'] + 1}/{s['section_bars'] or '-'}"
    state = "paused" if s["paused"] else ("playing" if s["playing"] else "stopped")
    return (f"{state} bar {s['bar'] + 1} | {s['section']} {bars} | {s['style']} {s['bpm']:g} bpm | intensity "
            f"{s['intensity']:.2f}{' | fill' if s['fill'] else ''}{queued} | misses {s['misses']} underruns "
            f"{s['underruns']}")
