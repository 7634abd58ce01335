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
        self.opened, self.alive = True, True
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
