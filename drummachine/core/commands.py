"""Every command the engine and the session take: one table, everything else derives from it.

A command has a name, a value (its type and range, or none), when it takes effect, who handles
it (the engine or the session around it), and whether a musician can bind it to a control. The
engine's dispatch, the controller presets' actions and their checking, MIDI learn's list, the
UI's keys and help, and the knobs' ranges are all read from ``COMMANDS``. A bad value is refused
here, at the boundary (``parse``), with one line naming the command: never in a real-time loop.

Adding a command: a row here, and its handler (``Engine._on_<name>`` or the session's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drummachine.core.conditioning import CYMBALS
from drummachine.core.errors import DrumMachineError
from drummachine.core.follow import MODES as FOLLOW_MODES, BandReading
from drummachine.core.transport import BPM_RANGE, FEELS
from drummachine.core.voices import N_VOICES, VOICE_INDEX, VOICE_NAMES

# when a command takes effect
NOW = "now"  #: at once (what has been handed to the outputs plays as it was)
STEP = "next step"  #: from the first step not yet handed to the outputs
BEAT = "next beat"
BAR = "next bar"  #: on the next bar line (with less than a beat left: the bar line after)
PHRASE = "phrase end"  #: on the bar line that ends the 4-bar phrase
SONG_END = "song end"  #: when the song playing has ended

ENGINE, SESSION = "engine", "session"

# value kinds
NONE, NUMBER, WHOLE, CHOICE, VOICE, FLAG, SONG, CLOCK, TEXT, BAND = (
    "none", "number", "whole number", "choice", "voice", "on/off", "song", "clock", "text", "band reading")


@dataclass(frozen=True)
class Value:
    """What a command's value may be. ``optional``: None is allowed (and means ``default``)."""

    kind: str = NONE
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    default: object = None

    def describe(self) -> str:
        if self.kind in (NUMBER, WHOLE):
            return f"{self.kind} {self.lo:g}..{self.hi:g}" + (" or none" if self.optional else "")
        if self.kind == CHOICE:
            return ", ".join(self.choices) + (" or none" if self.optional else "")
        if self.kind == VOICE:
            return "a voice: " + ", ".join(VOICE_NAMES) + " (or 1-9)"
        return self.kind


@dataclass(frozen=True)
class Spec:
    """One command."""

    name: str
    help: str
    value: Value = field(default_factory=Value)
    when: str = NOW
    target: str = ENGINE
    bindable: bool = True  #: a controller preset, MIDI learn or a UI key may send it
    knob: bool = False  #: continuous: a CC's 0..127 spans the value's range
    knob_step: float = 0.0  #: one UI key press turns the knob by this much
    needs_playing: bool = False  #: ignored while the engine is stopped
    #: a level of the audio out (a bus, the click), not the model's: a CC spans its range as a
    #: knob's does, but it is kept out of KNOBS (the UI's knob row, styles.toml's keys)
    level: bool = False


def _knob(name, help, lo, hi, step, when=STEP):
    return Spec(name, help, Value(NUMBER, lo, hi), when, knob=True, knob_step=step)


def _level(name, help):
    """A level of the audio out, 0..1, from the mixer's next block (a CC's 0..127 spans it)."""
    return Spec(name, help, Value(NUMBER, 0.0, 1.0), NOW, knob=True, knob_step=0.05, level=True)


SECTION_NUMBERS = (1, 64)
COMMANDS: dict[str, Spec] = {s.name: s for s in (
    Spec("start", "start playing (a restart plays the song from the top)"),
    Spec("stop", "stop, all notes off"),
    Spec("toggle", "start or stop"),
    Spec("start_fill", "start when stopped, else a fill", when=STEP),
    Spec("fill", "fill the rest of the bar (with less than a beat left, through the next bar too)", when=STEP,
         needs_playing=True),
    Spec("next", "next section; value N: go to section N", Value(WHOLE, *SECTION_NUMBERS, optional=True), BAR,
         needs_playing=True),
    Spec("next_phrase", "next section at the end of the phrase", when=PHRASE, needs_playing=True),
    Spec("outro", "an ending fill, a final hit on the one, then stop", when=BAR, needs_playing=True),
    Spec("drop", "the next bar plays only kick and hats, then back", when=BAR, needs_playing=True),
    Spec("accent", "a crash and kick now", when=STEP, needs_playing=True),
    Spec("tap", "tap the quarter notes: 3 taps set the tempo, the first is the one (following the band's "
         "beat: its beat is where you tapped)", when=BAR,
         needs_playing=True),
    Spec("pause", "pause / unpause (back in on the next beat)", Value(FLAG, optional=True), BEAT,
         needs_playing=True),
    Spec("keep", "keep this section's pattern: it comes back the same every time", needs_playing=True),
    Spec("regenerate", "a new pattern for this section from the next bar", when=BAR, needs_playing=True),
    Spec("half_time", "half time on / off", when=BAR, needs_playing=True),
    Spec("double_time", "double time on / off", when=BAR, needs_playing=True),
    Spec("feel", "half, normal or double time", Value(CHOICE, choices=tuple(FEELS)), BAR, needs_playing=True),
    Spec("tempo", "tempo in bpm", Value(NUMBER, *BPM_RANGE), BAR),
    Spec("tempo_up", "tempo up by the value in bpm (default 1)", Value(NUMBER, 0.1, 127.0, optional=True, default=1.0),
         STEP, needs_playing=True),
    Spec("tempo_down", "tempo down by the value in bpm (default 1)",
         Value(NUMBER, 0.1, 127.0, optional=True, default=1.0), STEP, needs_playing=True),
    _knob("intensity", "intensity: how far above or below the song's own (-1..1)", -1.0, 1.0, 0.05),
    Spec("intensity_up", "intensity up by the value (default 0.1)", Value(NUMBER, 0.01, 1.0, optional=True,
                                                                          default=0.1), STEP),
    Spec("intensity_down", "intensity down by the value (default 0.1)", Value(NUMBER, 0.01, 1.0, optional=True,
                                                                              default=0.1), STEP),
    _knob("density", "busier or sparser than the model's choice", -1.0, 1.0, 0.1),
    _knob("swing", "delay the off 16ths (1: a triplet feel)", 0.0, 1.0, 0.1, NOW),
    _knob("humanize", "the drummer's micro-timing, scaled (0: on the grid)", 0.0, 2.0, 0.1, NOW),
    _knob("temperature", "how adventurous the model's choices are", 0.0, 2.0, 0.1),
    Spec("cymbal", "what keeps time: hats, open_hats, ride or auto; none: the next of hats, ride, auto",
         Value(CHOICE, choices=tuple(CYMBALS), optional=True), BAR, needs_playing=True),
    Spec("mute", "mute / unmute a voice", Value(VOICE)),
    Spec("solo", "solo / unsolo a voice", Value(VOICE)),
    _level("main_level", "the main bus's level, to the PA (CC 108 in the pedal drum machine CC map)"),
    _level("cue_level", "the cue bus's level, to the in-ears: drums, click and cues (CC 109)"),
    _level("click_level", "the click's level on the cue bus (a song's own: its click_level)"),
    Spec("click", "the click on the cue bus on / off (the count-in clicks either way)", Value(FLAG, optional=True)),
    Spec("next_song", "the next song of the setlist (after the one playing has ended)", target=SESSION,
         when=SONG_END),
    Spec("previous_song", "the previous song of the setlist", target=SESSION, when=SONG_END),
    # not for binding: what the system itself sends
    Spec("song", "play this song (while stopped)", Value(SONG), bindable=False),
    Spec("follow", "MIDI clock in: the leader's tempo and next beat", Value(CLOCK), bindable=False,
         needs_playing=True),
    Spec("follow_band", "follow the band (`play --listen`): off, tempo, beat or all (with dynamics); "
         "none: the next of these", Value(CHOICE, choices=FOLLOW_MODES, optional=True)),
    Spec("band", "the listening process: the band's tempo, next beat, confidence and loudness", Value(BAND),
         bindable=False),
    Spec("program", "program change: song N+1 of the setlist", Value(WHOLE, 0, 127), target=SESSION,
         bindable=False, when=SONG_END),
    Spec("learn", "MIDI learn: bind the next control moved to this action", Value(TEXT, optional=True),
         target=SESSION, bindable=False),
)}
BINDABLE: tuple[str, ...] = tuple(n for n, s in COMMANDS.items() if s.bindable)
#: the model's knobs (the UI's knob row, styles.toml); the audio out's levels are not among them
KNOBS: dict[str, Spec] = {n: s for n, s in COMMANDS.items() if s.knob and not s.level}


@dataclass(frozen=True)
class Command:
    """A checked request: its value is of the right kind and in range (see ``parse``)."""

    name: str
    value: object = None

    @property
    def spec(self) -> Spec:
        return COMMANDS[self.name]


def spec(name: str) -> Spec:
    try:
        return COMMANDS[name]
    except KeyError:
        raise DrumMachineError(f"command {name}", f"unknown; allowed: {', '.join(COMMANDS)}") from None


def parse(name: str, value=None) -> Command:
    """``name`` and ``value`` checked against the table: a Command, or DrumMachineError in one line."""
    s = spec(name)
    v = s.value
    where = f"command {name}"
    if value is None:
        if v.kind == NONE or v.optional:
            return Command(name, v.default)
        raise DrumMachineError(where, f"needs a value: {v.describe()}")
    if v.kind == NONE:
        raise DrumMachineError(where, f"takes no value; got {value!r}")
    if v.kind in (NUMBER, WHOLE):
        # NaN and the infinities are not numbers a command takes (int(inf) raised OverflowError:
        # TOML and JSON both have inf; found by the fuzz suite)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or \
                value in (float("inf"), float("-inf")):
            raise DrumMachineError(where, f"{value!r} is not a number; allowed: {v.describe()}")
        if v.kind == WHOLE and int(value) != value:
            raise DrumMachineError(where, f"{value!r} is not a whole number; allowed: {v.describe()}")
        if not v.lo <= value <= v.hi:
            raise DrumMachineError(where, f"{value:g} is out of range; allowed: {v.describe()}")
        return Command(name, int(value) if v.kind == WHOLE else float(value))
    if v.kind == CHOICE:
        if value not in v.choices:
            raise DrumMachineError(where, f"{value!r} is not allowed; allowed: {v.describe()}")
        return Command(name, value)
    if v.kind == VOICE:
        return Command(name, voice_index(value, where))
    if v.kind == FLAG:
        if not isinstance(value, bool):
            raise DrumMachineError(where, f"{value!r}; allowed: true or false")
        return Command(name, value)
    if v.kind == SONG:
        if not hasattr(value, "sections") or not getattr(value, "sections", None):
            raise DrumMachineError(where, f"{type(value).__name__} is not a song")
        return Command(name, value)
    if v.kind == CLOCK:
        ok = isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], (int, float)) and \
            BPM_RANGE[0] <= value[0] <= BPM_RANGE[1] and (value[1] is None or isinstance(value[1], (int, float)))
        if not ok:
            raise DrumMachineError(where, f"{value!r}; allowed: (bpm, time of the next beat or None)")
        return Command(name, (float(value[0]), None if value[1] is None else float(value[1])))
    if v.kind == BAND:
        if not isinstance(value, BandReading):
            raise DrumMachineError(where, f"{type(value).__name__} is not a reading of the band")
        return Command(name, value)
    if v.kind == TEXT:
        if not isinstance(value, str):
            raise DrumMachineError(where, f"{value!r} is not text")
        return Command(name, value)
    raise AssertionError(v.kind)  # pragma: no cover - every kind is handled above


def voice_index(value, where: str = "voice") -> int:
    """A voice given by name, by number 1-9 (as on a pedal or a key), or as an index 0-8 (an int)."""
    if isinstance(value, str):
        if value in VOICE_INDEX:
            return VOICE_INDEX[value]
        if value.isdigit() and 1 <= int(value) <= N_VOICES:
            return int(value) - 1
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < N_VOICES:
        return value
    raise DrumMachineError(where, f"{value!r} is not a voice; allowed: {', '.join(VOICE_NAMES)}")


def from_data_byte(name: str, byte: int) -> Command:
    """A command whose value comes from a MIDI data byte (0..127): a knob spans its range; a
    number is the byte itself (outside the range: none, i.e. the default, where that is allowed)."""
    s = spec(name)
    v = s.value
    if s.knob:
        return Command(name, round(v.lo + (v.hi - v.lo) * byte / 127.0, 3))
    if v.kind in (NUMBER, WHOLE) and (v.lo <= byte <= v.hi):
        return parse(name, byte)
    return parse(name, None)


def ranges(names) -> dict[str, tuple[float, float]]:
    """Value ranges of number commands, for preset checking and displays."""
    return {n: (COMMANDS[n].value.lo, COMMANDS[n].value.hi) for n in names}
