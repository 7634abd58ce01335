"""The kit's audio outputs as ports of drummachine's own JACK client (``midi.jack_midi``): the C
callback plays them from the ring the mixer process writes (``audio.jack_ring``), so the mixer's
death (a crash, SIGKILL) changes nothing in the JACK graph and JACK never runs Python.

The ports are ``out_0``, ``out_1``, ... in the order of ``--outs``' channels (as PortAudio's were),
connected to the sound card's playback ports in order, as PortAudio connected its own. Like the
MIDI ports they are registered again, with their connections, when the JACK server comes back
(``JackMidiClient``: the client opens again with every port), and watched once a second: the
server, the connections, JACK's playback latency of the ports.
"""

from __future__ import annotations

import logging
import time

from drummachine.core.errors import DrumMachineError
from drummachine.midi.jack_midi import REMOVE_WAIT_MS, JackMidiClient, _lines, shared_client

log = logging.getLogger("drummachine")

PREFIX = "out_"  #: the ports' short names: out_0, out_1, ...


class JackAudioPorts:
    """``channels`` audio outputs of the shared client, played from the ring at ``ring_address``
    (the engine keeps the ring mapped while the ports exist). The surface ``JackMidiClient`` asks
    of a port: ``_register``, ``_unregister``, ``_remember_connections``, ``slot``, ``label``."""

    label = "audio out"
    wanted = None

    def __init__(self, ring_address: int, channels: int, client: JackMidiClient | None = None):
        self.ring_address, self.channels = ring_address, channels
        self.client = client or shared_client()
        self.slot: int | None = None  #: 0 while registered on the client's current handle
        self.message = ""
        self.connected = False
        self.closed = False
        self.added = False
        self.names: list[str] = []  #: the ports' full names
        self.known: list[set[str]] = [set() for _ in range(channels)]  #: each port's connections, last seen
        self.restore: list[set[str]] | None = None  #: connections to make again after the server came back
        self.restore_until = 0.0
        self.playback_latency_s = 0.0  #: JACK's figure for the ports (0: not known)
        #: the server ran no callback as the ports went: the callback may still read the ring, so
        #: its memory must stay mapped
        self.left_allocated = False

    @property
    def lib(self):
        return self.client.lib

    # --- what the client calls (its admin lock held) ---------------------------------------------
    def _register(self, handle: int) -> None:
        done = self.lib.dm_audio_open(handle, self.ring_address, PREFIX.encode(), self.channels)
        if done != 0:
            self.slot = None
            self.message = "audio out: JACK refused the ports" if done == -2 else "audio out: no memory for the ports"
            return
        self.slot = 0
        playback = _lines(self.lib.dm_list_playback, handle)
        self.lib.dm_ring_set_outputs(self.ring_address, len(playback))
        self.names = [(self.lib.dm_audio_port_name(handle, k) or b"").decode(errors="replace")
                      for k in range(self.channels)]
        if self.restore is None:
            self._connect_to_the_sound_card(handle, playback)
        self._read_latency(handle)

    def _unregister(self, handle: int) -> int:
        self.left_allocated = bool(self.lib.dm_audio_close(handle, REMOVE_WAIT_MS))
        return self.left_allocated

    def _remember_connections(self) -> None:
        """What each port was connected to (the musician may have routed them elsewhere), to
        connect again on the next server."""
        if any(self.known):
            self.restore = [set(k) for k in self.known]
            self.restore_until = time.monotonic() + 60.0

    # --- ours ------------------------------------------------------------------------------------
    def open(self) -> bool:
        """Register the ports (opening the client if they are the first); False, with
        ``message``, while no server is there (they register when one is)."""
        if self.closed:
            return False
        if not self.added:
            try:
                self.client.add(self, strict=False)
            except DrumMachineError as exc:
                self.message = str(exc)
                return False
            self.added = True
        return self.slot is not None

    def _connect_to_the_sound_card(self, handle: int, playback: list[str]) -> None:
        """Each port to the sound card's playback port of its number (``playback``: in order)."""
        for k, other in zip(range(self.channels), playback):
            self.lib.dm_audio_connect(handle, k, other.encode(), 1)
        self.connected = bool(playback)
        if not playback:
            self.message = "audio out: the JACK server has no playback ports; connect drummachine's out_ ports by hand"

    def _read_latency(self, handle: int) -> None:
        frames, rate = self.lib.dm_audio_latency(handle), self.lib.dm_sample_rate(handle)
        self.playback_latency_s = frames / rate if frames > 0 and rate > 0 else 0.0

    def check(self) -> None:
        """Once a second (the audio watch): the server's comings and goings, the connections to
        make again after a restart, the ports' latency."""
        from drummachine.midi.jack_server import drop_clients_of_a_gone_server

        if self.closed or not self.added:
            return
        drop_clients_of_a_gone_server("jack")
        self.client.keep_up()
        with self.client.admin:
            handle = self.client.handle
            if self.closed or handle is None or self.slot is None:
                return
            if self.restore is not None:
                if time.monotonic() > self.restore_until:
                    self.restore = None
                    if not any(self.known):  # what they fed never came back: the sound card, as at the start
                        self._connect_to_the_sound_card(handle, _lines(self.lib.dm_list_playback, handle))
                else:
                    for k, names in enumerate(self.restore):
                        for name in sorted(names):
                            if self.lib.dm_audio_connect(handle, k, name.encode(), 1) in (0, 17) \
                                    or self.lib.dm_audio_connected_to(handle, k, name.encode()):
                                names.discard(name)
                    if not any(self.restore):
                        log.info("audio: out_ ports connected again as before the server restarted")
                        self.restore = None
            self.known = [set(_lines(self.lib.dm_audio_connections, handle, k)) for k in range(self.channels)]
            self.connected = any(self.known)
            self._read_latency(handle)

    @property
    def client_name(self) -> str:
        return self.client.name

    def close(self) -> None:
        self.closed = True
        if self.added:
            self.added = False
            self.client.remove(self)
        self.connected = False
