"""Whom jackd blames when a client joins the graph, by kind of client (issue 15's blame).

``benchmarks/jack_corpse.py`` found the mixer blamed 1.75 times each time another client joined
the graph, a C client 0.95 times when the mixer joined, and the reference C client (in the graph
from the start) next to never: the blame of a join falls on the client that joined just before
it. The soak restarts the mixer after each SIGKILL, so the mixer is that client far more often
than the soak's reference. This puts each kind of client in that same place, in turns, and counts
what each costs:

- ``c_client``: ``jack_simple_client`` (C, a sine);
- ``portaudio_c``: a C program playing a sine through PortAudio's JACK host API (libportaudio, as
  the mixer has it): PortAudio's JACK client without Python;
- ``rtmixer_idle``: rtmixer's C callback in a Python process that does nothing else (PortAudio
  and rtmixer as the mixer opens them, no kit, no writer thread);
- ``mixer``: the mixer process itself (``audio.process.AudioProcessSink``: the kit, the ring and
  its writer thread at real-time priority).

The subject joins after the reference; then a joiner (``jack_simple_client``) joins and leaves
``--joins`` times. jackd's blame (periods where a client was the only one unfinished) in the 2.5 s
after each join and the 1 s after each leave, per subject, per join.

    python benchmarks/jack_join.py --joins 20 --rounds 2 --json benchmarks/jack_join.json
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from soak import JackServer  # noqa: E402

JOIN_S = 2.5  #: the window after the joiner is started
LEAVE_S = 1.0  #: the window after it is stopped
SETTLE_S = 2.0  #: the subject alone with the reference before the first join
SUBJECTS = ("c_client", "portaudio_c", "rtmixer_idle", "mixer")

#: a sine through PortAudio's JACK host API; the prototypes are declared here (no PortAudio headers
#: are installed, only the library the mixer uses)
PORTAUDIO_SINE_C = r"""
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
typedef struct { int structVersion; int type; const char *name; int deviceCount;
                 int defaultInputDevice; int defaultOutputDevice; } PaHostApiInfo;
typedef struct { int device; int channelCount; unsigned long sampleFormat; double suggestedLatency;
                 void *hostApiSpecificStreamInfo; } PaStreamParameters;
int Pa_Initialize(void);
int Pa_HostApiTypeIdToHostApiIndex(int type);
const PaHostApiInfo *Pa_GetHostApiInfo(int index);
int Pa_OpenStream(void **stream, const PaStreamParameters *in, const PaStreamParameters *out, double rate,
                  unsigned long frames, unsigned long flags, void *callback, void *user);
int Pa_StartStream(void *stream);
int Pa_CloseStream(void *stream);
int Pa_Terminate(void);
static volatile sig_atomic_t stopping;
static void stop(int sig) { stopping = 1; }
static float phase;
static int play(const void *in, void *out, unsigned long frames, const void *time_info, unsigned long flags,
                void *user) {
    float *o = out;
    for (unsigned long i = 0; i < frames; i++) {
        float v = 0.1f * sinf(phase);
        o[2 * i] = o[2 * i + 1] = v;
        phase += 0.0573f;
        if (phase > 6.2832f) phase -= 6.2832f;
    }
    return 0;
}
int main(void) {
    if (Pa_Initialize()) return 1;
    int api = Pa_HostApiTypeIdToHostApiIndex(12);  /* paJACK */
    if (api < 0) return 2;
    PaStreamParameters out = {Pa_GetHostApiInfo(api)->defaultOutputDevice, 2, 1 /* paFloat32 */, 0.0, 0};
    void *stream;
    if (Pa_OpenStream(&stream, 0, &out, 48000, 128, 0, play, 0) || Pa_StartStream(stream)) return 3;
    signal(SIGTERM, stop);
    printf("ready\n");
    fflush(stdout);
    while (!stopping) pause();
    Pa_CloseStream(stream);  /* leaves the graph as a client does, not as a corpse */
    Pa_Terminate();
    return 0;
}
"""

RTMIXER_IDLE = """
import sys, rtmixer, sounddevice as sd
api = next(a for a in sd.query_hostapis() if "JACK" in a["name"])
m = rtmixer.Mixer(device=api["default_output_device"], samplerate=48000, blocksize=128, channels=2, latency="low")
m.start()
print("ready", flush=True)
sys.stdin.readline()
"""


def c_client(name: str) -> subprocess.Popen:
    return subprocess.Popen(["jack_simple_client", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def build_portaudio_sine(work: Path) -> Path:
    lib = ctypes.util.find_library("portaudio")
    if not lib or not shutil.which("gcc"):
        raise RuntimeError("the PortAudio library and gcc are needed for the portaudio_c subject")
    src, exe = work / "pa_sine.c", work / "pa_sine"
    src.write_text(PORTAUDIO_SINE_C)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src), f"-l:{lib}", "-lm"], check=True)
    return exe


class Subject:
    """One kind of client, started and stopped."""

    def __init__(self, kind: str, work: Path, pa_sine: Path):
        self.kind = kind
        self.proc = None
        self.sink = None
        if kind == "c_client":
            self.proc = c_client("subject")
        elif kind == "portaudio_c":
            self.proc = subprocess.Popen([str(pa_sine)], stdout=subprocess.PIPE, text=True)
            self._ready()
        elif kind == "rtmixer_idle":
            self.proc = subprocess.Popen([sys.executable, "-c", RTMIXER_IDLE],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self._ready()
        else:
            from drummachine.audio.process import AudioProcessSink

            self.sink = AudioProcessSink(hostapi="JACK Audio Connection Kit").wait_ready()

    def _ready(self) -> None:
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{self.kind} did not start ({line!r}, exit {self.proc.poll()})")

    def stop(self) -> None:
        if self.sink is not None:
            self.sink.close()
        elif self.kind == "rtmixer_idle":
            self.proc.stdin.close()  # it closes its stream and leaves
            self.proc.wait(10)
        else:
            self.proc.terminate()
            self.proc.wait(10)


def run(joins: int, rounds: int, work: Path, subjects: tuple[str, ...]) -> dict:
    server = f"join{os.getpid()}"
    os.environ["JACK_DEFAULT_SERVER"] = server
    pa_sine = build_portaudio_sine(work) if "portaudio_c" in subjects else None
    windows: list[tuple[float, float, str]] = []
    with JackServer(server, work / "jackd.log") as jack:
        reference = c_client("reference")
        try:
            time.sleep(1.0)
            for _ in range(rounds):
                for kind in subjects:
                    subject = Subject(kind, work, pa_sine)
                    try:
                        time.sleep(SETTLE_S)
                        for _ in range(joins):
                            started = time.monotonic()
                            joiner = c_client("joiner")
                            windows.append((started, started + JOIN_S, f"{kind}_join"))
                            time.sleep(JOIN_S)
                            left = time.monotonic()
                            joiner.terminate()
                            joiner.wait(10)
                            windows.append((left, left + LEAVE_S, f"{kind}_leave"))
                            time.sleep(LEAVE_S)
                    finally:
                        subject.stop()
                    time.sleep(1.0)
        finally:
            reference.terminate()
            reference.wait(10)
        blame = jack.blame(windows)
    per_window = blame["not_finished_alone_by_client_by_window"]
    per_join = {}
    for kind in subjects:
        row = {}
        for what in ("join", "leave"):
            counts = Counter(per_window.get(f"{kind}_{what}", {}))
            subject_n = sum(n for client, n in counts.items() if client not in ("reference", "joiner"))
            row[f"subject_per_{what}"] = round(subject_n / (joins * rounds), 2)
            row[f"reference_per_{what}"] = round(counts.get("reference", 0) / (joins * rounds), 2)
            row[f"joiner_per_{what}"] = round(counts.get("joiner", 0) / (joins * rounds), 2)
        per_join[kind] = row
    return {"joins_each": joins * rounds, "join_window_s": JOIN_S, "leave_window_s": LEAVE_S,
            "alone_blame_per_join": per_join, "jackd": blame}


def chosen_subjects(ap: argparse.ArgumentParser, given: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The comma-separated subjects of ``--subjects``; an unknown one ends the run with a usage error."""
    subjects = tuple(s for s in given.split(",") if s)
    unknown = [s for s in subjects if s not in allowed]
    if unknown:
        ap.error(f"unknown subject {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return subjects


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--joins", type=int, default=20, help="joins per subject per round")
    ap.add_argument("--rounds", type=int, default=2, help="turns over the subjects")
    ap.add_argument("--subjects", default=",".join(SUBJECTS), help=f"comma-separated, of {', '.join(SUBJECTS)}")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    subjects = chosen_subjects(ap, args.subjects, SUBJECTS)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), **run(args.joins, args.rounds, Path(tmp), subjects)}
    print(json.dumps(result["alone_blame_per_join"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
