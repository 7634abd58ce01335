"""The soak's report, as logic: jackd's blame placed in time by the log's size marks and told
apart by the faults' aftermaths (a SIGKILLed mixer is unfinished until jackd drops it; that is
the fault's doing, not the mixer's steady play)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("benchmarks_soak", ROOT / "benchmarks" / "soak.py")
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)

UNFINISHED = "JackEngine::XRun: client = {} was not finished, state = Triggered\n"
GIVEN_UP = "JackAudioDriver::ProcessGraphAsyncMaster: Process error\n"


def _period(*clients: str) -> str:
    return "".join(UNFINISHED.format(c) for c in clients) + GIVEN_UP


def test_blame_is_counted_apart_inside_a_fault_aftermath(tmp_path):
    log = tmp_path / "jackd.log"
    early = _period("PortAudio") + _period("jack_simple_client")  # before the kill: steady play
    during = _period("PortAudio") * 3 + _period("PortAudio", "jack_simple_client")  # the killed mixer
    late = _period("jack_simple_client")
    log.write_text(early + during + late)
    server = soak.JackServer("x", log)
    # the log's size as the marking thread would have seen it: after `early` at 10 s, after
    # `during` at 11 s, the whole file at 20 s
    server.marks = [(10.0, len(early)), (11.0, len(early + during)), (20.0, len(early + during + late))]
    blame = server.blame([(10.5, 13.0, "mixer SIGKILL")])
    assert blame["not_finished_alone_by_client"] == {"PortAudio": 4, "jack_simple_client": 2}
    by_window = blame["not_finished_alone_by_client_by_window"]
    assert by_window["mixer SIGKILL"] == {"PortAudio": 3}  # the period with both is nobody's alone
    assert by_window["steady"] == {"PortAudio": 1, "jack_simple_client": 2}
    assert blame["fault_windows"] == {"mixer SIGKILL": 1}
    assert blame["not_finished_by_client"] == {"PortAudio": 5, "jack_simple_client": 3}


def test_without_marks_every_period_is_steady(tmp_path):
    log = tmp_path / "jackd.log"
    log.write_text(_period("PortAudio") * 2)
    blame = soak.JackServer("x", log).blame([(0.0, 1e9, "JACK restart")])
    assert blame["not_finished_alone_by_client_by_window"] == {"steady": {"PortAudio": 2}}


def test_every_fault_kind_starts_within_the_first_timing_window_of_an_hour():
    """The first and the last 5 minutes' MIDI timing are compared: both under the same storm
    (before, the first 5 minutes of an hour saw one UI crash and nothing else)."""
    import random
    from types import SimpleNamespace

    run = SimpleNamespace(rng=random.Random(0))
    plan = soak.Soak.schedule_faults(run, 0.0, 3600.0)
    first = {}
    for t, kind in plan:
        first.setdefault(kind, t)
    assert set(first) == {"ui_crash", "spam", "mixer", "twin", "midi_out", "midi_in", "ui_kill", "jack"}
    assert all(t < soak.TIMING_WINDOW_S for kind, t in first.items() if kind != "jack"), first
    assert 1500 < first["jack"] < 2100 and [k for _, k in plan].count("jack") == 1
    last = {kind for t, kind in plan if t > 3600 - 12 - soak.TIMING_WINDOW_S}
    assert last >= {"ui_crash", "spam", "mixer", "midi_out", "midi_in", "ui_kill"}, last
    short = {kind for _, kind in soak.Soak.schedule_faults(run, 0.0, 180.0)}
    assert len(short) == 8, short  # the 3-minute soak still sees every kind


def test_steady_timing_leaves_out_each_fault_span(tmp_path):
    from types import SimpleNamespace

    schedule = tmp_path / "schedule.txt"
    due = [i * 0.5 for i in range(1, 1200)]  # a note every half second for ten minutes
    schedule.write_text("".join(f"{t:.3f} 144 36 100\n" for t in due))
    late_in_spam = {101.0, 101.5, 102.0}  # 30 ms late while the spam burst ran (noted at 102.2)
    got = [(t + (0.030 if t in late_in_spam else 0.001), [144, 36, 100]) for t in due]
    run = SimpleNamespace(schedule=schedule, recorder=SimpleNamespace(got=got), t0=0.0,
                          events=[(102.2, "spam", "1950"), (103.0, "cue", "fill")])
    run.fault_spans = lambda kinds: soak.Soak.fault_spans(run, kinds)
    timing = soak.Soak.timing(run, 0.0, 600.0)
    assert timing["first"]["max"] == 30.0 and timing["first"]["n"] == 399
    assert timing["first_steady"]["max"] == 1.0 and timing["first_steady"]["n"] == 399 - 7  # 100.0 to 103.0 s
    assert timing["last_steady"] == timing["last"]


def loaded_recorder(recorded):
    """The soak's Recorder as its ``stop()`` leaves it, from a recorded file (no process)."""
    recorder = soak.Recorder.__new__(soak.Recorder)
    recorder.out, recorder.periods = recorded, []
    recorder.got, recorder.reference_got = [], []
    recorder.got_on_server_clock, recorder.reference_got_on_server_clock = [], []
    recorder.end_process = lambda: None
    recorder.stop()
    return recorder


def run_beside_the_reference(tmp_path, recorder):
    """A soak run's timing inputs: the engine's kick every half second, the reference player's
    note a quarter of a second after each, for ten minutes."""
    from types import SimpleNamespace

    (tmp_path / "schedule.txt").write_text("".join(f"{i * 0.5:.3f} 153 36 100\n" for i in range(1, 1200)))
    (tmp_path / "reference.txt").write_text("".join(f"{i * 0.5 + 0.25:.3f} 159 60 100\n" for i in range(1, 1200)))
    run = SimpleNamespace(schedule=tmp_path / "schedule.txt", recorder=recorder, t0=0.0, events=[],
                          reference_player=SimpleNamespace(schedule=tmp_path / "reference.txt"))
    run.fault_spans = lambda kinds: soak.Soak.fault_spans(run, kinds)
    return run


def test_the_reference_players_notes_are_apart_from_the_engines_and_its_p99_beside_them(tmp_path):
    """The reference player's notes (channel 16) arrive at the same recorder: they count neither as
    the engine's notes (a silent bar stays silent) nor in its timing, and the p99s are compared."""

    rows = []
    for i in range(1, 1200):
        t = i * 0.5
        rows.append(f"{t + 0.002:.6f} 153 36 100")  # the engine's kick, 2 ms late
        rows.append(f"{t + 0.25 + 0.001:.6f} 159 60 100")  # the reference, 1 ms late
    recorded = tmp_path / "recorded.txt"
    recorded.write_text("\n".join(rows) + "\n")
    recorder = loaded_recorder(recorded)
    assert len(recorder.got) == len(recorder.reference_got) == 1199
    assert all(m[0] == 153 for _, m in recorder.got)
    run = run_beside_the_reference(tmp_path, recorder)
    timing = soak.Soak.timing(run, 0.0, 600.0)
    assert timing["first"]["p99"] == 2.0 and timing["reference"]["first"]["p99"] == 1.0
    assert timing["p99_over_reference"]["last"] == 2.0


def test_each_note_is_also_read_on_the_servers_clock_and_timed_window_by_window(tmp_path):
    """A recorded line carries the note's time as the recorder woke and, after "@", where the
    server's clock puts its frame: the two readings are timed apart, each every window too."""

    rows = []
    for i in range(1, 1200):
        t = i * 0.5
        woke_late = 0.003 if t >= 300 else 0.0001  # the recorder woke late for the second half
        rows.append(f"{t + woke_late:.6f} 153 36 100 @{t + 0.00001:.6f}")
        rows.append(f"{t + 0.25 + woke_late:.6f} 159 60 100 @{t + 0.25 + 0.00002:.6f}")
    rows.append("300.000000 # periods 5000")
    recorded = tmp_path / "recorded.txt"
    recorded.write_text("\n".join(rows) + "\n")
    recorder = loaded_recorder(recorded)
    assert len(recorder.got_on_server_clock) == len(recorder.reference_got_on_server_clock) == 1199
    assert recorder.periods == [(300.0, 5000)]
    run = run_beside_the_reference(tmp_path, recorder)
    woke = soak.Soak.timing(run, 0.0, 600.0)
    server = soak.Soak.timing(run, 0.0, 600.0, server_clock=True)
    assert woke["first"]["p99"] == 0.1 and woke["last"]["p99"] == 3.0
    assert server["first"]["p99"] == server["last"]["p99"] == 0.01
    assert server["reference"]["last"]["p99"] == 0.02 and server["p99_over_reference"]["last"] == 0.5
    # a third of a run this short: 0-200 s, 200-400 s (late from 300 s), 400-592 s (the last 8 s left out)
    assert [w[0] for w in woke["by_window"]] == [0.0, 200.0, 400.0]
    assert [w[1] for w in woke["by_window"]] == [399, 400, 384]
    assert [w[3] for w in woke["by_window"]] == [0.1, 3.0, 3.0]
    assert [w[3] for w in server["by_window"]] == [0.01, 0.01, 0.01]


def test_the_engines_midi_out_counts_are_summed_per_window_across_a_reopened_client():
    """health's MIDI out counts, sampled every 15 s: each window gets what was counted in it; a
    count that went down (the client opened again after a JACK restart) counts from 0."""
    def counts(i):
        if i < 20:
            return {"written": 10 * i, "late": i // 10, "stale": 0, "periods": 100 * i, "off_dll": i}
        if i == 20:
            return {}  # the server away: no counts
        j = i - 21  # opened again: from 0
        return {"written": 10 * j + 5, "late": j // 10, "stale": 0, "periods": 100 * j + 50, "off_dll": 0}

    rows = soak.midi_out_windows([(100.0 + 15 * i, counts(i)) for i in range(40)], 100.0, 700.0)
    assert [r[0] for r in rows] == [0.0, 200.0, 400.0]  # a third of a run this short
    assert [r[1] for r in rows] == [130, 60 + 5 + 50, 130]
    assert [r[2] for r in rows] == [1, 0, 1]
    assert rows[0][4] == 0.01 and rows[1][4] == round(6 / 1150, 4) and rows[2][4] == 0.0


def test_blame_windows_are_the_fault_spans_of_the_graphs_changes():
    """A mixer SIGKILL, the JACK restart and a MIDI port gone and back change the graph; a spam
    burst does not."""
    from types import SimpleNamespace

    run = SimpleNamespace(t0=100.0, events=[(10.0, "mixer_sigkill", "123"), (20.0, "spam", "1950"),
                                            (30.0, "jack_stop", ""), (33.0, "jack_back", ""),
                                            (50.0, "midi_out_gone", ""), (54.0, "midi_out_back", "")])
    spans = soak.Soak.fault_spans(run, soak.BLAME_FAULTS)
    assert spans == [(110.0, 113.0, "mixer_sigkill"), (130.0, 140.0, "jack_stop"), (133.0, 137.0, "jack_back"),
                     (150.0, 156.5, "midi_out_gone"), (154.0, 156.5, "midi_out_back")]


def test_the_mixer_and_its_c_twin_are_each_blamed_after_their_own_kills():
    """The mixer beside the C client killed as often: each one's blame after its own kills (a
    restarted client's "-01" name included), per kill, and in steady play."""
    blame = {"not_finished_alone_by_client_by_window": {
        "mixer_sigkill": {"PortAudio": 3, "PortAudio-01": 1, soak.TWIN: 1},
        "twin_sigkill": {soak.TWIN: 1, f"{soak.TWIN}-01": 1},
        "steady": {"PortAudio": 5, soak.TWIN: 2, "jack_simple_client": 4}},
        "fault_windows": {"mixer_sigkill": 2, "twin_sigkill": 4}}
    alike = soak.killed_alike(blame)
    assert alike["mixer"] == {"kills": 2, "blamed_after_its_kills": 4, "per_kill": 2.0, "steady": 5}
    assert alike["c_twin"] == {"kills": 4, "blamed_after_its_kills": 2, "per_kill": 0.5, "steady": 2}
    assert alike["reference_steady"] == 4
    # where the kit plays through the engine's own JACK client, that client is the mixer's (not the
    # listening process's, drummachine-listen)
    blame["not_finished_alone_by_client_by_window"]["mixer_sigkill"].update({"drummachine": 1, "drummachine-listen": 7})
    assert soak.kit_client("audio: the kit plays through drummachine's own JACK client (drummachine:out_0, "
                           "drummachine:out_1)") == "drummachine"
    assert soak.kit_client("audio: output latency 5.3 ms (JACK)") == "PortAudio"
    assert soak.killed_alike(blame, "drummachine")["mixer"]["blamed_after_its_kills"] == 1


def test_the_json_names_no_path_of_this_machine(tmp_path):
    work = tmp_path / "soak-x"
    text = f'{{"log": "{work}/play.log", "db": "{Path.home()}/.cache/x.db", "model": "{soak.ROOT}/models/m.onnx"}}'
    assert soak.portable(text, work) == '{"log": "<work>/play.log", "db": "~/.cache/x.db", "model": "./models/m.onnx"}'
