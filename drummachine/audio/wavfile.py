"""WAV files in and out with the standard library's ``wave`` (PCM 8/16/24/32-bit)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from drummachine.core.errors import DrumMachineError


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples as float32 (frames, channels) in -1..1, sample rate)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except FileNotFoundError:
        raise DrumMachineError(str(path), "no such file") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise DrumMachineError(str(path), f"not a readable PCM WAV file ({exc}); save it as 16- or 24-bit PCM") from None
    if frames == 0 or not raw:
        raise DrumMachineError(str(path), "the WAV file holds no audio")
    usable = len(raw) // (width * channels) * width * channels
    raw = raw[:usable]
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        data = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise DrumMachineError(str(path), f"{8 * width}-bit samples are not supported")
    return data.reshape(-1, channels), rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write float samples (frames,) or (frames, channels) as 16-bit PCM, clipping at full scale."""
    if samples.ndim == 1:
        samples = samples[:, None]
    ints = np.clip(np.rint(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(ints.tobytes())
