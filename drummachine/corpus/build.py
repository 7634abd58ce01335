"""Building the bar-level dataset from a Groove MIDI Dataset folder (info.csv + MIDI files)."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drummachine.core import attributes
from drummachine.corpus.dataset import BAR_FIELDS, FILE_FIELDS, Dataset, genre
from drummachine.core.errors import DrumMachineError
from drummachine.core.groove import groove_from_notes
from drummachine.core.voices import input_map
from drummachine.midi.files import read_midi

INDEX_COLUMNS = {"drummer", "style", "bpm", "beat_type", "time_signature", "midi_filename", "split"}
MIN_FILL_HITS = 4  # the fill of a labelled fill performance is its last bar with at least this many hits


@dataclass
class Report:
    """What a build did: counts, skipped files with reasons, and the fill validation."""

    files: int = 0
    used: int = 0
    bars: int = 0
    notes: int = 0
    merged: int = 0
    unmapped: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    bars_per_genre: Counter = field(default_factory=Counter)
    bars_per_meter: Counter = field(default_factory=Counter)
    bars_per_split: Counter = field(default_factory=Counter)
    fill_labelled: int = 0
    fill_detected_in_beats: int = 0
    detector_recall: float = 0.0  #: share of labelled fills the beat-file detector also flags
    detector_false_rate: float = 0.0  #: share of labelled lead-in (beat) bars it flags
    fill_vs_beat_activity: float = 0.0  #: mean snare/tom activity, fill bars / beat bars

    def summary(self) -> str:
        lines = [
            f"files: {self.files} listed, {self.used} used, {len(self.skipped)} skipped",
            f"bars: {self.bars} ({', '.join(f'{k} {v}' for k, v in sorted(self.bars_per_split.items()))})",
            f"notes: {self.notes} read, {self.merged} merged (same voice, same 16th), {self.unmapped} unmapped",
            "meters: " + ", ".join(f"{k} {v}" for k, v in sorted(self.bars_per_meter.items())),
            "bars per style: " + ", ".join(f"{k} {v}" for k, v in self.bars_per_genre.most_common()),
            f"fills: {self.fill_labelled} labelled (fill performances), {self.fill_detected_in_beats} detected in "
            f"beat performances; detector recall on labels {self.detector_recall:.2f}, flags "
            f"{self.detector_false_rate:.2f} of labelled lead-in bars; fill/beat snare+tom activity "
            f"{self.fill_vs_beat_activity:.2f}x",
        ]
        reasons = Counter(reason.split(" (")[0] for _, reason in self.skipped)
        if self.skipped:
            lines.append("skipped: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
            lines += [f"  {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def _rows(data_dir: Path) -> list[dict]:
    info = data_dir / "info.csv"
    try:
        with open(info, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise DrumMachineError(str(info), f"cannot read the dataset index ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DrumMachineError(str(info), f"the dataset index is not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise DrumMachineError(str(info), f"the dataset index is not CSV ({exc})") from None
    if not rows or not INDEX_COLUMNS <= set(rows[0]):
        raise DrumMachineError(str(info), f"not a Groove MIDI Dataset index; needs columns "
                               f"{', '.join(sorted(INDEX_COLUMNS))}")
    return rows


def _row_problem(row: dict) -> str | None:
    """Why a row of the index cannot be used (a short row leaves columns empty or None)."""
    empty = sorted(k for k in INDEX_COLUMNS if not isinstance(row.get(k), str) or not row[k])
    return f"row without {', '.join(empty)}" if empty else None


def build(data_dir: str | Path, progress=None) -> tuple[Dataset, Report]:
    """Read every performance listed in ``data_dir/info.csv`` into bars; never aborts on a bad file."""
    data_dir = Path(data_dir)
    rows = _rows(data_dir)
    report = Report(files=len(rows))
    note_map = input_map("td11")
    hvo_parts, bar_cols = [], {k: [] for k in BAR_FIELDS}
    file_cols = {k: [] for k in FILE_FIELDS}
    start = 0
    labelled_fill, labelled_lead, beat_bars = [], [], []
    for n, row in enumerate(rows):
        rel = row.get("midi_filename") or f"info.csv row {n + 2}"
        if progress:
            progress(n + 1, len(rows), rel)
        problem = _row_problem(row)
        if problem:
            report.skipped.append((rel, problem))
            continue
        try:
            perf = read_midi(data_dir / rel)
            if not perf.constant_tempo:
                raise DrumMachineError(rel, "tempo changes within the performance")
            groove, conv = groove_from_notes(perf.notes, note_map, perf.bpm, perf.meter)
            if conv.unmapped == conv.notes:
                raise DrumMachineError(rel, "no drum notes (no note maps to a kit voice)")
        except DrumMachineError as exc:
            report.skipped.append((rel, exc.what))
            continue
        bars = groove.bar_array()
        # Trailing bars with a single landing hit (or none) are not bars of playing.
        counts = bars[:, :, 0].sum(axis=(1, 2))
        keep = len(counts)
        while keep > 1 and counts[keep - 1] <= 1:
            keep -= 1
        bars = bars[:keep]
        attrs = attributes.measure(bars)
        fill = np.zeros(keep, np.int8)
        if row["beat_type"] == "fill":
            busy = np.nonzero(bars[:, :, 0].sum(axis=(1, 2)) >= MIN_FILL_HITS)[0]
            last = int(busy[-1]) if busy.size else keep - 1
            fill[last] = 1
            labelled_fill.append(bars[last:last + 1])
            if last > 0:
                labelled_lead.append(bars[:last])
        else:
            detected = attributes.detect_fills(bars)
            fill[detected] = 1
            report.fill_detected_in_beats += int(detected.sum())
            beat_bars.append(bars[~detected])
        file_index = len(file_cols["path"])
        file_cols["path"].append(rel)
        file_cols["style"].append(row["style"])
        file_cols["genre"].append(genre(row["style"]))
        file_cols["bpm"].append(perf.bpm)
        file_cols["beat_type"].append(row["beat_type"])
        file_cols["drummer"].append(row["drummer"])
        file_cols["split"].append(row["split"])
        file_cols["meter"].append(str(perf.meter))
        spb = perf.meter.steps_per_bar
        hvo_parts.append(bars.reshape(keep * spb, 3, -1))
        bar_cols["start"].append(start + spb * np.arange(keep))
        bar_cols["steps"].append(np.full(keep, spb))
        bar_cols["file"].append(np.full(keep, file_index))
        bar_cols["index"].append(np.arange(keep))
        bar_cols["fill"].append(fill)
        for k in attributes.ATTRIBUTES:
            bar_cols[k].append(attrs[k])
        start += keep * spb
        report.used += 1
        report.bars += keep
        report.notes += conv.notes
        report.merged += conv.merged
        report.unmapped += conv.unmapped
        report.bars_per_genre[genre(row["style"])] += keep
        report.bars_per_meter[str(perf.meter)] += keep
        report.bars_per_split[row["split"]] += keep
    if not hvo_parts:
        raise DrumMachineError(str(data_dir), "no readable performance in this folder")
    dtypes = {"start": np.int64, "steps": np.int16, "file": np.int32, "index": np.int32, "fill": np.int8}
    bars_out = {k: np.concatenate(v).astype(dtypes.get(k, np.float32)) for k, v in bar_cols.items()}
    files_out = {k: (np.array(v, dtype=np.float32) if k == "bpm" else np.array(v, dtype=str))
                 for k, v in file_cols.items()}
    report.fill_labelled = len(labelled_fill)
    _validate_fills(report, labelled_fill, labelled_lead, beat_bars)
    return Dataset(np.concatenate(hvo_parts).astype(np.float32), bars_out, files_out), report


def _validate_fills(report: Report, fills, leads, beats) -> None:
    """How the labelled fills compare with beat bars, and how well the detector finds them."""
    same = [b for b in fills if b.shape[1] == 16]
    if same:
        fill_bars = np.concatenate(same)
        score = attributes.fill_activity(fill_bars)
        beat_16 = [b for b in beats if b.shape[1] == 16 and len(b)]
        if beat_16:
            beat_activity = attributes.fill_activity(np.concatenate(beat_16))
            report.fill_vs_beat_activity = float(score.mean() / max(beat_activity.mean(), 1e-9))
        # the detector, applied to each fill performance with its lead-in as context
        hits = []
        for lead, fill in zip(leads, fills):
            if lead.shape[1] != fill.shape[1]:
                continue
            both = np.concatenate([lead, fill])
            det = attributes.detect_fills(both)
            hits.append((det[-1], det[:-1].mean() if len(det) > 1 else 0.0))
        if hits:
            report.detector_recall = float(np.mean([h[0] for h in hits]))
            report.detector_false_rate = float(np.mean([h[1] for h in hits]))


def print_progress(done: int, total: int, name: str) -> None:
    """A one-line progress bar on stderr."""
    if done == total or done % 25 == 0:
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} ")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
