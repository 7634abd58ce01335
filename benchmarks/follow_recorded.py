"""Recorded music for following the band: real recordings, their beats from an offline tracker.

Everything else the follower is measured on is rendered from MIDI (the Groove drummers' band, POP909's
songs through FluidSynth). This takes recordings: players in a room, mixed and mastered. They come
from two public repositories' example audio, none of it in this repository (the benchmark reads
them from a folder, ``--dir``, each file under its own name; where each comes from is in
``RECORDINGS``):

- librosa's example data (https://github.com/librosa/data, ``audio/``): whole tracks and excerpts
  from the Free Music Archive, ccMixter and Freesound (CC BY 3.0, or CC BY-NC: measured here, never shipped);
- mirdata's test resources (https://github.com/mir-dataset-loaders/mirdata,
  ``tests/resources/mir_datasets/``): 20-57 s excerpts of the GTZAN, Ballroom, Hainsworth, SIMAC and
  Cuidado beat-tracking datasets, with their annotators' first 3-5 beats (the rest of each
  annotation is not there).

The truth is not known beat by beat: the reference is an offline tracker's, librosa's dynamic-programming
beat tracker (Ellis 2007) over the whole recording (it hears the future; the instrument does not),
started at the song's tempo, its beats moved earlier by ``REFERENCE_LAG``: on the drummers' band,
whose beats are known, its beats are 17-34 ms late (the median per performance; its onset envelope's
window is 93 ms) and scatter ±15-25 ms around that (p5-p95), and on one of 8 it was on the
off-beat. So the figures are the F-measure at ±70 ms (MIREX) and where the machine's beats fall
against the reference's: on the beat, on the off-beat, or elsewhere (a third of a beat: a
shuffle's "and"), not milliseconds at p95. The reference is checked against the annotators' first
beats where there are some (``reference_vs_annotators_ms`` in the results).

librosa is for this benchmark only (``pip install librosa``); the runtime never needs it.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import follow_material as material

#: the offline reference's beats are this late against the beat as played: the median over the 8
#: validation drummers' band clips, steady (``--reference-lag``: 17-34 ms per performance, median 31;
#: on one, the gospel at 120, the reference was on the off-beat throughout)
REFERENCE_LAG = 0.031
REFERENCE_RATE = 22050
REFERENCE_HOP = 64  #: 2.9 ms frames
REFERENCE_TIGHTNESS = 400.0  #: how strongly the reference holds its tempo (librosa's default: 100)


@dataclass(frozen=True)
class Recording:
    file: str  #: its name in the folder
    source: str  #: repository and path
    licence: str
    what: str
    #: a drum kit in the mix (the machine would be the band's drummer: most bands' aux send has none),
    #: as its source describes it or its name says (the recordings were not listened to)
    drums: bool
    bpm: float  #: the tempo a musician would set for the song (the annotators' first beats', else the reference's, rounded)
    annotation: str = ""  #: the annotators' beats, a file beside it in the folder ("" if none)


_LIBROSA = "librosa/data audio/"
_MIRDATA = "mir-dataset-loaders/mirdata tests/resources/mir_datasets/"
#: the recordings, one table; musical and 20 s or longer (librosa's speech, birds and whales left out)
RECORDINGS: tuple[Recording, ...] = (
    Recording("country.00000.wav", _MIRDATA + "gtzan_genre/gtzan_genre/genres/country/", "GTZAN (research use)",
              "country, a band with drums", True, 84, "gtzan_country_00000.beats"),
    Recording("Media-105901.wav", _MIRDATA + "ballroom/B_1.0/audio/Waltz/", "Ballroom (research use)",
              "a waltz (3/4), a ballroom dance recording", True, 83, "Media-105901.beats"),
    Recording("hains001.flac", _MIRDATA + "hainsworth/H_1.0/audio/", "Hainsworth (research use)",
              "a band (Hainsworth's collection)", True, 100, "hains001.beats"),
    Recording("simac_01_H_mikri_Rallou.flac", _MIRDATA + "simac/S_1.0/audio/", "SIMAC (research use)",
              "Greek folk song, a band", False, 74, "simac_01_H_mikri_Rallou.beats"),
    Recording("cuidado_FallaCancion.flac", _MIRDATA + "cuidado/C_1.0/audio/", "Cuidado (research use)",
              "a classical song (Falla), voice and piano", False, 191, "cuidado_FallaCancion.beats"),
    Recording("Karissa_Hobbs_-_Lets_Go_Fishin.hq.ogg", _LIBROSA, "CC BY 3.0 (Free Music Archive)",
              "folk-pop band, strummed guitars, drums", True, 118),
    Recording("Kevin_MacLeod_-_Vibe_Ace.hq.ogg", _LIBROSA, "CC BY 3.0 (Free Music Archive)",
              "jazz combo, swung", True, 130),
    Recording("admiralbob77_-_Choice_-_Drum-bass.hq.ogg", _LIBROSA, "CC BY-NC 3.0 (ccMixter)",
              "hip-hop, drums and bass only", True, 136),
    Recording("442789__lena-orsa__happy-music-pistachio-ice-cream-ragtime.hq.ogg", _LIBROSA, "CC BY-NC 3.0 (Freesound)",
              "ragtime, piano", False, 144),
    Recording("147793__setuniman__sweet-waltz-0i-22mi.hq.ogg", _LIBROSA, "CC BY-NC 3.0 (Freesound)",
              "a waltz (3/4), acoustic instruments", False, 150),
    Recording("Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.hq.ogg", _LIBROSA,
              "CC BY 3.0 (Free Music Archive)", "orchestral (celesta, strings), free in tempo", False, 110),
    Recording("Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).hq.ogg", _LIBROSA,
              "Public Domain (Musopen)", "string orchestra, free in tempo (rubato)", False, 144),
)
BY_FILE = {r.file: r for r in RECORDINGS}


def nearest(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each time in ``t``, the nearest of the sorted times ``x`` (at least 2)."""
    k = np.clip(np.searchsorted(x, t), 1, x.size - 1)
    return np.where(np.abs(x[k] - t) < np.abs(x[k - 1] - t), x[k], x[k - 1])


def read(path: Path, rate: int) -> np.ndarray:
    """The recording, mono, at ``rate`` (soxr, the project's resampler), peak 0.5."""
    import soundfile
    import soxr

    x, sr = soundfile.read(str(path), always_2d=True)
    x = soxr.resample(x.mean(axis=1), sr, rate).astype(np.float32)
    return x / max(float(np.abs(x).max()), 1e-9) * 0.5


def reference_beats(audio: np.ndarray, rate: int, bpm: float, lag: float = REFERENCE_LAG) -> np.ndarray:
    """The offline reference's beats, seconds (see the module's docstring)."""
    import librosa

    y = librosa.resample(audio.astype(np.float64), orig_sr=rate, target_sr=REFERENCE_RATE)
    env = librosa.onset.onset_strength(y=y, sr=REFERENCE_RATE, hop_length=REFERENCE_HOP)
    _, beats = librosa.beat.beat_track(onset_envelope=env, sr=REFERENCE_RATE, hop_length=REFERENCE_HOP, units="time",
                                       tightness=REFERENCE_TIGHTNESS, start_bpm=bpm, trim=False)
    return np.asarray(beats, np.float64) - lag


def annotated_beats(folder: Path, recording: Recording) -> np.ndarray | None:
    if not recording.annotation or not (folder / recording.annotation).exists():
        return None
    lines = (folder / recording.annotation).read_text().split("\n")
    return np.array([float(line.split()[0]) for line in lines if line.strip()])


@functools.lru_cache(maxsize=4)
def clip(folder: Path, recording: Recording, rate: int = 16000, snr_db: float = 20.0) -> material.Clip:
    """The recording as a clip (scenario "steady": as it was played), the room's noise ``snr_db``
    under it as for the other material; its truth the reference's beats. Kept for the replays
    that ask for it again (the reference is a few seconds' work)."""
    audio = read(folder / recording.file, rate)
    beats = reference_beats(audio, rate, recording.bpm)
    beats = beats[beats > 0]
    audio = material.with_room_noise(audio, np.random.default_rng(0), snr_db)
    tempo = 60.0 / np.gradient(beats)
    return material.Clip(recording.file, "steady", "recorded", rate, audio, recording.bpm, beats,
                         np.ones(beats.size, bool), tempo, (), 0.0, beats.copy(), 0.0)


def where_beats_fall(detected: np.ndarray, reference: np.ndarray, skip_beats: int = 8, tolerance: float = 0.07,
                     after: float = -np.inf) -> dict:
    """Of the reference's beats from ``skip_beats`` on (and after ``after`` seconds): the F-measure of
    ``detected`` at ±``tolerance``, and the share of the reference's beats with a detected beat near
    them (on the beat), near their midpoint (on the off-beat), near a third of the beat either side
    (a shuffle's or a triplet's "and"), or none."""
    ref = reference[skip_beats:]
    ref = ref[ref > after]
    if ref.size < 8:
        return {}  # too little left to judge (a short recording, taps near its end)
    detected = np.asarray(detected, np.float64)
    detected = detected[(detected > ref[0] - tolerance) & (detected < ref[-1] + tolerance)]
    if detected.size < 2:
        return {"f_measure": 0.0, "on_beat": 0.0, "off_beat": 0.0, "thirds": 0.0, "elsewhere": 1.0}
    period = np.gradient(ref)
    phase = (nearest(detected, ref) - ref) / period
    phase -= np.round(phase)  # -0.5 .. 0.5 of a beat
    tol = tolerance / period
    on = np.abs(phase) <= tol
    off = np.abs(np.abs(phase) - 0.5) <= tol
    thirds = ~on & ~off & (np.abs(np.abs(phase) - 1 / 3) <= tol)
    n = float(ref.size)
    return {"f_measure": round(material.f_measure(detected, ref, tolerance), 3), "on_beat": round(on.sum() / n, 3),
            "off_beat": round(off.sum() / n, 3), "thirds": round(thirds.sum() / n, 3),
            "elsewhere": round(1 - (on.sum() + off.sum() + thirds.sum()) / n, 3)}


def reference_lag(performances: int = 8) -> dict:
    """How late the reference is against the beat as played, where that is known: the drummers'
    band (steady), ms per performance (median and the 5-95 percentiles over its beats from the 8th)."""
    rows = []
    for path, bpm in material.validation_performances(performances):
        c = material.cached_clip(path, bpm, "steady", "band")
        ref = reference_beats(c.audio, c.rate, bpm, lag=0.0)
        truth = c.played[8:]
        e = nearest(ref, truth) - truth
        e = e[np.abs(e) < 0.1]
        rows.append({"performance": path, "bpm": bpm,
                     "f_measure": round(material.f_measure(ref[ref > truth[0] - 0.07], truth), 3),
                     # None: no reference beat within 100 ms of the played beat (the reference on the off-beat)
                     "late_ms_p5_p50_p95": [round(float(v) * 1000, 1) for v in np.percentile(e, (5, 50, 95))]
                     if e.size >= 8 else None})
        print(json.dumps(rows[-1]), flush=True)
    lates = [r["late_ms_p5_p50_p95"][1] for r in rows if r["late_ms_p5_p50_p95"]]
    return {"rows": rows, "median_late_ms": round(float(np.median(lates)), 1)}


def track_own(c: material.Clip, block: int = 256):
    """The shipped tracker alone on the clip: its beats, and its half-beat moves (the beat/off-beat check's)."""
    from drummachine.listen.tracker import BeatTracker

    tracker = BeatTracker(c.rate, c.bpm, record_beats=True)
    for i in range(0, c.audio.size, block):
        tracker.process(c.audio[i:i + block])
    return np.array(tracker.beats), tracker.flips


def measure(folder: Path, recordings, instrument: bool = True, taps_after: float | None = None) -> dict:
    """``taps_after``: the instrument again with the musician's foot tapping the reference's 3 beats
    after that many seconds (``tap`` while following: "the beat is here"), judged from 2 bars after
    the last tap (the machine joins the band's beat within a second of it; the follower settles
    after): a figure steered by a musician who hears the machine off the band's beat, beside the
    unsteered one on the same beats."""
    import follow

    rows = []
    for rec in recordings:
        c = clip(folder, rec)
        row = {"recording": rec.file, "what": rec.what, "drums": rec.drums, "bpm": rec.bpm,
               "seconds": round(c.seconds, 1), "reference_bpm": round(float(60.0 / np.median(np.diff(c.beats))), 1)}
        annotated = annotated_beats(folder, rec)
        if annotated is not None:  # the reference against the annotators' first beats
            row["reference_vs_annotators_ms"] = [round(float(v) * 1000) for v in nearest(c.beats, annotated) - annotated]
        beats, flips = track_own(c)
        row["tracker"] = where_beats_fall(beats, c.beats) | {"half_beat_moves": flips}
        if instrument:
            follow.RECORDED["folder"] = folder
            r = follow.replay("steady", (rec.file, rec.bpm), mix="recorded", with_beats=True)
            untapped = np.array(r["beats_s"])
            row["instrument"] = where_beats_fall(untapped, c.beats)
            row["instrument"]["band_beats_to_lock"] = r.get("band_beats_to_lock")
            row["instrument"]["beat_moves_over_20ms"] = r.get("beat_moves_over_20ms")
            if taps_after is not None:
                taps = tuple(c.beats[c.beats > taps_after][:3])
                r = follow.replay("steady", (rec.file, rec.bpm), mix="recorded", with_beats=True, taps=taps)
                judged_from = taps[-1] + 2 * 4 * 60.0 / rec.bpm
                row["instrument_tapped"] = where_beats_fall(np.array(r["beats_s"]), c.beats, after=judged_from) | {
                    "taps_s": [round(t, 2) for t in taps], "judged_from_s": round(judged_from, 2)}
                row["instrument_untapped_same_beats"] = where_beats_fall(untapped, c.beats, after=judged_from)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for who in ("tracker", "instrument", "instrument_untapped_same_beats", "instrument_tapped"):
        got = [r[who] for r in rows if "f_measure" in r.get(who, {})]
        if got:
            summary[who] = {k: round(float(np.median([g[k] for g in got])), 3)
                            for k in ("f_measure", "on_beat", "off_beat", "thirds", "elsewhere")}
            summary[who]["recordings_f_at_least_0_9"] = sum(g["f_measure"] >= 0.9 for g in got)
            summary[who]["recordings"] = len(got)
    return {"reference": f"librosa {_librosa_version()} beat_track, tightness {REFERENCE_TIGHTNESS:g}, hop "
                         f"{REFERENCE_HOP} at {REFERENCE_RATE} Hz, moved {REFERENCE_LAG * 1000:g} ms earlier",
            "rows": rows, "summary_median_over_recordings": summary}


def _librosa_version() -> str:
    import librosa

    return librosa.__version__


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None, help="the folder holding the recordings (RECORDINGS) and their annotations")
    ap.add_argument("--only", default="", help="comma-separated: only the recordings whose file name holds one of these")
    ap.add_argument("--tracker-only", action="store_true", help="the tracker alone (no replay through the engine)")
    ap.add_argument("--taps-after", type=float, default=None, metavar="SECONDS",
                    help="the instrument again, the musician tapping the reference's 3 beats after this (steered)")
    ap.add_argument("--reference-lag", action="store_true",
                    help="measure how late the reference is on the drummers' band (whose beats are known)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.reference_lag:
        result["reference_lag"] = reference_lag()
        print(json.dumps({"median_late_ms": result["reference_lag"]["median_late_ms"]}))
    if args.dir:
        folder = Path(args.dir)
        only = [s for s in args.only.split(",") if s]
        chosen = [r for r in RECORDINGS if (folder / r.file).exists() and (not only or any(s in r.file for s in only))]
        missing = [r.file for r in RECORDINGS if not (folder / r.file).exists()]
        if missing:
            print(f"not in {folder}: {', '.join(missing)}", file=sys.stderr)
        result["recorded"] = measure(folder, chosen, instrument=not args.tracker_only, taps_after=args.taps_after)
        print(json.dumps(result["recorded"]["summary_median_over_recordings"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
