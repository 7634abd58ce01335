"""Drum sounds: a kit synthesized with numpy at start-up, a folder of WAV files, or a Hydrogen kit.

A kit holds, for every voice, a few velocity layers (soft to hard; harder is brighter) as mono
float32 arrays at the kit's sample rate, the velocity range each layer plays for, a stereo pan
per voice and who chokes whom. ``open_kit`` takes what ``--kit`` names (nothing: the built-in;
a folder of WAVs named by voice; a Hydrogen kit by folder or by name, see ``audio.hydrogen``).
A decoded kit also travels packed (``Decoded``: one float32 array and a JSON layout), which is
how the mixer process gets it without a copy (``SharedKit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drummachine.core.errors import DrumMachineError
from drummachine.core.shared_block import release
from drummachine.core.voices import CHOKES, N_VOICES, VOICE_NAMES, VOICES
from drummachine.audio.wavfile import read_wav

SAMPLE_RATES = (44100, 48000)
DEFAULT_SAMPLE_RATE = 48000  #: where the output plays any rate
LAYERS = 4
#: pan per voice, -1 left .. +1 right (drummer's perspective, hats on the right)
PANS = (0.0, 0.0, 0.35, 0.35, -0.45, -0.15, 0.2, 0.4, -0.4)


VELOCITY_STEPS = 128  #: a layer is chosen per MIDI velocity step


@dataclass(frozen=True, eq=False)
class Kit:
    """Velocity layers per voice and pans; ``layers[voice][k]`` is layer k (0 = softest).

    ``ranges[voice][k]`` is the velocity range (0..1, ends included) layer k plays for; None:
    the layers split 0..1 evenly (the built-in kit). Where a velocity fits several layers of the
    same range (or any that fit, for a voice marked ``round_robin``), successive hits take turns.
    """

    name: str
    sample_rate: int
    layers: tuple[tuple[np.ndarray, ...], ...]
    pans: tuple[float, ...] = PANS
    ranges: tuple[tuple[tuple[float, float], ...], ...] | None = None
    round_robin: tuple[bool, ...] = (False,) * N_VOICES
    chokes: dict[int, tuple[int, ...]] = field(default_factory=lambda: dict(CHOKES))
    sources: tuple[str, ...] = ()  #: what plays each voice, in words (for listings)

    def __post_init__(self):
        # per voice, per velocity step: the layers that may play (chosen now, not in the callback)
        choice = None
        if self.ranges is not None:
            choice = tuple(tuple(_candidates(r, b / (VELOCITY_STEPS - 1), rr) for b in range(VELOCITY_STEPS))
                           for r, rr in zip(self.ranges, self.round_robin))
        object.__setattr__(self, "_choice", choice)
        object.__setattr__(self, "_turn", [0] * len(self.layers))

    def sample(self, voice: int, velocity: float) -> tuple[np.ndarray, float]:
        """The layer for a velocity (0..1) and the gain to play it at."""
        layers = self.layers[voice]
        if self._choice is None:
            k = min(len(layers) - 1, int(velocity * len(layers)))
        else:
            step = int(velocity * (VELOCITY_STEPS - 1) + 0.5)
            fits = self._choice[voice][0 if step < 0 else VELOCITY_STEPS - 1 if step >= VELOCITY_STEPS else step]
            if len(fits) == 1:
                k = fits[0]
            else:
                turn = self._turn[voice]
                k = fits[turn % len(fits)]
                self._turn[voice] = turn + 1
        return layers[k], velocity_gain(velocity)

    def rewind(self) -> None:
        """Round robins start again from their first layer (an offline render is reproducible)."""
        for v in range(len(self._turn)):
            self._turn[v] = 0

    def pan_gains(self) -> np.ndarray:
        """(voices, 2) constant-power left/right gains."""
        angle = (np.asarray(self.pans) + 1.0) * np.pi / 4.0
        return np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32) * np.float32(np.sqrt(2.0) * 0.5)

    @property
    def longest(self) -> int:
        return max(len(layer) for voice in self.layers for layer in voice)

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for voice in self.layers for layer in voice)


def _candidates(ranges: tuple[tuple[float, float], ...], velocity: float, round_robin: bool) -> tuple[int, ...]:
    eps = 1e-6
    fits = [k for k, (lo, hi) in enumerate(ranges) if lo - eps <= velocity <= hi + eps]
    if not fits:  # a gap in the kit's ranges: the nearest layer
        return (min(range(len(ranges)), key=lambda k: min(abs(velocity - ranges[k][0]), abs(velocity - ranges[k][1]))),)
    if round_robin:
        return tuple(fits)
    first = ranges[fits[0]]
    return tuple(k for k in fits if ranges[k] == first)


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
    layers = tuple(_synth_layers(voice.name, sample_rate, rng) for voice in VOICES)
    return Kit("built-in", sample_rate, layers, sources=("built-in",) * N_VOICES)


def synth_voice(name: str, sample_rate: int) -> tuple[np.ndarray, ...]:
    """One voice of the built-in kit (its own noise: it stands in for a voice a sampled kit lacks)."""
    return _synth_layers(name, sample_rate, np.random.default_rng(1234 + VOICE_NAMES.index(name)))


def _synth_layers(name: str, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    per_voice = []
    for k in range(LAYERS):
        x = _voice(name, sample_rate, (k + 0.5) / LAYERS, rng)
        peak = np.max(np.abs(x))
        level = {"kick": 0.95, "snare": 0.8, "crash": 0.45, "ride": 0.4}.get(name, 0.6)
        fade = max(1, len(x) // 8)  # end every sample at silence: no click when it stops
        x[-fade:] *= np.linspace(1.0, 0.0, fade)
        per_voice.append((x / peak * level).astype(np.float32))
    return tuple(per_voice)


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """soxr's high-quality filter (linear interpolation folded a 23 kHz tone back at -5 dB: docs/kits.md)."""
    if src == dst:
        return x
    import soxr

    return np.ascontiguousarray(soxr.resample(x, src, dst, quality="HQ"), dtype=np.float32)


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
    return Kit(folder.name, sample_rate, tuple(layers), sources=tuple(f"{n}.wav" for n in VOICE_NAMES))


# --- what --kit names -------------------------------------------------------------------------

def open_kit(spec: str | Path | None, sample_rate: int = 48000) -> Kit:
    """The kit ``--kit`` names: None the built-in, a folder of WAVs named by voice, or a Hydrogen
    kit (a folder with a drumkit.xml, or a kit's name in the Hydrogen kit folders)."""
    if not spec:
        return synth_kit(sample_rate)
    decoded = decode(spec, sample_rate)
    return from_packed(decoded.data, decoded.layout)


def decode(spec: str | Path, sample_rate: int = 48000):
    """The kit ``spec`` names, decoded at ``sample_rate`` and packed (``hydrogen.Decoded``)."""
    from drummachine.audio import hydrogen

    if sample_rate not in SAMPLE_RATES:
        raise DrumMachineError("sample rate", f"{sample_rate} Hz; allowed: {', '.join(map(str, SAMPLE_RATES))}")
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        if "/" in str(spec) or str(spec).startswith((".", "~")):
            raise DrumMachineError(str(spec), "kit folder does not exist")
        folder = hydrogen.find_kit(str(spec))
    if not (folder / "drumkit.xml").is_file():
        return pack(load_kit(folder, sample_rate))
    kit = hydrogen.read_drumkit(folder)
    sources = hydrogen.map_voices(kit)
    decoded, _ = hydrogen.decode_kit(kit, sources, sample_rate)
    return decoded


def built_in(sample_rate: int = 48000):
    """The built-in kit packed (``hydrogen.Decoded``), from the cache when this version of it was
    synthesized before (synthesis takes half a second; reading it, milliseconds)."""
    import hashlib

    from drummachine.audio import hydrogen

    if sample_rate not in SAMPLE_RATES:
        raise DrumMachineError("sample rate", f"{sample_rate} Hz; allowed: {', '.join(map(str, SAMPLE_RATES))}")
    key = hashlib.sha256(Path(__file__).read_bytes() + str(sample_rate).encode()).hexdigest()[:24]
    family = f"built-in-{sample_rate}"
    return hydrogen.cached(f"{family}-{key}", lambda: pack(synth_kit(sample_rate)), family=family)[0]


def pack(kit: Kit):
    """A kit as one float32 array and its layout (``hydrogen.Decoded``)."""
    from drummachine.audio.hydrogen import CACHE_FORMAT, Decoded

    parts, layers, offset = [], [], 0
    for v, per_voice in enumerate(kit.layers):
        ranges = kit.ranges[v] if kit.ranges is not None else \
            tuple((k / len(per_voice), (k + 1) / len(per_voice)) for k in range(len(per_voice)))
        for x, (lo, hi) in zip(per_voice, ranges):
            parts.append(x)
            layers.append({"voice": v, "offset": offset, "frames": len(x), "low": lo, "high": hi})
            offset += len(x)
    layout = {"format": CACHE_FORMAT, "name": kit.name, "rate": kit.sample_rate, "frames": offset, "layers": layers,
              "round_robin": list(kit.round_robin), "pans": list(kit.pans),
              "chokes": {str(k): list(v) for k, v in kit.chokes.items()},
              "even": kit.ranges is None, "sources": list(kit.sources)}
    return Decoded(np.concatenate(parts).astype(np.float32, copy=False), layout)


def from_packed(data: np.ndarray, layout: dict) -> Kit:
    """The kit whose layers are views into ``data`` (no copy: ``data`` may be shared memory)."""
    rate = int(layout["rate"])
    per_voice: list[list] = [[] for _ in range(N_VOICES)]
    for row in layout["layers"]:
        view = data[row["offset"]:row["offset"] + row["frames"]]
        per_voice[row["voice"]].append((view, (float(row["low"]), float(row["high"]))))
    for v, name in enumerate(VOICE_NAMES):
        if not per_voice[v]:  # the kit lacks it and nothing of the kit stands in: the built-in's
            layers = synth_voice(name, rate)
            per_voice[v] = [(x, (k / len(layers), (k + 1) / len(layers))) for k, x in enumerate(layers)]
    pans = tuple(PANS[v] if p is None else float(p) for v, p in enumerate(layout["pans"]))
    return Kit(layout["name"], rate, tuple(tuple(x for x, _ in layers) for layers in per_voice), pans,
               None if layout.get("even") else tuple(tuple(r for _, r in layers) for layers in per_voice),
               tuple(bool(x) for x in layout["round_robin"]),
               {int(k): tuple(v) for k, v in layout["chokes"].items()}, tuple(layout.get("sources", ())))


class SharedKit:
    """A packed kit in shared memory (readable by this user only: POSIX shm is created 0600): the
    engine process decodes it once and the mixer process maps it, with no copy; a restarted mixer
    maps it again instead of decoding."""

    def __init__(self, decoded=None, name: str | None = None, layout: dict | None = None):
        from multiprocessing import shared_memory

        if name is None:
            self.layout = decoded.layout
            self.shm = shared_memory.SharedMemory(create=True, size=max(4, decoded.data.nbytes))
            self.owner = True
            np.ndarray(decoded.data.shape, np.float32, self.shm.buf)[:] = decoded.data
        else:
            self.layout = layout
            self.shm = shared_memory.SharedMemory(name=name)
            self.owner = False  # (the mixer process untracks it: see audio.mixer.serve)
        self.data = np.ndarray((int(self.layout["frames"]),), np.float32, self.shm.buf)
        if not self.owner:
            self.data.flags.writeable = False
            # map every page now (one read per 4 KiB page, a few ms for a large kit): the callback's
            # first hit of a layer must not wait on the kernel
            float(self.data[::1024].sum())

    @property
    def name(self) -> str:
        return self.shm.name

    def kit(self) -> Kit:
        return from_packed(self.data, self.layout)

    def close(self) -> None:
        self.data = None
        release(self.shm, self.owner)


assert len(PANS) == N_VOICES
