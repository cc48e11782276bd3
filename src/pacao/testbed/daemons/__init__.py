"""The processes a testbed spawns (delay line, xTR data planes and agents, VM daemon,
traffic tools) and the control-socket protocol they share."""

from __future__ import annotations

import os
import signal
from typing import Any, Protocol


class Loop(Protocol):
    running: bool

    def run(self, wake: int) -> None: ...


def stop_on_signals(loop: Any) -> int:
    """SIGTERM and SIGINT end ``loop`` (anything with a ``running`` flag) at its next turn,
    so a daemon closes its sockets and files instead of dying mid-write.

    Returns a file descriptor that becomes readable on those signals: a loop that selects
    on it wakes at once, not at its select timeout (up to 1 s, for each daemon a testbed
    stops one after another)."""

    def stop(_sig: int, _frame: Any) -> None:
        loop.running = False

    wake, notify = os.pipe()
    os.set_blocking(wake, False)
    os.set_blocking(notify, False)
    signal.set_wakeup_fd(notify)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return wake


def drain(wake: int) -> None:
    """Empty the pipe of stop_on_signals (its bytes are the signal numbers)."""
    while True:
        try:
            if not os.read(wake, 512):
                return
        except BlockingIOError:
            return


def serve(loop: Loop) -> int:
    """Run a daemon's loop until a signal: the ``ready`` line the testbed waits for, then
    ``loop.run()``."""
    wake = stop_on_signals(loop)
    print("ready", flush=True)
    loop.run(wake)
    return 0
