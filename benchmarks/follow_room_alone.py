"""A room's noise alone, heard by the tracker: is it taken for a band? (issue 13)

For each of the validation performances ``follow.py`` uses, 30 s of a room's noise
(``follow_material.room_noise``, 20 dB under that clip's playing level, as the clips put it under
the band), 3 seeds each, no gate; a reading every 50 ms, as the listening process sends them. How
often the tracker is sure (at least the follower's ``lock_confidence``), and in how many rooms it
was sure ``lock_readings`` times in a row (what locks the follower from cold), with the beat test
(``tracker.PERIODICITY_SURE``) off and on.

    python benchmarks/follow_room_alone.py --json benchmarks/follow_room_alone.json
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

import follow_material as material  # noqa: E402
from drummachine.core.follow import FollowConfig  # noqa: E402
from drummachine.listen import tracker as tracking  # noqa: E402

RATE = 16000
SECONDS = 30.0


def rooms(performances: int, seeds: int, lock: FollowConfig) -> dict:
    levels = []
    for path, bpm in material.validation_performances(performances):
        clip = material.make_clip(path, bpm, "steady", "band", RATE)
        levels.append((bpm, float(np.sqrt(np.mean(clip.audio[np.abs(clip.audio) > 1e-3] ** 2))) * 0.1))
    shares, first_lock, locked = [], [], 0
    for i, (bpm, level) in enumerate(levels):
        for seed in range(seeds):
            room = material.room_noise(int(SECONDS * RATE), np.random.default_rng(100 * i + seed), level)
            t = tracking.BeatTracker(RATE, bpm, window=0.10)
            sure, run, when = [], 0, None
            step = RATE // 20
            for k in range(0, room.size, step):
                t.process(room[k:k + step].astype(np.float32))
                ok = t.estimate().confidence >= lock.lock_confidence
                sure.append(ok)
                run = run + 1 if ok else 0
                if run == lock.lock_readings and when is None:
                    when = round(t.now, 2)
            shares.append(float(np.mean(sure)))
            locked += when is not None
            first_lock.append(when)
    return {"rooms": len(shares), "sure_share_mean": round(float(np.mean(shares)), 4),
            "sure_share_max": round(max(shares), 4), "rooms_with_a_lock": locked,
            "first_lock_s_median": float(np.median([w for w in first_lock if w is not None])) if locked else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--performances", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    lock = FollowConfig()
    shipped = tracking.PERIODICITY_SURE
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": SECONDS,
              "lock_confidence": lock.lock_confidence, "lock_readings": lock.lock_readings}
    for name, sure in (("beat_test_off", 0.0), ("beat_test_on", shipped)):
        tracking.PERIODICITY_SURE = sure
        result[name] = rooms(args.performances, args.seeds, lock)
        print(name, result[name], flush=True)
    tracking.PERIODICITY_SURE = shipped
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
