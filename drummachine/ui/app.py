"""The stage UI (Textual): a view of the engine's snapshots and a keyboard/mouse to cue it.

The UI never touches the engine's state: it sends commands through a client (the engine in its
own process on stage, in this process for tests) and draws the newest snapshot 30 times a second.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList, Static

from drummachine.core.voices import VOICES

KNOBS = ("intensity", "density", "swing", "humanize", "temperature")
KNOB_RANGE = {"intensity": (-1.0, 1.0), "density": (-1.0, 1.0), "swing": (0.0, 1.0), "humanize": (0.0, 2.0),
              "temperature": (0.0, 2.0)}
KNOB_STEP = {"intensity": 0.05, "density": 0.1, "swing": 0.1, "humanize": 0.1, "temperature": 0.1}
SHADE = ("grey23", "green4", "green3", "yellow3", "red1")
SOLO_KEYS = ("exclamation_mark", "at", "number_sign", "dollar_sign", "percent_sign", "circumflex_accent",
             "ampersand", "asterisk", "left_parenthesis")


def bar(value: float, lo: float, hi: float, width: int = 10) -> str:
    filled = round((value - lo) / (hi - lo) * width) if hi > lo else 0
    return "█" * max(0, min(width, filled)) + "░" * (width - max(0, min(width, filled)))


class Transport(Static):
    def show(self, s: dict) -> None:
        state = "⏸ PAUSED" if s.get("paused") else ("▶ PLAYING" if s.get("playing") else "■ STOPPED")
        feel = {0.5: " half", 2.0: " double"}.get(s.get("feel", 1.0), "")
        self.update(Text.assemble((f" {state} ", "bold reverse" if s.get("playing") else "bold"),
                                  f"  {s.get('bpm', 0):6.1f} bpm{feel}   bar {s.get('bar', 0) + 1}:"
                                  f"{s.get('step', 0) // 4 + 1}   {s.get('style', '')}   intensity "
                                  f"{s.get('intensity', 0):.2f}{'  FILL' if s.get('fill') else ''}"
                                  f"{'   ' + s['cymbal'].replace('_', ' ') if s.get('cymbal', 'auto') != 'auto' else ''}   ",
                                  (f"{s.get('song', '')}", "italic")))


class Song(Static):
    def show(self, s: dict) -> None:
        t = Text(" ")
        current = s.get("section_index", -1)
        q = s.get("queued") or {}
        for i, name in enumerate(s.get("sections", [])):
            style = "bold black on green3" if i == current else ("black on yellow3" if q.get("target") == name
                                                                else "grey70")
            t.append(f" {name} ", style)
            t.append(" ")
        if q:
            what = q.get("target") or q.get("what")
            t.append(f"  → {what} at bar {q['at_bar'] + 1}", "bold yellow3")
        if s.get("locked"):
            t.append("  [kept]", "cyan")
        self.update(t)


class Grid(Static):
    """Voices down, 16 steps across: velocity as colour, the playhead as a marker."""

    def show(self, s: dict) -> None:
        self.update(grid_text(s))


def grid_text(s: dict) -> Text:
    """The grid as styled text (a pure function of the snapshot)."""
    grid = s.get("grid") or [[[0.0] * 9] * 3] * 16
    step = s.get("step", 0)
    muted, solo = set(s.get("muted", [])), set(s.get("solo", []))
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
            hit = grid[i][0][v.index] > 0.5
            vel = grid[i][1][v.index]
            cell = "●" if hit else "·"
            colour = SHADE[1 + min(3, int(vel * 4))] if hit else SHADE[0]
            style = f"{colour} on grey19" if i == step else colour
            t.append(cell, "grey42" if off and hit else style)
            t.append("  " if i % 4 == 3 else " ")
        t.append("\n")
    return t


class Knobs(Static):
    selected = reactive(0)

    def show(self, s: dict, values: dict) -> None:
        t = Text()
        for i, k in enumerate(KNOBS):
            lo, hi = KNOB_RANGE[k]
            mark = "▶" if i == self.selected else " "
            t.append(f"{mark}{k:<11}", "bold" if i == self.selected else "")
            t.append(bar(values.get(k, 0.0), lo, hi), "green3" if i == self.selected else "grey62")
            t.append(f" {values.get(k, 0.0):+.2f}\n")
        self.update(t)


class Health(Static):
    def show(self, s: dict, fps: float) -> None:
        midi_in = ", ".join(s.get("midi_in") or []) or "none"
        t = Text.assemble(
            "gen p99 ", (f"{s.get('gen_ms_p99', 0):.2f} ms", "bold"),
            " │ misses ", (str(s.get("misses", 0)), "bold red" if s.get("misses") else "bold"),
            " │ underruns ", (str(s.get("underruns", 0)), "bold red" if s.get("underruns") else "bold"),
            (f" (audio restarted {s['audio_restarts']}×)" if s.get("audio_restarts") else "", "bold red"),
            f" │ cpu {s.get('cpu', 0):.0f}%",
            f" │ MIDI out {s.get('midi_out') or 'none'} │ in {midi_in} │ ui {fps:.0f} fps")
        self.update(t)


class Help(ModalScreen):
    BINDINGS = [("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        rows = "\n".join(f"  {b.key:<22} {b.description}" for b in StageApp.BINDINGS
                         if b.description and not b.description.startswith(("Mute ", "Solo ")))
        yield Static(f"[b]Keys[/b]\n\n{rows}\n\n"
                     "  \\] / \\[ choose a knob, right / left turn it; 1-9 mute a voice, shift+1-9 solo it;\n"
                     "  click a knob to choose it, click a voice's name to mute it. Esc closes this.",
                     id="help")


class Learn(ModalScreen):
    """MIDI learn: choose an action, then move a control on the controller."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        from drummachine.core.controller import ACTIONS

        with Vertical(id="learn"):
            yield Static("[b]MIDI learn[/b]: choose an action, then press or move a control. Esc cancels.",
                         id="learn-title")
            yield OptionList(*ACTIONS, id="learn-actions")
            yield Static("", id="learn-status")

    def on_option_list_option_selected(self, event) -> None:
        action = str(event.option.prompt)
        self.app.send("learn", action)
        self.query_one("#learn-status", Static).update(f"Now move a control for [b]{action}[/b]…")
        self.set_interval(0.1, self._check)

    def _check(self) -> None:
        learned = (self.app.snapshot or {}).get("learned")
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
        Binding("space", "cue('toggle')", "Start/stop"),
        Binding("f", "cue('fill')", "Fill"),
        Binding("n", "cue('next')", "Next section"),
        Binding("o", "cue('outro')", "Outro"),
        Binding("a", "cue('accent')", "Accent"),
        Binding("t", "cue('tap')", "Tap"),
        Binding("up", "tempo(1)", "Tempo +"),
        Binding("down", "tempo(-1)", "Tempo -"),
        Binding("p", "cue('pause')", "Pause", show=False),
        Binding("k", "cue('keep')", "Keep", show=False),
        Binding("c", "cue('cymbal')", "Hats/ride", show=False),
        Binding("r", "cue('regenerate')", "Regenerate", show=False),
        Binding("h", "feel('half')", "Half time", show=False),
        Binding("d", "feel('double')", "Double time", show=False),
        Binding("right", "knob(1)", "Knob +", show=False),
        Binding("left", "knob(-1)", "Knob -", show=False),
        Binding("right_square_bracket", "select(1)", "Next knob", show=False),
        Binding("left_square_bracket", "select(-1)", "Previous knob", show=False),
        Binding("l", "learn", "MIDI learn", show=False),
        Binding("question_mark,f1", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ] + [Binding(str(i + 1), f"voice('mute', {i})", f"Mute {v.label}", show=False) for i, v in enumerate(VOICES)] \
      + [Binding(SOLO_KEYS[i], f"voice('solo', {i})", f"Solo {v.label}", show=False) for i, v in enumerate(VOICES)]

    def __init__(self, client, fps: float = 30.0, warnings: list[str] | None = None,
                 duration: float | None = None):
        super().__init__()
        self.duration = duration
        self.client = client
        self.warnings = list(warnings or [])
        self.fps_target = fps
        self.snapshot: dict = {}
        self.values = {"intensity": 0.0, "density": 0.0, "swing": 0.0, "humanize": 1.0, "temperature": 1.0}
        self.feel = "normal"
        self.frames: list[float] = []
        self.commands_sent: list[tuple[str, object]] = []

    def compose(self) -> ComposeResult:
        # kept as attributes: the view updates them even while a modal screen is on top
        self.w_transport, self.w_song, self.w_grid = Transport(id="transport"), Song(id="song"), Grid(id="grid")
        self.w_knobs, self.w_health = Knobs(id="knobs"), Health(id="health")
        yield self.w_transport
        yield self.w_song
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
        for w in self.warnings:  # a notice, never a blocking dialog: the show goes on
            self.notify(w, severity="warning", timeout=8)

    def refresh_view(self) -> None:
        s = self.client.latest() or {}
        self.snapshot = s
        now = time.monotonic()
        self.frames = [f for f in self.frames if now - f < 1.0] + [now]
        knobs = s.get("knobs") or {}
        for k in ("density", "swing", "humanize", "temperature"):
            if k in knobs:
                self.values[k] = knobs[k]
        if not hasattr(self, "w_grid") or not self.w_grid.is_mounted:
            return
        self.w_transport.show(s)
        self.w_song.show(s)
        self.w_grid.show(s)
        self.w_knobs.show(s, self.values)
        self.w_health.show(s, len(self.frames))

    def send(self, name: str, value=None) -> None:
        self.commands_sent.append((name, value))
        self.client.command(name, value)

    def action_cue(self, name: str) -> None:
        self.send(name)

    def action_tempo(self, delta: int) -> None:
        self.send("tempo_nudge", float(delta))

    def action_feel(self, feel: str) -> None:
        self.feel = "normal" if self.feel == feel else feel
        self.send(self.feel)

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
        if k == "intensity":
            self.send("intensity", value - self.values[k])
        else:
            self.send(k, value)
        self.values[k] = value
        self.refresh_view()

    def action_quit(self) -> None:
        self.send("stop")  # all notes off before the UI goes
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
