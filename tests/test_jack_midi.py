"""drummachine's own JACK MIDI client (midi/jack_midi.c + jack_midi.py) against a real JACK server
(dummy backend): frame-accurate out, frame-timed in, one client in the graph, ports that come and
go, the server restarted, garbage in. The recorder and sender are JACK-Client ports
(benchmarks/jack_midi_probe.py), not this code."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest

from drummachine.core.events import Event

from .conftest import ROOT, jack_probe, wait_for

probe = jack_probe()

pytestmark = pytest.mark.jack


def own_client():
    from drummachine.midi import jack_midi

    # the README's set-up installs a C compiler, so the install builds it: missing is a failure
    assert jack_midi.available(), f"drummachine's JACK MIDI client is not built: {jack_midi.why_not()}"


def clients_in_graph(prefix="drummachine") -> set[str]:
    ports = subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout.split("\n")
    return {p.split(":")[0] for p in ports if p.startswith(prefix)}


# --- without a server ------------------------------------------------------------------------

def test_alsa_and_the_rtmidi_switch_keep_python_rtmidi():
    from drummachine.midi.ports import own_jack_client

    assert not own_jack_client("alsa")
    code = ("import logging, sys; logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(message)s');"
            "from drummachine.midi.ports import own_jack_client; print(own_jack_client('jack'))")
    env = {**os.environ, "DRUMMACHINE_JACK_MIDI": "rtmidi"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
    assert out.splitlines() == ["MIDI over JACK: python-rtmidi (DRUMMACHINE_JACK_MIDI=rtmidi)", "False"], out


def test_no_jack_server_is_one_clear_line(tmp_path):
    """The library loads without a server; opening a port then is one DrumMachineError line."""
    code = ("from drummachine.midi import jack_midi\n"
            "from drummachine.core.errors import DrumMachineError\n"
            "if not jack_midi.available(): print('unavailable'); raise SystemExit\n"
            "from drummachine.midi.jack_port import JackPort\n"
            "try:\n    JackPort('out', None, 'out').open(strict=True)\n"
            "except DrumMachineError as exc:\n    print('error:', exc)\n"
            "p = JackPort('in', None, 'control in')\n"
            "print(p.open(strict=False), p.message)\n")
    env = {**os.environ, "JACK_DEFAULT_SERVER": f"nobody-here-{os.getpid()}"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() != "unavailable", "drummachine's JACK MIDI client is not built"
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("error: out: JACK: no server to connect to"), r.stdout
    # not strict (a controller): it waits for a server
    assert lines[1].startswith("False control in: JACK: no server") and "will connect" in lines[1], r.stdout


def test_a_ports_latency_longer_than_any_module_is_not_taken(caplog):
    """JACK's figure for the MIDI out's path is taken as it comes, but not past 200 ms (the
    longest ``--midi-latency``): a client's figure gone wrong (PortAudio's JACK devices say
    2**32 - 1 frames for their inputs) would send every note that long early. Said once."""
    from drummachine.midi.jack_port import JackPort

    class Lib:
        frames = 0

        def dm_port_playback_latency(self, handle, slot):
            return self.frames

        def dm_sample_rate(self, handle):
            return 48000

    class Client:
        lib, handle = Lib(), 1

    port = JackPort("out", None, "drums out", client=Client())
    port.slot = 0
    told = []
    port.on_latency = told.append
    for frames in (256, 256, 2**32 - 1, 2**32 - 1, 0):
        Client.lib.frames = frames
        port._read_latency()
    assert told == [256 / 48000, 0.0]
    assert [r.message for r in caplog.records].count(
        "MIDI: drums out: JACK says 4294967295 frames (89478485 ms) from the port on; not taken (more than 200 ms)") == 1


# --- over the test server ----------------------------------------------------------------------

def test_notes_land_on_their_frames(jack_server):
    """Messages due a fraction of a period apart land that many frames apart (rtmidi would write
    them all at the start of the next period), each within a period of its time by its frame (on
    the sample clock), and the panic ends the notes still sounding."""
    own_client()
    from drummachine.midi.ports import MidiOutSink

    rec = probe.RecorderProcess("jm-frames")
    clock = probe.JackClock()
    sent = []
    sink = MidiOutSink("jack", "jm-frames:rx", clock, on_sent=lambda t, m: sent.append((t, m)))
    try:
        assert sink.jack and sink.connected and sink.thread is None
        time.sleep(0.2)
        start = clock.now() + 0.1
        # 40 notes, 0.9 ms apart (a third of a 128-frame period), on 9 voices
        sink.send([Event(start + 0.0009 * k, "note", k % 9, 0.8, k) for k in range(40)])
        time.sleep(0.3)
        sink.send([Event(clock.now() + 0.005, "note", 0, 1.0, 99)])
        time.sleep(0.03)
        sink.panic()  # before its note-off 50 ms later: the callback ends it
        time.sleep(0.2)
        stats = sink.port.stats()
    finally:
        sink.close()
        rec.stop()
    assert stats["written"] == 41 + 41 + 1 and stats["dropped"] == 0 and stats["not_queued"] == 0, stats
    ons = [e for e in rec.events if e[3][0] == 0x99 and e[3][2] > 0]
    # all of them, unless the recorder itself missed a period (a host stall: up to 3 notes in one)
    assert len(ons) == 41 or 0 < rec.skipped and len(ons) >= 41 - 3 * rec.skipped, \
        (stats, len(ons), rec.skipped, [list(e[3]) for e in rec.events])
    # two notes due 0.9 ms apart in one period: that far apart by JACK's clock for its frames
    # (rtmidi writes everything at the start of the period after its send: 0 apart)
    apart = [(b[2] - a[2]) / 1e6 for a, b in zip(ons[:40], ons[1:40]) if a[4] == b[4]]
    assert len(apart) >= 10 and np.median(np.abs(np.array(apart) - 0.0009)) < 50e-6, apart
    due = np.array([t for t, m in sent if m[0] == 0x99 and m[2] > 0][:40])
    frames = np.array([e[0] for e in ons[:40]])
    wall = np.array([e[1] for e in ons[:40]]) / 1e6
    period = 128 / rec.rate
    # the recorder's wake-ups are the dummy driver's, late by a period or more now and then on a
    # loaded host; the frames are the sample clock. A note's time: its frame on the grid anchored
    # at the least late wake-up (where a sound card would play it)
    on_grid = (wall - frames / rec.rate).min() + frames / rec.rate
    assert np.median(np.abs(on_grid - due)) < period, (on_grid - due, wall - due)
    last = ons[-1][3][1]
    offs = [e for e in rec.events if e[3][0] in (0x89, 0x99) and e[3][1] == last and (e[3][0] == 0x89 or e[3][2] == 0)]
    assert offs and offs[-1][0] < ons[-1][0] + 0.04 * rec.rate, "the panic ended the last note before its note-off"
    assert any(e[3] == bytes([0xB9, 123, 0]) for e in rec.events), "all notes off"


def test_notes_go_out_the_modules_latency_early_and_the_clock_on_time(jack_server):
    """``--midi-latency`` 20 ms: each note lands 20 ms before its time by its frame, so a module
    that takes 20 ms sounds it on the beat; the clock pulses due at the same moments land on them."""
    own_client()
    from drummachine.midi.ports import MidiOutSink

    rec = probe.RecorderProcess("jm-early")
    clock = probe.JackClock()
    sink = MidiOutSink("jack", "jm-early:rx", clock, send_clock=True, latency_s=0.020)
    try:
        time.sleep(0.2)
        start = clock.now() + 0.5
        due = [start + 0.05 * k for k in range(20)]
        sink.send([e for k, t in enumerate(due) for e in (Event(t, "note", 0, 0.8, k), Event(t, "clock", step=k))])
        time.sleep(1.8)
    finally:
        sink.close()
        rec.stop()
    ons = [e for e in rec.events if e[3][0] == 0x99 and e[3][2] > 0]
    pulses = [e for e in rec.events if e[3] == bytes([0xF8])]
    # all of them, unless the recorder itself missed periods (a host stall, seen in a full run)
    enough = 17 if not rec.skipped else 6
    assert len(ons) >= enough and len(pulses) >= enough, (len(ons), len(pulses), rec.skipped)

    def on_grid(events):  # each on its frame, the grid anchored at the least late wake-up (as above)
        frames = np.array([e[0] for e in events])
        wall = np.array([e[1] for e in events]) / 1e6
        return (wall - frames / rec.rate).min() + frames / rec.rate

    def nearest(times):
        return np.array([min(due, key=lambda d: abs(d - t)) for t in times])

    notes, ticks = on_grid(ons), on_grid(pulses)
    period = 128 / rec.rate
    early = np.median(notes - nearest(notes + 0.020))
    assert abs(early + 0.020) < period, early
    assert abs(np.median(ticks - nearest(ticks))) < period

def test_notes_go_out_jacks_latency_for_the_port_early(jack_server):
    """A synth client in the graph (jack_midisine: MIDI in, its audio out to the sound card) sounds
    a note the sound card's playback latency after it gets it, and JACK says so for our port (256
    frames at 128 a period, 2 periods): once connected, each note goes out that much earlier by its
    frame, and the sink says its lead changed. Connected only to a recorder, the port's figure is 0."""
    own_client()
    from drummachine.midi.ports import MidiOutSink

    if not shutil.which("jack_midisine"):
        pytest.skip("jack_midisine is not installed (jackd2's example clients)")
    synth = subprocess.Popen(["jack_midisine"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rec = probe.RecorderProcess("jm-graph")
    clock = probe.JackClock()
    sink = MidiOutSink("jack", "jm-graph:rx", clock)
    told = []
    sink.on_ahead = lambda: told.append(sink.ahead_s)
    try:
        wait_for(lambda: "midisine:audio_out" in subprocess.run(["jack_lsp"], capture_output=True,
                                                                   text=True).stdout, 5)
        time.sleep(1.5)
        assert sink.graph_latency_s == 0.0  # the recorder alone: nothing after it
        subprocess.run(["jack_connect", "midisine:audio_out", "system:playback_1"], check=True)
        subprocess.run(["jack_connect", sink.port.full_name, "midisine:midi_in"], check=True)
        wait_for(lambda: told, 5)
        expected = 256 / rec.rate
        assert sink.graph_latency_s == pytest.approx(expected) and told[-1] == pytest.approx(expected)
        start = clock.now() + 0.5
        due = [start + 0.05 * k for k in range(20)]
        sink.send([Event(t, "note", 0, 0.8, k) for k, t in enumerate(due)])
        time.sleep(1.8)
    finally:
        sink.close()
        rec.stop()
        synth.terminate()
        synth.wait(10)
    ons = [e for e in rec.events if e[3][0] == 0x99 and e[3][2] > 0]
    assert len(ons) >= (17 if not rec.skipped else 6), (len(ons), rec.skipped)
    frames = np.array([e[0] for e in ons])
    wall = np.array([e[1] for e in ons]) / 1e6
    notes = (wall - frames / rec.rate).min() + frames / rec.rate  # on the grid, as above
    nearest = np.array([min(due, key=lambda d: abs(d - t - expected)) for t in notes])
    assert abs(np.median(notes - nearest) + expected) < 128 / rec.rate


@pytest.mark.parametrize("given", ["option", "notemap"])
def test_play_hands_notes_out_early_enough_for_the_modules_latency(jack_server, tmp_path, given):
    """`play --midi-latency 100` (or a note map with ``latency_ms = 100``) at 240 bpm: the engine
    hands each step out the 100 ms sooner on top of its margin, so no note reaches the MIDI out
    after the time it must leave at (with the usual margin, half a step and 30 ms, 61 ms here,
    every one would: counted "late" by the client)."""
    from .conftest import run_cli

    log = tmp_path / "play.log"
    notemap = tmp_path / "module.toml"
    notemap.write_text('name = "a slow module"\nlatency_ms = 100\n')
    latency = ["--midi-latency", "100"] if given == "option" else ["--notemap", notemap]
    rec = probe.RecorderProcess("jm-late")
    try:
        r = run_cli("play", "--headless", "--fake-model", "--no-audio", "--midi-out", "jm-late:rx", *latency,
                    "--style", "rock", "--bpm", "240", "--duration", "4", "--log", log, timeout=60)
    finally:
        rec.stop()
    assert r.returncode == 0, r.stderr
    text = log.read_text()
    whose = "--midi-latency" if given == "option" else "a slow module's latency_ms"
    assert f"MIDI out: each note sent 100.0 ms before its time, for the module ({whose})" in text, text
    stats = json.loads(text.split("MIDI out (own JACK client): ", 1)[1].splitlines()[0])
    ons = [e for e in rec.events if e[3][0] == 0x99 and e[3][2] > 0]
    assert len(ons) >= 12 and stats["late"] == 0, (stats, len(ons))

def test_midi_in_arrives_at_its_frames_time(jack_server):
    """Three messages in one period at frames 0, 40 and 100 come to the handler 40 and 100 frames'
    time apart, on the engine's clock, within two periods of the sender's own time for them."""
    own_client()
    from drummachine.midi.midi_in import MidiInput

    tx = probe.Sender("jm-timed")
    clock = probe.JackClock()
    got = []
    inp = MidiInput("jack", "jm-timed:tx", lambda m, t: got.append((m, t)), clock)
    try:
        assert inp.jack and inp.connected, inp.message
        for k in range(5):
            tx.send([(0, bytes([0xB0, 20, k])), (40, bytes([0xB0, 21, k])), (100, bytes([0xB0, 22, k]))])
            time.sleep(0.05)
        assert wait_for(lambda: len(got) == 15, 2.0), got
    finally:
        inp.close()
        tx.close()
    rate = tx.rate
    for k in range(5):
        t = {m[1]: when for m, when in got if m[2] == k}
        assert t[21] - t[20] == pytest.approx(40 / rate, abs=40e-6) and t[22] - t[20] == pytest.approx(100 / rate, abs=40e-6)
    sent = {(d[1], d[2]): wall / 1e6 for _, wall, _, d in tx.sent}
    errors = [when - sent[(m[1], m[2])] for m, when in got]
    assert max(abs(e) for e in errors) < 2 * 128 / rate + 0.002, errors


def test_one_client_for_notes_clock_and_controller(jack_server):
    own_client()
    from drummachine.live.session import Options, Session

    tx = probe.Sender("jm-pedal")
    rec = probe.RecorderProcess("jm-one")
    try:
        opts = Options(audio=False, midi_out="jm-one:rx", midi_in="jm-pedal:tx", clock_out=True, fake_model=True,
                       style="rock", bpm=120)
        with Session(opts) as session:
            assert session.midi.jack and session.inputs[0].connected and session.midi.connected
            assert clients_in_graph() == {"drummachine"}, subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout
            ports = subprocess.run(["jack_lsp", "drummachine"], capture_output=True, text=True).stdout.split("\n")
            assert {"drummachine:drums out", "drummachine:control in"} <= set(ports), ports
            session.start_threads()
            session.command("start")
            time.sleep(0.5)
            tx.send([(0, bytes([0xB0, 112, 127]))])  # CC 112: fill
            assert wait_for(lambda: session.engine.conductor.fill_requests, 1.0), "the fill cue reached the conductor"
            time.sleep(0.3)
        assert clients_in_graph() == set(), "the client closes with its last port"
    finally:
        tx.close()
        rec.close()
    kinds = {e[3][0] for e in rec.events}
    assert 0x99 in kinds and 0xF8 in kinds and 0xFA in kinds, "notes and clock through the one port"


def test_ports_unplugged_and_back(jack_server):
    """The recorder and the controller go away and come back (under the same names): each is
    connected again within the watch's second or two; a port that went and came back between two
    looks is connected again too (the connection went with it)."""
    own_client()
    from drummachine.core.transport import MonotonicClock
    from drummachine.midi.midi_in import MidiInput
    from drummachine.midi.ports import MidiOutSink

    clock = MonotonicClock()
    rec, tx = probe.RecorderProcess("jm-plug"), probe.Sender("jm-pedal2")
    got = []
    sink = MidiOutSink("jack", "jm-plug:rx", clock)
    inp = MidiInput("jack", "jm-pedal2:tx", lambda m, t: got.append(m), clock)
    try:
        assert sink.connected and inp.connected
        rec.close()
        tx.close()
        assert wait_for(lambda: not sink.connected and not inp.connected, 2.5)
        assert "disconnected" in sink.port.message
        sink.send([Event(clock.now() + 0.01, "note", 0, 1.0, 0)])  # to nowhere: no harm
        rec, tx = probe.RecorderProcess("jm-plug"), probe.Sender("jm-pedal2")
        assert wait_for(lambda: sink.connected and inp.connected, 2.5), (sink.port.message, inp.message)
        sink.send([Event(clock.now() + 0.01, "note", 1, 1.0, 1)])
        tx.send([(0, bytes([0xB0, 7, 1]))])
        assert wait_for(lambda: [0xB0, 7, 1] in got and any(e[3][0] == 0x99 for e in rec.events), 1.0)
        # gone and back, likely within one look of the watch (a port that is there at both looks)
        rec.close()
        rec = probe.RecorderProcess("jm-plug")
        assert wait_for(lambda: subprocess.run(["jack_lsp", "-c", "jm-plug:rx"], capture_output=True,
                                               text=True).stdout.count("drummachine:drums out") == 1, 2.5)
        sink.send([Event(clock.now() + 0.01, "note", 2, 1.0, 2)])
        assert wait_for(lambda: any(e[3][0] == 0x99 for e in rec.events), 1.0)
    finally:
        sink.close()
        inp.close()
        rec.close()
        tx.close()


def test_garbage_in_is_dropped_and_the_controller_stays_deaf_to_nothing(jack_server):
    """A sender writes raw JACK events: running status, truncated messages, unknown status bytes,
    real-time bytes, SysEx cut off (F0 without F7), a 2,000-byte event, in bursts; a known CC
    every tenth. Every known CC comes through, the reader never faults, the SysEx and active
    sensing are left out by the callback, the oversized event is dropped and counted."""
    own_client()
    import random

    from drummachine.core.transport import MonotonicClock
    from drummachine.midi.midi_in import MidiInput

    rng = random.Random(15)
    garbage = [bytes([0x40, 0x41]), bytes([0x90]), bytes([0xF4, 1]), bytes([0xF5]), bytes([0xFD]), bytes([0xFE]),
               bytes([0xF0, 0x7E]), bytes([0xF7]), bytes([0xF0] + [0x11] * 300 + [0xF7]), bytes([0xC0]),
               bytes([0x90, 200, 300 % 256]), bytes([0xFF] * 5)]
    marker = bytes([0xBF, 80, 1])
    tx = probe.Sender("jm-garbage")
    # what a JACK MIDI input gets from this sender on this host at this moment (a loaded host can
    # leave a period of the sender's out before any input sees it)
    ref = probe.RecorderProcess("jm-garbage-ref")
    subprocess.run(["jack_connect", tx.name, ref.name], check=True)
    got = []
    inp = MidiInput("jack", "jm-garbage:tx", lambda m, t: got.append(bytes(m)), MonotonicClock())
    try:
        assert inp.connected
        markers = 0
        for n in range(1000):
            batch = [(None, rng.choice(garbage) if rng.random() < 0.8 else bytes(rng.randrange(256) for _ in
                                                                                   range(rng.randrange(1, 8))))]
            if n % 10 == 0:
                batch.append((None, marker))
                markers += 1
            tx.send(batch)
            if n % 50 == 0:
                time.sleep(0.01)
        tx.send([(0, bytes([0x90] + [0x40] * 1999))])
        assert wait_for(lambda: not tx.queue, 3.0)
        time.sleep(0.1)
        stats = inp.port.stats()
    finally:
        inp.close()
        tx.close()
        ref.close()
    reference = sum(1 for e in ref.events if e[3] == marker)
    assert reference >= 0.9 * markers and got.count(marker) >= min(reference, markers - 1), (got.count(marker), reference)
    assert inp.faults.count == 0
    assert not any(m[0] in (0xF0, 0xF7, 0xFE) for m in got)
    assert stats["ignored"] >= 100 and stats["in_dropped"] == 1, stats
    assert all(isinstance(b, int) and 0 <= b <= 255 for m in got for b in m)


def test_a_note_too_late_to_be_played_is_left_out_not_burst(jack_server):
    """After the server stalled, the notes queued meanwhile would all go at once at the first
    period: a note-on more than 100 ms late is left out (counted stale); one a little late still
    goes, at once; its note-off goes whatever."""
    own_client()
    from drummachine.midi.ports import MidiOutSink

    rec = probe.RecorderProcess("jm-stale")
    clock = probe.JackClock()
    sink = MidiOutSink("jack", "jm-stale:rx", clock)
    try:
        now = clock.now()
        sink.send([Event(now - 2.0, "note", 0, 1.0, 0), Event(now - 0.5, "note", 1, 1.0, 1),
                   Event(now - 0.01, "note", 3, 1.0, 2)])  # kick and snare seconds late, a hat 10 ms
        assert wait_for(lambda: any(e[3][0] == 0x99 and e[3][2] > 0 for e in rec.events), 3.0)
        time.sleep(0.3)  # the note-offs (50 ms after each note)
        stats = sink.port.stats()
    finally:
        sink.close()
        rec.stop()
    played = [e[3][1] for e in rec.events if e[3][0] == 0x99 and e[3][2] > 0]
    assert len(played) == 1, rec.events  # the hat's note only
    assert stats["stale"] == 2 and stats["written"] >= 1, stats


def test_bad_messages_out_are_refused_and_a_flood_waits_or_is_counted(jack_server):
    """What the out ring refuses (no status byte, empty, SysEx, over 6 bytes) is counted; a flood
    of notes far ahead fills the callback's heap and the ring, the rest is counted not queued; a
    panic still gets through at once (it is not queued behind them) and drops them."""
    own_client()
    from drummachine.midi.ports import MidiOutSink

    rec = probe.RecorderProcess("jm-flood")
    clock = probe.JackClock()
    sink = MidiOutSink("jack", "jm-flood:rx", clock)
    try:
        now = clock.now()
        assert sink.port.send([(now, b"\x01\x02"), (now, b""), (now, b"\xF0\x01\xF7"), (now, bytes(7) + b"\x90")],
                              clock.now()) == 0
        assert sink.port.dropped == 4
        sink.send([Event(now + 10.0 + k * 1e-4, "note", k % 9, 0.5, k) for k in range(6000)])  # 12,000 messages
        time.sleep(0.1)
        stats = sink.port.stats()
        # the callback's heap holds 4,096, the ring about 5,000 more: the rest is counted
        assert stats["pending"] == 4096 and stats["not_queued"] > 4 + 1000 and stats["written"] == 0, stats
        sink.send([Event(clock.now() + 0.01, "note", 0, 1.0, 0)])  # queued before the panic: dropped by it
        sink.panic()
        time.sleep(0.1)
        assert sink.port.stats()["pending"] == 0
        sink.send([Event(clock.now() + 0.01, "note", 3, 1.0, 0)])
        deadline = time.monotonic() + 3.0  # a stalled host processes the period late, not never
        while time.monotonic() < deadline and not any(e[3][0] == 0x99 and e[3][2] > 0 for e in rec.events):
            time.sleep(0.05)
        time.sleep(0.1)  # and nothing more comes after it
    finally:
        sink.close()
        rec.stop()
    notes = [e[3] for e in rec.events if e[3][0] == 0x99 and e[3][2] > 0]
    assert len(notes) == 1 and any(e[3] == bytes([0xB9, 123, 0]) for e in rec.events), rec.events


# --- a server of its own, restarted --------------------------------------------------------------

@pytest.mark.slow
def test_the_jack_server_restarted_and_everything_reconnected(tmp_path):
    """`play --headless` on a JACK server of its own, MIDI out virtual with a recorder connected to
    it from outside, a controller on --midi-in; the server stops and starts again: the client
    comes back, the recorder (a new process on the new server) is connected again to the virtual
    port as before, the controller's cue arrives, and the play ends normally."""
    if not shutil.which("jackd"):
        pytest.skip("jackd is not installed")
    from drummachine.midi import jack_midi

    assert jack_midi.available(), f"drummachine's JACK MIDI client is not built: {jack_midi.why_not()}"
    name = f"jmrestart{os.getpid()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "DRUMMACHINE_MIDI_API": "jack"}
    jackd_log = open(tmp_path / "jackd.log", "w")

    def start_jackd():
        proc = subprocess.Popen(["jackd", "-d", "dummy", "-r", "48000", "-p", "128"], env=env,
                                stdout=jackd_log, stderr=subprocess.STDOUT)
        r = subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True, text=True)
        assert "available" in r.stdout, r.stdout + r.stderr
        return proc

    def start_recorder(k):
        p = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "jack_midi_probe.py"), "record", "jm-vrec",
                              str(tmp_path / f"rec{k}.txt")], env=env, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        return p

    def start_sender():
        p = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "jack_midi_probe.py"), "send", "jm-ctl"],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        return p

    def connected():
        return "drummachine:out" in subprocess.run(["jack_lsp", "-c", "jm-vrec:rx"], env=env, capture_output=True,
                                                   text=True).stdout

    jackd = start_jackd()
    log = tmp_path / "play.log"
    play = rec = ctl = None
    try:
        rec, ctl = start_recorder(0), start_sender()
        play = subprocess.Popen([sys.executable, "-m", "drummachine", "play", "--headless", "--fake-model", "--no-audio",
                                 "--midi-virtual", "--midi-in", "jm-ctl:tx", "--duration", "40", "--log", str(log)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: "drummachine:out" in subprocess.run(["jack_lsp"], env=env, capture_output=True,
                                                                    text=True).stdout, 10)
        subprocess.run(["jack_connect", "drummachine:out", "jm-vrec:rx"], env=env, check=True)
        time.sleep(2.0)  # the watch notes the connection
        jackd.send_signal(signal.SIGTERM)  # the server goes, its clients with it
        jackd.wait(10)
        rec.terminate()
        ctl.stdin.close()
        for p in (rec, ctl):
            p.wait(10)
        time.sleep(1.5)
        jackd = start_jackd()
        rec, ctl = start_recorder(1), start_sender()
        assert wait_for(connected, 6), "the virtual port's connection came back"
        assert wait_for(lambda: "drummachine:control in" in subprocess.run(
            ["jack_lsp", "-c", "jm-ctl:tx"], env=env, capture_output=True, text=True).stdout, 4)
        # CC 112: fill. Pressed again if no cue came of it within 2 s: on a loaded host the first
        # press once never reached the engine (not explained; the connection was listed). How many
        # presses it took is in the failure's message.
        presses = 0
        while presses < 3 and (presses == 0 or not wait_for(lambda: "cue fill" in log.read_text(), 2.0)):
            ctl.stdin.write("176 112 127\n")
            ctl.stdin.flush()
            presses += 1
        wait_for(lambda: "cue fill" in log.read_text(), 2.0)
        time.sleep(2.0)  # notes after the cue: 1.5 s recorded none once in 6 runs on a loaded host
        ctl.stdin.close()
        ctl.wait(10)
        rec.terminate()
        rec.wait(10)
        play.send_signal(signal.SIGTERM)
        _, err = play.communicate(timeout=30)
    finally:
        for p in (play, rec, ctl):
            if p is not None and p.poll() is None:
                p.kill()
        jackd.terminate()
        jackd.wait(10)
    assert play.returncode == 0, err
    text = log.read_text()
    assert "MIDI over JACK: drummachine's own client" in text and "Traceback" not in text, text
    assert "MIDI: the JACK server" in text and "open again on the new server" in text, text
    assert "out -> jm-vrec:rx connected again" in text, text
    assert "cue fill" in text, (f"{presses} presses", text)
    events = probe.read_recording(tmp_path / "rec1.txt")
    assert sum(1 for e in events if e[3][0] == 0x99) >= 5, "notes on the new server"


@contextmanager
def stallable_jackd(name: str):
    """A JACK server of the test's own (dummy backend) that the test may stall with SIGSTOP: (its
    process, the environment naming it); let go on and stopped at the end whatever happened."""
    if not shutil.which("jackd"):
        pytest.skip("jackd is not installed")
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "DRUMMACHINE_MIDI_API": "jack"}
    jackd = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p", "128"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        r = subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True, text=True)
        assert "available" in r.stdout, r.stdout + r.stderr
        yield jackd, env
    finally:
        jackd.send_signal(signal.SIGCONT)
        jackd.terminate()
        try:
            jackd.wait(10)
        except subprocess.TimeoutExpired:
            jackd.kill()
            jackd.wait()


def play_headless(env, log, *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "drummachine", "play", "--headless", "--fake-model", "--no-audio",
                             "--midi-virtual", "--log", str(log), *more], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.jack
@pytest.mark.slow
@pytest.mark.waiting
def test_quitting_while_the_jack_server_stopped_answering_ends_in_seconds(tmp_path):
    """A JACK server that stalls (here SIGSTOPped while `play` plays) answers no request: libjack's
    client close waits for its answer with no time limit, and quitting hung for good, SIGTERM too.
    The close is waited for 2 s: `play` ends at its --duration a few seconds later, with its
    summary and exit code 0, and says what it left to the server."""
    log = tmp_path / "play.log"
    with stallable_jackd(f"jmstall{os.getpid()}") as (jackd, env):
        play = play_headless(env, log, "--duration", "4")
        try:
            assert wait_for(lambda: log.exists() and "playing bar" in log.read_text(), 20), "play did not start"
            jackd.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                _, err = play.communicate(timeout=25)
            except subprocess.TimeoutExpired:
                pytest.fail(f"play still running {time.monotonic() - stopped:.0f} s after the server stalled; "
                            f"log:\n{log.read_text()[-2000:]}")
            took = time.monotonic() - stopped
        finally:
            if play.poll() is None:
                play.kill()
    text = log.read_text()
    assert play.returncode == 0, err
    assert took < 4 + 2 + 5, text  # the rest of --duration, the close's 2 s, and a loaded host's slack
    assert "did not answer within 2 s as client drummachine closed" in text, text
    assert "played " in text and "stopped: --duration 4 s is over" in text, text


@pytest.mark.jack
@pytest.mark.slow
@pytest.mark.waiting
def test_play_started_on_a_jack_server_that_does_not_answer_plays_and_connects_when_it_does(tmp_path):
    """`play` started while the JACK server is stalled (SIGSTOPped): libjack's open waited for
    good, and `play` never started. Now it waits 5 s, says the server does not answer, plays on by
    its clock, and opens its client and writes its notes once the server answers."""
    log = tmp_path / "play.log"
    with stallable_jackd(f"jmstart{os.getpid()}") as (jackd, env):
        jackd.send_signal(signal.SIGSTOP)
        play = play_headless(env, log, "--duration", "12")
        try:
            assert wait_for(lambda: log.exists() and "first beat after" in log.read_text(), 20), \
                log.read_text() if log.exists() else "no log"
            jackd.send_signal(signal.SIGCONT)
            _, err = play.communicate(timeout=40)
        finally:
            if play.poll() is None:
                play.kill()
    text = log.read_text()
    assert play.returncode == 0, err
    assert "the server does not answer (waited 5 s)" in text, text
    assert "the JACK server answered at last: client open" in text, text
    stats = json.loads(text.split("MIDI out (own JACK client): ")[1].splitlines()[0])
    assert stats["written"] > 0, stats  # notes out once the server answered


@pytest.mark.jack
@pytest.mark.slow
@pytest.mark.waiting
def test_ports_and_doctor_on_a_jack_server_that_does_not_answer_say_so_and_end(tmp_path):
    """`ports` and `doctor` ask PortAudio, JACK-Client and python-rtmidi, which wait for a stalled
    server with no time limit (rtmidi holding the interpreter's lock): both hung for good. Now the
    server is asked first, through drummachine's own client, for 5 s."""
    runs = {}
    with stallable_jackd(f"jmports{os.getpid()}") as (jackd, env):
        answering = subprocess.run([sys.executable, "-m", "drummachine", "ports"], env=env, capture_output=True,
                                   text=True, timeout=60)
        assert answering.returncode == 0 and "system:capture_1" in answering.stdout, answering.stdout
        jackd.send_signal(signal.SIGSTOP)
        for command in ("ports", "doctor"):
            t = time.monotonic()
            runs[command] = subprocess.run([sys.executable, "-m", "drummachine", command], env=env,
                                           capture_output=True, text=True, timeout=60)
            runs[command].took = time.monotonic() - t
    ports, doctor = runs["ports"], runs["doctor"]
    assert ports.returncode == 0 and ports.took < 20, (ports.took, ports.stdout)
    assert "the JACK server does not answer (waited 5 s): restart it" in ports.stdout, ports.stdout
    assert "MIDI out (jack): unavailable (the JACK server does not answer" in ports.stdout, ports.stdout
    assert doctor.returncode == 1 and doctor.took < 20, (doctor.took, doctor.stdout)
    assert "FIX  audio: the JACK server does not answer (waited 5 s)" in doctor.stdout, doctor.stdout
    assert "Traceback" not in ports.stderr + doctor.stderr
