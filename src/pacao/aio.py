"""asyncio helpers shared by the daemons."""

from __future__ import annotations

import asyncio
import contextlib
import signal


async def wait_for_stop_signal() -> None:
    """Return on SIGINT or SIGTERM, so a daemon can close its sockets and state cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
