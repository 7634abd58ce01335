"""The musician's taps on the band's beat, through the whole instrument on JACK.

A band that puts the machine on the "and": the drummers' band (a validation performance) with a
keyboard stab on every "and", alone for 3 s and then louder than the band's beat
(``follow_material.with_keys_on_the_off_beat(clip, later=1.0)``). `play --headless --fake-model
--listen --follow beat` follows it; a foot controller on ``--midi-in`` (``jack_midi_probe.py``'s
sender) sends CC 117 (tap tempo in the default preset) on three of the band's beats 12 s in, or
does not. What is measured: the machine's beats (its MIDI notes, as a module gets them) against the
band's, in beats: the share on the "and" before the taps, and after them (from 2 s after the last
tap) the share on the beat and the 95th percentile of the error, ms.

    python benchmarks/follow_tap_jack.py --rounds 2 --out benchmarks/follow_tap_jack.json

Needs a JACK server (``jackd -d dummy -r 48000 -p 128``) and the Groove MIDI Dataset.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import follow_instrument
import follow_material as material

TAP_AFTER = 12.0  #: seconds into the band: the foot taps its next 3 beats


def one(clip, tapped: bool) -> dict:
    taps = tuple(clip.beats[clip.beats > TAP_AFTER][:3]) if tapped else ()
    run = follow_instrument.run_one(clip, "beat", lead_in=1.0, taps_at=taps, extra=("--no-audio",))
    ours = np.asarray(run["drummer_frames"], np.float64) / follow_instrument.RATE
    band = np.asarray(run["band_frames"], np.float64) / follow_instrument.RATE
    period = 60.0 / clip.bpm
    k = np.clip(np.searchsorted(band, ours), 1, band.size - 1)
    nearest = np.where(np.abs(band[k] - ours) < np.abs(band[k - 1] - ours), band[k], band[k - 1])
    error = ours - nearest  # s, within half a beat
    beat = np.abs(error) / period  # 0: on the band's beat, 0.5: on its "and"
    def at(t):  # clip seconds -> the JACK frame clock's seconds
        return band[0] + t - clip.beats[0]

    last_tap = at(taps[-1] if taps else TAP_AFTER + 3 * period)
    before = (ours > at(8.0)) & (ours < at(TAP_AFTER))
    after = ours > last_tap + 2.0
    return {"tapped": tapped, "taps_s": [round(float(t), 2) for t in taps],
            "tapped_at_s": [round(t, 2) for t in run["tapped_at"] or []],
            "on_the_and_before": round(float(np.mean(beat[before] > 0.4)), 2) if before.any() else None,
            "on_the_beat_after": round(float(np.mean(beat[after] < 0.1)), 2) if after.any() else None,
            "on_the_and_after": round(float(np.mean(beat[after] > 0.4)), 2) if after.any() else None,
            "error_after_ms_p95": round(float(np.percentile(np.abs(error[after]), 95) * 1000), 1) if after.any() else None,
            "beats_after": int(after.sum()), "returncode": run["returncode"], "summary": run["summary"],
            "said_tapped": "the band's beat is where the foot tapped" in Path(run["log"]).read_text(errors="replace")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the two runs (untapped, tapped) in turns")
    ap.add_argument("--bars", type=int, default=16)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    path, bpm = material.validation_performances(1)[0]
    base = material.make_clip(path, bpm, "steady", "band", rate=48000, bars=args.bars)
    audio = material.with_keys_on_the_off_beat(base, later=1.0)
    clip = replace(base, audio=(audio * (0.9 / max(float(np.abs(audio).max()), 1e-9))).astype(np.float32))
    rows = []
    for _ in range(args.rounds):
        for tapped in (False, True):
            rows.append(one(clip, tapped))
            print(json.dumps(rows[-1]), flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "performance": path, "bpm": bpm, "bars": args.bars,
              "tap_after_s": TAP_AFTER, "runs": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
