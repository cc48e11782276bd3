"""Monitoring module: ingest xTR probe samples, aggregate each S' window, emit events.

Sources are the xTR agents' JSON stats documents, read from a file (what the
paper's OpenLISP node wrote) or from their HTTP/JSON endpoint; the format,
``pacao-xtr-stats/1``, is in docs/controller.md. Every sample is persisted
before it is aggregated, and every window aggregate before the decision
module sees it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

import httpx

from pacao.controller.config import ControllerConfig
from pacao.controller.storage import Store

FORMAT = "pacao-xtr-stats/1"
USER_XTR = "user-xtr"
XTR_VM = "xtr-vm"


@dataclass(frozen=True)
class Sample:
    """One probe: ``rtt_ms`` None when the probe was lost."""

    ts: float
    path: str  # user-xtr | xtr-vm
    xtr: str  # DC of the measuring xTR
    rloc: str  # the measuring xTR's RLOC (the entry)
    subject: str  # user name (user-xtr) or VM name (xtr-vm)
    rtt_ms: float | None
    peer: str = ""  # the probed locator ("" for a direct probe of the VM's EID)
    jitter_ms: float | None = None  # the agent's own jitter estimate, when it gives one


@dataclass(frozen=True)
class WindowStat:
    """Aggregate of one path over one window: mean RTT, jitter, availability, samples."""

    start: float
    end: float
    path: str
    xtr: str
    rloc: str
    subject: str
    rtt_ms: float | None
    jitter_ms: float | None
    availability: float
    count: int
    peer: str = ""


# Typed events for subscribers (the service, metrics, tests).
@dataclass(frozen=True)
class SamplesIngested:
    source: str
    count: int


@dataclass(frozen=True)
class WindowClosed:
    start: float
    end: float
    stats: tuple[WindowStat, ...]


@dataclass(frozen=True)
class PathDown:
    stat: WindowStat


@dataclass(frozen=True)
class SourceError:
    source: str
    error: str


Event = SamplesIngested | WindowClosed | PathDown | SourceError


class Source(Protocol):
    name: str

    async def fetch(self) -> Any:
        """The current stats document (parsed JSON)."""
        ...


class FileSource:
    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path

    async def fetch(self) -> Any:
        return json.loads(self.path.read_text(encoding="utf-8"))


class HttpSource:
    def __init__(self, name: str, url: str, timeout_s: float = 2.0) -> None:
        self.name, self.url = name, url
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def fetch(self) -> Any:
        r = await self._client.get(self.url)
        r.raise_for_status()
        return r.json()

    async def close(self) -> None:
        await self._client.aclose()


def sources_from_config(cfg: ControllerConfig) -> list[Source]:
    out: list[Source] = []
    for dc in cfg.dcs:
        if dc.xtr.stats_url is not None:
            out.append(HttpSource(dc.name, dc.xtr.stats_url))
        if dc.xtr.stats_file is not None:
            out.append(FileSource(dc.name, dc.xtr.stats_file))
    return out


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


class Matcher:
    """Map a probe record to the user or VM it measures."""

    def __init__(self, cfg: ControllerConfig) -> None:
        self.user_by_rloc = {u.rloc: u.name for u in cfg.users if u.rloc is not None}
        self.user_nets = [(_net(u.eid), u.name) for u in cfg.users if u.eid is not None]
        self.vm_nets = [(_net(v.eid), v.name) for v in cfg.vms]
        self.rloc_dc = cfg.rloc_owner()

    @staticmethod
    def _within(text: str | None, nets: Sequence[tuple[Any, str]]) -> str | None:
        if not text:
            return None
        n = _net(text)
        if n is None:
            return None
        for net, name in nets:
            if (
                net is not None
                and n.version == net.version
                and (n.subnet_of(net) or net.subnet_of(n))
            ):
                return name
        return None

    def user(self, rec: dict[str, Any]) -> str | None:
        r = rec.get("rloc")
        if isinstance(r, str) and r in self.user_by_rloc:
            return self.user_by_rloc[r]
        return self._within(rec.get("eid"), self.user_nets)

    def vm(self, rec: dict[str, Any]) -> str | None:
        return self._within(rec.get("eid"), self.vm_nets)


def parse_document(doc: Any, source: str, matcher: Matcher) -> tuple[list[Sample], list[str]]:
    """Samples of the configured users/VMs in a ``pacao-xtr-stats/1`` document, and problems."""
    problems: list[str] = []
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return [], [f"{source}: not a {FORMAT} document"]
    default_rloc = doc.get("rloc")
    out: list[Sample] = []
    for i, rec in enumerate(doc.get("samples") or []):
        if not isinstance(rec, dict):
            problems.append(f"{source}: samples[{i}] is not an object")
            continue
        ts: Any = rec.get("ts")
        rtt: Any = rec.get("rtt_ms")
        local = rec.get("local_rloc", default_rloc)
        ok_num = isinstance(ts, int | float) and math.isfinite(ts)
        ok_rtt = rtt is None or (isinstance(rtt, int | float) and math.isfinite(rtt) and rtt >= 0)
        if not ok_num or not ok_rtt or not isinstance(local, str):
            problems.append(f"{source}: samples[{i}] has a bad ts, rtt_ms or local_rloc")
            continue
        xtr = matcher.rloc_dc.get(local)
        if xtr is None:
            problems.append(f"{source}: samples[{i}].local_rloc {local} is no configured RLOC")
            continue
        kind = rec.get("kind")
        peer = ""
        if kind == "rloc-probe":
            subject, path = matcher.user(rec), USER_XTR
            peer = str(rec.get("rloc") or "")
        elif kind == "eid-probe":
            subject, path = matcher.vm(rec), XTR_VM
        else:
            problems.append(f"{source}: samples[{i}].kind {kind!r} is not rloc-probe/eid-probe")
            continue
        if subject is None:
            continue  # a cached mapping the controller does not manage
        rtt_v = None if rtt is None else float(rtt)
        out.append(Sample(float(ts), path, xtr, local, subject, rtt_v, peer))
    return out, problems


class SnapshotReader:
    """Samples from the ``pacao lisp xtr`` stats snapshot (docs/lisp.md, "Stats JSON").

    That document holds per-locator counters, not samples: between two polls,
    each new reply becomes an answered sample at the locator's last RTT, each
    new consecutive timeout (``lost``) a lost one; jitter is the agent's RFC 3550
    estimate. A mapping of a user's EID (or with the user's RLOC as locator)
    measures user<->xTR; a mapping of a VM's EID measures xTR<->VM through the
    locator of the DC that hosts the VM (chosen when the window is used).
    """

    def __init__(self, dc: str, matcher: Matcher, local_rloc: str) -> None:
        self.dc, self.matcher, self.local = dc, matcher, local_rloc
        self.prev: dict[tuple[str, str], tuple[int, int]] = {}

    def read(self, doc: Any) -> tuple[list[Sample], list[str]]:
        ts = doc.get("time")
        if not isinstance(ts, int | float) or not isinstance(doc.get("map_cache"), list):
            return [], [f"{self.dc}: xTR snapshot without 'time' or 'map_cache'"]
        out: list[Sample] = []
        for entry in doc["map_cache"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("locators"), list):
                continue
            prefix = str(entry.get("prefix", ""))
            vm = self.matcher.vm({"eid": prefix})
            for loc in entry["locators"]:
                if not isinstance(loc, dict):
                    continue
                addr = str(loc.get("address", ""))
                if vm is not None:
                    subject, path = vm, XTR_VM
                else:
                    user = self.matcher.user({"eid": prefix, "rloc": addr})
                    if user is None:
                        continue
                    subject, path = user, USER_XTR
                out.extend(self._samples(float(ts), path, subject, prefix, addr, loc))
        return out, []

    def _samples(
        self, ts: float, path: str, subject: str, prefix: str, addr: str, loc: dict[str, Any]
    ) -> list[Sample]:
        replies, lost = int(loc.get("replies") or 0), int(loc.get("lost") or 0)
        key = (prefix, addr)
        p_replies, p_lost = self.prev.get(key, (0, 0))
        self.prev[key] = (replies, lost)
        new_replies = max(0, replies - p_replies)
        new_lost = lost if lost < p_lost else lost - p_lost
        rtt, jit = loc.get("rtt_ms"), loc.get("jitter_ms")
        jitter = float(jit) if isinstance(jit, int | float) else None
        out = []
        for i in range(new_lost):
            out.append(Sample(ts - 1e-6 * (i + 1), path, self.dc, self.local, subject, None, addr))
        if isinstance(rtt, int | float):
            for i in range(new_replies):
                t = ts - 1e-6 * i
                out.append(Sample(t, path, self.dc, self.local, subject, float(rtt), addr, jitter))
        return out


def aggregate(samples: Iterable[Sample], start: float, end: float) -> list[WindowStat]:
    """Per (path, rloc, subject) over [start, end): mean RTT of answered probes, jitter as
    the mean |difference| of consecutive RTTs (RFC 3550's D, unsmoothed), availability
    = answered / sent."""
    groups: dict[tuple[str, str, str, str, str], list[Sample]] = {}
    for s in samples:
        if start <= s.ts < end:
            groups.setdefault((s.path, s.xtr, s.rloc, s.subject, s.peer), []).append(s)
    out = []
    for (path, xtr, rloc, subject, peer), ss in sorted(groups.items()):
        ss.sort(key=lambda s: s.ts)
        rtts = [s.rtt_ms for s in ss if s.rtt_ms is not None]
        mean = math.fsum(rtts) / len(rtts) if rtts else None
        jitter = (
            math.fsum(abs(b - a) for a, b in pairwise(rtts)) / (len(rtts) - 1)
            if len(rtts) > 1
            else (0.0 if rtts else None)
        )
        agent = [s.jitter_ms for s in ss if s.jitter_ms is not None]
        if agent:
            jitter = agent[-1]  # the agent's running RFC 3550 estimate at the window's end
        avail = len(rtts) / len(ss)
        out.append(
            WindowStat(start, end, path, xtr, rloc, subject, mean, jitter, avail, len(ss), peer)
        )
    return out


class Monitor:
    """Polls sources, persists samples, keeps recent ones, closes windows into stats."""

    def __init__(
        self,
        cfg: ControllerConfig,
        store: Store,
        sources: Sequence[Source],
        keep_s: float | None = None,
    ) -> None:
        self.cfg, self.store, self.sources = cfg, store, list(sources)
        self.matcher = Matcher(cfg)
        self.keep_s = keep_s if keep_s is not None else 3 * cfg.timers.s1
        self.recent: deque[Sample] = deque()
        self.high_water: dict[tuple[str, str, str, str, str], float] = {}
        self.subscribers: list[Callable[[Event], None]] = []
        self.readers: dict[str, SnapshotReader] = {}
        self.dc_names = {d.name for d in cfg.dcs}

    def emit(self, ev: Event) -> None:
        for fn in self.subscribers:
            fn(ev)

    def ingest(self, source: str, doc: Any) -> int:
        """Add a document's new samples (persisted first); returns how many were new."""
        if isinstance(doc, dict) and "map_cache" in doc and "format" not in doc:
            reader = self.readers.get(source)
            if reader is None:
                dc = self.cfg.dc(source) if source in self.dc_names else None
                local = dc.rlocs[0] if dc is not None else ""
                reader = self.readers[source] = SnapshotReader(source, self.matcher, local)
            samples, problems = reader.read(doc)
        else:
            samples, problems = parse_document(doc, source, self.matcher)
        for p in problems:
            self.emit(SourceError(source, p))
        fresh: list[Sample] = []
        marks: dict[tuple[str, str, str, str, str], float] = {}
        for s in samples:
            key = (source, s.path, s.rloc, s.subject, s.peer)
            if s.ts > self.high_water.get(key, -math.inf):
                fresh.append(s)
                marks[key] = max(marks.get(key, -math.inf), s.ts)
        if not fresh:
            return 0
        self.store.add_measurements(
            [
                {
                    "ts": s.ts,
                    "kind": "sample",
                    "path": s.path,
                    "xtr": s.xtr,
                    "subject": s.subject,
                    "rloc": s.rloc,
                    "rtt_ms": s.rtt_ms,
                    "availability": 0.0 if s.rtt_ms is None else 1.0,
                    "count": 1,
                }
                for s in fresh
            ]
        )
        self.high_water.update(marks)
        self.recent.extend(sorted(fresh, key=lambda s: s.ts))
        self.emit(SamplesIngested(source, len(fresh)))
        return len(fresh)

    async def poll(self) -> int:
        """Fetch every source at once (one slow agent must not delay the others' samples
        past the window they belong to), then ingest in source order."""
        docs = await asyncio.gather(*(src.fetch() for src in self.sources), return_exceptions=True)
        n = 0
        for src, doc in zip(self.sources, docs, strict=True):
            if isinstance(doc, OSError | ValueError | httpx.HTTPError):
                self.emit(SourceError(src.name, f"{type(doc).__name__}: {doc}"))
                continue
            if isinstance(doc, BaseException):
                raise doc
            n += self.ingest(src.name, doc)
        return n

    def window(self, start: float, end: float, persist: bool = True) -> list[WindowStat]:
        """Aggregate [start, end); persisted before it is returned. Old samples are dropped."""
        stats = aggregate(self.recent, start, end)
        if persist and stats:
            self.store.add_measurements(
                [
                    {
                        "ts": end,
                        "kind": "window",
                        "path": w.path,
                        "xtr": w.xtr,
                        "subject": w.subject,
                        "rloc": w.rloc,
                        "rtt_ms": w.rtt_ms,
                        "jitter_ms": w.jitter_ms,
                        "availability": w.availability,
                        "count": w.count,
                        "window_s": end - start,
                    }
                    for w in stats
                ]
            )
        while self.recent and self.recent[0].ts < end - self.keep_s:
            self.recent.popleft()
        self.emit(WindowClosed(start, end, tuple(stats)))
        for w in stats:
            if w.availability == 0.0:
                self.emit(PathDown(w))
        return stats


def _stat_key(w: WindowStat) -> tuple[str, str, str, str, str]:
    return (w.path, w.xtr, w.rloc, w.subject, w.peer)


class LastKnown:
    """Carries each path's last window aggregate into windows without samples for it.

    A window with no sample of a path says nothing about the path (the agent was
    slow, the poll failed, the probe is still in flight), so the decision module
    gets the last aggregate for up to ``max_age_s`` (``policy.carry_windows`` x S').
    An aggregate whose probes were all lost (availability 0) is carried too: a dead
    locator stays dead until it answers. Carried stats keep their own start/end.
    """

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self.last: dict[tuple[str, str, str, str, str], WindowStat] = {}

    def fill(self, stats: Sequence[WindowStat], end: float) -> list[WindowStat]:
        """``stats`` plus the carried aggregates of the paths they lack."""
        fresh = {_stat_key(w) for w in stats}
        for w in stats:
            self.last[_stat_key(w)] = w
        out = list(stats)
        for key, w in list(self.last.items()):
            if key in fresh:
                continue
            if end - w.end > self.max_age_s + 1e-9:
                del self.last[key]
            else:
                out.append(w)
        return out
