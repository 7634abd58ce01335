"""Standard MIDI files in and out (the mido edge of the representation)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drummachine.core.errors import DrumMachineError
from drummachine.core.groove import Meter, Notes, ticks_to_seconds

DRUM_CHANNEL = 9  # 0-based: channel 10
#: Limits that keep a hostile or broken file from taking the machine's memory or time. mido holds
#: every message as an object (about 300 bytes and 20 us each): a 1 MB file is at most ~330,000
#: messages, ~100 MB and ~7 s. The Groove MIDI Dataset's largest file is 156 kB (23 minutes).
MAX_MIDI_BYTES = 1_000_000
MAX_NOTES = 100_000  #: more than an hour of busy playing
MAX_BARS = 10_000  #: a groove is a (steps, voices) array: this bounds it (4/4: 160,000 steps, ~13 MB)


@dataclass(frozen=True)
class Performance:
    """The drum notes of a MIDI file with its tempo map and time signature."""

    notes: Notes
    tempos: list[tuple[int, int]]  #: (tick, microseconds per beat), sorted
    meter: Meter
    meters: int  #: number of distinct time signatures in the file

    @property
    def bpm(self) -> float:
        return 60_000_000.0 / self.tempos[0][1]

    @property
    def constant_tempo(self) -> bool:
        return len({us for _, us in self.tempos}) == 1

    def seconds(self) -> np.ndarray:
        """Onset of every note in seconds, through the tempo map."""
        return ticks_to_seconds(self.notes.ticks, self.notes.ticks_per_beat, self.tempos)


def read_midi(path: str | Path) -> Performance:
    """Read the drum notes of a MIDI file.

    Notes on channel 10 are taken if there are any, otherwise the notes of every channel.
    Raises DrumMachineError naming the file for anything unreadable, without notes, or beyond
    the limits above (size, notes, length): a broken file is one line, never a traceback or a hang.
    """
    import mido

    path = Path(path)
    if not path.is_file():
        raise DrumMachineError(str(path), "no such file")
    size = path.stat().st_size
    if size > MAX_MIDI_BYTES:
        raise DrumMachineError(str(path), f"{size / 1e6:.1f} MB is too large for a drum MIDI file; "
                               f"allowed: up to {MAX_MIDI_BYTES / 1e6:g} MB")
    try:
        mid = mido.MidiFile(str(path))
    except Exception as exc:  # mido raises many types for corrupt data; all mean the same here
        raise DrumMachineError(str(path), f"not a readable MIDI file ({exc.__class__.__name__}: "
                               f"{str(exc)[:120]})") from None
    if mid.type == 2:
        raise DrumMachineError(str(path), "MIDI type 2 (sequential tracks) is not supported")
    if not mid.ticks_per_beat or mid.ticks_per_beat <= 0:
        raise DrumMachineError(str(path), "SMPTE time division is not supported; need ticks per beat")
    tempos: list[tuple[int, int]] = []
    signatures: list[tuple[int, int, int]] = []
    rows: list[tuple[int, int, int, int]] = []
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                if len(rows) == MAX_NOTES:
                    raise DrumMachineError(str(path), f"more than {MAX_NOTES:,} notes; allowed: up to "
                                           f"{MAX_NOTES:,} (about an hour of playing)")
                rows.append((tick, msg.note, msg.velocity, msg.channel))
            elif msg.type == "set_tempo":
                if msg.tempo <= 0:  # 0 microseconds per beat: an infinite tempo (bpm = 60e6 / tempo)
                    raise DrumMachineError(str(path), f"tempo 0 at tick {tick}: not a tempo; allowed: "
                                           "1 to 16777215 microseconds per beat")
                tempos.append((tick, msg.tempo))
            elif msg.type == "time_signature":
                signatures.append((tick, msg.numerator, msg.denominator))
    if not rows:
        raise DrumMachineError(str(path), "no notes in this MIDI file")
    arr = np.array(rows, dtype=np.int64)
    if (arr[:, 3] == DRUM_CHANNEL).any():
        arr = arr[arr[:, 3] == DRUM_CHANNEL]
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    tempos = sorted(set(tempos)) or [(0, 500_000)]
    if tempos[0][0] != 0:
        tempos.insert(0, (0, 500_000))
    signatures.sort()
    try:
        meter = Meter(signatures[0][1], signatures[0][2]) if signatures else Meter()
    except DrumMachineError as exc:
        raise DrumMachineError(str(path), exc.what) from None
    # enormous delta times: the last note decides how long the groove's arrays are
    bars = int(arr[-1, 0]) * 4 // (mid.ticks_per_beat * meter.steps_per_bar) + 1
    if bars > MAX_BARS:
        raise DrumMachineError(str(path), f"its last note is {bars:,} bars in; allowed: up to {MAX_BARS:,} bars")
    notes = Notes(arr[:, 0], arr[:, 1].astype(np.int16), arr[:, 2].astype(np.int16), mid.ticks_per_beat)
    return Performance(notes, tempos, meter, len({s[1:] for s in signatures}) or 1)


def check_folder(path: str | Path) -> Path:
    """The folder ``path`` will be written in; a clear error if it does not exist (say so before
    the work, not after)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise DrumMachineError(str(path), f"folder {directory} does not exist")
    return directory


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then move the result into place: no partial file on failure."""
    path = Path(path)
    directory = check_folder(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file readable by its owner only; the result gets the mode any new file
        # would (the umask's), or keeps the one of the file it replaces
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask sets it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_midi(path: str | Path, notes: Notes, bpm: float, meter: Meter = Meter(), channel: int = 10,
               note_ticks: int | None = None, tempo_changes=(), markers=()) -> None:
    """Write notes as a type-0 standard MIDI file with tempo and time signature at time 0.

    ``channel`` is 1-based. Every note gets a note-off after ``note_ticks`` (a 32nd by default).
    ``tempo_changes``: (tick, bpm) after the first; ``markers``: (tick, text), e.g. section names.
    """
    import mido

    tpb = notes.ticks_per_beat
    length = note_ticks or max(1, tpb // 8)
    events = []  # (tick, order, message): meta first, then note-offs, then note-ons at the same tick
    for tick, text in markers:
        events.append((int(tick), -2, mido.MetaMessage("marker", text=str(text))))
    for tick, tempo in tempo_changes:
        if tick > 0:
            events.append((int(tick), -1, mido.MetaMessage("set_tempo", tempo=int(round(60_000_000 / tempo)))))
    for tick, pitch, vel in zip(notes.ticks.tolist(), notes.pitches.tolist(), notes.velocities.tolist()):
        events.append((tick, 1, mido.Message("note_on", note=pitch, velocity=vel, channel=channel - 1)))
        events.append((tick + length, 0, mido.Message("note_off", note=pitch, velocity=0, channel=channel - 1)))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name="drummachine", time=0))
    track.append(mido.MetaMessage("time_signature", numerator=meter.numerator, denominator=meter.denominator, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=int(round(60_000_000 / bpm)), time=0))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(type=0, ticks_per_beat=tpb)
    mid.tracks.append(track)
    atomic_write(path, lambda tmp: mid.save(tmp))
