import numpy as np
import pytest

from drummachine.core import attributes
from drummachine.corpus import build as corpus
from drummachine.corpus.dataset import Dataset

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def built():
    return corpus.build(FIXTURES)


def test_fixture_build(built, tmp_path):
    ds, rep = built
    assert rep.used == 30 and not rep.skipped
    assert ds.n_bars == rep.bars > 100
    assert set(ds.files["meter"]) >= {"4/4", "3/4", "6/8", "5/8"}
    # labelled fills: one per fill performance
    fill_files = ds.files["beat_type"] == "fill"
    per_file = np.bincount(ds.bars["file"], weights=ds.bars["fill"], minlength=len(fill_files))
    assert np.all(per_file[fill_files] == 1)
    path = tmp_path / "d.npz"
    ds.save(path)
    again = Dataset.load(path)
    np.testing.assert_array_equal(again.hvo, ds.hvo)
    assert list(again.files["style"]) == list(ds.files["style"])


def test_fill_bars_are_busier_on_snare_and_toms(built):
    _, rep = built
    assert rep.fill_vs_beat_activity > 1.3


def bar(hits):
    b = np.zeros((1, 16, 3, 9), np.float32)
    for step, voice, vel in hits:
        b[0, step, 0, voice] = 1
        b[0, step, 1, voice] = vel
    return b


@pytest.mark.parametrize("hits,attr,lo,hi", [
    ([(s, 0, 0.8) for s in (0, 4, 8, 12)], "syncopation", 0.0, 0.0),
    ([(s, 0, 0.8) for s in (3, 7, 11, 15)], "syncopation", 1.0, 1.0),
    ([(s, 2, 0.5) for s in range(16)], "density", 1.0, 1.0),
    ([(0, 0, 0.25), (4, 1, 0.75)], "loudness", 0.5, 0.5),
    ([], "loudness", 0.0, 0.0),
    ([(s, 2, 0.5) for s in range(16)], "complexity", 0.0, 0.0),
])
def test_attribute_table(hits, attr, lo, hi):
    v = attributes.measure(bar(hits))[attr][0]
    assert lo - 1e-6 <= v <= hi + 1e-6


def test_dataset_load_refuses_garbage(tmp_path):
    from drummachine.core.errors import DrumMachineError
    p = tmp_path / "x.npz"
    p.write_bytes(b"garbage")
    with pytest.raises(DrumMachineError, match="not a drummachine dataset"):
        Dataset.load(p)
