"""Audio devices through sounddevice: listing them and finding the one asked for."""

from __future__ import annotations

from drummachine.core.errors import DrumMachineError


def outputs() -> list[dict]:
    """Every output device: index, name, host API, channels and default rate."""
    import sounddevice as sd

    apis = sd.query_hostapis()
    return [{"index": i, "name": d["name"], "api": apis[d["hostapi"]]["name"], "channels": d["max_output_channels"],
             "rate": d["default_samplerate"]} for i, d in enumerate(sd.query_devices()) if d["max_output_channels"] > 0]


def find_output(device, hostapi: str | None):
    """The sounddevice index of the output ``device`` (a number, or a unique part of a name) on
    ``hostapi`` (a part of its name), or the default output."""
    import sounddevice as sd

    try:
        devices = sd.query_devices()
    except Exception as exc:
        raise DrumMachineError("audio", f"cannot list audio devices ({exc})") from None
    outputs = [i for i, d in enumerate(devices) if d["max_output_channels"] >= 2]
    if hostapi:
        apis = sd.query_hostapis()
        outputs = [i for i in outputs if hostapi.lower() in apis[devices[i]["hostapi"]]["name"].lower()]
    if device is None:
        if not outputs:
            raise DrumMachineError("audio", "no audio output device" + (f" on {hostapi}" if hostapi else ""))
        default = sd.default.device[1]
        return default if default in outputs else outputs[0]
    if isinstance(device, int) or str(device).isdigit():
        return int(device)
    hits = [i for i in outputs if str(device).lower() in devices[i]["name"].lower()]
    if len(hits) != 1:
        names = ", ".join(devices[i]["name"] for i in outputs) or "none"
        raise DrumMachineError("--audio-device", f"{device!r} matches {len(hits)} outputs; outputs: {names}")
    return hits[0]


def jack_latencies(port: str | None = None) -> dict[str, dict[str, int]]:
    """Each JACK port's latencies in frames, the most of each range: ``{name: {"capture": n,
    "playback": n}}``, as jackd2's jack_lsp prints them (JACK-Client has no call for them); of
    ``port`` alone when given. {} with no server or no jack_lsp. A port's playback latency is the
    server's count from it to the sound card's output (2 periods on a server at -n 2), and its
    capture latency from the sound card's input to it."""
    import re
    import subprocess

    try:
        out = subprocess.run(["jack_lsp", "-l", *([port] if port else [])], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    ports: dict[str, dict[str, int]] = {}
    name = None
    for line in out.splitlines():
        m = re.match(r"\s+port (capture|playback) latency = \[ *(\d+) +(\d+) *\]", line)
        if m and name is not None:
            ports[name][m.group(1)] = int(m.group(3))
        elif line and not line[0].isspace():
            name = line.strip()
            ports[name] = {"capture": 0, "playback": 0}
    return ports


def playback_latency(stream, rate: int) -> tuple[float, str]:
    """Seconds from the stream's callback to the sound card's output, and whose figure it is. Over
    JACK, the most JACK gives for the stream's own ports: the server's periods to the sound card
    and whatever the kit is routed through (PortAudio says one period where JACK says two at -n 2).
    Elsewhere PortAudio's output latency."""
    import ctypes

    import sounddevice as sd

    latency = stream.latency
    own = float(latency[1] if isinstance(latency, tuple) else latency)
    device = stream.device[1] if isinstance(stream.device, (tuple, list)) else stream.device
    if "JACK" not in sd.query_hostapis(sd.query_devices(device)["hostapi"])["name"]:
        return own, "PortAudio"
    try:  # PortAudio's one JACK client in this process, under the name the server gave it
        name = ctypes.c_char_p()
        if ctypes.CDLL(getattr(sd, "_libname", "libportaudio.so.2")).PaJack_GetClientName(ctypes.byref(name)):
            return own, "PortAudio"
        client = name.value.decode()
    except (OSError, AttributeError):
        return own, "PortAudio"
    frames = [v["playback"] for k, v in jack_latencies().items() if k.startswith(f"{client}:out_")]
    return (max(frames) / rate, "JACK") if frames else (own, "PortAudio")
