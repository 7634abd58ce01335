"""How far ahead of the clock a hit must reach the mixer to play on its sample, on the JACK server
running (JACK_DEFAULT_SERVER): the real audio process (``--way ring``: rtmixer's ring writer,
``audio.ring_out``; ``--way jack``: the ring the engine's own JACK client plays, ``audio.jack_ring``), a hit
every 50 ms handed to it ``--ahead-ms`` before its time on the process's own clock, for
``--seconds``; the hits that came for frames already in the ring are counted late (they play at
the first frame not yet written). The engine hands its hits out 30 ms or more ahead
(``Engine.margin``). ``playback_latency_ms``: the output latency the sink hands the engine's hits
over early by (JACK's figure since 2026-12-05; the JSON's older ``output_latency_ms`` is
PortAudio's, one period); the hits here are pushed to the mixer directly, not moved by it.

    jackd -n p1024 -d dummy -r 48000 -p 1024 &
    JACK_DEFAULT_SERVER=p1024 python benchmarks/hits_ahead.py --ahead-ms 30,26,20 --json OUT

The clock's frame is a period's first at the period's start since 2026-12-05 (it was the frame
after the period): a hit must come a period sooner than before for the same sample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_turn(ahead_s: float, seconds: float, blocksize: int, way: str = "ring") -> dict:
    from drummachine.audio.process import AudioProcessSink
    from drummachine.midi.jack_audio import JackAudioPorts

    sink = AudioProcessSink(None, 48000, hostapi="JACK", blocksize=blocksize,
                            jack_ports=JackAudioPorts if way == "jack" else None).wait_ready()
    try:
        time.sleep(0.5)
        pushed = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sink.events.push(round((sink.clock.now() + ahead_s) * sink.rate), 0, 0.8)
            pushed += 1
            time.sleep(0.05)
        time.sleep(0.3)
        return {"way": sink.mixing, "ahead_ms": round(ahead_s * 1000, 1), "needs_ms": round(sink.ahead_s * 1000, 1),
                "hits": pushed, "late": sink.late_events,
                "blocks_not_ready": sink.not_ready, "playback_latency_ms": round(sink.output_latency_s * 1000, 2)}
    finally:
        sink.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ahead-ms", default="30,26,20,12,8")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--blocksize", type=int, default=128)
    p.add_argument("--way", default="ring", help="ring, jack or both (comma-separated)")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    rows = []
    for way in args.way.split(","):
        for ms in (float(x) for x in args.ahead_ms.split(",")):
            rows.append(one_turn(ms / 1000, args.seconds, args.blocksize, way))
            print(json.dumps(rows[-1]), flush=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "server": os.environ.get("JACK_DEFAULT_SERVER", "default"),
           "blocksize": args.blocksize, "turns": rows}
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
