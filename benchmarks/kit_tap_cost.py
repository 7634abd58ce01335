"""What reading the kit by time costs the listening process: ``KitTapReader.beside`` over a simulated
mixer at 48 kHz and an input at 44.1 kHz on a clock 0.02% fast, polled every 10 ms as the listening
process polls (the simulation of ``tests/test_listen_kit_tap.py``), CPU seconds per 20 s of input.
With ``--before TREE`` the module of another checkout runs in turns with this one on the same
simulation, and their outputs are compared sample for sample.

    python benchmarks/kit_tap_cost.py --before WORKTREE --before-label COMMIT --turns 3 --out benchmarks/kit_tap_cost.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drummachine.audio.wire import OUT_LATENCY_NS, KitTap, SharedBlock  # noqa: E402
from drummachine.listen.capture import Timing  # noqa: E402
from tests.test_listen_kit_tap import IN_RATE, OUT_LATENCY, OUT_RATE, kit_signal, late, publish  # noqa: E402


def run(module, seconds: float = 20.0) -> tuple[float, np.ndarray]:
    """CPU seconds spent in ``beside`` over ``seconds`` of input, and the kit it read."""
    owner = SharedBlock()
    rng = np.random.default_rng(1)
    spent, got = 0.0, []
    try:
        tap = KitTap(owner, OUT_RATE, mains=2)
        owner.header[OUT_LATENCY_NS] = round(OUT_LATENCY * 1e9)
        kit = kit_signal(int(seconds * OUT_RATE) + OUT_RATE)
        reader = module.KitTapReader(owner.name, untrack=False)
        out_zero, in_speed = 100.0, 1.0002
        in_zero = out_zero + 0.3
        mixed, read, in_rows = 0, 0, []
        for turn in range(int(seconds / 0.01)):
            now = out_zero + 0.3 + 0.01 * turn
            playing = int((now - out_zero) * OUT_RATE) // 128 * 128
            while mixed < playing + 4 * 128:
                tap.write(np.stack([kit[mixed:mixed + 128]] * 2, axis=1) * 0.5, mixed)
                mixed += 128
            publish(owner.header, playing, out_zero + playing / OUT_RATE + late(rng))
            reader.note_clock(now)
            heard_until = int((now - in_zero) * IN_RATE * in_speed)
            if heard_until <= read:
                continue
            in_rows.append((now + late(rng), heard_until, heard_until))
            timing = Timing(np.array(in_rows[-1000:]), IN_RATE)
            t0 = time.process_time()
            beside = reader.beside(read, heard_until - read, timing, 0.0, now)
            spent += time.process_time() - t0
            read += beside.size
            got.append(beside)
        reader.close()
    finally:
        owner.close()
    return spent, np.concatenate(got)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=None, metavar="TREE", help="another checkout's kit_tap, run in turns")
    ap.add_argument("--before-label", default="before", help="what --before is (a commit)")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import drummachine.listen.kit_tap as this

    modules = {"this": this}
    if args.before:
        spec = importlib.util.spec_from_file_location("kit_tap_before",
                                                      Path(args.before) / "drummachine/listen/kit_tap.py")
        modules["before"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules["before"])
    spent = {name: [] for name in modules}
    identical = []
    for _ in range(args.turns):
        read = {}
        for name, module in modules.items():
            s, read[name] = run(module)
            spent[name].append(round(s, 4))
        if "before" in read:
            identical.append(bool(np.array_equal(read["this"], read["before"])))
    result = {"what": "KitTapReader.beside, CPU seconds per 20 s of input (44.1 kHz, polled every 10 ms)",
              "cpu_seconds": spent, "share_of_a_core": {k: round(float(np.median(v)) / 20.0, 5) for k, v in spent.items()}}
    if "before" in spent:
        result["ratio_this_over_before"] = round(sum(spent["this"]) / sum(spent["before"]), 3)
        result["outputs_identical"] = identical
        result["before_is"] = args.before_label
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
