"""Subcommands for an engine already playing: attach (the stage UI on it) and stop.

How the engine ends: only when asked. The UI's quit key (q) stops it, all notes off; ctrl+d
detaches and leaves it playing; a UI that crashes, is killed or loses its terminal only
detaches. With nobody attached, `drummachine stop` (or SIGTERM, as systemd sends) stops it.
"""

from __future__ import annotations

import sys

from drummachine.core.errors import DrumMachineError


def run_ui(client) -> int:
    """The stage UI on ``client`` until it quits (the engine stops), detaches or fails (the
    engine plays on: say so, and how to come back)."""
    from drummachine.ui.app import StageApp

    app = StageApp(client, warnings=client.info.get("warnings", []))
    crashed = None
    try:
        app.run()
    except Exception as exc:  # Textual shows its own errors; anything that escapes it lands here
        crashed = f"{type(exc).__name__}: {exc}"
    if app.quit_requested and not crashed:
        client.close()
        return 0
    gone = client.gone
    client.close()  # detach (if still attached): the engine plays on
    if gone:
        print(f"drummachine: {gone}", file=sys.stderr)
        return 0 if "stopped" in gone else 1
    where = client.info.get("log")
    if crashed or app.return_code:
        why = crashed or "the UI stopped with an error (see above)"
        print(f"drummachine: {why}; the engine plays on (pid {client.pid}): `drummachine attach` brings the UI "
              f"back, `drummachine stop` stops it" + (f"; log: {where}" if where else ""), file=sys.stderr)
        return 1
    print(f"drummachine: detached; the engine plays on (pid {client.pid}): `drummachine attach` brings the UI "
          "back, `drummachine stop` stops it", file=sys.stderr)
    return 0


def cmd_attach(args) -> int:
    """Open the stage UI on an engine already playing (started by `play`, `play --headless` or systemd)."""
    from drummachine.live import engine_socket

    if not sys.stdout.isatty():
        raise DrumMachineError("attach", "needs a terminal (the stage UI draws on it)")
    return run_ui(engine_socket.SocketClient(engine_socket.find_engine(args.socket)))


def cmd_stop(args) -> int:
    """Stop the engine that is playing (all notes off), whether a UI is attached or not."""
    from drummachine.live import engine_socket

    path = engine_socket.find_engine(args.socket)
    client = engine_socket.SocketClient(path)
    pid = client.pid
    if not client.quit(timeout=args.timeout):
        raise DrumMachineError(str(path), f"the engine (pid {pid}) did not stop within {args.timeout:g} s")
    print(f"stopped the engine (pid {pid})")
    return 0


def register(sub) -> None:
    help_socket = "the engine's socket (default: the one `play` uses)"
    p = sub.add_parser("attach", help="open the stage UI on an engine already playing", description=cmd_attach.__doc__)
    p.add_argument("--socket", metavar="PATH", help=help_socket)
    p.set_defaults(func=cmd_attach)
    p = sub.add_parser("stop", help="stop the engine that is playing", description=cmd_stop.__doc__)
    p.add_argument("--socket", metavar="PATH", help=help_socket)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for it to stop (default 10)")
    p.set_defaults(func=cmd_stop)
