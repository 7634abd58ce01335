"""The band's JACK port captured for the listening process (``listen.process``).

By PortAudio's blocking input (``PortAudioCapture``, the default): PortAudio's JACK client is C
and fills its own ring in JACK's real-time thread; a reader thread here takes the samples out. No
Python runs in JACK's real-time thread, so the listening process can never make a JACK cycle late
(with a Python callback there, a wait for the interpreter lock did, and the mixer dropped buffers:
docs/follow.md). By JACK-Client's Python callback (``open_jack``): kept for the side-by-side
measurement and for a JACK with no capture device, which PortAudio needs to open a stream. Either
way the machine's own kit's ports come in beside the band's (``connect_kit``), and each block goes
into a ``listen.capture.Capture`` with the JACK frame it came at.
"""

from __future__ import annotations

import os
import sys
import threading

from drummachine.listen import shared
from drummachine.listen.capture import Capture

READ_FRAMES = 256  #: PortAudio's blocking reads: samples per read (5.3 ms at 48 kHz)
#: seconds asked of PortAudio's own ring: the reader may be this late without a loss (PortAudio's
#: JACK blocking ring is sized from it: 0.1 s gave 8,192 frames, 0.5 s ~32,768). At 0.1 s the
#: machine ended 4% fast in 2 of 6 runs of test_the_machine_follows_a_faster_band (samples lost
#: while the reader waited for the interpreter lock make the band sound faster: the tracker
#: counts time in samples; PortAudio does not flag that overflow); 2 s passed 5 of 5, then put
#: the readings ~60 ms late in one check. Neither is settled on this host's noise (docs/follow.md)
PA_LATENCY = 0.5
CLIENT_PREFIX = "drummachine-listen"


def open_jack(setup: dict):
    """A JACK client with one input port connected to the port asked for."""
    import jack

    client = jack.Client(setup.get("client", "drummachine-listen"), no_start_server=True)
    rate = client.samplerate
    kit_ports = setup.get("kit_ports") or []
    capture = Capture(rate, kit=bool(kit_ports))
    port = client.inports.register("in")
    kit_port = client.inports.register("kit") if kit_ports else None

    @client.set_process_callback
    def process(frames):
        capture.take(port.get_array(), client.last_frame_time + frames,
                     kit_port.get_array() if kit_port is not None else None)

    @client.set_xrun_callback
    def xrun(delay):
        capture.xruns += 1

    client.activate()
    source = setup["port"]
    client.connect(source, port)
    if kit_port is not None:
        connect_kit(client, kit_port.name, kit_ports)
    return client, capture, port, kit_port


def connect_kit(client, into: str, kit_ports: list[str]) -> bool:
    """The kit's ports (those there) into the port ``into``; True when all are connected. Its
    ports come when the engine's mixer is ready, and again after it started over: tried at each check."""
    done = True
    try:
        connected = {p.name for p in client.get_all_connections(into)}
        for name in kit_ports:
            if name in connected:
                continue
            if client.get_ports(name):
                client.connect(name, into)
            else:
                done = False
    except Exception:
        return False
    return done


_CLIENT_NAME = None  #: PortAudio's JACK client name (PortAudio keeps a pointer to it)


class PortAudioCapture:
    """A JACK port captured through PortAudio's blocking input: PortAudio's JACK client (its own
    name) is connected to the port asked for, a reader thread copies what it read into a
    ``Capture`` with the JACK frame time at the read's return (less what was still waiting)."""

    def __init__(self, setup: dict, stop: threading.Event):
        import ctypes

        import jack
        import sounddevice as sd

        name = f"{setup.get('client', CLIENT_PREFIX)}-{os.getpid()}"
        # PortAudio names its JACK client when it starts: set ours, then start it again. It keeps
        # the pointer, not a copy: the bytes must live as long as the process
        global _CLIENT_NAME
        _CLIENT_NAME = ctypes.create_string_buffer(name.encode())
        ctypes.CDLL(sd._libname).PaJack_SetClientName(_CLIENT_NAME)
        sd._terminate()
        sd._initialize()
        apis = [i for i, h in enumerate(sd.query_hostapis()) if "JACK" in h["name"]]
        if not apis:
            raise RuntimeError("PortAudio has no JACK host API here")
        device = sd.query_hostapis(apis[0])["default_input_device"]
        if device < 0:
            raise RuntimeError("PortAudio's JACK has no capture device to open")
        # one channel of a two-channel device corrupts PortAudio 19.6's blocking ring (it aborts in
        # malloc): open every channel there is (up to 2), keep the first
        channels = min(2, int(sd.query_devices(device)["max_input_channels"]))
        if channels < 1:
            raise RuntimeError("PortAudio's JACK device has no input channels")
        self.control = jack.Client(f"{name}-ctl", no_start_server=True)  # never activated: no real-time thread
        self.rate = self.control.samplerate
        self.blocksize = self.control.blocksize
        # the second channel (opened anyway) carries the machine's own kit, for the canceller
        self.kit_ports = (setup.get("kit_ports") or []) if channels == 2 else []
        self.capture = Capture(self.rate, exact=False, kit=bool(self.kit_ports))
        self.stream = sd.InputStream(device=device, channels=channels, samplerate=self.rate, dtype="float32",
                                     blocksize=self.blocksize, latency=PA_LATENCY)
        self.stream.start()
        ours = [p.name for p in self.control.get_ports(f"{name}:", is_audio=True, is_input=True)]
        if not ours:
            self.close()
            raise RuntimeError("PortAudio's JACK input ports were not found")
        self.port = ours[0]
        self.kit_port = ours[1] if self.kit_ports and len(ours) > 1 else None
        for p in ours:  # PortAudio joins the system's capture ports: the band's port instead
            for other in self.control.get_all_connections(p):
                self.control.disconnect(other, p)
        self.control.connect(setup["port"], self.port)
        if self.kit_port is not None:
            connect_kit(self.control, self.kit_port, self.kit_ports)
        self.stop = stop
        self.reader = threading.Thread(target=self._read, name="listen-read", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        capture, stream, control = self.capture, self.stream, self.control
        while not self.stop.is_set():
            try:
                data, overflowed = stream.read(READ_FRAMES)
                waiting = stream.read_available
                capture.take(data[:, 0], control.frame_time - waiting, data[:, 1] if data.shape[1] > 1 else None)
                if overflowed:
                    capture.xruns += 1
            except Exception as exc:  # the stream went (JACK stopped): the main loop reports the input gone
                print(f"listen: read: {exc.__class__.__name__}: {exc}", file=sys.stderr)
                self.stop.wait(0.5)

    def check(self, source: str) -> int:
        """Is the source still there and connected? Reconnect it when it comes back (the kit too)."""
        if self.kit_port is not None:
            connect_kit(self.control, self.kit_port, self.kit_ports)
        return check_jack(self.control, self.port, source)

    def close(self) -> None:
        try:
            self.stream.stop()
            self.stream.close()
        except Exception:
            pass
        try:
            self.control.close()
        except Exception:
            pass


def capture_latency(port: str) -> int:
    """The source port's capture latency in frames; 0 when unknown: a player client's port has none."""
    from drummachine.core.jack_latency import jack_lsp_latencies

    return jack_lsp_latencies(port).get(port, {}).get("capture", 0)


def check_jack(client, port, source: str) -> int:
    """Is the source still there and connected to ``port`` (ours: a ``jack.Port`` or its name)?
    Reconnect it when it comes back."""
    try:
        if source in {p.name for p in client.get_all_connections(port)}:
            return shared.LISTENING
        if client.get_ports(source):
            client.connect(source, port)
            return shared.LISTENING
    except Exception:
        pass
    return shared.GONE
