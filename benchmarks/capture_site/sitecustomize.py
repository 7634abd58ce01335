"""A JACK follow run traced end to end (benchmarks/follow_capture_check.py): with
DRUMMACHINE_BENCH_CAPTURE_DIR set and this folder on PYTHONPATH, every process of ``play`` appends
to files in that folder (named by what and the process id) every block the listener's capture
takes (its samples; the monotonic time, samples so far and input frame at its end), every reading
the listener publishes, every beat the engine's follower decides and every MIDI clock the JACK MIDI
out is handed. Benchmark-only: no switch in the runtime."""

import os

_folder = os.environ.get("DRUMMACHINE_BENCH_CAPTURE_DIR")
if _folder:
    import time

    import numpy as np

    import drummachine.listen.process as _process
    import drummachine.listen.shared as _shared

    _files = {}

    def _file(name):
        if name not in _files:
            _files[name] = open(os.path.join(_folder, f"{name}.{os.getpid()}.bin"), "ab", buffering=1 << 16)
        return _files[name]

    _take = _process.Capture.take

    def take(self, block, frame_end=None):
        _take(self, block, frame_end)
        _file("audio").write(np.asarray(block, np.float32).tobytes())
        row = self.times[(self.callbacks - 1) % self.times.shape[0]]
        _file("blocks").write(np.asarray(row, np.float64).tobytes())

    _process.Capture.take = take
    _write = _shared.ReadingBlock.write

    def write(self, values):
        _write(self, values)
        _file("readings").write(np.array([time.monotonic(), values.get(_shared.HEARD, 0.0),
                                          values.get(_shared.BPM, 0.0), values.get(_shared.NEXT_BEAT, 0.0),
                                          values.get(_shared.CONFIDENCE, 0.0), values.get(_shared.STATUS, 0.0),
                                          values.get(_shared.XRUNS, 0.0)], np.float64).tobytes())
        for f in _files.values():  # the listener is ended by a signal: nothing may wait for its exit
            f.flush()

    _shared.ReadingBlock.write = write

    import drummachine.core.command_handlers as _handlers

    _on_band = _handlers.CommandHandlers._on_band

    def _on_band_traced(self, reading, now):
        before = self.followed_beat
        _on_band(self, reading, now)
        # a beat decided: (monotonic, engine clock, the command's now, beat, its time, the band's
        # next beat, the reading's time), the engine's times on its clock
        if self.followed_beat != before:
            beat = self.followed_beat
            _file("decided").write(np.array([time.monotonic(), self.clock.now(), now, float(beat),
                                             self.transport.time_of(beat), reading.next_beat, reading.time],
                                            np.float64).tobytes())
            _file("decided").flush()

    _handlers.CommandHandlers._on_band = _on_band_traced

    import drummachine.midi.jack_port as _jack_port

    _send = _jack_port.JackPort.send

    def send(self, rows, now):
        # each MIDI clock's due time on JACK's clock, and JACK's clock against the monotonic one
        for due, message in rows:
            if due is not None and message[:1] == b"\xf8":
                jack_us = self.lib.dm_time()
                _file("sent").write(np.array([time.monotonic(), jack_us, now, due, jack_us + (due - now) * 1e6],
                                             np.float64).tobytes())
        _file("sent").flush()
        return _send(self, rows, now)

    _jack_port.JackPort.send = send

    # the listener runs as ``python -m drummachine.listen.process``: its __main__ would be a fresh
    # copy of the module, with the class unpatched; run the patched module's own entry instead
    import runpy

    _as_main = runpy._run_module_as_main

    def _run_module_as_main(mod_name, alter_argv=True):
        if mod_name == "drummachine.listen.process":
            raise SystemExit(_process.serve())
        return _as_main(mod_name, alter_argv)

    runpy._run_module_as_main = _run_module_as_main
