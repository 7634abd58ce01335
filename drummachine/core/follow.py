"""Following the band: what the engine does with what the listening process hears.

The drummer leads the feel, the band leads the tempo. Given the band's reading (tempo, next
beat, confidence, loudness, onset density: ``BandReading``, on the engine's clock) and where the
engine's own next beat falls, ``Follower.on_beat`` says once per beat how to move the transport:

- modes (``MODES``): ``off``; ``tempo`` (the band's tempo, the machine's own phase); ``beat``
  (tempo and beat phase); ``all`` (tempo, phase and dynamics);
- the tempo stays within a window around the song's (±10% by default) and moves by at most
  ~2% per bar (a quarter of that per beat), unless the band really jumped: a steady difference
  larger than ``jump`` for ``jump_beats`` beats is taken at once;
- the phase is corrected a few milliseconds per beat at most (``max_phase_step``): no audible jump;
  twice that where the band is moving away and the machine is already well off its beat
  (``drift_phase_step``: a ritardando, which the band's tempo from its last beats shows late);
  except on coming in: at the first beat after a lock (from cold, or back after holding) a phase
  error over 20 ms is taken at once (``snap_on_lock``), as a drummer joins a band on its beat;
- holding: when the confidence drops (a break, a stop, a fill, a lost input) or the readings stop
  coming, the tempo goes back to what it was ``rollback_beats`` beats before the readings first
  wavered (a break's first beats pull the tracker's tempo) and stays there, the phase runs on, and
  the machine plays on; it re-locks when the confidence has been back for ``relock_readings``
  readings (optionally only near the grid it held: ``relock_window``);
- the band's tempo is the spacing of its last 8 beats, or (``grid``) a filter over its beats with
  a trend (``BandGrid``), which follows a ramp without the spacing's lag;
- dynamics (mode ``all``): the band's loudness over the last bar against its long-term level,
  and its onset density likewise, give an intensity offset within ``±intensity_range``, bar by
  bar; the engine adds it to the knob's offset (the pedal and the knob still move it).

Pure logic: numbers in, a ``Correction`` out; the engine applies it (core.command_handlers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drummachine.core.band_entry import BandEntry
from drummachine.core.band_grid import BandGrid

MODES = ("off", "tempo", "beat", "all")
BEATS_FOR_TEMPO = 8  #: the band's tempo is the spacing of its last this many beats
READING_SECONDS = 0.05  #: the listening process's readings come this often
#: after the musician tapped the band's beat the readings heard this long still come from the
#: tracker's grid before it heard of the taps (the link's turn, the tracker's next estimate and the
#: reading's turn: 50 ms each): the machine waits for the readings after them to join the band's beat
TAP_SETTLE_SECONDS = 0.5
# states shown on stage
OFF, LISTENING, FOLLOWING, HOLDING = "off", "listening", "following", "holding"


@dataclass(frozen=True)
class FollowConfig:
    """How the machine follows. Defaults in code; ``--follow-range`` and the song may override."""

    mode: str = "off"
    window: float = 0.10  #: the band's tempo is followed within ±this (relative) of the song's
    max_tempo_per_bar: float = 0.02  #: the largest relative tempo change in one bar (no jump)
    jump: float = 0.025  #: a difference this large (relative) held for ``jump_beats`` beats is a jump
    jump_beats: int = 3
    max_phase_step: float = 0.005  #: seconds of phase correction per beat at most
    snap_on_lock: bool = True  #: on a (re)lock, a phase error above ``snap_above`` is taken in one go
    snap_above: float = 0.02  #: (coming in with the band, or back after a break: as a drummer would)
    #: back from a moment's doubt (held fewer than ``doubt_beats`` of our beats), once settled
    #: (``settled_beats`` followed since the first lock) and with no sign the band moved (its
    #: tempo jumped in the last ``jump_memory`` beats, the tracker's tempo is over ``doubt_tempo_gap``
    #: off ours, or the phase error grew by over that share of a beat a beat: ``_drifting``), a phase
    #: error is taken at up to this many seconds a beat, not in one go: it is mostly the tracker's
    #: beat misread through a fill, and a jump onto it is heard (0: in one go, as on a lock)
    doubt_phase_step: float = 0.010
    doubt_beats: int = 4
    settled_beats: int = 8
    jump_memory: int = 8
    doubt_tempo_gap: float = 0.015
    doubt_most: float = 0.25  #: ... and the error at most this share of a beat (more: near the off-beat)
    #: the band moving away (``_drifting``: a slowing or hurrying band, whose tempo the spacing of
    #: its last beats shows beats late) with the machine already over ``drift_above`` off its beat:
    #: the phase is taken at up to this many seconds a beat rather than ``max_phase_step``, as a
    #: drummer hurries to catch the band. At 5 ms a beat the error grew 4-5 ms a beat through a
    #: 10% ritardando even heard perfectly (from the click itself: 153 ms behind at its end); 0: off
    drift_phase_step: float = 0.010
    drift_above: float = 0.050
    phase_gain: float = 0.5  #: the share of the phase error corrected per beat (up to the step)
    #: the share of the difference to the band's tempo (its beats' spacing) taken per beat (up to
    #: the per-bar limit): 1 follows the spacing as it comes, smaller smooths its beat-to-beat noise
    tempo_pull: float = 1.0
    #: modes beat and all: the period moves by this share of the phase error each beat (a
    #: second-order loop: a phase error the band keeps showing is a tempo difference; 0: off)
    period_gain: float = 0.0
    lock_confidence: float = 0.5  #: readings at least this sure count towards a lock
    hold_confidence: float = 0.3  #: below this the machine holds
    #: sure readings in a row to lock from cold (50 ms apart: 0.2 s). 8 and 4 before: with the
    #: tracker starting from the song's tempo and half sure, 4 and 2 locked in 7 beats instead of
    #: 21 (train) and 14 (validation), docs/follow.md
    lock_readings: int = 4
    relock_readings: int = 2  #: ... to re-lock after holding
    stale_seconds: float = 0.5  #: no reading for this long (the input is gone): hold
    #: the band's grid (``BandGrid``): a filter over its beats with a tempo trend, so a ramp is
    #: followed without the lag of the last 8 beats' spacing (0: that spacing, as before)
    grid: bool = False
    grid_measurement: float = 0.015  #: seconds: how far a tracker's beat is off the band's grid (1 sigma)
    grid_period_noise: float = 0.001  #: seconds a beat the band's period may wander by (1 sigma)
    grid_trend_noise: float = 0.0002  #: seconds a beat² its period's trend may change by (1 sigma)
    #: the band's beat near ours is its next beat extrapolated by its own period (and trend), not ours
    band_extrapolation: bool = False
    #: ... from the grid's own last beat (filtered, final) rather than the latest reading's next
    #: beat (a prediction up to a beat ahead, which on a ramp is off by the tracker's period lag)
    grid_anchor: bool = False
    #: on holding, the tempo goes back to what it was this many beats before the confidence first
    #: fell (a break's first beats pull the tracker's tempo), and stays there (0: as it is)
    rollback_beats: int = 2
    #: back from holding, a reading counts towards the re-lock only if the band's beat is within
    #: this many seconds of the grid the machine held (the band comes back where it left; a
    #: tracker's first folds after a break can be anywhere): the re-lock is near the held grid
    #: (0: anywhere)
    relock_window: float = 0.0
    #: ... unless the band's beat has been sure away from it for this many readings in a row (2 s:
    #: the held grid was the wrong one, or the band came back elsewhere)
    relock_patience: int = 40
    intensity_range: float = 0.4  #: dynamics move the intensity within ±this
    db_per_range: float = 8.0  #: this many dB louder than the band's usual level = +range
    reference_bars: float = 16.0  #: the band's usual level: an average over about this many bars


@dataclass(frozen=True)
class BandReading:
    """One reading of the listening process, on the engine's clock."""

    time: float  #: when the audio it describes was heard (input latency taken off)
    bpm: float  #: 0 until heard
    next_beat: float  #: the band's next beat (0 until heard)
    confidence: float
    loudness_db: float
    onsets_per_second: float
    seq: int = 0  #: the listening process's reading number


@dataclass(frozen=True)
class Correction:
    """What to do at the engine's next beat: play it at ``beat_time`` (None: where it is) with
    tempo ``bpm`` from there; ``intensity``: the dynamics' offset (None: unchanged)."""

    bpm: float
    beat_time: float | None = None
    intensity: float | None = None


@dataclass(frozen=True)
class FollowStatus:
    """For the stage display."""

    mode: str = "off"
    state: str = OFF
    band_bpm: float = 0.0
    phase_ms: float = 0.0  #: the band's beat minus ours, last beat
    confidence: float = 0.0
    intensity: float = 0.0  #: the dynamics' offset
    #: the input's level (400 ms, dBFS; None: nothing read yet): where to set ``--listen-gate``
    level_db: float | None = None

    def snapshot_fields(self) -> dict:
        """As core.snapshot.Snapshot's fields."""
        return {"follow_mode": self.mode, "follow_state": self.state, "band_bpm": self.band_bpm,
                "band_phase_ms": self.phase_ms, "band_confidence": self.confidence,
                "band_intensity": self.intensity, "band_level_db": self.level_db}


def clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def wrapped_error(band_beat: float, our_beat: float, period: float) -> float:
    """The band's beat nearest to ours, minus ours (within half a beat)."""
    e = band_beat - our_beat
    return e - period * math.floor(e / period + 0.5)


class Follower:
    """The policy: readings in (``hear``), a correction per beat out (``on_beat``)."""

    def __init__(self, config: FollowConfig = FollowConfig(), song_bpm: float = 120.0):
        self.config = config
        self.mode = config.mode
        self.song_bpm = float(song_bpm)
        self.reading: BandReading | None = None
        self.sure = 0  # sure readings in a row
        self.locked = False
        self.ever_locked = False
        self.beyond = 0  # beats in a row the band was a jump away
        self.phase_error = 0.0
        self.intensity = 0.0
        self.bar_loudness: list[float] = []
        self.bar_density: list[float] = []
        self.reference_db: float | None = None
        self.reference_density: float | None = None
        self.band_beats: list[float] = []  # the band's last beats, engine clock
        self.grid = BandGrid(config.grid_measurement, config.grid_period_noise, config.grid_trend_noise)
        self.snap = False  # just (re)locked: the next beat may jump onto the band's
        self.held_beats = 0  # our beats in a row not following (the doubt or break being left)
        self.followed_beats = 0  # our beats followed since the first lock
        self.since_jump = 10**6  # our beats since the band last jumped
        self.catching_up = False  # back from a doubt: the phase taken a bounded step a beat
        self.errors: list[float] = []  # the phase error at our last beats followed
        self.settle_until = -math.inf  # tapped: the readings until then come from the tracker's grid before
        self.join_after_tap = False  # tapped: the next beat followed joins the band's beat in one go
        self.moved = 0.0  # our phase moves so far
        #: our tempo at our last beats, and whether the band was sure all along each (for the hold)
        self.played: list[tuple[float, bool]] = []
        self.sure_since_beat = True  # every reading since our last beat was sure
        self.held_bpm: float | None = None  # holding: the tempo rolled back to
        self.our_grid: tuple[float, float] | None = None  # our last beat handed out, and its bpm
        self.off_grid = 0  # sure readings in a row away from the held grid
        self.entry = BandEntry()  # where the band came in: its "one"

    # --- input ------------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        self.mode = mode
        if mode != "all":
            self.intensity = 0.0

    def set_song_tempo(self, bpm: float) -> None:
        self.song_bpm = float(bpm)

    def tapped(self, now: float) -> None:
        """The musician tapped the band's beat; the listening process is told (``Listener.hint_beat``)
        and its tracker moves there. The band's beats heard so far are forgotten (their spacing
        would read the move as a tempo change, their errors as a drift); for TAP_SETTLE_SECONDS the
        readings still come from the tracker's grid before it heard of the taps and the machine is
        left as it is; at its first beat followed after that it joins the band's beat in one go,
        as on a lock (the taps were the musician's word that it is off the band's beat)."""
        self.band_beats.clear()
        self.grid.reset()
        self.errors.clear()
        self.catching_up = False
        self.snap = False
        self.settle_until = now + TAP_SETTLE_SECONDS
        self.join_after_tap = True

    def hear(self, reading: BandReading) -> None:
        """A new reading from the listening process."""
        if self.reading is not None and reading.seq and reading.seq == self.reading.seq:
            return
        self.reading = reading
        self.entry.hear(reading.time, reading.loudness_db)
        c = self.config
        sure = reading.confidence >= c.lock_confidence and reading.bpm > 0 and self.in_window(reading.bpm)
        if sure and c.relock_window and self.ever_locked and not self.locked and self.our_grid and reading.next_beat > 0:
            ours, bpm = self.our_grid
            near = abs(wrapped_error(reading.next_beat, ours, 60.0 / bpm)) <= c.relock_window
            self.off_grid = 0 if near else self.off_grid + 1
            sure = near or self.off_grid >= c.relock_patience
        self.sure = self.sure + 1 if sure else 0
        # "sure" for the rollback is stricter: the confidence falls gradually into a break
        self.sure_since_beat &= reading.confidence >= max(c.lock_confidence, 0.8) and reading.bpm > 0
        if self.locked and (reading.confidence < c.hold_confidence or not self.in_window(reading.bpm)):
            self.locked = False
        needed = c.relock_readings if self.ever_locked else c.lock_readings
        if not self.locked and self.sure >= needed:
            self.locked = self.ever_locked = True
            self.snap = c.snap_on_lock
        if self.locked:  # the band's level while it plays (holding: a break is not a quiet verse)
            self.bar_loudness.append(reading.loudness_db)
            self.bar_density.append(reading.onsets_per_second)
        self._band_beat(reading, sure)

    def _band_beat(self, reading: BandReading, sure: bool) -> None:
        """Keep the band's last beats (each the last prediction before it came): their spacing on
        the engine's clock is the band's tempo in the engine's time, whatever rate the clocks on
        the way run at."""
        beats = self.band_beats
        if reading.time < self.settle_until:  # heard before the tracker took the taps' grid
            return
        if not sure or reading.next_beat <= 0:
            beats.clear()
            self.grid.reset()
            return
        period = 60.0 / reading.bpm
        if beats and reading.next_beat - beats[-1] < 0.5 * period:
            beats[-1] = reading.next_beat
        else:
            if beats and reading.next_beat - beats[-1] > 1.5 * period:
                beats.clear()  # a beat went by unheard: start again
                self.grid.reset()
            if beats:  # the last one is final now
                self.grid.observe(beats[-1], period)
            beats.append(reading.next_beat)
            del beats[:-BEATS_FOR_TEMPO - 1]

    def band_bpm(self, at: float | None = None) -> float:
        """The band's tempo: from its grid (at time ``at``: the trend carried on), or its last beats'
        spacing, once there are enough beats; else the reading's."""
        r = self.reading
        g = self.grid
        if self.config.grid and g.x is not None and g.beats >= 4:
            ahead = 0.0 if at is None else max(0.0, (at - g.x[0]) / g.x[1])
            period = g.period_after(ahead)
            return 60.0 / period if period > 0 else (r.bpm if r else 0.0)
        beats = self.band_beats[:-1]  # the newest is still a prediction
        if len(beats) < 4:
            return r.bpm if r else 0.0
        n = len(beats)
        mean_i = (n - 1) / 2
        mean_t = sum(beats) / n
        slope = sum((i - mean_i) * (t - mean_t) for i, t in enumerate(beats)) / sum((i - mean_i) ** 2 for i in range(n))
        return 60.0 / slope if slope > 0 else (r.bpm if r else 0.0)

    def in_window(self, bpm: float) -> bool:
        w = self.config.window + 0.01  # the tracker's estimate may overshoot the edge a little
        return self.song_bpm * (1 - w) <= bpm <= self.song_bpm * (1 + w)

    def following(self, now: float) -> bool:
        """Locked, and the readings still coming."""
        r = self.reading
        return self.locked and r is not None and now - r.time <= self.config.stale_seconds

    def state(self, now: float) -> str:
        if self.mode == "off":
            return OFF
        if self.following(now):
            return FOLLOWING
        return HOLDING if self.ever_locked else LISTENING

    def status(self, now: float) -> FollowStatus:
        r = self.reading
        return FollowStatus(self.mode, self.state(now), round(r.bpm, 2) if r else 0.0,
                            round(self.phase_error * 1000, 1), round(r.confidence, 2) if r else 0.0,
                            round(self.intensity, 2), round(r.loudness_db, 1) if r else None)

    # --- output -----------------------------------------------------------------------------

    def clamped(self, bpm: float) -> float:
        """``bpm`` brought into the window around the song's tempo."""
        w = self.config.window
        return clamp(bpm, self.song_bpm * (1 - w), self.song_bpm * (1 + w))

    def band_beat_after(self, t: float) -> float | None:
        """The band's first beat at or after ``t`` (None when not locked)."""
        r = self.reading
        if r is None or r.bpm <= 0 or r.next_beat <= 0:
            return None
        period = 60.0 / r.bpm
        return r.next_beat + period * math.ceil((t - r.next_beat) / period)

    def band_one_after(self, t: float) -> float | None:
        """The band's first "one" at or after ``t`` (``BandEntry.one_after``); None: not locked, or
        not known."""
        beat = self.band_beat_after(t)
        return None if beat is None else self.entry.one_after(beat, 60.0 / self.reading.bpm, self.reading.time)

    def on_beat(self, our_beat: float, our_bpm: float, now: float, bar_line: bool = False) -> Correction | None:
        """Called once per beat of the engine, before ``our_beat`` (its time) is handed out.
        ``bar_line``: that beat starts a bar (the dynamics move there). None: leave it."""
        if self.mode == "off":
            return None
        intensity = self._dynamics(4 * 60.0 / our_bpm / READING_SECONDS) if bar_line and self.mode == "all" else None
        c = self.config
        self.our_grid = (our_beat, our_bpm)
        self.played.append((our_bpm, self.sure_since_beat))
        del self.played[:-16]
        self.sure_since_beat = True
        self.since_jump += 1
        if not self.following(now):
            self.beyond = 0
            self.held_beats += 1
            self.catching_up = False
            if self.ever_locked and c.rollback_beats and self.held_bpm is None:
                # holding starts: back to the tempo before the confidence first fell, and stay there
                self.held_bpm = self._tempo_before_doubt(our_bpm)
                if self.held_bpm != our_bpm:
                    return Correction(self.held_bpm, None, intensity)
            return None if intensity is None else Correction(our_bpm, None, intensity)
        self.held_bpm = None
        if now < self.settle_until:  # tapped: the readings come from the tracker's grid before the taps
            return None if intensity is None else Correction(our_bpm, None, intensity)
        joining, self.join_after_tap = self.join_after_tap, False
        if joining:
            self.snap = True
        doubt = self.followed_beats > 0 and self.held_beats < c.doubt_beats  # a re-lock, not the first lock
        self.held_beats = 0
        self.followed_beats += 1
        r = self.reading
        lo, hi = self.song_bpm * (1 - c.window), self.song_bpm * (1 + c.window)
        target = clamp(self.band_bpm(our_beat), lo, hi)
        diff = target / our_bpm - 1.0
        # a jump shows at once in the tracker's tempo (the beats' spacing takes a few beats)
        now_diff = clamp(r.bpm, lo, hi) / our_bpm - 1.0
        self.beyond = self.beyond + 1 if abs(now_diff) > c.jump else 0
        if self.beyond >= c.jump_beats:  # the band really jumped: take its tempo at once
            bpm = clamp(r.bpm, lo, hi)
            self.beyond = 0
            self.since_jump = 0
            del self.band_beats[:-1]  # the spacing before the jump says nothing now
        elif self.beyond:  # a jump, or a moment's wrong reading: wait and see before moving
            bpm = our_bpm
        else:
            step = c.max_tempo_per_bar / 4.0  # per beat
            change = c.tempo_pull * diff
            if c.period_gain and self.mode in ("beat", "all"):
                # the band's beat later than ours (error > 0): we are fast, the period grows
                change -= c.period_gain * self._phase_error(r, our_beat, our_bpm) * our_bpm / 60.0
            bpm = our_bpm * (1.0 + clamp(change, -step, step))
        beat_time = None
        if self.mode in ("beat", "all"):
            self.phase_error = self._phase_error(r, our_beat, our_bpm)
            step = c.max_phase_step
            if c.drift_phase_step and abs(self.phase_error) > c.drift_above and self._drifting(60.0 / our_bpm):
                step = max(step, c.drift_phase_step)
            move = clamp(c.phase_gain * self.phase_error, -step, step)
            if self.snap and abs(self.phase_error) > c.snap_above:
                if doubt and not joining and self._misread(now_diff, 60.0 / our_bpm):
                    self.catching_up = True
                else:
                    move = self.phase_error  # coming in: onto the band's beat at once
                    bpm = target
            self.errors.append(self.phase_error + self.moved)  # as if we had never moved: the band's drift
            del self.errors[:-4]
            if self.catching_up:
                if abs(self.phase_error) <= c.snap_above:
                    self.catching_up = False
                else:
                    move = clamp(self.phase_error, -c.doubt_phase_step, c.doubt_phase_step)
            beat_time = our_beat + move
            self.moved += move
        self.snap = False
        return Correction(bpm, beat_time, intensity)

    def _misread(self, tempo_diff: float, period: float) -> bool:
        """Re-locking after a moment's doubt: is the phase error the tracker's beat misread (caught
        up ``doubt_phase_step`` a beat) rather than the band having moved (joined in one go)?"""
        c = self.config
        return bool(c.doubt_phase_step and self.followed_beats > c.settled_beats and self.since_jump > c.jump_memory
                    and abs(tempo_diff) <= c.doubt_tempo_gap and abs(self.phase_error) <= c.doubt_most * period
                    and not self._drifting(period))

    def _drifting(self, period: float) -> bool:
        """Over our last 4 beats followed before this one the phase error grew beat by beat, on
        this error's side, by over ``doubt_tempo_gap`` of a beat a beat: the band moved (its tempo
        shows in the error before the tracker's tempo does). An error that came in one step (the
        tracker's beat misread through a fill) did not grow before."""
        e = self.errors
        if len(e) < 4:
            return False
        slope = ((e[3] - e[0]) * 3 + (e[2] - e[1])) / 10.0  # least squares over 4 beats
        return slope * math.copysign(1.0, self.phase_error) > self.config.doubt_tempo_gap * period

    def _phase_error(self, r: BandReading, our_beat: float, our_bpm: float) -> float:
        """The band's beat nearest ours, minus ours."""
        g = self.grid
        if self.config.band_extrapolation and g.x is not None and g.beats >= 3:
            anchor = g.x[0] if self.config.grid_anchor else r.next_beat
            return g.beat_near(anchor, our_beat) - our_beat
        return wrapped_error(r.next_beat, our_beat, 60.0 / our_bpm)

    def _tempo_before_doubt(self, our_bpm: float) -> float:
        """Our tempo ``rollback_beats`` beats before the first beat whose readings were not all
        sure, among the last few (the band's tempo before its break pulled the tracker)."""
        played = self.played[:-1]  # the newest is this beat's, not yet played
        doubt = len(played)
        while doubt > 0 and not played[doubt - 1][1] and len(played) - doubt < 8:
            doubt -= 1
        k = doubt - self.config.rollback_beats
        return played[k][0] if 0 <= k < len(played) else our_bpm

    def _dynamics(self, readings_a_bar: float) -> float | None:
        """At a bar line: the band's last bar against its usual level -> the intensity offset."""
        if not self.bar_loudness:
            return None
        if self.reference_db is None and len(self.bar_loudness) < 0.8 * readings_a_bar:
            # the band's usual level starts from a whole bar: the bar it locked in is partly the
            # band coming in (with the lock in 7 beats, that bar read 7 dB under the next ones)
            self.bar_loudness, self.bar_density = [], []
            return None
        c = self.config
        # loudness is averaged as power, in dB
        loud = 10 * math.log10(sum(10 ** (db / 10) for db in self.bar_loudness) / len(self.bar_loudness))
        density = sum(self.bar_density) / len(self.bar_density)
        self.bar_loudness, self.bar_density = [], []
        if self.reference_db is None:
            self.reference_db, self.reference_density = loud, density
            return self.intensity
        level = (loud - self.reference_db) / c.db_per_range
        busy = math.log2((density + 0.5) / (self.reference_density + 0.5))
        self.intensity = clamp((0.8 * level + 0.2 * busy) * c.intensity_range, -c.intensity_range, c.intensity_range)
        k = 1.0 / c.reference_bars
        self.reference_db += k * (loud - self.reference_db)
        self.reference_density += k * (density - self.reference_density)
        return round(self.intensity, 3)
