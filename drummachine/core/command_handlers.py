"""What each engine command does: one handler per engine command of ``commands.COMMANDS``, its
value already checked at the boundary. The engine (core.engine) inherits them; they work on its
conductor and transport, and ask it to regenerate from the first step a cue changes.

Each cue lands where ``commands.COMMANDS`` says it takes effect: now, from the first step not yet
handed out, on the next beat or bar line, or at the phrase end.
"""

from __future__ import annotations

import logging

from drummachine.core import commands
from drummachine.core.commands import Command
from drummachine.core.conditioning import OFF
from drummachine.core.events import STOP, Event
from drummachine.core.follow import MODES as FOLLOW_MODES
from drummachine.core.sampling import Steering
from drummachine.core.transport import BPM_RANGE, STEPS_PER_BAR, Transport, next_bar, next_beat
from drummachine.core.voices import CLOSED_HAT, KICK, N_VOICES, OPEN_HAT

log = logging.getLogger("drummachine")
#: the "drop" cue: a bar of kick and hats alone
DROP_VOICES = {v: OFF for v in range(N_VOICES) if v not in (KICK, CLOSED_HAT, OPEN_HAT)}
CYMBAL_CYCLE = ("hats", "ride", "auto")
#: --wait-for-band: sure readings (50 ms apart) after the lock before coming in: about a bar
BAND_COUNT_IN_READINGS = 30
#: a tempo change (relative) from which the steps already made ahead are made again
REGENERATE_TEMPO_CHANGE = 0.05
#: following the band, a beat's correction is decided on the first reading once no more than this
#: many steps are left to commit before it (up to two steps and the commit horizon ahead of the
#: beat). Decided as soon as the beat before was committed (4: more than a beat ahead), on a reading
#: that much older, the machine trailed a drifting band: the replay's steady p95 45 -> 35 ms, the
#: accelerando 67 -> 56 (docs/follow.md, "When the follower decides")
FOLLOW_DECIDES_STEPS_BEFORE = 1
CLICK_LEVEL = 0.5  #: the click's level on the cue bus when the song sets none (as audio.process's)


class CommandHandlers:
    """The engine's commands (a mixin of core.engine.Engine: the state is the engine's)."""

    def command_handlers(self) -> dict:
        """name -> handler(value, now), for every engine command of the table."""
        return {name: getattr(self, f"_on_{name}") for name, spec in commands.COMMANDS.items()
                if spec.target == commands.ENGINE}

    def _handle(self, cmd: Command, now: float) -> None:
        if cmd.spec.needs_playing and not self.playing:
            return
        self.handlers[cmd.name](cmd.value, now)

    # one handler per engine command of commands.COMMANDS: value already checked
    def _on_start(self, value, now):
        if not self.playing:
            self._start(now)

    def _on_toggle(self, value, now):
        if self.playing:
            self._stop()
        else:
            self._start(now)

    def _on_stop(self, value, now):
        self._stop()

    def _on_start_fill(self, value, now):
        if self.playing:
            self._on_fill(value, now)
        else:
            self._start(now)

    def _steer(self, name, value, now):  # model steering: regenerate what is not heard yet
        self.knobs[name] = value
        self.steering = Steering(temperature=self.knobs["temperature"], timing_temperature=1.0,
                                 voice_bias=(self.knobs["density"] * 3.0,) * N_VOICES)
        self._rewind_to(self.commit_cursor)

    def _on_density(self, value, now):
        self._steer("density", value, now)

    def _on_temperature(self, value, now):
        self._steer("temperature", value, now)

    def _on_swing(self, value, now):  # applied as steps are handed out: immediate
        self.knobs["swing"] = value

    def _on_humanize(self, value, now):
        self.knobs["humanize"] = value

    def _on_mute(self, voice, now):
        self.muted.symmetric_difference_update({voice})

    def _on_solo(self, voice, now):
        self.solo.symmetric_difference_update({voice})

    def _on_song(self, song, now):
        if self.playing:
            log.warning("song %s: not while playing (the session starts it when this one has ended)", song.name)
            return
        self._reset_song(song)
        self._song_click(song)

    def _on_tempo(self, bpm, now):
        if not self.playing:
            self.transport = Transport(bpm)
            self.manual_tempo = True
            return
        self._set_tempo(bpm, self.commit_cursor)

    def _on_pause(self, value, now):
        was = self.paused
        self.paused = not self.paused if value is None else value
        if self.paused:
            self._panic()
        elif was:  # (an unpause while playing is nothing to do)
            self.resume_step = next_beat(self.commit_cursor)  # back in on the next beat

    def _on_next(self, number, now):
        c = self.commit_cursor
        target = None if number is None else min(number, len(self.song.sections)) - 1
        self._rewind_to(self.conductor.next_section(c, target))

    def _on_next_phrase(self, value, now):
        self._rewind_to(self.conductor.next_section(self.commit_cursor, None, at_phrase=True))

    def _on_fill(self, value, now):
        self._rewind_to(self.conductor.fill(self.commit_cursor))

    def _on_accent(self, value, now):
        self._rewind_to(self.conductor.accent(self.commit_cursor))

    def _on_outro(self, value, now):
        self._rewind_to(self.conductor.outro(self.commit_cursor))

    def _on_drop(self, value, now):
        at = next_bar(self.commit_cursor)
        self._rewind_to(self.conductor.override_voices(at, at + STEPS_PER_BAR, DROP_VOICES))

    def _on_intensity(self, offset, now):  # the knob: an offset from the song's intensity
        self.knobs["intensity"] = offset
        both = max(-1.0, min(1.0, offset + self.band_intensity))  # plus the band's dynamics (follow all)
        self._rewind_to(self.conductor.set_intensity(self.commit_cursor, both))

    def _on_intensity_up(self, delta, now):
        self._on_intensity(min(1.0, self.knobs["intensity"] + delta), now)  # the knob, not the band's part

    def _on_intensity_down(self, delta, now):
        self._on_intensity(max(-1.0, self.knobs["intensity"] - delta), now)

    def _on_cymbal(self, name, now):  # None: the next of hats -> ride -> auto
        at = next_bar(self.commit_cursor)  # on the next bar line, as a drummer would switch
        plan = self.conductor.plan(at // STEPS_PER_BAR)
        if plan.section < 0:
            return
        if name is None:
            current = self.conductor.cymbal(plan, at)
            name = CYMBAL_CYCLE[(CYMBAL_CYCLE.index(current) + 1) % len(CYMBAL_CYCLE)] \
                if current in CYMBAL_CYCLE else "hats"
        self._rewind_to(self.conductor.set_cymbal(at, plan.section, name))

    # the audio out's levels and the click: set on the outputs that have them (the mixer process's
    # sink: audio.process), from this loop, the one that sends them events (the ring has one writer)
    def _on_main_level(self, level, now):
        self._bus_level("main", level)

    def _on_cue_level(self, level, now):
        self._bus_level("cue", level)

    def _on_click_level(self, level, now):
        self.click.level = level
        self._click_to_sinks()

    def _on_click(self, on, now):  # None: a toggle (a foot switch)
        self.click.on = not self.click.on if on is None else on
        self._click_to_sinks()

    def _bus_level(self, bus: str, level: float) -> None:
        self.levels[bus] = level
        for s in self.sinks:
            set_level = getattr(s, "set_level", None)  # an output with buses (MIDI has none)
            if set_level is not None:
                set_level(bus, level)

    def _song_click(self, song) -> None:
        """The click as the song sets it (``click``, ``click_level``), else the defaults."""
        self.click.on = self.click_default if song.click is None else song.click
        self.click.level = CLICK_LEVEL if song.click_level is None else song.click_level
        self._click_to_sinks()

    def _click_to_sinks(self) -> None:
        for s in self.sinks:
            if getattr(s, "cue", False):  # an output with a cue bus: its click follows the engine's clock pulses
                s.click = self.click.on or self.counting_in
                s.click_level = self.click.level

    def _on_keep(self, value, now):
        self.conductor.keep(self.commit_cursor)

    def _on_regenerate(self, value, now):
        self._rewind_to(self.conductor.regenerate(self.commit_cursor))

    def _on_feel(self, feel, now):
        at = next_bar(self.commit_cursor)
        self.transport.set_feel(feel, at)
        self._rewind_to(at)

    def _on_half_time(self, value, now):  # a toggle, whichever control or key sent it
        self._on_feel("normal" if self._feel_ahead() == 0.5 else "half", now)

    def _on_double_time(self, value, now):
        self._on_feel("normal" if self._feel_ahead() == 2.0 else "double", now)

    def _feel_ahead(self) -> float:
        """The feel from the next bar line on, counting a change already asked for."""
        return self.transport.feel_at(next_bar(self.commit_cursor))

    def _on_tempo_up(self, delta, now):
        self._set_tempo(self.transport.bpm_at(self.commit_cursor) + delta, self.commit_cursor, at_once=True)

    def _on_tempo_down(self, delta, now):
        self._set_tempo(self.transport.bpm_at(self.commit_cursor) - delta, self.commit_cursor, at_once=True)

    def _on_follow(self, value, now):  # MIDI clock in: (smoothed bpm, time of the next beat on the leader's line)
        bpm, beat_time = value
        if self.transport.follow(next_beat(self.commit_cursor), beat_time, bpm, now):
            self.manual_tempo = True

    def _on_follow_band(self, mode, now):  # None: the next mode (a foot switch cycles them)
        follow = self.follower
        if mode is None:
            mode = FOLLOW_MODES[(FOLLOW_MODES.index(follow.mode) + 1) % len(FOLLOW_MODES)]
        follow.set_mode(mode)
        if mode != "all" and self.band_intensity:
            self.band_intensity = 0.0
            self._rewind_to(self.conductor.set_intensity(self.commit_cursor, self.knobs["intensity"]))

    def _on_band(self, reading, now):
        """A reading of the band (core.follow): once per beat of ours, the follower's correction
        moves our next beat line (tempo from there, and phase); at bar lines, the dynamics."""
        follow = self.follower
        follow.hear(reading)
        if not self.playing:
            if self.wait_for_band and follow.mode != "off" and follow.following(now) and \
                    follow.sure >= follow.config.lock_readings + BAND_COUNT_IN_READINGS:
                start = follow.band_one_after(now + self.start_delay)  # come in on the band's "one"
                if start is not None:
                    self._start(now)
                    self.transport.relock(0, start, follow.clamped(reading.bpm))
                    self.wait_for_band = False  # once: a stop later is the musician's
                    log.info("came in with the band on its one (counted from where it came in)")
                elif not self.told_waiting and follow.entry.came_in_at() is None:
                    self.told_waiting = True
                    log.info("waiting for the band to come in: a beat is heard but nothing rose out of the quiet "
                             "(a band already playing, or the room): start by hand to come in now")
            return
        beat = next_beat(self.commit_cursor)
        if beat == self.followed_beat or beat - self.commit_cursor > FOLLOW_DECIDES_STEPS_BEFORE:
            return
        self.followed_beat = beat
        ours, bpm = self.transport.time_of(beat), self.transport.bpm_at(beat)
        follow.set_song_tempo(self.conductor.plan(beat // STEPS_PER_BAR).bpm or bpm)
        corr = follow.on_beat(ours, bpm, now, bar_line=beat % STEPS_PER_BAR == 0)
        if corr is None:
            return
        at = ours if corr.beat_time is None else corr.beat_time
        if at != ours or corr.bpm != bpm:
            self.transport.relock(beat, max(at, now + 0.002), corr.bpm)
        if corr.intensity is not None and corr.intensity != self.band_intensity:
            self.band_intensity = corr.intensity
            offset = max(-1.0, min(1.0, self.knobs["intensity"] + corr.intensity))
            self._rewind_to(self.conductor.set_intensity(self.commit_cursor, offset))

    def _on_tap(self, value, now):
        got = self.tap.tap(now)
        if not got:
            return
        if self.follower.mode in ("beat", "all") and self.follower.reading is not None:
            # following the band's beat: the taps say where it is (the machine had followed the
            # "and", or a triplet's). The listening process is told (its tracker moves there) and
            # the follower joins the band's beat from its readings then, at the band's tempo: the
            # taps' own tempo, a bar or two on, was up to half a beat off a real band's
            count = self.band_beat_tapped[0] + 1 if self.band_beat_tapped else 1
            self.band_beat_tapped = (count, self.tap.taps[-1])
            self.follower.tapped(now)
            log.info("the band's beat is where the foot tapped: following from there")
            return
        bpm, first = got
        c = self.commit_cursor
        self.transport.relock_to_tap(c, bpm, first, max(now, self.transport.time_of(c)) + 0.05)
        self.manual_tempo = True
        self._rewind_to(c)

    def _set_tempo(self, bpm: float, c: int, at_once: bool = False) -> None:
        bpm = min(BPM_RANGE[1], max(BPM_RANGE[0], bpm))
        self.manual_tempo = True
        at = c if at_once else next_bar(c)
        before = self.transport.bpm_at(at)
        self.transport.set_tempo(bpm, at)
        # the steps already made move with the transport at once and keep their notes; the model
        # hears the new tempo from the next step it makes. Only a change that makes another way of
        # playing has them made again (a storm of 1-3 bpm nudges, each rewinding to the playhead,
        # kept the generator from ever getting ahead)
        if abs(bpm / before - 1.0) >= REGENERATE_TEMPO_CHANGE:
            self._rewind_to(at)

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
        self.resume_step = None  # an unpause's step belongs to the run before: this one plays at once
        # no MIDI Start here: it goes out with step 0 (Engine._hand_out). Sent on its own, a MIDI
        # out puts each batch on its clock by its own reading of the engine's, and on a busy host
        # the first clock (the "one") could land a few frames before the Start: a slaved device
        # ignores a clock before Start and counts every beat of the song one clock late

    def _stop(self) -> None:
        if self.playing:
            self.playing = False
            self._send([Event(self.clock.now(), STOP)])
            self._panic()
            if self.commit_cursor:  # the next start is from the top (_start resets the song);
                with self.lock:  # stopped before the first step, what is generated is the top
                    self.generated.clear()
                    self.superseded.clear()
