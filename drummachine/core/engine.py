"""The live engine: generation ahead of the playhead, commits on time, never silent.

Two loops share one small lock (held only for bookkeeping, never around a model call):
- the generator loop (``pump_generator``) keeps the steps from the playhead up to ``lookahead``
  steps ahead generated, each with the generator's state before it, so a cue can rewind to the
  first step not yet heard and generate from there;
- the commit loop (``pump``) hands each step to the outputs a little before it sounds. A step
  that is not ready by then is played from the cached bar (the same step a bar earlier) and
  counted as a miss: a late generator never means silence.

Both are plain methods: tests call them on a manual clock; ``run_threads`` runs them for real.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from drummachine.core.conductor import COUNT_IN, ENDING, FINAL, GROOVE, SILENT, BarPlan, Conductor
from drummachine.core.conditioning import CYMBALS, Cues
from drummachine.core.sampling import Steering
from drummachine.core.sections import cues_for
from drummachine.core.song import Song
from drummachine.core.transport import STEPS_PER_BAR, Clock, TapTempo, Transport

CRASH, KICK, CLOSED_HAT = 7, 0, 2


@dataclass(frozen=True)
class Event:
    """Something an output does at ``time`` (clock seconds): a note, a MIDI clock pulse, start/stop."""

    time: float
    kind: str = "note"  #: note | clock | start | stop | continue
    voice: int = -1
    velocity: float = 0.0  #: 0..1
    step: int = -1


class Sink:
    """An output. ``send`` gets the events of one step, in time order, a little before they sound."""

    def send(self, events: list[Event]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def panic(self) -> None:
        """All notes off, now."""

    def close(self) -> None:
        pass


class MemorySink(Sink):
    """Records everything (for tests)."""

    def __init__(self):
        self.events: list[Event] = []
        self.panics = 0

    def send(self, events):
        self.events.extend(events)

    def panic(self):
        self.panics += 1

    def notes(self) -> list[Event]:
        return [e for e in self.events if e.kind == "note"]


@dataclass(frozen=True)
class Command:
    """A request to the engine, from the UI, the controller or the network."""

    name: str
    value: object = None


@dataclass
class Stats:
    steps: int = 0
    misses: int = 0
    generated: int = 0
    regenerated: int = 0
    late_commits: int = 0
    gen_seconds: deque = field(default_factory=lambda: deque(maxlen=512))


def count_in_step(step_in_bar: int) -> np.ndarray:
    hvo = np.zeros((3, 9), np.float32)
    if step_in_bar % 4 == 0:
        hvo[0, CLOSED_HAT] = 1.0
        hvo[1, CLOSED_HAT] = 0.95 if step_in_bar == 0 else 0.6
    return hvo


class Engine:
    """Song conductor + generator + transport + outputs."""

    def __init__(self, generator, song: Song, clock: Clock, sinks: list[Sink], *, lookahead: int = 8,
                 margin: float = 0.03, start_delay: float = 0.25, steering: Steering = Steering(),
                 midi_clock: bool = False, max_commands: int = 256):
        self.gen = generator
        self.song = song
        self.clock = clock
        self.sinks = sinks
        self.lookahead = lookahead
        self.margin = margin
        self.start_delay = start_delay
        self.steering = steering
        self.midi_clock = midi_clock
        self.commands: queue.Queue[Command] = queue.Queue(max_commands)
        self.lock = threading.RLock()  # guards the conductor and the step tables; never held in a model call
        self.stats = Stats()
        self.tap = TapTempo()
        self.playing = False
        self.paused = False
        self.resume_step: int | None = None
        self.knobs = {"density": 0.0, "swing": 0.0, "humanize": 1.0, "temperature": steering.temperature}
        self.muted: set[int] = set()
        self.solo: set[int] = set()
        self._reset_song(song)

    # --- state ----------------------------------------------------------------------------
    def _reset_song(self, song: Song) -> None:
        self.song = song
        self.conductor = Conductor(song)
        self.transport = Transport(song.sections[0].bpm)
        self.commit_cursor = 0
        self.gen_cursor = 0
        self.rewind: int | None = None
        self.generated: dict[int, tuple[np.ndarray, object]] = {}
        self.played: dict[int, np.ndarray] = {}
        self.section_states: dict[int, object] = {}
        self.applied_bpm: float | None = None
        self.manual_tempo = False
        #: live cymbal choices: (from step, section index, CYMBALS name), newest last; each lasts
        #: until its section ends (the next section plays its own from the song)
        self.cymbal_changes: tuple[tuple[int, int, str], ...] = ()
        self.gen.reset()

    def snapshot(self) -> dict:
        """An immutable picture of the engine for displays (the UI draws this)."""
        with self.lock:
            c = self.commit_cursor
            bar, step = divmod(max(c - 1, 0), STEPS_PER_BAR)
            grid = np.zeros((STEPS_PER_BAR, 3, 9), np.float32)
            for s in range(STEPS_PER_BAR):
                hvo = self.played.get(bar * STEPS_PER_BAR + s)
                if hvo is None:
                    hvo = self.generated.get(bar * STEPS_PER_BAR + s, (None,))[0]
                if hvo is not None:
                    grid[s] = hvo
            status = self.conductor.status(bar)
            plan = self._plan(bar) if self.playing else None
            cymbal = self._cymbal(plan, bar * STEPS_PER_BAR) if plan is not None and plan.section >= 0 else "auto"
            gen_ms = list(self.stats.gen_seconds)
        return {
            "playing": self.playing, "paused": self.paused, "bar": bar, "step": step,
            "bpm": round(self.transport.bpm_at(max(c - 1, 0)), 2), "feel": self.transport.feel_at(max(c - 1, 0)),
            "grid": grid, "misses": self.stats.misses, "steps": self.stats.steps,
            "knobs": dict(self.knobs), "muted": sorted(self.muted), "solo": sorted(self.solo),
            "open_step": c, "cymbal": cymbal,
            "gen_ms_p99": round(float(np.percentile(gen_ms, 99)) * 1000, 3) if gen_ms else 0.0,
            **status,
        }

    # --- commands -------------------------------------------------------------------------
    def command(self, name: str, value=None) -> bool:
        """Queue a command (thread-safe, never blocks); False if the queue is full."""
        try:
            self.commands.put_nowait(Command(name, value))
            return True
        except queue.Full:
            return False

    def _open_step(self) -> int:
        return self.commit_cursor

    def _rewind_to(self, step: int | None) -> None:
        if step is None:
            return
        with self.lock:
            step = max(step, self.commit_cursor)
            self.rewind = step if self.rewind is None else min(self.rewind, step)

    def _handle(self, cmd: Command, now: float) -> None:
        name, value = cmd.name, cmd.value
        c = self._open_step()
        cond = self.conductor
        if name == "start":
            if not self.playing:
                self._start(now)
        elif name == "toggle":
            if self.playing:
                self._stop()
            else:
                self._start(now)
        elif name == "stop":
            self._stop()
        elif name in ("density", "temperature"):  # model steering: regenerate what is not heard yet
            lo, hi = {"density": (-1.0, 1.0), "temperature": (0.0, 2.0)}[name]
            self.knobs[name] = min(hi, max(lo, float(value)))
            self.steering = Steering(temperature=self.knobs["temperature"], timing_temperature=1.0,
                                     voice_bias=(self.knobs["density"] * 3.0,) * 9)
            self._rewind_to(c)
        elif name in ("swing", "humanize"):  # applied as steps are handed out: immediate
            lo, hi = {"swing": (0.0, 1.0), "humanize": (0.0, 2.0)}[name]
            self.knobs[name] = min(hi, max(lo, float(value)))
        elif name in ("mute", "solo"):
            group = self.muted if name == "mute" else self.solo
            v = int(value)
            group.symmetric_difference_update({v})
        elif not self.playing:
            if name == "song":
                self._reset_song(value)
            elif name == "tempo":
                self.transport = Transport(float(value))
                self.manual_tempo = True
            return
        elif name == "pause":
            self.paused = not self.paused if value is None else bool(value)
            if self.paused:
                self._panic()
            else:
                self.resume_step = -(-c // 4) * 4  # back in on the next beat
        elif name == "next":
            self._rewind_to(cond.next_section(c, value if isinstance(value, int) else None))
        elif name == "next_phrase":
            self._rewind_to(cond.next_section(c, None, at_phrase=True))
        elif name == "fill":
            self._rewind_to(cond.fill(c))
        elif name == "accent":
            self._rewind_to(cond.accent(c))
        elif name == "outro":
            self._rewind_to(cond.outro(c))
        elif name == "intensity":
            self._rewind_to(cond.nudge_intensity(c, float(value)))
        elif name == "intensity_to":  # an absolute knob (a controller's CC): the offset from the song
            self._rewind_to(cond.set_intensity(c, float(value)))
        elif name == "cymbal":  # value: a CYMBALS name, or None for the next of hats -> ride -> auto
            at = -(-c // STEPS_PER_BAR) * STEPS_PER_BAR  # on the next bar line, as a drummer would switch
            plan = self._plan(at // STEPS_PER_BAR)
            if plan.section < 0:
                return
            if value is None:
                order = ("hats", "ride", "auto")
                current = self._cymbal(plan, at)
                value = order[(order.index(current) + 1) % len(order)] if current in order else "hats"
            if value not in CYMBALS:
                return
            self.cymbal_changes = self.cymbal_changes[-15:] + ((at, plan.section, str(value)),)
            self._rewind_to(at)
        elif name == "keep":
            cond.keep(c)
        elif name == "regenerate":
            self._rewind_to(cond.regenerate(c))
        elif name in ("half", "double", "normal"):
            at = -(-c // STEPS_PER_BAR) * STEPS_PER_BAR
            self.transport.set_feel(name, at)
            self._rewind_to(at)
        elif name == "tempo":  # value: bpm or (bpm, "bar" | "now" | bars_of_ramp)
            bpm, when = value if isinstance(value, tuple) else (value, "bar")
            self._set_tempo(float(bpm), when, c)
        elif name == "tempo_nudge":
            self._set_tempo(self.transport.bpm_at(c) + float(value), "now", c)
        elif name == "follow":  # MIDI clock in: (smoothed bpm, time of the next beat on the leader's line)
            bpm, beat_time = value
            beat = -(-c // 4) * 4
            if beat_time is not None:
                ours = self.transport.time_of(beat)
                step_s = 60.0 / (bpm * 4.0)
                while beat_time < ours - 2 * step_s:  # the leader's beat nearest to ours
                    beat_time += 4 * step_s
                while beat_time > ours + 2 * step_s:
                    beat_time -= 4 * step_s
                if abs(beat_time - ours) > 0.001 or abs(self.transport.bpm_at(beat) - bpm) > 0.05:
                    self.transport.relock(beat, max(beat_time, now + 0.002), bpm)
                    self.manual_tempo = True
        elif name == "tap":
            got = self.tap.tap(now)
            if got:
                bpm, first = got
                self._relock(bpm, first, now)

    def _set_tempo(self, bpm: float, when, c: int) -> None:
        bpm = min(300.0, max(40.0, bpm))
        self.manual_tempo = True
        if when == "now":
            self.transport.set_tempo(bpm, c)
        elif isinstance(when, int) and when > 0:
            at = -(-c // STEPS_PER_BAR) * STEPS_PER_BAR
            self.transport.set_tempo(bpm, at, ramp_steps=when * STEPS_PER_BAR)
        else:
            self.transport.set_tempo(bpm, -(-c // STEPS_PER_BAR) * STEPS_PER_BAR)
        self._rewind_to(c)

    def _relock(self, bpm: float, first_tap: float, now: float) -> None:
        """Tap tempo: the new tempo at once, and the next bar line on the band's one (the first tap)."""
        c = self._open_step()
        bar_s = 60.0 / bpm * 4.0 / self.transport.feel_at(c)
        next_bar = -(-c // STEPS_PER_BAR) * STEPS_PER_BAR
        t = first_tap
        earliest = max(now, self.transport.time_of(c)) + 0.05
        while t < earliest:
            t += bar_s
        # steps before the next bar line keep their times; the bar line moves to the tapped one
        if next_bar > c:
            self.transport.set_tempo(bpm, c)
        self.transport.relock(next_bar, t, bpm)
        self.manual_tempo = True
        self._rewind_to(c)

    def _start(self, now: float) -> None:
        manual = self.transport.anchor.bpm if self.manual_tempo else None
        if self.commit_cursor:  # a restart: the song from the top (steps generated ahead are kept)
            self._reset_song(self.song)
        start = now + self.start_delay
        first = self.song.sections[0].bpm
        self.transport = Transport(manual or first, start)
        self.manual_tempo = manual is not None
        self.applied_bpm = first
        self.playing = True
        self.paused = False
        self._send([Event(start, "start")])

    def _stop(self) -> None:
        if self.playing:
            self.playing = False
            self._send([Event(self.clock.now(), "stop")])
            self._panic()
            with self.lock:
                self.generated.clear()

    def _panic(self) -> None:
        for s in self.sinks:
            try:
                s.panic()
            except Exception:  # an output that fails must not stop the others
                pass

    def _send(self, events: list[Event]) -> None:
        for s in self.sinks:
            try:
                s.send(events)
            except Exception:
                pass

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
            with self.lock:
                self._handle(cmd, now)
        if not self.playing:
            return 0
        done = 0
        while self.playing:
            c = self.commit_cursor
            due = self.transport.time_of(c) - self.horizon(c)
            if now < due:
                break
            self._commit(c, now)
            done += 1
        return done

    def _plan(self, bar: int) -> BarPlan:
        return self.conductor.plan(bar)

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
            plan = self._plan(bar)
            if s == 0:
                self.conductor.take_effect(bar)
                self._apply_section_tempo(plan, c)
            item = self.generated.pop(c, None)
            if self.rewind is not None and self.rewind <= c:
                # too late for this step: it plays as generated, the cue comes in from the next one
                self.rewind = c + 1
        if item is None:
            hvo = self._fallback(c, plan)
        else:
            hvo = item[0]
        t0 = self.transport.time_of(c)
        if now > t0:
            self.stats.late_commits += 1
        events: list[Event] = []
        if self.midi_clock:
            per_step = 6.0 / self.transport.feel_at(c)
            k = 0
            while k < per_step - 1e-9:
                events.append(Event(self.transport.time_of(c + k / per_step), "clock", step=c))
                k += 1
        audible = not self.paused and (self.resume_step is None or c >= self.resume_step)
        if audible and self.resume_step is not None and c >= self.resume_step:
            self.resume_step = None
        if audible:
            offsets = self._feel_offsets(hvo, c)
            hits = np.nonzero(hvo[0] > 0.5)[0]
            for v in hits:
                v = int(v)
                if v in self.muted or (self.solo and v not in self.solo):
                    continue
                events.append(Event(self.transport.time_of(c + float(offsets[v])), "note", v, float(hvo[1, v]), c))
        events.sort(key=lambda e: e.time)
        with self.lock:
            self.played[c] = hvo
            self.played.pop(c - 4 * STEPS_PER_BAR, None)
            self.commit_cursor = c + 1
        self.stats.steps += 1
        self._send(events)
        if plan.kind == SILENT or (plan.kind == FINAL and s == STEPS_PER_BAR - 1):
            self.playing = False
            self._send([Event(self.transport.time_of(c + 1), "stop")])

    def _feel_offsets(self, hvo: np.ndarray, c: int) -> np.ndarray:
        """The played offsets: humanize scales the drummer's micro-timing, swing delays the off 16ths
        (up to a third of a step: a triplet feel)."""
        off = hvo[2] * self.knobs["humanize"]
        if self.knobs["swing"] and c % 2 == 1:
            off = off + self.knobs["swing"] / 3.0
        return np.clip(off, -0.5, 0.5)

    def _fallback(self, c: int, plan: BarPlan) -> np.ndarray:
        built = self._fixed_step(c, plan)
        if built is not None:
            return built
        self.stats.misses += 1
        cached = self.played.get(c - STEPS_PER_BAR)
        return cached.copy() if cached is not None else count_in_step(c % STEPS_PER_BAR)

    @staticmethod
    def _fixed_step(c: int, plan: BarPlan) -> np.ndarray | None:
        """Steps that need no model: count-in, the final hit, silence."""
        s = c % STEPS_PER_BAR
        if plan.kind == COUNT_IN:
            return count_in_step(s)
        if plan.kind in (FINAL, SILENT):
            hvo = np.zeros((3, 9), np.float32)
            if plan.kind == FINAL and s == 0:
                hvo[0, [CRASH, KICK]] = 1.0
                hvo[1, [CRASH, KICK]] = 1.0
            return hvo
        return None

    # --- the generator loop ---------------------------------------------------------------
    def pump_generator(self, max_steps: int = 1_000_000) -> int:
        """Generate (or catch up on) steps up to ``lookahead`` ahead of the playhead."""
        import time as _time

        done = 0
        while done < max_steps:
            with self.lock:
                if self.rewind is not None and self.rewind < self.gen_cursor:
                    r = max(self.rewind, self.commit_cursor)
                    item = self.generated.get(r)
                    if item is not None:
                        self.gen.restore(item[1])
                        for k in [k for k in self.generated if k >= r]:
                            del self.generated[k]
                        self.gen_cursor = r
                        self.stats.regenerated += 1
                    self.rewind = None
                elif self.rewind is not None:
                    self.rewind = None
                g, c = self.gen_cursor, self.commit_cursor
                if not self.playing and c == 0 and g >= self.lookahead:
                    return done
                if g >= c + self.lookahead:
                    return done
                plan = self._plan(g // STEPS_PER_BAR)
                played = self.played.get(g) if g < c else None
                bpm = self.transport.bpm_at(g) * self.transport.feel_at(g)
                accent = g in self.conductor.accents
                locked = plan.section in self.conductor.locked
                fresh_from = self.conductor.regenerate_from.get(plan.section)
            s = g % STEPS_PER_BAR
            cont = self._cont(plan, s, bpm)
            style = self._style_index(plan.style)
            phrase = plan.bar_in_section % 4
            t0 = _time.perf_counter()
            if played is not None:  # fell behind: the step was already played from the cache
                self.gen.force(played, style, s, phrase, cont)
                with self.lock:
                    self.gen_cursor = max(self.gen_cursor, g + 1)
                done += 1
                continue
            state_before = self.gen.save()
            if plan.kind == GROOVE and s == 0 and plan.bar_in_section == 0:
                saved = self.section_states.get(plan.section)
                if locked and saved is not None:
                    self.gen.restore(saved)
                elif fresh_from is not None and plan.bar >= fresh_from:
                    self.gen.rng = np.random.default_rng(self.gen.rng.integers(1 << 62))
                    self.section_states[plan.section] = self.gen.save()
                else:
                    self.section_states.setdefault(plan.section, self.gen.save())
            fixed = self._fixed_step(g, plan)
            if fixed is not None:
                self.gen.force(fixed, style, s, phrase, cont)
                hvo = fixed
            else:
                hvo = self.gen.step(style, s, phrase, cont, self.steering)
                changed = False
                if accent or (plan.crash_on_one and s == 0):
                    hvo = hvo.copy()
                    hvo[0, [CRASH, KICK]] = 1.0
                    hvo[1, CRASH] = max(hvo[1, CRASH], 0.9)
                    hvo[1, KICK] = max(hvo[1, KICK], 0.85)
                    hvo[2, [CRASH, KICK]] = 0.0
                    changed = True
                if changed:
                    self.gen.overwrite_last(hvo)
            self.stats.gen_seconds.append(_time.perf_counter() - t0)
            with self.lock:
                if self.rewind is not None and self.rewind <= g:
                    # a cue changed this step while it was generated: do it again
                    if self.rewind == g:
                        self.gen.restore(state_before)
                        self.rewind = None
                    continue
                if g >= self.commit_cursor:
                    self.generated[g] = (hvo, state_before)
                self.gen_cursor = g + 1
                self.stats.generated += 1
            done += 1
        return done

    def _style_index(self, style: str) -> int:
        try:
            return self.gen.cond.styles.index(style)
        except ValueError:
            return 0

    def _cymbal(self, plan: BarPlan, g: int) -> str:
        """The cymbal that keeps time at step g: the last live choice in this section, else the song's."""
        for at, section, name in reversed(self.cymbal_changes):
            if section == plan.section and at <= g:
                return name
        return self.song.sections[plan.section].cymbal if plan.section >= 0 else "auto"

    def _cont(self, plan: BarPlan, step: int, bpm: float) -> np.ndarray:
        cond = self.gen.cond
        if plan.kind != GROOVE and plan.kind != ENDING:
            return cond.cont(max(40.0, min(300.0, bpm)), Cues())
        fill = plan.fill_at(step) or plan.kind == ENDING
        section = self.song.sections[plan.section] if plan.section >= 0 else None
        feel = section.feel if section else None
        cues = cues_for(cond, plan.style if plan.style in cond.styles else "any", plan.intensity, fill,
                        feel.density_shift if feel else 0.0, feel.complexity_shift if feel else 0.0,
                        cymbal=self._cymbal(plan, plan.bar * STEPS_PER_BAR + step),
                        voices=section.voices if section else ())
        return cond.cont(max(40.0, min(300.0, bpm)), cues)

    # --- running for real -----------------------------------------------------------------
    def run_threads(self, stop: threading.Event, sleep=None) -> list[threading.Thread]:
        """Start the commit and generator loops as daemon threads until ``stop`` is set."""
        import time as _time

        sleep = sleep or _time.sleep

        def commit_loop():
            while not stop.is_set():
                self.pump()
                deadline = self.next_deadline()
                wait = 0.005 if deadline is None else min(0.005, max(0.0, deadline - self.clock.now()))
                sleep(wait if wait > 0 else 0.0005)

        def gen_loop():
            while not stop.is_set():
                if not self.pump_generator(max_steps=4):
                    sleep(0.002)

        threads = [threading.Thread(target=commit_loop, name="commit", daemon=True),
                   threading.Thread(target=gen_loop, name="generate", daemon=True)]
        for t in threads:
            t.start()
        return threads
