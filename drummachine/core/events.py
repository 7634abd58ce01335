"""What the engine hands to its outputs: timed events, and the small interface every output has."""

from __future__ import annotations

from dataclasses import dataclass

NOTE, CLOCK, START, STOP, CONTINUE = "note", "clock", "start", "stop", "continue"


@dataclass(frozen=True)
class Event:
    """Something an output does at ``time`` (clock seconds): a note, a MIDI clock pulse, start/stop."""

    time: float
    kind: str = NOTE  #: NOTE, CLOCK, START, STOP or CONTINUE
    voice: int = -1
    velocity: float = 0.0  #: 0..1
    step: int = -1


class Sink:
    """An output. ``send`` gets the events of one step, in time order, a little before they sound."""

    def send(self, events: list[Event]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def panic(self) -> None:
        """All notes off, now."""

    def close(self) -> None:
        pass


class MemorySink(Sink):
    """Records everything (for tests)."""

    def __init__(self):
        self.events: list[Event] = []
        self.panics = 0

    def send(self, events):
        self.events.extend(events)

    def panic(self):
        self.panics += 1

    def notes(self) -> list[Event]:
        return [e for e in self.events if e.kind == NOTE]
