"""Music from outside this repository for following the band: POP909's pop songs, rendered.

Everything else the follower was developed and tuned on comes from the Groove MIDI Dataset's
drummers, with a band synthesized from the drums (a bass on the kicks, keys on the snare). This
module makes clips from material that has nothing to do with it:

- **POP909** (Wang, Chen, Jiang et al., "POP909: A Pop-song Dataset for Music Arrangement
  Generation", ISMIR 2020; MIT licence; https://github.com/music-x-lab/POP909-Dataset): 909
  Chinese pop songs arranged by musicians for piano and played to the original recordings, one
  MIDI file each with three tracks, MELODY (the singer's line), BRIDGE (a second line) and PIANO
  (the accompaniment), on a beat grid in the file's tempo map. The players' timing is human: the
  notes sit 10-50 ms around the grid. None of it is in this repository; the benchmark reads the
  dataset's ``POP909`` folder from where it is given (``--pop909 DIR``).
- Rendered with **FluidSynth** and the **FluidR3 GM** soundfont (Debian's ``fluidsynth`` and
  ``fluid-soundfont-gm``; the soundfont is MIT): recorded instruments, not this project's
  synthesis. The melody is sung by the soundfont's "voice oohs", the bridge is an electric
  guitar, the accompaniment a grand piano, and the piano's left hand below E3 is doubled an
  octave down by a fingered bass: a band's aux send without its drummer (a singer, a guitar,
  keys and a bass; no drums at all).

The songs chosen are those with one tempo in their file (544 of the 909), between 76 and 150 bpm
(what a drummer would play a groove to; slower ones are ballads felt in double time), the first
in the dataset's order. A clip is 24 bars of 4 beats from the first bar line (the dataset's
annotation) at the song's first note, warped by the same tempo curves as the drummers' clips
(``follow_material.SCENARIOS``), with the same room noise 20 dB under the music. The truth is the
dataset's own beats (``beat_midi.txt``; the file's tempo grid is offset from them, by half a beat
in some songs) moved by the players' median lead on them (the notes near a beat, all tracks), as
for the drummers; the beat as played, the same lead over a bar either side.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import mido
import numpy as np

import follow_material as material

SOUNDFONT = Path(os.environ.get("DRUMMACHINE_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2"))
#: each track's General MIDI program (0-based) and channel; the bass doubles the piano's low notes
VOICES = {"MELODY": (53, 0), "BRIDGE": (27, 1), "PIANO": (0, 2)}
BASS_PROGRAM, BASS_CHANNEL, BASS_BELOW = 33, 3, 52
BPM_RANGE = (76.0, 150.0)
GAINS = {"MELODY": 0.8, "BRIDGE": 0.7, "PIANO": 1.0}
#: a note sounds (its perceptual onset) where its envelope first comes within this many dB of its
#: peak: Vos & Rasch (1981) put the perceived onset of a tone where its envelope crosses a level
#: 6-15 dB under its maximum; the earliest of that range is taken. FluidR3's piano gets there
#: 5-11 ms after the note-on (10th to 90th percentile over the pitches the songs play; the low
#: notes later), the guitar 4-14, the voice 9-17, the bass 20-45; a song's beats 5.5-9 ms (the
#: median over their notes)
ONSET_DB = -15.0
ATTACK_RATE = 44100


@dataclass(frozen=True)
class Note:
    beat: float  #: quarter notes from the file's start
    length: float  #: quarter notes
    pitch: int
    velocity: int
    track: str


def single_tempo_songs(root: Path, count: int = 8, bpm_range=BPM_RANGE, skip: int = 0) -> list[tuple[str, float]]:
    """The first ``count`` songs (by the dataset's numbering) whose file has one tempo within
    ``bpm_range``, after the first ``skip`` of them: (the song's folder, bpm). The first 24 are
    where the tracker's beat/off-beat check was developed and its settings chosen
    (docs/follow.md); the figures that check it come from the next ones (``skip=24``)."""
    chosen = []
    count += skip
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        midi = folder / f"{folder.name}.mid"
        if not midi.exists():
            continue
        tempos = {m.tempo for t in mido.MidiFile(midi).tracks for m in t if m.type == "set_tempo"}
        if len(tempos) == 1:
            bpm = round(mido.tempo2bpm(tempos.pop()), 3)
            if bpm_range[0] <= bpm <= bpm_range[1]:
                chosen.append((str(folder), bpm))
                if len(chosen) == count:
                    break
    return chosen[skip:]


def read_notes(path: Path) -> list[Note]:
    """Every note of the song's named tracks, in quarter notes (a one-tempo file)."""
    midi = mido.MidiFile(path)
    tpb = midi.ticks_per_beat
    notes = []
    for track in midi.tracks:
        if track.name not in VOICES:
            continue
        now, sounding = 0, {}
        for m in track:
            now += m.time
            if m.type == "note_on" and m.velocity > 0:
                sounding[m.note] = (now, m.velocity)
            elif m.type in ("note_off", "note_on") and m.note in sounding:
                start, velocity = sounding.pop(m.note)
                notes.append(Note(start / tpb, max(now - start, 1) / tpb, m.note, velocity, track.name))
    return sorted(notes, key=lambda n: n.beat)


def beat_grid(song: Path, bpm: float) -> tuple[float, np.ndarray]:
    """The song's beats from the dataset's own annotation (``beat_midi.txt``: each beat's time and
    whether it starts a bar), not from the file's tempo grid: the arrangements were played to the
    recordings from their first second, so the grid's quarter notes are offset from the music's
    beats by any fraction (half a beat in some songs). Returns the beats' offset from the grid
    (quarter notes, 0..1) and where the bars start (quarter notes from the file's start)."""
    table = np.loadtxt(song / "beat_midi.txt", ndmin=2)
    position = table[:, 0] * bpm / 60.0
    angle = np.angle(np.mean(np.exp(2j * np.pi * position)))  # a circular mean: offsets near 0 and 1 agree
    phase = float(angle / (2 * np.pi) % 1.0)
    on_grid = np.round(position - phase) + phase
    downbeats = on_grid[table[:, 2] > 0] if table.shape[1] > 2 else on_grid[::material.BEATS_PER_BAR]
    return phase, np.sort(downbeats)


def sounding(note: Note) -> list[tuple[int, int]]:
    """The (channel, pitch) a note is rendered as: its track's instrument, and under the piano's
    low notes the bass, an octave down."""
    played = [(VOICES[note.track][1], note.pitch)]
    if note.track == "PIANO" and note.pitch < BASS_BELOW:
        played.append((BASS_CHANNEL, note.pitch - 12 if note.pitch >= 40 else note.pitch))
    return played


def _render(notes: list[tuple[float, float, int, int, int]], seconds: float, rate: int) -> np.ndarray:
    """(start s, end s, channel, pitch, velocity) through FluidSynth: mono float32 at ``rate``."""
    if shutil.which("fluidsynth") is None or not SOUNDFONT.exists():
        raise RuntimeError(f"rendering POP909 needs fluidsynth and {SOUNDFONT} "
                           "(apt-get install fluidsynth fluid-soundfont-gm)")
    midi = mido.MidiFile(ticks_per_beat=1000)  # at 60 bpm one tick is a millisecond
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))
    for name, (program, channel) in VOICES.items():
        track.append(mido.Message("program_change", program=program, channel=channel, time=0))
    track.append(mido.Message("program_change", program=BASS_PROGRAM, channel=BASS_CHANNEL, time=0))
    events = []
    for start, end, channel, pitch, velocity in notes:
        events.append((int(round(start * 1000)), 1, channel, pitch, velocity))
        events.append((int(round(end * 1000)), 0, channel, pitch, 0))
    events.sort()
    now = 0
    for tick, on, channel, pitch, velocity in events:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, note=pitch, velocity=velocity, channel=channel, time=tick - now))
        now = tick
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "song.mid", Path(tmp) / "song.wav"
        midi.save(mid)
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(rate), "-T", "wav", "-O", "float",
                        "-F", str(wav), str(SOUNDFONT), str(mid)], check=True, capture_output=True, timeout=600)
        import soundfile

        audio, got = soundfile.read(wav, dtype="float32", always_2d=True)
    if got != rate:
        raise RuntimeError(f"fluidsynth rendered at {got} Hz, asked {rate}")
    out = audio.mean(axis=1)
    frames = int(seconds * rate)
    return np.pad(out, (0, max(0, frames - out.size)))[:frames]


def make_clip(song: str | Path, bpm: float, scenario: str = "steady", rate: int = 16000,
              bars: int = material.BARS, seed: int = 0, snr_db: float = 20.0, lead_in_bars: int = 0) -> material.Clip:
    """One song's ``bars`` bars under one scenario (see the module's docstring); ``song``: its folder.
    The clip starts on the first bar line at its first note, or ``lead_in_bars`` bars before it
    (what is there: the song's pickup, or nothing)."""
    sc = material.SCENARIOS[scenario]
    song = Path(song)
    notes = read_notes(song / f"{song.name}.mid")
    if not notes:
        raise ValueError(f"{song}: no notes in tracks {', '.join(VOICES)}")
    _, downbeats = beat_grid(song, bpm)
    start = float(downbeats[np.searchsorted(downbeats, notes[0].beat - 0.25)]) - lead_in_bars * material.BEATS_PER_BAR
    total = bars * material.BEATS_PER_BAR
    beats = np.array([n.beat for n in notes]) - start
    ends = beats + np.array([n.length for n in notes])
    inside = material.played_in_clip(beats, sc, total)
    # a note held into a break or past the clip's end stops there
    stops = np.full(beats.size, float(total))
    for first, _ in sc.breaks:
        stops = np.where(beats < first * 4 - 0.25, np.minimum(stops, first * 4 - 0.05), stops)
    ends = np.minimum(ends, stops)
    played_notes = []
    times, end_times = material.warp(beats, sc, bpm), material.warp(ends, sc, bpm)
    for k in np.where(inside)[0]:
        n = notes[k]
        velocity = int(np.clip(round(n.velocity * GAINS[n.track]), 1, 127))
        for channel, pitch in sounding(n):
            played_notes.append((max(0.0, times[k]), max(times[k] + 0.02, end_times[k]), channel, pitch, velocity))
    end = float(material.warp(np.array([total + 1.0]), sc, bpm)[0])
    rendered = _render(played_notes, end, material.RENDER_RATE)
    audio = material.with_room_noise(material.resample(rendered, material.RENDER_RATE, rate),
                                     np.random.default_rng(seed), snr_db)
    # the truth: the annotation's beats moved by the players' lead on them (every track's notes)
    played = beats[inside]
    clip = material.clip_from_truth(f"POP909/{song.name}", scenario, "pop909", rate, audio, bpm, total, played,
                                    np.ones(played.size, bool))
    return replace(clip, sounds_after=sounds_after(song, bpm))


def cached_clip(song: str | Path, bpm: float, scenario: str, rate: int = 16000, lead_in_bars: int = 0) -> material.Clip:
    """``make_clip`` kept in the clip cache (``DRUMMACHINE_CLIP_CACHE``), as the drummers' clips are."""
    song = Path(song)
    lead_in = f"|lead{lead_in_bars}" if lead_in_bars else ""
    return material.kept(f"pop909|{song.name}|{bpm}|{scenario}|{rate}{lead_in}", f"POP909/{song.name}", scenario,
                          "pop909", rate, bpm, lambda: make_clip(song, bpm, scenario, rate=rate, lead_in_bars=lead_in_bars))


def attack_delay(audio: np.ndarray, rate: int, within: float = 0.3) -> float:
    """Seconds from the start of ``audio`` (a note's, from its note-on) until its 1-ms RMS envelope
    first comes within ``ONSET_DB`` of its peak over the first ``within`` seconds."""
    x = np.asarray(audio, np.float64)[:int(within * rate)]
    n = max(1, rate // 1000)
    envelope = np.sqrt(np.convolve(x * x, np.ones(n) / n, mode="full")[:x.size])
    peak = float(envelope.max())
    if peak <= 0:
        return 0.0
    return float(np.argmax(envelope >= peak * 10 ** (ONSET_DB / 20))) / rate


def attack_delays(keys: list[tuple[int, int]], velocity: int = 80, gap: float = 1.28) -> dict[tuple[int, int], float]:
    """``attack_delay`` of each (channel, pitch) through FluidSynth, each note alone, ``gap`` apart.
    FluidSynth starts a note at its next 64-sample block: the notes go where a millisecond (the
    MIDI file's tick here) meets a block (every 0.64 s at 44.1 kHz), so a note's delay is its
    instrument's, the same whichever notes are measured with it (in a song the block adds 0-1.5 ms
    more, not counted: the correction errs small)."""
    notes = [(1.28 + i * gap, 1.28 + i * gap + 0.4, channel, pitch, velocity) for i, (channel, pitch) in enumerate(keys)]
    audio = _render(notes, 2.56 + len(keys) * gap, ATTACK_RATE)
    return {key: attack_delay(audio[int(round(start * ATTACK_RATE)):], ATTACK_RATE)
            for key, (start, *_rest) in zip(keys, notes)}


_ATTACKS: dict[tuple[int, int], float] = {}


def sounds_after(song: str | Path, bpm: float) -> float:
    """How long after its note-ons the song's beats sound: the median ``attack_delay`` over the
    notes on its beats (within a 32nd note), each note's instrument and pitch rendered alone."""
    song = Path(song)
    notes = read_notes(song / f"{song.name}.mid")
    phase, _ = beat_grid(song, bpm)
    keys = [key for n in notes if abs(n.beat - phase - round(n.beat - phase)) <= 0.125 for key in sounding(n)]
    if not keys:
        return 0.0
    missing = sorted(set(keys) - set(_ATTACKS))
    if missing:
        _ATTACKS.update(attack_delays(missing))
    return float(np.median([_ATTACKS[k] for k in keys]))
