"""A stand-in for the model with the Generator interface: a plain rock beat that obeys the cues.

For tests of the engine and the outputs (and for running without a model file): hats on the
8ths, kick on 1 and 3, snare on 2 and 4, velocities from the intensity cue, and a tom run down
the kit on fill steps. ``cost`` (seconds) makes every step take that long, to provoke misses.
"""

from __future__ import annotations

import time

import numpy as np

from drummachine.core.conditioning import Conditioning, Cues, GeneratorStateLike, silenced

FAKE_CONDITIONING = Conditioning(
    styles=("any", "rock", "funk"),
    quantiles={a: list(np.linspace(0.0, 1.0, 101)) for a in ("loudness", "density", "complexity", "syncopation")},
    style_defaults={s: {"intensity": 0.5, "density": 0.5, "complexity": 0.5, "syncopation": 0.3}
                    for s in ("any", "rock", "funk")},
    style_bpm={s: [80.0, 110.0, 160.0] for s in ("any", "rock", "funk")},
)


class FakeGenerator:
    def __init__(self, seed: int = 0, cost: float = 0.0):
        self.cond = FAKE_CONDITIONING
        self.cost = cost
        self.rng = np.random.default_rng(seed)
        self.calls: list[tuple] = []
        self.reset()

    @property
    def styles(self):
        return self.cond.styles

    def reset(self):
        self.prev = np.zeros((3, 9), np.float32)
        self.step_count = 0

    def reseed(self, seed) -> None:
        self.rng = np.random.default_rng(seed)

    def save(self) -> GeneratorStateLike:
        return GeneratorStateLike(self.prev, self.step_count, self.rng.bit_generator.state)

    def restore(self, state: GeneratorStateLike):
        self.prev, self.step_count = state.prev, state.step
        self.rng.bit_generator.state = state.rng_state

    def _pattern(self, step_in_bar: int, cont: np.ndarray) -> np.ndarray:
        hvo = np.zeros((3, 9), np.float32)
        vel = 0.35 + 0.6 * float(cont[1])
        fill = cont[5] > 0.5
        if fill and step_in_bar >= 8:
            voice = 6 - (step_in_bar - 8) // 3  # high, mid, low tom
            hvo[0, max(voice, 4)] = 1.0
            hvo[1, max(voice, 4)] = vel
        else:
            if step_in_bar % 2 == 0:
                hvo[0, 2], hvo[1, 2] = 1.0, vel * (1.0 if step_in_bar % 4 == 0 else 0.7)
            if step_in_bar in (0, 8):
                hvo[0, 0], hvo[1, 0] = 1.0, vel
            if step_in_bar in (4, 12):
                hvo[0, 1], hvo[1, 1] = 1.0, vel
        hvo[2] = np.where(hvo[0] > 0, self.rng.uniform(-0.05, 0.05, 9), 0.0)
        return hvo

    def step(self, style, step_in_bar, bar_in_phrase, cont, steering=None) -> np.ndarray:
        if self.cost:
            time.sleep(self.cost)
        self.calls.append(("step", style, step_in_bar, bar_in_phrase, tuple(np.round(cont, 3))))
        hvo = self._pattern(step_in_bar, np.asarray(cont))
        hvo[:, silenced(cont)] = 0.0  # the palette's off, as the model's generator keeps it
        if steering is not None:
            bias = np.asarray(steering.voice_bias)
            hvo[:, np.isneginf(bias)] = 0.0
        self.prev = hvo
        self.step_count += 1
        return hvo

    def bar(self, style, bpm: float, cues=None, bar_in_phrase: int = 0, steering=None) -> np.ndarray:
        """One 4/4 bar, (16, 3, 9), as Generator.bar."""
        cont = self.cond.cont(bpm, cues if cues is not None else Cues())
        return np.stack([self.step(style, i, bar_in_phrase, cont, steering) for i in range(16)])

    def force(self, hvo, style, step_in_bar, bar_in_phrase, cont) -> None:
        self.calls.append(("force", style, step_in_bar, bar_in_phrase))
        self.prev = np.asarray(hvo, np.float32)
        self.step_count += 1

    def overwrite_last(self, hvo) -> None:
        self.prev = np.asarray(hvo, np.float32)


class FakeKicks(FakeGenerator):
    """A kick on every beat, up to 0.3 step off the grid: isolated onsets to find in a recording."""

    def _pattern(self, step_in_bar: int, cont: np.ndarray) -> np.ndarray:
        hvo = np.zeros((3, 9), np.float32)
        if step_in_bar % 4 == 0:
            hvo[0, 0], hvo[1, 0], hvo[2, 0] = 1.0, 0.9, self.rng.uniform(-0.3, 0.3)
        return hvo
