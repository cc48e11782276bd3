"""Monitoring module: ingest the xTR agents' probe samples, aggregate each S' window, emit events.

Each DC's agent publishes the outcome of every RLOC-probe it sent in the
``pacao-probe-samples/1`` format (:mod:`pacao.measurement`,
docs/input-formats.md), on its HTTP endpoint or in a file. The monitor reads
each source with a cursor, so every sample is taken once with its own RTT and
send time, maps it to the user or VM it measures, persists it, and only then
aggregates it. What happens is told as typed events to the handlers registered
for their type (:meth:`Monitor.subscribe`, or :func:`handles` on methods and
:meth:`Monitor.register`, as Ryu's ``set_ev_cls``).
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
from typing import Any, Protocol, TypeVar
from urllib.parse import urljoin

import httpx

from pacao.clock import Clock, SystemClock
from pacao.controller.config import ControllerConfig
from pacao.controller.storage import Store
from pacao.errors import InputError
from pacao.measurement import FORMAT, Cursor, ProbeRecord, decode

USER_XTR = "user-xtr"
XTR_VM = "xtr-vm"


@dataclass(frozen=True)
class Sample:
    """One probe of a managed path: ``rtt_ms`` None when the probe was lost."""

    ts: float
    path: str  # user-xtr | xtr-vm
    xtr: str  # DC of the measuring xTR
    rloc: str  # the measuring xTR's RLOC (the entry)
    subject: str  # user name (user-xtr) or VM name (xtr-vm)
    rtt_ms: float | None
    peer: str = ""  # the probed locator ("" for a direct probe of the VM's EID)
    jitter_ms: float | None = None  # the agent's own jitter estimate, when it gives one
    # When the controller took it (its clock). Windows are cut on this, as the probe's own
    # ``ts`` (its send time) is older by the RTT, the timeout and the poll period: a sample
    # read after its probe's window closed counts in the next window instead of none.
    seen: float | None = None

    @property
    def at(self) -> float:
        return self.ts if self.seen is None else self.seen

    def within(self, start: float, end: float) -> bool:
        """In the window [start, end) by its probe time, or, once taken by the controller,
        (start, end] by when it was taken: a poll at the very moment a window closes feeds
        that window."""
        if self.seen is None:
            return start <= self.ts < end
        return start < self.seen <= end


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


# Typed events for handlers (the service, metrics, tests).
@dataclass(frozen=True)
class ProbeSample:
    """A new sample of a managed path, persisted (one per probe, in send-time order)."""

    source: str
    sample: Sample


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


Event = ProbeSample | SamplesIngested | WindowClosed | PathDown | SourceError
E = TypeVar("E", ProbeSample, SamplesIngested, WindowClosed, PathDown, SourceError)
H = TypeVar("H", bound=Callable[..., None])
_HANDLES = "_pacao_monitor_events"


def handles(*kinds: type[Event]) -> Callable[[H], H]:
    """Mark a method as the handler of these events; :meth:`Monitor.register` binds it."""

    def mark(fn: H) -> H:
        setattr(fn, _HANDLES, kinds)
        return fn

    return mark


class Source(Protocol):
    name: str

    async def fetch(self, cursor: Cursor | None) -> Any:
        """The agent's samples document (parsed JSON), from ``cursor`` on if it can."""
        ...


class FileSource:
    """The file an agent rewrites (its ``samples_file``): the whole buffer every time."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path

    async def fetch(self, cursor: Cursor | None) -> Any:
        return json.loads(self.path.read_text(encoding="utf-8"))


class HttpSource:
    """The agent's ``samples`` endpoint, relative to ``url`` (its HTTP endpoint), asked
    for what follows the cursor only."""

    def __init__(self, name: str, url: str, timeout_s: float = 2.0) -> None:
        self.name, self.url = name, urljoin(url, "samples")
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def fetch(self, cursor: Cursor | None) -> Any:
        params: dict[str, str | int] = {}
        if cursor is not None:
            params = {"stream": cursor.stream, "after": cursor.seq}
        r = await self._client.get(self.url, params=params)
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


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _net(text: str | None) -> Net | None:
    if not text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


class Matcher:
    """Map a probed mapping (EID prefix, locator) to the user or VM it measures."""

    def __init__(self, cfg: ControllerConfig) -> None:
        self.user_by_rloc = {u.rloc: u.name for u in cfg.users if u.rloc is not None}
        self.user_nets = [(_net(u.eid), u.name) for u in cfg.users if u.eid is not None]
        self.vm_nets = [(_net(v.eid), v.name) for v in cfg.vms]
        self.rloc_dc = cfg.rloc_owner()

    @staticmethod
    def _within(eid: str, nets: Sequence[tuple[Net | None, str]]) -> str | None:
        n = _net(eid)
        if n is None:
            return None
        for net, name in nets:
            if (
                net is not None
                and n.version == net.version
                and (n.subnet_of(net) or net.subnet_of(n))  # type: ignore[arg-type]
            ):
                return name
        return None

    def user(self, eid: str, locator: str) -> str | None:
        """A user's mapping, by its EID prefix or with the user's RLOC as locator."""
        return self.user_by_rloc.get(locator) or self._within(eid, self.user_nets)

    def vm(self, eid: str) -> str | None:
        return self._within(eid, self.vm_nets)

    def sample(
        self, xtr: str, rloc: str, rec: ProbeRecord, seen: float | None = None
    ) -> Sample | None:
        """The sample of a managed path (None for a mapping the controller does not manage):
        a VM's EID measures xTR<->VM (through the probed locator, the host DC's choice is
        made when the window is used), a user's EID or RLOC user<->xTR."""
        vm = self.vm(rec.eid)
        if vm is not None:
            subject, path = vm, XTR_VM
        else:
            user = self.user(rec.eid, rec.locator)
            if user is None:
                return None
            subject, path = user, USER_XTR
        return Sample(
            rec.ts, path, xtr, rloc, subject, rec.rtt_ms, rec.locator, rec.jitter_ms, seen
        )


def aggregate(samples: Iterable[Sample], start: float, end: float) -> list[WindowStat]:
    """Per (path, rloc, subject) over [start, end): mean RTT of answered probes, jitter as
    the mean |difference| of consecutive RTTs (RFC 3550's D, unsmoothed), availability
    = answered / sent."""
    groups: dict[tuple[str, str, str, str, str], list[Sample]] = {}
    for s in samples:
        if s.within(start, end):
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
        clock: Clock | None = None,
    ) -> None:
        self.cfg, self.store, self.sources = cfg, store, list(sources)
        self.clock: Clock = clock or SystemClock()
        self.matcher = Matcher(cfg)
        self.keep_s = keep_s if keep_s is not None else 3 * cfg.timers.s1
        self.recent: deque[Sample] = deque()
        self.cursors: dict[str, Cursor] = {}
        self.handlers: dict[type[Event], list[Callable[[Any], None]]] = {}
        self.dc_rloc = {d.name: d.rlocs[0] for d in cfg.dcs}

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        self.handlers.setdefault(kind, []).append(handler)

    def register(self, obj: object) -> None:
        """Subscribe the methods of ``obj`` marked with :func:`handles`."""
        seen: set[str] = set()
        for cls in type(obj).__mro__:
            for name, fn in vars(cls).items():
                if name in seen:
                    continue
                seen.add(name)
                for kind in getattr(fn, _HANDLES, ()):
                    self.handlers.setdefault(kind, []).append(getattr(obj, name))

    def emit(self, ev: Event) -> None:
        for fn in self.handlers.get(type(ev), ()):
            fn(ev)

    def _measuring(self, source: str, rloc: str) -> tuple[str, str] | None:
        """The measuring xTR's DC and RLOC: the document's RLOC if configured, else the
        first RLOC of the DC the source belongs to (an agent bound to a wildcard)."""
        dc = self.matcher.rloc_dc.get(rloc)
        if dc is not None:
            return dc, rloc
        if source in self.dc_rloc:
            return source, self.dc_rloc[source]
        return None

    def ingest(self, source: str, doc: Any) -> int:
        """Add a document's samples not taken yet (persisted first); returns how many."""
        try:
            batch = decode(doc)
        except InputError as exc:
            self.emit(SourceError(source, f"not a {FORMAT} document: {exc}"))
            return 0
        records, missed, self.cursors[source] = batch.since(self.cursors.get(source))
        if missed:
            what = f"{missed} samples dropped by the agent before they were read (poll faster)"
            self.emit(SourceError(source, what))
        measuring = self._measuring(source, batch.rloc)
        if measuring is None:
            self.emit(SourceError(source, f"rloc {batch.rloc} is no configured RLOC"))
            return 0
        now = self.clock.now()
        fresh = [
            s for s in (self.matcher.sample(*measuring, r, now) for r in records) if s is not None
        ]
        if not fresh:
            return 0
        fresh.sort(key=lambda s: s.ts)
        self.store.add_measurements(
            [
                {
                    "ts": s.ts,
                    "kind": "sample",
                    "path": s.path,
                    "xtr": s.xtr,
                    "subject": s.subject,
                    "rloc": s.rloc,
                    "peer": s.peer,
                    "rtt_ms": s.rtt_ms,
                    "availability": 0.0 if s.rtt_ms is None else 1.0,
                    "count": 1,
                }
                for s in fresh
            ]
        )
        self.recent.extend(fresh)
        for s in fresh:
            self.emit(ProbeSample(source, s))
        self.emit(SamplesIngested(source, len(fresh)))
        return len(fresh)

    async def poll(self) -> int:
        """Fetch every source at once (one slow agent must not delay the others' samples
        past the window they belong to), then ingest in source order."""
        docs = await asyncio.gather(
            *(src.fetch(self.cursors.get(src.name)) for src in self.sources),
            return_exceptions=True,
        )
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
                        "peer": w.peer,
                        "rtt_ms": w.rtt_ms,
                        "jitter_ms": w.jitter_ms,
                        "availability": w.availability,
                        "count": w.count,
                        "window_s": end - start,
                    }
                    for w in stats
                ]
            )
        while self.recent and self.recent[0].at < end - self.keep_s:
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
