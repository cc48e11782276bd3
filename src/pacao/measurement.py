"""The xTR probe-sample format, ``pacao-probe-samples/1``: what an agent measured, probe by probe.

The agent (``pacao lisp xtr``) keeps its last probe results in a bounded
buffer, each numbered in one *stream* (one agent run), and publishes them as a
:class:`SampleBatch` (docs/input-formats.md). The controller's monitor reads
the batches with a :class:`Cursor`, so that it takes every sample once, and
learns how many it missed when the buffer overflowed between two reads. Both
sides import this module, so the format has one definition.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from pacao.errors import InputError

FORMAT = "pacao-probe-samples/1"


@dataclass(frozen=True)
class ProbeRecord:
    """One RLOC-probe of one locator of one cached mapping.

    The path it measures is named by the mapping's EID prefix and the probed
    locator (the measuring xTR is the batch's ``rloc``): the controller maps a
    user's EID or RLOC to user<->xTR, a VM's EID to xTR<->VM. Loss is a record
    with ``rtt_ms`` None; jitter is the spread of consecutive RTTs (the agent
    adds its RFC 3550 estimate after each reply as ``jitter_ms``).
    """

    seq: int  # position in the stream: 1, 2, ... in the order the probes completed
    ts: float  # Unix time the probe was sent
    eid: str  # the mapping's EID prefix
    locator: str  # the probed RLOC
    rtt_ms: float | None  # None: no reply within the agent's probe timeout
    jitter_ms: float | None = None

    @property
    def lost(self) -> bool:
        return self.rtt_ms is None


@dataclass(frozen=True)
class Cursor:
    """Where a reader is in an agent's stream: the last sample it took."""

    stream: str
    seq: int


@dataclass(frozen=True)
class SampleBatch:
    """The document: what the agent's buffer held (after a reader's cursor) when generated.

    ``first_seq`` is the oldest sample still buffered and ``next_seq`` the
    number the next one gets, so a reader whose cursor is below
    ``first_seq - 1`` knows how many samples it missed.
    """

    stream: str
    rloc: str  # the measuring xTR's RLOC
    generated: float  # Unix time
    first_seq: int
    next_seq: int
    samples: tuple[ProbeRecord, ...]

    def since(self, cursor: Cursor | None) -> tuple[list[ProbeRecord], int, Cursor]:
        """The samples a reader at ``cursor`` has not taken, how many it missed, and
        its next cursor. A first read takes everything buffered; a new stream (the
        agent restarted) too, counting what it dropped before this read as missed."""
        if cursor is None or cursor.stream != self.stream:
            last = 0
            missed = 0 if cursor is None else self.first_seq - 1
        else:
            last = cursor.seq
            missed = max(0, self.first_seq - 1 - last)
        fresh = [s for s in self.samples if s.seq > last]
        return fresh, missed, Cursor(self.stream, max(last, self.next_seq - 1))


class SampleBuffer:
    """The agent's last ``capacity`` probe records, numbered in one stream."""

    def __init__(self, rloc: str, capacity: int = 10000, stream: str | None = None) -> None:
        self.rloc = rloc
        self.stream = stream or secrets.token_hex(8)
        self.records: deque[ProbeRecord] = deque(maxlen=capacity)
        self.next_seq = 1

    def add(
        self,
        ts: float,
        eid: str,
        locator: str,
        rtt_ms: float | None,
        jitter_ms: float | None = None,
    ) -> ProbeRecord:
        rec = ProbeRecord(self.next_seq, ts, eid, locator, rtt_ms, jitter_ms)
        self.records.append(rec)
        self.next_seq += 1
        return rec

    def batch(self, generated: float, cursor: Cursor | None = None) -> SampleBatch:
        """What a reader at ``cursor`` has not seen (everything for another stream)."""
        after = cursor.seq if cursor is not None and cursor.stream == self.stream else 0
        first = self.records[0].seq if self.records else self.next_seq
        skip = max(0, after - first + 1)  # records are numbered without gaps from `first`
        samples = tuple(itertools.islice(self.records, skip, None))
        return SampleBatch(self.stream, self.rloc, generated, first, self.next_seq, samples)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def encode(batch: SampleBatch) -> dict[str, Any]:
    """The JSON document of a batch (RTT and jitter in ms, to the microsecond)."""
    samples = []
    for s in batch.samples:
        rec: dict[str, Any] = {
            "seq": s.seq,
            "ts": s.ts,
            "eid": s.eid,
            "locator": s.locator,
            "rtt_ms": _round(s.rtt_ms),
        }
        if s.jitter_ms is not None:
            rec["jitter_ms"] = _round(s.jitter_ms)
        samples.append(rec)
    return {
        "format": FORMAT,
        "stream": batch.stream,
        "rloc": batch.rloc,
        "generated": batch.generated,
        "first_seq": batch.first_seq,
        "next_seq": batch.next_seq,
        "samples": samples,
    }


_DOC_KEYS = ("format", "stream", "rloc", "generated", "first_seq", "next_seq", "samples")
_SAMPLE_KEYS = ("seq", "ts", "eid", "locator", "rtt_ms", "jitter_ms")


def _keys(field: str, doc: dict[str, Any], allowed: tuple[str, ...], required: int) -> None:
    for key in allowed[:required]:
        if key not in doc:
            raise InputError(f"{field}{key}", None, "required")
    for key in doc:
        if key not in allowed:
            raise InputError(f"{field}{key}", doc[key], f"unknown key; allowed: {list(allowed)}")


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(field, value, "expected a non-empty string")
    return value


def _seq(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(field, value, "expected an integer >= 1")
    return value


def _number(field: str, value: Any, what: str = "a finite number >= 0") -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0:
        raise InputError(field, value, f"expected {what}")
    return float(value)


def _optional(field: str, value: Any) -> float | None:
    return None if value is None else _number(field, value, "a finite number >= 0 or null")


def decode(doc: Any) -> SampleBatch:
    """Validate a ``pacao-probe-samples/1`` document; InputError names the bad field."""
    if not isinstance(doc, dict):
        raise InputError("<document>", doc, f"expected a {FORMAT} object")
    if doc.get("format") != FORMAT:
        raise InputError("format", doc.get("format"), f"expected {FORMAT!r}")
    _keys("", doc, _DOC_KEYS, len(_DOC_KEYS))
    first, nxt = _seq("first_seq", doc["first_seq"]), _seq("next_seq", doc["next_seq"])
    if nxt < first:
        raise InputError("next_seq", nxt, f"expected >= first_seq ({first})")
    raw = doc["samples"]
    if not isinstance(raw, list):
        raise InputError("samples", raw, "expected a list")
    samples = []
    last = first - 1
    for i, rec in enumerate(raw):
        f = f"samples[{i}]"
        if not isinstance(rec, dict):
            raise InputError(f, rec, "expected an object")
        _keys(f"{f}.", rec, _SAMPLE_KEYS, 5)
        seq = _seq(f"{f}.seq", rec["seq"])
        if not last < seq < nxt:
            raise InputError(f"{f}.seq", seq, f"expected increasing numbers in ({last}, {nxt})")
        last = seq
        samples.append(
            ProbeRecord(
                seq,
                _number(f"{f}.ts", rec["ts"]),
                _text(f"{f}.eid", rec["eid"]),
                _text(f"{f}.locator", rec["locator"]),
                _optional(f"{f}.rtt_ms", rec["rtt_ms"]),
                _optional(f"{f}.jitter_ms", rec.get("jitter_ms")),
            )
        )
    return SampleBatch(
        _text("stream", doc["stream"]),
        _text("rloc", doc["rloc"]),
        _number("generated", doc["generated"]),
        first,
        nxt,
        tuple(samples),
    )
