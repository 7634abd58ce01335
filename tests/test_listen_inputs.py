"""Which input ``--listen`` names: sounddevice devices found again after they moved, and a device
plugged in after `play` (PortAudio over a real JACK server lists each client as a device)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from drummachine.listen.inputs import AudioInput, same_device

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


@pytest.mark.jack
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
