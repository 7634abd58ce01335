"""Reading jack_lsp's latencies (core.jack_latency): the audio output's and the listener's figures."""

from __future__ import annotations

import subprocess

from drummachine.core.jack_latency import jack_lsp_latencies, read_jack_lsp_latencies

PRINTED = ("system:playback_1\n\tport playback latency = [ 2048 2048 ] frames\n"
           "\tport capture latency = [ 0 0 ] frames\n"
           "PortAudio-01:out_0\n\tport playback latency = [ 1024 3072 ] frames\n"
           "\tport capture latency = [ 0 0 ] frames\n"
           "system:capture_1\n\tport playback latency = [ 0 0 ] frames\n"
           "\tport capture latency = [ 1024 1024 ] frames\n"
           "player:out\n")


def test_each_ports_ranges_are_read_at_their_most():
    assert read_jack_lsp_latencies(PRINTED) == {"system:playback_1": {"capture": 0, "playback": 2048},
                                                "PortAudio-01:out_0": {"capture": 0, "playback": 3072},
                                                "system:capture_1": {"capture": 1024, "playback": 0},
                                                "player:out": {"capture": 0, "playback": 0}}
    assert read_jack_lsp_latencies("") == {}


def test_no_jack_lsp_is_no_figure_and_no_exception(monkeypatch):
    def missing(*a, **k):
        raise FileNotFoundError("jack_lsp")

    monkeypatch.setattr(subprocess, "run", missing)
    assert jack_lsp_latencies() == {}
    assert jack_lsp_latencies("system:capture_1") == {}
