"""Audio inputs: JACK output ports (what can be listened to) and sounddevice input devices.

``--listen PORT``: a JACK port by full name (``system:capture_1``, ``band:out``), or a unique part
of one; or ``sd:N`` / ``sd:NAME`` for a sounddevice input device. The listening process opens it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass

from drummachine.core.errors import DrumMachineError
from drummachine.core.jack_names import own_port

SOUNDDEVICE_PREFIX = "sd:"
#: PortAudio lists the devices once, when it starts in a process: a device plugged in later is
#: listed by a process of its own (niced: it runs every few seconds while an input is awaited)
LIST_INPUTS = ("import json, os; os.nice(10); from drummachine.listen.inputs import sounddevice_inputs; "
               "print(json.dumps(sounddevice_inputs()))")
LIST_SECONDS = 10.0
#: ALSA's card and device numbers at the end of a PortAudio device's name: an interface plugged
#: back in may come back as another card
ALSA_NUMBERS = re.compile(r"\s*\(hw:\d+,\d+\)$")


@dataclass(frozen=True)
class AudioInput:
    backend: str  #: "jack" or "sounddevice"
    name: str  #: the JACK port's full name, or the device's name
    index: int | None = None  #: sounddevice's device index
    words: str | None = None  #: the part of a device's name the musician gave (``sd:NAME``)


def jack_sources() -> list[str]:
    """The JACK audio ports that carry the band's sound (capture ports, players' outputs): every
    output port but the machine's own."""
    return [p for p in jack_ports() if not own_port(p)]


def jack_ports() -> list[str]:
    """Every JACK audio port that carries sound out of a client."""
    try:
        import jack
    except (ImportError, OSError):
        return []
    try:
        client = jack.Client("drummachine-ports", no_start_server=True)
    except jack.JackError:
        return []
    try:
        return [p.name for p in client.get_ports(is_audio=True, is_output=True)]
    finally:
        client.close()


def sounddevice_inputs(fresh: bool = False) -> list[tuple[int, str]]:
    """sounddevice's input devices, numbered; ``fresh``: as a process starting now lists them (a
    device plugged in since this process's PortAudio started is there too)."""
    if fresh:
        try:
            listed = subprocess.run([sys.executable, "-c", LIST_INPUTS], capture_output=True, text=True,
                                    timeout=LIST_SECONDS)
            return [(int(i), str(n)) for i, n in json.loads(listed.stdout)]
        except (OSError, ValueError, TypeError, subprocess.SubprocessError):
            return []
    try:
        import sounddevice as sd

        return [(i, d["name"]) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
    except Exception:
        return []


def matching_devices(devices: list[tuple[int, str]], want: str) -> list[tuple[int, str]]:
    """The devices ``sd:WANT`` names: by number, or by a part of the name."""
    return [(i, n) for i, n in devices if (want.isdigit() and i == int(want)) or
            (not want.isdigit() and want.lower() in n.lower())]


def same_device(devices: list[tuple[int, str]], chosen: AudioInput) -> int | None:
    """The number of the device ``--listen`` chose, in a list made since (a listening process
    started again): a device unplugged and plugged back, or others come or gone, may be at another
    number, and its ALSA card number may have changed. The same name at the same number, else the
    same name elsewhere, else the one device the musician's words match; None when it is not there."""
    def bare(name: str) -> str:
        return ALSA_NUMBERS.sub("", name)

    if (chosen.index, chosen.name) in devices:
        return chosen.index
    for same in (lambda n: n == chosen.name, lambda n: bare(n) == bare(chosen.name)):
        hits = [i for i, n in devices if same(n)]
        if hits:
            return hits[0]
    hits = matching_devices(devices, chosen.words) if chosen.words else []
    return hits[0][0] if len(hits) == 1 else None


def inputs() -> list[AudioInput]:
    """Every audio input the machine offers now."""
    return [AudioInput("jack", n) for n in jack_sources()] + \
        [AudioInput("sounddevice", n, i) for i, n in sounddevice_inputs()]


def find_input(spec: str) -> AudioInput:
    """The input ``--listen`` names, or DrumMachineError listing what there is."""
    spec = str(spec)
    if spec.startswith(SOUNDDEVICE_PREFIX):
        want = spec[len(SOUNDDEVICE_PREFIX):]
        devices = sounddevice_inputs(fresh=True)
        hits = matching_devices(devices, want)
        if len(hits) != 1:
            names = ", ".join(f"sd:{i} {n}" for i, n in devices) or "none"
            exc = DrumMachineError("--listen", f"{spec!r} matches {len(hits)} input devices; inputs: {names}")
            exc.missing = not hits
            raise exc
        return AudioInput("sounddevice", hits[0][1], hits[0][0], None if want.isdigit() else want)
    everything = jack_ports()
    ports = [p for p in everything if not own_port(p)]
    if spec in ports:
        return AudioInput("jack", spec)
    own = [p for p in everything if own_port(p) and spec.lower() in p.lower()]
    if own and not any(spec.lower() in p.lower() for p in ports):
        # its own kit as the band: it would hear only itself and follow itself (docs/follow.md)
        exc = DrumMachineError("--listen", f"{spec!r} is the machine's own output ({own[0]}), not the band; "
                                           f"ports: {', '.join(ports) or 'none'}")
        exc.missing = False
        raise exc
    hits = [p for p in ports if spec.lower() in p.lower()]
    if len(hits) != 1:
        listed = ", ".join(ports) if ports else "none (is the JACK server running?)"
        exc = DrumMachineError("--listen", f"{spec!r} matches {len(hits)} JACK audio ports; ports: {listed}")
        exc.missing = not hits  #: not there (yet): worth looking again; several: the name is to mend
        raise exc
    return AudioInput("jack", hits[0])
