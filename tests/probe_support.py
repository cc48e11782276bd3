"""A measurement source for the controller tests: one xTR agent's probe-sample stream
without the network, built with the agent's own buffer and encoder
(:mod:`pacao.measurement`), read by the monitor with its cursor like a real one."""

from __future__ import annotations

import math
from typing import Any

from pacao.measurement import Cursor, SampleBuffer, encode


class FakeAgent:
    """The scenario offers probes, possibly again (it regenerates a sliding range of
    send times at every poll); each mapping keeps only probes newer than the last one it
    holds, as an agent would have recorded each once."""

    def __init__(self, name: str, rloc: str) -> None:
        self.name = name
        self.buffer = SampleBuffer(rloc)
        self.last: dict[str, float] = {}
        self.now = 0.0  # the batch's generation time

    def probe(self, ts: float, eid: str, locator: str, rtt_ms: float | None) -> None:
        if ts > self.last.get(eid, -math.inf):
            self.last[eid] = ts
            self.buffer.add(ts, eid, locator, rtt_ms)

    def doc(self, cursor: Cursor | None = None) -> dict[str, Any]:
        return encode(self.buffer.batch(self.now, cursor))

    async def fetch(self, cursor: Cursor | None) -> Any:
        return self.doc(cursor)
