"""A groove drawn as a text step grid: voices down, 16th steps across, velocity as shading."""

from __future__ import annotations

from drummachine.core.groove import Groove
from drummachine.core.voices import VOICES

SHADES = ".-+*#"  # no hit, then soft .. hard
TIMING = {-1: "<", 0: " ", 1: ">"}


def shade(velocity: float) -> str:
    return SHADES[1 + min(3, int(velocity * 4))]


def render_grid(groove: Groove, bars: int | None = None, bars_per_row: int = 2) -> str:
    """The groove as text. Each bar is ``|``-separated, beats by spaces; a legend follows."""
    spb = groove.meter.steps_per_bar
    total = groove.bars if bars is None else min(bars, groove.bars)
    g = groove.padded()
    lines = [f"{groove.bpm:g} bpm, {groove.meter}, {groove.bars} bars, {int(groove.hits.sum())} hits"]
    for first in range(0, total, bars_per_row):
        last = min(total, first + bars_per_row)
        header = "   " + "".join(f"|{b + 1:<{spb + (spb // 4) - 1}}" for b in range(first, last)) + "|"
        lines.append(header)
        for voice in reversed(VOICES):
            row = []
            for b in range(first, last):
                cells = []
                for s in range(b * spb, (b + 1) * spb):
                    if s % 4 == 0 and s % spb:
                        cells.append(" ")
                    cells.append(shade(g.velocities[s, voice.index]) if g.hits[s, voice.index] else ".")
                row.append("".join(cells))
            lines.append(f"{voice.label} |" + "|".join(row) + "|")
    lines.append(f"velocity: {SHADES[1]} soft {SHADES[2]} medium {SHADES[3]} loud {SHADES[4]} accent")
    return "\n".join(lines)
