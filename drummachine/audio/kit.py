"""Drum sounds: a kit synthesized with numpy at start-up, or a folder of WAV files.

A kit holds, for every voice, a few velocity layers (soft to hard; harder is brighter) as mono
float32 arrays at the kit's sample rate, and a stereo pan per voice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drummachine.core.errors import DrumMachineError
from drummachine.core.voices import N_VOICES, VOICE_NAMES, VOICES
from drummachine.audio.wavfile import read_wav

SAMPLE_RATES = (44100, 48000)
LAYERS = 4
#: pan per voice, -1 left .. +1 right (drummer's perspective, hats on the right)
PANS = (0.0, 0.0, 0.35, 0.35, -0.45, -0.15, 0.2, 0.4, -0.4)


@dataclass(frozen=True, eq=False)
class Kit:
    """Velocity layers per voice and pans; ``layers[voice][k]`` is layer k (0 = softest)."""

    name: str
    sample_rate: int
    layers: tuple[tuple[np.ndarray, ...], ...]
    pans: tuple[float, ...] = PANS

    def sample(self, voice: int, velocity: float) -> tuple[np.ndarray, float]:
        """The layer for a velocity (0..1) and the gain to play it at."""
        layers = self.layers[voice]
        k = min(len(layers) - 1, int(velocity * len(layers)))
        return layers[k], velocity_gain(velocity)

    def pan_gains(self) -> np.ndarray:
        """(voices, 2) constant-power left/right gains."""
        angle = (np.asarray(self.pans) + 1.0) * np.pi / 4.0
        return np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32) * np.float32(np.sqrt(2.0) * 0.5)

    @property
    def longest(self) -> int:
        return max(len(layer) for voice in self.layers for layer in voice)


def velocity_gain(velocity: float) -> float:
    """Loudness curve: about 30 dB from the softest to the hardest hit."""
    v = min(max(velocity, 0.0), 1.0)
    return 0.03 + 0.97 * v ** 1.6


# --- synthesis -------------------------------------------------------------------------------

def _env(n: int, rate: int, decay: float, attack: float = 0.0003) -> np.ndarray:
    t = np.arange(n) / rate
    a = np.minimum(1.0, (np.arange(n) + 1) / max(1.0, attack * rate))
    return a * np.exp(-t / decay)


def _sweep(n: int, rate: int, f_start: float, f_end: float, time: float) -> np.ndarray:
    t = np.arange(n) / rate
    freq = f_end + (f_start - f_end) * np.exp(-t / time)
    return np.sin(2 * np.pi * np.cumsum(freq) / rate)


def _highpass(x: np.ndarray, rate: int, cutoff: float) -> np.ndarray:
    """x minus its moving average over about one period of ``cutoff``: a cheap, stable high-pass."""
    width = max(2, int(rate / cutoff))
    c = np.cumsum(np.concatenate([np.zeros(width), x]))
    return x - (c[width:] - c[:-width]) / width


def _metal(n: int, rate: int, base: float, rng: np.random.Generator) -> np.ndarray:
    """Inharmonic square partials (the classic 808 cymbal recipe)."""
    t = np.arange(n) / rate
    ratios = (1.0, 1.4471, 1.6170, 1.9265, 2.5028, 2.6637)
    return sum(np.sign(np.sin(2 * np.pi * base * r * t + rng.uniform(0, 6.28))) for r in ratios) / len(ratios)


def _voice(name: str, rate: int, hard: float, rng: np.random.Generator) -> np.ndarray:
    """One velocity layer: ``hard`` 0..1 makes attacks brighter and longer-ringing."""
    def noise(n):
        return rng.standard_normal(n)

    if name == "kick":
        n = int(0.45 * rate)
        body = _sweep(n, rate, 160 + 60 * hard, 48, 0.035) * _env(n, rate, 0.22)
        click = _highpass(noise(n), rate, 2000) * _env(n, rate, 0.002) * (0.3 + 0.5 * hard)
        return body + click
    if name == "snare":
        n = int(0.35 * rate)
        tone = (0.6 * _sweep(n, rate, 260, 185, 0.02) + 0.3 * np.sin(2 * np.pi * 330 * np.arange(n) / rate))
        wires = _highpass(noise(n), rate, 1200 + 2500 * hard)
        return tone * _env(n, rate, 0.06) + (0.55 + 0.35 * hard) * wires * _env(n, rate, 0.11 + 0.05 * hard)
    if name in ("closed_hat", "open_hat"):
        n = int((0.18 if name == "closed_hat" else 1.1) * rate)
        decay = 0.035 + 0.02 * hard if name == "closed_hat" else 0.35 + 0.15 * hard
        sound = 0.6 * _highpass(noise(n), rate, 6000) + 0.5 * _highpass(_metal(n, rate, 320, rng), rate, 5000)
        return sound * _env(n, rate, decay)
    if name in ("low_tom", "mid_tom", "high_tom"):
        f0 = {"low_tom": 92.0, "mid_tom": 128.0, "high_tom": 172.0}[name]
        n = int(0.7 * rate)
        body = _sweep(n, rate, f0 * 1.6, f0, 0.05) * _env(n, rate, 0.25 + 0.1 * hard)
        return body + 0.15 * hard * _highpass(noise(n), rate, 3000) * _env(n, rate, 0.01)
    if name == "crash":
        n = int(2.6 * rate)
        sound = 0.7 * _highpass(noise(n), rate, 3500) + 0.4 * _highpass(_metal(n, rate, 420, rng), rate, 3000)
        return sound * _env(n, rate, 0.7 + 0.5 * hard, attack=0.001)
    if name == "ride":
        n = int(2.2 * rate)
        t = np.arange(n) / rate
        bell = sum(np.sin(2 * np.pi * f * t) for f in (520.0, 1041.0, 1563.0, 2780.0)) / 4
        wash = _highpass(_metal(n, rate, 510, rng), rate, 4000) * 0.35 + 0.2 * _highpass(noise(n), rate, 7000)
        ping = _highpass(noise(n), rate, 5000) * _env(n, rate, 0.012) * (0.3 + 0.5 * hard)
        return (0.35 * bell + wash) * _env(n, rate, 0.9) + ping
    raise ValueError(name)


def synth_kit(sample_rate: int = 48000) -> Kit:
    """The built-in kit, synthesized (deterministically) at ``sample_rate``."""
    if sample_rate not in SAMPLE_RATES:
        raise DrumMachineError("sample rate", f"{sample_rate} Hz; allowed: {', '.join(map(str, SAMPLE_RATES))}")
    rng = np.random.default_rng(1234)
    layers = []
    for voice in VOICES:
        per_voice = []
        for k in range(LAYERS):
            x = _voice(voice.name, sample_rate, (k + 0.5) / LAYERS, rng)
            peak = np.max(np.abs(x))
            level = {"kick": 0.95, "snare": 0.8, "crash": 0.45, "ride": 0.4}.get(voice.name, 0.6)
            fade = max(1, len(x) // 8)  # end every sample at silence: no click when it stops
            x[-fade:] *= np.linspace(1.0, 0.0, fade)
            per_voice.append((x / peak * level).astype(np.float32))
        layers.append(tuple(per_voice))
    return Kit("built-in", sample_rate, tuple(layers))


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return x
    n = int(round(len(x) * dst / src))
    return np.interp(np.arange(n) * (src / dst), np.arange(len(x)), x).astype(np.float32)


def load_kit(folder: str | Path, sample_rate: int = 48000) -> Kit:
    """A user kit: ``<voice>.wav`` for each of the nine voices (kick.wav, snare.wav, ...).

    Stereo files are mixed to mono; other sample rates are resampled. Every voice must be there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DrumMachineError(str(folder), "kit folder does not exist")
    layers = []
    for name in VOICE_NAMES:
        path = folder / f"{name}.wav"
        if not path.is_file():
            raise DrumMachineError(str(path), f"missing sample for voice {name}; a kit needs "
                                   f"{', '.join(n + '.wav' for n in VOICE_NAMES)}")
        data, rate = read_wav(path)
        mono = _resample(data.mean(axis=1).astype(np.float32), rate, sample_rate)
        peak = float(np.max(np.abs(mono)))
        if peak == 0.0:
            raise DrumMachineError(str(path), "the sample is silent")
        layers.append((mono,))
    return Kit(folder.name, sample_rate, tuple(layers))


assert len(PANS) == N_VOICES
