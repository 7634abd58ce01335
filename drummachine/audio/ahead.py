"""Mixing ahead of the playhead: the audio callback only copies blocks that are already mixed.

``MixAhead`` mixes the voices a few blocks ahead of the playhead (the frame the audio callback
plays next) into a ring of samples; the callback copies what is ready (``copy_out``) and never
mixes. It runs in the mixer process's mixing thread (``audio.mixer``), woken by the callback,
or in the ring writer (``audio.ring_out``), which hands each block to rtmixer's ring as it is mixed.

Onsets stay on their exact sample. An event is added to the voices only when the block that
holds its frame is mixed, so the voices' state before each mixed block depends only on the
events before that block; that state is kept for each block not yet played. An event that
arrives for a frame already mixed (later than the horizon: an immediate hit, a level change)
re-mixes from the block that holds its frame: the voices go back to their state before that
block, and that block and those after it are mixed again with every event they had plus the new
one. Only the block the callback plays next is never re-mixed (it may be copied at any moment):
an event for a frame in it sounds at the start of the block after, at most one period late;
level changes (sent for "now") take effect from there too.

``copy_out`` is the callback's whole job: copy a ready block, or report that it was not ready
(the caller plays silence and counts it). Both threads share the GIL, so the bookkeeping needs no
lock: the mixing thread lowers ``rendered`` before it rewrites samples and raises it after, and
the callback checks the range again after its copy.
"""

from __future__ import annotations

import heapq

import numpy as np

from drummachine.audio.mixing import Voices
from drummachine.audio.wire import LEVEL

AHEAD_BLOCKS = 3  #: blocks mixed ahead of the playhead: the mixing thread may be this many periods late, less one


class MixAhead:
    """The voices mixed ``ahead`` blocks of ``block`` frames ahead of the playhead into a ring."""

    def __init__(self, voices: Voices, block: int = 128, ahead: int = AHEAD_BLOCKS, start: int = 0):
        self.voices = voices
        self.block = block
        self.ahead = max(1, ahead)
        self.size = (self.ahead + 2) * block  # the ahead blocks, the one playing, one spare
        self.samples = np.zeros((self.size, voices.channels), np.float32)
        self.scratch = np.zeros((block, voices.channels), np.float32)
        self.valid_from = start  #: frames in [valid_from, rendered) are mixed and in the ring
        self.rendered = start
        self.generation = 0  #: bumped before a re-mix rewrites mixed blocks (the callback checks it)
        self.playhead = start  #: the frame the callback plays next (it sets this after each copy)
        self.pending: list[tuple[int, int, int, float]] = []  # heap of (frame, order, voice, value)
        self.order = 0
        #: per mixed block still in the ring: (its first frame, the voices' state before it, its events)
        self.history: list[tuple[int, tuple, list]] = []
        self.remixed = 0  #: blocks mixed again because an event came for a frame already mixed
        self.late = 0  #: events that came for the block playing next or earlier (played at the block after)
        self.behind = 0  #: times the mixing fell behind the playhead and started again from it
        self.tap = None  #: each block mixed also goes here (``wire.KitTap``: the listening process's)

    # --- the mixing thread ----------------------------------------------------------------
    def schedule(self, frame: int, voice: int, value: float) -> None:
        """An event: a hit of ``voice`` at ``frame``, or a bus level (voice ``LEVEL`` + bus, at
        ``frame`` 0: from now). One for a frame already mixed re-mixes from there."""
        if voice >= LEVEL:
            frame = 0
        first = self.playhead + self.block  # the first frame that may still be mixed again
        if frame < first:
            if voice < LEVEL:
                self.late += 1
            frame = first
        if frame < self.rendered:
            self._back_to(frame)
        heapq.heappush(self.pending, (frame, self.order, voice, value))
        self.order += 1

    def panic(self) -> None:
        """Silence from the first block that may be mixed again: every voice and every event
        not yet played is dropped (the block playing next still sounds: one period)."""
        first = self.playhead + self.block
        if first < self.rendered:
            self._back_to(first)
        # a level is not a sound: a level change still pending stays (CC 108 right before a stop)
        self.pending = [event for event in self.pending if event[2] >= LEVEL]
        heapq.heapify(self.pending)
        self.voices.clear()

    def advance(self, limit: int | None = None) -> int:
        """Mix blocks until ``ahead`` blocks past the playhead are ready (at most ``limit``);
        returns how many."""
        playhead = self.playhead
        if self.rendered < playhead + self.block:
            # behind (the thread was stalled, or a restarted mixer's first block): start again at
            # the playhead, with what sounds; events meant for the gap play at its first frame
            if self.rendered != self.valid_from or self.rendered != playhead:
                self.behind += self.rendered < playhead
            self.generation += 1
            self.rendered = self.valid_from = playhead
            self.history.clear()
        done = 0
        target = playhead + self.ahead * self.block
        while self.rendered < target and (limit is None or done < limit):
            self._mix_one()
            done += 1
        return done

    def _mix_one(self) -> None:
        voices, start = self.voices, self.rendered
        end = start + self.block
        state = voices.state()
        added = []
        pending = self.pending
        while pending and pending[0][0] < end:
            event = heapq.heappop(pending)
            frame, _, voice, value = event
            if voice >= LEVEL:
                voices.set_level(voice - LEVEL, value)
            else:
                voices.add(frame if frame >= start else start, voice, value)
            added.append(event)
        out = self.scratch
        out.fill(0.0)
        voices.mix(out, start)
        voices.limit(out)
        self._write(out, start)
        if self.tap is not None:
            self.tap.write(out, start)
        self.history.append((start, state, added))
        if len(self.history) > self.ahead + 1:
            del self.history[0]
        if end - self.size > self.valid_from:  # the ring's oldest frames were just written over
            self.valid_from = end - self.size
        self.rendered = end

    def _back_to(self, frame: int) -> None:
        """Undo the mixing of every block from the one holding ``frame``: the voices as they were
        before it, its events and later blocks' events pending again."""
        history = self.history
        k = len(history)
        while k > 0 and history[k - 1][0] + self.block > frame:
            k -= 1
        if k == len(history):
            return
        self.generation += 1
        self.rendered = history[k][0]
        self.voices.restore(history[k][1])
        for _, _, added in history[k:]:
            for event in added:
                heapq.heappush(self.pending, event)
        self.remixed += len(history) - k
        del history[k:]

    def _write(self, out: np.ndarray, start: int) -> None:
        i = start % self.size
        n = min(self.block, self.size - i)
        self.samples[i:i + n] = out[:n]
        if n < self.block:
            self.samples[:self.block - n] = out[n:]

    # --- the callback ---------------------------------------------------------------------
    def copy_out(self, outdata: np.ndarray, frame: int, frames: int) -> bool:
        """Copy frames [frame, frame + frames) into ``outdata`` if they are mixed; False (and
        ``outdata`` untouched or partly written: the caller silences it) if not."""
        generation = self.generation
        if frame < self.valid_from or frame + frames > self.rendered or frames > self.size - self.block:
            return False
        i = frame % self.size
        n = min(frames, self.size - i)
        outdata[:n] = self.samples[i:i + n]
        if n < frames:
            outdata[n:frames] = self.samples[:frames - n]
        # numpy may let go of the GIL inside a large copy: were the blocks re-mixed meanwhile?
        return generation == self.generation and frame >= self.valid_from and frame + frames <= self.rendered
