"""xTR control agent: registration, map-cache, RLOC probing with RTT/jitter/availability.

It speaks only the control plane (UDP 4342): PACAO's controller reads every
probe's outcome (``pacao-probe-samples/1`` of :mod:`pacao.measurement`, on the
HTTP endpoint or in a file) to rank entry DCs, like the OpenLISP node of the
paper. Every time it stamps or schedules comes from its :class:`pacao.clock.Clock`.

* Registers its database (EID prefixes with locators, priority, weight) with
  every map-server every `register_interval` seconds (HMAC signed, want
  map-notify); Map-Notify acknowledgements are matched by nonce.
* Map-cache: longest-prefix match, per-entry TTL (Record TTL minutes),
  bounded size with least-recently-used eviction.  A miss (`resolve()`, or a
  `watch` EID in the config) sends an ECM Map-Request to a map-resolver,
  rate-limited by a token bucket and de-duplicated per EID, retried on timeout.
* Answers Map-Requests for its database (forwarded ones, and RLOC-probes with
  the P bit set in the reply), acknowledges unsolicited Map-Notifies, and on an
  SMR re-requests the mapping (SMR-invoked).
* Probes every locator of every cached mapping every `probe.interval` s (S'''
  in the paper): a Map-Request with the P bit to RLOC:control_port.  A reply is
  matched by nonce and source address: RTT; jitter with the RFC 3550 estimator
  J += (|D| - J) / 16 over consecutive RTTs; a locator is down after
  `probe.down_after` consecutive unanswered probes and up again on the next
  reply.  Replies with unknown nonces are ignored and counted.  Each probe's
  outcome (send time, RTT or loss) is kept in a bounded, numbered buffer
  (``Xtr.samples``) that readers take from with a cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import random
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BeforeValidator, ConfigDict, Field

from pacao.clock import Clock, SystemClock
from pacao.errors import InputError
from pacao.lisp import auth
from pacao.lisp.address import EidPrefix
from pacao.lisp.config import parse_hostport
from pacao.lisp.lpm import PrefixTable
from pacao.lisp.mapserver import TokenBucket, atomic_write_json
from pacao.lisp.messages import (
    LISP_CONTROL_PORT,
    ChangePriority,
    EncapsulatedControlMessage,
    Locator,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    Message,
    RequestRecord,
    decode_message,
)
from pacao.lisp.show import to_jsonable
from pacao.lisp.udp import UdpEndpoint, open_udp
from pacao.lisp.wire import LispDecodeError
from pacao.measurement import Cursor, SampleBuffer, encode
from pacao.validate import Schema, in_range, integer_in, parse_model, rule

log = logging.getLogger("pacao.lisp.xtr")
IP = IPv4Address | IPv6Address

# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class MappingAdded:
    prefix: EidPrefix
    locators: tuple[Locator, ...]
    ttl: int


@dataclass(frozen=True)
class MappingRemoved:
    prefix: EidPrefix
    reason: str  # "expired", "evicted", "negative"


@dataclass(frozen=True)
class NegativeMapping:
    prefix: EidPrefix
    action: int
    ttl: int


@dataclass(frozen=True)
class ProbeResult:
    prefix: EidPrefix
    locator: str
    rtt: float
    jitter: float


@dataclass(frozen=True)
class LocatorDown:
    prefix: EidPrefix
    locator: str
    lost: int


@dataclass(frozen=True)
class LocatorUp:
    prefix: EidPrefix
    locator: str
    rtt: float


@dataclass(frozen=True)
class RegistrationAcked:
    map_server: str
    nonce: int
    rtt: float


@dataclass(frozen=True)
class PrioritiesChanged:
    """A cached mapping's locator priorities/weights changed in place (CHANGE-PRIORITY)."""

    prefix: EidPrefix
    locators: tuple[Locator, ...]


@dataclass(frozen=True)
class ChangeAcked:
    """An ITR acknowledged our CHANGE-PRIORITY; `elapsed` since set_priorities()."""

    itr: str
    nonce: int
    elapsed: float


@dataclass(frozen=True)
class ChangeReport:
    """What set_priorities() did: the ITRs told, and by which means."""

    prefix: EidPrefix
    locators: tuple[Locator, ...]
    itrs: tuple[tuple[str, int], ...]
    method: str
    nonce: int


Event = (
    PrioritiesChanged
    | ChangeAcked
    | MappingAdded
    | MappingRemoved
    | NegativeMapping
    | ProbeResult
    | LocatorDown
    | LocatorUp
    | RegistrationAcked
)

# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MapServerRef:
    address: tuple[str, int]
    key: str
    alg_id: int = auth.ALG_HMAC_SHA256
    key_id: int = 0


@dataclass(frozen=True)
class DatabaseEntry:
    prefix: EidPrefix
    locators: tuple[Locator, ...]
    ttl: int = 1440


@dataclass(frozen=True)
class XtrConfig:
    listen: tuple[str, int]
    rloc: IP
    map_servers: tuple[MapServerRef, ...] = ()
    map_resolvers: tuple[tuple[str, int], ...] = ()
    database: tuple[DatabaseEntry, ...] = ()
    watch: tuple[EidPrefix, ...] = ()
    register_interval: float = 60.0
    proxy_reply: bool = True
    control_port: int = LISP_CONTROL_PORT
    cache_size: int = 10000
    request_rate: float = 10.0
    request_burst: int = 20
    request_timeout: float = 1.0
    request_retries: int = 3
    probe_interval: float = 10.0
    probe_timeout: float = 2.0
    down_after: int = 3
    stats_file: Path | None = None
    stats_interval: float = 1.0
    samples_file: Path | None = None
    samples_kept: int = 10000
    http: tuple[str, int] | None = None
    change_key: str | None = None
    switch_method: str = "both"
    xtr_id: bytes | None = None  # None: derived from the bound address and the RLOC


class _Part(Schema):
    """One mapping of the xTR file (docs/lisp.md); the hand checks below give each value's
    words, so a wrong value reads as it did before the file had a schema."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True
    )


def _number(low: float, high: float) -> BeforeValidator:
    """A number in [low, high]; the integer settings are truncated after parsing."""
    allowed = f"expected a number in [{low}, {high}]"
    return rule(lambda v: in_range("", v, allowed, low=low, high=high))


_BYTE = rule(lambda v: integer_in("", v, 0, 255, "expected an integer in 0..255"))


def _ip(value: object) -> IP:
    try:
        return ip_address(str(value))
    except ValueError:
        raise InputError("", value, "expected an IP address") from None


def _hostport(default_port: int) -> BeforeValidator:
    return rule(lambda v: parse_hostport("", v, default_port))


def _one_of(*choices: str) -> BeforeValidator:
    def check(value: object) -> object:
        if value not in choices:
            raise InputError("", value, f"allowed: {', '.join(choices)}")
        return value

    return rule(check)


def _prefix(what: str) -> BeforeValidator:
    def check(value: object) -> EidPrefix:
        try:
            return EidPrefix.parse(str(value))
        except ValueError as exc:
            raise InputError("", value, f"not an {what} ({exc})") from None

    return rule(check)


def _secret(value: object) -> object:
    if value is not None and (not isinstance(value, str) or not value):
        raise InputError("", value, "expected a non-empty string")
    return value


def _non_empty_list(value: object) -> object:
    if not isinstance(value, list) or not value:
        raise InputError("", value, "expected a non-empty list")
    return value


def _true_or_false(value: object) -> object:
    if not isinstance(value, bool):
        raise InputError("", value, "expected true or false")
    return value


def _xtr_id(value: object) -> bytes | None:
    if value is None:
        return None
    try:
        xtr_id = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        xtr_id = b""
    if len(xtr_id) != 16:
        raise InputError("", value, "expected 32 hexadecimal digits (128 bits)")
    return xtr_id


def _checked_when_absent() -> Any:
    """A required key whose absence its check words (validated from its None default)."""
    return Field(None, validate_default=True)


class _LocatorDoc(_Part):
    unknown_key: ClassVar[str] = "allowed: address, priority, weight"
    missing: ClassVar[str | None] = "expected {address, priority, weight}"
    not_mapping: ClassVar[str | None] = "expected {address, priority, weight}"

    address: Annotated[IP, rule(_ip)]
    priority: Annotated[int, _BYTE] = 1
    weight: Annotated[int, _BYTE] = 100


class _DatabaseDoc(_Part):
    whole: ClassVar[bool] = True
    not_mapping: ClassVar[str | None] = "expected {prefix, locators, ttl}"

    prefix: Annotated[EidPrefix, _prefix("EID prefix")]
    locators: Annotated[list[_LocatorDoc], rule(_non_empty_list)] = _checked_when_absent()
    ttl: Annotated[float, _number(0, 2**32 - 1)] = 1440.0


class _MapServerDoc(_Part):
    whole: ClassVar[bool] = True
    not_mapping: ClassVar[str | None] = (
        "expected {address: HOST:PORT, key: SECRET, alg: sha1|sha256}"
    )

    key: Annotated[str, rule(_secret)]
    alg: Annotated[Literal["sha1", "sha256"], _one_of("sha1", "sha256")] = "sha256"
    key_id: Annotated[int, _BYTE] = 0
    address: Annotated[tuple[str, int], _hostport(LISP_CONTROL_PORT)] = _checked_when_absent()


class _SubDoc(_Part):
    not_mapping: ClassVar[str | None] = "expected a mapping"


class _MapCacheDoc(_SubDoc):
    max_entries: Annotated[float, _number(1, 10_000_000)] = 10000.0


class _MapRequestDoc(_SubDoc):
    rate: Annotated[float, _number(0.001, 1e6)] = 10.0
    burst: Annotated[float, _number(1, 1e6)] = 20.0
    timeout: Annotated[float, _number(0.001, 60)] = 1.0
    retries: Annotated[float, _number(0, 100)] = 3.0


class _ProbeDoc(_SubDoc):
    interval: Annotated[float, _number(0.01, 86400)] = 10.0
    timeout: Annotated[float, _number(0.001, 3600)] = 2.0
    down_after: Annotated[float, _number(1, 1000)] = 3.0
    samples_kept: Annotated[float, _number(1, 10_000_000)] = 10000.0


class _ChangePriorityDoc(_Part):
    whole: ClassVar[bool] = True
    not_mapping: ClassVar[str | None] = "expected {key: SECRET, method: ...}"

    key: Annotated[str | None, rule(_secret)] = None
    #: None: "both" with a key, else "smr"
    method: Annotated[
        Literal["smr", "change-priority", "both"] | None,
        _one_of("smr", "change-priority", "both"),
    ] = None


_FILE = Field(min_length=1, description="a file path or null")


class XtrDoc(_Part):
    """The xTR file's schema (docs/lisp.md): unknown keys are reported first."""

    not_mapping: ClassVar[str | None] = "expected a mapping"
    keys_first: ClassVar[bool] = True

    listen: Annotated[tuple[str, int], _hostport(LISP_CONTROL_PORT)] = (
        "127.0.0.1",
        LISP_CONTROL_PORT,
    )
    #: None: the listen address
    rloc: Annotated[IP | None, rule(_ip)] = None
    map_servers: list[_MapServerDoc] | None = None
    map_resolvers: list[Annotated[tuple[str, int], _hostport(LISP_CONTROL_PORT)]] | None = None
    database: list[_DatabaseDoc] | None = None
    watch: list[Annotated[EidPrefix, _prefix("EID or prefix")]] | None = None
    map_cache: _MapCacheDoc | None = None
    map_request: _MapRequestDoc | None = None
    probe: _ProbeDoc | None = None
    stats_file: Annotated[str | None, _FILE] = None
    samples_file: Annotated[str | None, _FILE] = None
    http: Annotated[
        tuple[str, int] | None, rule(lambda v: parse_hostport("", v, 0) if v else None)
    ] = None
    change_priority: _ChangePriorityDoc | None = None
    proxy_reply: Annotated[bool, rule(_true_or_false)] = True
    xtr_id: Annotated[bytes | None, rule(_xtr_id)] = None
    register_interval: Annotated[float, _number(0.01, 86400)] = 60.0
    control_port: Annotated[float, _number(1, 65535)] = float(LISP_CONTROL_PORT)


def _path(value: str | None, base: Path | None) -> Path | None:
    """A file name of the config, relative to the config's directory."""
    if value is None:
        return None
    path = Path(value)
    return base / path if base is not None and not path.is_absolute() else path


def xtr_config_from_dict(doc: Any, base: Path | None = None) -> XtrConfig:
    """Validate the xTR YAML document (docs/lisp.md): the schema, then the checks that
    span keys."""
    d = parse_model(XtrDoc, doc)
    resolvers = tuple(d.map_resolvers or ())
    watch = tuple(d.watch or ())
    if watch and not resolvers:
        raise InputError("map_resolvers", None, "required when `watch` lists EIDs")
    change = d.change_priority or _ChangePriorityDoc()
    method = change.method or ("both" if change.key else "smr")
    if method != "smr" and change.key is None:
        raise InputError("change_priority.key", None, f"required for method {method}")
    cache = d.map_cache or _MapCacheDoc()
    req = d.map_request or _MapRequestDoc()
    probe = d.probe or _ProbeDoc()
    return XtrConfig(
        listen=d.listen,
        rloc=d.rloc or ip_address(d.listen[0]),
        map_servers=tuple(
            MapServerRef(ms.address, ms.key, auth.ALG_NAMES[ms.alg], ms.key_id)
            for ms in d.map_servers or ()
        ),
        map_resolvers=resolvers,
        database=tuple(
            DatabaseEntry(
                e.prefix,
                tuple(Locator(lo.address, lo.priority, lo.weight) for lo in e.locators),
                int(e.ttl),
            )
            for e in d.database or ()
        ),
        watch=watch,
        register_interval=d.register_interval,
        proxy_reply=d.proxy_reply,
        control_port=int(d.control_port),
        cache_size=int(cache.max_entries),
        request_rate=req.rate,
        request_burst=int(req.burst),
        request_timeout=req.timeout,
        request_retries=int(req.retries),
        probe_interval=probe.interval,
        probe_timeout=probe.timeout,
        down_after=int(probe.down_after),
        stats_file=_path(d.stats_file, base),
        samples_file=_path(d.samples_file, base),
        samples_kept=int(probe.samples_kept),
        http=d.http,
        change_key=change.key,
        switch_method=method,
        xtr_id=d.xtr_id,
    )


def load_xtr_config(path: Path) -> XtrConfig:
    from pacao.io import load_document

    return xtr_config_from_dict(load_document(path), path.parent)


# ---------------------------------------------------------------------------- state


@dataclass
class LocatorState:
    """Probe statistics of one RLOC of one cached mapping."""

    locator: Locator
    up: bool = True
    rtt: float | None = None
    jitter: float = 0.0
    lost: int = 0
    probes: int = 0
    replies: int = 0
    last_reply: float | None = None

    def observe(self, rtt: float) -> None:
        """RFC 3550 §6.4.1 interarrival jitter applied to consecutive RTTs."""
        if self.rtt is not None:
            self.jitter += (abs(rtt - self.rtt) - self.jitter) / 16.0
        self.rtt = rtt
        self.replies += 1
        self.lost = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "address": str(self.locator.address),
            "priority": self.locator.priority,
            "weight": self.locator.weight,
            "up": self.up,
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3),
            "jitter_ms": round(self.jitter * 1000, 3),
            "lost": self.lost,
            "probes": self.probes,
            "replies": self.replies,
        }


@dataclass
class CacheEntry:
    prefix: EidPrefix
    record: MappingRecord
    expires_at: float
    locators: list[LocatorState] = field(default_factory=list)
    probe_template: bytes = b""  # the RLOC-probe for this prefix, nonce bytes 4-11 patched

    @property
    def negative(self) -> bool:
        return not self.record.locators


class MapCache:
    """LPM map-cache with TTLs and an LRU bound."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.table: PrefixTable[CacheEntry] = PrefixTable()
        self.lru: OrderedDict[EidPrefix, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.lru)

    def lookup(self, eid: EidPrefix, now: float) -> CacheEntry | None:
        hit = self.table.lookup(eid)
        if hit is None:
            return None
        prefix, entry = hit
        if entry.expires_at <= now:
            return None
        self.lru.move_to_end(prefix)
        return entry

    def put(self, entry: CacheEntry) -> list[CacheEntry]:
        """Insert or replace; returns the entries evicted to respect the bound."""
        old = self.table.get(entry.prefix)
        if old is not None and old.record.locators == entry.record.locators:
            entry.locators = old.locators  # keep probe history across refreshes
        self.table.insert(entry.prefix, entry)
        self.lru[entry.prefix] = None
        self.lru.move_to_end(entry.prefix)
        evicted = []
        while len(self.lru) > self.max_entries:
            victim, _ = self.lru.popitem(last=False)
            gone = self.table.remove(victim)
            if gone is not None:
                evicted.append(gone)
        return evicted

    def remove(self, prefix: EidPrefix) -> CacheEntry | None:
        self.lru.pop(prefix, None)
        return self.table.remove(prefix)

    def expired(self, now: float) -> list[CacheEntry]:
        dead = [e for _, e in self.table.items() if e.expires_at <= now]
        for e in dead:
            self.remove(e.prefix)
        return dead

    def entries(self) -> list[CacheEntry]:
        return [e for _, e in self.table.items()]


@dataclass
class _Pending:
    kind: str  # "request", "probe", "register", "change"
    sent: float  # Unix time (the sample's timestamp)
    started: float  # the clock's monotonic time: RTTs and timeouts
    eid: EidPrefix | None = None
    locator: LocatorState | None = None
    entry: CacheEntry | None = None
    target: str = ""
    tries: int = 1
    smr: EidPrefix | None = None  # send SMRs for this prefix once the registration is acked


class Xtr:
    """The xTR control agent (protocol handler + schedulers)."""

    def __init__(self, config: XtrConfig, clock: Clock | None = None) -> None:
        self.config = config
        #: every timestamp, schedule and RTT of the agent (tests pass a ManualClock)
        self.clock: Clock = clock or SystemClock()
        self.stats: Counter[str] = Counter()
        self.cache = MapCache(config.cache_size)
        self.database: PrefixTable[DatabaseEntry] = PrefixTable()
        self.db: dict[EidPrefix, DatabaseEntry] = {}
        for d in config.database:
            self.database.insert(d.prefix, d)
            self.db[d.prefix] = d
        # ITRs seen asking for / probing each database prefix: who to tell about changes
        self.itr_peers: dict[EidPrefix, OrderedDict[tuple[str, int], float]] = {}
        self.limiter = TokenBucket(config.request_rate, config.request_burst)
        self.pending: dict[int, _Pending] = {}
        self.resolving: dict[EidPrefix, int] = {}
        self.events: asyncio.Queue[Event] = asyncio.Queue(maxsize=10000)
        self.callbacks: list[Callable[[Event], None]] = []
        self.transport: UdpEndpoint | None = None
        self.local: tuple[str, int] = config.listen
        self.registered: dict[str, float] = {}
        #: every probe's outcome, for the controller (``pacao-probe-samples/1``)
        self.samples = SampleBuffer(str(config.rloc), config.samples_kept)
        self._probe_heap: list[tuple[float, int, EidPrefix, int]] = []
        self._seq = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._register_nonce = 0

    # ------------------------------------------------------------------ plumbing
    def connection_made(self, transport: UdpEndpoint) -> None:
        self.transport = transport
        sockname = transport.get_extra_info("sockname")
        self.local = (sockname[0], sockname[1])

    def emit(self, event: Event) -> None:
        for cb in self.callbacks:
            try:
                cb(event)
            except Exception:
                log.exception("event callback failed")
        try:
            self.events.put_nowait(event)
        except asyncio.QueueFull:
            self.stats["events_dropped"] += 1

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is None:
            return
        try:
            self.transport.sendto(data, addr)
            self.stats["sent"] += 1
        except (OSError, ValueError):
            self.stats["send_errors"] += 1

    def new_nonce(self) -> int:
        while True:
            n = secrets.randbits(64)
            if n and n not in self.pending:
                return n

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        peer = (str(addr[0]), int(addr[1]))
        self.stats["received"] += 1
        try:
            msg = decode_message(data)
        except LispDecodeError:
            self.stats["malformed"] += 1
            return
        try:
            self.dispatch(msg, data, peer)
        except Exception:
            self.stats["handler_errors"] += 1
            log.exception("error handling a message from %s", peer)

    def dispatch(self, msg: Message, data: bytes, peer: tuple[str, int]) -> None:
        if isinstance(msg, MapReply):
            self.on_map_reply(msg, peer)
        elif isinstance(msg, EncapsulatedControlMessage) and isinstance(msg.message, MapRequest):
            self.on_map_request(msg.message, peer, msg.udp.source_port)
        elif isinstance(msg, MapRequest):
            self.on_map_request(msg, peer, peer[1])
        elif type(msg) is MapNotify:
            self.on_map_notify(msg, data, peer)
        elif isinstance(msg, ChangePriority):
            self.on_change_priority(msg, data, peer)
        else:
            self.stats["ignored"] += 1

    # ------------------------------------------------------------------ registration
    def register_nonce(self) -> int:
        """A Map-Register nonce greater than every earlier one (RFC 9301 section 5.6).

        Unix seconds in the upper 32 bits, a counter in the lower 32: strictly
        increasing in this process even if the clock steps back, and across
        restarts as long as the clock does not go back, with nothing to store."""
        nonce = max(int(self.clock.now()) << 32, self._register_nonce + 1)
        while nonce in self.pending:
            nonce += 1
        self._register_nonce = nonce
        return nonce

    @property
    def xtr_id(self) -> bytes:
        """The 128-bit xTR-ID sent in Map-Registers: the map-server tracks nonces per
        (site, xTR-ID), so several xTRs of one site do not look like replays of each other.
        Configured, or derived from the bound control address and the RLOC (stable
        across restarts)."""
        if self.config.xtr_id is not None:
            return self.config.xtr_id
        seed = f"pacao-xtr {self.local[0]} {self.local[1]} {self.config.rloc}".encode()
        return hashlib.sha256(seed).digest()[:16]

    def map_register(self, ms: MapServerRef, nonce: int) -> bytes:
        records = tuple(
            MappingRecord.for_prefix(d.prefix, ttl=d.ttl, locators=d.locators, authoritative=True)
            for d in self.db.values()
        )
        msg = MapRegister(
            nonce=nonce,
            records=records,
            key_id=ms.key_id,
            proxy_reply=self.config.proxy_reply,
            want_map_notify=True,
            xtr_id_present=True,
            xtr_id=self.xtr_id,
            site_id=bytes(8),
        )
        return auth.sign(msg, ms.key, ms.alg_id).to_bytes()

    def register_now(self, smr: EidPrefix | None = None) -> None:
        if not self.db:
            return
        for ms in self.config.map_servers:
            nonce = self.register_nonce()
            self.pending[nonce] = _Pending(
                "register",
                self.clock.now(),
                self.clock.monotonic(),
                target=f"{ms.address[0]}:{ms.address[1]}",
                smr=smr,
            )
            self.send(self.map_register(ms, nonce), ms.address)
            self.stats["map_register_sent"] += 1

    def on_map_notify(self, msg: MapNotify, data: bytes, peer: tuple[str, int]) -> None:
        pend = self.pending.get(msg.nonce)
        if pend is not None and pend.kind == "register":
            # the answer to our Map-Register: the key of the map-server we sent it to,
            # whatever source address its Map-Notify has (lispers.net sends it from
            # the address the kernel picks, not necessarily the one we registered to)
            servers = [ms for ms in self.config.map_servers
                       if f"{ms.address[0]}:{ms.address[1]}" == pend.target]  # fmt: skip
        else:
            servers = [ms for ms in self.config.map_servers if ms.address[0] == peer[0]]
        key = servers[0].key if servers else None
        if key is None or not auth.verify(data, key):
            self.stats["bad_auth"] += 1
            return
        if pend is not None and pend.kind == "register":
            del self.pending[msg.nonce]
            rtt = self.clock.monotonic() - pend.started
            self.registered[pend.target] = self.clock.now()
            self.stats["map_notify"] += 1
            self.emit(RegistrationAcked(pend.target, msg.nonce, rtt))
            if pend.smr is not None:
                self.send_smrs(pend.smr)
            return
        # unsolicited (mapping change): acknowledge, and refresh what we cache
        ack = MapNotifyAck(nonce=msg.nonce, records=msg.records, key_id=msg.key_id)
        self.send(auth.sign(ack, key, msg.alg_id or auth.ALG_HMAC_SHA256).to_bytes(), peer)
        self.stats["map_notify_ack_sent"] += 1
        for rec in msg.records:
            with contextlib.suppress(ValueError):
                self.install(rec)

    # ------------------------------------------------------------------ Map-Request in
    def on_map_request(self, req: MapRequest, peer: tuple[str, int], port: int) -> None:
        if req.smr:
            self.stats["smr_received"] += 1
            for rr in req.records:
                with contextlib.suppress(ValueError):
                    if self.cache.table.lookup(rr.prefix) is not None:
                        self.resolve(rr.prefix, smr_invoked=True)
            return
        records = []
        for rr in req.records:
            try:
                hit = self.database.lookup(rr.prefix)
            except ValueError:
                continue
            if hit is None:
                continue
            d = hit[1]
            self.remember_itr(d.prefix, req, peer, port)
            locs = tuple(replace(x, local=self._is_local(x), probed=req.probe) for x in d.locators)
            records.append(
                MappingRecord.for_prefix(d.prefix, ttl=d.ttl, locators=locs, authoritative=True)
            )
        if not records:
            self.stats["request_not_ours"] += 1
            return
        reply = MapReply(nonce=req.nonce, records=tuple(records), probe=req.probe)
        dest = peer[0]
        if not req.probe:  # forwarded: answer the ITR-RLOC
            for r in req.itr_rlocs:
                if isinstance(r, IPv4Address | IPv6Address) and (r.version == 6) == (
                    ":" in self.local[0]
                ):
                    dest = str(r)
                    break
        self.send(reply.to_bytes(), (dest, port))
        self.stats["probe_replied" if req.probe else "map_reply_sent"] += 1

    def remember_itr(
        self, prefix: EidPrefix, req: MapRequest, peer: tuple[str, int], port: int
    ) -> None:
        """Probes come from the ITR's control socket; forwarded requests name its ITR-RLOC."""
        addr = peer[0]
        if not req.probe and req.itr_rlocs and req.itr_rlocs[0] is not None:
            addr = str(req.itr_rlocs[0])
        peers = self.itr_peers.setdefault(prefix, OrderedDict())
        peers[(addr, port)] = self.clock.now()
        peers.move_to_end((addr, port))
        while len(peers) > 4096:
            peers.popitem(last=False)

    def _is_local(self, loc: Locator) -> bool:
        return str(loc.address) == self.local[0] or loc.address == self.config.rloc

    # ------------------------------------------------------------------ priority changes
    def set_priorities(
        self,
        prefix: EidPrefix,
        priorities: Mapping[str, int],
        weights: Mapping[str, int] | None = None,
        method: str | None = None,
    ) -> ChangeReport:
        """Change the priorities (and weights) of one database prefix's locators.

        The prefix is re-registered at once; ITRs known to cache it are told
        by SMR (after the map-server acknowledged the new registration, so their
        SMR-invoked Map-Request gets the new mapping) and/or by an authenticated
        CHANGE-PRIORITY message that they apply immediately.
        """
        method = method or self.config.switch_method
        if method not in ("smr", "change-priority", "both"):
            raise InputError("method", method, "allowed: smr, change-priority, both")
        entry = self.db.get(prefix)
        if entry is None:
            raise InputError("prefix", str(prefix), "not in this xTR's database")
        known = {str(x.address) for x in entry.locators}
        for addr in [*priorities, *(weights or {})]:
            if addr not in known:
                raise InputError("locator", addr, f"not a locator of {prefix}: {sorted(known)}")
        for addr, value in [*priorities.items(), *(weights or {}).items()]:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise InputError(f"locator {addr}", value, "expected an integer in 0..255")
        locs = tuple(
            replace(
                x,
                priority=priorities.get(str(x.address), x.priority),
                weight=(weights or {}).get(str(x.address), x.weight),
            )
            for x in entry.locators
        )
        new = replace(entry, locators=locs)
        self.db[prefix] = new
        self.database.insert(prefix, new)
        itrs = tuple(self.itr_peers.get(prefix, {}))
        use_smr = method in ("smr", "both")
        self.register_now(smr=prefix if use_smr else None)
        nonce = 0
        if method in ("change-priority", "both") and itrs:
            key = self.config.change_key
            if key is None:
                raise InputError("change_priority.key", None, "required to send CHANGE-PRIORITY")
            nonce = self.new_nonce()
            rec = MappingRecord.for_prefix(prefix, ttl=new.ttl, locators=locs, authoritative=True)
            msg = auth.sign(ChangePriority(nonce=nonce, records=(rec,)), key, auth.ALG_HMAC_SHA256)
            data = msg.to_bytes()
            self.pending[nonce] = _Pending(
                "change", self.clock.now(), self.clock.monotonic(), target=str(prefix)
            )
            for itr in itrs:
                self.send(data, itr)
            self.stats["change_priority_sent"] += len(itrs)
        self.stats["set_priorities"] += 1
        return ChangeReport(prefix, locs, itrs, method, nonce)

    def send_smrs(self, prefix: EidPrefix) -> None:
        """SMR (Map-Request with S) to every ITR known to cache `prefix`."""
        eid, _ = prefix.to_wire()
        for itr in self.itr_peers.get(prefix, {}):
            req = MapRequest(
                nonce=self.new_nonce(),
                records=(RequestRecord.for_prefix(prefix),),
                itr_rlocs=(self.config.rloc,),
                source_eid=eid,
                smr=True,
            )
            self.send(req.to_bytes(), itr)
            self.stats["smr_sent"] += 1

    def on_change_priority(self, msg: ChangePriority, data: bytes, peer: tuple[str, int]) -> None:
        key = self.config.change_key
        if key is None or not auth.verify(data, key):
            self.stats["bad_auth"] += 1
            return
        if msg.ack:
            pend = self.pending.get(msg.nonce)
            if pend is None or pend.kind != "change":
                self.stats["unknown_nonce"] += 1
                return
            self.stats["change_priority_acked"] += 1
            self.emit(
                ChangeAcked(
                    f"{peer[0]}:{peer[1]}", msg.nonce, self.clock.monotonic() - pend.started
                )
            )
            return
        self.stats["change_priority_received"] += 1
        now = self.clock.now()
        for rec in msg.records:
            try:
                prefix = rec.prefix
            except ValueError:
                continue
            entry = self.cache.table.get(prefix)
            if entry is None or entry.expires_at <= now:
                continue
            self.update_locators(entry, rec.locators)
            self.emit(PrioritiesChanged(prefix, rec.locators))
        ack = ChangePriority(nonce=msg.nonce, records=(), ack=True)
        self.send(auth.sign(ack, key, msg.alg_id or auth.ALG_HMAC_SHA256).to_bytes(), peer)

    def update_locators(self, entry: CacheEntry, locators: tuple[Locator, ...]) -> None:
        """New locator set for a cached entry, keeping probe statistics per address."""
        old = {str(x.locator.address): x for x in entry.locators}
        states = []
        for loc in locators:
            st = old.get(str(loc.address))
            if st is None:
                st = LocatorState(loc)
            else:
                st.locator = loc
            states.append(st)
        grew = len(states) != len(entry.locators)
        entry.locators = states
        entry.record = replace(entry.record, locators=locators)
        if grew:
            self.schedule_probes(entry)

    # ------------------------------------------------------------------ resolution
    def lookup(self, eid: EidPrefix) -> CacheEntry | None:
        """Map-cache lookup; a miss starts (rate-limited) resolution."""
        entry = self.cache.lookup(eid, self.clock.now())
        if entry is None:
            self.stats["cache_miss"] += 1
            self.resolve(eid)
        return entry

    def resolve(self, eid: EidPrefix, smr_invoked: bool = False, tries: int = 1) -> bool:
        """Send an ECM Map-Request for `eid` unless one is in flight or the rate is exceeded."""
        if not self.config.map_resolvers:
            return False
        if eid in self.resolving and tries == 1:
            return False
        if not self.limiter.allow("map-request", self.clock.now()):
            self.stats["request_rate_limited"] += 1
            return False
        nonce = self.new_nonce()
        req = MapRequest(
            nonce=nonce,
            records=(RequestRecord.for_prefix(eid),),
            itr_rlocs=(self.config.rloc,),
            smr_invoked=smr_invoked,
        )
        dst = eid.network.network_address
        src: IP = self.config.rloc
        if src.version != dst.version:  # the inner source must match the EID family
            src = IPv6Address("::1") if dst.version == 6 else IPv4Address("127.0.0.1")
        ecm = EncapsulatedControlMessage.wrap(req, src, dst, self.local[1])
        resolver = self.config.map_resolvers[(tries - 1) % len(self.config.map_resolvers)]
        self.pending[nonce] = _Pending(
            "request", self.clock.now(), self.clock.monotonic(), eid=eid, tries=tries
        )
        self.resolving[eid] = nonce
        self.send(ecm.to_bytes(), resolver)
        self.stats["map_request_sent"] += 1
        return True

    def install(self, rec: MappingRecord) -> CacheEntry:
        prefix = rec.prefix
        now = self.clock.now()
        entry = CacheEntry(
            prefix, rec, now + rec.ttl * 60.0, [LocatorState(x) for x in rec.locators]
        )
        for gone in self.cache.put(entry):
            self.emit(MappingRemoved(gone.prefix, "evicted"))
            self.stats["cache_evicted"] += 1
        if rec.locators:
            self.emit(MappingAdded(prefix, rec.locators, rec.ttl))
            self.schedule_probes(entry)
        else:
            self.emit(NegativeMapping(prefix, rec.action, rec.ttl))
        return entry

    def on_map_reply(self, msg: MapReply, peer: tuple[str, int]) -> None:
        pend = self.pending.pop(msg.nonce, None)
        if pend is None:
            self.stats["unknown_nonce"] += 1
            return
        if pend.kind == "probe":
            if pend.locator is None or str(pend.locator.locator.address) != peer[0]:
                self.pending[msg.nonce] = pend  # not from the probed RLOC: keep waiting
                self.stats["probe_wrong_source"] += 1
                return
            self.on_probe_reply(pend, self.clock.monotonic() - pend.started)
            return
        if pend.kind != "request":
            self.stats["unexpected_reply"] += 1
            return
        if pend.eid is not None and self.resolving.get(pend.eid) == msg.nonce:
            del self.resolving[pend.eid]
        self.stats["map_reply"] += 1
        for rec in msg.records:
            with contextlib.suppress(ValueError):
                self.install(rec)

    # ------------------------------------------------------------------ probing
    def schedule_probes(self, entry: CacheEntry) -> None:
        """Spread the locators' first probes over one interval (no synchronised bursts)."""
        now = self.clock.now()
        for i in range(len(entry.locators)):
            due = now + random.random() * min(self.config.probe_interval, 1.0) * 0.1
            heapq.heappush(self._probe_heap, (due, next(self._seq), entry.prefix, i))

    def probe_due(self, now: float) -> int:
        """Send the probes that are due; returns how many were sent."""
        sent = 0
        heap = self._probe_heap
        while heap and heap[0][0] <= now:
            _, _, prefix, idx = heapq.heappop(heap)
            entry = self.cache.table.get(prefix)
            if entry is None or idx >= len(entry.locators):
                continue  # evicted or replaced meanwhile
            self.send_probe(entry, entry.locators[idx])
            sent += 1
            heapq.heappush(heap, (now + self.config.probe_interval, next(self._seq), prefix, idx))
        return sent

    def send_probe(self, entry: CacheEntry, loc: LocatorState) -> None:
        nonce = self.new_nonce()
        if not entry.probe_template:  # encoded once per mapping; only the nonce changes
            entry.probe_template = MapRequest(
                nonce=0,
                records=(RequestRecord.for_prefix(entry.prefix),),
                itr_rlocs=(self.config.rloc,),
                probe=True,
            ).to_bytes()
        t = entry.probe_template
        self.pending[nonce] = _Pending(
            "probe", self.clock.now(), self.clock.monotonic(), locator=loc, entry=entry
        )
        loc.probes += 1
        data = t[:4] + nonce.to_bytes(8, "big") + t[12:]
        self.send(data, (str(loc.locator.address), self.config.control_port))
        self.stats["probe_sent"] += 1

    def on_probe_reply(self, pend: _Pending, rtt: float) -> None:
        loc, entry = pend.locator, pend.entry
        assert loc is not None and entry is not None
        was_up = loc.up
        loc.observe(rtt)
        loc.up = True
        loc.last_reply = self.clock.now()
        self.stats["probe_reply"] += 1
        name = str(loc.locator.address)
        self.samples.add(pend.sent, str(entry.prefix), name, rtt * 1000, loc.jitter * 1000)
        if not was_up:
            self.emit(LocatorUp(entry.prefix, name, rtt))
        self.emit(ProbeResult(entry.prefix, name, rtt, loc.jitter))

    def timeouts(self, mono: float) -> None:
        """Expire unanswered probes, requests and registrations (``mono``: the clock's
        monotonic time)."""
        for nonce, pend in list(self.pending.items()):
            limit = (
                self.config.probe_timeout if pend.kind == "probe" else self.config.request_timeout
            )
            if mono - pend.started < limit:
                continue
            del self.pending[nonce]
            if pend.kind == "probe" and pend.locator is not None and pend.entry is not None:
                loc = pend.locator
                loc.lost += 1
                self.stats["probe_lost"] += 1
                addr = str(loc.locator.address)
                self.samples.add(pend.sent, str(pend.entry.prefix), addr, None)
                if loc.up and loc.lost >= self.config.down_after:
                    loc.up = False
                    self.emit(LocatorDown(pend.entry.prefix, addr, loc.lost))
            elif pend.kind == "request" and pend.eid is not None:
                self.stats["request_timeout"] += 1
                if self.resolving.get(pend.eid) == nonce:
                    del self.resolving[pend.eid]
                if pend.tries <= self.config.request_retries:
                    self.resolve(pend.eid, tries=pend.tries + 1)
            elif pend.kind == "register":
                self.stats["register_timeout"] += 1

    # ------------------------------------------------------------------ views
    def snapshot(self) -> dict[str, Any]:
        now = self.clock.now()
        cache = []
        for e in sorted(self.cache.entries(), key=lambda e: str(e.prefix)):
            cache.append(
                {
                    "prefix": str(e.prefix),
                    "ttl": e.record.ttl,
                    "expires_in": round(e.expires_at - now, 3),
                    "action": e.record.action,
                    "locators": [x.to_json() for x in e.locators],
                }
            )
        return {
            "time": now,
            "listen": f"{self.local[0]}:{self.local[1]}",
            "map_cache": cache,
            "database": [
                {"prefix": str(d.prefix), "ttl": d.ttl, "locators": to_jsonable(d.locators)}
                for d in self.db.values()
            ],
            "registered": dict(self.registered),
            "counters": dict(sorted(self.stats.items())),
        }

    def sample_document(self, cursor: Cursor | None = None) -> dict[str, Any]:
        """The probe samples a reader at ``cursor`` has not seen (docs/input-formats.md)."""
        return encode(self.samples.batch(self.clock.now(), cursor))

    def write_files(self, durable: bool) -> None:
        """The stats snapshot and the probe samples, to the files the config names."""
        if self.config.stats_file is not None:
            atomic_write_json(self.config.stats_file, self.snapshot(), durable=durable)
        if self.config.samples_file is not None:
            atomic_write_json(self.config.samples_file, self.sample_document(), durable=durable)

    # ------------------------------------------------------------------ loops
    async def run_loops(self, tick: float = 0.01) -> None:
        """Registration, watch, probe and timeout schedulers; runs until cancelled."""
        next_register = 0.0
        next_stats = 0.0
        next_watch = 0.0
        while True:
            now = self.clock.now()
            try:
                if now >= next_register:
                    self.register_now()
                    next_register = now + self.config.register_interval
                if now >= next_watch:
                    for eid in self.config.watch:
                        entry = self.cache.lookup(eid, now)
                        # refresh shortly before expiry, like an ITR with live traffic
                        if entry is None or entry.expires_at - now < 5:
                            self.resolve(eid)
                    next_watch = now + 0.5
                self.probe_due(now)
                self.timeouts(self.clock.monotonic())
                for gone in self.cache.expired(now):
                    self.emit(MappingRemoved(gone.prefix, "expired"))
                if now >= next_stats:
                    self.write_files(durable=False)
                    next_stats = now + self.config.stats_interval
            except OSError as exc:
                self.stats["loop_errors"] += 1
                log.warning("xtr loop: %s", exc)
            await asyncio.sleep(tick)


async def _http_handler(
    xtr: Xtr, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """GET /, /map-cache, /stats (state as JSON), /samples (probe samples); POST /set-priority
    (local use only)."""
    try:
        request = await asyncio.wait_for(reader.readline(), 5)
        length = 0
        while True:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = min(int(value.strip()), 1 << 20)
        parts = request.decode("latin-1").split()
        verb, path = (parts[0], parts[1]) if len(parts) >= 2 else ("GET", "/")
        status, doc = "404 Not Found", {"error": "not found"}
        target = urlsplit(path)
        if verb == "GET" and target.path == "/samples":
            status, doc = _samples_request(xtr, target.query)
        elif verb == "GET":
            snap = xtr.snapshot()
            views = {"/": snap, "/map-cache": snap["map_cache"], "/stats": snap["counters"]}
            if path in views:
                status, doc = "200 OK", views[path]
        elif verb == "POST" and path == "/set-priority":
            body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
            status, doc = _set_priority_request(xtr, body)
        payload = json.dumps(doc, indent=1).encode()
        head = (
            f"HTTP/1.0 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()
    except (TimeoutError, ConnectionError, UnicodeError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def _samples_request(xtr: Xtr, query: str) -> tuple[str, Any]:
    """``?stream=S&after=N``: the samples after the reader's cursor (all of them for
    another stream, or without one)."""
    q = parse_qs(query)
    stream, after = q.get("stream", [""])[0], q.get("after", ["0"])[0]
    if not after.isdigit():
        return "400 Bad Request", {"error": str(InputError("after", after, "expected an integer"))}
    return "200 OK", xtr.sample_document(Cursor(stream, int(after)) if stream else None)


def _set_priority_request(xtr: Xtr, body: bytes) -> tuple[str, Any]:
    """{"prefix": P, "priorities": {RLOC: n}, "weights": {RLOC: n}, "method": M}."""
    try:
        doc = json.loads(body or b"{}")
        if not isinstance(doc, dict):
            raise InputError("<body>", doc, "expected a JSON object")
        try:
            prefix = EidPrefix.parse(str(doc.get("prefix", "")))
        except ValueError as exc:
            raise InputError("prefix", doc.get("prefix"), f"not an EID prefix ({exc})") from None
        prio, weights = doc.get("priorities") or {}, doc.get("weights") or {}
        if not isinstance(prio, dict) or not isinstance(weights, dict):
            raise InputError("priorities", prio, "expected an object {RLOC: integer}")
        report = xtr.set_priorities(prefix, prio, weights, doc.get("method"))
    except InputError as exc:
        return "400 Bad Request", {"error": str(exc)}
    except ValueError as exc:
        return "400 Bad Request", {"error": f"invalid JSON ({exc})"}
    return "200 OK", {
        "prefix": str(report.prefix),
        "locators": to_jsonable(report.locators),
        "itrs": [f"{h}:{p}" for h, p in report.itrs],
        "method": report.method,
        "nonce": f"0x{report.nonce:016x}",
    }


async def open_xtr(
    config: XtrConfig, clock: Clock | None = None
) -> tuple[Xtr, UdpEndpoint, asyncio.Server | None]:
    """Bind the control socket (and the HTTP endpoint) and start the schedulers."""
    xtr = Xtr(config, clock)
    endpoint = open_udp(config.listen[0], config.listen[1], xtr.datagram_received)
    xtr.connection_made(endpoint)
    http = None
    if config.http is not None:
        try:
            http = await asyncio.start_server(
                lambda r, w: _http_handler(xtr, r, w), config.http[0], config.http[1]
            )
        except OSError:
            endpoint.close()
            raise
    xtr._tasks.append(asyncio.create_task(xtr.run_loops()))
    return xtr, endpoint, http


async def close_xtr(xtr: Xtr, transport: UdpEndpoint, http: asyncio.Server | None) -> None:
    for t in xtr._tasks:
        t.cancel()
    for t in xtr._tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    transport.close()
    if http is not None:
        http.close()
        await http.wait_closed()
    xtr.write_files(durable=True)


async def serve_xtr(config: XtrConfig) -> None:
    from pacao.aio import wait_for_stop_signal

    xtr, transport, http = await open_xtr(config)
    where = f"{xtr.local[0]}:{xtr.local[1]}"
    if http is not None:
        sock = http.sockets[0].getsockname()
        where += f", http on {sock[0]}:{sock[1]}"
    print(f"pacao lisp xtr: listening on {where}", flush=True)
    try:
        await wait_for_stop_signal()
    finally:
        await close_xtr(xtr, transport, http)
