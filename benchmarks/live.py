"""Live-engine benchmarks against a real JACK server (dummy backend). JSON out.

    python benchmarks/live.py [--only NAME[,NAME]] [--underrun-minutes 10] [--json OUT]

audio_onsets   audio onsets through a JACK loopback at 128 frames vs the schedule
midi_out       MIDI note timing through JACK at 64 and 128 frames, >= 5,000 notes, other core loaded
underruns      audio at 128 frames for N minutes with the real model generating and cues every few s
               (underruns_in_process: the same with the mixing in the engine's process, the first
               design; underruns_idle: the mixer alone, nothing generating — the machine's own share)
cue_latency    foot-switch CC (JACK MIDI) -> the first note that changed
drift          one simulated hour at 120 bpm on a manual clock: playhead vs bar count
headless       `drummachine play --headless`: start-up to first beat, steady memory
Each measurement starts its own jackd and stops it (kill by PID).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DRUMMACHINE_MIDI_API", "jack")

from drummachine.core.engine import Engine  # noqa: E402
from drummachine.core.events import Sink  # noqa: E402
from drummachine.core.fake_generator import FakeGenerator, FakeKicks  # noqa: E402
from drummachine.core.song import jam  # noqa: E402


class Jack:
    """A JACK server (dummy backend) for one measurement. ``portaudio``: this process opens audio
    itself (the in-process design), so PortAudio must find the new server; otherwise PortAudio is
    left alone here — initialising it joins the server's graph as a client, one more the server
    waits for every period."""

    def __init__(self, period: int, portaudio: bool = False):
        self.period = period
        self.portaudio = portaudio

    def __enter__(self):
        # a server of its own name: the machine is shared (tests and other jobs run their own servers);
        # the clients of this process (rtmidi, PortAudio, the engine's children) find it by the variable
        os.environ["JACK_DEFAULT_SERVER"] = f"bench-live-{os.getpid()}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bench-jackd-", suffix=".log")
        self.proc = subprocess.Popen(["jackd", "-d", "dummy", "-r", "48000", "-p", str(self.period)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, check=True)
        time.sleep(0.3)
        if self.portaudio:
            import sounddevice as sd

            sd._terminate()  # PortAudio scans again and finds this server (each measurement starts its own)
            sd._initialize()
        return self

    def __exit__(self, *exc):
        if self.portaudio:
            import sounddevice as sd

            sd._terminate()  # let go of the server before it stops
        self.proc.terminate()
        self.proc.wait(10)
        if self.portaudio:
            sd._initialize()  # balanced again (no server now, so no client)

    def xruns(self) -> dict:
        """What the server itself logged about xruns (its own late wake-ups and late clients)."""
        self.log.seek(0)
        lines = [line.strip() for line in self.log if "xrun" in line.lower() or "not finished" in line.lower()]
        return {"lines": len(lines), "client_not_finished": sum("not finished" in line for line in lines),
                "examples": sorted(set(lines))[:4]}


class Load:
    """Keep one core busy (a spinning process pinned to it)."""

    def __enter__(self):
        self.proc = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def stats_ms(x) -> dict:
    x = np.abs(np.asarray(x)) * 1000.0
    return {"n": int(len(x)), "p50_ms": round(float(np.percentile(x, 50)), 3),
            "p99_ms": round(float(np.percentile(x, 99)), 3), "max_ms": round(float(x.max()), 3)}


class Dense(FakeGenerator):
    """Every voice on every 16th: many notes a second for the MIDI timing measurement."""

    def _pattern(self, step_in_bar, cont):
        hvo = np.zeros((3, 9), np.float32)
        hvo[0, :] = 1.0
        hvo[1, :] = 0.7
        hvo[2, :] = self.rng.uniform(-0.2, 0.2, 9)
        return hvo


def run_engine(engine, seconds, cues=None):
    stop = threading.Event()
    threads = engine.run_threads(stop)
    engine.command("start")
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        time.sleep(0.05)
        if cues:
            cues()
    engine.command("stop")
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(2)


def audio_onsets(seconds: float = 20.0) -> dict:
    from drummachine.audio.process import AudioProcessSink

    with Jack(128):
        sink = AudioProcessSink(None, 48000, blocksize=128, record_seconds=seconds + 2).wait_ready()
        subprocess.run(["jack_disconnect", "system:capture_1", "PortAudio:in_0"], capture_output=True)
        subprocess.run(["jack_connect", "PortAudio:out_0", "PortAudio:in_0"], check=True)
        sent = []
        orig = sink.send
        sink.send = lambda ev: (sent.extend(e for e in ev if e.kind == "note"), orig(ev))
        engine = Engine(FakeKicks(), jam("rock", 100), sink.clock, [sink], start_delay=0.3)
        run_engine(engine, seconds)
        sink.close()
    rec = sink.recording[:, 0]
    frames = np.array([round(e.time * 48000) for e in sent if e.time < seconds])
    found = []
    for f in frames:
        win = rec[f - 240:f + 960]
        loud = np.nonzero(np.abs(win) > 1e-4)[0]
        found.append(f - 240 + loud[0] if loud.size else np.nan)
    err = np.array(found, float) - frames
    err = err[np.isfinite(err)]
    latency = float(np.median(err))
    # each hit went to the mixer the output latency before its time (audio.process): the loopback's
    # own delay is the onsets' less that
    return {"period": 128, "onsets": int(len(frames)), "found": int(len(err)),
            "loopback_latency_frames": latency + sink.early_frames, "handed_over_early_frames": sink.early_frames,
            "error_vs_schedule": stats_ms((err - latency) / 48000.0),
            "underruns": sink.underruns}


def midi_out(period: int, notes: int = 5000) -> dict:
    from jack_midi_probe import Recorder

    from drummachine.midi.ports import MidiOutSink
    from drummachine.core.transport import MonotonicClock

    with Jack(period), Load():
        got: list = []  # (time.monotonic() of the event's frame, bytes)
        rx = Recorder("bench-rx", sink=got)
        clock = MonotonicClock()
        sent = []
        sink = MidiOutSink("jack", "bench-rx:rx", clock, on_sent=lambda t, m: sent.append((t, m)))
        engine = Engine(Dense(), jam("rock", 200), clock, [sink])
        seconds = notes / (9 * 200 * 4 / 60) + 1.0
        run_engine(engine, seconds)
        sink.close()
        time.sleep(0.2)
        rx.close()
    ons = [(t, tuple(m)) for t, m in got if m[0] & 0xF0 == 0x90]
    sched = [(t, tuple(m)) for t, m in sent if m[0] & 0xF0 == 0x90]
    # pair in order per message kind: the k-th arrival of a message with its k-th send
    by_msg: dict = {}
    for t, m in sched:
        by_msg.setdefault(m, []).append(t)
    seen: dict = {}
    delays = []
    for t, m in ons:
        k = seen.get(m, 0)
        seen[m] = k + 1
        if k < len(by_msg.get(m, [])):
            delays.append(t - by_msg[m][k])
    period_ms = period / 48.0
    s = stats_ms(delays)
    return {"period": period, "period_ms": round(period_ms, 3), "sent": len(sched), "received": len(ons),
            "lost": len(sched) - len(ons), "error_vs_schedule": s,
            "p99_within_period_plus_0_5ms": s["p99_ms"] <= period_ms + 0.5, "other_core": "busy loop"}


def underruns(minutes: float, design: str = "process") -> dict:
    """Audio at 128 frames for ``minutes`` with the real model generating and a cue every 3 s.

    design: "process" — the mixer in its own process, as `drummachine play` runs it;
    "in_process" — the mixing callback in the engine's process (the first design, for comparison);
    "idle" — the mixer process alone, nothing generating: what this machine and JACK do by themselves.
    """
    from drummachine.audio.process import AudioProcessSink
    from drummachine.model.generator import Generator
    from drummachine.live import tuning
    from drummachine.core.song import load_song

    with Jack(128, portaudio=design == "in_process") as jack:
        sys.setswitchinterval(0.0005)
        if design == "in_process":
            sink = InProcessAudio(48000, 128)
        else:
            sink = AudioProcessSink(None, 48000, blocksize=128).wait_ready()
        t0 = time.monotonic()
        if design == "idle":
            time.sleep(minutes * 60.0)
            sink.close()
            return {"design": design, "period": 128, "minutes": minutes, "underruns": sink.underruns,
                    "callbacks": sink.callbacks, "wall_s": round(time.monotonic() - t0, 1),
                    **_mixer_timing(sink), "jackd_log": jack.xruns()}
        gen = Generator(None, seed=1)
        song = load_song(ROOT / "presets/songs/highway_rock.toml", gen.cond.styles)
        engine = Engine(gen, song, sink.clock, [sink])
        tuning.settle()  # as `drummachine play` sets itself up
        cues = ["fill", ("intensity_up", 0.1), "next", ("intensity_down", 0.1), "accent", "fill", "next_phrase",
                "cymbal"]
        state = {"k": 0, "next": time.monotonic() + 3.0}

        def cue():
            if time.monotonic() >= state["next"]:
                c = cues[state["k"] % len(cues)]
                engine.command(*(c if isinstance(c, tuple) else (c,)))
                state["k"] += 1
                state["next"] += 3.0
                if not engine.playing:
                    engine.command("start")

        run_engine(engine, minutes * 60.0, cue)
        sink.close()
    return {"design": design, "period": 128, "minutes": minutes, "underruns": sink.underruns,
            "callbacks": sink.callbacks, "cues": state["k"], "generator_misses": engine.stats.misses,
            "steps": engine.stats.steps, "wall_s": round(time.monotonic() - t0, 1),
            **_mixer_timing(sink), "jackd_log": jack.xruns()}


class InProcessAudio(Sink):
    """The first design, for comparison: the same mixer, ring and clock as the audio process, but
    the stream's callback runs here, sharing the interpreter lock with the engine's threads."""

    def __init__(self, rate: int, blocksize: int):
        from drummachine.audio.mixing import Voices
        from drummachine.audio.mixer import Mixer, open_stream
        from drummachine.audio.wire import EventRing, SharedAudioClock, SharedBlock
        from drummachine.audio.kit import synth_kit

        self.rate = rate
        self.block = SharedBlock()
        self.events = EventRing(self.block)
        self.clock = SharedAudioClock(self.block.header, rate)
        self.stream = open_stream(Mixer(self.block, Voices(synth_kit(rate), block_max=8192)), rate,
                                  blocksize=blocksize)
        self.stream.start()

    def send(self, events) -> None:
        for e in events:
            if e.kind == "note":
                self.events.push(round(e.time * self.rate), e.voice, e.velocity)

    def close(self) -> None:
        from drummachine.audio.wire import CALLBACKS, UNDERRUNS

        self.stream.stop()
        self.stream.close()
        self.underruns, self.callbacks = int(self.block.header[UNDERRUNS]), int(self.block.header[CALLBACKS])
        self.clock.header = self.block.header.copy()
        self.block.close()


def _mixer_timing(sink) -> dict:
    """The mixer process's own worst callback (its work) and worst gap between callbacks (how late
    the system woke it); a period is 2.67 ms. The in-process sink does not measure these."""
    if isinstance(sink, InProcessAudio):
        return {}
    return {"worst_callback_ms": round(sink.worst_callback_ms, 3), "worst_gap_ms": round(sink.worst_gap_ms, 3)}


def cue_latency(trials: int = 12) -> dict:
    """Foot-switch CC over JACK MIDI -> the first note that changed. Two cues: accent (CC 110: a
    crash on the first step not yet handed out: the engine's own latency) and fill (CC 112: the
    fill starts there too, but the stand-in beat's toms only from step 8, so musically later)."""
    import rtmidi

    from drummachine.live.session import Options, Session

    out = {}
    with Jack(128):
        tx = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "bench-pedal")
        tx.open_virtual_port("tx")
        notes = []
        opts = Options(audio=False, midi_virtual=True, midi_in="bench-pedal:tx", fake_model=True, style="rock",
                       bpm=120)
        with Session(opts) as session:
            orig = session.midi.send
            session.midi.send = lambda ev: (notes.extend(e for e in ev if e.kind == "note"), orig(ev))
            session.start_threads()
            session.command("start")
            time.sleep(1.0)
            rng = np.random.default_rng(0)
            for name, cc, voices in (("accent", 110, (7,)), ("fill", 112, (4, 5, 6))):
                ms, steps = [], []
                for _ in range(trials):
                    time.sleep(1.5 + rng.uniform(0, 2.0))
                    t_cue = time.monotonic()
                    step_at_cue = session.engine.transport.step_at(t_cue)
                    tx.send_message([0xB0, cc, 127])
                    time.sleep(2.5)
                    hit = [e for e in notes if e.voice in voices and e.time > t_cue]
                    if hit:
                        ms.append(hit[0].time - t_cue)
                        steps.append(hit[0].step - step_at_cue)
                out[name] = {"to_first_changed_note": stats_ms(ms), "steps_p50": round(float(np.median(steps)), 2)}
        tx.close_port()
    out["tempo"] = "120 bpm (a 16th = 125 ms)"
    out["note"] = ("a cue changes the first step not yet handed to the outputs, which is committed half a step "
                   "+ 30 ms before it sounds")
    return out


def fill_onset_live(trials: int = 24, bpm: float = 120.0, period: int = 128, audio: bool = False) -> dict:
    """The shipped model, live over JACK MIDI: the fill pedal (CC 112) at a random moment -> the
    first note that belongs to the fill and not to the groove (``sounds_fill``: a tom, or a snare
    where the bar before had none), in steps from the step open at the cue and in ms. ``audio``:
    the kit plays too (the engine then hands steps out its output latency sooner: later cues at a
    long ``period``); the ms are until the note's time on the engine's clock (the kit is handed it
    its output latency early to sound then; not recorded at an output)."""
    import rtmidi

    from drummachine.core.steps import empty_step, sounds_fill
    from drummachine.core.voices import HITS, SNARE, TOMS
    from drummachine.live.session import Options, Session

    with Jack(period):
        tx = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "bench-pedal")
        tx.open_virtual_port("tx")
        notes = []
        opts = Options(audio=audio, audio_api="JACK" if audio else None, midi_virtual=True,
                       midi_in="bench-pedal:tx", style="rock", bpm=bpm)
        with Session(opts) as session:
            orig = session.midi.send
            session.midi.send = lambda ev: (notes.extend(e for e in ev if e.kind == "note"), orig(ev))
            session.start_threads()
            session.command("start")
            time.sleep(2.0)
            rng = np.random.default_rng(0)
            ms, steps = [], []
            for _ in range(trials):
                time.sleep(2.0 + rng.uniform(0, 4.0))  # past the last fill, at a random step
                t_cue = session.clock.now()  # the engine's clock: the mixer's with the kit, else monotonic
                step_at_cue = int(session.engine.transport.step_at(t_cue))
                tx.send_message([0xB0, 112, 127])
                time.sleep(2.5)
                grid = {}
                for e in notes:
                    grid.setdefault(e.step, empty_step())[HITS, e.voice] = 1.0
                first = next((s for s in range(step_at_cue, step_at_cue + 32)
                              if s in grid and sounds_fill(grid[s], grid.get(s - 16))), None)
                if first is not None:
                    steps.append(first - step_at_cue)
                    ms.append(min(e.time for e in notes if e.step == first and
                                  (e.voice in TOMS or e.voice == SNARE)) - t_cue)
            stats = session.engine.stats
            margin = session.engine.margin
        tx.close_port()
    steps = np.array(steps)
    return {"trials": trials, "heard": len(steps), "steps_p50": float(np.percentile(steps, 50)),
            "steps_p90": float(np.percentile(steps, 90)), "within_2_steps": round(float(np.mean(steps <= 2)), 3),
            "to_first_fill_note_ms": stats_ms(ms), "generator_misses": stats.misses,
            "tempo": f"{bpm:g} bpm (a 16th = {15000 / bpm:.0f} ms)", "jack_period": period, "kit": audio,
            "hand_out_margin_ms": round(margin * 1000, 1),
            "note": "steps counted from the step open at the cue; a cue is handled on the next step not yet handed "
                    "to the outputs, committed half a step + the hand-out margin before it sounds"}


def drift() -> dict:
    from drummachine.core.events import MemorySink
    from drummachine.core.transport import ManualClock

    clock = ManualClock(0.0)
    sink = MemorySink()
    engine = Engine(FakeGenerator(), jam("rock", 120), clock, [sink], start_delay=0.0, lookahead=4)
    engine.command("start")
    hour_steps = 3600 * 8  # 120 bpm: 8 steps a second
    while engine.commit_cursor <= hour_steps:
        engine.pump_generator()
        engine.pump()
        clock.advance(0.01)
        if len(sink.events) > 10000:
            del sink.events[:-100]
    t = engine.transport.time_of(hour_steps)
    return {"simulated_s": 3600, "bars": hour_steps // 16, "playhead_error_ms": abs(t - 3600.0) * 1000.0}


def headless(seconds: float = 40.0) -> dict:
    with Jack(128):
        log = ROOT / "benchmarks" / ".headless.log"
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "drummachine", "play", "--headless", "--log", str(log),
                                 "--duration", str(seconds)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        rss, parts, audio = [], [], []
        while proc.poll() is None:
            time.sleep(1.0)
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                rss.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)
                parts.append({k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) / 1024
                              for k in ("RssAnon", "RssFile", "RssShmem")})
                children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                for child in children:  # the audio process
                    st = Path(f"/proc/{child}/status").read_text()
                    audio.append({k: int(re.search(rf"{k}:\s+(\d+)", st).group(1)) / 1024
                                  for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem")})
            except (OSError, AttributeError):
                pass
        wall = time.monotonic() - t0
        text = log.read_text()
        log.unlink()
    first = re.search(r"first beat after ([\d.]+) s", text)
    ready = re.search(r"ready in ([\d.]+) s", text)
    steady = rss[len(rss) // 2:] or [0]
    half = parts[len(parts) // 2:] or [{"RssAnon": 0, "RssFile": 0, "RssShmem": 0}]
    split = {k: round(float(np.median([p[k] for p in half])), 1) for k in half[0]}
    ahalf = audio[len(audio) // 2:] or [{"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "RssShmem": 0}]
    asplit = {k: round(float(np.median([p[k] for p in ahalf])), 1) for k in ahalf[0]}
    own = round(split["RssAnon"] + split["RssFile"], 1)
    audio_own = round(asplit["RssAnon"] + asplit["RssFile"], 1)
    return {"first_beat_s_after_start_of_main": float(first.group(1)) if first else None,
            "ready_s": float(ready.group(1)) if ready else None,
            "process_wall_s": round(wall, 1), "steady_rss_mb": round(float(np.median(steady)), 1),
            "peak_rss_mb": round(max(rss or [0]), 1), "steady_rss_split_mb": split,
            "own_memory_mb": own, "audio_process_rss_split_mb": asplit, "audio_process_own_mb": audio_own,
            "own_memory_both_processes_mb": round(own + audio_own, 1),
            "note": "RssShmem is the JACK server's shared memory (port buffers), mapped into every JACK client; "
                    "own = RssAnon + RssFile",
            "returncode": proc.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated measurements")
    ap.add_argument("--underrun-minutes", type=float, default=10.0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    jobs = {
        "drift": drift,
        "audio_onsets": audio_onsets,
        "midi_out_64": lambda: midi_out(64),
        "midi_out_128": lambda: midi_out(128),
        "cue_latency": cue_latency,
        "fill_onset_live": fill_onset_live,
        "fill_onset_live_kit_128": lambda: fill_onset_live(period=128, audio=True),
        "fill_onset_live_kit_1024": lambda: fill_onset_live(period=1024, audio=True),
        "headless": headless,
        "underruns": lambda: underruns(args.underrun_minutes),
        "underruns_in_process": lambda: underruns(args.underrun_minutes, "in_process"),
        "underruns_idle": lambda: underruns(args.underrun_minutes, "idle"),
    }
    only = args.only.split(",") if args.only else list(jobs)
    results = {"cpus": os.cpu_count()}
    for name in only:
        print(f"{name} ...", file=sys.stderr, flush=True)
        results[name] = jobs[name]()
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        existing = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else {}
        existing.update(results)
        Path(args.json).write_text(json.dumps(existing, indent=2) + "\n")


if __name__ == "__main__":
    main()
