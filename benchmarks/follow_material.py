"""Test material for following a band: real drummers' playing, warped by known tempo curves.

A clip is one validation-split performance of the Groove MIDI Dataset (human timing, recorded to
a click) rendered to audio with the built-in kit, with its time warped by a scenario's tempo
curve. The click the drummer played to is the truth, moved by the drummer's median lead on it (a constant
per performance: up to 50 ms here): beat ``b`` of the original (``b`` quarter notes after the
file's start at its tempo) sounds at ``warp(b + lead)`` seconds in the clip, so the warp gives
the true beat times. A bass line follows the kick (its root changes every bar), and noise
is mixed in. Two mixes:

- ``drums``: the drums, the bass and noise (a mic in the room);
- ``band``: no drums (the desk's aux send of a band whose drummer is the machine): the bass on the
  kicks, a keyboard chord on the snare's hits, a muted guitar chop on the hi-hat's, and noise.

Everything is made deterministically from the MIDI file, the scenario and a seed; nothing is
shipped as audio. Used by ``benchmarks/follow.py`` and by the tests (``tests/test_follow*.py``).
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: the Groove MIDI Dataset's folder (beside the repository, as the tests look for it)
GROOVE = Path(os.environ.get("DRUMMACHINE_GROOVE", ROOT.parent / "shared" / "data" / "groove"))
BARS = 24
BEATS_PER_BAR = 4
RENDER_RATE = 48000


@dataclass(frozen=True)
class Scenario:
    """A tempo curve over the clip's beats and the stretches where the band is silent.

    ``factor(b)`` multiplies the performance's tempo at beat ``b`` (0 .. BARS*4).
    """

    name: str
    help: str
    breaks: tuple[tuple[int, int], ...] = ()  #: (first bar, bars) of silence

    def factor(self, beats: np.ndarray) -> np.ndarray:
        b = np.asarray(beats, dtype=np.float64)
        bar = b / BEATS_PER_BAR
        if self.name == "steady":
            return np.ones_like(b)
        if self.name == "accelerando":  # 4 bars steady, +6% linearly over 16 bars, 4 bars held
            return 1.0 + 0.06 * np.clip((bar - 4.0) / 16.0, 0.0, 1.0)
        if self.name == "jump":  # 8 bars, then 3% faster at once
            return np.where(bar < 8.0, 1.0, 1.03)
        if self.name == "break":  # 10 bars, 2 bars of silence, back 2% faster
            return np.where(bar < 12.0, 1.0, 1.02)
        if self.name == "ritardando":  # 16 bars steady, then 10% slower over the last 8
            return 1.0 - 0.10 * np.clip((bar - 16.0) / 8.0, 0.0, 1.0)
        raise ValueError(self.name)


#: the scenarios of issue 13, one table
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("steady", "the performance's own tempo throughout"),
    Scenario("accelerando", "6% faster over 16 bars (bars 4-20)"),
    Scenario("jump", "3% faster at once from bar 8"),
    Scenario("break", "bars 10-11 silent, back 2% faster", breaks=((10, 2),)),
    Scenario("ritardando", "10% slower over the last 8 bars"),
)}
MIXES = ("drums", "band")


@dataclass(frozen=True)
class Clip:
    """Warped audio and its truth."""

    name: str  #: performance file (relative to the dataset folder)
    scenario: str
    mix: str
    rate: int
    audio: np.ndarray  #: mono float32
    bpm: float  #: the performance's (and the song's) tempo
    beats: np.ndarray  #: true time of every beat in the clip, seconds
    audible: np.ndarray  #: per beat: the band plays (False in a break)
    tempo: np.ndarray  #: true tempo at every beat, bpm
    gains_db: tuple = field(default=())
    lead: float = 0.0  #: the drummer's median lead on the click, seconds (the truth includes it)
    played: np.ndarray | None = None  #: each beat where the band plays it (the drummer's lead over ±1 bar)
    #: how long after their note-ons the band's instruments sound (their perceptual onset, median
    #: over the notes on the beats): the beats as the room hears them are ``beats + sounds_after``.
    #: 0 for the clips synthesized here (a 4 ms attack); POP909's songs, rendered, 5.5-9 ms
    sounds_after: float = 0.0

    @property
    def seconds(self) -> float:
        return self.audio.size / self.rate


def looped(clip: Clip, seconds: float) -> Clip:
    """``clip`` played again and again to at least ``seconds`` (long runs: underruns over 10
    minutes); the truth repeated with it (the seams are a beat apart only if the clip's length is
    a whole number of beats: for counting underruns, not for phase figures)."""
    times = max(1, int(math.ceil(seconds / clip.seconds)))
    shift = np.repeat(np.arange(times) * clip.seconds, clip.beats.size)
    tile = lambda x: None if x is None else np.tile(x, times)  # noqa: E731
    return replace(clip, audio=np.tile(clip.audio, times), beats=np.tile(clip.beats, times) + shift,
                   audible=tile(clip.audible), tempo=tile(clip.tempo), played=None if clip.played is None
                   else np.tile(clip.played, times) + shift)


def validation_performances(count: int = 8, bars: int = BARS + 1, root: Path = GROOVE,
                            split: str = "validation") -> list[tuple[str, float]]:
    """The longest 4/4 "beat" performances of the validation split (at least ``bars`` bars), one per
    style family where possible: (path relative to the dataset folder, bpm). Read from the
    dataset's own index (``info.csv``), so only the MIDI folder is needed. ``split="train"``: the
    same from the training split (what the follower's settings are tuned on; figures are reported
    on the validation split)."""
    with open(root / "info.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split and r["beat_type"] == "beat"
                and r["time_signature"] == "4-4"]
    length = {r["midi_filename"]: float(r["duration"]) * float(r["bpm"]) / 240.0 for r in rows}
    ok = sorted((r for r in rows if length[r["midi_filename"]] >= bars),
                key=lambda r: (-length[r["midi_filename"]], r["midi_filename"]))
    chosen, seen = [], set()
    for rounds in range(2):  # distinct styles first, then the rest
        for r in ok:
            family = r["style"].split("/")[0]
            if len(chosen) < count and r not in chosen and (rounds or family not in seen):
                chosen.append(r)
                seen.add(family)
    return [(r["midi_filename"], float(r["bpm"])) for r in chosen]


def warp(beats: np.ndarray, scenario: Scenario, bpm: float) -> np.ndarray:
    """Seconds at each (fractional) beat under the scenario's tempo curve (its integral)."""
    grid = np.linspace(0.0, BARS * BEATS_PER_BAR + 8, (BARS * BEATS_PER_BAR + 8) * 256 + 1)
    mid = (grid[1:] + grid[:-1]) / 2
    seconds = np.concatenate([[0.0], np.cumsum(np.diff(grid) * 60.0 / (bpm * scenario.factor(mid)))])
    return np.interp(beats, grid, seconds)


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Integer-factor decimation with a windowed-sinc low-pass (material only, not real time)."""
    if src == dst:
        return x.astype(np.float32)
    factor = src // dst
    if factor * dst != src:
        raise ValueError(f"{src} Hz to {dst} Hz is not an integer factor")
    taps = 8 * factor + 1
    n = np.arange(taps) - taps // 2
    h = np.sinc(n / factor) / factor * np.hamming(taps)
    return np.convolve(x, h, mode="same")[::factor].astype(np.float32)


def with_room_noise(audio: np.ndarray, rng: np.random.Generator, snr_db: float = 20.0) -> np.ndarray:
    """``audio`` with a room's rumble and hiss ``snr_db`` under its playing level (brown noise,
    high-passed, and white), scaled down to a peak of 0.9 if it would clip."""
    playing_rms = float(np.sqrt(np.mean(audio[np.abs(audio) > 1e-4] ** 2))) if np.any(np.abs(audio) > 1e-4) else 0.1
    audio = audio + room_noise(audio.size, rng, playing_rms * 10 ** (-snr_db / 20))
    peak = float(np.max(np.abs(audio)))
    if peak > 0.9:
        audio *= 0.9 / peak
    return audio


def _tone(freq: float, seconds: float, rate: int, decay: float, partials=(1.0, 0.5, 0.25),
          attack: float = 0.004) -> np.ndarray:
    n = max(1, int(seconds * rate))
    t = np.arange(n) / rate
    wave = sum(a * np.sin(2 * np.pi * freq * (k + 1) * t) for k, a in enumerate(partials))
    env = np.minimum(1.0, t / attack) * np.exp(-t / decay)
    fade = max(1, n // 10)
    env[-fade:] *= np.linspace(1.0, 0.0, fade)
    return (wave * env).astype(np.float32)


def _add(out: np.ndarray, at: float, sound: np.ndarray, gain: float, rate: int) -> None:
    start = int(round(at * rate))
    if start < 0 or start >= out.size:
        return
    end = min(out.size, start + sound.size)
    out[start:end] += gain * sound[:end - start]


#: bass roots per bar (MIDI notes: E1 A1 G1 D2) and the chord over each (semitones from the root + 24)
ROOTS = (28, 33, 31, 38)
CHORD = (0, 4, 7)


def _hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def room_noise(size: int, rng: np.random.Generator, rms: float) -> np.ndarray:
    """A room's rumble and hiss at ``rms``: brown noise, high-passed, and white."""
    noise = np.cumsum(rng.standard_normal(size)).astype(np.float32)
    noise = noise - np.convolve(noise, np.ones(64) / 64, mode="same")
    noise += 0.5 * rng.standard_normal(size).astype(np.float32)
    return noise * (rms / (float(np.sqrt(np.mean(noise ** 2))) + 1e-12))


def with_keys_on_the_off_beat(clip: Clip, later: float = 0.15) -> np.ndarray:
    """The clip's audio with a keyboard stab on every "and": alone (the band at -34 dB) for the
    first 3 s, then softer than the band (``later``: their gain then, 0.5 before): a lock that
    starts on the off-beat. At ``later=1.0`` the "and" stays the stronger and the beat/off-beat check
    does not put that lock right (at 0.5 it did, 10 s in, in the replay): the musician's taps do."""
    period = 60.0 / clip.bpm
    audio = clip.audio.copy()
    audio[:int(3.0 * clip.rate)] *= 0.02
    stab = sum(_tone(_hz(60 + s), 0.25, clip.rate, 0.1, (1.0, 0.5, 0.3)) for s in (0, 4, 7)) / 3
    for beat in clip.beats:
        _add(audio, beat + period / 2, stab, 0.5 if beat < 3.0 else later, clip.rate)
    return audio


def with_room_before(clip: Clip, seconds: float, seed: int = 1, snr_db: float = 20.0,
                     dbfs: float | None = None) -> Clip:
    """``clip`` with ``seconds`` of the room alone before it (its noise, ``snr_db`` under the band's
    playing level, as ``with_room_noise`` puts under the band; or at ``dbfs``, an idle input's hiss):
    a machine waiting for the band listens before the band begins. The truth moves with it."""
    n = int(round(seconds * clip.rate))
    audio = clip.audio
    playing_rms = float(np.sqrt(np.mean(audio[np.abs(audio) > 1e-3] ** 2)))
    rms = playing_rms * 10 ** (-snr_db / 20) if dbfs is None else 10 ** (dbfs / 20)
    room = room_noise(n, np.random.default_rng(seed), rms)
    moved = n / clip.rate
    return replace(clip, audio=np.concatenate([room.astype(np.float32), audio]), beats=clip.beats + moved,
                   played=None if clip.played is None else clip.played + moved)


def played_in_clip(beats: np.ndarray, scenario: Scenario, total: int) -> np.ndarray:
    """Which notes (at ``beats``, from the clip's first bar line) sound: inside the clip's
    ``total`` beats and outside the scenario's breaks."""
    inside = (beats >= -0.25) & (beats < total - 0.25)
    for first, length in scenario.breaks:
        inside &= ~((beats >= first * 4 - 0.25) & (beats < (first + length) * 4 - 0.25))
    return inside


def clip_from_truth(name: str, scenario: str, mix: str, rate: int, audio: np.ndarray, bpm: float, total: int,
                    beats: np.ndarray, local_notes: np.ndarray, gains_db=()) -> "Clip":
    """The clip with its truth: the band's beat is where the players play it, the beat lines
    moved by their median lead or lag on them (a constant per clip: the note-to-note timing stays
    human), and each beat as played, their lead over the bar either side from the notes in
    ``local_notes`` (players drift ahead and behind by tens of ms over a few bars)."""
    sc = SCENARIOS[scenario]
    off = beats - np.round(beats)
    near = np.abs(off) < 0.2
    lead = float(np.median(off[near])) if near.any() else 0.0
    beat_index = np.arange(total, dtype=np.float64)
    main = local_notes & near
    local = np.array([np.median(off[main & (np.abs(beats - b) <= 4)])
                      if (main & (np.abs(beats - b) <= 4)).sum() >= 3 else lead for b in beat_index])
    audible = np.ones(total, bool)
    for first, length in sc.breaks:
        audible[first * 4:(first + length) * 4] = False
    return Clip(name, scenario, mix, rate, audio.astype(np.float32), bpm, warp(beat_index + lead, sc, bpm), audible,
                bpm * sc.factor(beat_index), tuple(gains_db), lead * 60.0 / bpm, warp(beat_index + local, sc, bpm))


def performance_hits(path: str, bpm: float, start_bar: int = 1, root: Path = GROOVE):
    """A performance's hits: (beats from bar ``start_bar`` of the file at ``bpm``, voices,
    velocities 0..1), the notes the TD-11 map knows."""
    from drummachine.core.voices import input_map
    from drummachine.midi.files import read_midi

    perf = read_midi(Path(root) / path)
    mapping = input_map("td11")
    keep = np.array([int(p) in mapping for p in perf.notes.pitches.tolist()], bool)
    beats = perf.seconds()[keep] * bpm / 60.0 - start_bar * BEATS_PER_BAR
    voices = np.array([mapping[int(p)] for p in perf.notes.pitches[keep].tolist()], np.int64)
    return beats, voices, perf.notes.velocities[keep].astype(np.float64) / 127.0


def make_clip(path: str, bpm: float, scenario: str = "steady", mix: str = "drums", rate: int = 16000,
              bars: int = BARS, seed: int = 0, snr_db: float = 20.0, start_bar: int = 1,
              gains_db: tuple[tuple[int, float], ...] = (), root: Path = GROOVE, kit: str = "builtin",
              lead_in_bars: int = 0) -> Clip:
    """Render one performance under one scenario.

    ``kit``: the drums (mix ``drums``) through the built-in kit, or through a Hydrogen kit by name
    (``ForzeeStereo``: recorded drums, not the synthesized kit the tracker was developed on).
    ``start_bar``: the bar of the file the clip starts at (the first is often a pickup);
    ``lead_in_bars``: that many bars earlier (the clip's first beat is a bar line either way).
    ``gains_db``: (bar, dB) steps of the band's level from that bar on (dynamics tests).
    """
    from drummachine.audio.kit import open_kit, synth_kit
    from drummachine.audio.render import render
    from drummachine.core.voices import CLOSED_HAT, KICK, OPEN_HAT, RIDE, SNARE

    sc = SCENARIOS[scenario]
    beats, voices, velocities = performance_hits(path, bpm, start_bar - lead_in_bars, root)
    total = bars * BEATS_PER_BAR
    inside = played_in_clip(beats, sc, total)
    beats, voices, velocities = beats[inside], voices[inside], velocities[inside]
    times = warp(beats, sc, bpm)
    end = float(warp(np.array([total + 1.0]), sc, bpm)[0])
    frames = int(end * RENDER_RATE)

    rng = np.random.default_rng(seed)
    song = np.zeros(frames, np.float32)
    if mix == "drums":
        drums = synth_kit(RENDER_RATE) if kit == "builtin" else open_kit(kit, RENDER_RATE)
        song += render(drums, np.round(times * RENDER_RATE).astype(np.int64), voices, velocities, frames).mean(axis=1)
    elif mix != "band":
        raise ValueError(f"mix {mix!r}; allowed: {', '.join(MIXES)}")
    bar_of = np.clip((beats // BEATS_PER_BAR).astype(int), 0, bars - 1)
    kicks = np.where(voices == KICK)[0]
    for k, i in enumerate(kicks):  # the bass: a note on every kick, held to the next
        nxt = times[kicks[k + 1]] if k + 1 < kicks.size else times[i] + 0.5
        length = float(np.clip(nxt - times[i], 0.08, 0.6))
        _add(song, times[i], _tone(_hz(ROOTS[bar_of[i] % 4]), length, RENDER_RATE, 0.25, (1.0, 0.6, 0.3, 0.15)),
             0.25 + 0.35 * velocities[i], RENDER_RATE)
    if mix == "band":
        for i in np.where(voices == SNARE)[0]:  # keys: a chord stab on the backbeat
            root = ROOTS[bar_of[i] % 4] + 24
            stab = sum(_tone(_hz(root + s), 0.3, RENDER_RATE, 0.12, (1.0, 0.3)) for s in CHORD) / 3
            _add(song, times[i], stab, 0.15 + 0.25 * velocities[i], RENDER_RATE)
        chop_n = int(0.05 * RENDER_RATE)
        for i in np.where(np.isin(voices, (CLOSED_HAT, OPEN_HAT, RIDE)))[0]:  # guitar: muted chops
            root = ROOTS[bar_of[i] % 4] + 36
            chop = _tone(_hz(root), 0.05, RENDER_RATE, 0.02, (1.0, 0.7, 0.5, 0.4)) \
                + 0.3 * rng.standard_normal(chop_n).astype(np.float32) * np.exp(-np.arange(chop_n) / (0.01 * RENDER_RATE)).astype(np.float32)
            _add(song, times[i], chop, 0.04 + 0.08 * velocities[i], RENDER_RATE)
    audio = resample(song, RENDER_RATE, rate)
    # the band's level steps (dynamics): applied before the noise, which stays where it is
    level = np.ones(audio.size, np.float32)
    for bar, db in gains_db:
        at = int(float(warp(np.array([bar * 4.0]), sc, bpm)[0]) * rate)
        level[at:] = np.float32(10 ** (db / 20))
    audio *= level
    audio = with_room_noise(audio, rng, snr_db)
    # the truth: the click the drummer heard, moved by their lead; the beat as played from the
    # kick and snare (the bass and keys here follow them)
    return clip_from_truth(path, scenario, mix, rate, audio, bpm, total, beats, np.isin(voices, (KICK, SNARE)), gains_db)


#: a stage's path from the machine's wedges to the band's mic, after the direct sound: early
#: reflections (ms after it, gain), the signs mixed so the path is no plain delay
REFLECTIONS = ((3.1, 0.55), (7.7, -0.45), (11.3, 0.35), (16.9, -0.3), (23.4, 0.22), (31.0, -0.16),
               (42.2, 0.12), (55.8, -0.08), (71.5, 0.05))


def room_path(rate: int, delay_ms: float = 12.0) -> np.ndarray:
    """The impulse response of the wedges-to-mic path: the direct sound ``delay_ms`` late (the
    sound card's latency and the air), then ``REFLECTIONS``."""
    out = np.zeros(int((delay_ms + REFLECTIONS[-1][0]) * rate / 1000) + 1, np.float32)
    out[int(delay_ms * rate / 1000)] = 1.0
    for ms, gain in REFLECTIONS:
        out[int((delay_ms + ms) * rate / 1000)] += gain
    return out


def own_kit(path: str, bpm: float, seconds: float, offset_beats: float = 0.5, rate: int = 16000,
            root: Path = GROOVE) -> np.ndarray:
    """The machine's own kit as it leaves for the PA, standing in for what it plays before it has
    the band: a drummer's performance on a steady grid at ``bpm``, ``offset_beats`` off the band's
    beat (half a beat: the worst, its backbeat on the band's beats), through the built-in kit."""
    from drummachine.audio.kit import synth_kit
    from drummachine.audio.render import render

    beats, voices, velocities = performance_hits(path, bpm, 1, root)
    times = (beats + offset_beats) * 60.0 / bpm
    inside = (times >= 0.0) & (times < seconds)
    frames = int(seconds * RENDER_RATE)
    audio = render(synth_kit(RENDER_RATE), np.round(times[inside] * RENDER_RATE).astype(np.int64), voices[inside],
                   velocities[inside], frames).mean(axis=1)
    return resample(audio.astype(np.float32), RENDER_RATE, rate)


def with_own_kit(clip: Clip, kit: np.ndarray, level_db: float, delay_ms: float = 12.0) -> np.ndarray:
    """The clip as a mic on stage hears it: the band and the machine's ``kit`` through
    ``room_path``, its level ``level_db`` against the band's (RMS over the clip)."""
    kit = np.pad(kit, (0, max(0, clip.audio.size - kit.size)))[:clip.audio.size]
    heard = np.convolve(kit, room_path(clip.rate, delay_ms))[:kit.size]
    gain = float(np.sqrt(np.mean(clip.audio ** 2)) / max(np.sqrt(np.mean(heard ** 2)), 1e-9)) * 10 ** (level_db / 20)
    return (clip.audio + gain * heard).astype(np.float32)


def cached_clip(path: str, bpm: float, scenario: str, mix: str, rate: int = 16000, kit: str = "builtin",
                lead_in_bars: int = 0) -> Clip:
    """``make_clip`` kept in a folder (``DRUMMACHINE_CLIP_CACHE``, default a temporary one):
    tuning replays the same clips many times, and rendering is a third of a replay's time."""
    lead_in = f"|lead{lead_in_bars}" if lead_in_bars else ""  # the clips made before keep their keys
    return kept(f"{path}|{bpm}|{scenario}|{mix}|{rate}|{kit}{lead_in}", path, scenario, mix, rate, bpm,
                lambda: make_clip(path, bpm, scenario, mix, rate=rate, kit=kit, lead_in_bars=lead_in_bars))


def kept(key: str, name: str, scenario: str, mix: str, rate: int, bpm: float, make) -> Clip:
    """The clip kept in the clip cache under ``key`` (with the material modules' own dates: a
    change to how clips are made makes them again), or ``make()``'s, kept there."""
    import hashlib
    import tempfile

    folder = Path(os.environ.get("DRUMMACHINE_CLIP_CACHE", Path(tempfile.gettempdir()) / "drummachine-clips"))
    made_by = "|".join(str((Path(__file__).parent / f).stat().st_mtime) for f in ("follow_material.py", "follow_outside.py"))
    file = folder / f"{hashlib.sha1(f'{key}|{made_by}'.encode()).hexdigest()[:16]}.npz"
    if file.exists():
        z = np.load(file)
        return Clip(name, scenario, mix, rate, z["audio"], bpm, z["beats"], z["audible"], z["tempo"], (),
                    float(z["lead"]), z["played"], float(z["sounds_after"]))
    clip = make()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, audio=clip.audio, beats=clip.beats, audible=clip.audible, tempo=clip.tempo, lead=clip.lead,
             played=clip.played, sounds_after=clip.sounds_after)
    tmp.replace(file)
    return clip


def f_measure(detected: np.ndarray, truth: np.ndarray, tolerance: float = 0.07) -> float:
    """Beat F-measure (MIREX): a detection within ``tolerance`` of a true beat matches it, each at most once."""
    detected = np.sort(np.asarray(detected, dtype=np.float64))
    truth = np.sort(np.asarray(truth, dtype=np.float64))
    if detected.size == 0 or truth.size == 0:
        return 0.0
    used = np.zeros(detected.size, bool)
    hits = 0
    for t in truth:
        k = np.searchsorted(detected, t)
        best, where = tolerance + 1, -1
        for j in (k - 1, k):
            if 0 <= j < detected.size and not used[j] and abs(detected[j] - t) < best:
                best, where = abs(detected[j] - t), j
        if where >= 0 and best <= tolerance:
            used[where] = True
            hits += 1
    precision, recall = hits / detected.size, hits / truth.size
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def scored_beats(clip: Clip, detected: np.ndarray, skip_beats: int = 8) -> float:
    """F-measure over the audible beats after the first ``skip_beats`` (MIREX skips the first 5 s;
    a causal tracker needs a few beats to hear a tempo). Detections in a break are not counted."""
    idx = np.arange(clip.beats.size)
    truth = clip.beats[(idx >= skip_beats) & clip.audible]
    lo = clip.beats[skip_beats] - 0.07
    silent = np.zeros(np.asarray(detected).size, bool)
    for first, length in SCENARIOS[clip.scenario].breaks:
        a, b = clip.beats[first * 4] - 0.07, clip.beats[min((first + length) * 4, clip.beats.size - 1)] - 0.07
        silent |= (detected > a) & (detected < b)
    detected = np.asarray(detected)
    return f_measure(detected[(detected >= lo) & ~silent & (detected <= clip.beats[-1] + 0.07)], truth)


class BandPlayer:
    """A JACK client that plays a clip out of its port ``NAME:out`` (the band, for the tests).

    ``heard(t)``: the monotonic time its sample at clip time ``t`` went out, by the same rule the
    listening process uses for an input (a line through callback times against samples, moved
    down to its lowest point).
    """

    def __init__(self, audio: np.ndarray, name: str = "band", start_silence: float = 0.0):
        import jack

        self.client = jack.Client(name, no_start_server=True)
        self.rate = self.client.samplerate
        pad = np.zeros(int(start_silence * self.rate), np.float32)
        self.audio = np.concatenate([pad, np.asarray(audio, np.float32)])
        self.pad = pad.size
        self.port = self.client.outports.register("out")
        self.pos = 0
        self.playing = False
        self.times = []  # (monotonic, samples done) per callback while playing
        self.gain = 1.0

        @self.client.set_process_callback
        def process(frames):
            out = self.port.get_array()
            if not self.playing:
                out[:] = 0.0
                return
            chunk = self.audio[self.pos:self.pos + frames]
            out[:chunk.size] = chunk * self.gain
            out[chunk.size:] = 0.0
            self.pos += frames
            self.times.append((time.monotonic(), self.pos, self.client.last_frame_time + frames))

        self.client.activate()

    @property
    def port_name(self) -> str:
        return self.port.name

    def start(self) -> None:
        self.playing = True

    @property
    def done(self) -> bool:
        return self.pos >= self.audio.size

    def frames(self, clip_seconds: np.ndarray) -> np.ndarray:
        """The JACK frame time at which the clip's time went out (exact: the sample's own block)."""
        rows = np.array(self.times, dtype=np.float64)
        samples = np.asarray(clip_seconds) * self.rate + self.pad
        k = np.minimum(np.searchsorted(rows[:, 1], samples), len(rows) - 1)
        return rows[k, 2] - (rows[k, 1] - samples)

    def heard(self, clip_seconds: np.ndarray) -> np.ndarray:
        """... and on the monotonic clock, by the listening process's rule (Timing)."""
        from drummachine.listen.capture import Timing

        timing = Timing(np.array(self.times, dtype=np.float64), self.rate)
        return np.array([timing.heard(s) for s in np.asarray(clip_seconds) * self.rate + self.pad])

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()
