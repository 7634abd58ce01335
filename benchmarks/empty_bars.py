"""Bars the engine hands out with no hit at all, knobs at their extremes (issue 15's silent bars).

Every style the shipped model knows, played through the engine as ``generate`` plays it
(``live.offline.play_offline``: the conductor, the performer, the sampling) for a few bars, then
its outro (an ending fill, the final hit); per knob setting, how many bars of each kind had no
hit. A groove bar or an ending fill without a hit is a bar of silence on stage.

    python benchmarks/empty_bars.py --seeds 2 --json benchmarks/empty_bars.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (temperature, density, intensity): the defaults at intensity 0, then the knobs at their ends
SETTINGS = ((1.0, 0.0, 0.0), (0.0, 0.0, 0.0), (1.0, -1.0, 0.0), (0.0, -1.0, 0.0), (0.0, -1.0, 0.5))
OPEN_BARS = 3  #: bars of groove before the outro


def run(seeds: int) -> dict:
    from drummachine.core.voices import HITS
    from drummachine.live.offline import choose_song, play_offline, shipped_performer, starting_commands
    from drummachine.live.presets import load_styles
    from drummachine.model.generator import Generator

    gen = Generator(None, seed=0)
    styles = load_styles(None)
    out = []
    for temperature, density, intensity in SETTINGS:
        bars, empty = Counter(), Counter()
        for style in gen.styles:
            for seed in range(seeds):
                gen.rng = np.random.default_rng(seed)
                song = choose_song(gen, styles, None, style, None, intensity)
                setup = starting_commands(styles, song, None) + [
                    ("temperature", temperature), ("density", density), ("intensity", intensity)]
                take = play_offline(gen, song, setup, bars=None, open_bars=OPEN_BARS,
                                    performer=shipped_performer(seed, []))
                hits = (take.hvo[:, HITS] > 0.5).reshape(-1, 16, take.hvo.shape[-1]).sum(axis=(1, 2))
                for plan, n in zip(take.plans, hits):
                    bars[plan.kind] += 1
                    empty[plan.kind] += int(n == 0)
        out.append({"temperature": temperature, "density": density, "intensity": intensity,
                    "bars": dict(bars), "empty": {k: empty[k] for k in bars}})
        print(f"temperature {temperature} density {density} intensity {intensity}: "
              + ", ".join(f"{k} {empty[k]}/{bars[k]} empty" for k in bars), flush=True)
    return {"styles": len(gen.styles), "seeds": seeds, "open_bars": OPEN_BARS, "settings": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), **run(args.seeds)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
