"""Where a JACK run's beat goes off: what the listening process heard, what the engine decided and
where its beats came out, each against the band.

The real ``play --headless --fake-model --listen`` follows a clip on JACK (``follow_instrument.run_one``,
the rock at 115 from cold, as ``follow_jack_ab.py``) with ``benchmarks/capture_site/sitecustomize.py``
in its processes, which writes every block the listener captured, every reading it published, every
beat the engine decided and every MIDI clock it sent. Per run:

- the capture: each second of the captured audio found in what the player sent (cross
  correlation), and the capture's frame stamp (what ``Timing`` maps to time) against the frame
  the player sent it in (-1 period is the two sides' conventions: the player stamps a block by its
  end, the capture's reads by the period they came in; what the listener times a block by is its
  period's start, and it adds the period back for a port with no capture latency, as the player's is);
- the readings: the listener's next beat against the band's beat (on the monotonic clock, the
  player's frames carried there by its callbacks' times);
- the MIDI chain: each beat as the engine decided it (its clock carried to JACK's microseconds at
  that moment) against where its clock came out (the recorder's frame, on JACK's clock); and the
  clocks the recorder got before the Start;
- the tracker run offline on exactly the captured samples, against the same tracker on the clip.

    jackd -d dummy -r 48000 -p 128 &
    python benchmarks/follow_capture_check.py --runs 3 --keep /tmp/captures --out benchmarks/follow_capture_check.json
    python benchmarks/follow_capture_check.py --analyse /tmp/captures     # again from what was kept
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import follow_instrument as instrument
import follow_material as material

HERE = Path(__file__).resolve().parent
SITE = HERE / "capture_site"
PERCENTILES = (("p5", 5), ("p50", 50), ("p95", 95))


def _percentiles(x: np.ndarray, scale: float = 1e3, digits: int = 1) -> dict | None:
    x = np.asarray(x, np.float64)
    return {q: round(float(np.percentile(x, p)) * scale, digits) for q, p in PERCENTILES} if x.size else None


def _load(folder: Path, name: str, width: int, dtype=np.float64) -> np.ndarray:
    files = sorted(folder.glob(f"{name}.*.bin"))
    if not files:
        return np.zeros((0, width), dtype) if width > 1 else np.zeros(0, dtype)
    data = np.fromfile(max(files, key=lambda f: f.stat().st_size), dtype)
    return data[:data.size // width * width].reshape(-1, width) if width > 1 else data


def _nearest(grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the nearest value of the sorted ``grid`` to each of ``x``."""
    k = np.clip(np.searchsorted(grid, x), 1, grid.size - 1)
    return np.where(np.abs(grid[k] - x) < np.abs(grid[k - 1] - x), k, k - 1)


def offsets(captured: np.ndarray, sent: np.ndarray, rate: int, expected, step: float = 1.0, span: float = 0.5,
            search: int = 4800) -> list[tuple[int, int]]:
    """(captured sample, sent sample - captured sample) every ``step`` s: where each span of the
    capture is found in what the player sent (the cross-correlation's peak within ``search``
    samples of where the frame stamps put it, ``expected(i)``: a groove repeats every bar)."""
    out, n = [], int(span * rate)
    for i in range(0, captured.size - n, int(step * rate)):
        x = captured[i:i + n]
        guess = expected(i)
        if guess is None or np.sqrt(np.mean(x ** 2)) < 1e-3:
            continue
        lo, hi = max(0, i + guess - search), min(sent.size, i + guess + n + search)
        y = sent[lo:hi]
        if y.size < n:
            continue
        size = 1 << int(np.ceil(np.log2(y.size + n)))
        c = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)[:y.size - n + 1]
        out.append((i, int(np.argmax(c)) + lo - i))
    return out


def tracker_beats(audio: np.ndarray, rate: int, bpm: float, chunk: int = 480) -> np.ndarray:
    """The shipped tracker over ``audio`` in chunks: (stream seconds, predicted next beat) per chunk."""
    from drummachine.listen.tracker import BeatTracker

    t = BeatTracker(rate, bpm)
    out = []
    for i in range(0, audio.size - chunk, chunk):
        t.process(audio[i:i + chunk])
        e = t.estimate()
        out.append((e.time, e.next_beat))
    return np.array(out).reshape(-1, 2)


def check_one(clip, folder: Path, scenario: str = "steady") -> dict:
    """One run of ``play --listen`` with the capture site; what it kept goes to ``folder``."""
    made = {}

    class Player(material.BandPlayer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made["player"] = self

    class Kept(instrument.MidiRecorder):
        def __init__(self, name: str = "rec"):
            super().__init__(name, usecs=True)
            made["recorder"] = self

    plain_player, plain_recorder = material.BandPlayer, instrument.MidiRecorder
    material.BandPlayer, instrument.MidiRecorder = Player, Kept
    try:
        env = {"DRUMMACHINE_BENCH_CAPTURE_DIR": str(folder),
               "PYTHONPATH": os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p)}
        raw = instrument.run_one(clip, "beat", wait_for_band=False, lead_in=2.0, start_offset=0.137, env_extra=env)
    finally:
        material.BandPlayer, instrument.MidiRecorder = plain_player, plain_recorder
    player, rec = made["player"], made["recorder"]
    np.savez(folder / "run.npz", band_frames=raw["band_frames"], played_frames=raw["played_frames"],
             drummer_frames=raw["drummer_frames"], player_times=np.array(player.times, np.float64),
             drummer_usecs=np.array([rec.usecs.get(int(f), np.nan) for f in raw["drummer_frames"]], np.float64),
             pad=player.pad, underruns=raw["underruns"] or 0,
             clocks=np.array([f for f, d in rec.events if d[:1] == b"\xf8"], np.float64),
             starts=np.array([f for f, d in rec.events if d[:1] == b"\xfa"], np.float64),
             unheard=np.array(rec.unheard, np.float64).reshape(-1, 2))
    return analyse(clip, folder, scenario)


def analyse(clip, folder: Path, scenario: str = "steady") -> dict:
    """The figures of one run from what ``check_one`` kept in ``folder``."""
    saved = np.load(folder / "run.npz")
    rate = instrument.RATE
    raw = {"band_frames": saved["band_frames"], "played_frames": saved["played_frames"],
           "drummer_frames": saved["drummer_frames"], "audible": clip.audible, "tempo": clip.tempo,
           "misses": None, "underruns": int(saved["underruns"]), "listener_cpu_share": None, "summary": ""}
    row = instrument.measure(raw, clip, scenario)
    out = {k: row.get(k) for k in ("band_beats_to_lock", "phase_error_ms_p50", "phase_error_ms_p95",
                                   "phase_error_vs_played_ms_p95", "underruns", "break_tempo_drift_pct",
                                   "beats_to_relock_after_break") if k in row}
    sent_rows = saved["player_times"]  # the player's (monotonic, samples done, frame at block end)
    pad = int(saved["pad"])
    sent_audio = np.concatenate([np.zeros(pad, np.float32), np.asarray(clip.audio, np.float32)])
    # frames -> monotonic: a line through the player's callback times against its blocks' first
    # frames (a callback runs as its period starts), moved down to its lowest point
    period = float(np.median(np.diff(sent_rows[:, 2])))
    starts = sent_rows[:, 2] - period
    slope = float(np.polyfit(starts, sent_rows[:, 0], 1)[0])
    origin = float(np.min(sent_rows[:, 0] - starts * slope))
    band_mono = origin + slope * raw["band_frames"]
    played_mono = origin + slope * raw["played_frames"]
    ours_mono = origin + slope * raw["drummer_frames"]

    # 1. the capture: samples lost or doubled, and its frame stamps against where they were sent
    audio = _load(folder, "audio", 1, np.float32)
    blocks = _load(folder, "blocks", 3)  # (monotonic, samples so far, frame stamp) at each block's end

    def stamped_frame(i):  # the capture's own frame for its sample i
        k = min(int(np.searchsorted(blocks[:, 1], i)), len(blocks) - 1)
        return i + blocks[k, 2] - blocks[k, 1]

    def sent_sample(frame):  # the player's sample that went out in that frame
        k = min(int(np.searchsorted(sent_rows[:, 2], frame)), len(sent_rows) - 1)
        return sent_rows[k, 1] - (sent_rows[k, 2] - frame)

    def sent_frame(j):
        k = min(int(np.searchsorted(sent_rows[:, 1], j)), len(sent_rows) - 1)
        return sent_rows[k, 2] - (sent_rows[k, 1] - j)

    def expected(i):
        if not blocks.size:
            return None
        j = sent_sample(stamped_frame(i))
        return None if j < sent_rows[0, 1] else int(j - i)

    found = offsets(audio, sent_audio, rate, expected)
    out["captured_seconds"] = round(audio.size / rate, 2)
    if found:
        lags = np.array([g for _, g in found])
        out["capture_offset_changes_samples"] = int(np.ptp(lags))
        errors = [stamped_frame(i) - sent_frame(i + g) for i, g in found]
        out["capture_frame_stamp_error_ms"] = _percentiles(np.array(errors) / rate, digits=2)

    # 2. the readings: the next beat the listener published, against the band's
    readings = _load(folder, "readings", 7)  # (monotonic, heard, bpm, next beat, confidence, status, xruns)
    sure = readings[(readings[:, 4] > 0.5) & (readings[:, 3] > 0)] if readings.size else readings
    series = []
    if sure.size:
        nb = sure[:, 3]
        near = _nearest(band_mono, nb)
        inside = (nb > band_mono[0] + 5) & (nb < band_mono[-1])
        out["reading_next_beat_vs_click_ms"] = _percentiles((nb - band_mono[near])[inside])
        out["reading_next_beat_vs_played_ms"] = _percentiles((nb - played_mono[near])[inside])
        for a in np.arange(band_mono[0] + 4, band_mono[-1], 4.0):
            m = (nb >= a) & (nb < a + 4)
            o = ours_mono[(ours_mono >= a) & (ours_mono < a + 4)]
            series.append({"t": round(float(a - band_mono[0]), 1),
                           "reading_ms": round(float(np.median(nb[m] - band_mono[near[m]])) * 1e3, 1) if m.any() else None,
                           "engine_ms": round(float(np.median(o - band_mono[_nearest(band_mono, o)])) * 1e3, 1)
                           if o.size else None})
    out["per_4s_vs_click"] = series

    # 3. the MIDI chain: the engine's decided beats against where their clocks came out (JACK's clock)
    decided = _load(folder, "decided", 7)  # (monotonic, engine now, now, beat, its time, band's next, heard)
    clocks_sent = _load(folder, "sent", 5)  # (monotonic, JACK us, engine now, due, due on JACK's clock)
    if decided.size and clocks_sent.size:
        jack_minus_mono = float(np.median(clocks_sent[:, 1] - clocks_sent[:, 0] * 1e6))
        intended_us = (decided[:, 0] + decided[:, 4] - decided[:, 1]) * 1e6 + jack_minus_mono
        out_us = saved["drummer_usecs"]
        chain = (out_us[_nearest(out_us, intended_us)] - intended_us) / 1e3
        out["midi_chain_on_jack_clock_ms"] = _percentiles(chain[np.abs(chain) < 100] / 1e3, digits=2)
        band_said = decided[:, 0] + decided[:, 5] - decided[:, 1]
        seen = (decided[:, 5] > 0) & (band_said > band_mono[0] + 5)
        out["engine_heard_band_vs_click_ms"] = _percentiles((band_said - band_mono[_nearest(band_mono, band_said)])[seen])
    starts = saved["starts"]
    if starts.size:
        out["clocks_recorded_before_the_start"] = int(np.sum(saved["clocks"] < starts[-1]))
    out["recorder_periods_unheard"] = int(saved["unheard"].shape[0])

    # 4. the tracker offline: on the captured samples, and on the clip itself
    if found and audio.size:
        idx = np.array([i for i, _ in found])
        lag = np.array([g for _, g in found])
        on_captured = tracker_beats(audio, rate, clip.bpm)
        use = (on_captured[:, 1] > 0) & (on_captured[:, 0] * rate > idx[0] + 5 * rate)
        s = on_captured[use, 1] * rate
        s = s + lag[np.minimum(np.searchsorted(idx, s), lag.size - 1)]  # in the player's samples
        truth = clip.beats * rate + pad
        out["offline_tracker_on_captured_vs_click_ms"] = _percentiles((s - truth[_nearest(truth, s)]) / rate)
        on_clip = tracker_beats(np.asarray(clip.audio, np.float32), rate, clip.bpm)
        use = (on_clip[:, 1] > 0) & (on_clip[:, 0] > 5)
        nb = on_clip[use, 1]
        out["offline_tracker_on_clip_vs_click_ms"] = _percentiles(nb - clip.beats[_nearest(clip.beats, nb)])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--performance", type=int, default=1,
                    help="which of the validation split's longest 4/4 beats (1: the rock at 115)")
    ap.add_argument("--scenario", default="steady", choices=tuple(material.SCENARIOS))
    ap.add_argument("--keep", default=None, help="keep each run's captures in a folder here")
    ap.add_argument("--analyse", default=None, help="only analyse the runs kept in this folder")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    path, bpm = material.validation_performances(args.performance)[args.performance - 1]
    clip = material.make_clip(path, bpm, args.scenario, "band", rate=instrument.RATE)
    if args.analyse:
        folders = sorted(Path(args.analyse).glob("run*"))
    else:
        folders = []
        for r in range(args.runs):
            folder = Path(args.keep) / f"run{r}" if args.keep else Path(tempfile.mkdtemp(prefix="capture-"))
            folder.mkdir(parents=True, exist_ok=True)
            folders.append(folder)
    rows = []
    for r, folder in enumerate(folders):
        row = {"run": r, "scenario": args.scenario,
               **(analyse(clip, folder, args.scenario) if args.analyse else check_one(clip, folder, args.scenario))}
        print(json.dumps({k: v for k, v in row.items() if k != "per_4s_vs_click"}), flush=True)
        rows.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps({"what": " ".join(["follow_capture_check.py", *(argv or sys.argv[1:])]),
                                              "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
