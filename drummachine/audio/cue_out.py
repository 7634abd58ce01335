"""Where the cue bus goes (``play --cue-out``): JACK ports, or the output device's next channels.

The cue bus is two channels of the mixer's one stream, after the main layout's (``mixing``): with
``--outs stereo``, channels 3 and 4 of the device, JACK ports ``out_2``/``out_3`` of the mixer's
client. Both buses come out of the same block, so they stay sample-locked; a second device would
have a clock of its own (it would drift from the main bus), so the cue bus never goes to one.

``--cue-out`` takes
- ``channels``: the device's channels after the main ones (a multichannel interface without JACK;
  under JACK, the physical playback ports PortAudio connects them to);
- one or two JACK input ports, comma-separated (a full name, or a unique part of one): the cue
  bus's left and right go there instead (one port: both, summed by JACK, for a mono in-ear pack),
  and nowhere else.

The ports are connected with the JACK command-line tools that jackd2 installs (``jack_lsp``,
``jack_connect``, ``jack_disconnect``), which find the server as every JACK client does
(``JACK_DEFAULT_SERVER``); the mixer process is PortAudio's client (``PortAudio``).
"""

from __future__ import annotations

import os
import subprocess

from drummachine.core.errors import DrumMachineError

CHANNELS = "channels"
MIXER_CLIENT = "PortAudio"  #: PortAudio's JACK client name (another PortAudio client gets "PortAudio-01", ...)
WHERE = "--cue-out"


def cue_ports(spec: str) -> tuple[str, ...]:
    """The JACK ports ``--cue-out`` names (none for ``channels``), or one line saying what is wrong."""
    spec = str(spec).strip()
    if spec == CHANNELS:
        return ()
    ports = tuple(p.strip() for p in spec.split(","))
    if not 1 <= len(ports) <= 2 or not all(ports):
        raise DrumMachineError(WHERE, f"{spec!r}: one or two JACK ports, comma-separated (left,right), or "
                               f"{CHANNELS!r} (the device's channels after the main outputs)")
    return ports


def _jack(*args: str) -> str:
    # a JACK client starts a server when none runs, unless told not to: never one of ours
    env = {**os.environ, "JACK_NO_START_SERVER": "1"}
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=5, env=env)
    except FileNotFoundError:
        raise DrumMachineError(WHERE, f"{args[0]} not found: JACK ports need the JACK tools (apt-get install "
                               "jackd2)") from None
    except subprocess.TimeoutExpired:
        raise DrumMachineError(WHERE, f"{args[0]} did not answer in 5 s") from None
    if r.returncode != 0 and "not running" in r.stderr:
        raise DrumMachineError(WHERE, "JACK ports, but no JACK server is running")
    if r.returncode != 0:
        said = (r.stderr.strip() or r.stdout.strip()).splitlines()
        raise DrumMachineError(WHERE, f"{' '.join(args)} failed: {said[-1] if said else r.returncode}")
    return r.stdout


def _graph() -> tuple[dict[str, bool], dict[str, list[str]]]:
    """(port -> is an input, port -> the ports connected to it) of the running JACK server."""
    inputs: dict[str, bool] = {}
    port = None
    for line in _jack("jack_lsp", "-p").splitlines():
        if not line.startswith((" ", "\t")):
            port = line.strip()
            inputs[port] = False
        elif port and "properties:" in line:
            inputs[port] = "input" in (word.strip() for word in line.split("properties:", 1)[1].split(","))
    links: dict[str, list[str]] = {}
    port = None
    for line in _jack("jack_lsp", "-c").splitlines():
        if not line.startswith((" ", "\t")):
            port = line.strip()
            links[port] = []
        elif port:
            links[port].append(line.strip())
    return inputs, links


def mixer_ports(channels: int, inputs: dict[str, bool]) -> tuple[str, ...]:
    """The mixer client's output ports, in channel order: the PortAudio client whose outputs number
    exactly ``channels``."""
    clients = {}
    for port, is_input in inputs.items():
        client, _, name = port.partition(":")
        if not is_input and client.startswith(MIXER_CLIENT) and name.startswith("out_"):
            clients.setdefault(client, set()).add(name)
    mine = [c for c, names in clients.items() if names == {f"out_{k}" for k in range(channels)}]
    if len(mine) != 1:
        found = ", ".join(f"{c} ({len(n)} outputs)" for c, n in clients.items()) or "none"
        raise DrumMachineError(WHERE, f"cannot tell the mixer's JACK client ({channels} outputs) among the "
                               f"PortAudio clients: {found}")
    return tuple(f"{mine[0]}:out_{k}" for k in range(channels))


def find_port(name: str, inputs: dict[str, bool]) -> str:
    """A JACK input port by full name or a unique part of one."""
    ins = [p for p, is_input in inputs.items() if is_input]
    if name in ins:
        return name
    hits = [p for p in ins if name.lower() in p.lower()]
    if len(hits) != 1:
        raise DrumMachineError(WHERE, f"{name!r} matches {len(hits)} JACK input ports; ports: "
                               f"{', '.join(ins) or 'none'}")
    return hits[0]


def connect_cue(spec: str, channels: int, ports: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...]:
    """Send the cue bus (the last two of the mixer's ``channels`` outputs) to the ports ``spec``
    names, and nowhere else; returns the (mixer port, port) pairs connected. ``channels``: nothing
    to do. ``ports``: the kit's output ports where known (the engine's own JACK client's), else
    PortAudio's found in the graph. A port that is not there is one line (DrumMachineError);
    nothing is changed then."""
    targets = cue_ports(spec)
    if not targets:
        return ()
    inputs, links = _graph()
    ours = (tuple(ports) if ports else mixer_ports(channels, inputs))[-2:]
    found = [find_port(t, inputs) for t in targets]
    pairs = tuple(zip(ours, found if len(found) == 2 else found * 2))
    for port, _ in pairs:
        for other in links.get(port, []):
            _jack("jack_disconnect", port, other)
    for port, target in pairs:
        _jack("jack_connect", port, target)
    return pairs
