"""The kit's audio and the MIDI notes of the same hits, both on JACK's frame clock: how far each
hit's audio leaves its port before its note. For tests on the shared JACK server (in the test's
process) and on a server of a test's own (``python -m tests.kit_and_notes PATH``, a process of
its own: libjack in one process takes one server)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

#: a recorder of its own process: an audio and a MIDI input on one JACK client, each hit and each
#: note-on stamped with its frame on the server's frame clock (the same count for both)
RECORD_AUDIO_AND_MIDI = r"""
import json, sys, time
import numpy as np, jack
client = jack.Client(sys.argv[1], no_start_server=True)
audio_in, midi_in = client.inports.register("audio"), client.midi_inports.register("midi")
seconds, rate = float(sys.argv[2]), client.samplerate  # at most
audio, first, notes = np.zeros(int(seconds * rate) + 8192, np.float32), [], []
@client.set_process_callback
def process(frames):
    f0 = client.last_frame_time
    first[:] = first or [f0]
    at = (f0 - first[0]) % 2**32  # by frame, not by call: a period JACK skipped leaves its gap
    if at + frames <= audio.size:
        audio[at:at + frames] = audio_in.get_array()
    notes.extend(f0 + offset for offset, data in midi_in.incoming_midi_events()
                 if len(data) == 3 and bytes(data)[0] & 0xF0 == 0x90 and bytes(data)[2])
client.activate()
print("ready", flush=True)
sys.stdin.read()  # until told: its standard input closed
client.deactivate()
loud = np.nonzero(np.abs(audio) > 0.02)[0]
hits = loud[np.concatenate(([True], np.diff(loud) > rate // 10))] if loud.size else loud
print(json.dumps({"audio": [int(first[0] + k) for k in hits], "midi": notes}), flush=True)
"""


def kit_and_notes(path: str, rate: int, hits: int = 4) -> tuple[np.ndarray, int]:
    """Plays ``hits`` closed hats a quarter second apart through the kit (``path``: "jack", the
    engine's client's ports, or a way of PortAudio's mixer: "ring", "ahead", "callback") and the
    MIDI out of the engine's JACK client, on the kit's clock as `play` does; returns each hit's
    note frame less its audio's first frame, and JACK's playback latency of the kit's ports in
    frames (what the kit is handed over early by)."""
    from drummachine.audio.process import AudioProcessSink
    from drummachine.core.events import Event
    from drummachine.core.voices import VOICE_INDEX
    from drummachine.midi.jack_audio import JackAudioPorts
    from drummachine.midi.ports import MidiOutSink

    recorder = subprocess.Popen([sys.executable, "-c", RECORD_AUDIO_AND_MIDI, "kit-and-notes", "30"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sink = midi = None
    try:
        assert recorder.stdout.readline().strip() == "ready", recorder.stderr.read()
        sink = AudioProcessSink(None, rate, blocksize=128, mixing="ring" if path == "jack" else path,
                                jack_ports=JackAudioPorts if path == "jack" else None).wait_ready()
        assert sink.mixing == path, sink.mixing
        midi = MidiOutSink("jack", "kit-and-notes:midi", sink.clock)
        assert midi.connected and midi.ahead_s == 0.0
        port = sink.output_ports[0] if path == "jack" else "PortAudio:out_0"
        subprocess.run(["jack_connect", port, "kit-and-notes:audio"], check=True, timeout=10)
        t0 = round((sink.clock.now() + 0.3) * rate) / rate  # (a hit must come 0.1 s ahead at most)
        # each a little further off the period's grid than the one before
        played = [Event(t0 + k * 0.25 + 0.0003 * k, voice=VOICE_INDEX["closed_hat"], velocity=1.0)
                  for k in range(hits)]
        sink.send(played)
        midi.send(played)
        time.sleep(played[-1].time + 0.2 - sink.clock.now())  # the last hit played out
        out, err = recorder.communicate(timeout=30)
    finally:
        for s in (midi, sink):
            if s is not None:
                s.close()
        if recorder.poll() is None:
            recorder.kill()
    got = json.loads(out.splitlines()[-1])
    kit, notes = np.array(got["audio"]), np.array(got["midi"])
    assert len(kit) == len(notes) == hits, (got, err)
    return notes - kit, round(sink.output_latency_s * rate)


if __name__ == "__main__":  # python -m tests.kit_and_notes WAY[,WAY...] RATE: a JSON line a way
    for way in sys.argv[1].split(","):
        lead, early = kit_and_notes(way, int(sys.argv[2]))
        print(json.dumps({"way": way, "lead": lead.tolist(), "early": early}), flush=True)
