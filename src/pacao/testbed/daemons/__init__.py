"""The processes a testbed spawns (delay line, xTR data planes and agents, VM daemon,
traffic tools) and the control-socket protocol they share."""

from __future__ import annotations

import signal
from typing import Any, Protocol


class Loop(Protocol):
    running: bool

    def run(self) -> None: ...


def stop_on_signals(loop: Any) -> None:
    """SIGTERM and SIGINT end ``loop`` (anything with a ``running`` flag) at its next turn,
    so a daemon closes its sockets and files instead of dying mid-write."""

    def stop(_sig: int, _frame: Any) -> None:
        loop.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def serve(loop: Loop) -> int:
    """Run a daemon's loop until a signal: the ``ready`` line the testbed waits for, then
    ``loop.run()``."""
    stop_on_signals(loop)
    print("ready", flush=True)
    loop.run()
    return 0
