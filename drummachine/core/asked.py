"""A call that may never return, made in a thread of its own so that its caller can give up on it.

libjack asks the JACK server and waits for the answer with no time limit: on a server that stalls
(stopped, hung) opening or closing a client, or listing its ports, would hold the caller for good.
What is asked through ctypes or CFFI lets the interpreter's lock go while it waits, so the caller
can wait a while and go on; a call given up on keeps its (daemon) thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Asked:
    """``call(*args)`` running in a thread of its own: ``wait(seconds)`` for it, then ``result()``."""

    def __init__(self, call: Callable, *args, name: str = "asked"):
        self._answer: dict = {}
        self._thread = threading.Thread(target=self._run, args=(call, args), name=name, daemon=True)
        self._thread.start()

    def _run(self, call: Callable, args: tuple) -> None:
        try:
            self._answer["value"] = call(*args)
        except BaseException as exc:  # given back by result(), as it was raised
            self._answer["error"] = exc

    def wait(self, seconds: float) -> bool:
        """Whether the call has returned, waiting for it at most ``seconds``."""
        self._thread.join(seconds)
        return self.answered

    @property
    def answered(self) -> bool:
        return not self._thread.is_alive()

    def result(self):
        """What the call returned, or its exception raised again (once answered)."""
        if "error" in self._answer:
            raise self._answer["error"]
        return self._answer["value"]
