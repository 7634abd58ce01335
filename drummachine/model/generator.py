"""The runtime generator: the groove transformer on ONNX Runtime alone, one step at a time.

It keeps the model's KV cache and slides it: at most ``context - 1`` past steps are kept, the
oldest dropped first (a bar at a time). The model has no absolute positions (ALiBi and musical positions only), so
sliding changes nothing but how far back it can listen: it runs for hours without a glitch.

The engine saves the generator's state before every step it keeps ahead and at each section's
start. The saved states share the cache's storage (``KVStore``) instead of each holding a whole
cache of its own (half a megabyte at 127 steps): the nine states kept ahead take one or two
stores, so the memory they hold no longer grows with the cache while the first bars fill it.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass

import numpy as np

from drummachine.core.conditioning import Cues, again_bias, asked_on, due_floor, step_bias
from drummachine.core.errors import DrumMachineError
from drummachine.model.model_file import cache_names, load_model
from drummachine.core.sampling import Steering, sample_step
from drummachine.core.transport import BPM_RANGE, STEPS_PER_BAR
from drummachine.core.voices import HITS, N_VOICES, OFFSETS, VELOCITIES

PHRASE_BARS = 4


class KVStore:
    """Room for ``context`` steps of the KV cache (a key and a value per layer, as the model's
    ``present`` outputs), filled from the front. Saved states read their first steps from it; a step
    that would write over a step a live saved state still reads goes to a copy (copy on write)."""

    __slots__ = ("arrays", "readers")

    def __init__(self, n_arrays: int, n_head: int, context: int, head_dim: int):
        self.arrays = [np.empty((1, n_head, context, head_dim), np.float32) for _ in range(n_arrays)]
        for a in self.arrays:
            # touched now, not page by page while steps are generated: the memory is taken when the
            # store is made, and a step never waits on a page fault
            a.fill(0.0)
        # weak references, looked at and pruned by the generator's thread alone (a WeakSet's
        # callbacks would change it from whichever thread drops a state: the engine's commit thread)
        self.readers: list[weakref.ref] = []

    def add_reader(self, state: GeneratorState) -> None:
        self.readers.append(weakref.ref(state))

    def read_beyond(self, steps: int) -> bool:
        """Whether a live saved state reads more than the first ``steps`` steps."""
        live, beyond = [], False
        for reader in self.readers:
            state = reader()
            if state is not None:
                live.append(reader)
                beyond = beyond or state.cached > steps
        self.readers = live
        return beyond


@dataclass
class GeneratorState:
    """Everything needed to continue a groove later exactly as it would have gone (keep/regenerate)."""

    kv: KVStore  #: the KV cache's storage; the state's cache is its first ``cached`` steps
    cached: int
    prev: np.ndarray
    step: int
    rng_state: dict
    bar_played: np.ndarray  #: (9,) bool: the voices the current bar has played so far


class Generator:
    """Step-by-step groove generation with a sliding KV cache and seeded sampling."""

    def __init__(self, model: str | None = None, seed: int | None = 0, threads: int = 1,
                 provider: str | None = None, loaded=None):
        self.info, self.session = loaded if loaded else load_model(model, threads, provider)
        cfg = self.info.config
        self.n_layer, self.n_head = int(cfg["n_layer"]), int(cfg["n_head"])
        self.head_dim = int(cfg["d_model"]) // self.n_head
        self.context = self.info.context
        self._past_names = cache_names(self.n_layer, "past")
        self.vel_bins = self.info.vel_bins
        self.cond = self.info.conditioning
        self.rng = np.random.default_rng(seed)
        calib = self.info.meta.get("voice_bias") or {}
        self.calibration = np.zeros((len(self.cond.styles), N_VOICES))
        for i, style in enumerate(self.cond.styles):
            if style in calib:
                self.calibration[i] = calib[style]
        meta = self.info.meta
        self.fill_bias = _vector(meta.get("fill_voice_bias"))
        self.played_bias = _vector(meta.get("played_voice_bias"))
        self.again_bias = _vector(meta.get("again_voice_bias"))
        self.velocity_tilt = _vector(meta.get("velocity_tilt"))
        self.use_calibration = True
        self.keep_on = True  #: keep the palette's ON: each voice it plays comes at least once a bar
        self._bias_cache: tuple = (None, None)
        self.kv: KVStore | None = None
        self.reset()

    @property
    def styles(self) -> tuple[str, ...]:
        return self.cond.styles

    def reset(self) -> None:
        """Forget the groove so far (the next step starts from silence)."""
        z = np.zeros((1, self.n_head, 0, self.head_dim), np.float32)
        self.past = [z] * (2 * self.n_layer)  # the model's next cache input; never changed in place
        if self.kv is None or self.kv.read_beyond(0):
            self.kv = self._new_store()
        self.prev = np.zeros((1, 1, 3 * N_VOICES), np.float32)
        self.step_count = 0
        self.bar_played = np.zeros(N_VOICES, bool)

    def warm_up(self, keep: int = 9) -> None:
        """Step once through a whole context and one slide of it, holding the saved states the
        engine holds (the last ``keep`` steps', its lookahead, and a section's first), then forget
        the groove: the memory a full cache takes (ONNX Runtime's buffers for the longest cache,
        the stores a slide keeps, the heap around them) is taken before playing instead of over
        the first eight bars, and a long set's memory stays where it started. Call it from the
        thread that will generate: glibc gives each thread a heap of its own (run from another
        thread, it changed nothing). The dice are left where they were. ~40 ms here."""
        dice = self.rng.bit_generator.state
        cont = self.cond.cont(120.0, self.cond.defaults(self.styles[0]))
        held: deque[GeneratorState] = deque(maxlen=keep)
        section = self.save()  # as the engine keeps a section's first state (keep/regenerate)
        for i in range(self.context + STEPS_PER_BAR):
            held.append(self.save())
            self.step(0, i % STEPS_PER_BAR, i // STEPS_PER_BAR, cont)
        held.clear()
        del section
        self.rng.bit_generator.state = dice
        self.reset()

    def reseed(self, seed: int | None) -> None:
        """Start the sampling dice over from ``seed`` (the groove so far is kept)."""
        self.rng = np.random.default_rng(seed)

    def save(self) -> GeneratorState:
        """The state before the next step. No copy of the cache: the state reads it from the shared
        store, which is never written over where a live state reads (cheap enough before every step)."""
        state = GeneratorState(self.kv, self.cached_steps, self.prev, self.step_count,
                               self.rng.bit_generator.state, self.bar_played)
        self.kv.add_reader(state)
        return state

    def restore(self, state: GeneratorState) -> None:
        self.kv, self.prev = state.kv, state.prev
        self.past = [np.ascontiguousarray(a[:, :, :state.cached]) for a in state.kv.arrays]
        self.step_count = state.step
        self.rng.bit_generator.state = state.rng_state
        self.bar_played = state.bar_played

    def logits(self, cats: np.ndarray, cont: np.ndarray) -> np.ndarray:
        """Run the model on one step (advancing the cache); returns (9, out) logits."""
        keep = self.context - 1
        if self.cached_steps > keep:
            # drop a bar's worth at once: one copy of the cache every 16 steps instead of every step;
            # the model then hears between 111 and 127 steps back (it was trained on 0 to 127)
            keep -= STEPS_PER_BAR - 1
            self.past = [np.ascontiguousarray(t[:, :, -keep:]) for t in self.past]
            self.kv = self._new_store(self.past)
        feed = self.cache_feed()
        feed.update(prev=self.prev, cats=cats.reshape(1, 1, 3), cont=cont.reshape(1, 1, -1))
        n = self.cached_steps
        out, *self.past = self.session.run(None, feed)
        if self.kv.read_beyond(n):  # a saved state reads the step this one goes to: keep it for it
            self.kv = self._new_store(self.past)
        else:
            for stored, present in zip(self.kv.arrays, self.past):
                stored[:, :, n] = present[:, :, n]
        return out[0, 0]

    def _new_store(self, cache: list[np.ndarray] | None = None) -> KVStore:
        """A store for the cache, holding ``cache`` (the model's ``present`` outputs) if given."""
        store = KVStore(2 * self.n_layer, self.n_head, self.context, self.head_dim)
        for stored, present in zip(store.arrays, cache or ()):
            stored[:, :, :present.shape[2]] = present
        return store

    def cache_feed(self) -> dict[str, np.ndarray]:
        """The KV cache as the model's inputs (after ``reset``: empty)."""
        return dict(zip(self._past_names, self.past))

    @property
    def cached_steps(self) -> int:
        """How many steps the cache holds (at most ``context``: the next step hears at most ``context - 1``)."""
        return self.past[0].shape[2]

    def step(self, style: int, step_in_bar: int, bar_in_phrase: int, cont: np.ndarray,
             steering: Steering = Steering()) -> np.ndarray:
        """Generate one step; returns (3, 9) hits, velocities, offsets and feeds it back."""
        cats = np.array([style, step_in_bar % STEPS_PER_BAR, bar_in_phrase % PHRASE_BARS], np.int64)
        cont = np.asarray(cont, np.float32)
        logits = self.logits(cats, cont)
        calib, on = self._bias(style, cont)
        played = self._played_before(step_in_bar)
        asked = on.any()
        floor = due_floor(cont, played, step_in_bar, on=on) if self.keep_on and asked else None
        use = self.use_calibration
        if use and self.again_bias is not None and asked:
            again = again_bias(cont, played, self.again_bias, on=on)
            if again is not None:
                calib = again if calib is None else calib + again
        hits, vel, off = sample_step(logits, self.vel_bins, steering, self.rng, calibration=calib, floor=floor,
                                     velocity_tilt=self.velocity_tilt if use else None)
        hvo = np.empty((3, N_VOICES), np.float32)
        hvo[HITS], hvo[VELOCITIES], hvo[OFFSETS] = hits, vel, off
        self.prev = hvo.reshape(1, 1, 3 * N_VOICES)
        self.bar_played = played | hits
        self.step_count += 1
        return hvo

    def _bias(self, style: int, cont: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """The step's hit-logit bias (conditioning.step_bias) and the voices its palette plays
        (conditioning.asked_on), worked out once per bar's inputs."""
        use = self.use_calibration
        parts = (self.calibration[style] if use and 0 <= style < len(self.calibration) else None,
                 self.fill_bias if use else None, self.played_bias if use else None)
        # the corrections are in the key too: calibration changes them between passes
        key = (cont.tobytes(), *(None if p is None else p.tobytes() for p in parts))
        if self._bias_cache[0] != key:
            self._bias_cache = (key, (step_bias(cont, *parts), asked_on(cont)))
        return self._bias_cache[1]

    def _played_before(self, step_in_bar: int) -> np.ndarray:
        """The voices this bar has played before ``step_in_bar`` (a new bar starts with none)."""
        return np.zeros(N_VOICES, bool) if step_in_bar % STEPS_PER_BAR == 0 else self.bar_played

    def force(self, hvo: np.ndarray, style: int, step_in_bar: int, bar_in_phrase: int, cont: np.ndarray) -> None:
        """Advance through a step that was played without the model (a fallback, a count-in)."""
        cats = np.array([style, step_in_bar % STEPS_PER_BAR, bar_in_phrase % PHRASE_BARS], np.int64)
        self.logits(cats, np.asarray(cont, np.float32))
        self.bar_played = self._played_before(step_in_bar)
        self.overwrite_last(hvo)
        self.step_count += 1

    def overwrite_last(self, hvo: np.ndarray) -> None:
        """Make ``hvo`` (3, 9) the step the model hears as the last one played (after an accent, say)."""
        self.prev = np.asarray(hvo, np.float32).reshape(1, 1, 3 * N_VOICES)
        self.bar_played = self.bar_played | (self.prev[0, 0, :N_VOICES] > 0.5)

    def bar(self, style: str | int, bpm: float, cues: Cues = Cues(), bar_in_phrase: int = 0,
            steering: Steering = Steering()) -> np.ndarray:
        """Generate one 4/4 bar: (16, 3, 9)."""
        s = style if isinstance(style, int) else self.cond.style_index(style)
        check_bpm(bpm)
        cont = self.cond.cont(bpm, cues)
        return np.stack([self.step(s, i, bar_in_phrase, cont, steering) for i in range(STEPS_PER_BAR)])


def _vector(values) -> np.ndarray | None:
    """A per-voice correction from a model file's metadata (None where the file has none)."""
    return np.asarray(values, np.float64) if values else None


def check_bpm(bpm: float) -> float:
    lo, hi = BPM_RANGE
    if not (isinstance(bpm, (int, float)) and lo <= bpm <= hi):
        shown = f"{bpm:g}" if isinstance(bpm, (int, float)) else repr(bpm)
        raise DrumMachineError("bpm", f"{shown} is out of range; allowed: {lo:g}-{hi:g}")
    return float(bpm)

