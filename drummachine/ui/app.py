"""The stage UI (Textual): a view of the engine's snapshots and a keyboard/mouse to cue it.

The UI never touches the engine's state: it sends commands through a client (the engine in its
own process on stage, attached through its socket; in this process for tests) and draws the
newest snapshot 30 times a second. The quit key stops the engine; ctrl+d only detaches, and so
does a crash: the groove goes on (see live.host).
"""

from __future__ import annotations

import os
import time

from rich.markup import escape
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.keys import format_key
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList, Static

from drummachine.core.commands import BINDABLE, COMMANDS, KNOBS as KNOB_SPECS
from drummachine.core.snapshot import Snapshot
from drummachine.core.voices import HITS, VELOCITIES, VOICES

KNOBS = tuple(KNOB_SPECS)
KNOB_RANGE = {k: (s.value.lo, s.value.hi) for k, s in KNOB_SPECS.items()}
KNOB_STEP = {k: s.knob_step for k, s in KNOB_SPECS.items()}
#: key -> the command it sends (its help text is the command's own)
CUE_KEYS = (("space", "toggle"), ("f", "fill"), ("n", "next"), ("o", "outro"), ("a", "accent"), ("t", "tap"),
            ("x", "drop"), ("p", "pause"), ("k", "keep"), ("c", "cymbal"), ("r", "regenerate"), ("h", "half_time"),
            ("d", "double_time"), ("b", "follow_band"), ("i", "click"))
SHADE = ("grey23", "green4", "green3", "yellow3", "red1")
SOLO_KEYS = ("exclamation_mark", "at", "number_sign", "dollar_sign", "percent_sign", "circumflex_accent",
             "ampersand", "asterisk", "left_parenthesis")


FOOTER_KEYS = ("space", "f", "n", "o", "a", "t")
LABELS = {"toggle": "Start/stop", "next": "Next section", "cymbal": "Hats/ride", "follow_band": "Follow band",
          "click": "Click (in-ears)"}


def label(command: str) -> str:
    """A command's short name for the footer."""
    return LABELS.get(command, command.replace("_", " ").capitalize())


def key_display(keys: str) -> str:
    """A binding's keys as a musician reads them: "]" for right_square_bracket, "?" for question_mark."""
    return ",".join(format_key(k) for k in keys.split(","))


def help_of(action: str) -> str:
    """The command table's help for a cue('name') action (nothing for the UI's own actions)."""
    if action.startswith("cue('"):
        return COMMANDS[action[5:-2]].help
    return ""


def bar(value: float, lo: float, hi: float, width: int = 10) -> str:
    filled = round((value - lo) / (hi - lo) * width) if hi > lo else 0
    return "█" * max(0, min(width, filled)) + "░" * (width - max(0, min(width, filled)))


class Transport(Static):
    def show(self, s: Snapshot) -> None:
        state = "⏸ PAUSED" if s.paused else ("▶ PLAYING" if s.playing else "■ STOPPED")
        feel = {0.5: " half", 2.0: " double"}.get(s.feel, "")
        self.update(Text.assemble((f" {state} ", "bold reverse" if s.playing else "bold"),
                                  f"  {s.bpm:6.1f} bpm{feel}   bar {s.bar + 1}:{s.step // 4 + 1}   {s.style}   "
                                  f"intensity {s.intensity:.2f}{'  FILL' if s.fill else ''}"
                                  f"{'   ' + s.cymbal.replace('_', ' ') if s.cymbal != 'auto' else ''}   ",
                                  (s.song, "italic")))


class Song(Static):
    def show(self, s: Snapshot) -> None:
        t = Text(" ")
        q = s.queued
        for i, name in enumerate(s.sections):
            style = "bold black on green3" if i == s.section_index else (
                "black on yellow3" if q is not None and q.target == name else "grey70")
            t.append(f" {name} ", style)
            t.append(" ")
        if q is not None:
            t.append(f"  → {q.target or q.what} at bar {q.at_bar + 1}", "bold yellow3")
        if s.locked:
            t.append("  [kept]", "cyan")
        self.update(t)


#: how each follow state is drawn: following is the normal case, holding needs the eye
FOLLOW_STYLE = {"following": "bold black on green3", "holding": "bold black on yellow3",
                "listening": "bold black on grey70", "off": "bold grey70 on grey23"}
#: the listening input's states the musician has to act on (its send too hot, its cable or its
#: interface gone, or not there yet) and its listening process starting again, shown in place of
#: its level (4 letters: the widest line stays within 80 columns): state words -> (shown, style)
INPUT_SHOWN = {"clipping": ("CLIP", "bold white on red3"), "input gone": ("GONE", "bold white on red3"),
               "not there": ("GONE", "bold white on red3"), "listener stopped": ("DOWN", "bold black on yellow3")}


class Band(Static):
    """Following the band (``play --listen``): the state, the band's tempo, how far its beat is
    from ours, the tracker's confidence and what its dynamics add to the intensity. Hidden until
    there is something to follow (a machine not listening needs no such line), then kept: a
    musician who switched following off sees that it is off."""

    DEFAULT_CSS = "Band { height: 1; display: none; }"

    def show(self, s: Snapshot) -> None:
        if not (self.display or s.follow_mode != "off" or s.follow_state != "off" or s.band_bpm > 0):
            return
        self.display = True
        self.update(band_text(s))


def band_text(s: Snapshot) -> Text:
    """The follow line (a pure function of the snapshot)."""
    state = s.follow_state if s.follow_mode != "off" else "off"
    t = Text(" ")
    t.append(f" BAND {state.upper()} ", FOLLOW_STYLE.get(state, "bold"))
    t.append(f" {s.follow_mode}", "bold")
    if s.band_bpm > 0:  # 80 columns hold the whole line
        t.append(f"  {s.band_bpm:.1f} bpm  phase {s.band_phase_ms:+.0f} ms")
    else:
        t.append("  not heard yet", "grey62")
    confidence_style = "bold" if s.band_confidence >= 0.5 else ("yellow3" if s.band_confidence >= 0.3 else "red1")
    t.append("  conf ")
    t.append(f"{s.band_confidence:.2f}", confidence_style)
    if s.follow_mode == "all":
        t.append(f"  dyn {s.band_intensity:+.2f}")
    shown = INPUT_SHOWN.get(s.band_input)
    if shown is not None:
        t.append("  in ")
        t.append(*shown)
    elif s.band_level_db is not None:  # where to set --listen-gate
        t.append(f"  in {max(-99.0, s.band_level_db):.0f}dB")
    return t


class Buses(Static):
    """The audio out's levels and the click: hidden while there is no cue bus and both levels are
    full (nothing was changed, nothing to see), then kept, as the band line is."""

    DEFAULT_CSS = "Buses { height: 1; display: none; }"

    def show(self, s: Snapshot) -> None:
        if not (self.display or s.cue_bus or s.main_level != 1.0 or s.cue_level != 1.0):
            return
        self.display = True
        self.update(buses_text(s))


def buses_text(s: Snapshot) -> Text:
    """The buses' line (a pure function of the snapshot)."""
    t = Text(" ")
    t.append(" OUT ", "bold black on grey70")
    t.append("  main ")
    t.append(f"{s.main_level:.2f}", "bold" if s.main_level > 0 else "bold red1")
    if s.cue_bus:
        t.append("  cue ")
        t.append(f"{s.cue_level:.2f}", "bold" if s.cue_level > 0 else "bold red1")
        t.append("  click ")
        t.append("ON" if s.click else "OFF", "bold black on green3" if s.click else "bold grey70 on grey23")
        t.append(f" {s.click_level:.2f}")
    else:
        t.append("  no cue bus", "grey62")
    return t


class Grid(Static):
    """Voices down, 16 steps across: velocity as colour, the playhead as a marker."""

    def show(self, s: Snapshot) -> None:
        self.update(grid_text(s))


def grid_text(s: Snapshot) -> Text:
    """The grid as styled text (a pure function of the snapshot)."""
    grid, step = s.grid, s.step
    muted, solo = set(s.muted), set(s.solo)
    t = Text()
    t.append(" ♩  ", "grey50")  # the beat ruler; the playhead is the lit cell
    for i in range(16):
        mark = str(i // 4 + 1) if i % 4 == 0 else "·"
        t.append(mark, "bold black on yellow3" if i == step else ("bold" if i % 4 == 0 else "grey42"))
        t.append("  " if i % 4 == 3 else " ")
    t.append("\n")
    for v in reversed(VOICES):
        off = v.index in muted or (solo and v.index not in solo)
        label_style = "strike grey42" if off else ("bold cyan" if v.index in solo else "bold")
        t.append(f" {v.label} ", label_style)
        for i in range(16):
            hit = grid[i][HITS][v.index] > 0.5
            vel = grid[i][VELOCITIES][v.index]
            cell = "●" if hit else "·"
            colour = SHADE[1 + min(3, int(vel * 4))] if hit else SHADE[0]
            style = f"{colour} on grey19" if i == step else colour
            t.append(cell, "grey42" if off and hit else style)
            t.append("  " if i % 4 == 3 else " ")
        t.append("\n")
    return t


class Knobs(Static):
    selected = reactive(0)

    def show(self, s: Snapshot, values: dict) -> None:
        t = Text()
        for i, k in enumerate(KNOBS):
            lo, hi = KNOB_RANGE[k]
            mark = "▶" if i == self.selected else " "
            t.append(f"{mark}{k:<11}", "bold" if i == self.selected else "")
            t.append(bar(values.get(k, 0.0), lo, hi), "green3" if i == self.selected else "grey62")
            t.append(f" {values.get(k, 0.0):+.2f}\n")
        self.update(t)


class Health(Static):
    def show(self, s: Snapshot, fps: float) -> None:
        midi_in = ", ".join(s.midi_in) or "none"
        t = Text.assemble(
            "gen p99 ", (f"{s.gen_ms_p99:.2f} ms", "bold"),
            " │ misses ", (str(s.misses), "bold red" if s.misses else "bold"),
            " │ underruns ", (str(s.underruns), "bold red" if s.underruns else "bold"),
            (f" (audio restarted {s.audio_restarts}×)" if s.audio_restarts else "", "bold red"),
            (" │ audio out waiting" if s.audio_out == "waiting" else "", "bold red"),
            (f" │ faults {s.faults_total}" if s.faults_total else "", "bold red"),
            f" │ cpu {s.cpu:.0f}%",
            f" │ MIDI out {s.midi_out or 'none'} │ in {midi_in} │ ui {fps:.0f} fps")
        self.update(t)


class Help(ModalScreen):
    BINDINGS = [("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        rows = "\n".join(f"  {key_display(b.key):<8} {b.description:<14} {help_of(b.action)}"
                         for b in StageApp.BINDINGS
                         if b.description and not b.description.startswith(("Mute ", "Solo ")))
        yield Static(f"[b]Keys[/b]\n\n{escape(rows)}\n\n"
                     "  \\] / \\[ choose a knob, right / left turn it; 1-9 mute a voice, shift+1-9 solo it;\n"
                     "  click a knob to choose it, click a voice's name to mute it. Esc closes this.",
                     id="help")


class Learn(ModalScreen):
    """MIDI learn: choose an action, then move a control on the controller."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="learn"):
            yield Static("[b]MIDI learn[/b]: choose an action, then press or move a control. Esc cancels.",
                         id="learn-title")
            yield OptionList(*BINDABLE, id="learn-actions")
            yield Static("", id="learn-status")

    def on_option_list_option_selected(self, event) -> None:
        action = str(event.option.prompt)
        self.app.send("learn", action)
        self.query_one("#learn-status", Static).update(f"Now move a control for [b]{action}[/b]…")
        self.set_interval(0.1, self._check)

    def _check(self) -> None:
        learned = self.app.snapshot.learned
        if learned:
            self.app.notify(f"learned: {learned}", timeout=5)
            self.dismiss()

    def action_cancel(self) -> None:
        self.app.send("learn", None)
        self.dismiss()


class StageApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "drummachine"
    BINDINGS = [
        Binding(key, f"cue('{name}')", label(name), show=key in FOOTER_KEYS) for key, name in CUE_KEYS
    ] + [
        Binding("up", "cue('tempo_up')", "Tempo +"),
        Binding("down", "cue('tempo_down')", "Tempo -"),
        Binding("right", "knob(1)", "Knob +", show=False),
        Binding("left", "knob(-1)", "Knob -", show=False),
        Binding("right_square_bracket", "select(1)", "Next knob", show=False),
        Binding("left_square_bracket", "select(-1)", "Previous knob", show=False),
        Binding("l", "learn", "MIDI learn", show=False),
        Binding("question_mark,f1", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+d", "detach", "Detach (keep playing)", show=False),
    ] + [Binding(str(i + 1), f"voice('mute', {i})", f"Mute {v.label}", show=False) for i, v in enumerate(VOICES)] \
      + [Binding(SOLO_KEYS[i], f"voice('solo', {i})", f"Solo {v.label}", show=False) for i, v in enumerate(VOICES)]

    def __init__(self, client, fps: float = 30.0, warnings: list[str] | None = None,
                 duration: float | None = None):
        super().__init__()
        self.duration = duration
        self.client = client
        self.warnings = list(warnings or [])
        self.fps_target = fps
        self.snapshot = Snapshot()
        self.values = {k: min(max(0.0, s.value.lo), s.value.hi) for k, s in KNOB_SPECS.items()}
        self.values["humanize"] = self.values["temperature"] = 1.0
        self.frames: list[float] = []
        self.commands_sent: list[tuple[str, object]] = []
        self.quit_requested = False  #: the quit key: the engine stops too (a crash or ctrl+d only detaches)

    def compose(self) -> ComposeResult:
        # kept as attributes: the view updates them even while a modal screen is on top
        self.w_transport, self.w_song, self.w_grid = Transport(id="transport"), Song(id="song"), Grid(id="grid")
        self.w_knobs, self.w_health = Knobs(id="knobs"), Health(id="health")
        self.w_band, self.w_buses = Band(id="band"), Buses(id="buses")
        yield self.w_transport
        yield self.w_song
        yield self.w_band
        yield self.w_buses
        with Horizontal(id="main"):
            yield self.w_grid
            with Vertical(id="side"):
                yield self.w_knobs
        yield self.w_health
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(1.0 / self.fps_target, self.refresh_view)
        self.refresh_view()
        if self.duration:
            self.set_timer(self.duration, self.exit)
        fault = os.environ.get("DRUMMACHINE_UI_FAULT_AFTER")
        if fault:  # fault injection (benchmarks/soak.py, tests): the UI fails as a bug would
            self.set_timer(float(fault), self._injected_fault)
        for w in self.warnings:  # a notice, never a blocking dialog: the show goes on
            self.notify(w, severity="warning", timeout=8)

    def _injected_fault(self) -> None:
        raise RuntimeError("injected UI fault (DRUMMACHINE_UI_FAULT_AFTER)")

    def refresh_view(self) -> None:
        if getattr(self.client, "gone", None):  # the engine stopped (or was stopped elsewhere)
            self.exit()
            return
        s = self.client.latest() or self.snapshot
        self.snapshot = s
        now = time.monotonic()
        self.frames = [f for f in self.frames if now - f < 1.0] + [now]
        for k, v in s.knobs.items():
            if k in self.values:
                self.values[k] = v
        if not hasattr(self, "w_grid") or not self.w_grid.is_mounted:
            return
        self.w_transport.show(s)
        self.w_song.show(s)
        self.w_band.show(s)
        self.w_buses.show(s)
        self.w_grid.show(s)
        self.w_knobs.show(s, self.values)
        self.w_health.show(s, len(self.frames))

    def send(self, name: str, value=None) -> None:
        self.commands_sent.append((name, value))
        self.client.command(name, value)

    def action_cue(self, name: str) -> None:
        self.send(name)

    def action_voice(self, what: str, voice: int) -> None:
        self.send(what, voice)

    def action_select(self, delta: int) -> None:
        knobs = self.w_knobs
        knobs.selected = (knobs.selected + delta) % len(KNOBS)
        self.refresh_view()

    def action_knob(self, direction: int) -> None:
        k = KNOBS[self.w_knobs.selected]
        lo, hi = KNOB_RANGE[k]
        value = round(min(hi, max(lo, self.values[k] + direction * KNOB_STEP[k])), 3)
        self.send(k, value)
        self.values[k] = value
        self.refresh_view()

    def action_quit(self) -> None:
        """Stop the engine (all notes off) and go."""
        self.quit_requested = True
        if hasattr(self.client, "quit"):
            self.client.quit()
        else:
            self.send("stop")
        self.exit()

    def action_detach(self) -> None:
        """Go, and leave the engine playing (`drummachine attach` comes back)."""
        self.exit()

    def action_learn(self) -> None:
        self.push_screen(Learn())

    def action_help(self) -> None:
        self.push_screen(Help())

    def on_click(self, event) -> None:
        widget = event.widget
        if isinstance(widget, Knobs):
            row = event.y
            if 0 <= row < len(KNOBS):
                widget.selected = row
                self.refresh_view()
        elif isinstance(widget, Grid):
            row = event.y - 1
            if 0 <= row < len(VOICES) and event.x < 4:
                self.send("mute", VOICES[len(VOICES) - 1 - row].index)
