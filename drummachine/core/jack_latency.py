"""JACK ports' latencies as jackd2's ``jack_lsp -l`` prints them (JACK-Client has no call for them).

A port's playback latency is the server's count from it to the sound card's output (2 periods on
a server at -n 2), its capture latency from the sound card's input to it. The audio output and the
listening process each run jack_lsp; the reading of what it printed is here, once."""

from __future__ import annotations

import re

LATENCY_LINE = re.compile(r"\s+port (capture|playback) latency = \[ *(\d+) +(\d+) *\]")


def read_jack_lsp_latencies(printed: str) -> dict[str, dict[str, int]]:
    """``{port: {"capture": frames, "playback": frames}}``, the most of each range; a port printed
    with no latency has 0."""
    ports: dict[str, dict[str, int]] = {}
    name = None
    for line in printed.splitlines():
        m = LATENCY_LINE.match(line)
        if m and name is not None:
            ports[name][m.group(1)] = int(m.group(3))
        elif line and not line[0].isspace():
            name = line.strip()
            ports[name] = {"capture": 0, "playback": 0}
    return ports


def jack_lsp_latencies(port: str | None = None) -> dict[str, dict[str, int]]:
    """Every JACK port's latencies (of ``port`` alone when given), from jack_lsp; {} with no
    server or no jack_lsp, or a server that does not answer within 2 s (the mixer's ready waits
    for this)."""
    import subprocess

    try:
        printed = subprocess.run(["jack_lsp", "-l", *([port] if port else [])], capture_output=True, text=True,
                                 timeout=2).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return read_jack_lsp_latencies(printed)
