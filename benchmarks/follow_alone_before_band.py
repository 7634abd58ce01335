"""The machine playing alone before the band, listening to the room (issue 13): does it move?

A band often starts after the machine (its intro, a count-in by the drums). Until the band comes
in, the input holds the room: a mic's room noise, or an idle interface's hiss. Where the tracker
is sure of it for the 4 readings that lock the follower, the machine playing alone jumps onto a
beat that is not there and takes its tempo, then holds it until the band comes. For each
validation performance, ``--rooms`` rooms of ``--seconds`` s before the band (20 dB under the band,
or at ``--dbfs``), the replay (``follow.replay``: the real tracker and follower through the
engine, a manual clock): how many of the machine's beats moved by more than a phase step and a
tempo step (5.5 ms) while it played alone, the largest move, its tempo when the band came in
against the song's, and how many band beats it took to be on the band's beat after.

    python benchmarks/follow_alone_before_band.py --dbfs -80
    python benchmarks/follow_alone_before_band.py --dbfs -80 --no-silence-gate   # as before 2026-12-07
    python benchmarks/follow_alone_before_band.py --seconds 10 --snr-db 15 [--split train --performances 12]

(the last: how often the tracker heard the band come in over the room, ``band_entries_heard``, and
how soon the machine was on its beat after.)

(benchmarks/follow_alone_before_band.json holds the runs docs/follow.md cites.)

``--jack``: the whole ``play --headless --fake-model --listen`` on a running JACK server instead
(``follow_instrument.run_one``: the room or hiss, ``--seconds`` of it, then the band, from a player
client), the first performance, ``--rooms`` rooms, the default gate and ``--listen-gate -100`` (as
before) in turns (``--split`` is the replay's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import follow  # noqa: E402
import follow_material as material  # noqa: E402

MOVED = 0.0055  #: seconds: more than a phase step (5 ms) and a tempo step (0.5% of a beat) together


def alone(row: dict, bpm: float) -> dict:
    """What the machine did before the band's first beat."""
    ours = np.array(row["beats_s"])
    before = ours[ours < row["band_beats_s"][0] - 0.1]
    spacing = np.diff(before)
    moves = np.abs(np.diff(spacing)) if spacing.size > 2 else np.zeros(1)
    tempo = 60.0 / float(np.median(spacing[-8:])) if spacing.size >= 8 else bpm
    return {"beats_alone": int(before.size), "beats_moved": int((moves > MOVED).sum()),
            "largest_move_ms": round(float(moves.max()) * 1000, 1),
            "tempo_at_entry_vs_song_pct": round((tempo / bpm - 1) * 100, 2)}


def on_jack(args) -> list[dict]:
    """``play`` on JACK through ``--seconds`` of the room before the band, with the silence gate and
    without it (``--listen-gate -100``), in turns."""
    import follow_instrument

    path, bpm = material.validation_performances(1)[0]
    rows = []
    for room in range(args.rooms):
        clip = material.with_room_before(material.make_clip(path, bpm, "steady", "band", follow_instrument.RATE),
                                         args.seconds, room, snr_db=args.snr_db, dbfs=args.dbfs)
        for gate, extra in (("silence (default)", ()), ("-100 dBFS (as before)", ("--listen-gate", "-100"))):
            raw = follow_instrument.run_one(clip, "beat", start_offset=0.137, extra=extra)
            rate = follow_instrument.RATE
            m = follow_instrument.measure(raw, clip, "steady")
            row = {"beats_s": list(raw["drummer_frames"] / rate), "band_beats_s": list(raw["band_frames"] / rate)}
            rows.append({"performance": path, "bpm": bpm, "room": room, "gate": gate} | alone(row, bpm)
                        | {"band_beats_to_lock": m.get("band_beats_to_lock"), "phase_error_ms_p95": m.get("phase_error_ms_p95"),
                           "misses": raw["misses"], "underruns": raw["underruns"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--performances", type=int, default=8)
    ap.add_argument("--rooms", type=int, default=3, help="rooms (noise seeds) per performance")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--dbfs", type=float, default=None, help="the room's level (default: --snr-db under the band)")
    ap.add_argument("--snr-db", type=float, default=20.0, help="the band's level over the room's")
    ap.add_argument("--split", default="validation", help="validation or train (the replay only)")
    ap.add_argument("--no-silence-gate", action="store_true",
                    help="no gate where the musician set none (as the code before 2026-12-07 night)")
    ap.add_argument("--jack", action="store_true", help="through play on a running JACK server (see above)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.jack:
        rows = on_jack(args)
        if args.out:
            Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args),
                                                  "rows": rows}, indent=1) + "\n")
        return 0
    if args.no_silence_gate:
        import drummachine.listen.loudness as loudness
        loudness.SILENCE_DB = -200.0
    rows = []
    for i, (path, bpm) in enumerate(material.validation_performances(args.performances, split=args.split)):
        for room in range(args.rooms):
            r = follow.replay("steady", (path, bpm), room_before=args.seconds, room_seed=100 * i + room,
                              room_dbfs=args.dbfs, room_snr_db=args.snr_db, with_beats=True)
            rows.append({"performance": path, "bpm": bpm, "room": room} | alone(r, bpm)
                        | {"band_beats_to_lock": r["band_beats_to_lock"], "phase_error_ms_p95": r["phase_error_ms_p95"],
                           "tracker_entries": r["tracker_entries"]})
            print(json.dumps(rows[-1]), flush=True)
    locks = [r["band_beats_to_lock"] for r in rows if r["band_beats_to_lock"] is not None]
    summary = {"runs": len(rows), "runs_that_moved_alone": sum(r["beats_moved"] > 0 for r in rows),
               "band_entries_heard": sum(r["tracker_entries"] > 0 for r in rows),
               "locked_over_8_band_beats": sum(r["band_beats_to_lock"] is None or r["band_beats_to_lock"] > 8 for r in rows),
               "largest_move_ms": max(r["largest_move_ms"] for r in rows),
               "largest_tempo_off_pct": max(abs(r["tempo_at_entry_vs_song_pct"]) for r in rows),
               "band_beats_to_lock_median": float(np.median(locks)) if locks else None,
               "never_locked": sum(r["band_beats_to_lock"] is None for r in rows)}
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args),
                                              "summary": summary, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
