"""How soon a fill the foot asks for is heard, with the real model: steps from the step open at the
cue to the first note that belongs to the fill (a tom, or a snare where the bar before had none at
that step). JSON out.

    python benchmarks/fill_onset.py [--json OUT]

Offline, on a manual clock, through the engine, conductor and performer play uses; every cue is
handled at the moment its open step is due (the worst case: live, a cue that comes earlier in
the step also changes that step). Five styles, 80 bars each, a cue every 3-4 bars at a random step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drummachine.core.attributes import FILL_VOICES  # noqa: E402
from drummachine.core.engine import Engine  # noqa: E402
from drummachine.core.events import MemorySink  # noqa: E402
from drummachine.core.song import jam  # noqa: E402
from drummachine.core.steps import sounds_fill  # noqa: E402
from drummachine.core.transport import STEPS_PER_BAR, ManualClock  # noqa: E402
from drummachine.live.offline import shipped_performer  # noqa: E402
from drummachine.model.generator import Generator  # noqa: E402

STYLES = (("rock", 120), ("funk", 100), ("latin", 120), ("jazz", 130), ("hiphop", 90))


def onsets(performer: bool, bars: int = 80, seed: int = 7) -> list[int]:
    out = []
    for style, bpm in STYLES:
        engine = Engine(Generator(None, seed=seed), jam(style, bpm, 0.6), ManualClock(0.0), [MemorySink()],
                        performer=shipped_performer(seed) if performer else None)
        clock = engine.clock
        engine.command("start")
        engine.pump()
        rng = np.random.default_rng(1)
        next_cue, cues, played = 2 * STEPS_PER_BAR + int(rng.integers(0, 16)), [], {}
        while engine.commit_cursor < bars * STEPS_PER_BAR:
            engine.pump_generator()
            engine.pump()
            for c in range(max(0, engine.commit_cursor - 8), engine.commit_cursor):
                if c in engine.played:
                    played[c] = engine.played[c]
            if engine.commit_cursor >= next_cue:
                engine.command("fill")
                cues.append(engine.commit_cursor)
                next_cue = engine.commit_cursor + 3 * STEPS_PER_BAR + int(rng.integers(0, 16))
            clock.set(max(clock.now(), engine.next_deadline()))
        for c0 in cues:
            first = next((s - c0 for s in range(c0, c0 + 2 * STEPS_PER_BAR)
                          if s in played and sounds_fill(played[s], played.get(s - STEPS_PER_BAR))), 2 * STEPS_PER_BAR)
            out.append(first)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    result = {"fill_voices": [int(v) for v in FILL_VOICES], "styles": [s for s, _ in STYLES]}
    for name, on in (("performer", True), ("sections_held", False)):
        steps = np.array(onsets(on))
        result[name] = {"cues": int(len(steps)), "p50_steps": float(np.percentile(steps, 50)),
                        "p90_steps": float(np.percentile(steps, 90)),
                        "within_2_steps": round(float(np.mean(steps <= 2)), 3),
                        "histogram_0_to_8plus": np.bincount(np.minimum(steps, 8)).tolist()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
