"""The one compiled part: drummachine's JACK MIDI client (drummachine/midi/jack_midi.c), a plain C
library that ctypes loads (no Python C API, no JACK headers: it opens libjack.so.0 at run time).
Optional: where it cannot be built, the install goes on and MIDI goes through python-rtmidi.

``DRUMMACHINE_PURE_WHEEL=1 pip wheel ...`` leaves it out: a py3-none-any wheel that installs on
any machine (a Pi, from a wheel built on a PC: docs/raspberry-pi.md), with python-rtmidi for MIDI."""

import os

from setuptools import Extension, setup

JACK_MIDI = Extension("drummachine.midi._jack_midi", ["drummachine/midi/jack_midi.c"],
                      extra_compile_args=["-O2", "-std=gnu11", "-Wall"], libraries=["dl"], optional=True)

setup(ext_modules=[] if os.environ.get("DRUMMACHINE_PURE_WHEEL") == "1" else [JACK_MIDI])
