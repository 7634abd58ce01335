"""The performer: fitted from takes, deterministic, cheap, and its feel moves like what it was fitted on."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from drummachine.core.conditioning import AUTO, OFF, ON, Cues
from drummachine.core.performer import ANY, CUE_NAMES, BarFeel, Performer, Take, apply_feel, fit, move

DEFAULTS = {s: {c: 0.5 for c in CUE_NAMES} for s in ("rock", "jazz", ANY)}


def synthetic_takes(n_takes=40, bars=64, phi=0.8, sd=0.1, seed=0, style="rock", fill_at=7, ride_stay=0.9):
    """Takes whose cues drift as an AR(1) around a per-take level, whose ride comes and goes as a
    two-state chain and whose fills sit at bar 8 of every 8 (every other time)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_takes):
        level = np.clip(0.5 + rng.normal(0, 0.15, 4), 0.1, 0.9)
        d = np.zeros((bars, 4))
        d[0] = rng.normal(0, sd / np.sqrt(1 - phi ** 2), 4)
        for t in range(1, bars):
            d[t] = phi * d[t - 1] + rng.normal(0, sd, 4)
        pal = np.full((bars, 9), OFF)
        pal[:, :3] = ON
        ride = rng.random() < 0.5
        for t in range(bars):
            if t and rng.random() > ride_stay:
                ride = not ride
            pal[t, 8] = ON if ride else OFF
        index = np.arange(bars)
        fill = (index % 8 == fill_at) & (rng.random(bars) < 0.5)
        out.append(Take(style, 100.0, level + d, pal, fill, index))
    return out


@pytest.fixture(scope="module")
def table():
    return fit(synthetic_takes(), DEFAULTS)


def test_fit_recovers_drift_fills_and_palette(table):
    st = table["styles"]["rock"]
    phi = np.array(st["phi"])
    assert np.all(np.abs(phi - 0.8) < 0.12), phi  # median-centring biases it down a little
    innov = np.array(st["innov_chol"]) @ np.array(st["innov_chol"]).T
    assert np.allclose(np.sqrt(np.diag(innov)), 0.1, atol=0.03)
    level = np.array(st["level_chol"]) @ np.array(st["level_chol"]).T
    assert np.allclose(np.sqrt(np.diag(level)), 0.15, atol=0.06)
    rate = np.array(st["fill_rate"])
    assert rate[7] > 0.3 and rate[:7].max() < 0.05
    ride = next(g for g in st["palette"] if 8 in g["voices"])
    bit = 1 << ride["voices"].index(8)
    trans = np.array(ride["trans"])
    on = [c for c in range(len(trans)) if c & bit]
    hat_ride, hat = 1 | bit, 1  # the two states the takes visit (closed hat always on, no open hat)
    assert abs(trans[hat_ride, on].sum() - 0.9) < 0.05 and abs(trans[hat, on].sum() - 0.1) < 0.05
    json.dumps(table)  # numbers only


def test_style_shrinks_toward_any_and_unknown_style_falls_back():
    takes = synthetic_takes(phi=0.8, seed=1) + synthetic_takes(n_takes=2, phi=0.1, seed=2, style="jazz")
    t = fit(takes, DEFAULTS, shrink=10.0)
    assert t["styles"]["jazz"]["phi"][0] > 0.5  # two takes of its own: mostly the pooled figure
    p = Performer(t)
    assert p.feel("polka", 100, 0, 0, 0, False, None) == Performer(t).feel(ANY, 100, 0, 0, 0, False, None)


def run(p, bars, style="rock", section=0, variant=0):
    out, prev = [], None
    for b in range(bars):
        prev = p.feel(style, 100.0, section, b, 0, False, prev, variant)
        out.append(prev)
    return out


def test_deterministic_and_replayable(table):
    a, b = run(Performer(table, seed=3), 16), run(Performer(table, seed=3), 16)
    assert a == b
    # a replanned bar from the same previous bar comes out the same
    p = Performer(table, seed=3)
    assert p.feel("rock", 100.0, 0, 9, 0, False, a[8]) == a[9]
    assert run(Performer(table, seed=4), 16) != a
    assert run(Performer(table, seed=3), 16, variant=1) != a


def test_drift_moves_like_the_fit(table):
    p = Performer(table, seed=0).with_options(level=0.0, phrase=0.0)
    x = np.array([[f.intensity for f in run(p.reseeded(s), 64)] for s in range(30)])
    lag1 = np.mean([np.corrcoef(r[:-1], r[1:])[0, 1] for r in x])
    assert 0.6 < lag1 < 0.9
    assert 0.1 < x.std() < 0.25  # stationary sd of AR(1) with phi 0.8, innovation 0.1: 0.17
    # without drift, a section is flat
    flat = run(p.with_options(drift=0.0), 16)
    assert len({f.intensity for f in flat}) == 1


def test_level_drawn_per_seed_not_per_section(table):
    p = Performer(table, seed=0).with_options(drift=0.0, phrase=0.0)
    levels = [p.reseeded(s).feel("rock", 100.0, 0, 0, 0, False, None).density for s in range(200)]
    assert 0.08 < np.std(levels) < 0.25
    # every section of one seed sits at the same level (a chorus asked louder stays louder)
    assert len({p.feel("rock", 100.0, s, b, 0, False, None).density for s in range(5) for b in (0, 3)}) == 1
    # a new section starts its drift again even when prev is given
    q = Performer(table, seed=0)
    f = q.feel("rock", 100.0, 0, 3, 0, False, None)
    assert q.feel("rock", 100.0, 1, 0, 0, False, f) == q.feel("rock", 100.0, 1, 0, 0, False, None)


def test_fills_and_palette(table):
    feels = [f for s in range(40) for f in run(Performer(table, seed=s), 16)]
    pos = np.arange(len(feels)) % 16 % 8
    fills = np.array([f.fill for f in feels])
    assert fills[pos == 7].mean() > 0.2 and fills[pos != 7].mean() < 0.06
    # no own fill before a change: the conductor asks one there anyway
    assert not any(Performer(table, seed=s).feel("rock", 100, 0, 7, 8, True, None).fill for s in range(50))
    ride = np.array([dict(f.voices)[8] == ON for f in feels]).reshape(40, 16)
    changes = (ride[:, 1:] != ride[:, :-1]).mean()
    assert 0.03 < changes < 0.2  # fitted stay 0.9
    assert all(dict(f.voices)[0] == ON for f in feels)
    stuck = [f for s in range(40) for f in run(Performer(table, seed=s).with_options(stick=1.0), 16)]
    ride = np.array([dict(f.voices)[8] == ON for f in stuck]).reshape(40, 16)
    assert (ride[:, 1:] == ride[:, :-1]).all()
    assert all(f.voices == () for f in run(Performer(table).with_options(palette=0.0), 8))


def test_apply_feel_offsets_clip_and_respect_the_song():
    base = Cues(0.9, 0.5, 0.05, 0.5, False, (ON, AUTO, OFF, AUTO, AUTO, AUTO, AUTO, AUTO, AUTO))
    feel = BarFeel(0.3, -0.1, -0.2, 0.0, voices=((0, OFF), (1, ON), (2, ON), (8, OFF)),
                   fill_voices=((1, ON), (4, ON)))
    c = apply_feel(base, feel, soft=False)
    assert (c.intensity, c.complexity) == (1.0, 0.0) and c.density == pytest.approx(0.4)
    # soft (what ships): a middle cue moves about as much, the ends never clip, the order is kept
    s = apply_feel(base, feel)
    assert s.density == pytest.approx(0.4, abs=0.01) and 0.9 < s.intensity < 1.0 and 0.0 < s.complexity < 0.05
    moved = [move(q, 0.3) for q in np.linspace(0, 1, 11)]
    assert all(a < b for a, b in zip(moved, moved[1:])) and moved[-1] <= 1.0
    assert c.palette[0] == ON and c.palette[2] == OFF  # asked for by the song: kept
    assert c.palette[1] == ON and c.palette[8] == OFF and c.palette[4] == AUTO
    f = apply_feel(base, feel, fill=True)
    assert f.fill and f.palette[4] == ON and f.palette[8] == AUTO
    assert apply_feel(base, None) is base


def test_cheap(table):
    p = Performer(table, seed=0)
    prev = None
    t0 = time.perf_counter()
    for b in range(500):
        prev = p.feel("rock", 100.0, b // 32, b % 32, 32, b % 32 == 31, prev)
    assert (time.perf_counter() - t0) / 500 < 1e-3


def test_load(tmp_path, table):
    path = tmp_path / "performer.json"
    path.write_text(json.dumps(table))
    assert run(Performer.load(path, seed=2), 4) == run(Performer(table, seed=2), 4)
