"""The one clock seam: controller, LISP daemons and simulator read time only through a Clock.

The decision policy never reads a clock at all (it takes ``now`` as an
argument); the service takes a Clock so that tests and the simulator can run it
in simulated time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds (Unix time for the real clock): timestamps."""
        ...

    def monotonic(self) -> float:
        """Seconds that never step back: intervals (an RTT, a timeout), which a wall-clock
        step would otherwise distort."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """Simulated time: ``sleep`` returns when someone ``advance``s past its deadline."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._now + max(0.0, seconds), fut))
        await fut

    def advance(self, seconds: float) -> None:
        self._now += seconds
        keep = []
        for deadline, fut in self._waiters:
            if deadline <= self._now + 1e-12:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((deadline, fut))
        self._waiters = keep
