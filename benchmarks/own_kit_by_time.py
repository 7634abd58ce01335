"""How fast and how deep the listening process takes the machine's own kit out of what it hears:
the kit read from the mixer by time (``listen.kit_tap``) against the kit's JACK ports beside the
input, sample for sample, and nothing, side by side in turns on a running JACK server.

Each turn: the mixer process plays the built-in kit through PortAudio's JACK client (the stand-in
generator's rock groove at 110 bpm, from the engine driven directly: not ``play``, whose whole path
``follow.py --instrument-bleed --kit-through portaudio`` measures), the kit's ports go straight into the
listening input (a mic hearing nothing but the wedges), and the listening process is given the
mixer's shared block (``time``), the kit's ports (``ports``) or neither (``none``). Each second it
reads how much quieter the cleaned input is than the input where the kit plays (the canceller's
``removed_db``: a smoothed figure, so it lags; it starts again at 0 where the kit's echo is found
and the canceller learns afresh, 0.5-1 s in by time), and the listening process's CPU share from the
third second on. JSON on stdout (or ``--out``).

    jackd -n fw -d dummy -r 48000 -p 128 &
    JACK_DEFAULT_SERVER=fw python benchmarks/own_kit_by_time.py --rounds 3 --out benchmarks/own_kit_by_time.json

``--busy N``: N processes spinning beside each turn (the suite's CPU-bound tests beside its waiting
ones, on 2 cores); ``--jackd-log PATH``: the server's log (``jackd ... > PATH 2>&1``), each turn's
late wake-ups of its dummy driver counted from it (each one steps JACK's clock against the
monotonic clock, the clock the kit is read by).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import follow_material as material  # noqa: E402

TURNS = ("time", "ports", "none")


def one_turn(how: str, seconds: float, busy: int = 0, jackd_log: str | None = None) -> dict:
    import jack

    from drummachine.audio.process import AudioProcessSink
    from drummachine.core.engine import Engine
    from drummachine.core.fake_generator import FakeGenerator
    from drummachine.core.song import jam
    from drummachine.listen.listener import Listener

    sink = AudioProcessSink(None, 48000, blocksize=128).wait_ready()
    look = jack.Client("own-kit-look", no_start_server=True)
    band = material.BandPlayer(np.zeros(int(48000 * (seconds + 2)), np.float32), "band-silent")
    engine = Engine(FakeGenerator(), jam("rock", 110), sink.clock, [sink], start_delay=0.3)
    stop = threading.Event()
    threads = engine.run_threads(stop)
    removed, cpu_share, said = [], None, ""
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    log_from = Path(jackd_log).stat().st_size if jackd_log else 0
    try:
        kit_ports = [p.name for p in look.get_ports("PortAudio", is_audio=True, is_output=True)]
        listener = Listener(band.port_name, 110.0, sink.clock, client="listen-own-kit",
                            kit_ports=tuple(kit_ports) if how == "ports" else (),
                            kit_tap=sink.kit_tap if how == "time" else "").wait_ready()
        said = listener.own_kit
        for port in {p.name for p in look.get_all_connections(band.port_name)}:
            for kit in kit_ports:
                look.connect(kit, port)
        engine.command("start")
        band.start()
        began = time.monotonic()
        cpu_from = None
        for second in range(1, int(seconds) + 1):
            time.sleep(max(0.0, began + second - time.monotonic()))
            removed.append(round(listener.own_kit_removed_db(), 1))
            if second == 2:
                cpu_from = (listener.cpu_seconds(), time.monotonic())
        if cpu_from is not None:
            cpu_share = round((listener.cpu_seconds() - cpu_from[0]) / (time.monotonic() - cpu_from[1]), 4)
        listener.close()
    finally:
        for proc in spinning:
            proc.kill()
            proc.wait()
        engine.command("stop")
        stop.set()
        for t in threads:
            t.join(2)
        band.close()
        look.close()
        sink.close()
    late = Path(jackd_log).read_bytes()[log_from:].count(b"JackTimedDriver::Process XRun") if jackd_log else None
    return {"turn": how, "own_kit": said, "removed_db_each_second": removed, "listener_cpu_share": cpu_share,
            "underruns": sink.underruns, "busy": busy, "driver_late_wakeups": late}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--turns", default=",".join(TURNS))
    ap.add_argument("--busy", type=int, default=0, help="processes spinning beside each turn")
    ap.add_argument("--jackd-log", help="the JACK server's log: its driver's late wake-ups counted a turn")
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    for _ in range(args.rounds):
        for how in args.turns.split(","):
            row = one_turn(how, args.seconds, args.busy, args.jackd_log)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    summary = {}
    for how in args.turns.split(","):
        mine = [r for r in rows if r["turn"] == how]
        at = lambda s: [r["removed_db_each_second"][s - 1] for r in mine if len(r["removed_db_each_second"]) >= s]  # noqa: E731
        summary[how] = {f"removed_db_at_{s}s": at(s) for s in (1, 2, 4, int(args.seconds))}
        summary[how]["listener_cpu_share"] = [r["listener_cpu_share"] for r in mine]
        summary[how]["underruns"] = [r["underruns"] for r in mine]
        summary[how]["driver_late_wakeups"] = [r["driver_late_wakeups"] for r in mine]
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": args.seconds, "rounds": args.rounds,
              "busy": args.busy,
              "summary": summary, "runs": rows}
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
