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

from drummachine.core.conditioning import CYMBALS

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
    """Follows a MIDI clock (24 pulses per quarter): a tempo smoothed over the last bar of pulses
    (a line through their times), so a jittery USB clock does not make the drums stagger; and the
    time of the next quarter note on that line, for phase.

    Pulses delivered late in a burst (the sender or this machine stalled for a few tens of ms) sit
    well above the line; the fit drops them and fits again, so one stall does not bend the tempo.
    """

    #: a pulse this much later than the line (beyond the jitter's own spread) counts as delayed
    LATE_SECONDS = 0.002

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
        keep = np.ones(n, dtype=bool)
        slope, intercept = np.polyfit(x, y, 1)
        for _ in range(3):
            residual = y - (slope * x + intercept)
            spread = 1.4826 * float(np.median(np.abs(residual[keep] - np.median(residual[keep]))))
            late = residual > np.median(residual[keep]) + max(3.0 * spread, self.LATE_SECONDS)
            if not late.any() or (~late).sum() < 12 or np.array_equal(~late, keep):
                break
            keep = ~late
            slope, intercept = np.polyfit(x[keep], y[keep], 1)
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


# --- foot switches and controller maps from TOML ----------------------------------------------

ACTIONS = ("start", "stop", "toggle", "start_fill", "fill", "next", "outro", "accent", "tap", "pause", "keep",
           "regenerate", "half_time", "double_time", "intensity_up", "intensity_down", "tempo_up", "tempo_down",
           "next_song", "previous_song", "song", "intensity", "density", "swing", "humanize", "temperature",
           "cymbal")
CONTINUOUS = {"intensity": (-1.0, 1.0), "density": (-1.0, 1.0), "swing": (0.0, 1.0), "humanize": (0.0, 2.0),
              "temperature": (0.0, 2.0)}
HOLD_SECONDS = 0.6
DOUBLE_SECONDS = 0.35


@dataclass
class FootSwitch:
    """One switch with gestures: press, hold (>= 0.6 s) and double press (within 0.35 s).

    A press is only known to be single once the double-press window has passed; ``tick`` (called
    with the engine's clock) resolves it. Press while stopped always starts at once.
    """

    press: str = "start_fill"
    hold: str | None = "next"
    double: str | None = "outro"
    down_at: float | None = None
    released_at: float | None = None
    held_fired: bool = False

    def down(self, t: float, playing: bool) -> list[str]:
        if not playing and self.press in ("start_fill", "start", "toggle"):
            self.down_at, self.released_at, self.held_fired = t, None, True  # consumed: no hold/double
            return ["start"]
        if self.released_at is not None and self.double and t - self.released_at <= DOUBLE_SECONDS:
            self.released_at, self.down_at, self.held_fired = None, t, True
            return [self.double]
        self.down_at, self.held_fired = t, False
        return []

    def up(self, t: float) -> list[str]:
        if self.down_at is None:
            return []
        fired = self.held_fired
        self.down_at = None
        if fired:
            return []
        if self.double:
            self.released_at = t  # single or double: wait and see
            return []
        return [self._single()]

    def tick(self, t: float) -> list[str]:
        out = []
        if self.down_at is not None and not self.held_fired and self.hold and t - self.down_at >= HOLD_SECONDS:
            self.held_fired = True
            out.append(self.hold)
        if self.released_at is not None and t - self.released_at > DOUBLE_SECONDS:
            self.released_at = None
            out.append(self._single())
        return out

    def _single(self) -> str:
        return "fill" if self.press == "start_fill" else self.press


@dataclass(frozen=True)
class Mapping:
    kind: str  #: cc, note, program
    number: int
    action: str
    value: float | str | None = None  #: a number, or a CYMBALS name for the cymbal action


@dataclass
class ControllerPreset:
    name: str
    channel: int | None
    switches: dict[tuple[str, int], FootSwitch]
    mappings: list[Mapping]


def _action(cmd: str, value, cc_value: int | None = None) -> list[tuple[str, object]]:
    """An action name (and its value) as engine commands."""
    if cmd in CONTINUOUS and cc_value is not None:
        lo, hi = CONTINUOUS[cmd]
        v = lo + (hi - lo) * cc_value / 127.0
        return [("intensity_to" if cmd == "intensity" else cmd, round(v, 3))]
    simple = {"start_fill": "fill", "half_time": "half", "double_time": "double"}
    if cmd == "intensity_up":
        return [("intensity", float(value or 0.1))]
    if cmd == "intensity_down":
        return [("intensity", -float(value or 0.1))]
    if cmd == "tempo_up":
        return [("tempo_nudge", float(value or 1.0))]
    if cmd == "tempo_down":
        return [("tempo_nudge", -float(value or 1.0))]
    if cmd in ("next_song", "previous_song"):
        return [(cmd, None)]
    return [(simple.get(cmd, cmd), value)]


class PresetControl:
    """A controller preset at work: messages (with their clock time) in, engine commands out."""

    def __init__(self, preset: ControllerPreset, playing=lambda: True):
        self.preset = preset
        self.playing = playing

    def handle(self, message: list[int], t: float) -> list[tuple[str, object]]:
        if not message:
            return []
        status = message[0]
        if status in (START, CONTINUE):
            return [("start", None)]
        if status == STOP:
            return [("stop", None)]
        if status >= 0xF0:
            return []
        if self.preset.channel and (status & 0x0F) != self.preset.channel - 1:
            return []
        kind = status & 0xF0
        if kind == 0xC0 and len(message) >= 2:
            return [("program", message[1])]
        if kind in (0xB0, 0x90, 0x80) and len(message) >= 3:
            key = ("cc" if kind == 0xB0 else "note", message[1])
            pressed = message[2] >= 64 if kind == 0xB0 else (kind == 0x90 and message[2] > 0)
            sw = self.preset.switches.get(key)
            if sw is not None:
                names = sw.down(t, self.playing()) if pressed else sw.up(t)
                return [c for n in names for c in _action(n, None)]
            out = []
            for m in self.preset.mappings:
                if (m.kind, m.number) == key:
                    if m.action in CONTINUOUS and kind == 0xB0:
                        out += _action(m.action, m.value, message[2])
                    elif pressed:
                        out += _action(m.action, m.value)
            return out
        return []

    def tick(self, t: float) -> list[tuple[str, object]]:
        return [c for sw in self.preset.switches.values() for n in sw.tick(t) for c in _action(n, None)]


def controller_from_toml(text: str, path="<controller>") -> ControllerPreset:
    """Parse a controller preset (schema in presets/controllers/README.md)."""
    from drummachine.core.errors import DrumMachineError
    from drummachine.core.toml_files import parse_toml

    data = parse_toml(text, path)

    def where(table, index, key):
        line = _table_line(text, table, index, key)
        return f"{path}:{line} ({table}[{index}].{key})" if line else f"{path} ({table}[{index}].{key})"

    for key in data:
        if key not in ("name", "channel", "switch", "map"):
            raise DrumMachineError(f"{path} ({key})", "unknown key; allowed: channel, map, name, switch")
    channel = data.get("channel", 0)
    if not isinstance(channel, int) or not 0 <= channel <= 16:
        raise DrumMachineError(f"{path} (channel)", f"{channel!r}; allowed: 0 (any) or 1-16")
    seen: dict[tuple[str, int], str] = {}

    def control(table, i, raw):
        keys = [k for k in ("cc", "note", "program") if k in raw]
        if len(keys) != 1:
            raise DrumMachineError(where(table, i, "cc"), "give exactly one of cc, note, program")
        k = keys[0]
        n = raw[k]
        if not isinstance(n, int) or not 0 <= n <= 127:
            raise DrumMachineError(where(table, i, k), f"{n!r}; allowed: 0-127")
        if (k, n) in seen:
            raise DrumMachineError(where(table, i, k), f"{k} {n} is already mapped ({seen[(k, n)]})")
        seen[(k, n)] = f"{table}[{i}]"
        return k, n

    def action(table, i, key, value, optional=False):
        if value is None and optional:
            return None
        if value not in ACTIONS:
            raise DrumMachineError(where(table, i, key), f"unknown action {value!r}; allowed: {', '.join(ACTIONS)}")
        return value

    switches = {}
    for i, raw in enumerate(data.get("switch", [])):
        for key in raw:
            if key not in ("cc", "note", "press", "hold", "double"):
                raise DrumMachineError(where("switch", i, key), "unknown key; allowed: cc, note, press, hold, double")
        k, n = control("switch", i, raw)
        switches[(k, n)] = FootSwitch(action("switch", i, "press", raw.get("press", "start_fill")),
                                      action("switch", i, "hold", raw.get("hold"), True),
                                      action("switch", i, "double", raw.get("double"), True))
    mappings = []
    for i, raw in enumerate(data.get("map", [])):
        for key in raw:
            if key not in ("cc", "note", "program", "action", "value"):
                raise DrumMachineError(where("map", i, key), "unknown key; allowed: cc, note, program, action, value")
        k, n = control("map", i, raw)
        name = action("map", i, "action", raw.get("action"))
        value = raw.get("value")
        if name == "cymbal":
            if value is not None and value not in CYMBALS:
                raise DrumMachineError(where("map", i, "value"), f"{value!r}; allowed: {', '.join(CYMBALS)}")
        elif value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise DrumMachineError(where("map", i, "value"), f"{value!r}; allowed: a number")
        mappings.append(Mapping(k, n, name, value))
    return ControllerPreset(str(data.get("name", path)), channel or None, switches, mappings)


def _table_line(text: str, table: str, index: int, key: str) -> int | None:
    """Line of ``key`` in the index-th [[table]] of a TOML text (for error messages)."""
    counts: dict[str, int] = {}
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[[") and stripped.endswith("]]"):
            name = stripped[2:-2].strip()
            counts[name] = counts.get(name, -1) + 1
            current = (name, counts[name])
            continue
        if current == (table, index) and stripped.startswith(key) and stripped[len(key):].lstrip().startswith("="):
            return number
    return None
