"""MIDI control: foot controllers' CC commands to engine commands, and a MIDI clock follower.

The default map answers the CCs that pedal drum machines already use (so a foot controller set
up for one works here): CC 110 accent hit, 111 pause/unpause, 112 fill, 113 transition to the
next section (a value of 1..N goes to section N), 115 outro, 117 tap tempo, 80/81 tempo up/down
by the value in bpm, 82/83 half/double time (toggles), plus MIDI Start/Stop/Continue and
program change to pick a song from the setlist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

START, CONTINUE, STOP, CLOCK, SPP = 0xFA, 0xFB, 0xFC, 0xF8, 0xF2


@dataclass(frozen=True)
class Binding:
    kind: str  #: "cc", "note", "program"
    number: int  #: CC or note number (ignored for program)
    action: str


DEFAULT_BINDINGS = (
    Binding("cc", 110, "accent"),
    Binding("cc", 111, "pause"),
    Binding("cc", 112, "fill"),
    Binding("cc", 113, "next"),
    Binding("cc", 115, "outro"),
    Binding("cc", 117, "tap"),
    Binding("cc", 80, "tempo_up"),
    Binding("cc", 81, "tempo_down"),
    Binding("cc", 82, "half_time"),
    Binding("cc", 83, "double_time"),
    Binding("program", 0, "song"),
)


class ControlMap:
    """Turns incoming MIDI messages into (command, value) pairs for the engine."""

    def __init__(self, bindings=DEFAULT_BINDINGS, channel: int | None = None):
        self.bindings = {(b.kind, b.number): b.action for b in bindings}
        self.channel = channel  # 1-16, or None for any
        self.feel = "normal"

    def handle(self, message: list[int]) -> list[tuple[str, object]]:
        if not message:
            return []
        status = message[0]
        if status == START:
            return [("start", None)]
        if status == STOP:
            return [("stop", None)]
        if status == CONTINUE:
            return [("start", None)]
        if status >= 0xF0:
            return []
        if self.channel is not None and (status & 0x0F) != self.channel - 1:
            return []
        kind = status & 0xF0
        if kind == 0xB0 and len(message) >= 3:
            action = self.bindings.get(("cc", message[1]))
            return self._action(action, message[2]) if action else []
        if kind == 0x90 and len(message) >= 3 and message[2] > 0:
            action = self.bindings.get(("note", message[1]))
            return self._action(action, message[2]) if action else []
        if kind == 0xC0 and len(message) >= 2:
            return [("program", message[1])] if ("program", 0) in self.bindings else []
        return []

    def _action(self, action: str, value: int) -> list[tuple[str, object]]:
        if action == "tempo_up":
            return [("tempo_nudge", float(max(1, value)))]
        if action == "tempo_down":
            return [("tempo_nudge", -float(max(1, value)))]
        if action in ("half_time", "double_time"):
            want = "half" if action == "half_time" else "double"
            self.feel = "normal" if self.feel == want else want
            return [(self.feel, None)]
        if action == "next":
            return [("next", value - 1 if 1 <= value <= 64 else None)]
        if action == "pause":
            return [("pause", None)]
        return [(action, None)]


class ClockFollower:
    """Follows a MIDI clock (24 pulses per quarter): a tempo smoothed over the last two bars of
    pulses (a least-squares line through their times), so a jittery USB clock does not make the
    drums stagger; and the time of the next quarter note on that line, for phase."""

    def __init__(self, window: int = 96):
        self.window = window
        self.times: list[float] = []
        self.running = False
        self.position = 0  # pulses since start

    def pulse(self, t: float) -> None:
        self.times.append(t)
        if len(self.times) > self.window:
            del self.times[: len(self.times) - self.window]
        self.position += 1

    def start(self, position_pulses: int = 0) -> None:
        self.times.clear()
        self.position = position_pulses
        self.running = True

    def stop(self) -> None:
        self.running = False

    def fit(self) -> tuple[float, float] | None:
        """(seconds per pulse, time of pulse index 0 of the window) or None before 12 pulses."""
        n = len(self.times)
        if n < 12:
            return None
        x = np.arange(n, dtype=np.float64)
        y = np.asarray(self.times)
        slope, intercept = np.polyfit(x, y, 1)
        return float(slope), float(intercept)

    def bpm(self) -> float | None:
        f = self.fit()
        return None if f is None else 60.0 / (f[0] * 24.0)

    def next_beat(self, after: float) -> float | None:
        """Time of the first quarter-note pulse after ``after``, on the smoothed line."""
        f = self.fit()
        if f is None:
            return None
        slope, intercept = f
        n = len(self.times)
        first_index = self.position - n  # absolute pulse number of window index 0
        k = int(np.ceil((after - intercept) / slope))
        while (first_index + k) % 24:
            k += 1
        return intercept + k * slope
