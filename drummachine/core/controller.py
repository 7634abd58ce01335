"""MIDI control: controller presets turn incoming messages into commands; a MIDI clock follower.

One mechanism: a controller preset (TOML, ``presets/controllers``) binds CCs, notes and program
changes to the bindable commands of ``commands.COMMANDS``. The default preset answers the CCs
that pedal drum machines already use (so a foot controller set up for one works here), and
stays underneath any other preset and the user's learned mappings. MIDI Start/Stop/Continue
start and stop; a program change picks a song from the setlist.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from drummachine.core import commands
from drummachine.core.commands import NUMBER, WHOLE, Command
from drummachine.core.errors import DrumMachineError
from drummachine.core.toml_files import parse_toml

log = logging.getLogger("drummachine")
START, CONTINUE, STOP, CLOCK, SPP = 0xFA, 0xFB, 0xFC, 0xF8, 0xF2
CC, NOTE_ON, NOTE_OFF, PROGRAM = 0xB0, 0x90, 0x80, 0xC0
PRESS, ANY = "press", "any"  #: a mapping fires on a press (CC >= 64, note on), or on every message
FROM_CC = "cc"  #: a mapping's value taken from the message's data byte
HOLD_SECONDS = 0.6
DOUBLE_SECONDS = 0.35


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
        return "fill" if self.press == "start_fill" else self.press  # playing: a single press fills


@dataclass(frozen=True)
class Mapping:
    kind: str  #: cc, note, program
    number: int
    action: str  #: a bindable command
    value: object = None  #: the command's value; FROM_CC: the message's data byte
    fire: str = PRESS


@dataclass
class ControllerPreset:
    name: str
    channel: int | None
    switches: dict[tuple[str, int], FootSwitch] = field(default_factory=dict)
    mappings: list[Mapping] = field(default_factory=list)

    def over(self, under: "ControllerPreset") -> "ControllerPreset":
        """This preset on top of ``under``: where both bind a control, this one wins."""
        mine = set(self.switches) | {(m.kind, m.number) for m in self.mappings}
        return ControllerPreset(self.name, self.channel if self.channel is not None else under.channel,
                                {**{k: s for k, s in under.switches.items() if k not in mine}, **self.switches},
                                list(self.mappings) + [m for m in under.mappings if (m.kind, m.number) not in mine])


def command_for(action: str, value=None, byte: int | None = None) -> Command:
    """The command an action sends: its value as bound, or taken from the data byte (a knob spans
    its range with it; FROM_CC passes it on)."""
    spec = commands.spec(action)
    if byte is not None and (spec.knob or value == FROM_CC):
        return commands.from_data_byte(action, byte)
    return commands.parse(action, value)


class PresetControl:
    """A controller preset at work: messages (with their clock time) in, commands out."""

    def __init__(self, preset: ControllerPreset, playing=lambda: True):
        self.preset = preset
        self.playing = playing

    def handle(self, message: list[int], t: float) -> list[Command]:
        if not message:
            return []
        status = message[0]
        if status in (START, CONTINUE):
            return [Command("start")]
        if status == STOP:
            return [Command("stop")]
        if status >= 0xF0 or status < 0x80:
            return []
        if self.preset.channel and (status & 0x0F) != self.preset.channel - 1:
            return []
        kind = status & 0xF0
        if kind == PROGRAM and len(message) >= 2:
            return [commands.parse("program", message[1] & 0x7F)]
        if kind not in (CC, NOTE_ON, NOTE_OFF) or len(message) < 3:
            return []
        key = ("cc" if kind == CC else "note", message[1])
        byte = message[2] & 0x7F
        pressed = byte >= 64 if kind == CC else (kind == NOTE_ON and byte > 0)
        sw = self.preset.switches.get(key)
        if sw is not None:
            names = sw.down(t, self.playing()) if pressed else sw.up(t)
            return [Command(n) for n in names]
        out = []
        for m in self.preset.mappings:
            if (m.kind, m.number) != key:
                continue
            continuous = kind == CC and (commands.COMMANDS[m.action].knob and m.value is None or m.value == FROM_CC)
            if not (pressed or continuous or (m.fire == ANY and kind == CC)):
                continue
            try:
                out.append(command_for(m.action, m.value, byte if kind == CC else None))
            except DrumMachineError as exc:  # checked when the preset loaded; never raised into a MIDI thread
                log.warning("controller %s: %s", self.preset.name, exc)
        return out

    def tick(self, t: float) -> list[Command]:
        return [Command(n) for sw in self.preset.switches.values() for n in sw.tick(t)]


def controller_from_toml(text: str, path="<controller>") -> ControllerPreset:
    """Parse and check a controller preset (schema in docs/presets.md): every action is a bindable
    command and every value one that command takes."""
    data = parse_toml(text, path)

    def where(table, index, key):
        line = _table_line(text, table, index, key)
        return f"{path}:{line} ({table}[{index}].{key})" if line else f"{path} ({table}[{index}].{key})"

    for key in data:
        if key not in ("name", "channel", "switch", "map"):
            raise DrumMachineError(f"{path} ({key})", "unknown key; allowed: channel, map, name, switch")
    channel = data.get("channel", 0)
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel <= 16:
        raise DrumMachineError(f"{path} (channel)", f"{channel!r}; allowed: 0 (any) or 1-16")
    seen: dict[tuple[str, int], str] = {}

    def control(table, i, raw):
        keys = [k for k in ("cc", "note", "program") if k in raw]
        if len(keys) != 1:
            raise DrumMachineError(where(table, i, "cc"), "give exactly one of cc, note, program")
        k = keys[0]
        n = raw[k]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 127:
            raise DrumMachineError(where(table, i, k), f"{n!r}; allowed: 0-127")
        if (k, n) in seen:
            raise DrumMachineError(where(table, i, k), f"{k} {n} is already mapped ({seen[(k, n)]})")
        seen[(k, n)] = f"{table}[{i}]"
        return k, n

    def action(table, i, key, value, optional=False):
        if value is None and optional:
            return None
        if value not in commands.BINDABLE:
            raise DrumMachineError(where(table, i, key), f"unknown action {value!r}; allowed: "
                                   f"{', '.join(commands.BINDABLE)}")
        if table == "switch":
            try:
                commands.parse(value)
            except DrumMachineError:
                raise DrumMachineError(where(table, i, key), f"{value} needs a value: bind it with [[map]]") from None
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
            if key not in ("cc", "note", "program", "action", "value", "fire"):
                raise DrumMachineError(where("map", i, key),
                                       "unknown key; allowed: cc, note, program, action, value, fire")
        k, n = control("map", i, raw)
        name = action("map", i, "action", raw.get("action"))
        value = raw.get("value")
        if isinstance(value, float) and not math.isfinite(value):  # TOML has inf and nan; no command takes them
            raise DrumMachineError(where("map", i, "value"), f"{value!r} is not a number a command takes")
        spec = commands.COMMANDS[name]
        if value == FROM_CC:
            if spec.value.kind not in (NUMBER, WHOLE):
                raise DrumMachineError(where("map", i, "value"), f'"cc" passes the data byte on: {name} takes '
                                       f"{spec.value.describe()}")
        elif not (spec.knob and value is None and k == "cc"):
            try:
                commands.parse(name, value)
            except DrumMachineError as exc:
                raise DrumMachineError(where("map", i, "value" if value is not None else "action"), exc.what) from None
        fire = raw.get("fire", PRESS)
        if fire not in (PRESS, ANY):
            raise DrumMachineError(where("map", i, "fire"), f"{fire!r}; allowed: press, any")
        mappings.append(Mapping(k, n, name, value, fire))
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
