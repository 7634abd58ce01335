"""Training, distributed training, export and the runtime generator, on a tiny model and tiny data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from drummachine.corpus import build as corpus
from drummachine.core.errors import DrumMachineError

from .conftest import FIXTURES, ROOT, run_cli

torch = pytest.importorskip("torch")

TINY = ["--d-model", "32", "--n-layer", "2", "--n-head", "2", "--d-ff", "64", "--bars", "2", "--batch", "4",
        "--vel-bins", "8", "--off-bins", "8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "fixtures.npz"
    ds, _ = corpus.build(FIXTURES)
    # the fixtures are all train split: call a few performances validation so both splits exist
    split = ds.files["split"].astype("<U16")
    split[::5] = "validation"
    ds.files["split"] = split
    ds.save(path)
    return path


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = run_cli("train", "--data", data, "--out", out, "--epochs", "2", "--max-steps", "6", "--seed", "3", *TINY)
    assert r.returncode == 0, r.stderr
    return out


def test_training_writes_checkpoint_and_history(trained):
    from training.train import load_checkpoint

    ckpt = load_checkpoint(trained / "last.pt")  # weights_only=True inside
    assert ckpt["step"] == 6
    assert ckpt["config"]["d_model"] == 32
    lines = (trained / "history.jsonl").read_text().splitlines()
    assert "val_hit_nll" in json.loads(lines[-1])


def test_training_is_reproducible_and_resumes(data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        r = run_cli("train", "--data", data, "--out", out, "--epochs", "1", "--max-steps", "3", "--seed", "5", *TINY)
        assert r.returncode == 0, r.stderr
    wa = torch.load(a / "last.pt", weights_only=True)["model"]
    wb = torch.load(b / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    r = run_cli("train", "--data", data, "--out", a, "--epochs", "2", "--max-steps", "5", "--seed", "5", "--resume",
                *TINY)
    assert r.returncode == 0, r.stderr
    resumed = torch.load(a / "last.pt", weights_only=True)
    assert resumed["step"] == 5 and resumed["epoch"] == 2


def test_checkpoint_refuses_pickled_objects(tmp_path):
    from training.train import load_checkpoint

    import fractions

    torch.save({"x": fractions.Fraction(1, 3)}, tmp_path / "evil.pt")  # any non-tensor object needs unpickling
    with pytest.raises(DrumMachineError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


@pytest.mark.slow
def test_torchrun_two_processes_end_with_identical_weights(data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "training.train", "--data", str(data), "--out", str(tmp_path), "--epochs", "1",
                        "--max-steps", "3", "--dump-ranks", "--threads", "1", *TINY],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["step"] == 3
    # and the three steps moved the weights away from the seed's initialization
    from training.model import GrooveTransformer, ModelConfig

    torch.manual_seed(1)  # train.py's default seed
    init = GrooveTransformer(ModelConfig(**ckpt["config"])).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in w0)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "groove"
    r = run_cli("export", trained / "last.pt", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_reexport_keeps_the_corrections_of_the_same_model_only(trained, exported, data, tmp_path):
    import shutil

    import onnx

    from drummachine.model.generator import Generator
    from drummachine.model.model_file import METADATA_KEY

    old = tmp_path / "old.int8.onnx"
    shutil.copy(str(exported) + ".int8.onnx", old)
    m = onnx.load(str(old))
    prop = next(p for p in m.metadata_props if p.key == METADATA_KEY)
    meta = json.loads(prop.value)
    meta["velocity_tilt"] = [0.0] * 8 + [1.5]
    meta["velocity_calibration"] = {"data": "validation split"}
    prop.value = json.dumps(meta)
    onnx.save(m, str(old))
    r = run_cli("export", trained / "last.pt", "--out", tmp_path / "again", "--corrections-from", old)
    assert r.returncode == 0, r.stderr
    gen = Generator(str(tmp_path / "again.int8.onnx"))
    assert gen.velocity_tilt.tolist() == [0.0] * 8 + [1.5]
    assert gen.info.meta["velocity_calibration"] == {"data": "validation split"}
    assert gen.info.meta["precision"] == "int8"
    # another model's corrections do not apply
    r = run_cli("train", "--data", data, "--out", tmp_path / "other", "--epochs", "1", "--max-steps", "1",
                *TINY[:-2], "--off-bins", "12")
    assert r.returncode == 0, r.stderr
    r = run_cli("export", tmp_path / "other" / "last.pt", "--out", tmp_path / "x", "--corrections-from", old)
    assert r.returncode != 0 and "another model" in r.stderr


@pytest.mark.parametrize("graph", ["fused", "traced"])
def test_onnx_fp32_matches_torch(exported, graph, tmp_path):
    """Both ways of making the step graph (training.export.GRAPHS): the CLI's default export is the
    fused one; the traced one is exported here."""
    import onnx
    import onnxruntime as ort

    from training.export import example_inputs, export_onnx, inputs, outputs
    from training.model import GrooveTransformer, ModelConfig

    slim = torch.load(str(exported) + ".pt", weights_only=True)
    model = GrooveTransformer(ModelConfig(**slim["config"])).eval()
    model.load_state_dict(slim["model"])
    path = str(exported) + ".fp32.onnx"
    if graph == "traced":
        path = tmp_path / "traced.onnx"
        export_onnx(model, path, graph)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("MultiHeadAttention" in ops) == (graph == "fused")
    cats_rng = torch.Generator().manual_seed(1)
    for batch, steps, past in ((1, 1, 0), (1, 1, 5), (2, 7, 3), (1, 16, 0), (2, 3, 40)):
        args = example_inputs(model.cfg, batch, steps, past)
        cats = torch.stack([torch.randint(0, n, (batch, steps), generator=cats_rng) for n in
                            (model.cfg.n_styles, model.cfg.steps_per_bar, model.cfg.phrase_bars)], dim=-1)
        args = (args[0], cats, *args[2:])
        with torch.no_grad():
            ref = model.forward_layers(*args)
        prev, cats, cont, cache = args
        got = sess.run(None, dict(zip(inputs(model.cfg.n_layer), (a.numpy() for a in (prev, cats, cont, *cache)))))
        assert [o.name for o in sess.get_outputs()] == outputs(model.cfg.n_layer)
        with torch.no_grad():  # the stacked cache training uses is the same cache, layer by layer
            stacked = model(prev, cats, cont, torch.stack(cache[0::2]), torch.stack(cache[1::2]))
        np.testing.assert_allclose(stacked[0].numpy(), ref[0].numpy(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(stacked[1].numpy(), np.stack([r.numpy() for r in ref[1][0::2]]), atol=1e-6)
        for r, g in zip((ref[0], *ref[1]), got):
            np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=0)


def test_generator_is_seeded_and_steerable(exported):
    from drummachine.core.conditioning import Cues
    from drummachine.model.generator import Generator
    from drummachine.core.sampling import Steering

    path = str(exported) + ".int8.onnx"
    a = Generator(path, seed=7)
    b = Generator(path, seed=7)
    style = a.styles[1]
    bars_a = np.stack([a.bar(style, 100, Cues()) for _ in range(3)])
    bars_b = np.stack([b.bar(style, 100, Cues()) for _ in range(3)])
    np.testing.assert_array_equal(bars_a, bars_b)
    muted = Steering(voice_bias=(0.0, -np.inf) + (0.0,) * 7)
    bar = a.bar(style, 100, Cues(), steering=muted)
    assert bar[:, 0, 1].sum() == 0  # snare muted
    busy = Steering(voice_bias=(20.0,) * 9)
    assert a.bar(style, 100, Cues(), steering=busy)[:, 0].mean() > 0.95


def test_generator_context_slides_without_a_glitch(exported):
    from drummachine.model.generator import Generator

    gen = Generator(str(exported) + ".int8.onnx", seed=1)
    cont = gen.cond.cont(120, gen.cond.defaults("any"))
    for i in range(gen.context * 3):
        hvo = gen.step(0, i % 16, (i // 16) % 4, cont)
        assert gen.cached_steps <= gen.context
        assert np.isfinite(hvo).all()
    # keep/regenerate: restoring a saved state replays the same steps
    state = gen.save()
    first = [gen.step(0, i % 16, 0, cont) for i in range(16)]
    gen.restore(state)
    again = [gen.step(0, i % 16, 0, cont) for i in range(16)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    # ... mid-bar too, with a voice the palette plays (what the bar has played is part of the state)
    from drummachine.core.conditioning import Cues

    toms = gen.cond.cont(120, Cues(palette=(0,) * 4 + (1, 1, 1) + (0,) * 2))
    start = [gen.step(0, i, 0, toms) for i in range(5)]
    state = gen.save()
    first = [gen.step(0, i, 0, toms) for i in range(5, 16)]
    gen.restore(state)
    again = [gen.step(0, i, 0, toms) for i in range(5, 16)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert (np.stack(start + first)[:, 0, 4:7].sum(axis=0) > 0).all()  # each tom asked for came in the bar


def test_warm_up_leaves_the_groove_and_the_dice_as_they_were(exported):
    """The live session warms the generator through a full cache before playing (its memory is
    taken then, not over the first bars): what it then plays is what a cold generator plays."""
    from drummachine.model.generator import Generator

    path = str(exported) + ".int8.onnx"
    cold, warm = Generator(path, seed=3), Generator(path, seed=3)
    warm.warm_up()
    assert warm.cached_steps == 0 and warm.step_count == 0 and not warm.bar_played.any()
    cont = cold.cond.cont(100, cold.cond.defaults("any"))
    played = [np.stack([g.step(1, i % 16, (i // 16) % 4, cont) for i in range(40)]) for g in (cold, warm)]
    np.testing.assert_array_equal(*played)


def test_saved_states_share_the_cache_and_keep_what_they_read(exported):
    """The engine saves a state before every step it keeps ahead: the states share the cache's
    storage (not half a megabyte each), and a step generated after going back to an older state
    never writes over the steps a later state, still kept, reads."""
    from collections import deque

    from drummachine.model.generator import Generator

    gen = Generator(str(exported) + ".int8.onnx", seed=1)
    cont = gen.cond.cont(120, gen.cond.defaults("any"))
    for i in range(20):
        gen.step(0, i % 16, 0, cont)
    older = gen.save()
    for i in range(5):
        gen.step(0, i, 0, cont)
    later = gen.save()
    later_cache = [a.copy() for a in gen.past]
    gen.restore(older)
    loud = gen.cond.cont(180, gen.cond.defaults("any"))
    for i in range(6):  # another version of the same steps
        gen.step(0, i, 0, loud)
    gen.restore(later)
    for got, want in zip(gen.past, later_cache):
        np.testing.assert_array_equal(got, want)
    ahead = deque(maxlen=9)  # as the engine: the states of the steps kept ahead
    for i in range(gen.context * 2):
        ahead.append(gen.save())
        gen.step(0, i % 16, (i // 16) % 4, cont)
        assert len({id(state.kv) for state in ahead}) <= 2  # across a slide, two stores at most


def test_bench_times_every_engine_in_turns_with_a_host_reference(exported):
    """``drummachine bench --json`` on the tiny exported model: every engine's step and bar
    percentiles, the sizes, the speed-up, the host reference and the generator's memory."""
    r = run_cli("bench", "--json", "--steps", "96", "--model-dir", exported.parent)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result["engines"]) == {"torch_eager_fp32", "onnx_fp32", "onnx_int8"}
    for name, e in result["engines"].items():
        assert 0 < e["step"]["p50_ms"] <= e["step"]["p99_ms"] <= e["step"]["max_ms"], name
        # a bar is 16 steps: its median is at least 16 of the fastest steps and at most 16 of the slowest
        assert 16 * e["step"]["p50_ms"] * 0.3 <= e["bar"]["p50_ms"] <= 16 * e["step"]["max_ms"], name
        assert e["file_mb"] > 0
    assert result["int8_speedup_vs_torch_eager_p50"] > 0
    host = result["host_reference"]
    assert 0 < host["p50_ms"] <= host["p99_ms"] and host["p99_over_p50"] >= 1.0
    assert result["memory"]["peak_rss_mb"] > result["memory"]["python_numpy_onnxruntime_only_mb"] > 0


def test_generate_cli_writes_standard_midi(exported, tmp_path):
    import mido

    model = str(exported) + ".int8.onnx"
    out = tmp_path / "g.mid"
    wav = tmp_path / "g.wav"
    r = run_cli("generate", "--model", model, "--style", "rock", "--bpm", "123", "--bars", "4", "--fill-every", "2",
                "--seed", "4", "-o", out, "--wav", wav)
    assert r.returncode == 0, r.stderr
    mid = mido.MidiFile(out)
    metas = [m for m in mid.tracks[0] if m.is_meta]
    assert any(m.type == "set_tempo" and abs(mido.tempo2bpm(m.tempo) - 123) < 0.01 for m in metas)
    assert any(m.type == "time_signature" and (m.numerator, m.denominator) == (4, 4) for m in metas)
    notes = [m for m in mid.tracks[0] if m.type == "note_on" and m.velocity > 0]
    assert notes and all(m.channel == 9 for m in notes)
    assert wav.stat().st_size > 1000
    r = run_cli("generate", "--model", model, "--list-styles")
    assert r.returncode == 0 and "rock" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--style", "polka"], "unknown style 'polka'; allowed: any,"),
    (["--bpm", "500"], "500 is out of range; allowed: 40-300"),
    (["--intensity", "1.5"], "1.5 is out of range; allowed: 0..1"),
    (["--section", "coda"], "unknown section 'coda'; allowed: intro"),
])
def test_generate_bad_values(exported, tmp_path, args, needle):
    out = tmp_path / "g.mid"
    r = run_cli("generate", "--model", str(exported) + ".int8.onnx", *args, "-o", out)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_broken_model_files(exported, tmp_path):
    import onnx

    good = (exported.parent / "groove.int8.onnx").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x80\x04pickle? no thanks")
    wrong = tmp_path / "schema.onnx"
    m = onnx.load_from_string(good)
    meta = json.loads(m.metadata_props[0].value)
    meta["schema"] = 99
    m.metadata_props[0].value = json.dumps(meta)
    onnx.save(m, str(wrong))
    short = tmp_path / "short.onnx"  # a correction that would fail mid-song, not at load
    meta["schema"] = 3
    meta["velocity_tilt"] = [0.1, 0.2, "loud"]
    m.metadata_props[0].value = json.dumps(meta)
    onnx.save(m, str(short))
    cases = [(truncated, "not a readable ONNX model"), (garbage, "not a readable ONNX model"),
             (wrong, "schema 99; this runtime reads schema 3"), (tmp_path / "none.onnx", "no such model file"),
             (short, "velocity_tilt must be 9 finite numbers, one per voice")]
    for path, needle in cases:
        r = run_cli("generate", "--model", path, "-o", tmp_path / "x.mid")
        assert r.returncode == 2 and needle in r.stderr and path.name in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_fine_tune_starts_from_a_checkpoint(data, trained, tmp_path):
    from training.train import load_checkpoint

    start = load_checkpoint(trained / "last.pt")
    r = run_cli("train", "--data", data, "--out", tmp_path, "--init", trained / "last.pt", "--epochs", "1",
                "--max-steps", "1", "--lr", "1e-6", *TINY)
    assert r.returncode == 0, r.stderr
    tuned = load_checkpoint(tmp_path / "last.pt")
    assert tuned["conditioning"] == start["conditioning"] and tuned["step"] == 1
    # one step at a tiny learning rate: near the start, far from a fresh initialization
    gap = max(float((tuned["model"][k] - start["model"][k]).abs().max()) for k in start["model"])
    assert gap < 1e-3
    r = run_cli("train", "--data", data, "--out", tmp_path / "other", "--init", trained / "last.pt", "--epochs", "1",
                "--max-steps", "1", *TINY[:-2], "--off-bins", "12")
    assert r.returncode == 2 and "does not match" in r.stderr


def test_calibration_writes_fill_and_played_biases_for_the_voices_asked(data, exported, tmp_path):
    import shutil

    import onnx

    from drummachine.model.generator import Generator
    from drummachine.model.model_file import METADATA_KEY

    for suffix in (".int8.onnx", ".fp32.onnx"):
        shutil.copy(str(exported) + suffix, tmp_path / f"groove{suffix}")
    r = subprocess.run([sys.executable, "-m", "training.calibrate", "--data", str(data), "--models", str(tmp_path),
                        "--fills", "low_tom,high_tom", "--rounds", "1", "--seeds", "1", "--every", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for suffix in (".int8.onnx", ".fp32.onnx"):
        m = onnx.load(str(tmp_path / f"groove{suffix}"))
        meta = json.loads(next(p.value for p in m.metadata_props if p.key == METADATA_KEY))
        bias = meta["fill_voice_bias"]
        history = meta["fill_calibration"]["history"]
        assert len(bias) == 9 and len(history) == 2
        assert [i for i, b in enumerate(history[1]["bias"]) if b != 0] == [4, 6]  # only the voices asked moved
        assert bias in (history[1]["bias"], [0.0] * 9)
    assert Generator(str(tmp_path / "groove.int8.onnx")).fill_bias.tolist() == bias
    r = subprocess.run([sys.executable, "-m", "training.calibrate", "--data", str(data), "--models", str(tmp_path),
                        "--played", "crash", "--rounds", "1", "--seeds", "1", "--every", "3"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    gen = Generator(str(tmp_path / "groove.int8.onnx"))
    assert gen.fill_bias.tolist() == bias  # kept
    m = onnx.load(str(tmp_path / "groove.int8.onnx"))
    meta = json.loads(next(p.value for p in m.metadata_props if p.key == METADATA_KEY))
    moved = meta["played_calibration"]["history"][1]["bias"]  # after one round: only the crash moved
    assert [i for i, b in enumerate(moved) if b != 0] == [7]
    assert gen.played_bias.tolist() in (moved, [0.0] * 9)  # the better of the two rounds is kept
    r = subprocess.run([sys.executable, "-m", "training.calibrate", "--data", str(data), "--models", str(tmp_path),
                        "--fills", "cowbell"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode != 0 and "unknown voice 'cowbell'" in r.stderr


def test_calibration_tunes_velocity_on_validation_with_a_crossfit(data, exported, tmp_path):
    import shutil

    import onnx

    from drummachine.model.generator import Generator
    from drummachine.model.model_file import METADATA_KEY

    for suffix in (".int8.onnx", ".fp32.onnx"):
        shutil.copy(str(exported) + suffix, tmp_path / f"groove{suffix}")
    r = subprocess.run([sys.executable, "-m", "training.calibrate", "--data", str(data), "--models", str(tmp_path),
                        "--velocity", "kick,snare", "--split", "validation", "--every", "1", "--crossfit",
                        "--rounds", "1", "--seeds", "1", "--gain", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = onnx.load(str(tmp_path / "groove.int8.onnx"))
    meta = json.loads(next(p.value for p in m.metadata_props if p.key == METADATA_KEY))
    record = meta["velocity_calibration"]
    assert record["data"] == "validation split" and record["voices"] == ["kick", "snare"]
    history = record["history"]
    assert [i for i, t in enumerate(history[1]["tilt"]) if t != 0] == [0, 1]  # only the voices asked moved
    assert meta["velocity_tilt"] in (history[0]["tilt"], history[1]["tilt"])
    # the cross-fit: each half fitted, measured on the other, before and after
    halves = record["crossfit"]
    assert [(h["fitted_on"], h["measured_on"]) for h in halves] == [("a", "b"), ("b", "a")]
    assert all(len(h["untuned"]) == 9 and len(h["tuned"]) == 9 and h["bars"] > 0 for h in halves)
    assert sum(h["bars"] for h in halves) == record["bars"]
    gen = Generator(str(tmp_path / "groove.int8.onnx"))
    assert gen.velocity_tilt.tolist() == meta["velocity_tilt"] and gen.again_bias is None
