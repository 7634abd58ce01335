"""Stage UI benchmarks (JSON out): the UI redrawing as fast as it can with keys held down, while
the engine plays the real model through the built-in kit on a JACK server (128 frames).

    python benchmarks/stage.py [--seconds 60] [--json OUT]

ui_fps / ui_cpu        redraws per second and the UI process's CPU use (one core = 100%)
underruns              audio underruns in the engine process meanwhile (target 0)
key_to_engine          a key's command sent by the UI -> received in the engine process
controller_to_engine   a CC sent on a JACK MIDI port -> seen by the engine process
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from live import Jack, stats_ms  # noqa: E402


async def run(seconds: float) -> dict:
    import rtmidi

    from drummachine.live.host import ProcessClient
    from drummachine.live.session import Options
    from drummachine.ui.app import StageApp

    tx = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "stage-pedal")
    tx.open_virtual_port("tx")
    client = ProcessClient(Options(song="highway_rock", midi_in="stage-pedal:tx", midi_virtual=True))
    client.command("start")
    app = StageApp(client, fps=240.0)
    ctrl = []
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(1.0)
        base = client.latest().underruns
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        drawn = 0
        keys = ["up", "down", "right", "left"]
        k = 0
        last_ping = 0.0
        last_cc = 0.0
        while time.monotonic() - t0 < seconds:
            await pilot.press(keys[k % 4])  # keys held down: a press every loop
            k += 1
            now = time.monotonic()
            if now - last_ping > 0.1:
                client.command("ping", now)
                last_ping = now
            if now - last_cc > 0.5:
                tx.send_message([0xB0, 7, k % 128])  # a CC nobody maps: only its arrival counts
                ctrl.append(now)
                last_cc = now
                await pilot.pause(0.05)
                s = client.latest()
                if s.last_midi_at >= now:
                    ctrl[-1] = s.last_midi_at - now
                else:
                    ctrl.pop()
            drawn = len(app.frames)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - t0
        s = client.latest()
        await pilot.press("q")
    client.close()
    tx.close_port()
    pongs = list(s.pongs)
    cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall
    return {"seconds": round(wall, 1), "keys_pressed": k, "ui_fps_last_second": drawn,
            "ui_cpu_percent_of_one_core": round(100 * cpu, 1),
            "underruns": s.underruns - base, "generator_misses": s.misses,
            "key_to_engine": stats_ms([b - a for a, b in pongs]),
            "controller_to_engine": stats_ms(ctrl) if ctrl else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    with Jack(128):
        result = asyncio.run(run(args.seconds))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
