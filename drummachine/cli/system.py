"""Subcommands about the machine itself: `ports` (its audio devices, inputs and MIDI ports) and
`doctor` (audio, MIDI, the model and the CPU checked, and what to fix), both asking the audio and
MIDI systems without hanging on a JACK server that does not answer."""

from __future__ import annotations

import ctypes
import os
import sys
import time

from drummachine.core.asked import Asked
from drummachine.core.errors import DrumMachineError
from drummachine.midi import jack_midi
from drummachine.midi.jack_server import jack_server_identity

#: how long `ports` and `doctor` wait for the audio or MIDI system's answer (libjack waits for a
#: JACK server that stalls with no time limit); once one did not answer, 1 s for the rest
SYSTEM_ANSWER_S = 5.0


class SystemQuestions:
    """`ports`' and `doctor`'s questions to the audio and MIDI systems, each in a thread waited
    for SYSTEM_ANSWER_S. The JACK server is asked first, through drummachine's own client (ctypes
    lets the wait be given up; python-rtmidi holds the interpreter's lock while libjack waits):
    if it does not answer (``stalled``), nothing that goes through JACK is asked."""

    def __init__(self):
        self.unanswered: list[Asked] = []
        self.stalled: str | None = None
        lib = jack_midi.library()
        if jack_server_identity() is not None and lib is not None:
            try:
                self(self._open_and_close, lib)
            except TimeoutError:
                self.stalled = f"the JACK server does not answer (waited {SYSTEM_ANSWER_S:.0f} s)"

    @staticmethod
    def _open_and_close(lib) -> None:
        status = ctypes.c_int(0)
        handle = lib.dm_open(f"{jack_midi.CLIENT}-asking".encode(), ctypes.byref(status))
        if handle:
            lib.dm_close(handle)

    def __call__(self, question, *args, through_jack: bool = True):
        """``question(*args)``'s answer; a TimeoutError saying why there is none."""
        if through_jack and self.stalled:
            raise TimeoutError(self.stalled)
        wait = 1.0 if self.unanswered else SYSTEM_ANSWER_S
        asked = Asked(question, *args, name="asking-the-system")
        if not asked.wait(wait):
            self.unanswered.append(asked)
            raise TimeoutError(f"no answer within {wait:.0f} s (a JACK server that stalls?)")
        return asked.result()

    def leave(self, code: int) -> int:
        """The command's exit code; with a question still unanswered, the process leaves at once
        (libjack's exit handlers would wait for that server too)."""
        if self.unanswered:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code


def cmd_ports(args) -> int:
    """List audio output devices and MIDI ports."""
    from drummachine.midi.ports import APIS, list_ports

    from drummachine.audio.devices import outputs

    ask = SystemQuestions()
    if ask.stalled:
        print(f"{ask.stalled}: restart it; its audio and MIDI ports are not listed")
    try:
        found = ask(outputs)
        print("audio outputs:")
        for d in found:
            print(f"  [{d['index']}] {d['name']} ({d['api']}, {d['channels']} ch, {d['rate']:.0f} Hz)")
        if not found:
            print("  none")
    except Exception as exc:
        print(f"audio outputs: unavailable ({exc})")
    from drummachine.listen.inputs import inputs

    try:
        found_inputs = ask(inputs)
        print("audio inputs (play --listen):")
        for i in found_inputs:
            print(f"  {i.name}" if i.backend == "jack" else f"  sd:{i.index} {i.name}")
        if not found_inputs:
            print("  none")
    except TimeoutError as exc:
        print(f"audio inputs (play --listen): unavailable ({exc})")
    for api in APIS:
        for direction in ("out", "in"):
            try:
                names = ask(list_ports, api, direction, through_jack=api == "jack")
                print(f"MIDI {direction} ({api}): " + (", ".join(names) if names else "none"))
            except DrumMachineError:
                print(f"MIDI {direction} ({api}): unavailable")
            except TimeoutError as exc:
                print(f"MIDI {direction} ({api}): unavailable ({exc})")
    return ask.leave(0)


def cmd_doctor(args) -> int:
    """Check audio, MIDI, the model and the CPU, and say what to fix."""
    problems = 0

    def report(ok: bool, what: str, fix: str = "") -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FIX '} {what}" + ("" if ok else f": {fix}"))

    try:
        from drummachine.model.generator import Generator

        t0 = time.perf_counter()
        gen = Generator(args.model, seed=0)
        load = time.perf_counter() - t0
        cont = gen.cond.cont(120.0, gen.cond.defaults("any"))
        times = []
        for i in range(64):
            t = time.perf_counter()
            gen.step(0, i % 16, 0, cont)
            times.append(time.perf_counter() - t)
        worst = sorted(times)[-2] * 1000
        report(worst < 20, f"model {gen.info.path.name}: loads in {load:.2f} s, a step takes up to {worst:.2f} ms",
               "the CPU is too slow or too busy for the model")
    except DrumMachineError as exc:
        report(False, "model", str(exc))
    ask = SystemQuestions()
    try:
        from drummachine.audio.devices import outputs

        outs = [d for d in ask(outputs) if d["channels"] >= 2]
        report(bool(outs), f"audio: {len(outs)} stereo output(s)",
               "no audio output: plug in a sound card, or start JACK/PipeWire; MIDI out still works")
    except TimeoutError as exc:
        report(False, "audio", f"{exc}: restart the JACK server")
    except Exception as exc:
        report(False, "audio", f"PortAudio is missing or broken ({exc}); apt-get install libportaudio2")
    else:
        if any("JACK" in d["api"] for d in outs):
            from drummachine.core.jack_latency import jack_lsp_latencies

            # the sound card's outputs (what PortAudio connects the kit to): JACK's periods to them
            frames = [v["playback"] for k, v in jack_lsp_latencies().items() if k.startswith("system:playback_")]
            rate = next(int(d["rate"]) for d in outs if "JACK" in d["api"])
            if frames and rate:
                ms = max(frames) / rate * 1000
                print(f"     JACK's output latency {ms:.1f} ms: the kit's hits go to the mixer that much early"
                      + ("; a shorter period (jackd -p) brings the foot's cues in sooner" if ms > 25 else ""))
    from drummachine.listen.own_sound import open_canceller

    canceller, why = open_canceller(16000)  # not a fault: a rig without a mic never needs it
    if canceller is None:
        print(f"     --listen: {why}: with the machine's drums in the feed it would follow them")
    from drummachine.midi.ports import APIS, list_ports

    reachable = []
    for api in APIS:
        try:
            ask(list_ports, api, through_jack=api == "jack")
            reachable.append(api)
        except TimeoutError as exc:
            report(False, f"MIDI: {api}", str(exc))
        except DrumMachineError:
            pass
    report(bool(reachable), f"MIDI: {', '.join(reachable) or 'no'} API reachable",
           "no MIDI system: load snd-seq (ALSA) or start a JACK server")
    cpus = os.cpu_count() or 1
    report(cpus >= 2, f"CPU: {cpus} cores", "one core: audio and the model will compete")
    try:
        param = os.sched_param(10)
        os.sched_setscheduler(0, os.SCHED_FIFO, param)
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        report(True, "real-time scheduling allowed")
    except (PermissionError, OSError, AttributeError):
        report(False, "real-time scheduling not allowed",
               "add the user to the 'audio' group with an rtprio limit (/etc/security/limits.d)")
    print("all good" if not problems else f"{problems} thing(s) to fix")
    return ask.leave(0 if not problems else 1)


def register(sub) -> None:
    p = sub.add_parser("ports", help="list audio devices and MIDI ports", description=cmd_ports.__doc__)
    p.set_defaults(func=cmd_ports)
    p = sub.add_parser("doctor", help="check audio, MIDI, model and CPU", description=cmd_doctor.__doc__)
    p.add_argument("--model", metavar="FILE.onnx")
    p.set_defaults(func=cmd_doctor)
