"""Which input ``--listen`` names: sounddevice devices found again after they moved, and a device
plugged in after `play` (PortAudio over a real JACK server lists each client as a device)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from drummachine.core.errors import DrumMachineError
from drummachine.listen import inputs
from drummachine.listen.inputs import AudioInput, find_input, same_device

from .conftest import play_listening_for_a_late_band

USB = "USB Audio CODEC: - (hw:1,0)"


def test_the_chosen_device_is_found_again_where_it_moved():
    chosen = AudioInput("sounddevice", USB, 3, "usb")
    assert same_device([(0, "system"), (3, USB)], chosen) == 3
    # others gone: the same device at another number, not whatever is at its old one
    assert same_device([(0, "system"), (1, USB), (3, "pulse")], chosen) == 1
    # plugged back in as another ALSA card
    assert same_device([(0, "system"), (2, "USB Audio CODEC: - (hw:2,0)")], chosen) == 2
    # the musician's words still name one device
    assert same_device([(0, "system"), (4, "USB Audio CODEC 2: - (hw:3,0)")], chosen) == 4
    # not there, or the words now name two: not guessed
    assert same_device([(0, "system"), (3, "pulse")], chosen) is None
    assert same_device([(0, "usb a"), (1, "usb b")], chosen) is None
    # chosen by number (no words): found again by its name only
    by_number = AudioInput("sounddevice", USB, 3, None)
    assert same_device([(3, "pulse"), (5, "USB Audio CODEC: - (hw:4,0)")], by_number) == 5
    assert same_device([(3, "pulse")], by_number) is None


def test_the_machines_own_ports_are_not_the_band(monkeypatch):
    monkeypatch.setattr(inputs, "jack_ports", lambda: ["system:capture_1", "drummachine:out_0", "drummachine:out_1",
                                                       "drummachine-01:cue_0", "band:out", "drummachinery:out"])
    assert inputs.jack_sources() == ["system:capture_1", "band:out", "drummachinery:out"]
    # a part of a name that would have matched the machine's own ports too names the band's
    assert find_input("band").name == "band:out"
    assert find_input("capture").name == "system:capture_1"
    for spec in ("drummachine:out_0", "out_1", "cue"):
        with pytest.raises(DrumMachineError, match="the machine's own output .*not the band") as err:
            find_input(spec)
        assert not err.value.missing  # not waited for: it will never be the band
    with pytest.raises(DrumMachineError, match="matches 0 JACK audio ports") as err:
        find_input("bass")
    assert err.value.missing


@pytest.mark.jack
def test_listening_to_its_own_kit_on_jack_is_refused_in_one_line(jack_server):
    import jack

    # as the engine's client names itself (JACK names it drummachine-01 if another is there)
    own = jack.Client("drummachine", no_start_server=True)
    band = jack.Client("bandforown", no_start_server=True)
    try:
        kit = own.outports.register("out_0").name
        out = band.outports.register("out").name
        own.activate()
        band.activate()
        assert out in inputs.jack_sources() and kit not in inputs.jack_sources()
        with pytest.raises(DrumMachineError, match=re.escape(f"'{kit}' is the machine's own output")):
            find_input(kit)
        assert find_input(out) == AudioInput("jack", out)
    finally:
        for client in (own, band):
            client.deactivate()
            client.close()


@pytest.mark.jack
@pytest.mark.waiting
def test_a_sounddevice_input_that_comes_after_play_is_found_and_found_again_when_it_moved(jack_server, tmp_path):
    """`--listen sd:NAME` whose device is not there at the start is looked for every 2 s, through
    a process of its own (this process's PortAudio lists the devices it saw when it started);
    once there it is listened to. The listening process then dies (SIGKILL) while a device listed
    before it went away: the new one finds the device at its new number (before, it opened the old
    number: "trying again" for the rest of the set). The band is jack_metro's click at 120; the
    machine, asked for 116, follows it."""
    log = tmp_path / "play.log"
    play = play_listening_for_a_late_band("sd:lateband", log, 17)
    clients = []

    def text() -> str:
        return log.read_text() if log.exists() else ""

    def wait_for(words: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and words not in text():
            time.sleep(0.1)
        assert words in text(), text()

    def click(name: str, bpm: int) -> subprocess.Popen:
        clients.append(subprocess.Popen(["jack_metro", "-n", name, "-b", str(bpm)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        return clients[-1]

    try:
        wait_for("first beat", 15)
        assert "listening for it every few seconds" in text(), text()
        other = click("another", 60)  # a device listed before the band's
        click("lateband", 120)
        wait_for("listening to lateband", 10)
        assert "(the input is there now)" in text()
        time.sleep(4.0)
        other.terminate()
        other.wait(10)
        listening = subprocess.run(["pgrep", "-P", str(play.pid), "-f", "drummachine.listen.process"],
                                   capture_output=True, text=True).stdout.split()
        assert len(listening) == 1, listening
        os.kill(int(listening[0]), signal.SIGKILL)
        wait_for("listening to lateband again", 12)
        _, err = play.communicate(timeout=40)
    finally:
        if play.poll() is None:
            play.kill()
        for client in clients:
            client.terminate()
            client.wait(10)
    assert play.returncode == 0, err
    assert "Traceback" not in err + text()
    assert "trying again" not in text(), text()
    tempos = [float(t) for t in re.findall(r"\| rock ([\d.]+) bpm \|", text())]
    assert tempos[0] == pytest.approx(116, abs=0.1) and tempos[-1] == pytest.approx(120, abs=0.6), tempos
