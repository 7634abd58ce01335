"""The kit's audio output of a live session: the audio process started the way the output can
play it (its own sample rate, with or without the cue bus), and kept playing by a watchdog (a
mixer that died or whose sound server went is started again; an output that comes late is
taken when it comes, at its rate)."""

from __future__ import annotations

import logging
import threading
import time

from drummachine.core.errors import DrumMachineError

log = logging.getLogger("drummachine")

#: seconds without a callback from a live mixer after which its stream is taken for dead (a
#: period is 2.7 ms; a loaded host stalls JACK for a few hundred ms at worst)
STREAM_STALLED_S = 2.0
#: seconds between tries to start a mixer that cannot start (no device, no sound server): the
#: first, then the longest after a minute of tries (each try starts a Python process)
AUDIO_RETRY_S = (2.0, 10.0)


def jack_audio_ports(opts):
    """How the kit reaches JACK: ``JackAudioPorts`` (the engine's own JACK client plays it from the
    mixer's ring: ``audio.jack_ring``) where a JACK server runs at the start, no device or another
    host API is asked for, the client is built here and ``DRUMMACHINE_JACK_AUDIO`` is not
    ``portaudio``; else None (PortAudio in the mixer process, which also waits for an output that
    is not there yet)."""
    import os

    if os.environ.get("DRUMMACHINE_JACK_AUDIO", "").lower() == "portaudio":
        return None
    if opts.audio_device is not None or not opts.blocksize or (opts.audio_api and "jack" not in opts.audio_api.lower()):
        return None
    from drummachine.audio import jack_ring
    from drummachine.midi import jack_midi
    from drummachine.midi.jack_server import jack_server_identity

    if jack_server_identity() is None or not jack_ring.available() or jack_midi.library() is None:
        return None
    from drummachine.midi.jack_audio import JackAudioPorts

    return JackAudioPorts


class AudioOutput:
    """Starts the session's audio process from its options; ``warnings`` is the session's list
    (what the musician is told at the start)."""

    def __init__(self, opts, warnings: list[str]):
        self.opts = opts
        self.warnings = warnings

    def start(self, cue: bool | None = None, rate: int | None = None):
        """The audio process, starting (None without audio): see audio_process. ``cue``: with the
        cue bus (default: when --cue-out asks for it); ``rate``: default --rate, else DEFAULT_SAMPLE_RATE."""
        from drummachine.audio.kit import DEFAULT_SAMPLE_RATE

        o = self.opts
        rate = rate or o.rate or DEFAULT_SAMPLE_RATE
        if o.cue_out:
            from drummachine.audio.cue_out import cue_ports

            cue_ports(o.cue_out)  # a malformed --cue-out is one line before anything starts
        if not o.audio:
            return None
        from drummachine.audio.process import AudioProcessSink

        cue = bool(o.cue_out) if cue is None else cue
        jack_ports = jack_audio_ports(o)
        try:
            return AudioProcessSink(o.kit, rate, o.audio_device, o.blocksize, hostapi=o.audio_api, outs=o.outs,
                                    cue=cue, jack_ports=jack_ports)
        except DrumMachineError as exc:  # a broken kit (missing sample, bad XML, bad FLAC): on stage, play on
            if not getattr(exc, "kit", False):
                raise
            self.warnings.append(f"{exc}; the built-in kit plays instead")  # shown and logged by the caller
            return AudioProcessSink(None, rate, o.audio_device, o.blocksize, hostapi=o.audio_api, outs=o.outs,
                                    cue=cue, jack_ports=jack_ports)

    def ready(self, starting):
        """``(sink, None)`` once the audio process plays, started again where its output said how
        (``_start_again``); ``(the sink last started, the error)`` where that did not help."""
        pending = starting
        while True:
            try:
                return pending.wait_ready(close_on_error=False), None
            except DrumMachineError as exc:
                try:
                    pending = self._start_again(pending, exc)
                except DrumMachineError as final:
                    return pending, final

    def _start_again(self, failed, exc: DrumMachineError):
        """The audio process once more, where what its output said tells how: at the output's own
        sample rate when --rate was not given (a JACK server plays at its own only: an interface
        set to 44.1 kHz), without the cue bus when there are too few channels for it too. Raises
        where neither helps."""
        from drummachine.audio.kit import SAMPLE_RATES

        o = self.opts
        device_rate = getattr(exc, "device_rate", None)
        if device_rate and device_rate != failed.rate:
            failed.close()
            if o.rate is None and device_rate in SAMPLE_RATES:
                log.info("audio: %s: playing at %d Hz", exc.what, device_rate)
                return self.start(cue=failed.cue, rate=device_rate)
            how = (f"--rate {device_rate} plays there" if device_rate in SAMPLE_RATES else
                   f"drummachine plays at {' or '.join(map(str, SAMPLE_RATES))} Hz: set the device (or JACK) to one")
            # not "audio": that one waits for an output to come, and this one is there
            raise DrumMachineError("sample rate", f"{exc.what}; {how}") from None
        if failed.cue and exc.where == "--outs":
            # too few channels for the cue bus too: the main outputs alone, the in-ears without
            failed.close()
            self.warnings.append(f"--cue-out: {exc.what}; playing without the cue bus")
            return self.start(cue=False, rate=failed.rate)
        raise exc

    def connect_cue(self, sink, say: bool = False) -> None:
        """--cue-out's JACK ports: the cue bus connected there (again after a mixer restart); a port
        that is not there is a warning, and the cue bus stays where PortAudio put it. ``say``: log
        it too (after the start, when the warnings were logged already)."""
        if sink is None or not sink.cue:
            return
        from drummachine.audio.cue_out import connect_cue

        try:
            pairs = connect_cue(self.opts.cue_out, len(sink.channels), sink.output_ports)
            if pairs:
                log.info("cue bus: %s", ", ".join(f"{a} -> {b}" for a, b in pairs))
        except DrumMachineError as exc:
            self.warnings.append(f"{exc}; the cue bus plays on the device's channels after the main ones")
            if say:
                log.warning("%s", self.warnings[-1])

    @staticmethod
    def say_latency(sink) -> None:
        """Where the kit plays (the first time), the output latency its hits are handed over early
        by, and whose figure that is."""
        if sink.output_ports and not getattr(sink, "said_ports", False):
            sink.said_ports = True
            log.info("audio: the kit plays through drummachine's own JACK client (%s); the mixer process "
                     "writes its ring", ", ".join(sink.output_ports))
        log.info("audio: output latency %.1f ms (%s): the kit's hits go to the mixer that much before "
                 "their time", sink.output_latency_s * 1000, sink.output_latency_from or "not known")

    def _take_the_outputs_rate(self, sink, exc: DrumMachineError) -> bool:
        """An output that plays at a rate of its own (JACK started after play, or restarted at
        another rate mid-set: another interface): with --rate not given, the sink takes it and the
        next mixer plays there. True when it did."""
        from drummachine.audio.kit import SAMPLE_RATES

        rate = getattr(exc, "device_rate", None)
        if not rate or self.opts.rate or rate == sink.rate or rate not in SAMPLE_RATES:
            return False
        try:
            sink.play_at(rate)
        except Exception as failed:  # the kit at that rate: said, and tried again with the mixer
            log.warning("audio: %s; the kit at %d Hz: %s", exc.what, rate, failed)
            return False
        log.warning("audio: %s: playing at %d Hz", exc.what, rate)
        return True

    @staticmethod
    def _wait_to_try_again(sink, stop: threading.Event, seconds: float) -> None:
        """Before the next try at a mixer: ``seconds``, or less where the engine's own JACK client
        plays the kit and its ports come back meanwhile (the server back: looked at once a second,
        as the watch does), so the kit is back as soon as the server is."""
        had_ports = sink.jack_ports_there()
        until, looked = time.monotonic() + seconds, time.monotonic()
        while not stop.wait(0.1) and time.monotonic() < until:
            if time.monotonic() - looked >= 1.0:
                looked = time.monotonic()
                try:
                    sink.keep_up()
                except Exception:  # noqa: BLE001 - the watch's own look, next, counts it; this wait must not end the watch
                    return
            if not had_ports and sink.jack_ports_there():
                return

    def watch(self, sink, stop: threading.Event, engine, margin) -> None:
        """The audio process died (killed, crashed), or lives on with a stream the sound server no
        longer runs (JACK stopped or restarted: PortAudio says nothing, its callbacks just stop):
        start another mixer; the groove goes on meanwhile on MIDI and the wall clock, and the sound
        comes back within about a second of the server. A new mixer sets the engine's hand-out
        margin (``margin()``: for its ring at the server's period and the MIDI out's lead)."""
        counted, since = sink.callbacks, time.monotonic()
        failed_since, said = None, ""
        kept_up = 0.0
        while not stop.wait(0.25):
            try:
                if time.monotonic() - kept_up >= 1.0:  # the engine's JACK ports, where they play the kit
                    kept_up = time.monotonic()
                    if sink.keep_up():  # JACK's latency for them changed: the hits go that much early
                        self.say_latency(sink)
                        engine.margin = margin()
                now, callbacks = time.monotonic(), sink.callbacks
                if callbacks != counted:
                    counted, since = callbacks, now
                elif sink.alive and now - since > STREAM_STALLED_S:
                    log.warning("audio: no block asked for in %.1f s (the sound server stopped or restarted?); "
                                "starting the mixer again", now - since)
                    sink.proc.kill()
                    sink.proc.wait()
                played_before = sink.opened
                if sink.restart_if_gone():
                    if played_before:
                        log.warning("audio process stopped; restarted (%d so far)", sink.restarts)
                    else:
                        log.warning("audio: the output is there at last; the kit plays from now")
                    self.connect_cue(sink, say=True)  # a new mixer: PortAudio connected its ports anew
                    self.say_latency(sink)
                    engine.margin = margin()
                    counted, since = sink.callbacks, time.monotonic()
                    failed_since, said = None, ""
            except DrumMachineError as exc:
                if self._take_the_outputs_rate(sink, exc):
                    continue  # tried again at once, at that rate
                # said once per reason, not on every try; tried less often after the first minute
                failed_since = failed_since or time.monotonic()
                if str(exc) != said:
                    said = str(exc)
                    log.warning("audio process %s: %s; trying again", "stopped and cannot restart"
                                if sink.opened else "cannot start", exc)
                first, longest = AUDIO_RETRY_S
                self._wait_to_try_again(sink, stop, first if time.monotonic() - failed_since < 60.0 else longest)
                counted, since = sink.callbacks, time.monotonic()
            except Exception:  # the watch never dies: counted, and the next look goes on
                engine.caught("audio-watchdog", "watch")
                stop.wait(1.0)
