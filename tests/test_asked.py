"""core.asked: a call that may never return, given up on after a wait (the JACK stall tests in
tests/test_jack_midi.py use it through libjack for real)."""

import threading
import time

import pytest

from drummachine.core.asked import Asked


def test_an_answer_and_an_exception_come_back_as_the_call_gave_them():
    assert Asked(lambda a, b: a + b, 2, 3).wait(5.0)
    asked = Asked(lambda a, b: a + b, 2, 3)
    asked.wait(5.0)
    assert asked.result() == 5
    failing = Asked(int, "not a number")
    assert failing.wait(5.0)
    with pytest.raises(ValueError):
        failing.result()


def test_a_call_that_never_returns_is_given_up_on_after_the_wait():
    never = threading.Event()
    t = time.monotonic()
    asked = Asked(never.wait)
    assert not asked.wait(0.2) and not asked.answered
    assert time.monotonic() - t < 2.0
    never.set()  # let go: it answers then
    assert asked.wait(5.0) and asked.result() is True
