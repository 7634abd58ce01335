"""The one compiled part: drummachine's JACK MIDI client (drummachine/midi/jack_midi.c), a plain C
library that ctypes loads (no Python C API, no JACK headers: it opens libjack.so.0 at run time).
Optional: where it cannot be built, the install goes on and MIDI goes through python-rtmidi."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("drummachine.midi._jack_midi", ["drummachine/midi/jack_midi.c"],
                             extra_compile_args=["-O2", "-std=gnu11", "-Wall"], libraries=["dl"],
                             optional=True)])
