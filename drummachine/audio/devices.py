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
