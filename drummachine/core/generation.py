"""The engine's generator loop (a mixin ``core.engine.Engine`` inherits, as it does the command
handlers): the steps from the playhead up to ``lookahead`` ahead generated, each with the
generator's state before it, so a cue can rewind to the first step not yet heard; the steering
of a fill the foot asked for; what the model is conditioned on at each step.

It shares the engine's state and lock (held for bookkeeping only, never around a model call).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from drummachine.core.attributes import FILL_VOICES
from drummachine.core.conditioning import Cues
from drummachine.core.conductor import ENDING, GROOVE, BarPlan, with_feel
from drummachine.core.sampling import Steering
from drummachine.core.sections import cues_for
from drummachine.core.steps import accented, sounds_fill
from drummachine.core.transport import BPM_RANGE, STEPS_PER_BAR
from drummachine.core.voices import CLOSED_HAT, HITS, KICK, SNARE, TOMS

#: a fill the foot asks for: its first steps push the toms and the snare (hit logits) until one sounds,
#: the second step twice as hard
FILL_ONSET_STEPS = 2
FILL_PUSH = {**{v: 4.0 for v in TOMS}, SNARE: 2.0}
#: a bar the model has left without a hit up to this step gets pushed (hit logits), harder on
#: each step still empty, until one sounds: a drummer asked to play sparse still plays. Knobs at
#: their extremes (a temperature near 0, the density far down, the intensity at 0) left groove
#: bars of the soak empty, and the outro's ending fill empty in up to 37 of 38 tries (a bar of
#: silence before the final hit: benchmarks/empty_bars.py). A groove bar gets the kick and the
#: hats pushed, the ending fill the fill's voices (the snare and toms).
EMPTY_BAR_FROM = 8
EMPTY_BAR_PUSH = {GROOVE: {KICK: 4.0, CLOSED_HAT: 4.0}, ENDING: {v: 4.0 for v in FILL_VOICES}}


class GeneratorLoop:
    """``pump_generator`` and what it needs; the state it works on is the engine's."""

    def pump_generator(self, max_steps: int = 1_000_000) -> int:
        """Generate (or catch up on) steps up to ``lookahead`` ahead of the playhead."""
        done = 0
        while done < max_steps:
            with self.lock:
                if self.rewind is not None and self.rewind < self.gen_cursor:
                    r = max(self.rewind, self.commit_cursor)
                    item = self.generated.get(r)
                    if item is not None:
                        self.gen.restore(item[1])
                        redone = {k: self.generated.pop(k)[0] for k in sorted(self.generated) if k >= r}
                        # cues faster than the generator: a step not redone since the last rewind
                        # keeps its version from before it (else it would have none: a miss)
                        self.superseded = {**{k: v for k, v in self.superseded.items() if k >= r}, **redone}
                        self.gen_cursor = r
                        self.stats.regenerated += 1
                    self.rewind = None
                elif self.rewind is not None:
                    self.rewind = None
                g, c, run = self.gen_cursor, self.commit_cursor, self.song_run
                if not self.playing and c == 0 and g >= self.lookahead:
                    return done
                if g >= c + self.lookahead:
                    return done
            try:
                self._generate(g, c)
            except Exception:
                self._fault("generator", f"step {g}: left to the fallback")
                with self.lock:  # the step plays from the cache; the model goes on from the next
                    if not self._restarted_meanwhile(run):
                        self.gen_cursor = max(self.gen_cursor, g + 1)
            done += 1
        return done

    def _generate(self, g: int, c: int) -> None:
        """Generate step ``g`` (or, if the playhead passed it, let the model hear what played)."""
        with self.lock:
            run = self.song_run
            plan = self.conductor.plan(g // STEPS_PER_BAR)
            played = self.played.get(g) if g < c else None
            bpm = self.transport.bpm_at(g) * self.transport.feel_at(g)
            accent = g in self.conductor.accents
            locked = plan.section in self.conductor.locked
            fresh_from = self.conductor.regenerate_from.get(plan.section)
            cont = self._cont(plan, g % STEPS_PER_BAR, bpm)
        s = g % STEPS_PER_BAR
        style = self._style_index(plan.style)
        phrase = plan.bar_in_section % 4
        t0 = time.perf_counter()
        if played is not None:  # fell behind: the step was already played from the cache
            self.gen.force(played, style, s, phrase, cont)
            with self.lock:
                if not self._restarted_meanwhile(run):
                    self.gen_cursor = max(self.gen_cursor, g + 1)
            return
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
            hvo = self.gen.step(style, s, phrase, cont, self._steering_at(plan, g))
            if accent or (plan.crash_on_one and s == 0):
                hvo = accented(hvo)
                self.gen.overwrite_last(hvo)
        self.stats.gen_seconds.append(time.perf_counter() - t0)
        with self.lock:
            if self._restarted_meanwhile(run):
                return
            if self.rewind is not None and self.rewind <= g:
                # a cue changed this step while it was generated: do it again
                if self.rewind == g:
                    self.gen.restore(state_before)
                    self.rewind = None
                return
            if g >= self.commit_cursor:
                self.generated[g] = (hvo, state_before)
            self.gen_cursor = g + 1
            self.stats.generated += 1

    def _restarted_meanwhile(self, run: int) -> bool:
        """(Lock held.) The song restarted while the generator made a step of the run before: the
        step is dropped, and the model, which went on from the old run's context meanwhile, starts
        again from the top (nothing of the new run is generated yet: this thread is the generator)."""
        if run == self.song_run:
            return False
        self.gen.reset()
        self.section_states.clear()
        return True

    def _steering_at(self, plan: BarPlan, g: int) -> Steering:
        """The sampling steering of step ``g``: the knobs', and at the first steps of a fill the
        foot asked for, a push on the toms and the snare until a note that belongs to the fill has
        sounded (``sounds_fill``: a backbeat snare is the groove's), harder on each step without
        one, so the fill is heard at once rather than when the model gets round to it. The snare
        is pushed only where the bar before had none: elsewhere it would not be heard as the fill."""
        s = g % STEPS_PER_BAR

        def heard(k):
            hvo = self.played.get(k)
            return hvo if hvo is not None else self.generated.get(k, (None,))[0]

        empty_push = EMPTY_BAR_PUSH.get(plan.kind)
        if empty_push is not None and s >= EMPTY_BAR_FROM:
            with self.lock:
                bar = [heard(k) for k in range(g - s, g)]
            if all(hvo is not None and not (hvo[HITS] > 0.5).any() for hvo in bar):
                harder = 1 + s - EMPTY_BAR_FROM
                return self._pushed({v: harder * p for v, p in empty_push.items()})
        if plan.fill_from is None or plan.bar not in self.conductor.fill_requests or \
                not plan.fill_from <= s < plan.fill_from + FILL_ONSET_STEPS:
            return self.steering
        with self.lock:
            for k in range(g - (s - plan.fill_from), g):
                hvo = heard(k)
                if hvo is not None and sounds_fill(hvo, heard(k - STEPS_PER_BAR)):
                    return self.steering
            before = heard(g - STEPS_PER_BAR)
        snare_counts = before is None or before[HITS, SNARE] < 0.5
        harder = 1 + s - plan.fill_from
        return self._pushed({v: harder * p for v, p in FILL_PUSH.items() if v != SNARE or snare_counts})

    def _pushed(self, push: dict[int, float]) -> Steering:
        """The knobs' steering with ``push`` added to those voices' hit logits."""
        return replace(self.steering, voice_bias=tuple(b + push.get(v, 0.0)
                                                       for v, b in enumerate(self.steering.voice_bias)))

    def _style_index(self, style: str) -> int:
        try:
            return self.gen.cond.styles.index(style)
        except ValueError:
            return 0

    def _cont(self, plan: BarPlan, step: int, bpm: float) -> np.ndarray:
        cond = self.gen.cond
        bpm = max(BPM_RANGE[0], min(BPM_RANGE[1], bpm))
        if plan.kind != GROOVE and plan.kind != ENDING:
            return cond.cont(bpm, Cues())
        g = plan.bar * STEPS_PER_BAR + step
        fill = plan.fill_at(step) or plan.kind == ENDING
        section = self.song.sections[plan.section] if plan.section >= 0 else None
        feel = section.feel if section else None
        cues = cues_for(cond, plan.style if plan.style in cond.styles else "any", plan.intensity, fill,
                        feel.density_shift if feel else 0.0, feel.complexity_shift if feel else 0.0,
                        cymbal=self.conductor.cymbal(plan, g), voices=section.voices if section else ())
        if plan.feel is not None:
            cues = with_feel(cues, plan.feel, asked_fill=fill and plan.bar in self.conductor.fill_requests)
        return cond.cont(bpm, self.conductor.voices_at(g, cues))
