"""The kit's audio watchdog (``live.audio_output.AudioOutput.watch``): its logic with a stand-in
sink. The real mixer, killed and restarted on a JACK server, is tests/test_jack.py's and the soak's."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from drummachine.live.audio_output import AudioOutput


class StandInSink:
    """Plays (its callbacks count up), its JACK ports' latency changes once, and its first look
    at them fails."""

    def __init__(self):
        self.looks = 0
        self.output_latency_s, self.output_latency_from, self.output_ports = 0.0053, "JACK", ()
        self.opened, self.alive, self.cue, self.restarts = True, True, False, 0
        self.started = time.monotonic()

    @property
    def callbacks(self) -> int:
        return int((time.monotonic() - self.started) * 375)

    def keep_up(self) -> bool:
        self.looks += 1
        if self.looks == 1:
            raise OSError("a look that fails")
        if self.looks == 2:
            self.output_latency_s = 0.0107  # routed through something slower
            return True
        return False

    def restart_if_gone(self) -> bool:
        return False

    def jack_ports_there(self) -> bool:
        return False


def test_the_watch_outlives_a_failing_look_and_takes_a_new_output_latency():
    sink, stop = StandInSink(), threading.Event()
    caught, margins = [], iter([0.030, 0.035])
    engine = SimpleNamespace(caught=lambda loop, what: caught.append((loop, what)), margin=0.0)
    watch = threading.Thread(target=AudioOutput(SimpleNamespace(), []).watch,
                             args=(sink, stop, engine, lambda: next(margins)), daemon=True)
    watch.start()
    deadline = time.monotonic() + 10
    while sink.looks < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = watch.is_alive()
    stop.set()
    watch.join(2)
    assert caught == [("audio-watchdog", "watch")]  # counted with the engine's faults
    assert alive and sink.looks >= 3  # and the watch looked again
    assert engine.margin == 0.030  # the hand-out margin reckoned again for the new latency


class StandInSinkAwayFromJack(StandInSink):
    """A mixer that cannot start while its JACK ports are away; they come back 0.4 s after the
    first try."""

    def __init__(self):
        super().__init__()
        self.tries: list[float] = []
        self.alive = False

    def keep_up(self) -> bool:
        return False

    def jack_ports_there(self) -> bool:
        return bool(self.tries) and time.monotonic() > self.tries[0] + 0.4

    def restart_if_gone(self) -> bool:
        from drummachine.core.errors import DrumMachineError

        self.tries.append(time.monotonic())
        if not self.jack_ports_there():
            raise DrumMachineError("audio", "JACK: drummachine's client has no audio ports (no server?)")
        self.alive = True
        return True


def test_a_mixer_is_tried_again_as_soon_as_the_jack_ports_are_back():
    """The JACK server back: the kit within a fraction of a second of its ports, not at the next
    try 2 s later (2.1 s after the server in the hour's soak before)."""
    sink, stop = StandInSinkAwayFromJack(), threading.Event()
    caught = []
    engine = SimpleNamespace(caught=lambda loop, what: caught.append(what), margin=0.0)
    watch = threading.Thread(target=AudioOutput(SimpleNamespace(), []).watch,
                             args=(sink, stop, engine, lambda: 0.03), daemon=True)
    watch.start()
    deadline = time.monotonic() + 10
    while not sink.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    watch.join(2)
    assert sink.alive and len(sink.tries) == 2 and not caught
    assert sink.tries[1] - sink.tries[0] < 0.4 + 0.5, sink.tries  # not AUDIO_RETRY_S's 2 s
