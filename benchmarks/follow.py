"""Follow the band (issue 13), measured.

``--tracker``: the beat trackers side by side on the same clips (benchmarks/follow_material.py:
validation-split drummers, five tempo curves, two mixes): beat F-measure at ±70 ms per scenario,
and CPU time per second of audio. Causal: a beat counts at the time predicted before it came.

``--instrument``: the whole instrument on a real JACK server: a player client feeds a clip into
drummachine's listening process, the engine plays (stand-in generator) and follows, a recorder
takes the MIDI out; the drummer's beats against the band's.

    python benchmarks/follow.py --tracker --out benchmarks/follow_tracker.json
    python benchmarks/follow.py --instrument --out benchmarks/follow.json

``--pop909 DIR``: the mix ``pop909`` is POP909's songs rendered with recorded instruments, music
from outside this repository (benchmarks/follow_outside.py), for ``--tracker``, ``--replay`` and
``--instrument``:

    python benchmarks/follow.py --tracker --pop909 DIR --performances 16 --mixes pop909 \
        --trackers own,own-no-flip,own-blind --out benchmarks/follow_pop909_tracker.json

``--underruns``: the mixer's underruns and the clients jackd blames, without --listen and with it
(PortAudio's capture; the Python callback's), in rotation, jack_simple_client in the graph:

    jackd -d dummy -r 48000 -p 128 > /tmp/jackd.log 2>&1 &
    python benchmarks/follow.py --underruns --jackd-log /tmp/jackd.log --out benchmarks/follow_underruns.json

``--instrument-bleed``: the machine's own kit bled into its listening input beside the band (a mic
on stage that hears the PA), at each of ``--bleed-levels`` dB:

    python benchmarks/follow.py --instrument-bleed --scenarios steady,accelerando \
        --bleed-levels off,-12,-6,0 --out benchmarks/follow_instrument_bleed.json

and the same with the listening process taking the kit out and keeping it, side by side, the kit
reaching the mic with a stage's reflections; and the tracker alone on the clips with the kit in
them, open loop (no JACK):

    python benchmarks/follow.py --instrument-bleed --scenarios steady,accelerando --bleed-levels=off,-12,-6,0 \
        --own-kit keep,out --bleed-room --out benchmarks/follow_instrument_own_kit_out.json
    python benchmarks/follow.py --own-kit-table --scenarios steady,accelerando --out benchmarks/follow_own_kit_table.json

and with the kit through PortAudio's JACK client, read from the mixer by time (``listen.kit_tap``),
against its JACK ports (each cell of ``benchmarks/follow_instrument_kit_by_time.json`` ran alone on
a fresh server, LEVEL each of off,-12,0,6):

    python benchmarks/follow.py --instrument-bleed --scenarios steady --bleed-levels=LEVEL --own-kit out \
        --bleed-room --kit-through portaudio|jack --out RUN.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import follow_material as material  # noqa: E402


def track_own(clip, block: int = 256) -> np.ndarray:
    from drummachine.listen.tracker import BeatTracker

    tracker = BeatTracker(clip.rate, clip.bpm, record_beats=True)
    for i in range(0, clip.audio.size, block):
        tracker.process(clip.audio[i:i + block])
    return np.array(tracker.beats)


def track_own_blind(clip, block: int = 256) -> np.ndarray:
    """The same tracker told nothing: a wide window (50..220 bpm) around a neutral 120."""
    from drummachine.listen.tracker import BeatTracker

    tracker = BeatTracker(clip.rate, 120.0, window=0.6, record_beats=True)
    tracker.prior_width = 10.0
    for i in range(0, clip.audio.size, block):
        tracker.process(clip.audio[i:i + block])
    return np.array(tracker.beats)


def track_own_no_flip(clip, block: int = 256) -> np.ndarray:
    """The shipped tracker without its beat/off-beat check (``FLIP_RATIO``): what the check does."""
    from drummachine.listen.tracker import BeatTracker

    tracker = BeatTracker(clip.rate, clip.bpm, record_beats=True)
    tracker.flip_ratio = 0.0
    for i in range(0, clip.audio.size, block):
        tracker.process(clip.audio[i:i + block])
    return np.array(tracker.beats)


def track_aubio(clip, hop: int = 256) -> np.ndarray:
    """aubio's causal tempo tracker, as shipped (method "default", 1024-sample window)."""
    import aubio

    tempo = aubio.tempo("default", 1024, hop, clip.rate)
    beats = []
    audio = clip.audio
    for i in range(0, audio.size - hop + 1, hop):
        if tempo(np.ascontiguousarray(audio[i:i + hop])):
            beats.append(float(tempo.get_last_s()))
    return np.array(beats)


TRACKERS = {"own": track_own, "own-no-flip": track_own_no_flip, "own-blind": track_own_blind, "aubio": track_aubio}


#: the POP909 folder (``--pop909``): its songs are the "pop909" mix (benchmarks/follow_outside.py)
OUTSIDE: dict = {"pop909": None, "skip": 0}
#: the recordings' folder (benchmarks/follow_recorded.py): the mix "recorded", a performance is a file there
RECORDED: dict = {"folder": None}


def performances_of(mix: str, count: int, split: str = "validation") -> list[tuple[str, float]]:
    """What a mix is made from: the drummers of the Groove split, or POP909's songs (``--pop909``)."""
    if mix == "pop909":
        import follow_outside

        if OUTSIDE["pop909"] is None:
            raise SystemExit("the pop909 mix needs --pop909 DIR (the POP909-Dataset's POP909 folder)")
        return follow_outside.single_tempo_songs(Path(OUTSIDE["pop909"]), count, skip=OUTSIDE["skip"])
    return material.validation_performances(count, split=split)


#: waiting for the band (replay): seconds the machine hears the room alone before the band begins
ROOM_BEFORE_BAND = 2.0


def clip_of(path: str, bpm: float, scenario: str, mix: str, kit: str = "builtin", lead_in_bars: int = 0,
            rate: int = 16000):
    """``lead_in_bars``: the clip starts that many bars before its first bar line (what the band
    played there: a pickup, or nothing). ``rate``: 16 kHz, the tracker's own rate (the material's
    windowed-sinc decimation), or the input's (48 kHz: the tracker decimates, as it does live)."""
    if mix == "pop909":
        import follow_outside

        return follow_outside.cached_clip(path, bpm, scenario, rate=rate, lead_in_bars=lead_in_bars)
    if mix == "recorded":
        import follow_recorded

        return follow_recorded.clip(Path(RECORDED["folder"]), follow_recorded.BY_FILE[path], rate=rate)
    return material.cached_clip(path, bpm, scenario, mix, rate=rate, kit=kit, lead_in_bars=lead_in_bars)


def tracker_table(performances: int, mixes, scenarios, trackers) -> dict:
    perfs = {mix: performances_of(mix, performances) for mix in mixes}
    rows = []
    for mix in mixes:
        for scenario in scenarios:
            for path, bpm in perfs[mix]:
                clip = clip_of(path, bpm, scenario, mix)
                row = {"mix": mix, "scenario": scenario, "performance": clip.name, "bpm": bpm, "seconds": round(clip.seconds, 2)}
                for name in trackers:
                    t0 = time.process_time()
                    try:
                        beats = TRACKERS[name](clip)
                    except ImportError as exc:
                        row[name] = None
                        row[f"{name}_error"] = str(exc)
                        continue
                    cpu = time.process_time() - t0
                    row[name] = round(material.scored_beats(clip, beats), 4)
                    row[f"{name}_cpu_per_s"] = round(cpu / clip.seconds, 5)
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for mix in mixes:
        for name in trackers:
            per = {}
            for scenario in scenarios:
                vals = [r[name] for r in rows if r["mix"] == mix and r["scenario"] == scenario and r.get(name) is not None]
                per[scenario] = round(float(np.mean(vals)), 4) if vals else None
            vals = [r[name] for r in rows if r["mix"] == mix and r.get(name) is not None]
            per["all"] = round(float(np.mean(vals)), 4) if vals else None
            cpu = [r[f"{name}_cpu_per_s"] for r in rows if r["mix"] == mix and f"{name}_cpu_per_s" in r]
            per["cpu_per_s"] = round(float(np.mean(cpu)), 5) if cpu else None
            summary[f"{mix}/{name}"] = per
    named = {mix: [(f"POP909/{Path(path).name}" if mix == "pop909" else path, bpm) for path, bpm in v] for mix, v in perfs.items()}
    return {"f_measure_tolerance_s": 0.07, "skip_beats": 8, "performances": named, "summary": summary, "clips": rows}


def own_kit_table(performances: int, scenarios, levels, quieter_db: float = 0.0) -> dict:
    """The tracker on the band with the machine's own kit in the input (``material.own_kit``: a
    drummer's groove on a steady grid at the song's tempo, half a beat off the band's; through a
    stage's reflections, ``material.with_own_kit``) at each level against the band (dB, or "off"),
    the kit kept in and taken out (``listen.own_sound``): beat F-measure at ±70 ms of the band's
    beats, the canceller's CPU per second of audio, and how much quieter it made the input while
    the kit played. Open loop: the kit does not follow (the instrument's own loop: --instrument-bleed).
    ``quieter_db``: the kit as it leaves the mixer (the canceller's reference) is that much quieter
    than the kit in the input (a quiet kit the desk makes up the level of)."""
    from drummachine.listen.own_sound import OwnSoundCanceller
    from drummachine.listen.tracker import BeatTracker

    def beats(audio, kit, bpm, cancel, block=256):
        tracker = BeatTracker(16000, bpm, record_beats=True, canceller=OwnSoundCanceller(16000) if cancel else None)
        t0 = time.process_time()
        for i in range(0, audio.size, block):
            tracker.process(audio[i:i + block], kit[i:i + block])
        return np.array(tracker.beats), time.process_time() - t0, tracker.canceller

    rows = []
    for scenario in scenarios:
        for path, bpm in material.validation_performances(performances):
            clip = material.cached_clip(path, bpm, scenario, "band", rate=16000)
            kit = material.own_kit(path, bpm, clip.seconds)
            kit = np.pad(kit, (0, max(0, clip.audio.size - kit.size)))[:clip.audio.size]
            reference = (kit * 10 ** (-quieter_db / 20)).astype(np.float32)
            for level in levels:
                heard = clip.audio if level == "off" else material.with_own_kit(clip, kit, float(level))
                row = {"scenario": scenario, "performance": path, "bpm": bpm, "kit_db": level,
                       "reference_quieter_db": quieter_db}
                kept, cpu_kept, _ = beats(heard, reference, bpm, False)
                out, cpu_out, canceller = beats(heard, reference, bpm, True)
                row.update(kept=round(material.scored_beats(clip, kept), 4), out=round(material.scored_beats(clip, out), 4),
                           canceller_cpu_per_s=round(max(cpu_out - cpu_kept, 0.0) / clip.seconds, 5),
                           removed_db=round(canceller.removed_db, 2),
                           reference_gain_steps=getattr(canceller, "gain_steps", None))
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for scenario in scenarios:
        for level in levels:
            cell = [r for r in rows if r["scenario"] == scenario and r["kit_db"] == level]
            summary[f"{scenario}/{level}"] = {k: round(float(np.mean([r[k] for r in cell])), 4)
                                               for k in ("kept", "out", "canceller_cpu_per_s", "removed_db")}
    return {"f_measure_tolerance_s": 0.07, "skip_beats": 8, "kit_offset_beats": 0.5,
            "reflections_ms_gain": material.REFLECTIONS, "summary": summary, "clips": rows}


def dynamics(performances: int = 4) -> dict:
    """The band 10 dB down from bar 8 to bar 16 (band mix, steady): the tracker's readings through
    the follower in mode "all", its intensity at each bar line (the engine's beats on the band's).
    How many bars until the intensity is down (below -0.2), and back (above -0.05)."""
    from drummachine.core.follow import BandReading, FollowConfig, Follower
    from drummachine.listen.tracker import BeatTracker

    rows = []
    for path, bpm in material.validation_performances(performances):
        clip = material.make_clip(path, bpm, "steady", "band", bars=24, gains_db=((8, -10.0), (16, 0.0)))
        tracker = BeatTracker(clip.rate, clip.bpm)
        follower = Follower(FollowConfig(mode="all"), clip.bpm)
        hop = clip.rate // 20
        beat, intensity, seq = 0, {}, 0
        for i in range(0, clip.audio.size, hop):
            tracker.process(clip.audio[i:i + hop])
            e = tracker.estimate()
            seq += 1
            follower.hear(BandReading(e.time, e.bpm, e.next_beat, e.confidence, e.loudness_db, e.onsets_per_second, seq))
            while beat < clip.beats.size and clip.beats[beat] - 0.06 <= e.time:
                corr = follower.on_beat(clip.beats[beat], clip.tempo[beat], e.time, bar_line=beat % 4 == 0)
                if beat % 4 == 0 and corr is not None and corr.intensity is not None:
                    intensity[beat // 4] = corr.intensity
                beat += 1
        down = next((b - 8 for b in range(8, 16) if intensity.get(b, 0.0) < -0.2), None)
        up = next((b - 16 for b in range(16, 24) if intensity.get(b, -1.0) > -0.05), None)
        rows.append({"performance": path, "bars_to_lower": down, "bars_to_recover": up,
                     "intensity_by_bar": {b: round(v, 3) for b, v in sorted(intensity.items())}})
        print(json.dumps(rows[-1]), flush=True)
    return {"step_db": -10.0, "clips": rows}


def oracle_tracker(clip, at: str):
    """The shipped tracker whose onset strength is an ideal beat detector's: a 10 ms bump at each
    of the band's audible beats as played (``at="played"``) or at the click itself (``"click"``).
    What is left of the phase error then is the tracker's loop and the follower, not the hearing."""
    from drummachine.listen.tracker import BeatTracker

    beats = (clip.played if at == "played" else clip.beats)[clip.audible]

    class OracleTracker(BeatTracker):
        def _onset_strength(self, flux: float) -> float:
            t = self.frame_time(self.frames)
            k = int(np.searchsorted(beats, t))
            d = min(abs(t - beats[max(0, k - 1)]), abs(t - beats[min(k, beats.size - 1)]))
            return float(np.exp(-0.5 * (d / 0.010) ** 2))

    return OracleTracker(clip.rate, clip.bpm, record_beats=True)


def replay(scenario: str, performance=None, mode: str = "beat", mix: str = "band", kit: str = "builtin",
           readings: dict | None = None, wait_for_band: bool = False, oracle: str | None = None,
           lead_in_bars: int = 0, room_before: float | None = None, rate: int = 16000,
           restart_at: float | None = None, restart_gap: float = 0.35, handed_over: bool = False,
           room_seed: int = 1, room_dbfs: float | None = None, room_snr_db: float = 20.0, with_beats: bool = False,
           taps=(), **config) -> dict:
    """The tracker and the engine's follower without JACK: the clip through the tracker, a reading
    every 50 ms handed to the engine (stand-in generator, manual clock) as the listener does; the
    engine's beat times as committed. Isolates the following from this machine's JACK timing.

    ``readings``: a cache for tuning the follower alone (benchmarks/follow_tune.py --cached): the
    tracker's readings and beats of a clip are kept there the first time and handed out again the
    next, without the tracker (whose tempo prior then stays the song's instead of following the
    engine's: a tuning aid, checked by a full replay).

    ``wait_for_band``: as ``play --wait-for-band``: the engine listens to the band's first bars
    (the count-in) and comes in on its beat once locked; the row then also says after how many
    band beats it came in and how many of its own beats it took from there to be locked.

    ``oracle``: "played" or "click": the tracker hears an ideal beat detector (``oracle_tracker``).

    ``lead_in_bars``: the clip starts that many bars early (``clip_of``): waiting for the band,
    whether the machine comes in on the band's "one" is then counted from where the band began.

    ``room_before``: seconds of the room alone before the band begins (the machine listening, or
    playing alone from cold); default ROOM_BEFORE_BAND waiting for the band, else none. Its noise
    is ``room_seed``'s, ``room_snr_db`` under the band, or at ``room_dbfs`` (an idle input's hiss).

    ``rate``: the clip's sample rate (``clip_of``): 48000 is what the tracker hears live.

    ``restart_at``: the listening process started again that many seconds in (it died, its input
    came back): the tracker dropped, no reading for ``restart_gap`` seconds, then a new tracker,
    cold, around the tempo the engine plays (benchmarks/follow_restart.py; not with ``readings``);
    the row then also holds the machine's and the band's beat times (``beats_s``, ``band_beats_s``),
    as it does with ``with_beats``.
    ``handed_over``: the new tracker goes on from the dropped one's state (``BeatTracker.resume``,
    as the listening process does from the state it left in shared memory).

    ``taps``: clip seconds at which the musician gives the "tap" command (the tracker is told of a
    beat tapped while following the beat, as the listening process is)."""
    import follow_instrument

    from drummachine.core.engine import Engine
    from drummachine.core.events import MemorySink
    from drummachine.core.fake_generator import FakeGenerator
    from drummachine.core.follow import BandReading, FollowConfig, Follower
    from drummachine.core.song import jam
    from drummachine.core.transport import ManualClock
    from drummachine.listen.tracker import BeatTracker

    path, bpm = performance or performances_of(mix, 1)[0]
    clip = clip_of(path, bpm, scenario, mix, kit, lead_in_bars, rate)
    room_before = (ROOM_BEFORE_BAND if wait_for_band else 0.0) if room_before is None else room_before
    if room_before > 0:  # the machine listens (or plays alone) before the band begins
        clip = material.with_room_before(clip, room_before, room_seed, snr_db=room_snr_db, dbfs=room_dbfs)
    clock = ManualClock(0.0)
    engine = Engine(FakeGenerator(), jam("rock", bpm), clock, [MemorySink()])
    engine.follower = Follower(FollowConfig(mode=mode, **config), bpm)
    key = (str(path), scenario, mix, kit, rate)
    cached = readings.get(key) if readings is not None else None
    tracker = None
    if cached is None:
        tracker = oracle_tracker(clip, oracle) if oracle else BeatTracker(clip.rate, bpm, record_beats=True)
    heard: list = []
    if wait_for_band:
        engine.wait_for_band = True
    else:
        engine.command("start")
    hop = clip.rate // 100
    beats, done, seq = [], 0, 0
    told, taps = None, sorted(taps or ())
    offset, restarted = 0.0, False  # a tracker started again: its stream time starts at its first sample
    for i in range(0, clip.audio.size, hop):
        if restart_at is not None and cached is None:
            if not restarted and i >= restart_at * clip.rate:
                left, tracker, restarted = tracker.state(), None, True
            elif tracker is None and i >= (restart_at + restart_gap) * clip.rate:
                tracker, offset = BeatTracker(clip.rate, engine.transport.bpm_at(engine.commit_cursor)), i / clip.rate
                if handed_over:  # its stream's seconds are the clip's less ``offset``, the dropped one's the clip's
                    tracker.resume(left, offset)
        if tracker is not None:
            tracker.process(clip.audio[i:i + hop])
        if (i // hop) % 5 == 0 and (cached is not None or tracker is not None):
            if cached is None:
                e = tracker.estimate()
                seq += 1
                reading = BandReading(e.time + offset, e.bpm, e.next_beat + offset if e.next_beat > 0 else 0.0,
                                      e.confidence, e.loudness_db, e.onsets_per_second, seq)
                heard.append(reading)
                # the prior follows the engine's tempo, as the listener's link sets it
                tracker.set_prior(engine.transport.bpm_at(engine.commit_cursor))
            else:
                reading = cached[0][seq]
                seq += 1
            engine.command("band", reading)
        engine.pump_generator()
        engine.pump()
        if engine.band_beat_tapped != told and tracker is not None:  # the musician tapped the band's beat
            told = engine.band_beat_tapped
            tracker.hint_beat(told[1] - offset)
        if taps and i >= taps[0] * clip.rate:  # ``taps``: the musician's foot, on the clip's clock
            engine.command("tap")
            del taps[0]
        for step in range(done, engine.commit_cursor):
            if step % 4 == 0:
                beats.append(engine.transport.time_of(step))
        done = engine.commit_cursor
        clock.advance(hop / clip.rate)
    raw = {"band_frames": clip.beats * follow_instrument.RATE, "played_frames": clip.played * follow_instrument.RATE,
           "drummer_frames": np.array(beats) * follow_instrument.RATE, "audible": clip.audible, "tempo": clip.tempo,
           "misses": None, "underruns": None, "listener_cpu_share": None, "summary": ""}
    if restart_at is not None:
        return follow_instrument.measure(raw, clip, scenario) | {"beats_s": beats, "band_beats_s": list(clip.beats),
                                                                 "performance": clip.name, "bpm": bpm}
    if cached is None and readings is not None:
        readings[key] = (heard, list(tracker.beats))
    tracker_beats = tracker.beats if cached is None else cached[1]
    row = follow_instrument.measure(raw, clip, scenario)
    row.update(decompose(clip, np.array(tracker_beats), np.array(beats)))
    if wait_for_band:
        row.update(coming_in(clip, np.array(beats)))
    row.update({"mode": mode, "performance": clip.name, "bpm": bpm, "mix": mix, "kit": kit, "oracle": oracle,
                "lead_in_bars": lead_in_bars, "room_before_seconds": room_before, "rate": rate,
                "tracker_entries": tracker.entries if isinstance(tracker, BeatTracker) else None})
    if with_beats:
        row.update({"beats_s": beats, "band_beats_s": list(clip.beats)})
    return row


def coming_in(clip, ours: np.ndarray, lock_error: float = 0.030) -> dict:
    """Waiting for the band: after how many of the band's beats the machine came in, and how many
    of its own beats from there until 4 in a row within ``lock_error`` of the band's (0: locked
    from its first beat)."""
    truth = clip.beats
    if ours.size < 4:
        return {"came_in_after_band_beats": None, "own_beats_to_lock_after_coming_in": None}
    k = np.clip(np.searchsorted(truth, ours), 1, truth.size - 1)
    nearest = np.where(np.abs(truth[k] - ours) < np.abs(truth[k - 1] - ours), truth[k], truth[k - 1])
    ok = np.abs(ours - nearest) < lock_error
    lock = next((i for i in range(ok.size - 3) if ok[i:i + 4].all()), None)
    beat_of_bar = int(np.argmin(np.abs(truth - ours[0]))) % 4 + 1  # the clip's first beat is a "one"
    return {"came_in_after_band_beats": round(float((ours[0] - truth[0]) / np.median(np.diff(truth))), 2),
            "came_in_on_beat_of_bar": beat_of_bar, "came_in_on_the_one": beat_of_bar == 1,
            "own_beats_to_lock_after_coming_in": lock,
            "coming_in_error_ms": round(float(ours[0] - nearest[0]) * 1000, 1)}


def decompose(clip, tracker_beats: np.ndarray, ours: np.ndarray, lock_error: float = 0.030) -> dict:
    """The phase error split, signed, per true audible beat from the machine's lock on: the tracker's
    own beat (its last prediction before the beat came) minus the truth, and what the follower adds
    (the machine's beat minus the tracker's). Positive: late. Medians and the 5/95 percentiles."""
    truth = clip.beats
    if tracker_beats.size < 2 or ours.size < 8:
        return {}

    def nearest(x, t):
        k = np.clip(np.searchsorted(x, t), 1, x.size - 1)
        return np.where(np.abs(x[k] - t) < np.abs(x[k - 1] - t), x[k], x[k - 1])

    ours_err = nearest(ours, truth) - truth
    ok = np.abs(ours_err) < lock_error
    lock = next((i for i in range(ok.size - 3) if ok[i:i + 4].all()), truth.size)
    sel = (np.arange(truth.size) >= lock) & clip.audible
    if not sel.any():
        return {}
    trk = nearest(tracker_beats, truth) - truth
    period = np.gradient(truth)
    gaps = np.abs(trk) > 0.35 * period  # no tracker beat near this one (it skipped or doubled one)
    added = ours_err - trk
    missed = int((sel & gaps).sum())
    sel &= ~gaps
    if not sel.any():
        return {"tracker_beats_missing": missed}

    def spread(x):
        return [round(float(v) * 1000, 1) for v in np.percentile(x[sel], (5, 50, 95))]

    return {"tracker_beats_missing": missed, "tracker_error_ms_p5_p50_p95": spread(trk), "follower_adds_ms_p5_p50_p95": spread(added),
            "machine_error_ms_p5_p50_p95": spread(ours_err),
            "tracker_abs_p95_ms": round(float(np.percentile(np.abs(trk[sel]), 95)) * 1000, 1)}


def replays(performances: int, split: str = "validation", mix: str = "band", kit: str = "builtin",
            scenarios=tuple(material.SCENARIOS), wait_for_band: bool = False, oracle: str | None = None,
            lead_in_bars: int = 0, room_before: float | None = None, rate: int = 16000) -> dict:
    rows = []
    for perf in performances_of(mix, performances, split):
        for scenario in scenarios:
            rows.append(replay(scenario, perf, mix=mix, kit=kit, wait_for_band=wait_for_band, oracle=oracle,
                               lead_in_bars=lead_in_bars, room_before=room_before, rate=rate))
            rows[-1]["split"] = split
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "phase_errors_ms"}), flush=True)
    return {"split": split, "performances": performances, "mix": mix, "kit": kit, "wait_for_band": wait_for_band,
            "oracle": oracle, "lead_in_bars": lead_in_bars, "room_before": room_before, "rate": rate,
            "clips": rows,
            "summary_median_over_performances": summarize(rows, scenarios)}


REPLAY_KEYS = ("phase_error_vs_played_ms_p95", "phase_error_ms_p95", "tempo_error_pct_p95", "largest_bar_tempo_change_pct",
               "band_beats_to_lock", "band_beats_to_lock_vs_played", "phase_error_vs_played_ms_p50",
               "phase_error_ms_p50", "break_tempo_drift_pct", "beats_to_relock_after_break",
               "came_in_after_band_beats", "own_beats_to_lock_after_coming_in", "sounds_after_ms",
               "phase_error_vs_sound_ms_p50", "phase_error_vs_sound_ms_p95", "largest_beat_move_ms",
               "beat_moves_over_20ms")


def played_floor(performances: int, split: str = "validation", scenarios=("steady",), skip_beats: int = 8) -> dict:
    """How far the band's own beat is from the truth (the click, moved by the drummer's median
    lead), per clip: the drummers drift ahead of the click and behind it over a few bars, and the
    band here plays where the drummer played. A machine exactly on the band's beat as played is
    this far off the truth; ``causal_8``: one that knew where the band played each past beat and
    put the next at the mean of the last 8 (what a follower can know at best)."""
    rows = []
    for path, bpm in material.validation_performances(performances, split=split):
        for scenario in scenarios:
            clip = material.cached_clip(path, bpm, scenario, "band")
            lead = clip.played - clip.beats
            use = clip.audible.copy()
            use[:skip_beats] = False
            causal = np.array([lead[max(0, i - 8):i].mean() if i else 0.0 for i in range(lead.size)])
            rows.append({"performance": path, "bpm": bpm, "scenario": scenario,
                         "played_vs_truth_ms_p95": round(float(np.percentile(np.abs(lead[use]), 95) * 1000), 1),
                         "causal_8_vs_truth_ms_p95": round(float(np.percentile(np.abs(causal[use]), 95) * 1000), 1)})
    summary = {sc: {k: round(float(np.median([r[k] for r in rows if r["scenario"] == sc])), 1)
                    for k in ("played_vs_truth_ms_p95", "causal_8_vs_truth_ms_p95")} for sc in scenarios}
    return {"rows": rows, "summary_median_over_performances": summary}


def summarize(rows: list[dict], scenarios) -> dict:
    """Medians over the performances per scenario; the signed decomposition as the medians of each
    clip's 5th, 50th and 95th percentiles; how many clips never locked."""
    summary = {}
    for scenario in scenarios:
        got = [r for r in rows if r["scenario"] == scenario]
        s = {k: round(float(np.median([r[k] for r in got if r.get(k) is not None])), 2)
             for k in REPLAY_KEYS if any(r.get(k) is not None for r in got)}
        s["never_locked"] = sum(r.get("band_beats_to_lock") is None for r in got)
        if any("came_in_after_band_beats" in r for r in got):  # waiting for the band
            s["locked_within_4_own_beats_of_coming_in"] = sum((r.get("own_beats_to_lock_after_coming_in") is not None
                                                               and r["own_beats_to_lock_after_coming_in"] <= 4)
                                                              for r in got)
            s["clips"] = len(got)
        for k in ("tracker_error_ms_p5_p50_p95", "follower_adds_ms_p5_p50_p95", "machine_error_ms_p5_p50_p95"):
            vals = [r[k] for r in got if r.get(k)]
            if vals:
                s[k] = [round(float(v), 1) for v in np.median(np.array(vals), axis=0)]
        summary[scenario] = s
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracker", action="store_true", help="compare the beat trackers on the clips")
    ap.add_argument("--instrument", action="store_true", help="the whole instrument on a JACK server")
    ap.add_argument("--dynamics", action="store_true", help="the band 10 dB down for 8 bars: the intensity")
    ap.add_argument("--instrument-dynamics", action="store_true",
                    help="the band 10 dB down for 8 bars, play --follow all on a JACK server: the machine's MIDI "
                         "velocities bar by bar (the shipped model and the stand-in)")
    ap.add_argument("--replay", action="store_true", help="tracker + follower through the engine, no JACK")
    ap.add_argument("--oracle", default=None, choices=("played", "click"),
                    help="--replay: the tracker hears an ideal beat detector (at the band's beats as played, "
                         "or at the click): what the loop and the follower leave")
    ap.add_argument("--floor", action="store_true",
                    help="how far the band's beat as played is from the truth (what no follower can take out)")
    ap.add_argument("--instrument-bleed", action="store_true",
                    help="the machine's own kit bled into its listening input (a mic on stage), at each --bleed-levels")
    ap.add_argument("--bleed-levels", default="off,-20,-12,0", help="--instrument-bleed: dB, or off")
    ap.add_argument("--own-kit-table", action="store_true",
                    help="the tracker with the machine's own kit in the input, kept and taken out (no JACK), "
                         "at each --kit-levels against the band")
    ap.add_argument("--kit-levels", default="off,-12,-6,0,6", help="--own-kit-table: dB against the band, or off")
    ap.add_argument("--kit-quieter", type=float, default=0.0, metavar="DB",
                    help="--own-kit-table: the kit as it leaves the mixer (the canceller's reference) this many dB "
                         "quieter than the kit in the input (the desk makes up its level)")
    ap.add_argument("--own-kit", default="out",
                    help="--instrument-bleed: 'out' (the listening process takes the kit out: the default), "
                         "'keep' (not given the kit's ports), or both: keep,out")
    ap.add_argument("--kit-through", default="jack", choices=("jack", "portaudio"),
                    help="--instrument-bleed: the kit through the engine's own JACK ports (the default where "
                         "JACK runs at the start), or through PortAudio's client (as where the server came "
                         "after play; as over ALSA): the listening process then reads it from the mixer by time")
    ap.add_argument("--bleed-room", action="store_true",
                    help="--instrument-bleed: the kit reaches the mic with a stage's reflections, not only the direct sound")
    ap.add_argument("--bleed-quiet-kit", type=float, default=0.0, metavar="DB",
                    help="--instrument-bleed: the machine plays a kit this many dB quieter than the built-in "
                         "(its loudest layers, as WAVs: play --kit DIR), bled into the input as loud as the "
                         "built-in would be (the desk makes up its level)")
    ap.add_argument("--bleed-lead-in", type=float, default=2.0,
                    help="--instrument-bleed: the band comes in this long after the 4 s play is given to start "
                         "(its kit starts about 1.5 s after play does, with the host: 2 puts the band about 4.5 s "
                         "after the machine's first notes, -1.6 about 1 s after, in its kit's first 1.5 s)")
    ap.add_argument("--kill-listener-at", type=float, default=None, metavar="SECONDS",
                    help="--instrument-bleed: the listening process killed this many seconds into the band's clip "
                         "(as a crash): the machine's beats before and after, and when it follows again")
    ap.add_argument("--performances", type=int, default=8)
    ap.add_argument("--mixes", default=None, help="--tracker: the mixes; --replay: the mix (band)")
    ap.add_argument("--split", default="validation", choices=("train", "validation"), help="--replay: the split")
    ap.add_argument("--kit", default="builtin", help="--replay: the drums' kit (mix drums): builtin or a Hydrogen kit")
    ap.add_argument("--scenarios", default=",".join(material.SCENARIOS))
    ap.add_argument("--wait-for-band", action="store_true",
                    help="--replay: as play --wait-for-band (the count-in: the machine comes in once locked)")
    ap.add_argument("--lead-in-bars", type=int, default=0,
                    help="--replay: each clip starts this many bars before its first bar line (the band's "
                         "pickup there, or silence): with --wait-for-band, is the machine's first beat the band's one")
    ap.add_argument("--room-before", type=float, default=None, metavar="SECONDS",
                    help=f"--replay: seconds of the room alone before the band begins (default {ROOM_BEFORE_BAND:g} "
                         "with --wait-for-band, else 0)")
    ap.add_argument("--rate", type=int, default=16000,
                    help="--replay: the clips' sample rate: 16000 (the tracker's own, decimated by the material's "
                         "windowed sinc) or the input's, 48000 (the tracker decimates it, as live)")
    ap.add_argument("--trackers", default=",".join(TRACKERS))
    ap.add_argument("--underruns", action="store_true",
                    help="underruns without --listen, with it (PortAudio capture) and with the Python callback "
                         "capture, in turns, jack_simple_client in the graph")
    ap.add_argument("--rounds", type=int, default=3, help="--underruns: rounds of the three turns")
    ap.add_argument("--underrun-bars", type=int, default=12, help="--underruns: bars of the band clip per turn")
    ap.add_argument("--underrun-minutes", type=float, default=0.0,
                    help="--underruns: the clip looped to this many minutes per turn (the issue's 10-minute run)")
    ap.add_argument("--turns", default="", help="--underruns: only the turns whose label holds one of these "
                                                "(comma-separated: without,PortAudio,Python)")
    ap.add_argument("--real-model", action="store_true",
                    help="--underruns, --instrument-bleed: the shipped model instead of the stand-in (generator "
                         "misses mean something; its own playing, fills and all, is what reaches the input)")
    ap.add_argument("--jackd-log", default=None, help="--underruns: the JACK server's log (who jackd blamed)")
    ap.add_argument("--pop909", default=None, metavar="DIR",
                    help="the POP909-Dataset's POP909 folder: its songs, rendered, are the mix pop909 "
                         "(music from outside this repository; benchmarks/follow_outside.py)")
    ap.add_argument("--pop909-skip", type=int, default=24, metavar="N",
                    help="--pop909: skip its first N songs (the first 24 are where the tracker's beat/off-beat "
                         "check was developed and its settings chosen; the songs after them are the check)")
    ap.add_argument("--tightness", type=float, default=None,
                    help="the own tracker with a path of beats of this tightness in its fold's place "
                         "(benchmarks/follow_path.py, not shipped; 1000 as tuned; 0: the shipped tracker)")
    ap.add_argument("--learned-onsets", default=None, metavar="WEIGHTS",
                    help="the own tracker's onset strength weighted by a learned activation "
                         "(benchmarks/follow_learned_onsets.py, not shipped)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    OUTSIDE.update(pop909=args.pop909, skip=args.pop909_skip)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.tightness is not None:
        result["tightness"] = args.tightness
    if args.tightness:  # every tracker made here is the module's at call time: the path's from now on
        import follow_path

        follow_path.install(args.tightness)
    if args.learned_onsets:
        import follow_learned_onsets

        result["learned_onsets"] = Path(args.learned_onsets).name  # the weights are made, not kept
        follow_learned_onsets.install(args.learned_onsets)
    if args.tracker:
        result["tracker"] = tracker_table(args.performances, (args.mixes or ",".join(material.MIXES)).split(","), args.scenarios.split(","),
                                          args.trackers.split(","))
        print(json.dumps(result["tracker"]["summary"], indent=1))
    if args.replay:
        result["replay"] = replays(args.performances, args.split, (args.mixes or "band").split(",")[0], args.kit,
                                   args.scenarios.split(","), args.wait_for_band, args.oracle, args.lead_in_bars,
                                   args.room_before, args.rate)
        print(json.dumps(result["replay"]["summary_median_over_performances"], indent=1))
    if args.floor:
        result["floor"] = played_floor(args.performances, args.split, args.scenarios.split(","))
        print(json.dumps(result["floor"]["summary_median_over_performances"], indent=1))
    if args.dynamics:
        result["dynamics"] = dynamics()
    if args.instrument:
        import follow_instrument

        result["instrument"] = follow_instrument.run(args)
        print(json.dumps(result["instrument"]["summary"], indent=1))
    if args.instrument_dynamics:
        import follow_instrument

        result["instrument_dynamics"] = follow_instrument.dynamics(args.performances)
        print(json.dumps(result["instrument_dynamics"]["summary"], indent=1))
    if args.own_kit_table:
        result["own_kit_table"] = own_kit_table(args.performances, args.scenarios.split(","), args.kit_levels.split(","),
                                                args.kit_quieter)
        print(json.dumps(result["own_kit_table"]["summary"], indent=1))
    if args.instrument_bleed:
        import follow_instrument

        result["instrument_bleed"] = follow_instrument.bleed(args)
    if args.underruns:
        import follow_instrument

        result["underruns"] = follow_instrument.underruns(args)
        print(json.dumps(result["underruns"]["summary"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
