"""The whole instrument following a band on a real JACK server (benchmarks/follow.py --instrument).

A player client (``band:out``) plays a warped clip; ``drummachine play --headless --listen
band:out`` (stand-in generator, the built-in kit through the mixer process, MIDI clock out)
follows it; a JACK MIDI recorder (``rec:in``) stamps every MIDI clock with its JACK frame. The
band's true beats are in JACK frames too (the player knows the frame each sample went out in), so
the drummer's beats (every 24th clock) are compared with the band's without any clock conversion.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import follow_material as material

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000
CLOCKS_PER_BEAT = 24


class MidiRecorder:
    """A JACK MIDI input that stamps each message with its JACK frame (and, with ``usecs``, JACK's
    microseconds of that frame: benchmarks/follow_capture_check.py)."""

    def __init__(self, name: str = "rec", usecs: bool = False):
        import jack

        self.client = jack.Client(name, no_start_server=True)
        self.port = self.client.midi_inports.register("in")
        self.events: list[tuple[int, bytes]] = []
        self.usecs: dict[int, float] = {}  #: frame -> JACK's microseconds (with ``usecs``)
        #: (expected, got) where a period's first frame did not follow on from the last one's end
        #: (a busy host): a period JACK did not call this client for (its messages lost to the
        #: recorder, not to the engine), or ``last_frame_time`` read a period late (then back:
        #: the pairs seen in runs so far were mostly these, a few frames of stamping, no loss)
        self.unheard: list[tuple[int, int]] = []
        self.next_frame = None
        frame_usecs = _frame_usecs(self.client) if usecs else None

        @self.client.set_process_callback
        def process(frames):
            base = self.client.last_frame_time
            if self.next_frame is not None and base != self.next_frame:
                self.unheard.append((self.next_frame, base))
            self.next_frame = base + frames
            for offset, data in self.port.incoming_midi_events():
                self.events.append((base + offset, bytes(data)))
                if frame_usecs is not None:
                    self.usecs[base + offset] = frame_usecs(base, offset)

        self.client.activate()

    @property
    def port_name(self) -> str:
        return self.port.name

    def beats(self) -> np.ndarray:
        """JACK frames of the drummer's beats: every 24th clock from the last start."""
        return beats_from_clocks([f for f, d in self.events if d[:1] == b"\xf8"],
                                 [f for f, d in self.events if d[:1] == b"\xfa"], self.unheard)

    def note_ons(self) -> np.ndarray:
        """(JACK frame, note, velocity) of every note-on (velocity above 0), one row each."""
        rows = [(f, d[1], d[2]) for f, d in self.events if len(d) == 3 and d[0] & 0xF0 == 0x90 and d[2] > 0]
        return np.array(rows, np.int64).reshape(-1, 3)

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def _frame_usecs(client):
    """(period's first frame, offset) -> JACK's microseconds of that frame (JACK-Client has no
    ``jack_frames_to_time``: libjack's, on the client's pointer)."""
    import ctypes

    import jack

    libjack = ctypes.CDLL("libjack.so.0")
    libjack.jack_frames_to_time.restype = ctypes.c_uint64
    libjack.jack_frames_to_time.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    pointer = int(jack._ffi.cast("uintptr_t", client._ptr))
    per_frame = 1e6 / client.samplerate
    return lambda base, offset: libjack.jack_frames_to_time(pointer, base) + offset * per_frame


def beats_from_clocks(clocks, starts, unheard=()) -> np.ndarray:
    """Every 24th MIDI clock from the last Start (JACK frames), counting the clocks the recorder
    lost: a gap between two clocks in which the recorder's periods did not follow on is as many
    clocks as it is long (the spacing of the clocks around it; a period read late leaves a gap of
    one). Elsewhere every gap is one clock, however long (a beat moved by the follower). A lost
    beat clock is put between its neighbours. (Checked on made-up clocks, tests/test_follow_instrument.py;
    no real run with a lost clock has been looked at since.)"""
    clocks = np.asarray(clocks, np.float64)
    if len(starts):
        clocks = clocks[clocks >= starts[-1]]
    if clocks.size < 3:
        return clocks[::CLOCKS_PER_BEAT]
    gaps = np.diff(clocks)
    counts = np.ones(gaps.size)
    for first, _end in unheard:
        i = int(np.searchsorted(clocks, first)) - 1  # the gap the unheard period begins in
        if 0 <= i < gaps.size:
            around = gaps[max(0, i - 12):i + 12]
            spacing = float(np.median(around))
            counts[i] = max(1.0, round(gaps[i] / spacing))
    index = np.concatenate([[0.0], np.cumsum(counts)])
    wanted = np.arange(0.0, index[-1] + 1, CLOCKS_PER_BEAT)
    return np.interp(wanted, index, clocks)


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def listener_pid(play_pid: int) -> int | None:
    for c in children(play_pid):
        try:
            if b"drummachine.listen.process" in Path(f"/proc/{c}/cmdline").read_bytes():
                return c
        except OSError:
            pass
    return None


def run_one(clip, mode: str = "beat", wait_for_band: bool = False, listen: bool = True, lead_in: float = 0.0,
            start_offset: float = 0.0, extra=(), env_extra: dict | None = None, fake_model: bool = True,
            kill_listener_at: float | None = None, taps_at=()) -> dict:
    """Play ``clip`` as the band and ``drummachine play`` against it; the raw beats and counters.

    ``lead_in``: seconds the machine plays alone before the band comes in (cold start);
    ``start_offset``: the machine starts this long before the band's beat grid would have
    (a phase it must correct, for the cold start); ``kill_listener_at``: the listening process
    killed (SIGKILL, as a crash) this many seconds into the clip (``killed_at``: the clip's second
    it went at, and the wall clock's, for the log's lines). ``taps_at``: clip seconds at which a
    foot controller on ``--midi-in`` sends CC 117 (the default preset's tap tempo).
    """
    player = material.BandPlayer(clip.audio, "band")
    rec = MidiRecorder("rec")
    log = Path(tempfile.mkdtemp()) / "play.log"
    taps = sorted(taps_at)
    sender = None
    if taps:  # a foot controller: benchmarks/jack_midi_probe.py's sender, a message a line
        sender = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "jack_midi_probe.py"), "send", "foot"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if sender.stdout.readline().strip() != "ready":
            raise RuntimeError("the foot controller's JACK client did not start")
        extra = (*extra, "--midi-in", "foot:tx")
    seconds = clip.seconds + lead_in + 2.0
    cmd = [sys.executable, "-m", "drummachine", "play", "--headless", *(["--fake-model"] if fake_model else []),
           "--midi-out", rec.port_name,
           "--clock-out", "--bpm", f"{clip.bpm:.3f}", "--duration", f"{seconds + (6 if wait_for_band else 0):.1f}",
           "--log", str(log), "--audio-api", "JACK", *extra]
    if listen:
        cmd += ["--listen", player.port_name, "--follow", mode]
        if wait_for_band:
            cmd += ["--wait-for-band"]
    env = dict(os.environ, DRUMMACHINE_MIDI_API="jack", **(env_extra or {}))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the machine starts (or, waiting for the band, listens) first; the band comes in lead_in later
        time.sleep(4.0 + lead_in + start_offset)
        lpid = listener_pid(proc.pid) if listen else None
        cpu0, wall0 = (cpu_ticks(lpid) if lpid else 0), time.monotonic()
        player.start()
        cpu1, wall1 = cpu0, wall0
        killed = None
        tapped = []
        while not player.done and proc.poll() is None:
            time.sleep(0.01 if taps else 0.1)
            if taps and player.pos - player.pad >= taps[0] * player.rate:
                sender.stdin.write("176 117 127\n")  # CC 117 on channel 1
                sender.stdin.flush()
                tapped.append((player.pos - player.pad) / player.rate)
                del taps[0]
            if kill_listener_at is not None and killed is None \
                    and player.pos - player.pad >= kill_listener_at * player.rate:
                if lpid:
                    os.kill(lpid, signal.SIGKILL)
                killed = ((player.pos - player.pad) / player.rate, time.time())
            # read while the listening process lives: `play` may end before the clip does
            ticks = cpu_ticks(lpid) if lpid else 0
            if ticks:
                cpu1, wall1 = ticks, time.monotonic()
        out, err = proc.communicate(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if sender is not None:
            sender.kill()
            sender.wait()
        rec.close()
        player.close()
    summary = err.strip().splitlines()[-1] if err.strip() else ""
    misses = re.search(r"(\d+) generator misses", summary)
    underruns = re.search(r"(\d+) underruns", summary)
    band = player.frames(clip.beats)
    said = log.read_text(errors="replace") if log.exists() else ""
    capture = re.search(r"Hz, (\S+) capture\)", said)
    return {"capture": capture.group(1) if capture else None, "band_frames": band, "played_frames": player.frames(clip.played), "drummer_frames": rec.beats(), "audible": clip.audible, "tempo": clip.tempo,
            "note_ons": rec.note_ons(),
            "returncode": proc.returncode, "summary": summary, "log": str(log), "killed_at": killed,
            "tapped_at": tapped if taps_at else None,
            "killed_frame": float(player.frames(np.array([killed[0]]))[0]) if killed else None,
            "misses": int(misses.group(1)) if misses else None, "underruns": int(underruns.group(1)) if underruns else None,
            "listener_cpu_share": round((cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") / max(wall1 - wall0, 1e-9), 4)
            if listen and lpid and cpu0 > 0 and wall1 > wall0 else None}


def velocity_by_bar(run: dict) -> list[float | None]:
    """The mean velocity of the machine's notes in each of the band's bars (between its bar lines,
    JACK frames; None: no note). What the dynamics move, as the drum module hears it."""
    return [round(float(v.mean()), 1) if v.size else None for v in velocities_by_bar(run)]


def velocities_by_bar(run: dict) -> list[np.ndarray]:
    """The velocities of the machine's notes in each of the band's bars."""
    bars = run["band_frames"][::4]
    notes = run["note_ons"]
    return [notes[(notes[:, 0] >= a) & (notes[:, 0] < b), 2] for a, b in zip(bars[:-1], bars[1:])]


def dynamics_steps(velocity: list, down_bar: int, up_bar: int, settle: int = 3) -> dict:
    """Bars after the band went down (at ``down_bar``) until the machine's velocity was below half
    way from its loud level (the mean of the ``settle`` bars before the step) to its quiet one (the
    mean of the last ``settle`` bars before ``up_bar``), and after the band came back until it was
    above half way again. None: never."""
    v = np.array([np.nan if x is None else x for x in velocity], np.float64)
    loud = float(np.nanmean(v[down_bar - settle:down_bar]))
    quiet = float(np.nanmean(v[up_bar - settle:up_bar]))
    half = (loud + quiet) / 2
    down = next((b - down_bar for b in range(down_bar, up_bar) if v[b] < half), None)
    up = next((b - up_bar for b in range(up_bar, v.size) if v[b] > half), None)
    return {"loud_velocity": round(loud, 1), "quiet_velocity": round(quiet, 1),
            "bars_to_lower": down, "bars_to_recover": up}


def beat_moves(ours: np.ndarray, lock: int | None) -> np.ndarray:
    """Seconds each of the machine's beats moved against the beats before it: its spacing from the
    beat before, less the median of the 4 spacings before that. A phase step of 5 ms moves a beat 5
    ms, a tempo step of 0.5% a beat 2.5 ms (a ramp a little more: the median lags it), a re-lock
    onto the band's beat in one go the whole error: the audible jumps the issue rules out. From
    the 2nd beat after the lock on (the lock's own jump onto the band's beat is the coming in)."""
    spacing = np.diff(ours)
    start = max(4, (lock if lock is not None else ours.size) + 1)
    return np.array([abs(spacing[k] - np.median(spacing[k - 4:k])) for k in range(start, spacing.size)])


def against_the_band(ours: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each of our beats against the band's nearest (seconds): the signed error (positive: late),
    that band beat's index, and whether ours falls within the band's beats (100 ms either side)."""
    k = np.clip(np.searchsorted(band, ours), 1, band.size - 1)
    nearest = np.where(np.abs(band[k] - ours) < np.abs(band[k - 1] - ours), k, k - 1)
    inside = (ours >= band[0] - 0.1) & (ours <= band[-1] + 0.1)
    return ours - band[nearest], nearest, inside


def first_of_four(ok: np.ndarray) -> int | None:
    """The first index from which 4 in a row are true (a lock), or None."""
    return next((i for i in range(ok.size - 3) if ok[i:i + 4].all()), None)


def measure(run: dict, clip, scenario: str, lock_error: float = 0.030) -> dict:
    """The issue's figures from one run's beats (JACK frames)."""
    band = run["band_frames"] / RATE
    ours = run["drummer_frames"] / RATE
    if ours.size < 8:
        return {"error": "the machine played fewer than 8 beats", "summary": run["summary"]}
    band_period = np.diff(band)
    err, nearest, inside = against_the_band(ours, band)
    audible = run["audible"][nearest]
    # lock: the first of our beats from which 4 in a row are within 30 ms of the band's
    lock = first_of_four((np.abs(err) < lock_error) & inside & (ours >= band[0]))
    band_beats_to_lock = None if lock is None else float((ours[lock] - band[0]) / np.median(band_period))
    # the same against the beat as the band plays it (a drummer 35 ms ahead of the click for 10
    # bars is the band's beat then: a follower locked to it is "off" the click by as much)
    played = run["played_frames"][nearest] / RATE
    lock_played = first_of_four((np.abs(ours - played) < lock_error) & inside & (ours >= band[0]))
    after = np.arange(ours.size) >= (lock if lock is not None else ours.size)
    sel = after & inside & audible
    our_tempo = 60.0 / np.diff(ours)
    true_tempo = run["tempo"][nearest[:-1]]
    tempo_err = np.abs(our_tempo / true_tempo - 1)[sel[:-1]]
    # per bar after the lock (the jump onto the band's beat when it locks is not a tempo change)
    locked = ours[after & inside]
    bar = 60.0 * 4 / (locked[4::4] - locked[:-4:4]) if locked.size > 8 else np.array([])
    bar_changes = np.abs(bar[1:] / bar[:-1] - 1) if bar.size > 1 else np.array([0.0])
    err_played = ours - played
    moves = beat_moves(ours, lock)
    out = {
        "scenario": scenario, "beats_played": int(ours.size),
        "phase_error_vs_played_ms_p50": round(float(np.percentile(np.abs(err_played[sel]), 50)) * 1000, 2)
        if sel.any() else None,
        "phase_error_vs_played_ms_p95": round(float(np.percentile(np.abs(err_played[sel]), 95)) * 1000, 2)
        if sel.any() else None,
        "band_beats_to_lock": None if band_beats_to_lock is None else round(band_beats_to_lock, 2),
        "band_beats_to_lock_vs_played": None if lock_played is None
        else round(float((ours[lock_played] - band[0]) / np.median(band_period)), 2),
        "phase_error_ms_p50": round(float(np.percentile(np.abs(err[sel]), 50)) * 1000, 2) if sel.any() else None,
        "phase_error_ms_p95": round(float(np.percentile(np.abs(err[sel]), 95)) * 1000, 2) if sel.any() else None,
        "tempo_error_pct_p50": round(float(np.percentile(tempo_err, 50)) * 100, 3) if tempo_err.size else None,
        "tempo_error_pct_p95": round(float(np.percentile(tempo_err, 95)) * 100, 3) if tempo_err.size else None,
        "largest_bar_tempo_change_pct": round(float(bar_changes.max()) * 100, 3),
        "largest_beat_move_ms": round(float(moves.max()) * 1000, 1) if moves.size else None,
        "beat_moves_over_20ms": int((moves > 0.020).sum()),
        "misses": run["misses"], "underruns": run["underruns"], "listener_cpu_share": run["listener_cpu_share"],
        "phase_errors_ms": [round(float(x) * 1000, 1) for x in err[inside]],
    }
    if clip.sounds_after and sel.any():
        # the same against the beat as it sounds: the rendered instruments' attack after the note-on
        err_sound = np.abs(err - clip.sounds_after)[sel]
        out["sounds_after_ms"] = round(clip.sounds_after * 1000, 1)
        out["phase_error_vs_sound_ms_p50"] = round(float(np.percentile(err_sound, 50)) * 1000, 2)
        out["phase_error_vs_sound_ms_p95"] = round(float(np.percentile(err_sound, 95)) * 1000, 2)
    for first, length in material.SCENARIOS[scenario].breaks:
        a, b = band[first * 4], band[(first + length) * 4]
        held = (ours >= a) & (ours < b)
        if held.sum() > 2:
            t = 60.0 / np.diff(ours[held])
            out["break_tempo_drift_pct"] = round(float(np.abs(t / t[0] - 1).max()) * 100, 3)
        back = np.where(ours >= b)[0]
        again = next((j for j in range(back.size - 1) if abs(err[back[j]]) < lock_error and abs(err[back[j + 1]])
                      < lock_error), None)
        out["beats_to_relock_after_break"] = None if again is None else int(again)
    return out


def run(args) -> dict:
    """The plan below on the first validation drummer's band mix, or on the first POP909 song of
    the check (``--pop909``: music from outside this repository, benchmarks/follow_outside.py)."""
    if getattr(args, "pop909", None):
        import follow_outside

        path, bpm = follow_outside.single_tempo_songs(Path(args.pop909), 1, skip=args.pop909_skip)[0]

        def make(scenario, **kw):
            return follow_outside.make_clip(path, bpm, scenario, rate=RATE, **kw)
    else:
        path, bpm = material.validation_performances(max(1, args.performances))[0]

        def make(scenario, **kw):
            return material.make_clip(path, bpm, scenario, "band", rate=RATE, **kw)
    plan = [("steady", "beat", False, 2.0), ("steady", "beat", True, 0.0), ("accelerando", "beat", False, 2.0),
            ("jump", "beat", False, 2.0), ("break", "beat", False, 2.0), ("ritardando", "beat", False, 2.0)]
    results = []
    for scenario, mode, wait, lead in plan:
        clip = make(scenario)
        raw = run_one(clip, mode, wait_for_band=wait, lead_in=lead, start_offset=0.137 if not wait else 0.0)
        row = measure(raw, clip, scenario)
        row.update({"mode": mode, "wait_for_band": wait, "performance": clip.name, "bpm": bpm,
                    "returncode": raw["returncode"]})
        results.append(row)
        print(json.dumps(row), flush=True)
    base_clip = make("steady", bars=12)
    base = run_one(base_clip, listen=False, lead_in=2.0)
    baseline = {"misses": base["misses"], "underruns": base["underruns"], "seconds": round(base_clip.seconds, 1)}
    summary = {r["scenario"] + (" (wait for band)" if r["wait_for_band"] else ""):
               {k: r.get(k) for k in ("band_beats_to_lock", "phase_error_ms_p50", "phase_error_ms_p95",
                                      "phase_error_vs_played_ms_p50", "phase_error_vs_played_ms_p95",
                                      "tempo_error_pct_p95", "largest_bar_tempo_change_pct", "break_tempo_drift_pct",
                                      "beats_to_relock_after_break", "listener_cpu_share", "misses", "underruns")
                if k in r} for r in results}
    summary["baseline without --listen"] = baseline
    return {"clips": results, "summary": summary}


# --- the machine hearing itself: its kit bled into its listening input ---------------------------


class KitBleed:
    """A JACK client standing in for a microphone on stage: what the machine's kit plays (the ports
    feeding the sound card) goes, ``gain_db`` under and ``delay_ms`` later (the air from the
    monitors), into the listening input beside the band (the ports ``band:out`` feeds). It wires
    itself once both are in the graph."""

    def __init__(self, gain_db: float, delay_ms: float = 8.0, band: str = "band:out", room: bool = False):
        import threading

        import jack

        self.client = jack.Client("bleed", no_start_server=True)
        self.inport = self.client.inports.register("in")
        self.outport = self.client.outports.register("out")
        self.gain = 10 ** (gain_db / 20)
        rate = self.client.samplerate
        # the path: the direct sound only, or with a stage's reflections (``room``: material.REFLECTIONS)
        path = material.room_path(rate, delay_ms) if room else None
        self.taps = [(int(delay_ms * rate / 1000), 1.0)] if path is None else \
            [(int(k), float(path[k])) for k in np.flatnonzero(path)]
        self.history = np.zeros(max(k for k, _ in self.taps), np.float32)  # the kit's last samples
        self.band = band
        self.wired: list[str] = []
        self.rewired = 0  # times the mic was wired to a listening process started again
        self.power = [0.0, 0]  # the kit's sum of squares (its channels summed, before the gain), frames

        @self.client.set_process_callback
        def process(frames):
            kit = self.inport.get_array()
            if self.wired:
                self.power[0] += float(np.dot(kit, kit))
                self.power[1] += frames
            x = np.concatenate([self.history, kit * self.gain])
            end = x.size
            out = self.outport.get_array()
            out[:] = 0.0
            for delay, gain in self.taps:
                out += gain * x[end - delay - frames:end - delay]
            self.history = x[frames:]

        self.client.activate()
        self.stop = False
        threading.Thread(target=self._wire, daemon=True).start()

    def _wire(self) -> None:
        """Wired once both are there, and kept wired: a listening process started again (killed,
        or its input gone) has new ports, which the mic feeds as it fed the old ones."""
        import jack

        while not self.stop:
            try:
                kit = [p for sink in ("system:playback_1", "system:playback_2")
                       for p in self.client.get_all_connections(sink) if not p.name.startswith("bleed:")]
                listen = [p for p in self.client.get_all_connections(self.band) if not p.name.startswith("bleed:")]
                if kit and listen:
                    have_kit = {p.name for p in self.client.get_all_connections(self.inport)}
                    have_listen = {p.name for p in self.client.get_all_connections(self.outport)}
                    for p in kit:
                        if p.name not in have_kit:
                            self.client.connect(p, self.inport)
                    for p in listen:
                        if p.name not in have_listen:
                            self.client.connect(self.outport, p)
                    if not self.wired:
                        self.wired = [p.name for p in kit] + ["->"] + [p.name for p in listen]
                    else:
                        self.rewired += any(p.name not in have_listen for p in listen)
            except jack.JackError:
                pass
            time.sleep(0.05 if not self.wired else 0.1)

    def kit_rms(self) -> float | None:
        """The kit's level as it left (both channels summed), while wired."""
        return math.sqrt(self.power[0] / self.power[1]) if self.power[1] else None

    def close(self) -> None:
        self.stop = True
        self.client.deactivate()
        self.client.close()


def quiet_built_in_kit(db: float) -> Path:
    """The built-in kit's loudest layer of each voice, ``db`` quieter, as a folder of WAVs (``play
    --kit DIR``): a kit that leaves the mixer far under full scale."""
    from drummachine.audio.kit import synth_voice
    from drummachine.audio.wavfile import write_wav
    from drummachine.core.voices import VOICE_NAMES

    folder = Path(tempfile.mkdtemp()) / f"built-in-{db:g}dB"
    folder.mkdir()
    for name in VOICE_NAMES:
        write_wav(folder / f"{name}.wav", synth_voice(name, RATE)[-1] * np.float32(10 ** (-db / 20)), RATE)
    return folder


def after_the_kill(raw: dict, log: str, lock_error: float = 0.030) -> dict:
    """The listening process killed mid-song (``run_one``'s ``kill_listener_at``): the machine's
    beats against the band's in the 8 s before, the 8 s after, and from then on (p50 and p95, ms;
    signed median: positive late); band beats from the kill to the first of 4 of ours in a row
    within 30 ms of the band's that start after the new listening process's first line in the log
    (None: never); and the listening lines the log has from the kill on, with their seconds after it."""
    band = raw["band_frames"] / RATE
    ours = raw["drummer_frames"] / RATE
    kill = raw["killed_frame"] / RATE
    err, _, inside = against_the_band(ours, band)
    out = {"killed_at_clip_s": round(raw["killed_at"][0], 2)}
    for name, a, b in (("before", kill - 8, kill), ("first_8s", kill, kill + 8), ("after_8s", kill + 8, 1e9)):
        e = err[inside & (ours >= a) & (ours < b)]
        if e.size:
            out[f"{name}_ms"] = {"p50": round(float(np.percentile(np.abs(e), 50)) * 1000, 1),
                                 "p95": round(float(np.percentile(np.abs(e), 95)) * 1000, 1),
                                 "signed_median": round(float(np.median(e)) * 1000, 1), "beats": int(e.size)}
    wall = raw["killed_at"][1]
    lines = []
    for line in log.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ (.*)", line)
        if not m or "listen" not in m.group(3):
            continue
        t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
        if t >= wall - 0.5:
            lines.append((round(t - wall, 2), m.group(3)[:160]))
    out["log_after_kill"] = lines
    back = next((s for s, _ in lines if s > 0), None)
    period = float(np.median(np.diff(band)))
    relock = first_of_four((np.abs(err) < lock_error) & inside & (ours >= kill + (back or 0.0)))
    out["band_beats_from_kill_to_4_within_30ms"] = None if relock is None else round(float((ours[relock] - kill) / period), 1)
    near = inside & (ours >= kill - 4) & (ours < kill + 16)
    out["errors_ms_from_4s_before_to_16s_after"] = [(round(float(t - kill), 2), round(float(e) * 1000, 1))
                                                    for t, e in zip(ours[near], err[near])]
    return out


def bleed(args) -> dict:
    """The rock's band mix played against ``play --listen`` with the machine's own kit bled into
    the input at each level of ``--bleed-levels`` (dB against the kit as it leaves; "off": none),
    the direct sound only or with a stage's reflections (``--bleed-room``), the kit taken out by
    the listening process or kept (``--own-kit``); with ``--wait-for-band``, the machine silent
    until it has locked on the band. Besides the usual figures (from the lock on), the second half
    of the clip's beats against the band's, locked or not (a machine that follows itself never locks)."""
    path, bpm = material.validation_performances(1)[0]
    levels = [None if x == "off" else float(x) for x in args.bleed_levels.split(",")]
    cells = [(level, own_kit) for level in levels for own_kit in args.own_kit.split(",")]
    quiet = float(args.bleed_quiet_kit)
    extra = ["--kit", str(quiet_built_in_kit(quiet))] if quiet else []
    rows = []
    for scenario in args.scenarios.split(","):
        clip = material.make_clip(path, bpm, scenario, "band", rate=RATE)
        for level, own_kit in cells:
            # a quiet kit reaches the mic as loud as the built-in: the desk makes up its level
            mic = KitBleed(level + quiet, room=args.bleed_room) if level is not None else None
            # "keep": the listening process is not given the kit's ports (as before the canceller)
            env = {"DRUMMACHINE_LISTEN_OWN_KIT": "keep"} if own_kit == "keep" else {}
            if args.kit_through == "portaudio":  # the mixer's own stream: the kit read from it by time
                env["DRUMMACHINE_JACK_AUDIO"] = "portaudio"
            try:
                if args.wait_for_band:  # the machine silent until it has the band (as in ``run``'s plan)
                    raw = run_one(clip, "beat", wait_for_band=True, extra=extra, env_extra=env,
                                  fake_model=not args.real_model, kill_listener_at=args.kill_listener_at)
                else:
                    raw = run_one(clip, "beat", lead_in=args.bleed_lead_in, start_offset=0.137, extra=extra,
                                  env_extra=env, fake_model=not args.real_model, kill_listener_at=args.kill_listener_at)
            finally:
                if mic is not None:
                    mic.close()
            log = Path(raw["log"]).read_text(errors="replace") if Path(raw["log"]).exists() else ""
            killed = after_the_kill(raw, log) if raw.get("killed_frame") is not None else None
            row = measure(raw, clip, scenario)
            errors = np.abs(np.array(row.get("phase_errors_ms", [])))
            late = errors[errors.size // 2:]
            row = {k: row.get(k) for k in ("scenario", "band_beats_to_lock", "band_beats_to_lock_vs_played",
                                           "phase_error_ms_p50", "phase_error_ms_p95",
                                           "tempo_error_pct_p95", "largest_bar_tempo_change_pct",
                                           "beat_moves_over_20ms", "largest_beat_move_ms", "misses")}
            row.update({"bleed_db": level, "own_kit": own_kit, "kit_taken_out": "is taken out of what it hears" in log,
                        "listener_cpu_share": raw["listener_cpu_share"], "underruns": raw["underruns"],
                        "bleed_room": bool(args.bleed_room), "wait_for_band": bool(args.wait_for_band),
                        "lead_in": args.bleed_lead_in,
                        "kit_quieter_db": quiet,
                        "kit_through": args.kit_through,
                        "kit_read_by_time": "read from the mixer by time" in log,
                        "model": "shipped int8" if args.real_model else "stand-in",
                        "wired": bool(mic and mic.wired) if level is not None else None,
                        "second_half_phase_error_ms_p50": round(float(np.percentile(late, 50)), 1) if late.size else None,
                        "second_half_phase_error_ms_p95": round(float(np.percentile(late, 95)), 1) if late.size else None,
                        "band_peak": round(float(np.abs(clip.audio).max()), 3),
                        "band_rms": round(float(np.sqrt(np.mean(np.square(clip.audio, dtype=np.float64)))), 4),
                        "kit_rms_at_0db": round(mic.kit_rms(), 4) if mic and mic.kit_rms() else None})
            if killed is not None:
                row["listener_killed"] = dict(killed, mic_rewired=mic.rewired if mic else None)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"performance": path, "bpm": bpm, "runs": rows}


# --- underruns with and without --listen, side by side ------------------------------------------

#: jackd's line when a client did not finish its cycle in time (it names the client)
LATE_CLIENT = re.compile(r"JackEngine::XRun: client = (\S+) was not finished")
DRIVER_LATE = "JackTimedDriver::Process XRun"  #: the dummy driver itself woke up late: host noise
TURNS = (("without --listen", False, None), ("--listen, PortAudio capture", True, "portaudio"),
         ("--listen, Python callback capture", True, "callback"))


def dynamics(performances: int = 4, generators=("shipped model", "stand-in")) -> dict:
    """The band 10 dB down from bar 8 to bar 16 of 24 (band mix, steady), ``play --listen --follow
    all`` on JACK, from cold 2 s before the band: the mean velocity of the machine's MIDI notes in
    each of the band's bars, and how many bars after each step it moved half way (``dynamics_steps``).
    Issue 13's target: lower within 2 bars, back within 2. Both generators: the shipped model (what
    a musician hears) and the stand-in (velocities straight from the intensity)."""
    rows = []
    for path, bpm in material.validation_performances(performances):
        for generator in generators:
            clip = material.make_clip(path, bpm, "steady", "band", rate=RATE, bars=24,
                                      gains_db=((8, -10.0), (16, 0.0)))
            raw = run_one(clip, "all", lead_in=2.0, fake_model=generator == "stand-in")
            bars = velocities_by_bar(raw)
            velocity = velocity_by_bar(raw)
            row = {"performance": clip.name, "bpm": bpm, "generator": generator, **dynamics_steps(velocity, 8, 16),
                   "velocity_by_bar": velocity, "notes_by_bar": [int(v.size) for v in bars],
                   "misses": raw["misses"], "underruns": raw["underruns"], "returncode": raw["returncode"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for generator in generators:
        mine = [r for r in rows if r["generator"] == generator]
        summary[generator] = {
            "bars_to_lower": [r["bars_to_lower"] for r in mine], "bars_to_recover": [r["bars_to_recover"] for r in mine],
            "loud_velocity": [r["loud_velocity"] for r in mine], "quiet_velocity": [r["quiet_velocity"] for r in mine]}
    return {"step_db": -10.0, "down_bar": 8, "up_bar": 16, "clips": rows, "summary": summary}


def client_kind(name: str) -> str:
    """jackd's client names, grouped by what they are."""
    if name.startswith("drummachine-listen"):
        return "listening process"
    if name.startswith("PortAudio"):
        return "mixer (PortAudio)"
    if name.startswith("jack_simple_client") or name.startswith("simple"):
        return "jack_simple_client"
    return name


def underruns(args) -> dict:
    """Turns of the same 12-bar band clip played against `drummachine play` without --listen,
    with --listen captured through PortAudio, and with --listen captured by JACK-Client's Python
    callback, in rotation (the host is noisy: a slow minute hits every kind alike), with
    jack_simple_client (C) running in the same graph all along as the reference. Per turn: the
    mixer's underruns and generator misses (play's summary) and, from jackd's log
    (``--jackd-log``), the clients jackd blamed for late cycles and the driver's own late
    wake-ups."""
    perfs = material.validation_performances(1)
    path, bpm = perfs[0]
    clip = material.make_clip(path, bpm, "steady", "band", rate=RATE, bars=args.underrun_bars)
    if args.underrun_minutes:  # the 10-minute run: the clip played again and again
        clip = material.looped(clip, args.underrun_minutes * 60.0)
    turns_wanted = [t for t in TURNS if not args.turns or any(w in t[0] for w in args.turns.split(","))]
    log = Path(args.jackd_log) if args.jackd_log else None
    simple = subprocess.Popen(["jack_simple_client"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    turns = []
    try:
        time.sleep(1.0)
        for round_ in range(args.rounds):
            for label, listen, capture in turns_wanted:
                at = log.stat().st_size if log else 0
                raw = run_one(clip, listen=listen, lead_in=1.0,
                              env_extra={"DRUMMACHINE_LISTEN_CAPTURE": capture} if capture else None,
                              fake_model=not args.real_model)
                blamed: dict[str, int] = {}
                driver_late = None
                if log:
                    with open(log, "rb") as f:
                        f.seek(at)
                        text = f.read().decode(errors="replace")
                    for m in LATE_CLIENT.finditer(text):
                        kind = client_kind(m.group(1))
                        blamed[kind] = blamed.get(kind, 0) + 1
                    driver_late = text.count(DRIVER_LATE)
                row = {"round": round_, "turn": label, "capture": raw["capture"],
                       "seconds": round(clip.seconds + 1.0 + 2.0, 1),
                       "underruns": raw["underruns"], "misses": raw["misses"], "jackd_blamed": blamed,
                       "driver_late_wakeups": driver_late, "listener_cpu_share": raw["listener_cpu_share"],
                       "returncode": raw["returncode"], "load1": round(os.getloadavg()[0], 2)}
                turns.append(row)
                print(json.dumps(row), flush=True)
    finally:
        simple.terminate()
        simple.wait()
    summary = {}
    for label, _, _ in turns_wanted:
        rows = [t for t in turns if t["turn"] == label]
        kinds = sorted({k for t in rows for k in t["jackd_blamed"]})
        summary[label] = {
            "turns": len(rows), "underruns": [t["underruns"] for t in rows],
            "underruns_total": sum(t["underruns"] or 0 for t in rows), "misses_total": sum(t["misses"] or 0 for t in rows),
            "jackd_blamed_total": {k: sum(t["jackd_blamed"].get(k, 0) for t in rows) for k in kinds},
            "driver_late_wakeups_total": sum(t["driver_late_wakeups"] or 0 for t in rows) if log else None,
            "seconds_total": round(sum(t["seconds"] for t in rows), 1)}
    return {"clip": {"performance": path, "bpm": bpm, "bars": args.underrun_bars, "seconds": round(clip.seconds, 1)},
            "model": "shipped int8" if args.real_model else "stand-in", "turns": turns, "summary": summary}
