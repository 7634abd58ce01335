"""Round-trip every MIDI file of a Groove MIDI Dataset folder: MIDI -> groove -> MIDI -> groove.

Prints a JSON summary: files, notes, worst onset error (ms), worst velocity error, merged notes,
and any file that fails the bound (onsets within 1 ms, velocities within 1).
Usage: python scripts/check_roundtrip.py [DIR]
"""

import json
import sys
from pathlib import Path

from drummachine.core.errors import DrumMachineError
from drummachine.corpus.fidelity import round_trip


def main(folder: str) -> int:
    paths = sorted(Path(folder).rglob("*.mid"))
    results, errors = [], []
    for p in paths:
        try:
            results.append(round_trip(p))
        except DrumMachineError as exc:
            errors.append(str(exc))
    failed = [r.path for r in results if not (r.ok and r.max_onset_ms <= 1.0 and r.max_velocity <= 1)]
    summary = {
        "folder": str(folder),
        "files": len(paths),
        "checked": len(results),
        "unreadable": errors,
        "notes": sum(r.notes for r in results),
        "matched": sum(r.matched for r in results),
        "merged_same_step_same_voice": sum(r.merged for r in results),
        "max_onset_error_ms": max((r.max_onset_ms for r in results), default=0.0),
        "max_velocity_error": max((r.max_velocity for r in results), default=0),
        "failed": failed,
    }
    print(json.dumps(summary, indent=2))
    return 0 if not failed and not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/groove"))
