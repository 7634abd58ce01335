"""Audio inputs: JACK output ports (what can be listened to) and sounddevice input devices.

``--listen PORT``: a JACK port by full name (``system:capture_1``, ``band:out``), or a unique part
of one; or ``sd:N`` / ``sd:NAME`` for a sounddevice input device. The listening process opens it.
"""

from __future__ import annotations

from dataclasses import dataclass

from drummachine.core.errors import DrumMachineError

SOUNDDEVICE_PREFIX = "sd:"


@dataclass(frozen=True)
class AudioInput:
    backend: str  #: "jack" or "sounddevice"
    name: str  #: the JACK port's full name, or the device's name
    index: int | None = None  #: sounddevice's device index


def jack_sources() -> list[str]:
    """The JACK audio ports that carry sound out of a client (capture ports, players' outputs)."""
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


def sounddevice_inputs() -> list[tuple[int, str]]:
    try:
        import sounddevice as sd

        return [(i, d["name"]) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
    except Exception:
        return []


def inputs() -> list[AudioInput]:
    """Every audio input the machine offers now."""
    return [AudioInput("jack", n) for n in jack_sources()] + \
        [AudioInput("sounddevice", n, i) for i, n in sounddevice_inputs()]


def find_input(spec: str) -> AudioInput:
    """The input ``--listen`` names, or DrumMachineError listing what there is."""
    spec = str(spec)
    if spec.startswith(SOUNDDEVICE_PREFIX):
        want = spec[len(SOUNDDEVICE_PREFIX):]
        devices = sounddevice_inputs()
        hits = [(i, n) for i, n in devices if (want.isdigit() and i == int(want)) or
                (not want.isdigit() and want.lower() in n.lower())]
        if len(hits) != 1:
            names = ", ".join(f"sd:{i} {n}" for i, n in devices) or "none"
            raise DrumMachineError("--listen", f"{spec!r} matches {len(hits)} input devices; inputs: {names}")
        return AudioInput("sounddevice", hits[0][1], hits[0][0])
    ports = jack_sources()
    if spec in ports:
        return AudioInput("jack", spec)
    hits = [p for p in ports if spec.lower() in p.lower()]
    if len(hits) != 1:
        listed = ", ".join(ports) if ports else "none (is the JACK server running?)"
        exc = DrumMachineError("--listen", f"{spec!r} matches {len(hits)} JACK audio ports; ports: {listed}")
        exc.missing = not hits  #: not there (yet): worth looking again; several: the name is to mend
        raise exc
    return AudioInput("jack", hits[0])
