"""The band's tempo and beat from audio: causal, block by block, numpy only.

Three stages, each one screen of numpy:

1. **Onset strength** — log-magnitude spectral flux every 5 ms (a 32 ms window at ~16 kHz),
   the low bands (bass, kick) counted twice: a band's beat lives in the bass and the backbeat
   (``listen.onsets``), less its recent mean.
2. **Tempo** — the autocorrelation of the last 6 s of onset strength, read through a comb (the
   lag and its multiples), over tempi within a window around the tempo the instrument plays,
   weighted by a prior there and by the last estimate: a blind tracker picks the wrong metrical
   level (double or half), the instrument knows the song's tempo.
3. **Beat phase** — the onset strength folded on the beat period over the last 6 beats (newer
   beats count more), each phase weighted by the tracker's own grid (where it predicted the
   beat): the phase that rises above the others is the last beat; the next is one period on.
   Where the band's timing wanders (the loop's jitter), the fold is also taken at periods a few
   percent either side and the sharpest one's phase is the beat.

The confidence says how sure that fold is (its peak against its mean) and whether the band plays
at all (recent onset strength against what it was while playing): a break, a stop or a fill
drops it, and the follower holds. Times are seconds of the input stream (sample count / rate);
the listening process puts them on the engine's clock.

Compared with aubio and BTrack in docs/follow.md (benchmarks/follow.py --tracker).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from drummachine.listen.loudness import BandLoudness
from drummachine.listen.onsets import WINDOW, AntiAliased, SpectralFlux, decimated
from drummachine.listen.own_sound import KIT_HEARD_DB

ANALYSIS_RATE = 16000  #: the input is decimated by an integer factor to about this rate
FRAME_SECONDS = 0.005  #: onset strength every 5 ms
HISTORY_SECONDS = 8.0
ONSETS_KEPT = 64  #: the last onsets' times, for their density
TEMPO_SECONDS = 6.0  #: autocorrelation window
PHASE_BEATS = 6  #: beats folded for the phase
PHASE_DECAY = 0.8  #: weight of each older beat in the fold
PRIOR_WIDTH = 0.08  #: the tempo prior's width around the instrument's tempo (log scale, ~8%)
UPDATE_FRAMES = 10  #: an estimate every 10 frames (50 ms)
#: the phase-locked loop, per update (20 a second): share of the phase error taken, share of it
#: put into the period, and the pull of the period towards the autocorrelation's
LOOP_PHASE = 0.08
LOOP_PERIOD = 0.003
LOOP_PULL = 0.01
#: the loop's mean |error| (smoothed over ~2 s of updates): up to JITTER_OK it is sure, at twice
#: that not at all. (30 ms locked sooner on the train split, later on the validation split:
#: docs/follow.md, "Tuning")
JITTER_SMOOTHING = 0.03
JITTER_OK = 0.02
#: how sure the fold is: its peak's contrast against its mean, from CONTRAST_NOISE (nothing) to
#: CONTRAST_SURE (sure). A room's noise alone folds to about 0.53 (median; 0.6 at p95), a band
#: to 0.70-0.84 (median; 0.47-0.74 at p5): 0.5 to 0.75 was tried, and cost the lock (docs/follow.md)
CONTRAST_NOISE = 0.0
CONTRAST_SURE = 0.625
#: is a beat there at all: the autocorrelation's comb (the lag of the beat and its 3 multiples) at
#: the tempo chosen, smoothed over updates (PERIODICITY_SMOOTHING), from PERIODICITY_NOISE (no
#: beat: the confidence is 0) to PERIODICITY_SURE (no doubt). The fold alone is sure of a room's
#: noise (its contrast 0.53 at the median, confidence 1.0 within a second): there the comb reads
#: 0.08-0.10 (median; 0.12-0.32 at p95), a band's drum-less mix 0.30-0.57 (median; 0.18-0.36 at
#: p5), on 4 validation clips (docs/follow.md). Both are for a full window: on fewer frames the
#: comb of noise reads higher (its spread goes as one over the root of the frames), so they are
#: raised by sqrt(window / frames heard) (the band's first seconds, the room's); on those the comb
#: is read at the tempo the autocorrelation heard, not the song's that the tracker takes for its
#: first seconds (AUTOCORRELATION_AFTER): onsets are a frame or two wide, and a lag 0.8 frames off
#: reads little (a rock at 115 read 0.2 at the song's tempo, 0.77 at the 115.5 it was heard at; a
#: band heard from the first sample was sure after 14 band beats, now 6.5: docs/follow.md). Only until the
#: band's entry is heard (a rise of its loudness, ``loudness.ENTRY_RISE_DB``): that says a band is
#: there, and testing it again after the entry cost a bar of the count-in (waiting for the band:
#: in after 16 band beats instead of 12). PERIODICITY_SURE 0: off
PERIODICITY_NOISE = 0.10
PERIODICITY_SURE = 0.20
PERIODICITY_SMOOTHING = 0.1
#: the loop's |error| when it (re)starts: 2 * JITTER_OK (0.04, as before) is "not sure at all"
#: (it had to earn its confidence over ~1 s of agreeing folds); at 0.03 it starts half sure, and
#: with the follower's 4 sure readings the machine locked in 7 beats instead of 14 (validation)
#: and 21 (train): docs/follow.md, "Second pass"
JITTER_START = 0.03
#: the fold looks for the last beat at periods within ±this (relative) of the tempo estimate, in
#: PERIOD_STEPS steps, and takes the phase of the best: folded at the estimate's period alone, a
#: band slowing down (or speeding up) ahead of it smears the older beats to one side and pulls the
#: fold's beat the wrong way, which the beats' spacing then reads as the band going the other way
#: (a ritardando read as a band speeding up). Only the phase: the loop's period still follows the
#: autocorrelation (fed the fold's best period, the loop's tempo wandered by ±2% on human timing).
#: 0.04 chosen on the train split; at 0.03-0.05 more clips got better than worse in every scenario
#: on both splits: docs/follow.md, "The fold's period searched for the phase"
PERIOD_SEARCH = 0.04
PERIOD_STEPS = 9
#: ... as far as the band's timing wanders: the whole ±PERIOD_SEARCH where the loop's jitter is
#: WANDER_FULL or more, nothing at WANDER_QUIET or less (in between, in proportion). A band played
#: to a grid (the 16 held-out POP909 songs, quantized piano arrangements, music from outside this
#: repository) holds the loop within 1-2 ms, and there the best of 9 folds is the noisiest one:
#: steady playing 12.6 → 13.9 ms at p95, 12 → 8 songs of 16 within 15 ms; the drummers hold it
#: at 6-12 ms (median) and keep the whole search. Gated so: 11.3 ms and 12 of 16, the drummers'
#: replays as with the whole search (docs/follow.md, "The fold's search where the band wanders")
WANDER_QUIET = 0.002
WANDER_FULL = 0.004
FIRST_UPDATE_SECONDS = 2.0  #: the first estimate comes this many seconds after the band came in
#: when the band comes in (``loudness.ENTRY_RISE_DB``), the onset strength of the frames up to this
#: long before is its first notes (the rest is the room's, and is forgotten)
ENTRY_KEEP_SECONDS = 0.2
#: until the band has been heard this long, the tempo is the song's (the prior): the
#: autocorrelation of a 6-s window that is mostly empty said 117.3 for a drummer at 115, its
#: continuity prior kept it near there, and the phase was 40-60 ms early for 10 s at confidence 1
AUTOCORRELATION_AFTER = 5.0
#: ... as long as the autocorrelation's tempo is within this (relative) of the song's: the band
#: may count in elsewhere (a test plays it 4% faster than the song: the song's tempo held for 5 s
#: and its continuity prior kept the tracker 3% slow for good)
PRIOR_FIRST_WITHIN = 0.03
#: the loop may learn only from folds heard while the band plays at least this much (activity
#: 0..1): tried at 0.99 and 0.5 to keep a break's fading edge out of it; no better; 0: off
LOOP_ACTIVITY = 0.0
#: on the beat or on the off-beat: the fold decides the phase on the last 6 beats, and its first
#: decision (2 s in) holds while its own grid prior weights it. A piano's syncopated accompaniment
#: can put as much onset strength on the "and" for a few beats: 2 of 8 pop songs rendered from
#: POP909 (music from outside this repository, docs/follow.md) were locked on the off-beat from
#: the start for 20-55 s (in one, the beat had 1.65 times the off-beat's strength over the
#: song). So the onset strength is also kept as a profile over the loop's own beat
#: (PROFILE_BINS phases, fading over PROFILE_SECONDS); once it holds FLIP_AFTER seconds of
#: playing and the off-beat is FLIP_RATIO times the beat, the loop moves half a beat and starts
#: over unsure (the follower holds for a moment, then re-locks on the beat in one go, as a
#: drummer who finds they are on the wrong beat does). FLIP_RATIO 0: off. The fading and the
#: wait were chosen on the first 24 of those songs with the validation drummers (8 s and 4 s:
#: fewer songs put right; 4 s and 3 s: flip-flopping); checked on 16 others (docs/follow.md)
PROFILE_BINS = 16
PROFILE_SECONDS = 6.0
FLIP_AFTER = 3.0
FLIP_RATIO = 1.25
#: the musician's word on where the beat is (``hint_beat``: taps on the beat while following): from
#: then on the fold weights the phase the loop predicts whatever its confidence, with this floor
#: away from it (0.5 otherwise): at 0 only a gaussian a sixth of a beat wide around the tapped
#: grid, so an "and" ~90 times as strong as the beat does not take the loop back (at 0.1, keys
#: on the "and" louder than the band took it back within 10 s; docs/follow.md, "Recorded music")
TAPPED_FLOOR = 0.0
#: where a frame's onset strength is put in time, against the middle of its window: the flux
#: rises as soon as an attack enters the window's newer half. Measured on the steady clips (the
#: median beat error, beats - truth) and taken off every beat time
ONSET_LAG = -0.007


#: what a tracker hands to its successor (``BeatTracker.state``, ``resume``), and its loudness's
HANDED_OVER = ("started", "entries", "estimated", "bpm", "next_beat", "period", "confidence",
               "confidence_was", "periodicity", "periodicity_floor", "jitter", "flux_mean", "playing_level",
               "_last_emitted", "_last_peak_frame", "profile_seconds", "flips", "tapped")
LOUDNESS_HANDED_OVER = ("level_db", "came_in", "updates", "kit_floor_db", "since_kit_alone")


@dataclass(frozen=True)
class Estimate:
    """What the tracker hears, at stream time ``time`` (seconds of input)."""

    time: float
    bpm: float  #: the band's tempo (0 until heard)
    next_beat: float  #: the band's next beat, stream seconds (0 until heard)
    confidence: float  #: 0..1
    loudness_db: float  #: RMS of the last 400 ms, dBFS
    onsets_per_second: float  #: onset density over the last 2 s


class BeatTracker:
    """Feed it mono blocks with ``process``; read ``estimate``.

    ``bpm``: the tempo the instrument plays (the prior); ``window``: how far (relative) the band's
    tempo is looked for around it. ``record_beats``: keep every beat it predicted (for scoring).
    """

    def __init__(self, rate: int, bpm: float, window: float = 0.15, record_beats: bool = False,
                 gate_db: float | None = None, canceller=None):
        self.rate = int(rate)
        self.factor = max(1, int(round(rate / ANALYSIS_RATE)))
        self.arate = self.rate / self.factor
        self.hop = max(1, int(round(self.arate * FRAME_SECONDS)))
        self.fps = self.arate / self.hop
        self.window = float(window)
        self.prior_bpm = float(bpm)
        self.prior_width = PRIOR_WIDTH
        self.flux = SpectralFlux(self.arate, self.hop)
        self.history = np.zeros(int(HISTORY_SECONDS * self.fps), np.float32)  # onset strength, newest last
        self.frames = 0  # frames computed so far
        self.carry = np.zeros(0, np.float32)  # raw samples not yet decimated
        #: the machine's own kit taken out of the input (``listen.own_sound``), at the analysis rate
        self.canceller = canceller
        self.to_analysis_rate = AntiAliased(self.factor)  # for the canceller: the input and the kit
        self.samples = 0  # raw samples taken in
        self.flux_mean = 0.0
        self.playing_level = 1e-6  # onset strength while the band plays (slow)
        self.loudness = BandLoudness(int(0.4 * self.arate), gate_db)
        self.started = 0  # the frame the band came in at (loudness.ENTRY_RISE_DB)
        self.entries = 0  # times the band came in (from the room, or back after a long silence)
        self.estimated = False  # an estimate was made (``_update``)
        self.kit_first_notes_over = False  # the canceller's learning over them, or no need to wait for it
        #: what the canceller had taken out at its end, its bass left out (None: not decided there)
        self.kit_heard_db: float | None = None
        self.bpm = 0.0
        self.next_beat = 0.0
        self.period = 0.0  # the loop's beat period, seconds
        self.confidence = 0.0
        self.confidence_was = 0.0
        self.periodicity = 0.0  # the comb at the chosen tempo, smoothed
        self.periodicity_floor = 1.0  # PERIODICITY_* are raised this much for a window not yet full
        self.jitter = 0.0  # the loop's mean |error|, seconds
        self.record = record_beats
        self.beats: list[float] = []
        self._last_emitted = -1.0
        self._onset_times: list[float] = []
        self._last_peak_frame = -100
        self.profile = np.zeros(PROFILE_BINS)  # onset strength over the loop's beat, phase 0 = the beat
        self.profile_seconds = 0.0  # how much playing the profile holds since the loop (re)started
        self._profiled_frame = 0  # the frames before this one are in the profile
        self.flips = 0  # half-beat moves made (the off-beat was the beat)
        self.flip_ratio = FLIP_RATIO
        self.tapped = False  # the musician said where the beat is (``hint_beat``), until the band comes in again

    # --- the prior -------------------------------------------------------------------------------

    def set_prior(self, bpm: float) -> None:
        """The tempo the instrument plays now (the song's tempo, or where it follows to)."""
        self.prior_bpm = float(bpm)

    def hint_beat(self, beat: float) -> None:
        """The musician says a beat of the band is at ``beat`` (stream seconds): taps on the beat,
        where the machine followed the "and" or a triplet's. The loop's beat goes to that grid at
        once, the fold weights it from then on whatever its confidence (TAPPED_FLOOR), and the
        beat/off-beat check no longer moves it: the musician's word holds until the band comes in
        again (``_start_over``). Before any estimate there is no grid to move: nothing is done."""
        period = self.period or (60.0 / self.bpm if self.bpm > 0 else 0.0)
        if period <= 0 or not math.isfinite(beat):
            return
        now = self.frame_time(self.frames)
        self.next_beat = beat + period * math.ceil((now - beat) / period + 1e-9)
        self.period = period
        self.tapped = True
        self.profile[:] = 0.0
        self.profile_seconds = 0.0
        self._profiled_frame = self.frames
        # as sure as the fold's next readings make it: the follower re-locks on the tapped grid
        self.jitter = min(self.jitter, JITTER_START)
        self.confidence_was = max(self.confidence_was, 0.2)

    # --- input ------------------------------------------------------------------------------------

    def process(self, block: np.ndarray, kit: np.ndarray | None = None) -> None:
        """Take the next mono samples (any length); ``kit``: the machine's own output over them, which
        the canceller takes out first (the loudness too: its own drums must not lift its intensity)."""
        x = np.asarray(block, np.float32).reshape(-1)
        self.samples += x.size
        if self.canceller is not None and kit is not None:
            x = self.canceller.process(*self.to_analysis_rate(x, np.asarray(kit, np.float32).reshape(-1)))
        elif self.factor > 1:
            x, self.carry = decimated(self.carry, x, self.factor)
        self.loudness.add(x)
        for value in self.flux.frames(x).tolist():
            self._frame(value)

    def _frame(self, flux: float) -> None:
        value = self._onset_strength(flux)
        self.history[:-1] = self.history[1:]
        self.history[-1] = value
        self.frames += 1
        self._peak()
        # a beat due now is final before the estimate moves on: the update steps its prediction
        # past a beat that is due, which would then never be recorded (nor scored)
        self._emit()
        if self.frames % UPDATE_FRAMES == 0:
            kit_alone = self.canceller is not None and self.canceller.kit_alone_since_asked()
            if self.loudness.update(UPDATE_FRAMES / self.fps, kit_alone):
                self._start_over()
            if not self._learning_the_kits_first_notes() and self.frames - self.started > self.fps * FIRST_UPDATE_SECONDS:
                self._update()

    def _learning_the_kits_first_notes(self) -> bool:
        """Whether the canceller is still learning the path over the kit's first notes
        (``own_sound.KIT_LEARNING_SECONDS``), where those came before the tracker's first estimate
        and before the band's entry: nothing is estimated then, and at its end, if the kit was in
        the input (``own_sound.KIT_HEARD_DB``), what was heard meanwhile is forgotten (``_start_over``: the
        estimates start from there).

        The machine starts playing as it starts listening: a kit in the input is there nearly whole
        while the canceller learns, and a band already there, or coming in then (no entry can be
        heard over the kit), was folded with the machine's own beat. The first estimates were made
        on that mix, the follower came in on them 45-66 ms off the band's beat and took 15 beats at a
        few ms a beat to reach it: 21-24 band beats to lock on JACK, 7 now (docs/follow.md, "The band
        in the kit's first second"). With no kit in the input nothing is forgotten: forgotten
        whatever they held, those seconds cost a band already playing 4 beats to lock."""
        c = self.canceller
        if self.kit_first_notes_over or c is None:
            return False
        if self.loudness.came_in or self.estimated:
            self.kit_first_notes_over = True  # the band's entry heard, or estimates made on the input alone
            return False
        if c.kit_frames == 0:
            return False  # nothing played yet
        if c.learning:
            return True
        self.kit_first_notes_over = True
        self.kit_heard_db = c.removed_treble_db
        if self.kit_was_heard:
            self._start_over(entry=False)
        return False

    @property
    def kit_was_heard(self) -> bool:
        """The kit was in the input while the canceller learnt its first notes (``own_sound.KIT_HEARD_DB``)."""
        return self.kit_heard_db is not None and self.kit_heard_db >= KIT_HEARD_DB

    def _start_over(self, entry: bool = True) -> None:
        """The band came in (``entry``): what was heard before it (the room) is forgotten; or
        what was heard while the canceller learnt the kit's first notes."""
        self.started = self.frames
        self.entries += entry
        keep = int(ENTRY_KEEP_SECONDS * self.fps)
        self.history[:-keep] = 0.0
        self.playing_level = 1e-6
        self.bpm = self.period = self.next_beat = 0.0
        self.confidence = self.confidence_was = 0.0
        self.periodicity = 0.0
        self.jitter = 0.0
        self._onset_times = [t for t in self._onset_times if t >= self.frame_time(self.frames - keep)]
        self.profile[:] = 0.0
        self.profile_seconds = 0.0
        self._profiled_frame = self.frames
        self.tapped = False

    def _onset_strength(self, flux: float) -> float:
        """A causal high-pass: flux above its recent mean is onset strength (of frame ``self.frames``)."""
        self.flux_mean += 0.02 * (flux - self.flux_mean)
        return max(0.0, flux - self.flux_mean)

    def _peak(self) -> None:
        h = self.history
        if h[-2] > h[-3] and h[-2] >= h[-1] and h[-2] > 0.3 * self.playing_level * 4 \
                and self.frames - self._last_peak_frame > 0.05 * self.fps:
            self._last_peak_frame = self.frames - 1
            self._onset_times.append(self.frame_time(self.frames - 1))
            if len(self._onset_times) > ONSETS_KEPT:
                del self._onset_times[:-ONSETS_KEPT]

    @property
    def updates(self) -> int:
        """Estimates made so far (one each UPDATE_FRAMES frames)."""
        return self.frames // UPDATE_FRAMES

    def samples_before_update(self) -> int:
        """How many samples (at the input's rate, counted from the first) the next estimate needs at
        least: its last frame's window whole (the canceller's framing may hold a few more back)."""
        frames = (self.updates + 1) * UPDATE_FRAMES
        return (WINDOW + (frames - 1) * self.hop) * self.factor

    # --- estimates --------------------------------------------------------------------------------

    def frame_time(self, frame: float) -> float:
        """Stream seconds of a frame's onset (the window's middle, less the onset lag)."""
        return (frame * self.hop + WINDOW / 2) / self.arate - ONSET_LAG

    def _update(self) -> None:
        self.estimated = True
        fps = self.fps
        n = int(TEMPO_SECONDS * fps)
        x = self.history[-n:].astype(np.float64)
        recent = float(x[-int(2 * fps):].mean())
        # the band's playing level: follows up at once, decays over ~20 s of quiet
        self.playing_level = max(recent, self.playing_level * math.exp(-UPDATE_FRAMES / fps / 20.0), 1e-6)
        activity = min(1.0, recent / (0.35 * self.playing_level))
        activity = min(activity, self.loudness.playing())
        x = x - x.mean()
        spec = np.fft.rfft(x, 2 * n)
        acf = np.fft.irfft(spec * np.conj(spec))[:n]
        if acf[0] <= 0:
            self.confidence = 0.0
            return
        acf /= acf[0]
        lo, hi = self.prior_bpm * (1 - self.window), self.prior_bpm * (1 + self.window)
        bpms = np.arange(lo, hi, 0.1)
        period = 60.0 * fps / bpms
        score = np.zeros_like(bpms)
        for k in (1, 2, 3, 4):
            lag = period * k
            ok = lag < n - 1
            score[ok] += np.interp(lag[ok], np.arange(n), acf)
        prior = np.exp(-0.5 * (np.log(bpms / self.prior_bpm) / self.prior_width) ** 2)
        if self.bpm > 0 and self.confidence > 0.3:
            prior *= 0.3 + np.exp(-0.5 * (np.log(bpms / self.bpm) / 0.015) ** 2)
        weighted = np.maximum(score, 0.0) * prior
        best = int(np.argmax(weighted))
        if weighted[best] <= 0:
            self.confidence = 0.0
            return
        bpm = float(bpms[best])
        if 0 < best < bpms.size - 1:
            a, b, c = weighted[best - 1:best + 2]
            den = a - 2 * b + c
            if den < 0:
                bpm += 0.1 * 0.5 * (a - c) / den
        heard_bpm = bpm
        if self.frames - self.started < self.fps * AUTOCORRELATION_AFTER and abs(bpm / self.prior_bpm - 1) < PRIOR_FIRST_WITHIN:
            # too little heard for the autocorrelation to say a tempo this near the song's: the
            # song's. A band clearly elsewhere (a count-in 4% faster than the song) is taken as heard
            bpm = self.prior_bpm
        comb = float(score[best])  # over a full window, the comb the tempo was chosen by
        heard = max(1, min(n, self.frames - self.started))
        if heard < n:
            # the window is not full yet: the frames before the band (or before anything) are
            # zeros, a step the mean removal turns into an autocorrelation high at every lag, as
            # sure of a room's first seconds as of a band. The beat test reads the heard frames alone
            comb = self._comb(self.history[-heard:], 60.0 * fps / heard_bpm)
        self.periodicity_floor = math.sqrt(n / heard)
        self.periodicity += PERIODICITY_SMOOTHING * (comb - self.periodicity)
        if activity > 0.5:
            self.bpm = bpm if self.bpm == 0 else self.bpm + 0.5 * (bpm - self.bpm)
        if self.bpm == 0:
            return
        self._phase(activity)
        self._beat_or_off_beat(activity)

    def _folds(self, taus: np.ndarray, last: int, now_frame: int) -> np.ndarray:
        """The onset strength folded at each period in ``taus`` (frames) over the last PHASE_BEATS
        beats up to index ``last`` of the history (frame ``now_frame``), newer beats counting more,
        weighted by the tracker's own grid: (phase, period)."""
        h = self.history
        smooth = np.convolve(h, np.array([0.25, 0.5, 1.0, 0.5, 0.25], np.float32), mode="same")
        phases = np.arange(int(math.ceil(taus.max())))
        ks = np.arange(PHASE_BEATS)
        pos = last - phases[:, None, None] - ks[None, None, :] * taus[None, :, None]  # (phase, period, beat)
        ok = pos >= 0
        pos = np.clip(pos, 0, h.size - 1)
        lo = np.floor(pos).astype(int)
        frac = pos - lo
        hi_idx = np.minimum(lo + 1, h.size - 1)
        vals = (smooth[lo] * (1 - frac) + smooth[hi_idx] * frac) * ok
        fold = (vals * PHASE_DECAY ** ks[None, None, :]).sum(axis=2)  # (phase, period)
        fold[phases[:, None] >= taus[None, :]] = 0.0  # a phase beyond a period is the next beat's
        # the tracker's own grid: where it said the last beat would be
        if self.next_beat > 0 and (self.confidence > 0.3 or self.tapped):
            predicted_last = self.next_beat - 60.0 / self.bpm
            pred_phase = self.frame_of(self._wrap_before(predicted_last, now_frame))
            d = (now_frame - pred_phase) - phases[:, None]
            d = (d + taus[None, :] / 2) % taus[None, :] - taus[None, :] / 2
            floor = TAPPED_FLOOR if self.tapped else 0.5
            fold = fold * (floor + np.exp(-0.5 * (d / (taus[None, :] / 6)) ** 2))
        return fold

    def _phase(self, activity: float) -> None:
        fps = self.fps
        h = self.history
        last = h.size - 3  # the newest frame with both smoothing neighbours... nearly
        now_frame = self.frames - 1 - (h.size - 1 - last)
        # candidate periods (frames per beat) around the tempo estimate, as far as the band's timing wanders
        centre = 60.0 * fps / self.bpm
        width = self._period_search()
        taus = centre / (1.0 + np.linspace(-width, width, PERIOD_STEPS if width else 1))
        fold = self._folds(taus, last, now_frame)
        best, j = np.unravel_index(int(np.argmax(fold)), fold.shape)
        tau = float(taus[j])
        row = fold[:int(math.ceil(tau)), j]
        mean = float(row.mean())
        peak = float(row[best])
        contrast = 0.0 if peak <= 0 else max(0.0, (peak - mean) / peak)
        offset = float(best)
        if 0 < best < row.size - 1:
            a, b, c = row[best - 1:best + 2]
            den = a - 2 * b + c
            if den < 0:
                offset += 0.5 * (a - c) / den
        fold_last_beat = self.frame_time(now_frame - offset)
        period = centre / fps
        last_beat = self._measured_last_beat(fold_last_beat, period)
        next_beat = last_beat + period
        now = self.frame_time(self.frames)  # roughly "now" in stream time
        while next_beat <= now:
            next_beat += period
        self.confidence = float(np.clip((contrast - CONTRAST_NOISE) / (CONTRAST_SURE - CONTRAST_NOISE), 0.0, 1.0)
                                * activity * self._beat_is_there())
        if self.next_beat > 0 and (self.confidence < 0.2 or activity < LOOP_ACTIVITY):
            # unsure: go on by the last tempo (the follower holds); the loop keeps its jitter
            while self.next_beat <= now:
                self.next_beat += self.period
            self.confidence *= float(np.clip(1.0 - (self.jitter - JITTER_OK) / JITTER_OK, 0.0, 1.0))
            return
        self._lock_loop(next_beat, period, now, fold_last_beat + period)

    def _period_search(self) -> float:
        """How far (relative) around the tempo estimate the fold looks for the period: PERIOD_SEARCH
        where the loop's jitter is WANDER_FULL or more, nothing at WANDER_QUIET or less."""
        return PERIOD_SEARCH * float(np.clip((self.jitter - WANDER_QUIET) / (WANDER_FULL - WANDER_QUIET), 0.0, 1.0))

    @staticmethod
    def _comb(x: np.ndarray, period: float) -> float:
        """The normalized autocorrelation of ``x`` at ``period`` frames and its 3 multiples (those inside ``x``)."""
        x = x.astype(np.float64) - float(x.mean())
        spec = np.fft.rfft(x, 2 * x.size)
        acf = np.fft.irfft(spec * np.conj(spec))[:x.size]
        if acf[0] <= 0:
            return 0.0
        # unbiased (each lag over the frames it overlaps), and the 4 lags' sum however many fit,
        # so a short window reads what a full one would, only noisier
        acf = acf / acf[0] * x.size / np.maximum(x.size - np.arange(x.size), 1)
        lags = period * np.arange(1, 5)
        lags = lags[lags < 0.75 * x.size]
        if not lags.size:
            return 0.0
        return float(np.interp(lags, np.arange(x.size), acf).mean() * 4)

    def _beat_is_there(self) -> float:
        """0..1: how far the smoothed comb is above a room's noise (PERIODICITY_*); 1 once the
        band's entry was heard."""
        if PERIODICITY_SURE <= 0 or self.entries:
            return 1.0
        noise, sure = PERIODICITY_NOISE * self.periodicity_floor, PERIODICITY_SURE * self.periodicity_floor
        return float(np.clip((self.periodicity - noise) / (sure - noise), 0.0, 1.0))

    def _measured_last_beat(self, fold_last_beat: float, period: float) -> float:
        """The last beat the loop is given: the fold's. (benchmarks/follow_path.py gives it a
        path of beats' instead, measured and not shipped: docs/follow.md.)"""
        return fold_last_beat

    def _lock_loop(self, measured: float, period: float, now: float, fold: float) -> None:
        """A phase-locked loop over the measured beats: each measurement moves the predicted beat
        by a share of its error, and the period by a smaller share, so the published beat and
        tempo are steady where one fold is noisy (human timing, a fill's extra notes). The
        autocorrelation's tempo keeps the period from wandering off. Its jitter (how sure it is)
        is the fold's next beat ``fold`` against it: the measurement itself unless
        ``_measured_last_beat`` is another's."""
        if self.next_beat <= 0 or self.period <= 0 or self.confidence_was < 0.2:
            self.next_beat, self.period = measured, period
            self.jitter = JITTER_START
        else:
            while self.next_beat <= now:
                self.next_beat += self.period
            e = measured - self.next_beat
            e -= self.period * math.floor(e / self.period + 0.5)
            disagreement = fold - self.next_beat
            disagreement -= self.period * math.floor(disagreement / self.period + 0.5)
            self.next_beat += LOOP_PHASE * e
            self.period += LOOP_PERIOD * e + LOOP_PULL * (period - self.period)
            self.jitter += JITTER_SMOOTHING * (abs(disagreement) - self.jitter)
        self.confidence_was = self.confidence
        # a loop still settling (or a fold that keeps disagreeing with it) is not sure yet
        self.confidence *= float(np.clip(1.0 - (self.jitter - JITTER_OK) / JITTER_OK, 0.0, 1.0))

    def _beat_or_off_beat(self, activity: float) -> None:
        """The profile of onset strength over the loop's beat, from the frames since the last
        update; half a beat moved when the off-beat has been the stronger for long enough."""
        first, self._profiled_frame = self._profiled_frame, self.frames
        if self.flip_ratio <= 0 or self.tapped or self.period <= 0 or self.next_beat <= 0 or self.confidence_was < 0.2:
            self.profile[:] = 0.0
            self.profile_seconds = 0.0
            return
        count = min(self.frames - first, self.history.size)
        seconds = count / self.fps
        self.profile *= math.exp(-seconds / PROFILE_SECONDS)
        if activity < 0.5:
            return
        times = self.frame_time(np.arange(self.frames - count, self.frames))
        phase = ((times - self.next_beat) / self.period) % 1.0
        bins = (phase * PROFILE_BINS + 0.5).astype(int) % PROFILE_BINS
        self.profile += np.bincount(bins, weights=self.history[-count:], minlength=PROFILE_BINS)
        self.profile_seconds += seconds
        if self.profile_seconds < FLIP_AFTER:
            return
        half = PROFILE_BINS // 2
        on = self.profile[[-1, 0, 1]].sum()
        off = self.profile[[half - 1, half, half + 1]].sum()
        if off > self.flip_ratio * on:
            now = self.frame_time(self.frames)
            self.next_beat += self.period / 2
            if self.next_beat - self.period > now:
                self.next_beat -= self.period
            self.profile = np.roll(self.profile, half)
            self.profile_seconds = 0.0
            self.jitter = 2 * JITTER_OK  # start over unsure: the follower holds, then re-locks
            self.confidence = 0.0
            self.flips += 1

    def frame_of(self, t: float) -> float:
        return ((t + ONSET_LAG) * self.arate - WINDOW / 2) / self.hop

    def _wrap_before(self, t: float, frame: float) -> float:
        """``t`` moved by whole beats to the last beat at or before ``frame``."""
        period = 60.0 / self.bpm
        now = self.frame_time(frame)
        while t > now:
            t -= period
        while t + period <= now:
            t += period
        return t

    def _emit(self) -> None:
        """Beats whose predicted time has come are final (what a real-time follower would have used)."""
        if self.next_beat <= 0 or self.bpm <= 0:
            return
        now = self.frame_time(self.frames)
        if now >= self.next_beat:
            t = self.next_beat
            if t - self._last_emitted > 0.5 * 60.0 / self.bpm:
                if self.record:
                    self.beats.append(t)
                self._last_emitted = t
            self.next_beat = t + (self.period or 60.0 / self.bpm)

    # --- handed over to a successor ----------------------------------------------------------

    def state(self) -> dict:
        """What a tracker started again on the same input needs to go on where this one was (the
        listening process died, or started again to take the kit out): ``resume``. Its times are
        this tracker's stream seconds; ``now`` says where its stream was."""
        loud = self.loudness
        scalars = {name: float(getattr(self, name)) for name in HANDED_OVER}
        scalars |= {f"loudness.{name}": float(getattr(loud, name)) for name in LOUDNESS_HANDED_OVER}
        return scalars | {"frames": self.frames, "now": self.frame_time(self.frames), "fps": self.fps,
                          "history": self.history.copy(), "profile": self.profile.copy(),
                          "onsets": np.array(self._onset_times, np.float64)}

    def resume(self, state: dict, offset: float) -> None:
        """Go on from a predecessor's ``state`` instead of cold: its onset strength, its tempo, its
        loop and its confidence, the frames between its last and this tracker's first filled as
        the band went on (``_as_it_went_on``). ``offset``: where this tracker's stream began on
        the predecessor's (its stream seconds less ``offset`` are this one's). Before any sample:
        a cold tracker's first frames (its onset strength's mean not yet risen) would sit among
        the predecessor's.

        A cold tracker on a band already playing hears this drummer 3-4% fast over its first 3 s
        and is sure of the phase that tempo folds to, ~50 ms off: the follower re-locked onto it
        (docs/follow.md, "The listening process started again mid-song")."""
        if self.frames or self.samples:
            raise ValueError("a tracker resumes before its first sample")
        if abs(float(state["fps"]) - self.fps) > 1e-6:
            raise ValueError(f"the predecessor framed {state['fps']:.3f} a second, this one {self.fps:.3f}")
        numbers = [state[name] for name in HANDED_OVER] + [offset, state["frames"]]
        if not (np.isfinite(numbers).all() and np.isfinite(state["history"]).all()):
            raise ValueError("the predecessor's state holds a number that is not finite")
        for name in HANDED_OVER:
            setattr(self, name, type(getattr(self, name))(state[name]))
        for name in LOUDNESS_HANDED_OVER:
            setattr(self.loudness, name, type(getattr(self.loudness, name))(state[f"loudness.{name}"]))
        # the predecessor's frame f is this tracker's f - shift; its frames up to ``heard`` were
        # heard, those from there to this one's first were not
        shift, heard = int(round(offset * self.fps)), int(state["frames"])
        old = np.asarray(state["history"], np.float32)[:self.history.size]
        old = old[:old.size - max(0, heard - shift)]  # (one that heard past this one's start: its last dropped)
        kept = np.concatenate([old, self._as_it_went_on(old, max(0, shift - heard), state)])[-self.history.size:]
        self.history[:] = 0.0
        self.history[self.history.size - kept.size:] = kept
        self.started -= shift
        self._last_peak_frame -= shift
        self._profiled_frame = 0
        self.profile[:] = np.asarray(state["profile"])
        self._onset_times = [float(t) - offset for t in np.asarray(state["onsets"])]
        self._last_emitted -= offset
        if self.next_beat > 0:
            # the beats due in the gap stepped over: a time of 0 or less is "no beat yet" here
            period = self.period or 60.0 / self.bpm
            self.next_beat -= offset
            self.next_beat += period * max(0, math.ceil((self.frame_time(0) - self.next_beat) / period))
        # the kit's canceller learns its path again; estimates go on meanwhile (they were made)
        self.kit_first_notes_over = True

    def _as_it_went_on(self, heard: np.ndarray, frames: int, state: dict) -> np.ndarray:
        """The onset strength of ``frames`` not heard after ``heard``: each frame the one a beat
        before it (the band went on as it played), silence where no beat was heard yet. As
        silence, the gap (0.35 s) sat in the fold for 6 beats: on a slow funk restarted in a
        quiet bar the tracker was sure of a phase 100-270 ms off; filled so, over the replay's 48
        restarts (benchmarks/follow_restart.py at 15 and 25 s) 5 beats moved over 20 ms in one go
        in the 16 s after, against 11 with silence and 10 with no restart (docs/follow.md)."""
        period = float(state["period"]) or (60.0 / float(state["bpm"]) if float(state["bpm"]) > 0 else 0.0)
        lag = int(round(period * self.fps))
        if lag <= 0 or lag > heard.size:
            return np.zeros(frames, np.float32)
        return np.resize(heard[-lag:], frames).astype(np.float32)  # the last beat heard, again and again

    @property
    def now(self) -> float:
        return self.samples / self.rate

    def loudness_db(self) -> float:
        """RMS of the last 400 ms, dBFS."""
        return self.loudness.db()

    def estimate(self) -> Estimate:
        loud = self.loudness_db()
        # the onsets of the last 2 s (their times are noted in order)
        recent = len(self._onset_times) - bisect.bisect_right(self._onset_times, self.now - 2.0)
        bpm = 60.0 / self.period if self.period > 0 else self.bpm
        return Estimate(self.now, round(bpm, 3), self.next_beat, round(self.confidence, 3), round(loud, 2),
                        recent / 2.0)
