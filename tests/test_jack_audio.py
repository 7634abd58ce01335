"""The kit through drummachine's own JACK client: the ring the mixer process writes
(``audio.jack_ring``) and the client's audio ports that play it (``midi.jack_audio``). The ring's
bookkeeping alone, then on a real JACK server: every hit on its frame, and a mixer SIGKILLed
without the JACK graph changing (PortAudio's client went with its process: jackd blamed 2.6
periods a kill in the hour's soak)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from drummachine.audio import jack_ring
from drummachine.core.errors import DrumMachineError
from drummachine.core.events import Event
from drummachine.core.voices import VOICE_INDEX

from .conftest import wait_for

pytestmark = pytest.mark.skipif(not jack_ring.available(), reason="drummachine's JACK client is not built here")
RATE = 48000


def test_the_ring_takes_what_fits_and_skips_what_a_dead_mixer_left():
    ring = jack_ring.AudioRing(2, capacity=1024)
    try:
        frames = np.arange(512 * 2, dtype=np.float32).reshape(512, 2)
        assert ring.write(frames) and ring.write(frames) and ring.space() == 0
        assert not ring.write(frames[:1])  # full: nothing written, the count unchanged
        assert ring.state()["write"] == 1024 and ring.state()["read"] == 0
        # a new mixer: what waits was mixed for a time gone, and is not played
        assert ring.skip() == 1024 and ring.state()["skip_to"] == 1024
        # the mixer process's view (a process of its own: it forgets the block for Python's tracker)
        seen = subprocess.run([sys.executable, "-c", "from drummachine.audio.jack_ring import AudioRing; "
                               f"r = AudioRing(name={ring.name!r}); print(r.channels, r.capacity, r.state()['write'])"],
                              capture_output=True, text=True, timeout=30)
        assert seen.stdout.split() == ["2", "1024", "1024"], seen.stderr
        assert not ring.state()["ports"]  # no JACK client plays it: a mixer refuses to start on it
    finally:
        ring.close()
    with pytest.raises(DrumMachineError, match="no ring"):
        jack_ring.AudioRing(2, capacity=1000)  # not a power of two
    with pytest.raises(DrumMachineError, match="the JACK ring is gone"):  # a mixer after the engine went
        jack_ring.open_for_mix("psm_no_such_ring", RATE, 2)


def onsets(x: np.ndarray, threshold: float = 0.02, gap: int = RATE // 10) -> np.ndarray:
    """The first frame of each hit: loud after at least ``gap`` quiet frames."""
    loud = np.nonzero(np.abs(x) > threshold)[0]
    return loud[np.concatenate(([True], np.diff(loud) > gap))] if loud.size else loud


def record(port: str, seconds: float, path) -> np.ndarray:
    from drummachine.audio.wavfile import read_wav

    subprocess.run(["jack_rec", "-f", str(path), "-d", str(seconds), port], check=True, capture_output=True,
                   timeout=30)
    audio, rate = read_wav(path)
    assert rate == RATE
    return audio if audio.ndim == 1 else audio[:, 0]


def hits_every_quarter_second(sink, first_in: float, count: int) -> None:
    t0 = round((sink.clock.now() + first_in) * RATE) / RATE
    sink.send([Event(t0 + k * 0.25, voice=VOICE_INDEX["closed_hat"], velocity=1.0) for k in range(count)])


def test_hits_play_on_their_frames_and_a_killed_mixer_changes_nothing_in_the_graph(jack_server, tmp_path):
    # the shared server: libjack in one process takes one server, and this process has clients there
    from drummachine.audio.process import AudioProcessSink
    from drummachine.midi.jack_audio import JackAudioPorts

    sink = AudioProcessSink(None, RATE, blocksize=128, jack_ports=JackAudioPorts).wait_ready()
    try:
        assert sink.mixing == "jack" and sink.output_ports == ("drummachine:out_0", "drummachine:out_1")
        # JACK's two periods from the ports to the (dummy) sound card, read from our own ports
        assert (sink.output_latency_from, round(sink.output_latency_s * RATE)) == ("JACK", 256)
        graph = subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True, timeout=10).stdout
        assert "drummachine:out_0\n   system:playback_1" in graph, graph
        hits_every_quarter_second(sink, 0.8, 8)  # jack_rec takes a moment to start: 6 or more recorded
        found = onsets(record("drummachine:out_0", 3.0, tmp_path / "a.wav"))
        assert 6 <= len(found) <= 8, found
        # the ring keeps every frame in order: each hit exactly a quarter second after the one before
        assert np.abs(np.diff(found) - RATE // 4).max() <= 2, np.diff(found)

        sink.proc.kill()
        sink.proc.wait()
        time.sleep(0.3)
        assert subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True, timeout=10).stdout == graph
        assert sink.restart_if_gone() and sink.mixing == "jack"
        hits_every_quarter_second(sink, 0.8, 6)
        found = onsets(record("drummachine:out_0", 2.5, tmp_path / "b.wav"))
        assert 4 <= len(found) <= 6 and np.abs(np.diff(found) - RATE // 4).max() <= 2, found
        assert subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True, timeout=10).stdout == graph
        assert wait_for(lambda: sink.callbacks > 0, 2)

        # JACK's latency for the ports, read again once a second: unrouted, the hits need not go
        # early (nothing plays them); routed again, the two periods to the sound card once more
        for k in (0, 1):
            subprocess.run(["jack_disconnect", f"drummachine:out_{k}", f"system:playback_{k + 1}"], check=True)
        assert sink.keep_up() and sink.output_latency_s == 0.0
        assert not sink.keep_up()  # said once
        for k in (0, 1):
            subprocess.run(["jack_connect", f"drummachine:out_{k}", f"system:playback_{k + 1}"], check=True)
        ahead = sink.ahead_s
        assert sink.keep_up() and round(sink.output_latency_s * RATE) == 256
        assert sink.ahead_s == pytest.approx(ahead + 256 / RATE)
    finally:
        sink.close()
    gone = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=10).stdout
    assert "drummachine:" not in gone, gone  # the ports (and the client with its last port) went with the sink


@pytest.mark.parametrize("path", ["jack", "ring", "ahead"])  # "callback": the same stamp as "ahead"
def test_the_kit_and_the_midi_notes_of_a_hit_leave_together(jack_server, path):
    """The kit and the MIDI out on the engine's one JACK client, given the same hits: on JACK's
    frame clock each hit's audio leaves its port exactly JACK's playback latency before its note
    (the kit is handed over that early to sound at the sound card on the beat; the MIDI port, to
    a recorder, has none), so the PA's kit and a module's kit sound together. On every way of
    mixing (the kit sounded a period behind its notes on all of them: each mixer's clock stamped
    the frame after the period's last at the period's start). 1,024 frames: test_jack.py."""
    from .kit_and_notes import kit_and_notes

    lead, early = kit_and_notes(path, RATE)
    assert early == 256, early  # the dummy server's two periods at 128 frames
    # the engine's client places the kit and the notes by one period start (JACK's DLL): within
    # 0.5 ms; PortAudio's ways time a period by its callback's wake-up, late by the host's latency
    # in waking JACK's thread, so their kit leaves that much early: within 1.5 ms (a period before)
    assert np.abs(lead - early).max() <= (24 if path == "jack" else 72), lead
