"""The engine on a manual clock (the shared harness of conftest); the tests of run_threads on the wall clock."""

import time

import numpy as np
import pytest

from drummachine.core.conditioning import silenced
from drummachine.core.conductor import COUNT_IN, ENDING, FINAL, GROOVE
from drummachine.core.voices import CLOSED_HAT, CRASH, KICK, LOW_TOM, OPEN_HAT, SNARE
from drummachine.core.fake_generator import FakeGenerator

from .conftest import SONG, Harness


def make(song_text=SONG, gen=None, **kw):
    h = Harness(song_text, gen, **kw)
    return h.engine, h.clock, h.sink


def run(engine, clock, seconds, dt=0.004, generate=True):
    end = clock.now() + seconds
    while clock.now() < end:
        if generate:
            engine.pump_generator()
        engine.pump()
        clock.advance(dt)


def bar_notes(sink, bar, voice=None):
    return [e for e in sink.notes() if e.step // 16 == bar and (voice is None or e.voice == voice)]


def test_count_in_then_intro_with_crash_then_verse():
    engine, clock, sink = make()
    engine.command("start")
    run(engine, clock, 0.3 + 4 * 2.0)  # count-in + 3 bars at 120 bpm (2 s a bar)
    count_in = bar_notes(sink, 0)
    assert [e.step % 16 for e in count_in] == [0, 4, 8, 12] and all(e.voice == 2 for e in count_in)
    assert any(e.voice == CRASH and e.step == 16 for e in sink.notes())  # the song starts on a crash
    plans = [engine.conductor.plan(b) for b in range(4)]
    assert [p.kind for p in plans] == [COUNT_IN, GROOVE, GROOVE, GROOVE]
    assert [p.section for p in plans] == [-1, 0, 0, 1]
    assert plans[2].fill_from == 0  # the intro's last bar leads into the verse with a fill
    assert plans[3].crash_on_one
    assert engine.stats.misses == 0


def test_notes_are_committed_before_they_sound_and_timed_by_the_grid():
    engine, clock, sink = make()
    engine.command("start")
    run(engine, clock, 5.0)
    start = engine.transport.time_of(0)
    for e in sink.notes():
        grid = start + e.step * 0.125  # 120 bpm: a 16th is 125 ms
        assert abs(e.time - grid) <= 0.5 * 0.125 + 1e-9
    # every step was handed out before its time
    assert engine.stats.late_commits == 0


def test_next_section_mid_bar_fills_the_rest_and_crashes_on_the_one():
    engine, clock, sink = make(SONG.replace("bars = 2", "bars = 0"))
    engine.command("start")
    run(engine, clock, 0.25 + 2.0 + 2.0 + 0.5)  # count-in, one intro bar, a quarter into the next
    open_step = engine.commit_cursor
    assert open_step // 16 == 2
    engine.command("next")
    run(engine, clock, 4.0)
    toms = [e for e in bar_notes(sink, 2) if e.voice in (4, 5, 6)]
    assert toms, "the rest of bar 2 became a fill"
    assert all(e.step >= open_step for e in toms), "nothing already committed changed"
    assert engine.conductor.plan(3).section == 1 and engine.conductor.plan(3).crash_on_one
    assert any(e.voice == CRASH for e in bar_notes(sink, 3) if e.step == 48)
    assert engine.stats.misses == 0


def test_cue_is_visible_until_it_takes_effect():
    engine, clock, sink = make(SONG.replace("bars = 2", "bars = 0"))
    engine.command("start")
    run(engine, clock, 2.5)
    engine.command("next")
    run(engine, clock, 0.01)
    assert engine.snapshot().queued.target == "verse"
    run(engine, clock, 4.0)
    assert engine.snapshot().queued is None and engine.snapshot().section == "verse"


def test_late_generator_plays_the_cached_bar_never_silence():
    engine, clock, sink = make()
    engine.command("start")
    run(engine, clock, 0.25 + 4 * 2.0)
    before = engine.stats.misses
    last_bar = engine.commit_cursor // 16
    run(engine, clock, 2 * 2.0, generate=False)  # the generator stalls for two bars
    assert engine.stats.misses > before
    for bar in range(last_bar + 1, last_bar + 2):
        assert len(bar_notes(sink, bar)) >= 8, "the cached bar played"
    run(engine, clock, 4.0)  # it recovers and catches up
    assert len(bar_notes(sink, last_bar + 3)) >= 8


def test_outro_ending_fill_final_hit_and_stop():
    engine, clock, sink = make()
    engine.command("start")
    run(engine, clock, 0.25 + 4 * 2.0 + 0.3)
    engine.command("outro")
    run(engine, clock, 8.0)
    assert not engine.playing
    kinds = [engine.conductor.plan(b).kind for b in range(8)]
    assert ENDING in kinds and FINAL in kinds
    final_bar = kinds.index(FINAL)
    final = bar_notes(sink, final_bar)
    assert {e.voice for e in final} == {CRASH, KICK} and all(e.step % 16 == 0 for e in final)
    assert not [e for e in sink.notes() if e.step // 16 > final_bar]
    assert any(e.kind == "stop" for e in sink.events)


def test_fill_now_and_accent():
    engine, clock, sink = make(SONG.replace("count_in = 1", "count_in = 0"))
    engine.command("start")
    run(engine, clock, 0.3 + 2.0 + 0.2)
    engine.command("fill")
    c = engine.commit_cursor
    run(engine, clock, 2.0)
    fill_bar = c // 16 if c % 16 <= 12 else c // 16 + 1
    assert engine.conductor.plan(fill_bar).fill_from is not None
    engine.command("accent")
    run(engine, clock, 0.01)
    a = engine.commit_cursor
    run(engine, clock, 1.0)
    assert any(e.voice == CRASH and e.step in (a, a + 1) for e in sink.notes())


def test_intensity_changes_velocity_from_the_open_step():
    engine, clock, sink = make(SONG.replace("count_in = 1", "count_in = 0"))
    engine.command("start")
    run(engine, clock, 2.5)
    soft = np.mean([e.velocity for e in bar_notes(sink, 0)])
    engine.command("intensity_up", 0.4)
    run(engine, clock, 4.0)
    loud = np.mean([e.velocity for e in bar_notes(sink, 2)])
    assert loud > soft + 0.15


def test_tap_relocks_the_downbeat_to_the_first_tap():
    engine, clock, sink = make(SONG.replace("count_in = 1", "count_in = 0"))
    engine.command("start")
    run(engine, clock, 3.0)
    first = clock.now() + 0.013
    for k in range(4):
        clock.set(first + k * 0.6)
        engine.command("tap")
        engine.pump()
    run(engine, clock, 4.0)
    assert engine.transport.bpm_at(engine.commit_cursor) == pytest.approx(100.0)
    bar_line = (-(-engine.commit_cursor // 16)) * 16
    t_bar = engine.transport.time_of(bar_line)
    assert abs(((t_bar - first) / 2.4) - round((t_bar - first) / 2.4)) < 1e-6


def test_keep_brings_the_section_back_the_same():
    song = SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 0")
    engine, clock, sink = make(song)
    engine.command("start")
    run(engine, clock, 0.3)
    engine.command("keep")
    run(engine, clock, 2.2)
    first = np.stack([engine.played[s] for s in range(16)])
    engine.command("next", 1)  # go to section 1, the intro, again
    run(engine, clock, 6.0)
    start = next(b for b in range(2, 10) if engine.conductor.plan(b).bar_in_section == 0
                 and engine.conductor.plan(b).section == 0)
    again = np.stack([engine.played[start * 16 + s] for s in range(16)])
    again[0, :, [CRASH, KICK]] = first[0, :, [CRASH, KICK]]  # the return is marked by a crash on the one
    np.testing.assert_array_equal(first, again)  # same hits, velocities and micro-timing


def test_pause_silences_and_resumes_on_a_beat():
    engine, clock, sink = make(SONG.replace("count_in = 1", "count_in = 0"))
    engine.command("start")
    run(engine, clock, 2.3)
    engine.command("pause")
    run(engine, clock, 0.01)
    paused_at = engine.commit_cursor
    run(engine, clock, 2.0)
    assert not [e for e in sink.notes() if e.step >= paused_at]
    assert sink.panics >= 1
    engine.command("pause")
    run(engine, clock, 2.0)
    back = [e for e in sink.notes() if e.step >= paused_at]
    assert back and back[0].step % 4 == 0


def test_stop_sends_all_notes_off():
    engine, clock, sink = make()
    engine.command("start")
    run(engine, clock, 1.0)
    engine.command("stop")
    run(engine, clock, 0.1)
    assert not engine.playing and sink.panics == 1


def test_midi_clock_pulses_24_per_quarter():
    engine, clock, sink = make(midi_clock=True)
    engine.command("start")
    run(engine, clock, 3.0)
    pulses = [e.time for e in sink.events if e.kind == "clock"]
    gaps = np.diff(pulses)
    assert len(pulses) > 100 and np.allclose(gaps, 0.5 / 24, atol=1e-9)


def test_midi_start_goes_out_with_the_first_clock_and_before_it():
    """One batch, Start first, at the first clock's time: a MIDI out puts each batch on its clock by
    its own reading of the engine's, so a Start sent on its own could land after the first clock
    (a slaved device then counts the whole song one clock late)."""
    batches = []
    engine, clock, sink = make(midi_clock=True)
    send = sink.send
    sink.send = lambda events: (batches.append(list(events)), send(events))
    for _ in range(2):  # a start, and a start again from the top
        engine.command("start")
        run(engine, clock, 1.0)
        engine.command("stop")
        run(engine, clock, 0.1)
    with_start = [b for b in batches if any(e.kind == "start" for e in b)]
    assert len(with_start) == 2
    for b in with_start:
        assert b[0].kind == "start" and b[1].kind == "clock" and b[0].time == b[1].time
    starts = [i for i, e in enumerate(sink.events) if e.kind == "start"]
    assert all(sink.events[i + 1].kind == "clock" for i in starts)


def test_stopped_before_the_first_step_sends_no_start():
    engine, clock, sink = make(midi_clock=True)
    engine.command("start")
    engine.command("stop")
    run(engine, clock, 1.0)
    assert not [e for e in sink.events if e.kind in ("start", "clock")]


def test_mute_solo_swing_humanize_apply_as_steps_are_handed_out():
    engine, clock, sink = make(SONG.replace("count_in = 1", "count_in = 0"))
    engine.command("start")
    run(engine, clock, 2.3)
    engine.command("mute", 2)  # closed hat
    run(engine, clock, 0.01)
    c = engine.commit_cursor
    run(engine, clock, 2.0)
    assert not [e for e in sink.notes() if e.step >= c and e.voice == 2]
    engine.command("mute", 2)
    engine.command("solo", 0)
    run(engine, clock, 0.01)
    c = engine.commit_cursor
    run(engine, clock, 2.0)
    assert {e.voice for e in sink.notes() if e.step >= c} == {0}
    engine.command("solo", 0)
    engine.command("humanize", 0.0)
    engine.command("swing", 1.0)
    run(engine, clock, 0.01)
    c = engine.commit_cursor
    run(engine, clock, 2.0)
    step_s = 0.125
    for e in sink.notes():
        if e.step >= c:
            off = (e.time - engine.transport.time_of(e.step)) / step_s
            assert off == pytest.approx(1 / 3 if e.step % 2 else 0.0, abs=1e-6)


class RecordingGenerator(FakeGenerator):
    """The fake generator, remembering what it was told for each global step (the last time)."""

    engine = None

    def __init__(self):
        super().__init__()
        self.told: dict[int, np.ndarray] = {}

    def step(self, style, step_in_bar, bar_in_phrase, cont, steering=None):
        self.told[self.engine.gen_cursor] = np.asarray(cont)
        return super().step(style, step_in_bar, bar_in_phrase, cont, steering)


def test_cymbal_cue_switches_on_the_next_bar_line_and_the_next_section_plays_its_own():
    from drummachine.core.conditioning import CLOSED_HAT, N_VOICES, RIDE

    song = SONG.replace('bars = 0\nfill_every = 0', 'bars = 0\nfill_every = 0\ncymbal = "hats"')
    gen = RecordingGenerator()
    engine, clock, sink = make(song, gen)
    gen.engine = engine

    def told(g, voice):  # (known, played) flags the model was given for a voice at step g
        cont = gen.told[g]
        return cont[6 + voice], cont[6 + N_VOICES + voice]

    engine.command("start")
    run(engine, clock, 0.3 + 2.0 + 0.5)  # count-in, then a quarter of the intro's first bar
    assert engine.snapshot().cymbal == "auto"
    engine.command("cymbal", "ride")
    run(engine, clock, 0.1)
    c = engine.commit_cursor
    at = -(-c // 16) * 16
    assert at == 32  # intro bar 2
    run(engine, clock, 2.0 * 2.5)
    assert told(at - 1, RIDE) == (0.0, 0.0)  # the rest of the bar: still the model's choice
    assert all(told(g, RIDE) == (1.0, 1.0) and told(g, CLOSED_HAT) == (1.0, 0.0) for g in range(at, at + 16))
    # the verse (bar 3 on) plays the song's hats: a live choice lasts for its own section
    assert all(told(g, CLOSED_HAT) == (1.0, 1.0) and told(g, RIDE) == (1.0, 0.0) for g in range(48, 64))
    assert engine.snapshot().cymbal == "hats"
    engine.command("cymbal")  # no value: the next of hats -> ride -> auto
    run(engine, clock, 2.5)
    assert engine.snapshot().cymbal == "ride"
    engine.command("cymbal", "cowbell")  # unknown names change nothing
    run(engine, clock, 2.5)
    assert engine.snapshot().cymbal == "ride"


def test_a_sections_voices_reach_the_model_and_the_pedal_still_picks_the_cymbal():
    from drummachine.core.conditioning import N_VOICES, RIDE

    song = SONG.replace('bars = 0\nfill_every = 0', 'bars = 0\nfill_every = 0\nvoices = { high_tom = "on", '
                        'crash = "off", ride = "off" }')
    gen = RecordingGenerator()
    engine, clock, sink = make(song, gen)
    gen.engine = engine
    engine.command("start")
    run(engine, clock, 0.3 + 2.0 * 3 + 0.5)  # count-in, intro, a quarter into the verse
    high, crash = 6, 7
    intro, verse = gen.told[20], gen.told[52]  # count-in bar 0, intro bars 1-2, verse from step 48
    assert not intro[6:].any()  # the intro leaves every voice to the model
    assert verse[6 + high] == verse[6 + N_VOICES + high] == 1.0 and verse[6 + crash] == 1.0
    assert verse[6 + N_VOICES + crash] == 0.0 and verse[6 + RIDE] == 1.0 and verse[6 + N_VOICES + RIDE] == 0.0
    assert not verse[6:6 + 6].any()  # the rest stays the model's choice
    engine.command("cymbal", "ride")  # a live choice wins over the song's "ride off"
    run(engine, clock, 2.5 * 2)
    later = gen.told[engine.commit_cursor - 8]
    assert later[6 + N_VOICES + RIDE] == 1.0 and later[6 + N_VOICES + crash] == 0.0


# --- the command table at the engine's boundary, and loops that cannot die ---------------------

def test_a_song_command_without_a_song_is_refused_at_the_boundary(harness):
    """Regression: ("song", None) from a controller reached the engine and raised AttributeError in
    the commit loop while stopped; now it is refused where it is given, and the engine plays on."""
    h = harness()
    assert h.engine.command("song", None) is False
    assert h.engine.command("tempo", 500) is False and h.engine.command("cymbal", "cowbell") is False
    assert h.engine.command("no_such_command") is False
    assert h.engine.stats.refused == 4
    h.engine.command("start")
    h.run(3.0)
    assert h.engine.playing and h.engine.stats.faults == {} and h.sink.notes()


def test_half_time_toggles_whichever_control_sends_it(harness):
    h = harness(SONG.replace("count_in = 1", "count_in = 0"))
    h.engine.command("start")
    h.run(1.0)
    h.engine.command("half_time")
    h.run(2.5)
    assert h.engine.transport.feel_at(h.engine.commit_cursor) == 0.5
    h.engine.command("half_time")
    h.run(4.5)
    assert h.engine.transport.feel_at(h.engine.commit_cursor) == 1.0


def test_drop_plays_a_bar_of_kick_and_hats_then_the_groove_comes_back(harness):
    h = harness(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8"))
    h.engine.command("start")
    h.run(2.5)  # into bar 1 (2 s a bar)
    h.engine.command("drop")
    h.run(6.0)
    dropped = h.bar_notes(2)
    assert dropped and {e.voice for e in dropped} <= {KICK, CLOSED_HAT, OPEN_HAT}
    assert any(e.voice == SNARE for e in h.bar_notes(1)) and any(e.voice == SNARE for e in h.bar_notes(3))
    # the model is told: the palette of the dropped bar turns every other voice off
    cont = h.engine.gen.calls
    dropped_steps = [c for c in cont if c[0] == "step" and silenced(np.array(c[4]))[SNARE]]
    assert dropped_steps, "the drop reaches the model as the palette's off"


class FailingGenerator(FakeGenerator):
    """A generator whose steps fail now and then."""

    def __init__(self, fail_every: int):
        super().__init__()
        self.fail_every = fail_every
        self.count = 0

    def step(self, *args, **kw):
        self.count += 1
        if self.count % self.fail_every == 0:
            raise RuntimeError("injected generator fault")
        return super().step(*args, **kw)


def test_a_failing_command_and_failing_generator_steps_never_stop_the_groove(harness, monkeypatch, caplog):
    h = harness(SONG.replace("count_in = 1", "count_in = 0"), gen=FailingGenerator(fail_every=7))

    def broken(value, now):
        raise ValueError("injected handler fault")

    h.engine.handlers["fill"] = broken
    h.engine.command("start")
    h.run(2.0)
    h.engine.command("fill")
    h.engine.command("accent")  # the command after the broken one is still handled
    h.run(8.0)
    assert h.engine.playing
    assert h.engine.stats.faults["commands"] == 1 and h.engine.stats.faults["generator"] > 5
    bars = {e.step // 16 for e in h.sink.notes()}
    assert bars >= set(range(5)), "every bar played"
    assert h.engine.stats.misses > 0  # the failed steps came from the cache
    assert "injected generator fault" in caplog.text and "Traceback" in caplog.text
    assert h.engine.snapshot().faults == h.engine.stats.faults


def test_a_failing_commit_plays_the_fallback_and_goes_on(harness, monkeypatch):
    h = harness(SONG.replace("count_in = 1", "count_in = 0"))
    real = h.engine._commit
    calls = {"n": 0}

    def sometimes(c, now):
        calls["n"] += 1
        if calls["n"] % 10 == 0:
            raise RuntimeError("injected commit fault")
        return real(c, now)

    monkeypatch.setattr(h.engine, "_commit", sometimes)
    h.engine.command("start")
    h.run(6.0)
    assert h.engine.stats.faults["commit"] >= 4
    assert h.engine.commit_cursor > 40 and h.engine.playing
    assert {e.step // 16 for e in h.sink.notes()} >= {0, 1, 2}


def test_the_real_threads_survive_a_failing_output(harness):
    """run_threads on the wall clock: an output that raises on every send is counted, and the
    loops (and the other outputs) go on."""
    import threading

    from drummachine.core.events import MemorySink, Sink
    from drummachine.core.transport import MonotonicClock

    class Broken(Sink):
        def send(self, events):
            raise OSError("injected output fault")

    h = harness(SONG.replace("count_in = 1", "count_in = 0").replace("bpm = 120", "bpm = 300"))
    good = MemorySink()
    h.engine.clock = MonotonicClock()
    h.engine.sinks = [Broken(), good]
    stop = threading.Event()
    threads = h.engine.run_threads(stop)
    h.engine.command("start")
    import time as _time

    _time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(2)
    assert good.notes() and h.engine.stats.faults["output"] > 10


def test_the_generator_warms_up_in_its_own_thread_before_its_first_step_and_the_start_waits_for_it(harness):
    """Generator.warm_up takes a full cache's memory from the heap of the thread that will
    generate: run_threads calls it there, before any step, once, and returns when it is done."""
    import threading

    from drummachine.core.transport import MonotonicClock

    h = harness(SONG.replace("count_in = 1", "count_in = 0"))
    seen = []
    step = h.engine.gen.step

    def warm_up(keep):
        time.sleep(0.2)  # returning before this ends would start the groove on a cold generator
        seen.append(("warm_up", threading.current_thread().name, keep))

    def stepping(*args, **kwargs):
        seen.append(("step", threading.current_thread().name))
        return step(*args, **kwargs)

    h.engine.gen.warm_up, h.engine.gen.step = warm_up, stepping
    h.engine.clock = MonotonicClock()
    stop = threading.Event()
    threads = h.engine.run_threads(stop)
    assert seen[:1] == [("warm_up", "generate", h.engine.lookahead + 1)]  # done when run_threads returned
    h.engine.command("start")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(2)
    assert seen[1:] and all(s == ("step", "generate") for s in seen[1:])
    stop = threading.Event()
    threads = h.engine.run_threads(stop)  # a generator that has played is not warmed again
    stop.set()
    for t in threads:
        t.join(2)
    assert sum(s[0] == "warm_up" for s in seen) == 1


def test_a_fill_the_foot_asks_for_pushes_toms_and_snare_until_one_sounds(harness):
    from drummachine.core.generation import FILL_PUSH

    h = harness(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8"))
    h.engine.command("start")
    h.run(2.5)  # bar 1, step 4 or so
    h.engine.command("fill")
    h.engine.pump()
    bar, step = divmod(h.engine.commit_cursor, 16)
    plan = h.engine.conductor.plan(bar)
    assert plan.fill_from == step
    pushed = h.engine._steering_at(plan, h.engine.commit_cursor)
    assert pushed.voice_bias[LOW_TOM] == FILL_PUSH[LOW_TOM] > 0 and pushed.voice_bias[KICK] == 0
    h.run(2.0)  # the fill has sounded (the stand-in plays toms in its fills): no push after it
    later = h.engine.conductor.plan(bar + 1)
    assert h.engine._steering_at(later, (bar + 1) * 16) == h.engine.steering


def test_a_backbeat_snare_does_not_end_the_fill_push_and_a_second_step_without_a_fill_note_pushes_harder(harness):
    from drummachine.core.generation import FILL_PUSH
    from drummachine.core.steps import empty_step, sounds_fill

    groove_snare = empty_step()
    groove_snare[0, SNARE] = 1.0
    tom = empty_step()
    tom[0, LOW_TOM] = 1.0
    assert not sounds_fill(groove_snare, groove_snare) and sounds_fill(groove_snare, empty_step())
    assert sounds_fill(tom, None)

    h = harness(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8"))
    h.engine.command("start")
    h.run(2.5)
    h.engine.command("fill")
    h.engine.pump()
    c0 = h.engine.commit_cursor
    plan = h.engine.conductor.plan(c0 // 16)
    assert plan.fill_from == c0 % 16 < 15
    h.engine.played[c0 - 16] = groove_snare  # the bar before had a snare here: the fill's snare would not be heard
    h.engine.generated[c0] = (groove_snare, None)
    harder = h.engine._steering_at(plan, c0 + 1)
    assert harder.voice_bias[LOW_TOM] == 2 * FILL_PUSH[LOW_TOM]
    h.engine.generated[c0] = (tom, None)
    assert h.engine._steering_at(plan, c0 + 1) == h.engine.steering


def test_a_step_whose_new_version_after_a_cue_is_late_plays_as_it_was_not_a_bar_old_copy(harness):
    h = harness(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8"))
    e = h.engine
    e.command("start")
    h.run(2.5)
    e.command("fill")
    e.pump()  # the cue is handled: the generator must rewind to the open step
    c0 = e.commit_cursor
    before = {k: e.generated[k][0].copy() for k in (c0, c0 + 1)}
    e.pump_generator(max_steps=1)  # the generator takes the steps back and redoes only the first in time
    assert c0 + 1 not in e.generated and c0 + 1 in e.superseded
    h.clock.set(e.transport.time_of(c0 + 1))
    e.pump()
    assert e.commit_cursor == c0 + 2 and e.stats.misses == 0 and e.stats.late_cues == 1
    assert np.array_equal(e.played[c0 + 1], before[c0 + 1])
    h.run(1.0)  # the generator catches up: no more late steps, nothing kept from before the cue
    assert e.stats.misses == 0 and e.stats.late_cues == 1 and all(k >= e.commit_cursor for k in e.superseded)


def test_cues_faster_than_the_generator_never_leave_a_step_unready(harness):
    """A storm of cues (a pedal stamped on, controller spam): each rewinds the generator before it
    has redone more than a step. What was generated before the first cue still plays where the
    new version is not ready (the soak's one miss in its first 16 minutes was this: a second
    rewind had thrown away the steps kept from before the first)."""
    h = harness(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8"))
    e = h.engine
    e.command("start")
    h.run(2.5)
    c0 = e.commit_cursor
    first = {k: e.generated[k][0].copy() for k in range(c0, c0 + 4)}
    for value in (0.3, -0.2, 0.5):  # three cues, the generator redoing one step between them
        e.command("density", value)
        e.pump()
        e.pump_generator(max_steps=1)
    assert c0 + 3 not in e.generated and c0 + 3 in e.superseded
    for c in range(c0, c0 + 4):
        h.clock.set(e.transport.time_of(c))
        e.pump()
    assert e.commit_cursor == c0 + 4 and e.stats.misses == 0 and e.stats.late_cues >= 1
    assert np.array_equal(e.played[c0 + 3], first[c0 + 3]), "the step as generated before the storm"


def test_a_stop_and_start_before_the_first_step_plays_leaves_no_step_unready(harness):
    """A start/stop toggle stamped twice in a row (the soak's learned toggle under controller spam
    did it): stopped before its first step, started again. The steps generated ahead from the top
    are still the song's first ones; they were thrown away while the generator stayed past them
    (8 misses at every such restart)."""
    h = harness(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8"))
    e = h.engine
    h.run(0.5)  # stopped: the generator fills the lookahead from the top
    assert e.gen_cursor == e.lookahead
    e.command("start")
    for _ in range(3):
        e.command("toggle")  # stop
        e.command("toggle")  # start again, from the top
        e.pump()
    assert e.playing and e.commit_cursor == 0
    h.run(3.0)
    assert e.stats.misses == 0 and e.commit_cursor > 16


def test_a_restart_while_the_generator_is_inside_a_step_is_not_mixed_with_the_old_song(harness):
    """The song restarts (start after playing: from the top) while the generator thread is inside
    a model call for a step of the old run: that step is thrown away, the generator starts again
    from the top, and the restarted song plays with no miss."""
    h = harness(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8"))
    e = h.engine
    e.command("start")
    h.run(2.0)
    assert e.gen_cursor > 16
    real_step = e.gen.step

    def step_while_the_song_restarts(*args, **kw):
        e.gen.step = real_step
        with e.lock:  # what the commit thread does meanwhile: stop, start (from the top)
            e._stop()
            e._start(h.clock.now())
        return real_step(*args, **kw)

    e.gen.step = step_while_the_song_restarts
    h.clock.set(e.transport.time_of(e.commit_cursor))
    e.pump()  # a step plays: the generator has one to make
    assert e.pump_generator(max_steps=1) == 1 and e.gen.step == real_step
    assert e.gen_cursor == 0 and not e.generated, "the old run's step is not kept in the new one"
    h.run(3.0)
    assert e.stats.misses == 0 and e.commit_cursor > 16


def test_a_restart_after_a_pause_plays_from_its_first_step(harness):
    """Paused, unpaused (back in on the next beat), stopped before that beat and started again from
    the top: the new run is heard from its first step, not from the old run's step number (the
    soak's 40 minutes had 4 bars handed out and not heard after a pause, a stop and a start)."""
    h = harness(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8"))
    e = h.engine
    e.command("start")
    h.run(6.0)
    e.command("pause", True)
    e.command("pause", False)
    e.command("pause", False)  # an unpause while playing changes nothing
    e.command("stop")
    e.command("start")
    e.pump()
    sink = h.sink
    before = len(sink.notes())
    h.run(2.0)
    assert e.commit_cursor >= 8 and len(sink.notes()) > before, "the restarted song is heard"


def test_a_groove_bar_the_model_leaves_empty_gets_a_kick_or_a_hat_from_its_middle(harness):
    """Knobs at their extremes (a temperature near 0, the density far down) can make the model
    leave a groove bar without a hit (two bars of the soak's 40 minutes): from the bar's middle
    the kick and the hats are pushed until one sounds."""
    from drummachine.core.fake_generator import FakeGenerator
    from drummachine.core.voices import HITS

    class Sparse(FakeGenerator):  # plays nothing unless pushed
        def step(self, style, step_in_bar, bar_in_phrase, cont, steering=None):
            hvo = super().step(style, step_in_bar, bar_in_phrase, cont, steering) * 0.0
            if steering is not None and steering.voice_bias[KICK] > 1.0:
                hvo[0, KICK], hvo[1, KICK] = 1.0, 0.8
            self.prev = hvo
            return hvo

    h = harness(SONG.replace("count_in = 1", "count_in = 0").replace("bars = 2", "bars = 8"), gen=Sparse())
    e = h.engine
    e.command("start")
    h.run(8.0)
    bars = e.commit_cursor // 16
    assert bars >= 3
    for bar in range(bars):
        hits = [int(e.played[bar * 16 + s][HITS].sum()) for s in range(16) if bar * 16 + s in e.played]
        if len(hits) == 16:
            assert sum(hits) == 1 and hits[8] == 1, (bar, hits)  # one kick, at the middle


def test_the_outros_ending_fill_the_model_leaves_empty_gets_the_snare_or_toms_pushed_harder_each_step(harness):
    """At intensity 0 with the density down the model left the outro's ending fill without a hit
    (6 of 38 tries over the styles; one bar of the hour's soak): a bar of silence before the final
    hit. From its middle the snare and toms are pushed, harder on each step still empty; this
    model hears only a push of 8 (the second step's), so the hit lands on step 9."""
    from drummachine.core.fake_generator import FakeGenerator
    from drummachine.core.voices import HITS

    class Sparse(FakeGenerator):  # plays nothing unless pushed hard
        def step(self, style, step_in_bar, bar_in_phrase, cont, steering=None):
            hvo = super().step(style, step_in_bar, bar_in_phrase, cont, steering) * 0.0
            if steering is not None and steering.voice_bias[SNARE] >= 8.0:
                hvo[0, SNARE], hvo[1, SNARE] = 1.0, 0.5
            self.prev = hvo
            return hvo

    h = harness(SONG.replace("count_in = 1", "count_in = 0"), gen=Sparse())
    e = h.engine
    e.command("start")
    h.run(2.5)
    e.command("outro")
    h.run(8.0)
    assert not e.playing
    kinds = [e.conductor.plan(b).kind for b in range(8)]
    ending = kinds.index(ENDING)
    hits = [int(e.played[ending * 16 + s][HITS].sum()) for s in range(16)]
    assert sum(hits) == 1 and hits[9] == 1, hits


def test_a_tempo_nudge_keeps_the_steps_made_and_a_jump_makes_them_again(harness):
    """A pedal's 1-3 bpm changes the timing at once and the model hears it from the next step it
    makes; the steps already made keep their notes (a storm of nudges that rewound the generator
    every time kept it from getting ahead: 6 misses in the hour's soak). A jump (tap, 20 bpm) is
    another way of playing: the steps ahead are made again."""
    h = harness()
    e = h.engine
    e.command("start")
    h.run(8.0)  # into the groove, the lookahead made
    c = e.commit_cursor
    made = {k: v[0] for k, v in e.generated.items()}
    assert len(made) >= 4
    regenerated = e.stats.regenerated
    bpm = e.transport.bpm_at(c)
    e.command("tempo_up", 2)
    e.pump()
    e.pump_generator()
    assert e.transport.bpm_at(e.commit_cursor) == pytest.approx(bpm + 2), "the timing moves at once"
    assert e.stats.regenerated == regenerated
    assert all(e.generated[k][0] is hvo for k, hvo in made.items() if k in e.generated), "the notes made are kept"
    e.command("tempo_up", 20)
    e.pump()
    e.pump_generator()
    assert e.stats.regenerated == regenerated + 1, "a jump makes the steps ahead again"


class EarlyHits(FakeGenerator):
    """Every hit half a step early: the earliest a step's hits can come."""

    def _pattern(self, step_in_bar, cont):
        hvo = super()._pattern(step_in_bar, cont)
        hvo[2] = np.where(hvo[0] > 0, -0.5, 0.0)
        return hvo


@pytest.mark.parametrize("ahead", [4 * 128 / 48000, 1152 / 48000, 4096 / 48000])
def test_every_hit_reaches_the_outputs_as_far_ahead_as_the_audio_needs(harness, ahead):
    """An audio output that must have a hit ``ahead`` of its time to mix it on its sample (the
    mixer's ring: 10.7 ms at JACK's 128 frames, 24 ms at 1,024, 85 ms with --blocksize 1024): with
    the margin for it, even a hit half a step early is handed out that far ahead and 19 ms more
    (less the 4 ms turns the test's clock moves by).
    (With the fixed 30 ms, 5 hits in 20 s of funk came late at --blocksize 1024.)"""
    from drummachine.core.engine import hand_out_margin

    h = harness(gen=EarlyHits(), margin=hand_out_margin(ahead))
    handed = []
    send = h.sink.send

    def recording(events):
        handed.extend((h.clock.now(), e.time) for e in events if e.kind == "note")
        send(events)

    h.sink.send = recording
    h.engine.command("start")
    h.run(6.0)
    leads = np.array([t - at for at, t in handed])
    # 19 ms to spare, less the harness's 4 ms turns
    assert leads.size > 20 and leads.min() >= ahead + 0.0145, leads.min()
