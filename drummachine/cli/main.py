"""The ``drummachine`` command: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from drummachine import __version__
from drummachine.core.errors import DrumMachineError
from drummachine.core.places import shipped

DEMO_MIDI = shipped("examples", "demo.mid")
MAX_RENDER_SECONDS = 30 * 60  #: the Groove MIDI Dataset's longest performance is 23 minutes


def _kit(args):
    from drummachine.audio.kit import open_kit

    return open_kit(args.kit, args.rate)


def cmd_kits(args) -> int:
    """List the Hydrogen kits found and which instrument plays each voice (and what stands in)."""
    from drummachine.audio import hydrogen

    kits = [hydrogen.find_kit(args.name)] if args.name else hydrogen.installed_kits()
    if not kits:
        print("no Hydrogen kits found in " + ", ".join(map(str, hydrogen.kit_folders()))
              + "; on Debian: apt-get install hydrogen-drumkits")
        return 0
    for folder in kits:
        try:
            kit = hydrogen.read_drumkit(folder)
            sources = hydrogen.map_voices(kit)
            missing = [f"{s.voice} ({s.instrument.name if s.instrument else hydrogen.BUILT_IN} stands in)"
                       for s in sources if s.how == hydrogen.BUILT_IN or s.how.startswith("stand-in")]
            broken = [str(layer.path.name) for s in sources if s.instrument for layer in s.instrument.layers
                      if not layer.path.is_file()]
        except DrumMachineError as exc:
            print(f"{folder.name}: broken: {exc}")
            continue
        head = f"{folder.name}" + (f" ({kit.name})" if kit.name != folder.name else "")
        head += f" [{kit.license[:40]}]" if kit.license else ""
        if broken:
            head += f" broken: missing sample {broken[0]}" + (f" and {len(broken) - 1} more" if len(broken) > 1 else "")
        print(head + (f"; lacks {', '.join(missing)}" if missing else "; every voice its own"))
        if args.name or args.verbose:
            for s in sources:
                print(f"  {s.voice:10} {s.describe()}")
    return 0


def cmd_render(args) -> int:
    """Render a drum MIDI file to WAV with the built-in or a user kit."""
    import numpy as np

    from drummachine.audio import render as mixer
    from drummachine.core.voices import input_map
    from drummachine.midi.files import atomic_write, read_midi
    from drummachine.audio.wavfile import write_wav

    t0 = time.perf_counter()
    src = Path(args.input) if args.input else DEMO_MIDI
    perf = read_midi(src)
    # the mix is held whole in memory (about 28 bytes a frame at its peak: 2 GB for 30 minutes)
    last = float(perf.seconds().max())
    if last > MAX_RENDER_SECONDS:
        raise DrumMachineError(str(src), f"its last note is {last / 60:.0f} minutes in; render takes up to "
                               f"{MAX_RENDER_SECONDS // 60} minutes")
    kit = _kit(args)
    lut = np.full(128, -1, dtype=np.int64)
    for note, voice in input_map(args.map).items():
        lut[note] = voice
    voices = lut[perf.notes.pitches.astype(np.int64)]
    keep = voices >= 0
    if not keep.any():
        raise DrumMachineError(str(src), f"no drum notes: no note maps to a kit voice with the {args.map} map")
    onsets = np.rint(perf.seconds()[keep] * kit.sample_rate).astype(np.int64)
    audio = mixer.normalize(mixer.render(kit, onsets, voices[keep], perf.notes.velocities[keep] / 127.0))
    atomic_write(args.output, lambda tmp: write_wav(tmp, audio, kit.sample_rate))
    seconds = len(audio) / kit.sample_rate
    took = time.perf_counter() - t0
    skipped = int((~keep).sum())
    print(f"{args.output}: {seconds:.1f} s, {int(keep.sum())} hits, {kit.sample_rate} Hz, kit {kit.name}"
          + (f", {skipped} notes with no voice ignored" if skipped else "")
          + f" ({took:.2f} s, {seconds / max(took, 1e-9):.0f}x real time)")
    return 0


def cmd_info(args) -> int:
    """Print a MIDI file's groove as a step grid."""
    from drummachine.core.grid import render_grid
    from drummachine.core.groove import groove_from_notes
    from drummachine.core.voices import input_map
    from drummachine.midi.files import read_midi

    perf = read_midi(args.input)
    groove, report = groove_from_notes(perf.notes, input_map(args.map), perf.bpm, perf.meter)
    if report.unmapped == report.notes:
        raise DrumMachineError(args.input, f"no drum notes: no note maps to a kit voice with the {args.map} map")
    print(f"{args.input}")
    print(render_grid(groove, bars=args.bars))
    tempo = "constant tempo" if perf.constant_tempo else f"{len(perf.tempos)} tempo changes (grid at the first)"
    print(f"{report.notes} notes, {report.merged} merged into louder hits on the same step, "
          f"{report.unmapped} with no voice; {tempo}")
    return 0


def cmd_dataset_build(args) -> int:
    """Turn a Groove MIDI Dataset folder into bar-level training examples."""
    from drummachine.corpus import build as corpus
    from drummachine.midi.files import atomic_write, check_folder

    t0 = time.perf_counter()
    out = Path(args.out)
    if out.suffix != ".npz":
        raise DrumMachineError(str(out), "the dataset file must end in .npz")
    check_folder(out)  # before the build, not after it
    dataset, report = corpus.build(args.data, progress=None if args.quiet else corpus.print_progress)
    def save(tmp):
        with open(tmp, "wb") as f:  # closed (flushed) before atomic_write renames it into place
            dataset.save(f)
    atomic_write(out, save)
    print(report.summary())
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drummachine",
        description="A generative drum machine for the stage: a small transformer trained on real "
                    "drummers plays grooves live, out through MIDI and its own kit.")
    parser.add_argument("--version", action="version", version=f"drummachine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def kit_options(p):
        p.add_argument("--kit", metavar="NAME|DIR", help="a Hydrogen kit by name (drummachine kits) or folder, or a "
                       "folder of WAV files named by voice (kick.wav, snare.wav, closed_hat.wav, open_hat.wav, "
                       "low_tom.wav, mid_tom.wav, high_tom.wav, crash.wav, ride.wav); default: the built-in "
                       "synthesized kit")
        p.add_argument("--rate", type=int, default=48000, choices=(44100, 48000), help="sample rate (default 48000)")

    p = sub.add_parser("render", help="render a drum MIDI file to WAV", description=cmd_render.__doc__)
    p.add_argument("input", nargs="?", metavar="IN.mid", help="drum MIDI file (default: the built-in demo groove)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.wav", help="WAV file to write (16-bit stereo)")
    p.add_argument("--map", default="gm", choices=("gm", "td11"), help="input note map (default gm)")
    kit_options(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("kits", help="list the Hydrogen kits found and how they map onto the voices",
                       description=cmd_kits.__doc__)
    p.add_argument("name", nargs="?", metavar="NAME", help="one kit, every voice shown")
    p.add_argument("-v", "--verbose", action="store_true", help="every kit's voices")
    p.set_defaults(func=cmd_kits)

    p = sub.add_parser("info", help="show a MIDI file's groove as a step grid", description=cmd_info.__doc__)
    p.add_argument("input", metavar="IN.mid")
    p.add_argument("--bars", type=int, default=4, help="bars to draw (default 4)")
    p.add_argument("--map", default="gm", choices=("gm", "td11"), help="input note map (default gm)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("dataset", help="build training data from the Groove MIDI Dataset")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    b = dsub.add_parser("build", help="MIDI folder -> bar-level examples (.npz)", description=cmd_dataset_build.__doc__)
    b.add_argument("--data", required=True, metavar="DIR", help="Groove MIDI Dataset folder (with info.csv)")
    b.add_argument("--out", required=True, metavar="FILE.npz")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_dataset_build)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _register_model_commands(sub):
    from drummachine.cli import live as cli_live
    from drummachine.cli import model as cli_model
    from drummachine.cli import system as cli_system

    cli_model.register(sub)
    cli_live.register(sub)
    cli_system.register(sub)


_EXTRA_COMMANDS: list = [_register_model_commands]
PASSTHROUGH = ("train", "export")  # their options belong to training.train / training.export


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in PASSTHROUGH:
        args = parser.parse_args(argv[:1])
        args.rest = argv[1:] or ["--help"]
    else:
        args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DrumMachineError as exc:
        print(f"drummachine: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the output went to `head` or the like, which has all it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
