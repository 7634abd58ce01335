"""How deep the machine's own kit is taken out, by the level it leaves the mixer at (issue 13).

SpeexDSP's canceller takes out as much as its reference (the kit as it leaves) is loud, whatever
the echo's level in the input. The kit alone through a stage's path (``follow_material.room_path``)
into the input, its peaks at each of ``--echo-peaks`` dBFS; the reference's at each of
``--reference-peaks``; the canceller as shipped (the kit's gain into it set from its own peaks,
``listen.own_sound.REF_*``) and with the reference handed as it leaves (the gain held at 1, as
before that): dB taken out over the clip's second half. JSON on stdout or ``--out``.

    python benchmarks/own_kit_levels.py --out benchmarks/own_kit_levels.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import follow_material as material  # noqa: E402

from drummachine.listen.own_sound import OwnSoundCanceller  # noqa: E402


def removed_db(echo: np.ndarray, reference: np.ndarray, held: bool, block: int = 160) -> float:
    canceller = OwnSoundCanceller(16000)
    if held:  # the reference as it leaves the mixer
        canceller._reference_gain = lambda peak: 1.0
    left = np.concatenate([canceller.process(echo[i:i + block], reference[i:i + block]) for i in range(0, echo.size, block)])
    half = left.size // 2
    return round(float(10 * np.log10(np.sum(echo[half:left.size] ** 2) / np.sum(left[half:] ** 2))), 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-peaks", default="0,-12,-24,-36")
    ap.add_argument("--echo-peaks", default="-42,-30,-18,-6,0")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    path, bpm = material.validation_performances(1)[0]
    clip = material.make_clip(path, bpm, "steady", "band", bars=16)
    kit = material.own_kit(path, bpm, clip.seconds)
    kit = (kit / np.abs(kit).max()).astype(np.float32)
    echo = np.convolve(kit, material.room_path(16000))[:kit.size].astype(np.float32)
    echo /= np.abs(echo).max()
    rows = []
    for ref_db in (float(x) for x in args.reference_peaks.split(",")):
        for echo_db in (float(x) for x in args.echo_peaks.split(",")):
            e, r = echo * np.float32(10 ** (echo_db / 20)), kit * np.float32(10 ** (ref_db / 20))
            rows.append({"reference_peak_dbfs": ref_db, "echo_peak_dbfs": echo_db,
                         "removed_db_as_shipped": removed_db(e, r, held=False),
                         "removed_db_reference_as_it_leaves": removed_db(e, r, held=True)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "performance": path, "bpm": bpm,
              "seconds": round(clip.seconds, 1), "rows": rows}
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
