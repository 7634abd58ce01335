"""The shipped model: torch vs ONNX fp32 vs int8 parity, on real drummers' bars (the fixtures)."""

import json

import numpy as np
import pytest

from drummachine.core import attributes
from drummachine.corpus import build as corpus
from drummachine.model.model_file import MODELS_DIR, cache_names
from drummachine.core.sampling import expected

from .conftest import FIXTURES

FP32, INT8, PT = MODELS_DIR / "groove.fp32.onnx", MODELS_DIR / "groove.int8.onnx", MODELS_DIR / "groove.pt"


@pytest.fixture(scope="module")
def windows():
    from drummachine.model.generator import Generator
    from drummachine.corpus.windows import Windows

    if not INT8.exists():
        pytest.fail("models/groove.int8.onnx is missing: the model must ship")
    gen = Generator(str(INT8))
    ds, _ = corpus.build(FIXTURES)
    w = Windows(ds, "train", gen.cond, bars=4)
    return w.batch(w.all_windows()[:24])


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(sess, target, cats, cont):
    cfg = json.loads(sess.get_modelmeta().custom_metadata_map["drummachine"])["config"]
    n, T = target.shape[:2]
    prev = np.concatenate([np.zeros((n, 1, 27), np.float32), target.reshape(n, T, 27)[:, :-1]], axis=1)
    hd = cfg["d_model"] // cfg["n_head"]
    empty = np.zeros((n, cfg["n_head"], 0, hd), np.float32)
    cache = {name: empty for name in cache_names(cfg["n_layer"], "past")}
    logits = sess.run(None, {"prev": prev, "cats": cats, "cont": cont, **cache})[0]
    return logits, cfg


def test_shipped_files_and_manifest():
    manifest = json.loads((MODELS_DIR / "manifest.json").read_text())
    assert INT8.stat().st_size <= 4_000_000
    import hashlib

    for name, entry in manifest["files"].items():
        assert hashlib.sha256((MODELS_DIR / name).read_bytes()).hexdigest() == entry["sha256"], name
    assert "Groove MIDI Dataset" in manifest["data"]["credit"] and "CC BY 4.0" in manifest["data"]["credit"]
    from drummachine.model.generator import Generator

    gen = Generator(str(INT8))  # what the manifest says is what the model file carries
    assert gen.fill_bias is not None and gen.fill_bias.tolist() == manifest["corrections"]["fill_voice_bias"]
    assert gen.played_bias is not None and gen.played_bias.tolist() == manifest["corrections"]["played_voice_bias"]
    assert gen.again_bias is not None and gen.again_bias.tolist() == manifest["corrections"]["again_voice_bias"]
    assert gen.velocity_tilt is not None and gen.velocity_tilt.tolist() == manifest["corrections"]["velocity_tilt"]


def test_onnx_fp32_matches_torch_on_real_bars(windows):
    torch = pytest.importorskip("torch")
    from training.model import GrooveTransformer, ModelConfig

    target, mask, cats, cont = windows
    slim = torch.load(PT, weights_only=True)
    model = GrooveTransformer(ModelConfig(**slim["config"])).eval()
    model.load_state_dict(slim["model"])
    logits, _ = _run(_session(FP32), target, cats, cont)
    n, T = target.shape[:2]
    prev = np.concatenate([np.zeros((n, 1, 27), np.float32), target.reshape(n, T, 27)[:, :-1]], axis=1)
    with torch.no_grad():
        ref, _, _ = model(torch.from_numpy(prev), torch.from_numpy(cats), torch.from_numpy(cont))
    assert np.abs(logits - ref.numpy()).max() <= 1e-4


def test_int8_hit_probabilities_match_fp32(windows):
    target, mask, cats, cont = windows
    l32, cfg = _run(_session(FP32), target, cats, cont)
    l8, _ = _run(_session(INT8), target, cats, cont)
    p32 = expected(l32, cfg["vel_bins"])[0]
    p8 = expected(l8, cfg["vel_bins"])[0]
    m = mask > 0
    assert np.abs(p32 - p8)[m].mean() <= 0.02


def test_int8_sampled_bars_match_fp32_statistics():
    """64 sampled bars (4 styles x 16, fills every 4th), from 4 seeds: one 64-bar sample's offset
    spread varies by +-25% between seeds of the same fp32 model (a swung style's few far-off hits
    weigh a lot), so a single sample would measure the dice, not the quantization."""
    from drummachine.model.generator import Generator
    from drummachine.core.sections import cues_for

    stats = {}
    for path in (FP32, INT8):
        runs = []
        for seed in (11, 12, 13, 14):
            gen = Generator(str(path), seed=seed)
            bars = []
            for style in ("rock", "funk", "jazz", "latin"):
                gen.reset()
                for b in range(16):
                    bars.append(gen.bar(style, 110, cues_for(gen.cond, style, 0.6, b % 4 == 3), b % 4))
            bars = np.stack(bars)
            hits = bars[:, :, 0] > 0.5
            runs.append((attributes.density(bars).mean(), bars[:, :, 1][hits].mean(), bars[:, :, 2][hits].std()))
        stats[path.name] = dict(zip(("density", "velocity", "offset_std"), np.mean(runs, axis=0)))
    a, b = stats[FP32.name], stats[INT8.name]
    for k in a:
        assert abs(b[k] / a[k] - 1.0) <= 0.05, (k, a[k], b[k])


def test_shipped_model_keeps_time_on_the_cymbal_it_is_asked_for():
    """The kit palette steers the real model: ride asked, ride played and no hats; hats asked, hats
    played and no ride (what the palette turns off is never played)."""
    from drummachine.model.generator import Generator
    from drummachine.core.voices import VOICE_NAMES
    from drummachine.core.sections import cues_for

    hat, open_hat, ride = (VOICE_NAMES.index(v) for v in ("closed_hat", "open_hat", "ride"))
    counts, silent = {}, {}
    for cymbal in ("hats", "ride"):
        gen = Generator(str(INT8), seed=3)
        bars = []
        for style in ("rock", "funk", "jazz"):
            gen.reset()
            bars += [gen.bar(style, 110, cues_for(gen.cond, style, 0.6, cymbal=cymbal), b % 4) for b in range(8)]
        hits = np.stack(bars)[:, :, 0]
        counts[cymbal] = (hits[:, :, hat].sum(axis=1).mean(), hits[:, :, ride].sum(axis=1).mean())
        silent[cymbal] = hits[:, :, [ride] if cymbal == "hats" else [hat, open_hat]].sum()
    (hat_h, ride_h), (hat_r, ride_r) = counts["hats"], counts["ride"]
    assert hat_h > 4 * max(ride_h, 0.25) and ride_r > 4 * max(hat_r, 0.25), counts
    assert hat_h >= 4 and ride_r >= 4, counts  # time is kept: at least quarter notes
    assert silent == {"hats": 0, "ride": 0}, silent


def test_shipped_model_plays_a_voice_in_every_bar_asked_and_the_floor_is_why():
    """A song's `voices = { mid_tom = "on" }` on the real model: every bar has a mid tom. The model
    alone, told the same, leaves most bars without one (the floor of conditioning.due_floor)."""
    from drummachine.model.generator import Generator
    from drummachine.core.voices import VOICE_NAMES
    from drummachine.core.sections import cues_for

    mid = VOICE_NAMES.index("mid_tom")
    share = {}
    for keep_on in (True, False):
        gen = Generator(str(INT8), seed=5)
        gen.keep_on = keep_on
        bars = []
        for style in ("rock", "funk", "jazz"):
            gen.reset()
            cues = cues_for(gen.cond, style, 0.6, voices=(("mid_tom", "on"),))
            bars += [gen.bar(style, 110, cues, b % 4) for b in range(8)]
        share[keep_on] = (np.stack(bars)[:, :, 0, mid].sum(axis=1) > 0).mean()
    assert share[True] == 1.0 and share[False] < 0.5, share
