"""Audio devices through sounddevice: listing them and finding the one asked for."""

from __future__ import annotations

from drummachine.core.errors import DrumMachineError
from drummachine.core.jack_latency import jack_lsp_latencies


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
    frames = [v["playback"] for k, v in jack_lsp_latencies().items() if k.startswith(f"{client}:out_")]
    return (max(frames) / rate, "JACK") if frames else (own, "PortAudio")
