"""Listening to the band: the tracker on real drummers' timing, the listening process on a real
JACK server (a player client is the band), and `play --listen` end to end.

The material is made at test time from the validation split (benchmarks/follow_material.py):
nothing is shipped as audio.
"""

from __future__ import annotations

import logging
import re
import sys
import time

import numpy as np
import pytest

from drummachine.core.errors import DrumMachineError
from drummachine.listen.tracker import BeatTracker

from .conftest import ROOT, run_cli

sys.path.insert(0, str(ROOT / "benchmarks"))
material = pytest.importorskip("follow_material")

if not (material.GROOVE / "info.csv").exists():
    pytest.skip("the Groove MIDI Dataset is not on this machine", allow_module_level=True)


@pytest.fixture(scope="module")
def performance():
    return material.validation_performances(1)[0]


def tracked(clip, bpm=None, block=160):
    tracker = BeatTracker(clip.rate, bpm or clip.bpm, record_beats=True)
    for i in range(0, clip.audio.size, block):
        tracker.process(clip.audio[i:i + block])
    return tracker


@pytest.mark.parametrize("scenario, mix", [("steady", "drums"), ("accelerando", "band")])
def test_the_tracker_finds_a_real_drummers_beat(performance, scenario, mix):
    clip = material.make_clip(*performance, scenario, mix, bars=16)
    tracker = tracked(clip)
    assert material.scored_beats(clip, np.array(tracker.beats)) >= 0.85
    assert tracker.estimate().bpm == pytest.approx(clip.tempo[-1], rel=0.02)


def test_every_beat_the_tracker_predicted_is_recorded(performance):
    """A beat falling on an update's frame was stepped over by the update before it was recorded:
    one in ten went missing from the beats that the F-measure scores."""
    clip = material.make_clip(*performance, "steady", "band", bars=16)
    tracker = tracked(clip, block=256)
    spacing = np.diff(tracker.beats) / (60.0 / clip.bpm)
    assert spacing.size > 50 and spacing.max() < 1.5


def test_the_tempo_prior_keeps_the_metrical_level(performance):
    """Told the song's tempo, the tracker does not settle on double or half of it."""
    clip = material.make_clip(*performance, "steady", "band", bars=12)
    tracker = tracked(clip)
    assert 0.9 < tracker.estimate().bpm / clip.bpm < 1.1


def test_the_fold_stays_on_a_band_slowing_down(performance, monkeypatch):
    """Through the ritardando (10% slower over 8 bars) the tracker's beats against where the band
    played them: folded at the tempo estimate's period alone (which lags the slowing band), the older
    beats smeared to one side and pulled the fold's beat early, 49 ms off at p95 on this drummer;
    looking for the period too (``PERIOD_SEARCH``), 32 (docs/follow.md, "The fold's period
    searched for the phase")."""
    import drummachine.listen.tracker as tracker_module

    clip = material.cached_clip(*performance, "ritardando", "band")
    played = clip.played[(np.arange(clip.beats.size) >= 16 * 4) & clip.audible]

    def p95_ms(search):
        monkeypatch.setattr(tracker_module, "PERIOD_SEARCH", search)
        beats = np.array(tracked(clip).beats)
        k = np.clip(np.searchsorted(beats, played), 1, beats.size - 1)
        nearest = np.where(np.abs(beats[k] - played) < np.abs(beats[k - 1] - played), beats[k], beats[k - 1])
        return float(np.percentile(np.abs(nearest - played), 95)) * 1000

    searched, alone = p95_ms(tracker_module.PERIOD_SEARCH), p95_ms(0.0)
    assert searched < 40.0 and searched < 0.8 * alone, (searched, alone)


def test_the_fold_looks_for_the_period_only_where_the_band_wanders(performance, monkeypatch):
    """The drummer's band as played wanders around its tempo, and the fold looks for the period
    (``PERIOD_SEARCH``) nearly all the time after the first 8 s; the same notes put on the 16th-note
    grid (a band played to a click) hold the loop within a couple of ms, and the fold stays at the
    tempo estimate's period (on music played to a grid the best of 9 folds was the noisiest:
    docs/follow.md, "The fold's search where the band wanders")."""
    import drummachine.listen.tracker as tracker_module

    as_played = material.performance_hits

    def on_the_grid(*args, **kwargs):
        beats, voices, velocities = as_played(*args, **kwargs)
        return np.round(beats * 4) / 4, voices, velocities

    def searched(hits):
        monkeypatch.setattr(material, "performance_hits", hits)
        clip = material.make_clip(*performance, "steady", "band", bars=16)
        tracker = BeatTracker(clip.rate, clip.bpm)
        hop = clip.rate // 20
        widths = []
        for i in range(0, clip.audio.size, hop):
            tracker.process(clip.audio[i:i + hop])
            if i > 8 * clip.rate:
                widths.append(tracker._period_search() / tracker_module.PERIOD_SEARCH)
        return np.array(widths)

    played, gridded = searched(as_played), searched(on_the_grid)
    assert (played == 1.0).mean() > 0.7, played
    assert (gridded == 0.0).mean() > 0.8, gridded


def test_a_break_drops_the_confidence_within_a_beat_and_a_quieter_verse_does_not(performance):
    """The band stops for 2 bars (the room's noise 20 dB under it goes on): the confidence falls
    below the follower's hold within a beat and stays there; the band 10 dB quieter for 8 bars
    (the dynamics) is still the band. (Before, the onset strength of the noise kept it at 0.9
    through the whole break.)"""
    period = 60.0 / performance[1]
    for scenario, gains, silent in (("break", (), (40, 48)), ("steady", ((8, -10.0), (16, 0.0)), None)):
        clip = material.make_clip(*performance, scenario, "band", bars=20, gains_db=gains)
        tracker = BeatTracker(clip.rate, clip.bpm)
        hop = clip.rate // 20
        times, conf = [], []
        for i in range(0, clip.audio.size, hop):
            tracker.process(clip.audio[i:i + hop])
            times.append((i + hop) / clip.rate)
            conf.append(tracker.estimate().confidence)
        times, conf = np.array(times), np.array(conf)
        if silent:
            inside = (times > clip.beats[silent[0]] + period) & (times < clip.beats[silent[1]] - 0.5)
            assert conf[inside].max() < 0.3
        else:
            quiet = (times > clip.beats[34]) & (times < clip.beats[62])
            assert np.mean(conf[quiet] >= 0.5) > 0.9


def test_the_tracker_starts_over_when_the_band_comes_in_after_the_room(performance):
    """Seconds of the room alone (its noise 20 dB under the band, as a machine waiting for the band,
    or playing alone before it, hears), then the band: the tracker starts over where the band came
    in (its first estimate and its tempo prior count from there) and finds the band's beat; the
    2-bar break and the band 10 dB down for 8 bars are no new start."""
    clip = material.with_room_before(material.make_clip(*performance, "steady", "band", bars=10), 4.0)
    tracker = tracked(clip)
    assert tracker.entries == 1
    assert abs(tracker.started / tracker.fps - clip.beats[0]) < 0.1
    beats = np.array(tracker.beats)
    # (the room alone gave it beats, sure ones: docs/follow.md, "What does not work yet")
    assert material.scored_beats(clip, beats[beats > clip.beats[0]]) > 0.9
    for scenario, gains in (("break", ()), ("steady", ((2, -10.0), (10, 0.0)))):
        again = tracked(material.make_clip(*performance, scenario, "band", bars=16, gains_db=gains))
        assert again.entries == 0


def test_a_rooms_noise_alone_is_not_taken_for_a_band(performance):
    """A room's noise alone (20 dB under the band's level), no gate: the fold alone was sure of it
    (in 53% of the readings over 24 clips; each clip had the 4 sure readings in a row that lock the
    follower). The beat test (the autocorrelation's comb against the noise's) keeps it unsure:
    over 6 rooms of 20 s, under 5% of the readings sure, and a lock-worthy run in at most 2."""
    from drummachine.core.follow import FollowConfig

    clip = material.make_clip(*performance, "steady", "band", bars=4)
    level = float(np.sqrt(np.mean(clip.audio[np.abs(clip.audio) > 1e-3] ** 2))) * 0.1
    lock = FollowConfig()
    sure_share, runs = [], 0
    for seed in range(6):
        room = material.room_noise(20 * clip.rate, np.random.default_rng(seed), level).astype(np.float32)
        tracker = BeatTracker(clip.rate, clip.bpm)
        sure, run, longest = [], 0, 0
        for i in range(0, room.size, clip.rate // 20):  # a reading every 50 ms, as the listener sends them
            tracker.process(room[i:i + clip.rate // 20])
            ok = tracker.estimate().confidence >= lock.lock_confidence
            sure.append(ok)
            run = run + 1 if ok else 0
            longest = max(longest, run)
        sure_share.append(np.mean(sure))
        runs += longest >= lock.lock_readings
    assert np.mean(sure_share) < 0.05 and runs <= 2, (sure_share, runs)


def test_an_idle_inputs_hiss_is_not_a_band():
    """An interface's or a desk send's hiss at -80 dBFS, nothing playing: with no gate set, the
    silence level is the gate, and no reading is sure in 6 rooms of 15 s. With the gate put under
    it (-100 dBFS, as nothing was before) the tracker heard a beat in half of them, long enough to
    lock the follower (4 sure readings in a row), and the machine playing alone followed it."""
    from drummachine.core.follow import FollowConfig
    from drummachine.listen.loudness import SILENCE_DB

    assert SILENCE_DB > -80.0

    def longest_sure_run(gate_db):
        runs = []
        for seed in range(6):
            hiss = material.room_noise(15 * 16000, np.random.default_rng(seed), 1e-4).astype(np.float32)
            tracker = BeatTracker(16000, 115.0, gate_db=gate_db)
            run = longest = 0
            for i in range(0, hiss.size, 800):  # a reading every 50 ms
                tracker.process(hiss[i:i + 800])
                run = run + 1 if tracker.estimate().confidence >= FollowConfig().lock_confidence else 0
                longest = max(longest, run)
            runs.append(longest)
        return runs

    assert max(longest_sure_run(None)) == 0
    assert sum(run >= FollowConfig().lock_readings for run in longest_sure_run(-100.0)) >= 2


def test_under_the_listen_gate_nothing_is_heard(performance):
    """A room's noise alone (20 dB under the band) is nothing under a gate between the two: no
    confidence while only the room plays (the tracker can be sure of the noise alone: docs/
    follow.md), and the band over it tracked as without the gate."""
    clip = material.with_room_before(material.make_clip(*performance, "steady", "band", bars=10), 6.0)
    tracker = BeatTracker(clip.rate, clip.bpm, record_beats=True, gate_db=-35.0)
    room_loudness, room_confidence = [], []
    for i in range(0, clip.audio.size, 160):
        tracker.process(clip.audio[i:i + 160])
        if tracker.now < clip.beats[0] - 0.1:
            room_loudness.append(tracker.loudness_db())
            room_confidence.append(tracker.estimate().confidence)
    assert max(room_loudness[40:]) < -35.0  # the gate is over the room (past the first 400 ms)
    assert max(room_confidence) == 0.0
    beats = np.array(tracker.beats)
    assert material.scored_beats(clip, beats[beats > clip.beats[0]]) > 0.9


@pytest.mark.parametrize("which", [0, 6])  # the rock at 115, the pop at 142
def test_a_band_heard_from_the_first_sample_is_sure_within_6_beats(which):
    """The band already playing when listening starts (no entry to start over at, so the beat
    test holds): the tracker gives the follower its 4 sure readings within 6 band beats (4.9 and
    5.6). The test's comb on the first seconds was read at the song's tempo, which the tracker
    takes for its first 5 s, not at the tempo its autocorrelation heard: the rock read 0.2 at 115
    and 0.77 at the 115.5 it was heard at, and was sure after 10 beats, the pop after 8.9."""
    from drummachine.core.follow import FollowConfig

    lock = FollowConfig()
    path, bpm = material.validation_performances(8)[which]
    clip = material.make_clip(path, bpm, "steady", "band", bars=6)
    tracker = BeatTracker(clip.rate, clip.bpm)
    hop, run, sure_at = clip.rate // 20, 0, None
    for i in range(0, clip.audio.size, hop):  # a reading every 50 ms, as the listener sends them
        tracker.process(clip.audio[i:i + hop])
        run = run + 1 if tracker.estimate().confidence >= lock.lock_confidence else 0
        if run >= lock.lock_readings:
            sure_at = (i + hop) / clip.rate
            break
    assert sure_at is not None
    assert (sure_at - clip.beats[0]) / (60.0 / bpm) < 6.0


def test_a_band_away_from_the_songs_tempo_is_heard_there_from_the_start(performance):
    """The tracker takes the song's tempo for its first 5 s (its autocorrelation, on a window still
    mostly empty, was 2% off a drummer at the song's tempo), unless the band is clearly elsewhere:
    counted in 4% faster than the song, it is heard at the band's tempo within 5 s (the song's
    tempo held there, and the tracker's continuity kept a live run 3% slow)."""
    clip = material.make_clip(*performance, "steady", "band", bars=4)
    tracker = BeatTracker(clip.rate, clip.bpm * 0.96)
    five = int(5.2 * clip.rate)
    for i in range(0, five, 800):
        tracker.process(clip.audio[i:min(i + 800, five)])
    assert tracker.estimate().bpm == pytest.approx(clip.bpm, rel=0.02)


def test_a_lock_on_the_off_beat_moves_to_the_beat(performance):
    """The keys come in alone on the "and" for 3 s, then the band enters on the beat and the keys
    keep pushing the off-beat, softer: the first lock is on the off-beat, and the grid's own
    prior held it there for the whole clip (as it held 2 of 8 POP909 songs for 20-55 s). The
    profile over the beat finds the beat stronger and the loop moves half a beat once."""
    clip = material.make_clip(*performance, "steady", "band", bars=16)
    period = 60.0 / clip.bpm
    audio = material.with_keys_on_the_off_beat(clip)

    def on_the_beat(flip_ratio):
        tracker = BeatTracker(clip.rate, clip.bpm, record_beats=True)
        tracker.flip_ratio = flip_ratio
        for i in range(0, audio.size, 160):
            tracker.process(audio[i:i + 160])
        beats = np.array(tracker.beats)
        first = beats[(beats > 2.0) & (beats < 6.0)]
        last = beats[beats > clip.beats[-16]]
        off = lambda b: np.abs(((b - clip.beats[0]) / period + 0.5) % 1.0 - 0.5)  # noqa: E731 (beats off the beat)
        return np.mean(off(first) < 0.1), np.mean(off(last) < 0.1), tracker.flips

    assert on_the_beat(0.0) == (0.0, 0.0, 0)  # without the check: off-beat from start to end
    first, last, flips = on_the_beat(BeatTracker(16000, 120.0).flip_ratio)
    assert first == 0.0 and last == 1.0 and flips == 1


def off_the_beat(times, clip) -> np.ndarray:
    """How far each time is from the clip's nearest beat, in beats (0: on it, 0.5: on the "and")."""
    period = 60.0 / clip.bpm
    return np.abs(((np.asarray(times) - clip.beats[0]) / period + 0.5) % 1.0 - 0.5)


def test_taps_on_the_beat_hold_the_tracker_there_against_a_stronger_and(performance):
    """Keys on every "and", alone for 3 s and then as loud as the band's beat or louder: the
    tracker locks on the "and" and nothing it hears puts it right (the beat/off-beat check sees
    the "and" the stronger). On real recordings whose beat and "and" were about as strong it sat
    on either (docs/follow.md, "Recorded music"). The musician's taps say where the beat is: from
    there the tracker stays on it, and the check no longer moves it; a new entry of the band
    forgets them."""
    clip = material.make_clip(*performance, "steady", "band", bars=12)
    audio = material.with_keys_on_the_off_beat(clip, later=1.0)
    tap_at = 8.0
    told = float(clip.beats[np.searchsorted(clip.beats, tap_at)]) + 0.015  # a foot 15 ms late

    def beats(hinted: bool):
        tracker = BeatTracker(clip.rate, clip.bpm, record_beats=True)
        for i in range(0, audio.size, 160):
            if hinted and i == int(tap_at * clip.rate) // 160 * 160:
                tracker.hint_beat(told)
            tracker.process(audio[i:i + 160])
        return np.array(tracker.beats), tracker

    before, _ = beats(False)
    assert np.mean(off_the_beat(before[before > 4.0], clip) > 0.4) > 0.9  # on the "and" to the end
    after, tracker = beats(True)
    assert np.mean(off_the_beat(after[(after > 4.0) & (after < tap_at)], clip) > 0.4) > 0.9
    later = after[after > tap_at + 1.0]
    assert np.mean(off_the_beat(later, clip) < 0.1) > 0.9 and tracker.flips == 0 and tracker.tapped
    tracker._start_over()  # the band came in again (after a break, from the room)
    assert not tracker.tapped


def test_taps_while_following_put_the_machine_on_the_bands_beat(performance):
    """The whole loop on a manual clock (the real tracker and follower through the engine, the
    stand-in generator: benchmarks/follow.py's replay): the machine follows the band on the "and"
    (keys louder than the band's beat there); the musician taps 3 beats with the foot (``tap``,
    as for tap tempo): the tracker is told (as the listening process is, ``Listener.hint_beat``),
    and the machine joins the band's beat in one go at its first beat after the readings from the
    tapped grid came (not at the taps' own tempo and bar line: extrapolated a bar or two, three
    taps on a real recording were up to half a beat off its beat), and stays on it."""
    from dataclasses import replace

    import follow

    base = material.make_clip(*performance, "steady", "band", bars=12)
    clip = replace(base, audio=material.with_keys_on_the_off_beat(base, later=1.0))
    taps = tuple(clip.beats[24:27] + 0.01)
    original = follow.clip_of
    follow.clip_of = lambda *args, **kwargs: clip
    try:
        row = follow.replay("steady", performance, with_beats=True, taps=taps)
    finally:
        follow.clip_of = original
    ours = np.array(row["beats_s"])
    assert np.mean(off_the_beat(ours[(ours > 6.0) & (ours < taps[-1])], clip) > 0.4) > 0.9
    joined = ours[ours > taps[-1] + 0.5 + 60.0 / clip.bpm]  # the readings after the taps, the next beat
    off = off_the_beat(joined, clip)
    # never back on the "and"; the keys, louder than the band's beat, pull the held beat up to 0.13
    # of a beat (70 ms) and back
    assert joined.size > 8 and off[:3].max() < 0.05 and off.max() < 0.25 and np.median(off) < 0.1, off


def test_a_tracker_started_again_goes_on_from_the_state_it_was_handed(performance):
    """The listening process started again mid-song (it died; the kit's ports came): its tracker
    takes over the last one's state through the shared block and, from its first beat, is as near
    the band as the tracker that never stopped (here, in the ramp, up to 38 ms early by the 4th beat).
    From cold, the rock's accelerando was heard at 120.7 bpm for 116.4, its first beats 69-122 ms
    early (docs/follow.md; 31-122 with the fold's period searched): the follower re-locked onto
    them."""
    from drummachine.listen.shared import TrackerStateBlock

    clip = material.make_clip(*performance, "accelerando", "band", bars=16)
    hop, restart_at, gap = clip.rate // 20, int(15.0 * clip.rate), int(0.35 * clip.rate)
    never_stopped = BeatTracker(clip.rate, clip.bpm, record_beats=True)
    dropped = BeatTracker(clip.rate, clip.bpm)
    for i in range(0, restart_at, hop):
        never_stopped.process(clip.audio[i:i + hop])
        dropped.process(clip.audio[i:i + hop])
    block = TrackerStateBlock()
    try:
        block.save(dropped.state(), saved_at=0.0, mono_now=0.0)
        state = block.taken()
    finally:
        block.close()
    for i in range(restart_at, restart_at + gap, hop):
        never_stopped.process(clip.audio[i:i + hop])
    offset = (restart_at + gap) / clip.rate  # the new stream's second 0 on the clip
    resumed = BeatTracker(clip.rate, never_stopped.prior_bpm, record_beats=True)
    resumed.resume(state, offset)
    for i in range(restart_at + gap, restart_at + gap + 6 * clip.rate, hop):
        never_stopped.process(clip.audio[i:i + hop])
        resumed.process(clip.audio[i:i + hop])
        ours, theirs = resumed.estimate(), never_stopped.estimate()
        assert ours.confidence < 0.5 or ours.bpm == pytest.approx(theirs.bpm, rel=0.01), (i / clip.rate, ours, theirs)

    def off_the_band(beats, shift):
        b = np.array(beats) + shift
        b = b[(b > offset) & (b < offset + 6)]
        return np.abs(b - clip.beats[np.abs(b[:, None] - clip.beats[None, :]).argmin(axis=1)])

    ours, theirs = off_the_band(resumed.beats, offset), off_the_band(never_stopped.beats, 0.0)
    assert ours.size >= 10 and ours[:4].max() < min(0.050, theirs[:4].max() + 0.005), (ours, theirs)
    assert ours.max() <= theirs.max() + 0.005, (ours, theirs)
    with pytest.raises(ValueError):
        resumed.resume(state, offset)  # only before the first sample


def test_a_state_left_too_long_before_or_at_another_rate_is_not_taken_over(performance, capsys):
    """The listening process takes over its predecessor's state only if it was saved within
    RESUME_WITHIN of its own first sample (longer: a JACK restart; the band may have stopped or
    moved) and framed at the same rate; otherwise it starts cold, and says which."""
    from drummachine.listen.process import RESUME_WITHIN, _take_over

    clip = material.make_clip(*performance, "steady", "band", bars=6)
    played = BeatTracker(clip.rate, clip.bpm)
    played.process(clip.audio)
    left = played.state() | {"mono_now": 100.0}

    class Timing:  # the new stream's sample 0 heard ``after`` s after the state was saved
        speed = 1.0

        def __init__(self, after):
            self.after = after

        def heard(self, sample):
            return 100.0 + self.after + sample / clip.rate

    for after, rate, taken in ((0.4, clip.rate, True), (RESUME_WITHIN + 0.5, clip.rate, False),
                               (0.4, 22050, False)):
        tracker = BeatTracker(rate, clip.bpm)
        _take_over(tracker, left, Timing(after), latency=0.0)
        said = capsys.readouterr().err
        assert (tracker.bpm > 0) == taken and said.count("\n") == 1, said
        assert ("taken over from the last listening process" in said) == taken, said


def test_silence_and_clipping_give_no_confidence_and_no_error():
    tracker = BeatTracker(16000, 120.0)
    tracker.process(np.zeros(16000 * 4, np.float32))
    assert tracker.estimate().confidence == 0.0
    clipped = np.sign(np.sin(np.arange(16000 * 4) * 0.3)).astype(np.float32)  # a square wave at full scale
    tracker.process(clipped)
    est = tracker.estimate()
    assert est.loudness_db > -1.0 and np.isfinite(est.bpm)


@pytest.mark.parametrize("rate,kit", [(48000, True), (44100, True), (48000, False), (16000, False)])
def test_an_estimate_is_never_made_before_the_samples_the_tracker_says_it_needs(rate, kit):
    """The listening process leaves the samples in its ring until ``samples_before_update``: an
    estimate the tracker could make sooner would be written late. Blocks of any size, the canceller
    (and its framing) in the way or not; and the bound is near: an estimate comes within 25 ms of it."""
    from drummachine.listen.own_sound import open_canceller

    rng = np.random.default_rng(rate)
    tracker = BeatTracker(rate, 120.0)
    if kit:
        tracker.canceller = open_canceller(tracker.arate)[0]
        if tracker.canceller is None:
            pytest.skip("libspeexdsp is not installed")
    x = (rng.standard_normal(rate * 3) * 0.1).astype(np.float32)
    taken, after = 0, []
    while taken < x.size - 2000:
        n = int(rng.integers(1, 700))
        needed, before = tracker.samples_before_update(), tracker.updates
        tracker.process(x[taken:taken + n], 0.5 * x[taken:taken + n] if kit else None)
        taken += n
        if tracker.updates > before:
            after.append(tracker.samples - needed)
    assert len(after) >= 55  # 3 s: an estimate each 50 ms
    assert min(after) >= 0
    assert max(after) <= 0.025 * rate + 700


def test_the_material_knows_its_truth(performance):
    clip = material.make_clip(*performance, "break", "drums", bars=16)
    assert (~clip.audible).sum() == 8  # two bars of silence
    quiet = clip.audio[int(clip.beats[41] * clip.rate):int(clip.beats[46] * clip.rate)]
    loud = clip.audio[int(clip.beats[20] * clip.rate):int(clip.beats[30] * clip.rate)]
    assert np.sqrt(np.mean(quiet ** 2)) < 0.2 * np.sqrt(np.mean(loud ** 2))
    assert clip.tempo[-1] == pytest.approx(clip.bpm * 1.02)
    assert material.f_measure(clip.beats + 0.05, clip.beats) == 1.0
    assert material.f_measure(clip.beats + 0.08, clip.beats) == 0.0


# --- on a real JACK server ----------------------------------------------------------------------

def test_an_input_to_act_on_is_said_once_in_the_log(caplog):
    """Clipping (at most every CLIPPING_SAID_EVERY: a hot band clips on every hit), gone and back:
    one line each, naming the input; a headless `play` has nothing but its log to say them."""
    from drummachine.listen.listener import CLIPPING_SAID_EVERY, InputStateSaid

    said = InputStateSaid("band:out")
    with caplog.at_level(logging.WARNING, logger="drummachine"):
        for t, state in enumerate(["starting", "listening", "clipping", "clipping", "listening", "clipping",
                                   "listening", "input gone", "input gone", "listening", "silence"]):
            said(state, float(t))
        said("clipping", CLIPPING_SAID_EVERY + 2.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert "band:out clips" in lines[0] and "turn its send down" in lines[0]
    assert "band:out is gone" in lines[1] and "holding the tempo" in lines[1]
    assert "band:out is back" in lines[2]
    assert "band:out clips" in lines[3]  # clipping again, 30 s on


@pytest.mark.jack
def test_a_missing_port_is_one_clear_line(jack_server):
    from drummachine.listen.listener import Listener
    from drummachine.core.transport import MonotonicClock

    with pytest.raises(DrumMachineError) as err:
        Listener("no-such-band", 120.0, MonotonicClock())
    assert "no-such-band" in str(err.value) and "ports:" in str(err.value)


@pytest.mark.jack
def test_a_listening_process_that_died_is_started_again(jack_server, caplog):
    """The listening process killed (SIGKILL: a crash, the OOM killer) mid-song: the link finds
    it gone (or, alive, capturing nothing for STALLED_SECONDS), starts another on the same input
    and block, and the readings go on (before, the follower held for the rest of the set:
    "listener stopped")."""
    import os
    import signal

    from drummachine.core.transport import MonotonicClock
    from drummachine.listen.listener import STALLED_SECONDS, Listener
    from drummachine.listen.process import RESUME_WITHIN

    caplog.set_level(logging.INFO, logger="drummachine")
    readings = []
    with Listener("system:capture_1", 120.0, MonotonicClock()) as band:
        band.link(readings.append)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(readings) < 5:
            time.sleep(0.05)
        assert len(readings) >= 5
        first = band.proc.pid
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() < killed + STALLED_SECONDS + 15 and not band.restarts:
            time.sleep(0.1)
        assert band.restarts == 1 and band.alive and band.proc.pid != first
        # its tracker went on from the state the killed one left in shared memory (silence here)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any("taken over" in r.message for r in caplog.records):
            time.sleep(0.1)
        said = [r.message for r in caplog.records if "taken over from the last listening process" in r.message]
        assert len(said) == 1, [r.message for r in caplog.records]
        assert float(re.search(r"\(([\d.]+) s not heard\)", said[0]).group(1)) < RESUME_WITHIN, said
        before = len(readings)
        time.sleep(1.0)
        assert len(readings) > before + 5, "readings go on from the new listening process"
        assert readings[-1].seq > readings[before - 1].seq


@pytest.mark.jack
def test_the_listening_process_takes_the_beat_the_musician_tapped(jack_server, performance):
    """The listening process on JACK: the band (keys louder on the "and" than its beat) is heard
    on the "and"; a beat tapped on the engine's clock (``Engine.band_beat_tapped``, which ``tap``
    sets while following the beat) goes through the link (``Listener.hint_beat``) and the shared
    block to its tracker, and the readings' beat is the band's from then on, never the "and" again."""
    from drummachine.core.transport import MonotonicClock
    from drummachine.listen.listener import Listener

    clip = material.make_clip(*performance, "steady", "band", rate=48000, bars=8)
    band = material.BandPlayer(0.25 * material.with_keys_on_the_off_beat(clip, later=1.0), "band-tapped")
    period = 60.0 / clip.bpm
    try:
        with Listener(band.port_name, clip.bpm, MonotonicClock(), client="listen-tapped") as listener:
            band.start()

            def readings_until(clip_seconds):
                got = []
                while not band.done and band.pos / band.rate < clip_seconds:
                    r = listener.reading()
                    if r is not None and r.confidence >= 0.5 and (not got or r.seq != got[-1].seq):
                        got.append(r)
                    time.sleep(0.05)
                return got

            def off(got):  # the readings' next beat against the band's beats as they went out, in beats
                heard = band.heard(clip.beats)
                return np.array([abs(((r.next_beat - heard[0]) / period + 0.5) % 1.0 - 0.5) for r in got])

            tap = [None]
            listener.link(lambda r: None, lambda: tap[0])  # the link the engine's taps go through
            before = readings_until(8.0)
            k = int(np.searchsorted(clip.beats, band.pos / band.rate))
            tap[0] = (1, float(band.heard(clip.beats[k - 1:k])[0]))  # the beat just gone, as a foot taps it
            readings_until(9.5)
            after = readings_until(clip.seconds - 0.5)
    finally:
        band.close()
    assert len(before) > 20 and np.mean(off(before[-20:]) > 0.4) > 0.9, off(before[-20:])
    # never back on the "and"; the keys, louder than the beat, pull the held beat up to 0.13 of a
    # beat (70 ms) and back, as in the manual-clock run above
    assert len(after) > 20 and off(after).max() < 0.25 and np.median(off(after)) < 0.1, off(after)


@pytest.fixture
def jack_at_1024(monkeypatch):
    from .conftest import own_jack_server

    yield from own_jack_server(monkeypatch, 2, "listen", period=1024)


def hear_the_band(capture: str, bars: int) -> dict:
    """The band player and the listening process on the JACK server named in the environment,
    what the listener heard against the band (run in a process of its own: libjack holds one
    server per process, and this test's server is not the suite's)."""
    import jack

    from drummachine.core.transport import MonotonicClock
    from drummachine.listen.listener import Listener

    performance = material.validation_performances(1)[0]
    clip = material.make_clip(*performance, "steady", "band", rate=48000, bars=bars)
    player = material.BandPlayer(clip.audio, "band-t1")
    readings = []
    out = {}
    try:
        with Listener(player.port_name, clip.bpm, MonotonicClock(), client="listen-t1") as listener:
            out["capture"] = listener.capture
            look = jack.Client("listen-t1-look", no_start_server=True)
            out["connected"] = any(p.name.startswith("listen-t1") for p in look.get_all_connections(player.port_name))
            look.close()
            listener.link(readings.append)
            player.start()
            while not player.done:
                time.sleep(0.1)
            truth = player.heard(clip.beats)
            player.close()
            player = None
            time.sleep(1.5)
            out.update(status=listener.status(), alive=listener.alive, gone_confidence=listener.reading().confidence)
    finally:
        if player is not None:
            player.close()
    late = [r for r in readings if r.time > truth[12] and r.time < truth[-2] and r.confidence > 0.5]
    out["near"] = [float((r.next_beat - truth)[np.argmin(np.abs(truth - r.next_beat))]) for r in late]
    out["bpm"] = float(np.median([r.bpm for r in late])) if late else 0.0
    out["song_bpm"] = float(clip.bpm)
    return out


@pytest.mark.jack
@pytest.mark.slow
@pytest.mark.parametrize("capture, bars", [("portaudio", 10), ("callback", 6)])
def test_the_listening_process_hears_the_band_and_notices_when_it_goes(jack_at_1024, capture, bars, monkeypatch):
    """On JACK at 1,024 frames a period (a Pi's usual), the band's beat where the band plays it,
    through PortAudio's reads and through the fallback's callback: both time a block's last sample
    at its period's start, right for a sound card's port (its capture latency says the period
    before); a player's port in the graph (no capture latency) wrote it for that very period, a
    period later: the readings were 21 ms early here while the latency taken off was held at 0 or
    more (the tracker's own bias on this drummer is about -5 ms). The band goes: "input gone"."""
    import json
    import subprocess

    monkeypatch.setenv("DRUMMACHINE_LISTEN_CAPTURE", capture)
    code = (f"import json; from tests.test_listen import hear_the_band; "
            f"print(json.dumps(hear_the_band({capture!r}, {bars})))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # PortAudio: no Python in JACK's real-time thread, its C client connected to the band
    assert out["capture"] == capture and out["connected"]
    assert out["status"] == "input gone" and out["alive"] and out["gone_confidence"] == 0.0
    near = np.array(out["near"])
    assert near.size > 20 and np.mean(np.abs(near) < 0.07) > 0.8
    assert abs(np.median(near)) < 0.012, np.median(near)
    assert out["bpm"] == pytest.approx(out["song_bpm"], rel=0.02)


@pytest.mark.jack
def test_play_with_an_input_that_is_not_there_plays_on(jack_server, tmp_path):
    r = run_cli("play", "--headless", "--fake-model", "--no-audio", "--listen", "no-such-band", "--duration", "2",
                "--log", tmp_path / "play.log")
    assert r.returncode == 0, r.stderr
    assert "playing without following" in r.stderr
    assert "Traceback" not in r.stderr
    assert "played" in r.stderr.splitlines()[-1]


@pytest.mark.jack
@pytest.mark.waiting
def test_an_input_that_comes_after_play_is_listened_to_from_then_on(jack_server, tmp_path):
    """`--listen` names a port that is not there at the start (the band's interface, or its
    bridge, switched on after `play`): the machine plays by its own tempo, looks for the port every
    2 s, and listens once it is there (before, it played without following for the whole set).
    The band here is jack_metro's click at 120, started 3 s in; the machine, asked for 116,
    follows it there."""
    import subprocess

    from .conftest import play_listening_for_a_late_band

    log = tmp_path / "play.log"
    play = play_listening_for_a_late_band("lateband", log, 16)
    metro = None
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (log.exists() and "first beat" in log.read_text()):
            time.sleep(0.1)
        assert "listening for it every few seconds" in log.read_text(), log.read_text()
        time.sleep(3.0)
        metro = subprocess.Popen(["jack_metro", "-n", "lateband", "-b", "120"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        _, err = play.communicate(timeout=40)
    finally:
        if play.poll() is None:
            play.kill()
        if metro is not None:
            metro.terminate()
            metro.wait(10)
    assert play.returncode == 0, err
    text = log.read_text()
    assert "listening to lateband:120_bpm" in text and "(the input is there now)" in text, text
    assert "Traceback" not in err + text
    m = re.search(r"played (\d+) steps, 0 generator misses", text)
    assert m and int(m.group(1)) >= 16 * 7.7 * 0.9, text  # 7.7-8 steps a second throughout: nothing waited
    tempos = [float(t) for t in re.findall(r"\| rock ([\d.]+) bpm \|", text)]
    assert tempos[0] == pytest.approx(116, abs=0.1) and tempos[-1] == pytest.approx(120, abs=0.6), tempos


@pytest.mark.jack
@pytest.mark.slow
def test_the_machine_follows_a_faster_band_and_its_dynamics(jack_server, performance, tmp_path):
    """Part 5 of issue 13: a player client is the band, `play --listen --follow all` follows it, a
    JACK MIDI recorder takes the clock and the notes out. The song is 4% slower than the band: the
    machine's beats must end up at the band's tempo (held, they would drift a beat away in 25
    beats). The band plays bars 5-8 10 dB down: the machine's notes, as the drum module gets them,
    must go down within 2 bars and come back within 2 bars of the band coming back."""
    import follow_instrument

    path, bpm = performance
    clip = material.make_clip(path, bpm, "steady", "band", rate=48000, bars=14,  # beats 40-52 judged
                              gains_db=((5, -10.0), (9, 0.0)))
    run = follow_instrument.run_one(clip, "all", lead_in=1.0, extra=("--no-audio", "--bpm", f"{bpm * 0.96:.3f}"))
    assert run["returncode"] == 0, run["summary"]
    ours = run["drummer_frames"] / follow_instrument.RATE
    band = run["band_frames"] / follow_instrument.RATE
    last = ours[(ours > band[40]) & (ours < band[-4])]
    assert last.size >= 8
    tempo = 60.0 / np.median(np.diff(last))
    assert tempo == pytest.approx(bpm, rel=0.02)  # held at the song's tempo it would be 4% off
    # The phase is not asserted: it comes in a few ms a beat and on this shared machine's dummy
    # JACK clock it is not yet tight after 14 bars (median 0.05-0.2 s from the band's beat in the
    # suite's runs; issue 13 is open for it, benchmarks/follow.py measures it)
    velocity = follow_instrument.velocity_by_bar(run)
    steps = follow_instrument.dynamics_steps(velocity, 5, 9, settle=2)
    assert steps["quiet_velocity"] < steps["loud_velocity"] - 8, (steps, velocity)
    assert steps["bars_to_lower"] is not None and steps["bars_to_lower"] <= 2, (steps, velocity)
    assert steps["bars_to_recover"] is not None and steps["bars_to_recover"] <= 2, (steps, velocity)


def test_read_times_late_by_a_wakeup_are_taken_at_their_lowest():
    """PortAudio's blocking reads are stamped when they return: late by the reader's wake-up
    (never early), and a block JACK skipped moves every later stamp up. The timing takes the
    lowest stamp over the last reads: within a fraction of a millisecond of the truth, the skip
    kept; the stamps as they came are off by the wake-up."""
    from drummachine.listen.capture import Timing

    rate, n = 48000, 256
    rng = np.random.default_rng(3)
    rows, lateness = [], {}
    for i in range(1, 2000):
        frames_true = i * n + (128 if i >= 1000 else 0)  # a skipped 128-frame block at read 1000
        late = rng.exponential(200.0) if i % 5 else 0.0  # most reads late, one in five on time
        lateness[i] = late
        rows.append([10.0 + (frames_true + late) / rate, i * n, frames_true + late])

    def truth(i):
        return 10.0 + (i * n + (128 if i >= 1000 else 0)) / rate

    envelope = Timing(np.array(rows), rate, exact=False)
    as_stamped = Timing(np.array(rows), rate, exact=True)
    late_reads = [i for i in range(20, 1999) if lateness[i] > 240 and not 1000 <= i < 1020]
    assert len(late_reads) > 100
    assert max(abs(envelope.heard(i * n) - truth(i)) for i in late_reads) < 0.5e-3
    assert np.median([abs(as_stamped.heard(i * n) - truth(i)) for i in late_reads]) > 4e-3


def test_what_the_listening_process_says_goes_to_the_engines_log(caplog, capsys):
    """The listening process's own lines (its kit's gain, its echo found, whether its kit is in
    what it hears) reach the engine's log, a record each, from a real process's standard error: they
    went to a headless `play`'s terminal, and behind the stage UI nowhere. A crash's lines go to the
    log and to the engine's standard error, where they went before; a line said again and again is
    logged once and counted."""
    import subprocess

    from drummachine.listen.listener import _said_to_the_log

    said = "listen: its own kit is not in what it hears (-0.5 dB taken out over its first notes)"
    crash = "Fatal Python error: Segmentation fault"
    failing = "listen: read: PaErrorCode: -9999"
    proc = subprocess.Popen([sys.executable, "-c", f"import sys; print({said!r}, file=sys.stderr); print(file=sys.stderr); "
                             f"[print({failing!r}, file=sys.stderr) for _ in range(50)]; "
                             f"print({crash!r}, file=sys.stderr)"], stderr=subprocess.PIPE, text=True)
    with caplog.at_level(logging.INFO, logger="drummachine"):
        _said_to_the_log(proc.stderr)
    proc.wait()
    assert [r.getMessage() for r in caplog.records if r.name == "drummachine"] == [
        said, failing, "listen: (the line before 49 times more)", crash]
    assert capsys.readouterr().err == crash + "\n"  # a crash's lines on the engine's standard error too


def test_a_band_is_heard_coming_in_where_its_loudness_rises_over_several_updates():
    """The room at 0.01 RMS, then a band 20 dB over it: the 400 ms loudness rises 11 dB in the first
    50 ms update and the rest in the next ones. One entry, heard over the rise as a whole; a band
    stepping up 10 dB from a quiet verse is no entry."""
    from drummachine.listen.loudness import BandLoudness

    rate, block = 16000, 800
    rng = np.random.default_rng(0)

    def entries(levels_seconds):
        loudness, heard = BandLoudness(int(0.4 * rate)), []
        for rms, seconds in levels_seconds:
            for _ in range(int(seconds * rate) // block):
                loudness.add((rms * rng.standard_normal(block)).astype(np.float32))
                heard.append(loudness.update(block / rate))
        return int(np.sum(heard))

    assert entries([(0.01, 2.0), (0.1, 2.0)]) == 1
    assert entries([(0.1, 2.0), (0.03, 4.0), (0.1, 2.0)]) == 0
