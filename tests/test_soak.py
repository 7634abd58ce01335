"""The soak, short: `benchmarks/soak.py` for 3 minutes, playing beside the suite's tests that
are not real-time (tests/conftest.py orders them so) — the real `play --headless` with the shipped
model, the mixer over JACK, a MIDI recorder, a controller, cues from the whole command table with
bad values, controller spam, and every fault once (UI crashed and SIGKILLed in tmux, mixer
SIGKILLed, MIDI out and in ports gone and back, the JACK server stopped and started again). Longer runs: `python benchmarks/soak.py
--minutes 10 --json OUT` (underruns, jackd's blame and timing are reported there, not asserted:
on a shared host they measure the host)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter

import pytest

from .conftest import SOAK, SOAK_MINUTES

pytestmark = [pytest.mark.slow, pytest.mark.jack]


@pytest.fixture(scope="module")
def soak():
    if not (shutil.which("jackd") and shutil.which("tmux")):
        pytest.skip("needs jackd and tmux (the README's set-up installs them)")
    proc = SOAK.get("proc")
    assert proc is not None, "the soak starts with the first test after the real-time ones (tests/conftest.py)"
    try:
        code = proc.wait(timeout=SOAK_MINUTES * 60 + 180)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the soak did not end within {SOAK_MINUTES} minutes and 3 more")
    assert code == 0, (SOAK["folder"] / "stderr").read_text()[-3000:]
    return json.loads(SOAK["out"].read_text())


def test_every_fault_was_injected_and_the_engine_saw_it(soak):
    assert soak["engine_exit"]["died_at_s"] is None, soak["engine_exit"]  # its code and stderr's tail
    injected = soak["faults_injected"]
    assert not injected.get("RECORDER_DIED"), "the soak's own MIDI recorder died: what followed is not measured"
    for kind in ("ui_crash", "ui_sigkill", "mixer_sigkill", "midi_out_gone", "midi_in_gone", "spam", "jack_stop"):
        assert injected.get(kind, 0) >= 1, (kind, soak["events"])
    assert soak["log"]["ui_detached"] >= 2, "both UIs detached, and the engine said so"
    assert soak["audio_restarts"] >= 2 and soak["log"]["audio_restarted"] >= 2, "after the SIGKILL and the JACK restart"
    assert soak["log"]["jack_server_gone"] >= 1, "the MIDI watch noticed the JACK server go"
    assert soak["spam_messages"] >= 1500 and soak["cues"]["sent"] >= 10 and soak["cues"]["bad_values"] >= 1
    assert soak["commands_refused"] >= 1, "bad values were refused at the boundary"
    # MIDI out back within 4 s of its port's return and of the JACK server's, where the soak's own
    # recorder was listening meanwhile (a CI run's wait of 24.6 s came in a soak with 10 bars of a
    # stalled recorder)
    back = [s for s, stalled in zip(soak["midi_out_back_after_s"], soak["midi_out_back_recorder_stalled"]) if not stalled]
    assert back and all(s is not None and s < 4.0 for s in back), \
        (soak["midi_out_back_after_s"], soak["midi_out_back_recorder_stalled"])


def test_nothing_went_silent_and_nothing_died(soak):
    bars = soak["bars"]
    assert bars["counted"] >= 10, bars
    assert bars["silent"] == 0, silent_bars_and_what_happened_around_them(soak)
    assert bars["handed_out_with_no_hits"] == 0
    assert soak["threads"]["dead_at_end"] == []
    assert soak["engine_exit"]["code"] == 0 and not soak["engine_exit"]["traceback_on_stderr"]
    assert "stopped: quit asked by pid" in soak["engine_exit"]["summary"]


def test_fds_and_threads_are_back_to_their_start(soak):
    start, end = soak["engine_process"]["start"], soak["engine_process"]["end"]
    more = Counter(end.get("fd_kinds", {})) - Counter(start.get("fd_kinds", {}))
    assert end["fds"] == start["fds"], (f"fds {start['fds']} -> {end['fds']}: more of {dict(more)}; "
                                        f"the new ones, and who else holds them: {end.get('extra_fds')}")
    assert end["os_threads"] == start["os_threads"], (start, end)
    assert soak["midi_timing_error_ms"]["matched"] > 50
    # the timing's reference player played through the same faults, the JACK restart too; unless
    # the soak's own recorder stalled (JACK stopped calling it after the restart: seen in CI twice),
    # whose seconds are reported and left out, not put on the engine or the reference
    reference, bars = soak["midi_timing_error_ms"]["reference"], soak["bars"]
    assert reference["first"]["n"] > 50, (reference, bars)
    assert reference["last"]["n"] > 50 or bars["excluded_recorder_stalled"] > 0, (reference, bars)
    # and each note read on the server's clock too (the frame it landed on), as it was given
    on_server_clock = soak["midi_timing_error_on_server_clock_ms"]
    assert on_server_clock["matched"] >= 0.95 * soak["midi_timing_error_ms"]["matched"], on_server_clock
    # the engine's own MIDI out counts, every window (what it handed over late)
    assert soak["midi_out_by_window"] and all(w[1] > 0 for w in soak["midi_out_by_window"]), soak["midi_out_by_window"]


def test_memory_stays_within_the_hours_bound_from_the_first_seconds(soak):
    """The engine's RssAnon from its first seconds grows by less than the issue's 5 MB for a whole
    hour (the generator takes a full cache's memory before playing: Generator.warm_up); the 3
    minutes hold the first of each fault path, where most of an hour's growth came."""
    growth = soak["engine_rss_anon_growth_kb"]
    samples = soak["engine_rss_anon_shmem_kb_over_time"]
    assert growth["first_at_s"] < 10 and growth["from_first"] < 5 * 1024, (growth, samples)


def silent_bars_and_what_happened_around_them(soak) -> str:
    """What a failing CI run needs to tell the engine's silence from the measuring end's: each
    silent bar whole, the soak's events within 10 s of it and what the recorders said."""
    lines = []
    for bar in soak["bars"]["silent_examples"]:
        near = [e for e in soak["events"] if abs(e[0] - bar["t"]) < 10]
        lines.append(f"silent bar {bar}; events near it: {near}")
    lines.append(f"recorders said: {soak['bars']['recorder_said']}")
    return "\n".join(lines)
