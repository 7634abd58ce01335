"""The machine's JACK client names, once: the engine's MIDI and audio client, the port lister, the
listening process and the rtmidi fallback are all named from ``CLIENT``."""

from __future__ import annotations

CLIENT = "drummachine"


def own_port(name: str) -> bool:
    """A port of this machine's own clients: the engine's (``CLIENT``: its kit and cue bus), or one
    named from it with a dash (the listening process, a second instance's ``drummachine-01``, as
    JACK renames it): its own sound, never the band's."""
    client = name.split(":", 1)[0]
    return client == CLIENT or client.startswith(CLIENT + "-")
