"""Subcommands around the model: train, export, generate, evaluate, bench."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from drummachine.core.errors import DrumMachineError


def _need_torch(what: str):
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise DrumMachineError(what, "needs the training extra: pip install torch==2.13.0 && "
                               "pip install -e '.[train]'") from None


def cmd_train(args) -> int:
    """Train the model (forwards every option to ``python -m training.train``)."""
    _need_torch("drummachine train")
    from training.train import main

    return main(args.rest)


def cmd_export(args) -> int:
    """Export a checkpoint to ONNX fp32 and int8 (forwards to ``python -m training.export``)."""
    _need_torch("drummachine export")
    from training.export import main

    return main(args.rest)


def _in_range(name: str, value: float, lo: float, hi: float) -> float:
    if not lo <= value <= hi:
        raise DrumMachineError(f"--{name}", f"{value:g} is out of range; allowed: {lo:g}..{hi:g}")
    return value


def generate_song(gen, args):
    """The song or jam ``generate`` plays (the one ``play`` would, given the same options)."""
    from drummachine.core.sections import parse_voices, section_feel
    from drummachine.core.song import Section, Song, load_song
    from drummachine.live.offline import choose_song
    from drummachine.live.presets import find, load_styles
    from drummachine.model.generator import check_bpm

    styles = load_styles(None)  # as play loads them: a style the model lacks is checked when asked for
    if args.song:
        return load_song(find("songs", args.song), gen.cond.styles), styles
    if args.bpm is not None:
        check_bpm(args.bpm)
    song = choose_song(gen, styles, None, args.style, args.bpm, args.intensity)
    asked = (args.section, args.fill_every, args.voices, args.cymbal != "auto")
    if not any(asked):
        return song, styles
    groove = song.sections[0]
    feel = section_feel(args.section) if args.section else None
    level = args.intensity if args.intensity is not None else (feel.intensity if feel else groove.intensity)
    every = args.fill_every if args.fill_every is not None else (feel.fill_every if feel else groove.fill_every)
    section = Section(args.section or groove.name, args.section or groove.kind, 0, groove.style, groove.bpm, level,
                      every, args.cymbal, parse_voices(args.voices))
    return Song(song.name, (section,), 0, ""), styles


def cmd_generate(args) -> int:
    """Generate a groove or a whole song with the model, through the same engine, conductor and
    performer as ``play``, and write it as a standard MIDI file (and optionally WAV)."""
    from drummachine.core.groove import Groove
    from drummachine.core.notemap import GM_NOTEMAP, load_notemap
    from drummachine.core.transport import STEP_TICKS
    from drummachine.live.offline import play_offline, shipped_performer, starting_commands
    from drummachine.midi.files import atomic_write, write_midi
    from drummachine.model.generator import Generator

    gen = Generator(args.model, seed=args.seed, threads=args.threads, provider=args.provider)
    if args.list_styles:
        for s in gen.styles:
            d = gen.cond.defaults(s)
            lo, mid, hi = gen.cond.style_bpm.get(s, [0, 0, 0])
            print(f"{s:14s} bpm {lo:3.0f}-{hi:3.0f} (typical {mid:3.0f})  intensity {d.intensity:.2f}  "
                  f"density {d.density:.2f}  complexity {d.complexity:.2f}")
        return 0
    if not args.output:
        raise DrumMachineError("-o", "an output MIDI file is required (or --list-styles)")
    _in_range("bars", args.bars, 1, 10_000)
    if args.intensity is not None:
        _in_range("intensity", args.intensity, 0.0, 1.0)
    _in_range("temperature", args.temperature, 0.0, 2.0)
    if args.fill_every is not None:
        _in_range("fill-every", args.fill_every, 0, 64)
    notemap = load_notemap(args.notemap) if args.notemap else GM_NOTEMAP
    song, styles = generate_song(gen, args)
    setup = starting_commands(styles, song, args.bpm if not args.song else None)
    if args.temperature != 1.0:
        setup.append(("temperature", args.temperature))
    t0 = time.perf_counter()
    performer = shipped_performer(args.seed, warnings := []) if args.performer else None
    for w in warnings:
        print(f"drummachine: warning: {w}", file=sys.stderr)
    take = play_offline(gen, song, setup, bars=None if args.song else args.bars, open_bars=args.bars,
                        performer=performer)
    took = time.perf_counter() - t0
    first_bpm = float(take.bpm[0])
    groove = Groove.from_hvo(take.hvo, bpm=first_bpm)
    ticks_per_beat = STEP_TICKS * 4
    tick = ticks_per_beat // 4
    write_midi(args.output, groove.to_notes(ticks_per_beat, notemap), first_bpm, groove.meter, notemap.channel,
               tempo_changes=[(s * tick, b) for s, b in take.tempo_changes()],
               markers=[(s * tick, name) for s, name in take.markers()] if args.song else ())
    bars = len(take.hvo) // 16
    what = f"{song.name} ({bars} bars)" if args.song else f"{bars} bars of {song.sections[0].style}"
    msg = f"{args.output}: {what} at {first_bpm:g} bpm, {int(groove.hits.sum())} hits"
    if args.wav:
        from drummachine.audio import render as mixer
        from drummachine.audio.kit import open_kit
        from drummachine.audio.wavfile import write_wav

        kit = open_kit(args.kit, 48000)
        onsets = np.rint(np.maximum([e.time for e in take.events], 0.0) * kit.sample_rate).astype(np.int64)
        audio = mixer.normalize(mixer.render(kit, onsets, np.array([e.voice for e in take.events], np.int64),
                                             np.array([e.velocity for e in take.events])))
        atomic_write(args.wav, lambda tmp: write_wav(tmp, audio, kit.sample_rate))
        msg += f"; audio {args.wav}"
    print(msg + f" (generated in {took:.2f} s)")
    return 0


def evaluate_as_played(args) -> int:
    """As played: for each performance of the split only its style and tempo are given; a jam in
    that style at that tempo, as long as the performance, plays through the engine, conductor and
    performer that ``play`` uses (live.offline); everything else is the instrument's own."""
    from drummachine.core.song import jam
    from drummachine.corpus import as_played as ap
    from drummachine.corpus.baselines import BaselinePlayer
    from drummachine.corpus.windows import Windows
    from drummachine.live.offline import play_offline, shipped_performer, starting_commands
    from drummachine.live.presets import load_styles
    from drummachine.model.generator import Generator

    gen = Generator(args.model, seed=args.seed, threads=args.threads, provider=args.provider)
    ds = _dataset(args.data)
    train, split = Windows(ds, "train", gen.cond), Windows(ds, args.split, gen.cond)
    real, trained = ap.performances(split), ap.performances(train)
    if not real:
        raise DrumMachineError(args.data, f"no 4/4 performances in split {args.split!r}")
    real_bars, real_styles = [b for _, _, b in real], [s for s, _, _ in real]
    keys = ap.train_keys(np.concatenate([b for _, _, b in trained]))
    styles = load_styles(None)
    seeds = [args.seed + k for k in range(args.seeds)]
    t0 = time.perf_counter()
    result = {"model": _shown(gen.info.path), "split": args.split, "seeds": seeds,
              "ceiling": ap.table([b for _, _, b in trained], [s for s, _, _ in trained], real_bars, real_styles),
              "copies_real": ap.copy_share(np.concatenate(real_bars), keys)}
    shipped = shipped_performer(args.seed)  # read once; each session reseeds it
    if shipped is None:
        raise DrumMachineError("models/performer.json", "the performer is missing or broken: nothing to evaluate")
    plans = {"as_played": True, "sections_held": False}
    for name, use_performer in plans.items():
        played, played_styles = [], []
        for s in seeds:
            for k, (style, bpm, bars) in enumerate(real):
                seed = 1000 * s + k  # each performance its own session: the model's and the performer's dice
                gen.reseed(seed)
                song = jam(style, round(bpm), styles.get(style).get("intensity", gen.cond.defaults(style).intensity))
                performer = shipped.reseeded(seed) if use_performer else None
                take = play_offline(gen, song, starting_commands(styles, song), bars=len(bars), performer=performer)
                played.append(take.hvo.reshape(len(bars), 16, 3, -1))
                played_styles.append(style)
        r = ap.table(played, played_styles, real_bars * len(seeds), real_styles * len(seeds))
        r["copies"] = ap.copy_share(np.concatenate(played), keys)
        r["targets"] = ap.targets(r, result["ceiling"], result["copies_real"])
        result[name] = r
    # the two baselines as players, fitted per style on the train drummers, the same lengths and seeds
    for kind, name in (("position", "position_frequency"), ("markov", "markov_patterns")):
        player = BaselinePlayer.fit(kind, [b for _, _, b in trained], [s for s, _, _ in trained])
        played = [player.play(style, len(bars), np.random.default_rng(1000 * s + k))
                  for s in seeds for k, (style, _, bars) in enumerate(real)]
        r = ap.table(played, real_styles * len(seeds), real_bars * len(seeds), real_styles * len(seeds))
        r["copies"] = ap.copy_share(np.concatenate(played), keys)
        result[name] = r
    result["intensity_control"] = _as_played_control(gen, styles, shipped.reseeded(seeds[0]),
                                                     args.control_styles.split(",") if args.control_styles else None)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    text = ap.format_table({"as played": result["as_played"], "sections held": result["sections_held"],
                            "position frequency": result["position_frequency"],
                            "Markov patterns": result["markov_patterns"],
                            "train drummers (ceiling)": result["ceiling"]})
    targets = "\n".join(f"  {k}: {v[0] if not isinstance(v[0], float) else round(v[0], 3)} "
                         f"{'met' if v[1] else 'NOT met'}" for k, v in result["as_played"]["targets"].items())
    targets += "\n  intensity -> loudness / density, Spearman over bars within a style (>= 0.8): " + ", ".join(
        f"{s} {c['loudness_bars']:.2f} / {c['density_bars']:.2f}" for s, c in result["intensity_control"].items())
    print(json.dumps(result, indent=2, default=float) if args.json else
          f"as played on {args.split} ({len(real)} performances x {len(seeds)} seeds; ratio / overlap against "
          f"the split's drummers)\n{text}\ntargets:\n{targets}\nthe split's drummers copy a train bar "
          f"{result['copies_real']:.3f} of the time")
    if args.out:
        from drummachine.midi.files import atomic_write

        text_out = json.dumps(result, indent=2, default=float) + "\n"
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text_out))
    return 0


def _as_played_control(gen, styles, performer, which: list[str] | None = None, levels: int = 11, bars: int = 8,
                       settle: int = 2) -> dict:
    """Intensity still steers with the performer on: per style, a jam asked each of ``levels``
    intensities (one drummer: the performer's seed stays, the model's dice change), Spearman of
    the asked level against the loudness and density its bars play (after ``settle`` bars)."""
    from drummachine.core import attributes
    from drummachine.core.song import jam
    from drummachine.corpus import as_played as ap
    from drummachine.live.offline import play_offline, starting_commands

    out = {}
    for style in [s for s in (which or ap.MAIN_STYLES) if s in gen.cond.styles]:
        bpm = round(gen.cond.style_bpm.get(style, [0, 110, 0])[1])
        asked, loud, dense = [], [], []
        for k, level in enumerate(np.linspace(0.0, 1.0, levels)):
            gen.reseed(1000 * performer.seed + k)
            song = jam(style, bpm, float(level))
            take = play_offline(gen, song, starting_commands(styles, song), bars=settle + bars,
                                performer=performer)
            played = take.hvo.reshape(-1, 16, 3, take.hvo.shape[-1])[settle:]
            asked += [level] * len(played)
            loud += list(attributes.loudness(played))
            dense += list(attributes.density(played))
        out[style] = {"loudness_bars": ap.spearman(asked, loud), "density_bars": ap.spearman(asked, dense)}
    return out


def cmd_evaluate(args) -> int:
    """Evaluate the model against the data: prediction, generation and control, in one table
    (``--as-played``: what plays, given only each performance's style and tempo)."""
    if args.as_played:
        return evaluate_as_played(args)
    from drummachine.corpus import evaluation
    from drummachine.model.generator import Generator
    from drummachine.core.sections import cues_for
    from drummachine.corpus.windows import Windows

    gen = Generator(args.model, seed=args.seed, threads=args.threads, provider=args.provider)
    ds = _dataset(args.data)
    train = Windows(ds, "train", gen.cond)
    val = Windows(ds, args.split, gen.cond)
    if not len(val.files):
        raise DrumMachineError(args.data, f"no 4/4 performances in split {args.split!r}")
    t0 = time.perf_counter()
    result = {"model": _shown(gen.info.path), "split": args.split, "prediction": evaluation.prediction(gen, train, val)}
    styles = np.array([gen.cond.styles[i] for i in val.style_index])
    seeds = [args.seed + k for k in range(args.seeds)]
    for mode, key in (("bar", "generation"), ("cymbal", "generation_cymbal_palette"),
                      ("auto", "generation_auto_palette")):
        g, r, spans, by_seed = evaluation.generate_with_seeds(gen, val, mode, seeds)
        result[key] = {**evaluation.generation(g, r, spans, styles, passes=len(seeds)), "seeds": seeds,
                       "density_ratio_by_seed": by_seed, "velocity_by_voice": evaluation.voice_velocities(g, r),
                       "interval_by_voice": evaluation.voice_intervals(g, r, spans, seed=args.seed),
                       **evaluation.density_by_bar_kind(g, r, np.tile(evaluation.split_fills(val), len(seeds)))}
    gen.reseed(args.seed)
    result["drummers_differ"] = evaluation.drummers_differ(train, val)
    control_styles = args.control_styles.split(",") if args.control_styles else \
        [s for s in ("rock", "funk", "jazz", "latin", "hiphop") if s in gen.cond.styles]
    result["control"] = evaluation.control(
        gen, lambda s, i, f: cues_for(gen.cond, s, i, f), control_styles,
        lambda s: gen.cond.style_bpm.get(s, [0, 110, 0])[1])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_evaluation(result))
    if args.out:
        from drummachine.midi.files import atomic_write

        text_out = json.dumps(result, indent=2) + "\n"
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text_out))
    return 0


def _shown(path) -> str:
    """A path as it should appear in a report: relative to the working folder when inside it."""
    import os

    rel = os.path.relpath(path)
    return path.name if rel.startswith("..") else rel


def _dataset(path: str):
    from drummachine.corpus.dataset import Dataset

    p = Path(path)
    if p.is_dir():
        from drummachine.corpus import build as corpus

        return corpus.build(p)[0]
    return Dataset.load(p)


def format_evaluation(r: dict) -> str:
    p = r["prediction"]
    lines = ["prediction (validation, teacher-forced)   hit NLL   hit F1   vel MAE   offset MAE"]
    for name, key in (("model", "model"), ("model, told each bar's kit palette", "model_with_palette"),
                      ("baseline: position frequency", "baseline_position_frequency"),
                      ("baseline: Markov over step patterns", "baseline_markov_patterns")):
        m = p.get(key)
        if m is None:
            continue
        lines.append(f"  {name:38s} {m['hit_nll']:7.4f}  {m['hit_f1']:7.3f}  {m['velocity_mae']:8.4f}  "
                     f"{m['offset_mae']:9.4f}")
    lines.append(f"  model vs better baseline, hit NLL: {100 * p['model_vs_best_baseline_hit_nll']:+.1f}%")
    g = r["generation"]
    lines.append(f"generation ({g['bars']} bars x {len(g.get('seeds', [0]))} seeds, as the split's styles, tempos, "
                 "cues and kit palettes)")
    lines.append(f"  {'':34s} {'generated':>9s} {'real':>7s} {'ratio':>7s} {'overlap':>7s}")
    for k, c in g["all"].items():
        lines.append(f"  {k:34s} {c['generated']:9.4f} {c['real']:7.4f} {c['ratio']:7.3f} {c['overlap']:7.3f}")
    o = g["offset_std_all_hits"]
    lines.append(f"  {'offset std over all hits':34s} {o['generated']:9.4f} {o['real']:7.4f} {o['ratio']:7.3f} "
                 f"{o['overlap']:7.3f}")
    lines.append("  per style (ratio generated/real: offset spread, velocity mean, repetition; bars):")
    for s, c in g["per_style"].items():
        lines.append(f"    {s:14s} {c['offset_spread']['ratio']:6.3f} {c['velocity_mean']['ratio']:6.3f} "
                     f"{c['repetition']['ratio'] if 'repetition' in c else float('nan'):6.3f}  {c['bars']}")
    for key, told in (("generation", "told each bar's kit palette"),
                      ("generation_cymbal_palette", "told only the cymbal each bar keeps time on"),
                      ("generation_auto_palette", "palette left to the model")):
        a = r.get(key)
        if a:
            lines.append(f"  per-voice density, {told} (generated/real pooled over seeds {a.get('seeds', [])}; "
                         "lowest-highest seed):")
            by_seed = a.get("density_ratio_by_seed", {})
            lines.append("    " + "  ".join(
                f"{k[8:]} {v['ratio']:.2f}" + (f" ({min(by_seed[k[8:]]):.2f}-{max(by_seed[k[8:]]):.2f})"
                                                 if by_seed.get(k[8:]) else "")
                for k, v in a["all"].items() if k.startswith("density_")))
            if "velocity_by_voice" in a:
                lines.append("    velocity mean / spread: " + "  ".join(
                    f"{k} {v['mean']:.2f}/{v['spread']:.2f}" for k, v in a["velocity_by_voice"].items()))
            if "interval_by_voice" in a:
                lines.append("    95% interval over the split's performances (bootstrap), density; velocity mean: " +
                             "  ".join(f"{k} {v['density'][0]:.2f}-{v['density'][1]:.2f}; "
                                       f"{v['velocity_mean'][0]:.2f}-{v['velocity_mean'][1]:.2f}"
                                       for k, v in a["interval_by_voice"].items()))
            for kind in ("fill_bars", "beat_bars"):
                if kind in a:
                    lines.append(f"    {kind.replace('_', ' ')}: " + "  ".join(f"{k} {v:.2f}" for k, v in a[kind].items()))
    d = r.get("drummers_differ")
    if d:
        lines.append("  the train split's drummers against this split's, real bars (ratio train/split), hits per bar "
                     "that uses the voice:")
        lines.append("    " + "  ".join(f"{k} {v:.2f}" for k, v in d["hits_per_bar_using"].items()))
        if "velocity_mean" in d:
            lines.append("    and mean velocity: " + "  ".join(f"{k} {v:.2f}" for k, v in d["velocity_mean"].items()))
    c = r["control"]
    lines.append("control")
    for k, v in c.items():
        lines.append(f"  {k:44s} {v}")
    return "\n".join(lines)


def cmd_bench(args) -> int:
    """Generation latency (torch eager, ONNX fp32, ONNX int8; one thread), model sizes, memory."""
    import importlib.util

    from drummachine.model.bench import run
    from drummachine.model.model_file import MODELS_DIR

    more = {}
    if importlib.util.find_spec("torch") is not None:  # the developer's reference column
        from training.bench_torch import torch_stepper

        made = torch_stepper((Path(args.model_dir) if args.model_dir else MODELS_DIR) / "groove.pt")
        if made:
            more["torch_eager_fp32"] = made
    result = run(args, more)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from drummachine.model.bench import format_bench

        print(format_bench(result))
    return 0


def _model_options(p):
    p.add_argument("--model", metavar="FILE.onnx", help="model file (default: the shipped models/groove.int8.onnx)")
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.add_argument("--provider", help="execution provider: cpu, cuda, tensorrt (default: the best available)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same groove")


def register(sub) -> None:
    p = sub.add_parser("train", help="train the model (needs the train extra)", add_help=False,
                       description=cmd_train.__doc__)
    p.set_defaults(func=cmd_train, passthrough=True)
    p = sub.add_parser("export", help="export a checkpoint to ONNX fp32 + int8 (needs the train extra)",
                       add_help=False, description=cmd_export.__doc__)
    p.set_defaults(func=cmd_export, passthrough=True)

    p = sub.add_parser("generate", help="generate a groove or a whole song to a MIDI file",
                       description=cmd_generate.__doc__)
    p.add_argument("--song", help="a whole song (name or file, as play takes it), its sections as MIDI markers")
    p.add_argument("--style", default="rock", help="style of a jam (see --list-styles; default rock)")
    p.add_argument("--bpm", type=float, help="tempo, 40-300 (default: the style's, as play)")
    p.add_argument("--bars", type=int, default=8, help="bars to generate; with --song, how long an open-ended "
                   "section plays (default 8)")
    p.add_argument("--section", help="intro, verse, prechorus, chorus, bridge, breakdown, solo, outro")
    p.add_argument("--intensity", type=float, help="0..1 (default: the section's or the style's own)")
    p.add_argument("--fill-every", type=int, help="a fill in the last bar of every N bars (0: none)")
    p.add_argument("--cymbal", default="auto", help="what keeps time: hats, open_hats, ride, or auto (the model's "
                   "choice; default)")
    p.add_argument("--voices", default="", metavar="VOICE=CHOICE,...",
                   help="single voices: on (every bar plays it), off (never) or auto (the model's choice), "
                   "e.g. low_tom=on,crash=off")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0-2 (default 1.0)")
    p.add_argument("--performer", action=argparse.BooleanOptionalAction, default=True,
                   help="vary each bar as drummers do (default on, as play)")
    p.add_argument("--notemap", metavar="FILE.toml", help="output note map (default General MIDI)")
    p.add_argument("-o", "--output", metavar="OUT.mid")
    p.add_argument("--wav", metavar="OUT.wav", help="also render it with the built-in kit (or --kit)")
    p.add_argument("--kit", metavar="NAME|DIR", help="the kit for --wav: a Hydrogen kit by name (drummachine kits) "
                   "or folder, or a folder of WAV files named by voice")
    p.add_argument("--list-styles", action="store_true", help="list the styles the model knows")
    _model_options(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", help="evaluate the model against the dataset", description=cmd_evaluate.__doc__)
    p.add_argument("--data", required=True, metavar="DIR|FILE.npz", help="Groove MIDI Dataset folder or built .npz")
    p.add_argument("--split", default="validation")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--out", metavar="FILE.json", help="also write the JSON here")
    p.add_argument("--control-styles", help="comma-separated styles for the control test")
    p.add_argument("--seeds", type=int, default=4, help="generation passes over the split, pooled (seed, seed+1, ...)")
    p.add_argument("--as-played", action="store_true", help="only each performance's style and tempo are given: "
                   "the instrument plays the rest (the engine, conductor and performer play uses)")
    _model_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="generation latency and memory", description=cmd_bench.__doc__)
    p.add_argument("--json", action="store_true")
    p.add_argument("--steps", type=int, default=2000, help="steps timed per engine (default 2000)")
    p.add_argument("--model-dir", default=None, help="folder with groove.int8.onnx, groove.fp32.onnx, groove.pt")
    p.set_defaults(func=cmd_bench)
