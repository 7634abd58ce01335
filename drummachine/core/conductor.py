"""The song conductor: which section, style, tempo, intensity and fill every bar gets, and when a
cue from the foot takes effect.

Bars are planned one at a time from the bar before, so a cue only has to drop the plans of bars
not yet heard and let them be planned again. A cue never changes what has been heard: the engine
tells the conductor the first step still open (``open_step``), and the conductor answers with
the first step its cue changes, which the engine regenerates from.

Musical rules:
- next section / go to section: at the next bar line, or the phrase end; the bar (or the rest of
  the bar) before it is a transition fill, and the new section starts with a crash on the one.
  A cue with less than a beat left in the bar moves to the bar line after.
- fill now: the rest of the bar is a fill (the next bar too if less than a beat is left).
- outro: an ending fill, then a final hit on the one (crash and kick), then stop.
- a section with a length moves on to the next by itself; after the last, the song ends as an
  outro does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from drummachine.core.attributes import FILL_VOICES
from drummachine.core.conditioning import AUTO, OFF, Cues, cymbal_palette
from drummachine.core.performer import BarFeel, apply_feel
from drummachine.core.song import Song
from drummachine.core.transport import STEPS_PER_BAR

BEAT = 4
PHRASE = 4

COUNT_IN, GROOVE, ENDING, FINAL, SILENT = "count_in", "groove", "ending", "final", "silent"


@dataclass(frozen=True)
class BarPlan:
    """What one bar should be. ``fill_from``: the step from which the bar is a fill (None: no fill)."""

    bar: int
    kind: str
    section: int  #: index into the song's sections (-1 before the first)
    bar_in_section: int
    style: str
    bpm: float
    intensity: float
    fill_from: int | None = None
    crash_on_one: bool = False
    #: the performer's choices for this bar, None without a performer
    feel: BarFeel | None = None

    def fill_at(self, step: int) -> bool:
        return self.fill_from is not None and step >= self.fill_from


@dataclass(frozen=True)
class Queued:
    """A cue waiting for its moment: shown on stage until it takes effect."""

    what: str  #: "next", "goto", "outro"
    at_bar: int  #: the bar it takes effect at
    target: int | None = None  #: section index for next/goto


#: bars behind the one taking effect whose plans are kept (the engine asks for the bar playing
#: and the ones ahead; a cue rewinds no further than the bar playing)
PLANS_KEPT_BEHIND = 16
#: bars of a section whose feels are kept for the section to replay when kept ("keep"): an endless
#: jam section would otherwise keep one per bar for as long as it plays
KEPT_FEELS_BARS = 256


class Conductor:
    """Plans bars for a song and applies live cues at musically sensible moments."""

    def __init__(self, song: Song, start_bar: int = 0, performer=None):
        """``performer``: what decides each bar's cues the way drummers move them (core.performer);
        None holds the section's cues constant."""
        self.song = song
        self.performer = performer
        self.variants: dict[int, int] = {}  # section -> how often it was regenerated
        self.kept_feels: dict[tuple[int, int], object] = {}  # (section, bar in it) -> its first feel
        self.plans: dict[int, BarPlan] = {}
        self.start_bar = start_bar
        self.queued: Queued | None = None
        self.intensity_offset = 0.0
        self.fill_requests: dict[int, int] = {}  # bar -> fill from step
        self.accents: set[int] = set()  # steps with an accent hit
        self.locked: set[int] = set()  # sections whose pattern is kept
        self.regenerate_from: dict[int, int] = {}  # section -> bar from which it is new
        self.ended_at: int | None = None
        #: live cymbal choices: (from step, section index, CYMBALS name), newest last; each lasts
        #: until its section ends (the next section plays its own from the song)
        self.cymbal_changes: tuple[tuple[int, int, str], ...] = ()
        #: live voice choices for a span of steps: (from, until, {voice: ON/OFF/AUTO}), newest last
        self.voice_overrides: tuple[tuple[int, int, dict[int, int]], ...] = ()

    # --- planning -------------------------------------------------------------------------
    def plan(self, bar: int) -> BarPlan:
        """The plan of ``bar`` (bars are planned in order; earlier ones first)."""
        if bar in self.plans:
            return self.plans[bar]
        prev = self.plan(bar - 1) if bar > self.start_bar else None
        p = self._derive(bar, prev)
        if p.kind == GROOVE and self.performer is not None:
            p = self._perform(p, prev)
        elif p.feel is not None:
            p = replace(p, feel=None)
        self.plans[bar] = p
        return p

    def _perform(self, p: BarPlan, prev: BarPlan | None) -> BarPlan:
        """The performer's feel for a groove bar; a kept section replays the feel it had."""
        key = (p.section, p.bar_in_section)
        feel = self.kept_feels.get(key) if p.section in self.locked else None
        if feel is None:
            s = self.song.sections[p.section]
            feel = self.performer.feel(p.style, p.bpm, p.section, p.bar_in_section, s.bars,
                                       before_change=bool(s.bars) and p.bar_in_section == s.bars - 1,
                                       prev=prev.feel if prev is not None else None,
                                       variant=self.variants.get(p.section, 0))
            if p.bar_in_section < KEPT_FEELS_BARS:  # an endless section's feels are not all kept
                self.kept_feels[key] = feel
        fill_from = p.fill_from if p.fill_from is not None or not feel.fill else 0
        return replace(p, feel=feel, fill_from=fill_from)

    def _section_plan(self, bar: int, index: int, bar_in_section: int, crash: bool) -> BarPlan:
        s = self.song.sections[index]
        intensity = min(1.0, max(0.0, s.intensity + self.intensity_offset))
        return BarPlan(bar, GROOVE, index, bar_in_section, s.style, s.bpm, intensity, None, crash)

    def _derive(self, bar: int, prev: BarPlan | None) -> BarPlan:
        song = self.song
        first = song.sections[0]
        if prev is None:
            if song.count_in:
                return BarPlan(bar, COUNT_IN, -1, 0, first.style, first.bpm, first.intensity)
            return self._with_fill(self._section_plan(bar, 0, 0, crash=False))
        if prev.kind in (FINAL, SILENT):
            return replace(prev, bar=bar, kind=SILENT, fill_from=None, crash_on_one=False)
        if prev.kind == ENDING:
            return replace(prev, bar=bar, kind=FINAL, fill_from=None, crash_on_one=True)
        if prev.kind == COUNT_IN:
            if bar - self.start_bar < song.count_in:
                return replace(prev, bar=bar)
            return self._with_fill(self._section_plan(bar, 0, 0, crash=True))
        q = self.queued
        if q and q.at_bar == bar:
            if q.what == "outro":
                return replace(prev, bar=bar, kind=ENDING, fill_from=0, crash_on_one=False)
            return self._with_fill(self._section_plan(bar, q.target, 0, crash=True))
        s = song.sections[prev.section]
        if s.bars and prev.bar_in_section + 1 >= s.bars:
            nxt = prev.section + 1
            if nxt >= len(song.sections):
                return replace(prev, bar=bar, kind=FINAL, fill_from=None, crash_on_one=True)
            return self._with_fill(self._section_plan(bar, nxt, 0, crash=True))
        return self._with_fill(self._section_plan(bar, prev.section, prev.bar_in_section + 1, crash=False))

    def _with_fill(self, p: BarPlan) -> BarPlan:
        """Add the fills this bar gets: before a change of section, every N bars, or asked for."""
        s = self.song.sections[p.section]
        fill_from = None
        last_of_section = s.bars and p.bar_in_section == s.bars - 1
        q = self.queued
        before_cue = q is not None and q.at_bar == p.bar + 1 and q.what in ("next", "goto")
        if last_of_section and p.section + 1 >= len(self.song.sections):
            before_cue = True  # the song's last bar: an ending fill into the final hit
        if last_of_section or before_cue:
            fill_from = 0
        elif s.fill_every and (p.bar_in_section + 1) % s.fill_every == 0:
            fill_from = 0
        if p.bar in self.fill_requests:
            asked = self.fill_requests[p.bar]
            fill_from = asked if fill_from is None else min(fill_from, asked)
        return replace(p, fill_from=fill_from)

    def _drop_from(self, bar: int) -> None:
        for b in [b for b in self.plans if b >= bar]:
            del self.plans[b]

    # --- cues -----------------------------------------------------------------------------
    def _boundary(self, open_step: int, phrase: bool = False) -> int:
        """The bar line a cue made at ``open_step`` moves to (with at least a beat of fill)."""
        bar, step = divmod(open_step, STEPS_PER_BAR)
        target = bar + 1 if step <= STEPS_PER_BAR - BEAT else bar + 2
        if phrase:
            p = self.plan(bar)
            if p.kind == GROOVE:
                left = (-(p.bar_in_section + (target - bar))) % PHRASE
                target += left
        return target

    def next_section(self, open_step: int, target: int | None = None, at_phrase: bool = False) -> int:
        """Queue the next section (or section ``target``). Returns the first step that changes."""
        bar = open_step // STEPS_PER_BAR
        current = self.plan(bar)
        if current.kind in (FINAL, SILENT, ENDING):
            return open_step
        if target is None:
            target = min(current.section + 1, len(self.song.sections) - 1) if current.section >= 0 else 0
        at = self._boundary(open_step, at_phrase)
        self.queued = Queued("next", at, target)
        return self._replan_from(open_step, at - 1)

    def outro(self, open_step: int) -> int:
        bar = open_step // STEPS_PER_BAR
        if self.plan(bar).kind in (FINAL, SILENT, ENDING):
            return open_step
        at = self._boundary(open_step)
        self.queued = Queued("outro", at)
        return self._replan_from(open_step, at)

    def fill(self, open_step: int) -> int:
        """A fill from the first step not yet heard to the end of the bar; with less than a beat
        left, on through the next bar too (a fill heard at once, and long enough to be one)."""
        bar, step = divmod(open_step, STEPS_PER_BAR)
        self.fill_requests[bar] = step
        if step > STEPS_PER_BAR - BEAT:
            self.fill_requests[bar + 1] = 0
        return self._replan_from(open_step, bar + (step > STEPS_PER_BAR - BEAT))

    def accent(self, open_step: int) -> int:
        self.accents.add(open_step)
        return open_step

    def set_intensity(self, open_step: int, offset: float) -> int:
        self.intensity_offset = max(-1.0, min(1.0, offset))
        return self._replan_from(open_step, open_step // STEPS_PER_BAR)

    def keep(self, open_step: int) -> int | None:
        p = self.plan(open_step // STEPS_PER_BAR)
        if p.section >= 0:
            self.locked.add(p.section)
        return None

    def regenerate(self, open_step: int) -> int:
        p = self.plan(open_step // STEPS_PER_BAR)
        if p.section >= 0:
            self.locked.discard(p.section)
            self.regenerate_from[p.section] = p.bar + 1
            self.variants[p.section] = self.variants.get(p.section, 0) + 1
            self._drop_from(p.bar + 1)
        return (p.bar + 1) * STEPS_PER_BAR

    def _replan_from(self, open_step: int, bar: int) -> int:
        """Drop the plans from the open bar on; the first step that may change is ``open_step``."""
        first_bar = min(open_step // STEPS_PER_BAR, bar)
        self._drop_from(first_bar)
        self.plan(max(first_bar, bar))  # plan through the affected bar now
        return open_step

    def take_effect(self, bar: int) -> None:
        """Called when ``bar`` is committed: a queued cue that has arrived is cleared."""
        if self.queued and self.queued.at_bar <= bar:
            self.queued = None
        for b in [b for b in self.fill_requests if b < bar]:
            del self.fill_requests[b]
        # an hour's jam is 1,800 bars: the plans behind the playhead go (a cue rewinds to the bar
        # playing at most; planning goes on from the newest plan kept)
        for b in [b for b in self.plans if b < bar - PLANS_KEPT_BEHIND]:
            del self.plans[b]
        self.accents = {c for c in self.accents if c >= (bar - PLANS_KEPT_BEHIND) * STEPS_PER_BAR}

    # --- what keeps time, and voices asked for live ---------------------------------------
    def cymbal(self, plan: BarPlan, step: int) -> str:
        """The cymbal that keeps time at ``step``: the last live choice in this section, else the song's."""
        for at, section, name in reversed(self.cymbal_changes):
            if section == plan.section and at <= step:
                return name
        return self.song.sections[plan.section].cymbal if plan.section >= 0 else "auto"

    def set_cymbal(self, at_step: int, section: int, name: str) -> int:
        """The cymbal ``name`` keeps time from ``at_step`` to the end of ``section``; returns the
        first step that changes."""
        cymbal_palette(name)  # checks the name
        self.cymbal_changes = self.cymbal_changes[-15:] + ((at_step, section, name),)
        return at_step

    def override_voices(self, start: int, until: int, changes: dict[int, int]) -> int:
        """Voices played (ON), not played (OFF) or left to the model (AUTO) from step ``start`` up to
        ``until``, over whatever the song and the cymbal ask; returns the first step that changes."""
        self.voice_overrides = self.voice_overrides[-15:] + ((start, until, dict(changes)),)
        return start

    def voices_at(self, step: int, cues: Cues) -> Cues:
        """``cues`` with the live voice choices that hold at ``step``."""
        live = [changes for start, until, changes in self.voice_overrides if start <= step < until]
        if not live:
            return cues
        palette = list(cues.palette)
        for changes in live:
            for voice, choice in changes.items():
                palette[voice] = choice
        return replace(cues, palette=tuple(palette))


def announces_change(before: BarPlan, after: BarPlan) -> bool:
    """Whether the bar line from ``before`` to ``after`` is one the band is warned of on the cue
    bus (a bar ahead): a new section (the same one again after a go-to too), the outro's ending
    fill, or the song's final hit. Never the first section (after the count-in or at the start)."""
    if before.kind != GROOVE:
        return False
    if after.kind == GROOVE:
        return after.bar_in_section == 0
    return after.kind in (ENDING, FINAL)


def with_feel(cues: Cues, feel: BarFeel, asked_fill: bool = False) -> Cues:
    """``cues`` (the section's, with the bar's fill) as the performer plays the bar: its offsets
    and palette picks (core.performer.apply_feel); a voice the song, the cymbal or the pedal asks
    for keeps what they ask. In a fill the foot asked for (``asked_fill``), the performer never
    turns off the voices a fill is heard on (snare and toms): the musician asked to hear one now."""
    played = apply_feel(cues, feel, cues.fill)
    if not asked_fill:
        return played
    palette = tuple(AUTO if v in FILL_VOICES and p == OFF and cues.palette[v] == AUTO else p
                    for v, p in enumerate(played.palette))
    return replace(played, palette=palette)
