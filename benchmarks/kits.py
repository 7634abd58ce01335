"""Sampled kits: the resampler chosen, every Debian kit loaded, start-up, memory and the mixer's cost.

    python benchmarks/kits.py [--only resample,load,callback,memory,startup] [--json OUT]

Needs the Debian collection (``apt-get install hydrogen-drumkits``); memory and start-up need a
running JACK server (``JACK_DEFAULT_SERVER`` as everywhere). Parts:

- resample: soxr (HQ, VHQ), libsamplerate (python-samplerate: sinc_best, sinc_medium), scipy's
  resample_poly and linear interpolation (numpy.interp, what WAV-folder kits used) on the same
  material: every 44.1 kHz sample of the collection to 48 kHz (seconds), and quality on test
  tones: a 1 kHz + 15 kHz pair up to 48 kHz (error against the exact tones, dB), and down to
  44.1 kHz (a 48 kHz kit at a 44.1 kHz output) a 20 kHz tone that must stay and a 23 kHz tone,
  above the new Nyquist frequency, that must vanish rather than fold back to 21.1 kHz (dB).
- load: each kit's voice map (what plays each voice, what stands in), decode time with an empty
  cache and from the cache, the decoded size.
- callback: the mixer's callback (Voices.mix + limit, as the mixer process runs it) on the same
  16-bar groove with the built-in kit and the largest kit, in alternating turns, p50/p99/max µs.
- memory: AudioProcessSink with each kit under JACK: the engine's and the mixer's RSS split into
  anonymous, file and shared (the kit) memory, from /proc.
- startup: ``drummachine play --headless`` (the real model) to its first beat, with the built-in
  kit, the largest kit from an empty cache and from its cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drummachine.audio import hydrogen  # noqa: E402
from drummachine.audio.kit import open_kit, synth_kit  # noqa: E402

RATE = 48000
LARGEST = "ForzeeStereo"


# --- resampling --------------------------------------------------------------------------------

def _resamplers():
    import samplerate
    import scipy.signal
    import soxr

    def interp(x, a, b):
        n = int(round(len(x) * b / a))
        return np.interp(np.arange(n) * (a / b), np.arange(len(x)), x).astype(np.float32)

    def poly(x, a, b):
        from math import gcd

        g = gcd(a, b)
        return scipy.signal.resample_poly(x, b // g, a // g).astype(np.float32)

    return {
        "soxr HQ": lambda x, a, b: soxr.resample(x, a, b, quality="HQ"),
        "soxr VHQ": lambda x, a, b: soxr.resample(x, a, b, quality="VHQ"),
        "libsamplerate sinc_best": lambda x, a, b: samplerate.resample(x, b / a, "sinc_best").astype(np.float32),
        "libsamplerate sinc_medium": lambda x, a, b: samplerate.resample(x, b / a, "sinc_medium").astype(np.float32),
        "scipy resample_poly": poly,
        "numpy interp (linear)": interp,
    }


def _tone(freqs, rate, seconds=1.0):
    t = np.arange(int(seconds * rate)) / rate
    return (sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)).astype(np.float32)


def _db(x: float) -> float:
    return round(20 * np.log10(max(x, 1e-12)), 1)


def bench_resample() -> dict:
    import soundfile

    material = []
    for kit in hydrogen.installed_kits():
        for f in sorted(kit.iterdir()):
            if f.suffix.lower() in (".wav", ".flac", ".aiff", ".aif"):
                try:
                    data, rate = soundfile.read(str(f), dtype="float32", always_2d=True)
                except Exception:
                    continue
                if rate == 44100:
                    material.append(np.ascontiguousarray(data.mean(axis=1)))
    seconds_of_audio = sum(len(x) for x in material) / 44100
    out = {"material": f"{len(material)} samples at 44.1 kHz from the Debian collection, "
                       f"{seconds_of_audio:.0f} s of audio, to 48 kHz", "resamplers": {}}
    up = _tone((1000, 15000), 44100)
    up_exact = _tone((1000, 15000), 48000)
    keep = _tone((20000,), 48000)
    fold = _tone((23000,), 48000)
    for name, fn in _resamplers().items():
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for x in material:
                fn(x, 44100, 48000)
            best = min(best, time.perf_counter() - t0)
        y = fn(up, 44100, 48000)
        n = min(len(y), len(up_exact))
        mid = slice(2000, n - 2000)  # away from the ends, where filters start and stop
        err = float(np.sqrt(np.mean((y[mid] - up_exact[mid]) ** 2)) / np.sqrt(np.mean(up_exact[mid] ** 2)))
        k = fn(keep, 48000, 44100)[2000:-2000]
        f = fn(fold, 48000, 44100)[2000:-2000]
        out["resamplers"][name] = {
            "seconds": round(best, 3), "x_real_time": round(seconds_of_audio / best),
            "error_1k_15k_up_db": _db(err),
            "20k_tone_kept_db": _db(float(np.sqrt(np.mean(k ** 2)) / np.sqrt(0.5))),
            "23k_tone_folded_back_db": _db(float(np.sqrt(np.mean(f ** 2)) / np.sqrt(0.5))),
        }
    return out


# --- loading every kit ------------------------------------------------------------------------

def bench_load() -> dict:
    out = {}
    cache = tempfile.mkdtemp(prefix="kitcache")
    os.environ["XDG_CACHE_HOME"] = cache
    try:
        for folder in hydrogen.installed_kits():
            row = {}
            try:
                kit = hydrogen.read_drumkit(folder)
                sources = hydrogen.map_voices(kit)
                row["voices"] = {s.voice: s.describe() for s in sources}
                row["lacks"] = [s.voice for s in sources if s.how == hydrogen.BUILT_IN or s.how.startswith("stand-in")]
                own = {s.voice for s in sources if s.how in ("name", "note", "override")}
                row["has_kick_snare_hat_cymbal"] = {"kick", "snare", "closed_hat"} <= own and bool({"crash", "ride"} & own)
                t0 = time.perf_counter()
                decoded, cached = hydrogen.decode_kit(kit, sources, RATE)
                row["decode_s"] = round(time.perf_counter() - t0, 3)
                t0 = time.perf_counter()
                decoded, cached = hydrogen.decode_kit(kit, sources, RATE)
                row["from_cache_s"] = round(time.perf_counter() - t0, 3)
                assert cached
                row["decoded_mb"] = round(decoded.data.nbytes / 1e6, 1)
                row["on_disk_mb"] = round(sum(f.stat().st_size for f in folder.iterdir()) / 1e6, 1)
                row["layers"] = len(decoded.layout["layers"])
            except Exception as exc:  # a kit that fails is a finding, not the end of the run
                row["error"] = str(exc)
            out[folder.name] = row
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return out


# --- the mixer's callback ---------------------------------------------------------------------

def groove_events(bars=16, bpm=120):
    """A busy rock groove with fills and crashes: (frame, voice, velocity) (benchmarks/mixer_rt.py plays it too)."""
    rng = np.random.default_rng(0)
    step = int(RATE * 60 / bpm / 4)
    events = []
    for s in range(bars * 16):
        f = s * step
        events.append((f, 2, 0.5 + 0.4 * rng.random()))
        if s % 8 == 0:
            events.append((f, 0, 0.9))
        if s % 8 == 4:
            events.append((f, 1, 0.85))
        if s % 16 == 14:
            events.append((f, 3, 0.7))
        if s % 64 == 0:
            events.append((f, 7, 1.0))
        if s % 64 >= 56:
            events.append((f, 4 + s % 3, 0.8))
    return events, bars * 16 * step


def _callback_times(kit, events, frames, block=128) -> np.ndarray:
    from drummachine.audio.mixing import Voices

    voices = Voices(kit, block_max=8192)
    out = np.zeros((block, 2), np.float32)
    times = []
    k = 0
    for start in range(0, frames, block):
        t0 = time.perf_counter_ns()
        while k < len(events) and events[k][0] < start + block:
            voices.add(events[k][0], events[k][1], events[k][2])
            k += 1
        out.fill(0.0)
        voices.mix(out, start)
        voices.limit(out)
        times.append(time.perf_counter_ns() - t0)
    return np.array(times) / 1000.0


def bench_callback(turns=3) -> dict:
    kits = {"built-in": synth_kit(RATE), LARGEST: open_kit(LARGEST, RATE)}
    events, frames = groove_events()
    runs = {name: [] for name in kits}
    for _ in range(turns):  # alternating turns: the host's noise falls on both alike
        for name, kit in kits.items():
            runs[name].append(_callback_times(kit, events, frames))
    out = {"blocks_per_turn": int(frames / 128), "turns": turns, "block": 128, "kits": {}}
    for name, r in runs.items():
        t = np.concatenate(r)
        out["kits"][name] = {"p50_us": round(float(np.percentile(t, 50)), 1),
                             "p99_us": round(float(np.percentile(t, 99)), 1),
                             "max_us": round(float(t.max()), 1), "mean_us": round(float(t.mean()), 1)}
    a, b = out["kits"]["built-in"], out["kits"][LARGEST]
    out["ratio_largest_over_built_in"] = {k: round(b[k] / a[k], 2) for k in ("p50_us", "p99_us", "mean_us")}
    out["period_us"] = round(128 / RATE * 1e6)
    return out


# --- memory ----------------------------------------------------------------------------------

def _status(pid: int) -> dict:
    """MB: resident (anonymous, file, shared: the kit, JACK's buffers) and the proportional share
    (Pss: shared pages divided among the processes that map them)."""
    text = Path(f"/proc/{pid}/status").read_text() + Path(f"/proc/{pid}/smaps_rollup").read_text()
    return {k: int(re.search(rf"^{k}:\s+(\d+)", text, re.M).group(1)) // 1024
            for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Pss", "Pss_Anon", "Pss_Shmem")}


def _memory_child(kit: str | None) -> None:
    """Runs in its own interpreter: one AudioProcessSink, its memory and the mixer's, as JSON."""
    import gc

    from drummachine.audio.process import AudioProcessSink

    before = _status(os.getpid())
    t0 = time.perf_counter()
    sink = AudioProcessSink(kit, RATE)
    made = time.perf_counter() - t0
    sink.wait_ready()
    ready = time.perf_counter() - t0
    gc.collect()
    time.sleep(2.0)  # the mixer's callback has touched what it plays
    for v in range(9):  # every voice once, so the mixer touches its samples
        sink.events.push(int(sink.clock.now() * RATE) + 4800 + v * 2400, v, 0.9)
    time.sleep(1.0)
    result = {"engine_mb_before": before, "engine_mb": _status(os.getpid()), "mixer_mb": _status(sink.proc.pid),
              "kit_mb": round(sink.kit.data.nbytes / 1e6, 1) if sink.kit else 0.0,
              "decode_and_share_s": round(made, 3), "mixer_ready_s": round(ready, 3), "underruns": sink.underruns}
    sink.close()
    print(json.dumps(result))


def bench_memory() -> dict:
    out = {}
    for name in (None, LARGEST):
        r = subprocess.run([sys.executable, __file__, "--memory-child", name or ""], capture_output=True, text=True,
                           timeout=120)
        if r.returncode:
            out[name or "built-in"] = {"error": r.stderr.strip().splitlines()[-1:]}
            continue
        out[name or "built-in"] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


# --- start-up --------------------------------------------------------------------------------

def _first_beat(kit: str | None, cache: str) -> dict:
    log = Path(tempfile.mkdtemp()) / "play.log"
    cmd = [sys.executable, "-m", "drummachine", "play", "--headless", "--duration", "3", "--log", str(log)]
    if kit:
        cmd += ["--kit", kit]
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    wall = time.perf_counter() - t0
    text = log.read_text() if log.exists() else ""
    beat = re.search(r"first beat after ([\d.]+) s", text + r.stdout + r.stderr)
    ready = re.search(r"ready in ([\d.]+) s", text + r.stdout + r.stderr)
    return {"first_beat_s": float(beat.group(1)) if beat else None, "ready_s": float(ready.group(1)) if ready else None,
            "process_s": round(wall, 2), "rc": r.returncode, "load_average": os.getloadavg()[0]}


def bench_startup(turns=5) -> dict:
    """Each turn: the built-in kit and the largest kit, each with an empty cache and then cached."""
    out = {"built-in (empty cache)": [], "built-in (cached)": [], f"{LARGEST} (empty cache)": [],
           f"{LARGEST} (cached)": []}
    for _ in range(turns):
        for kit, name in ((None, "built-in"), (LARGEST, LARGEST)):
            cold = tempfile.mkdtemp()
            out[f"{name} (empty cache)"].append(_first_beat(kit, cold))
            out[f"{name} (cached)"].append(_first_beat(kit, cold))
            shutil.rmtree(cold, ignore_errors=True)
    summary = {k: {"first_beat_s_median": float(np.median([r["first_beat_s"] for r in v if r["first_beat_s"]]
                                                          or [np.nan]))} for k, v in out.items()}
    return {"runs": out, "summary": summary, "target_s": 2.0}


def _play_underruns(kit: str | None, seconds: float) -> dict:
    log = Path(tempfile.mkdtemp()) / "play.log"
    cmd = [sys.executable, "-m", "drummachine", "play", "--headless", "--duration", str(seconds), "--log", str(log)]
    if kit:
        cmd += ["--kit", kit]
    jackd_log = Path(os.environ.get("JACKD_LOG", "/nonexistent"))  # the server's log: its own late wake-ups
    mark = jackd_log.stat().st_size if jackd_log.exists() else None
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    text = (log.read_text() if log.exists() else "") + r.stdout + r.stderr
    found = re.findall(r"(\d+) underruns", text)
    not_ready = re.findall(r"(\d+) blocks the mixer had not mixed in time", text)
    out = {"seconds": seconds, "underruns": int(found[-1]) if found else None,
           "not_mixed_in_time": int(not_ready[-1]) if not_ready else 0, "rc": r.returncode,
           "load_average_after": os.getloadavg()[0]}
    if mark is not None:
        out["driver_late_wakeups"] = jackd_log.read_bytes()[mark:].count(b"JackTimedDriver::Process XRun")
    return out


def bench_underruns(turns=4, seconds=150.0) -> dict:
    """``play --headless`` (the real model) with the built-in kit and the largest kit in turns."""
    runs = {"built-in": [], LARGEST: []}
    for _ in range(turns):
        for name in runs:
            runs[name].append(_play_underruns(None if name == "built-in" else name, seconds))
    return {"runs": runs, "total": {k: sum(r["underruns"] or 0 for r in v) for k, v in runs.items()},
            "not_mixed_in_time": {k: sum(r["not_mixed_in_time"] for r in v) for k, v in runs.items()},
            "driver_late_wakeups": {k: sum(r.get("driver_late_wakeups", 0) for r in v) for k, v in runs.items()},
            "seconds_each": turns * seconds}


def _mixer_child(kit: str | None, seconds: float) -> None:
    """Runs in its own interpreter: the mixer process alone (no engine, no model) under JACK,
    fed the busy groove ahead of time, looped; its underruns and its own worst callback."""
    from drummachine.audio.process import AudioProcessSink

    sink = AudioProcessSink(kit, RATE).wait_ready()
    events, frames = groove_events()
    start = int(sink.clock.now() * RATE) + RATE // 2
    t_end = time.monotonic() + seconds
    k, loop = 0, 0
    while time.monotonic() < t_end:
        horizon = int(sink.clock.now() * RATE) + RATE  # one second ahead, as the engine is (less)
        while start + loop * frames + events[k][0] < horizon:
            f, v, vel = events[k]
            sink.events.push(start + loop * frames + f, v, vel)
            k += 1
            if k == len(events):
                k, loop = 0, loop + 1
        time.sleep(0.05)
    result = {"seconds": seconds, "underruns": sink.underruns, "callbacks": sink.callbacks,
              "worst_callback_ms": round(sink.worst_callback_ms, 3), "worst_gap_ms": round(sink.worst_gap_ms, 3),
              "load_average": os.getloadavg()[0]}
    sink.close()
    print(json.dumps(result))


def bench_mixer(turns=3, seconds=60.0) -> dict:
    """The mixer process alone with each kit in alternating turns: underruns it alone causes."""
    runs = {"built-in": [], LARGEST: []}
    for _ in range(turns):
        for name in runs:
            r = subprocess.run([sys.executable, __file__, "--mixer-child", "" if name == "built-in" else name,
                                str(seconds)], capture_output=True, text=True, timeout=seconds + 60)
            runs[name].append(json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else
                              {"error": r.stderr.strip().splitlines()[-1:]})
    return {"runs": runs, "total_underruns": {k: sum(r.get("underruns", 0) for r in v) for k, v in runs.items()},
            "worst_callback_ms": {k: max(r.get("worst_callback_ms", 0) for r in v) for k, v in runs.items()}}


PARTS = {"resample": bench_resample, "load": bench_load, "callback": bench_callback, "memory": bench_memory,
         "startup": bench_startup, "underruns": bench_underruns, "mixer": bench_mixer}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--memory-child":
        _memory_child(sys.argv[2] or None)
        return 0
    if len(sys.argv) > 3 and sys.argv[1] == "--mixer-child":
        _mixer_child(sys.argv[2] or None, float(sys.argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(PARTS))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "kits.json"))
    args = p.parse_args()
    path = Path(args.json)
    result = json.loads(path.read_text()) if path.exists() else {}
    for part in args.only.split(","):
        t0 = time.perf_counter()
        result[part] = PARTS[part]()
        print(f"{part}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        print(json.dumps({part: result[part]}, indent=1))
    result["host"] = {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    path.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
