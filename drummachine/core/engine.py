"""The live engine: generation ahead of the playhead, commits on time, never silent.

Two loops share one small lock (held only for bookkeeping, never around a model call):
- the generator loop (``pump_generator``) keeps the steps from the playhead up to ``lookahead``
  steps ahead generated, each with the generator's state before it, so a cue can rewind to the
  first step not yet heard and generate from there;
- the commit loop (``pump``) takes the queued commands, then hands each step to the outputs a
  little before it sounds. A step that is not ready by then is played from the cached bar (the
  same step a bar earlier) and counted as a miss: a late generator never means silence.

Neither loop can die: an exception in a command's handler drops that command, one in a commit
plays the fallback step, one in a generator step leaves the step to the fallback; each is logged
with its traceback, counted per loop (``Stats.faults``) and shown on the health line.

Both are plain methods: tests call them on a manual clock; ``run_threads`` runs them for real.
What each command does is in core.command_handlers, the generator loop in core.generation (the
engine inherits both).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from drummachine.core import commands
from drummachine.core.command_handlers import CLICK_LEVEL, CommandHandlers
from drummachine.core.commands import Command
from drummachine.core.conductor import COUNT_IN, FINAL, GROOVE, SILENT, BarPlan, Conductor, announces_change
from drummachine.core.errors import DrumMachineError
from drummachine.core.events import CLOCK, START, STOP, Event, Sink
from drummachine.core.follow import FollowConfig, Follower
from drummachine.core.generation import GeneratorLoop
from drummachine.core.sampling import Steering
from drummachine.core.snapshot import QueuedCue, Snapshot, empty_grid
from drummachine.core.song import Song
from drummachine.core.steps import count_in_step, final_step, empty_step, step_events
from drummachine.core.transport import STEPS_PER_BAR, Clock, TapTempo, Transport

log = logging.getLogger("drummachine")
MISSES_LOGGED = 50  #: generator misses logged one by one (then only counted)
#: the longest the threads' start waits for the generator's warm-up (~40 ms here): past it the
#: start goes on, and the first steps come when the warm-up is done
WARM_UP_WAIT_S = 2.0
LOGGED_FAULTS = 20  #: tracebacks logged per loop; later ones are only counted (a stuck fault must not flood the log)
#: an event for the cue bus alone (audio.process plays its section-cue sound): never sent to other outputs
CUE = "cue"


@dataclass
class Click:
    """The click on the cue bus: the song's setting (or the command line's), changed live by the
    click and click_level commands. The count-in clicks even when it is off."""

    on: bool = True
    level: float = CLICK_LEVEL


@dataclass
class Stats:
    steps: int = 0
    misses: int = 0
    generated: int = 0
    regenerated: int = 0
    late_commits: int = 0
    late_cues: int = 0  #: steps that played as generated before a cue because the new one was not ready
    refused: int = 0
    gen_seconds: deque = field(default_factory=lambda: deque(maxlen=512))
    faults: dict = field(default_factory=dict)  #: loop -> exceptions caught


#: how long before its earliest hit a step is handed out (beyond half a step of offsets): enough
#: for the mixer's ring at 128 frames with 19 ms to spare for a late commit
HAND_OUT_MARGIN_S = 0.03
RING_AT_128_FRAMES_S = 4 * 128 / 48000  #: what the mixer's ring keeps at 128 frames (audio.ring_out)


def hand_out_margin(audio_ahead_s: float, midi_ahead_s: float = 0.0) -> float:
    """The margin for an audio output that needs hits ``audio_ahead_s`` ahead of its clock: the same
    room to spare as at 128 frames (a JACK server at 1,024 frames needs 45 ms: 64 ms, with the
    kit's output latency on top); and for a
    MIDI out that sends notes ``midi_ahead_s`` before their time (``--midi-latency``), the usual
    margin on top of that."""
    return max(HAND_OUT_MARGIN_S + midi_ahead_s, audio_ahead_s + HAND_OUT_MARGIN_S - RING_AT_128_FRAMES_S)


class Engine(GeneratorLoop, CommandHandlers):
    """Song conductor + generator + transport + outputs."""

    def __init__(self, generator, song: Song, clock: Clock, sinks: list[Sink], *, lookahead: int = 8,
                 margin: float = HAND_OUT_MARGIN_S, start_delay: float = 0.25, steering: Steering = Steering(),
                 midi_clock: bool = False, max_commands: int = 256, performer=None, cue_bus: bool = False,
                 click: bool = True):
        """``midi_clock``: clock pulses to every output (MIDI clock out). ``cue_bus``: the outputs with
        a cue bus (``sink.cue``) get clock pulses (their click) and a section cue a bar before each
        change; the others never see either unless ``midi_clock``. ``click``: the click's default
        (a song's ``click`` wins)."""
        self.gen = generator
        self.performer = performer
        self.song = song
        self.clock = clock
        self.sinks = sinks
        self.lookahead = lookahead
        self.margin = margin
        self.start_delay = start_delay
        self.steering = steering
        self.midi_clock = midi_clock
        self.cue_bus = cue_bus
        self.click_default = click
        self.click = Click(click)
        self.counting_in = False  #: the count-in is playing: the cue bus clicks whatever the click is
        self.levels = {"main": 1.0, "cue": 1.0}  #: the audio out's bus levels (main_level, cue_level)
        self.commands: queue.Queue[Command] = queue.Queue(max_commands)
        self.lock = threading.RLock()  # guards the conductor and the step tables; never held in a model call
        self.stats = Stats()
        self.tap = TapTempo()
        self.playing = False
        self.paused = False
        self.resume_step: int | None = None
        self.knobs = {"intensity": 0.0, "density": 0.0, "swing": 0.0, "humanize": 1.0,
                      "temperature": steering.temperature}
        self.muted: set[int] = set()
        self.solo: set[int] = set()
        self.handlers = self.command_handlers()
        # following the band (core.follow): readings come as "band" commands from the listener
        self.follower = Follower(FollowConfig(), song.sections[0].bpm)
        self.wait_for_band = False  #: start when the band is heard (play --wait-for-band)
        self.told_waiting = False  #: the log said why it goes on waiting
        self.followed_beat = -1  #: the beat line the follower last moved
        #: where the musician last tapped the band's beat while following it (tap's count, engine-clock
        #: time): handed to the listening process (``Listener.hint_beat``) by the link that reads it
        self.band_beat_tapped: tuple[int, float] | None = None
        self.band_intensity = 0.0  #: the dynamics' intensity offset, added to the knob's
        self._reset_song(song)
        self._song_click(song)

    # --- state ----------------------------------------------------------------------------
    def _reset_song(self, song: Song) -> None:
        self.song = song
        self.conductor = Conductor(song, performer=self.performer)
        self.transport = Transport(song.sections[0].bpm)
        self.commit_cursor = 0
        self.gen_cursor = 0
        self.rewind: int | None = None
        self.generated: dict[int, tuple[np.ndarray, object]] = {}
        #: steps a cue took back, kept until their new versions are ready: a step whose new version
        #: is late plays as it was (the cue comes in from the next step) rather than a bar-old copy
        self.superseded: dict[int, np.ndarray] = {}
        self.played: dict[int, np.ndarray] = {}
        self.section_states: dict[int, object] = {}
        self.applied_bpm: float | None = None
        self.manual_tempo = False
        self.cued_bar = -1  #: the last bar whose change the cue bus announced
        #: counts the songs (re)started: a step the generator was making for the one before is dropped
        self.song_run = getattr(self, "song_run", 0) + 1
        self.gen.reset()

    def snapshot(self) -> Snapshot:
        """An immutable picture of the engine for displays (the UI draws this)."""
        with self.lock:
            c = self.commit_cursor
            bar, step = divmod(max(c - 1, 0), STEPS_PER_BAR)
            grid = empty_grid()
            for s in range(STEPS_PER_BAR):
                hvo = self.played.get(bar * STEPS_PER_BAR + s)
                if hvo is None:
                    hvo = self.generated.get(bar * STEPS_PER_BAR + s, (None,))[0]
                if hvo is not None:
                    grid[s] = hvo
            cond = self.conductor
            plan = cond.plan(bar)
            section = self.song.sections[plan.section] if plan.section >= 0 else None
            q = cond.queued
            queued = None if q is None else QueuedCue(
                q.what, q.at_bar, self.song.sections[q.target].name if q.target is not None else None)
            cymbal = cond.cymbal(plan, bar * STEPS_PER_BAR) if self.playing and plan.section >= 0 else "auto"
            gen_s = list(self.stats.gen_seconds)
            return Snapshot(
                playing=self.playing, paused=self.paused, bar=bar, step=step,
                bpm=round(self.transport.bpm_at(max(c - 1, 0)), 2), feel=self.transport.feel_at(max(c - 1, 0)),
                open_step=c, song=self.song.name, sections=tuple(s.name for s in self.song.sections),
                kind=plan.kind, section=section.name if section else "count-in", section_index=plan.section,
                bar_in_section=plan.bar_in_section, section_bars=section.bars if section else 0,
                style=plan.style, section_bpm=plan.bpm, intensity=round(plan.intensity, 2),
                fill=plan.fill_from is not None, queued=queued, locked=plan.section in cond.locked, cymbal=cymbal,
                grid=grid, knobs=dict(self.knobs), muted=tuple(sorted(self.muted)), solo=tuple(sorted(self.solo)),
                steps=self.stats.steps, misses=self.stats.misses, late_cues=self.stats.late_cues,
                gen_ms_p99=round(float(np.percentile(gen_s, 99)) * 1000, 3) if gen_s else 0.0,
                faults=dict(self.stats.faults), refused=self.stats.refused,
                cue_bus=self.cue_bus, click=self.click.on, click_level=self.click.level,
                main_level=self.levels["main"], cue_level=self.levels["cue"],
                **self.follower.status(self.clock.now()).snapshot_fields())

    # --- commands -------------------------------------------------------------------------
    def command(self, name: str, value=None) -> bool:
        """Check and queue a command (thread-safe, never blocks). A bad name or value is refused
        here, logged and counted, never inside the loops; False also when the queue is full."""
        try:
            cmd = commands.parse(name, value)
        except DrumMachineError as exc:
            self.stats.refused += 1
            log.warning("refused: %s", exc)
            return False
        if cmd.spec.target != commands.ENGINE:
            self.stats.refused += 1
            log.warning("refused: command %s is the session's, not the engine's", name)
            return False
        try:
            self.commands.put_nowait(cmd)
            return True
        except queue.Full:
            return False

    def _rewind_to(self, step: int | None) -> None:
        if step is None:
            return
        with self.lock:
            step = max(step, self.commit_cursor)
            self.rewind = step if self.rewind is None else min(self.rewind, step)

    def caught(self, loop: str, what: str) -> None:
        """An exception a loop outside the engine caught and lived through (the audio watchdog):
        counted and shown with the engine's own."""
        self._fault(loop, what)

    def _fault(self, loop: str, what: str) -> None:
        """An exception caught in a loop that goes on: logged with its traceback, and counted."""
        n = self.stats.faults.get(loop, 0) + 1
        self.stats.faults[loop] = n
        if n <= LOGGED_FAULTS:
            log.exception("%s loop: %s (caught, playing on; %d so far)", loop, what, n)

    def _panic(self) -> None:
        for s in self.sinks:
            try:
                s.panic()
            except Exception:  # an output that fails must not stop the others
                self._fault("output", f"{type(s).__name__}.panic")

    def _send(self, events: list[Event]) -> None:
        plain = None
        for s in self.sinks:
            out = events
            if self.cue_bus and not getattr(s, "cue", False):  # what the cue bus alone gets stays off MIDI
                if plain is None:
                    plain = [e for e in events if e.kind != CUE and (self.midi_clock or e.kind != CLOCK)]
                out = plain
            try:
                s.send(out)
            except Exception:
                self._fault("output", f"{type(s).__name__}.send")

    # --- the commit loop ------------------------------------------------------------------
    def horizon(self, step: int) -> float:
        """How long before its grid time a step is committed: half a step (offsets) plus a margin."""
        return 0.5 * self.transport.step_seconds(step) + self.margin

    def next_deadline(self) -> float | None:
        if not self.playing:
            return None
        c = self.commit_cursor
        return self.transport.time_of(c) - self.horizon(c)

    def pump(self) -> int:
        """Handle commands and commit every step that is due; returns how many were committed."""
        now = self.clock.now()
        while True:
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                break
            try:
                with self.lock:
                    self._handle(cmd, now)
            except Exception:
                self._fault("commands", f"command {cmd.name} {cmd.value!r} dropped")
        done = 0
        while self.playing:
            c = self.commit_cursor
            if now < self.transport.time_of(c) - self.horizon(c):
                break
            try:
                self._commit(c, now)
            except Exception:
                self._fault("commit", f"step {c}: the fallback plays")
                self._commit_fallback(c)
            done += 1
        return done

    def _apply_section_tempo(self, plan: BarPlan, step: int) -> None:
        """A section whose written tempo differs from the section before changes the tempo; otherwise
        a tempo set by hand (tap, pedal) stays."""
        if plan.kind == GROOVE and plan.bar_in_section == 0 and plan.bpm != self.applied_bpm:
            self.transport.set_tempo(plan.bpm, step)
            self.applied_bpm = plan.bpm
            self.manual_tempo = False

    def _commit(self, c: int, now: float) -> None:
        bar, s = divmod(c, STEPS_PER_BAR)
        with self.lock:
            plan = self.conductor.plan(bar)
            if s == 0:
                self.conductor.take_effect(bar)
                self._apply_section_tempo(plan, c)
            item = self.generated.pop(c, None)
            if self.rewind is not None and self.rewind <= c:
                # too late for this step: it plays as generated, the cue comes in from the next one
                self.rewind = c + 1
            before_cue = self.superseded.pop(c, None)
            for k in [k for k in self.superseded if k < c]:
                del self.superseded[k]
        if item is None and before_cue is not None and self._fixed_step(c, plan) is None:
            hvo = before_cue  # (a step the plan makes silent, final or a count-in is built from the plan)
            self.stats.late_cues += 1
        else:
            hvo = self._fallback(c, plan) if item is None else item[0]
        if now > self.transport.time_of(c):
            self.stats.late_commits += 1
        audible = not self.paused and (self.resume_step is None or c >= self.resume_step)
        if audible and self.resume_step is not None:
            self.resume_step = None
        events = step_events(hvo, c, self.transport, swing=self.knobs["swing"], humanize=self.knobs["humanize"],
                             audible=audible, muted=self.muted, solo=self.solo,
                             midi_clock=self.midi_clock or self.cue_bus)
        if self.cue_bus:
            self._cue_bus_step(c, plan, events)
        self._hand_out(c, hvo, events)
        if plan.kind == SILENT or (plan.kind == FINAL and s == STEPS_PER_BAR - 1):
            self.playing = False
            self._send([Event(self.transport.time_of(c + 1), STOP)])

    def _hand_out(self, c: int, hvo: np.ndarray, events: list[Event]) -> None:
        with self.lock:
            self.played[c] = hvo
            self.played.pop(c - 4 * STEPS_PER_BAR, None)
            self.commit_cursor = c + 1
        self.stats.steps += 1
        # every run starts at step 0 (a start again is from the top): its MIDI Start goes out in
        # the first step's batch, before its first clock and at its time (see CommandHandlers._start)
        self._send([Event(self.transport.time_of(c), START), *events] if c == 0 else events)

    def _cue_bus_step(self, c: int, plan: BarPlan, events: list[Event]) -> None:
        """The cue bus's part of step ``c``: the count-in clicks even with the click off; a section
        cue one bar before a change (``announces_change``), at the bar line; a change cued live after
        that bar line (next, outro) is announced at once, from this step."""
        if (plan.kind == COUNT_IN) != self.counting_in:
            self.counting_in = plan.kind == COUNT_IN
            self._click_to_sinks()
        after = c // STEPS_PER_BAR + 1
        if after <= self.cued_bar:
            return
        with self.lock:
            change = announces_change(plan, self.conductor.plan(after))
        if change:
            self.cued_bar = after
            events.append(Event(self.transport.time_of(c), CUE, velocity=1.0))
            events.sort(key=lambda e: e.time)

    def _commit_fallback(self, c: int) -> None:
        """After a fault in a commit: the step a bar earlier, on the grid, so the groove goes on."""
        try:
            hvo = self._cached(c)
            self._hand_out(c, hvo, step_events(hvo, c, self.transport))
        except Exception:
            self._fault("commit", f"step {c}: fallback failed too, skipped")
            with self.lock:
                self.commit_cursor = max(self.commit_cursor, c + 1)

    def _fallback(self, c: int, plan: BarPlan) -> np.ndarray:
        built = self._fixed_step(c, plan)
        if built is not None:
            return built
        self.stats.misses += 1
        if self.stats.misses <= MISSES_LOGGED:  # when and how far behind: to tell a stall from a slow model
            log.warning("generator miss: step %d (bar %d) plays from the bar before, %.0f ms before it sounds; "
                        "the generator was at step %d", c, c // STEPS_PER_BAR,
                        1000 * (self.transport.time_of(c) - self.clock.now()), self.gen_cursor)
        return self._cached(c)

    def _cached(self, c: int) -> np.ndarray:
        cached = self.played.get(c - STEPS_PER_BAR)
        return cached.copy() if cached is not None else count_in_step(c % STEPS_PER_BAR)

    @staticmethod
    def _fixed_step(c: int, plan: BarPlan) -> np.ndarray | None:
        """Steps that need no model: count-in, the final hit, silence."""
        s = c % STEPS_PER_BAR
        if plan.kind == COUNT_IN:
            return count_in_step(s)
        if plan.kind == FINAL:
            return final_step(s)
        if plan.kind == SILENT:
            return empty_step()
        return None

    # --- running for real -----------------------------------------------------------------
    def run_threads(self, stop: threading.Event, sleep=None, commit_priority: int = 0,
                    generator_priority: int = 0) -> list[threading.Thread]:
        """Start the commit and generator loops as daemon threads until ``stop`` is set. A loop
        body that raises is counted and the loop goes on (see the module's doc).
        ``commit_priority``, ``generator_priority``: SCHED_FIFO for each loop where the system
        allows (0: as started)."""
        sleep = sleep or time.sleep

        def commit_loop():
            if commit_priority:
                real_time_thread("commit", commit_priority)
            while not stop.is_set():
                try:
                    self.pump()
                    deadline = self.next_deadline()
                    wait = 0.005 if deadline is None else min(0.005, max(0.0, deadline - self.clock.now()))
                except Exception:
                    self._fault("commit", "loop")
                    wait = 0.001
                sleep(wait if wait > 0 else 0.0005)

        warmed = threading.Event()

        def gen_loop():
            if generator_priority:
                real_time_thread("generator", generator_priority)
            try:
                self._warm_up()
            finally:
                warmed.set()
            while not stop.is_set():
                try:
                    busy = self.pump_generator(max_steps=4)
                except Exception:
                    self._fault("generator", "loop")
                    busy = 0
                if not busy:
                    sleep(0.002)

        threads = [threading.Thread(target=commit_loop, name="commit", daemon=True),
                   threading.Thread(target=gen_loop, name="generate", daemon=True)]
        for t in threads:
            t.start()
        warmed.wait(WARM_UP_WAIT_S)
        return threads

    def _warm_up(self) -> None:
        """The generator's memory taken before the first step (see Generator.warm_up), in the
        generator's thread, whose heap it is; only before it has generated anything."""
        warm_up = getattr(self.gen, "warm_up", None)
        if warm_up is None or self.stats.generated or self.gen_cursor:
            return
        try:
            warm_up(keep=self.lookahead + 1)
        except Exception:
            self._fault("generator", "warm-up")


def real_time_thread(name: str, priority: int) -> bool:
    """SCHED_FIFO at ``priority`` for the calling thread: the commit loop's work is a few hundred
    microseconds a step and it sleeps between, so it can never hold a core, and a process busy on
    the same cores (a UI starting, a build) can no longer keep it from handing out a step on time.
    One line in the log where the system does not allow it."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (AttributeError, PermissionError, OSError) as exc:
        log.info("%s loop: no real-time priority (%s); it runs as the process does", name, exc)
        return False
