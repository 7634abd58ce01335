"""A helper process (the mixer, the listening process) lives as long as its parent's pipe.

The parent sends its set-up on the child's stdin and then only keeps the pipe open: its end
closes when the parent quits, crashes or is SIGKILLed. The child then cleans up, and leaves within
``grace_s`` however that goes: a sound server that died or is restarting can hang PortAudio's and
libjack's calls (a stream's start, stop or close) for good, and a child left so outlived its
parent for as long as the machine ran (seen: a listening process and a mixer still there minutes
after `play` was SIGKILLed while JACK restarted).
"""

from __future__ import annotations

import os
import threading
import time

#: the child's own clean-up (its stream stopped and closed, its JACK client gone) is given this long
GRACE_SECONDS = 3.0


def end_with_parent(stdin, grace_s: float = GRACE_SECONDS, exit_code: int = 0) -> threading.Event:
    """Read ``stdin`` to its end in a daemon thread; the event returned is set there, and the
    process exits ``grace_s`` later if it has not by then. Nothing else may read ``stdin``."""
    ended = threading.Event()

    def watch() -> None:
        try:
            while stdin.readline():
                pass
        except (OSError, ValueError):
            pass
        ended.set()
        time.sleep(grace_s)
        os._exit(exit_code)

    threading.Thread(target=watch, name="parent-pipe", daemon=True).start()
    return ended
