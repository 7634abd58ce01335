import numpy as np
import pytest

from drummachine.core.errors import DrumMachineError
from drummachine.corpus.fidelity import round_trip
from drummachine.core.groove import Groove, Meter, Notes, groove_from_notes, ticks_to_seconds
from drummachine.core.voices import input_map

from .conftest import fixture_midis

GM = input_map("gm")


def notes(rows, tpb=480):
    a = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return Notes(a[:, 0], a[:, 1].astype(np.int16), a[:, 2].astype(np.int16), tpb)


@pytest.mark.parametrize("path", fixture_midis(), ids=lambda p: p.name)
def test_fixture_round_trip_within_1ms_and_1_velocity(path):
    rt = round_trip(path)
    assert rt.ok, rt
    assert rt.max_onset_ms <= 1.0 and rt.max_velocity <= 1
    assert rt.matched > 0


@pytest.mark.parametrize("tick,step,offset", [
    (0, 0, 0.0), (120, 1, 0.0), (59, 0, 59 / 120), (60, 1, -0.5), (61, 1, -59 / 120), (179, 1, 59 / 120),
    (1920 - 10, 16, -10 / 120),
])
def test_nearest_step_and_offset(tick, step, offset):
    g, _ = groove_from_notes(notes([(tick, 38, 100)]), GM, 120.0)
    assert g.hits[step, 1]
    assert g.offsets[step, 1] == pytest.approx(offset, abs=1e-6)
    assert -0.5 <= g.offsets[step, 1] <= 0.5


def test_louder_note_wins_a_shared_step():
    g, rep = groove_from_notes(notes([(0, 38, 40), (10, 38, 110), (20, 40, 70)]), GM, 100.0)
    assert rep.merged == 2 and rep.notes == 3
    assert g.velocities[0, 1] == pytest.approx(110 / 127)
    assert g.offsets[0, 1] == pytest.approx(10 / 120)


def test_unmapped_notes_are_counted_not_kept():
    g, rep = groove_from_notes(notes([(0, 36, 100), (0, 100, 100)]), GM, 100.0)
    assert rep.unmapped == 1 and g.hits.sum() == 1


@pytest.mark.parametrize("meter,steps", [(Meter(4, 4), 16), (Meter(3, 4), 12), (Meter(6, 8), 12),
                                         (Meter(5, 8), 10), (Meter(7, 8), 14)])
def test_meters_give_whole_bars(meter, steps):
    g, _ = groove_from_notes(notes([(0, 36, 100), (480 * 5, 38, 90)]), GM, 90.0, meter)
    assert meter.steps_per_bar == steps
    assert g.steps % steps == 0 and g.bar_array().shape[1] == steps


def test_bad_meter_and_bpm_are_user_errors():
    with pytest.raises(DrumMachineError):
        Meter(4, 3)
    with pytest.raises(DrumMachineError):
        Groove.empty(16, bpm=0.5)


def test_to_notes_inverts_exactly():
    rng = np.random.default_rng(0)
    ticks = np.sort(rng.integers(0, 480 * 16, 200))
    src = notes([(t, p, v) for t, p, v in zip(ticks, rng.choice([36, 38, 42, 46, 43, 47, 50, 49, 51], 200),
                                               rng.integers(1, 128, 200))])
    g, rep = groove_from_notes(src, GM, 97.0)
    back = g.to_notes(480)
    g2, rep2 = groove_from_notes(back, GM, 97.0)
    assert rep2.merged == 0 and len(back) == len(src) - rep.merged
    np.testing.assert_array_equal(g.hits, g2.hits)
    np.testing.assert_allclose(g.offsets, g2.offsets, atol=1e-6)
    np.testing.assert_allclose(g.velocities, g2.velocities, atol=1e-7)


def test_tempo_map_seconds():
    s = ticks_to_seconds(np.array([0, 480, 960, 1440]), 480, [(0, 500_000), (960, 1_000_000)])
    np.testing.assert_allclose(s, [0.0, 0.5, 1.0, 2.0])


@pytest.mark.dataset
@pytest.mark.slow
def test_dataset_round_trip(full_dataset):
    """Every fourth file of the data set, every drummer and style among them (the whole set takes
    a minute: ``python -c`` over ``round_trip`` when the representation changes)."""
    paths = sorted(full_dataset.rglob("*.mid"))
    sample = paths[::4]
    bad = [rt for rt in map(round_trip, sample) if not (rt.ok and rt.max_onset_ms <= 1.0 and rt.max_velocity <= 1)]
    assert len(paths) > 1000 and len(sample) > 250 and not bad, bad[:3]
