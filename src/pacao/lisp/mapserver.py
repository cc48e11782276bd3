"""Map-Server and Map-Resolver in one asyncio UDP process (RFC 9301 §4, §8).

* Map-Register: the first record's EID prefix selects the site (exact match,
  or more specific when the site accepts that); every record must belong to
  that site; the HMAC must verify with the site key.  Otherwise the message is
  dropped and counted.  Want-map-notify is answered with a Map-Notify signed
  the same way, sent to the source address and port of the Map-Register.
* Replay protection (RFC 9301 section 5.6): per site and xTR-ID, a
  Map-Register's nonce must exceed the last one accepted (unless the site
  sets `replay_protection: false`); per-site limits on records, locators and
  registered prefixes.
* Registrations expire after `registration_timeout` (default 180 s, three
  60 s register intervals) or, when the T bit is set, after the Record TTL;
  expiry times are a heap, so housekeeping never scans the table.
* Map-Request (ECM-encapsulated, or plain): per EID record, longest-prefix
  match per instance-id.  A registration with proxy-reply is answered with a
  Map-Reply (A bit clear, like lispers.net); otherwise the ECM is forwarded
  to the address and port the ETR registered from.  Unregistered EIDs get a
  negative Map-Reply, action natively-forward, for the least-specific prefix
  that overlaps no configured site (TTL `negative_ttl` minutes, 15 by
  default), or, inside a configured site nobody registered, for the
  least-specific hole in the site's registrations (TTL
  `unregistered_site_ttl`, 1 minute).
* Registrations are written to `state_file` (JSON, atomically) and reloaded.
* Nothing a peer sends can stop the daemon: decoding errors and handler bugs
  are counted in `stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import os
import socket
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from pacao.clock import Clock, SystemClock
from pacao.lisp import auth
from pacao.lisp.address import EidPrefix
from pacao.lisp.config import MapServerConfig, Site
from pacao.lisp.lpm import PrefixTable
from pacao.lisp.messages import (
    ACTION_NATIVELY_FORWARD,
    MAPPING_RECORD,
    EncapsulatedControlMessage,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    Message,
    decode_message,
)
from pacao.lisp.pcap import PcapWriter
from pacao.lisp.udp import UdpEndpoint, open_udp
from pacao.lisp.wire import LispDecodeError, Reader

log = logging.getLogger("pacao.lisp.mapserver")
STATE_VERSION = 1


@dataclass(frozen=True)
class Registration:
    """One registered EID prefix and how to reach the ETR that registered it."""

    prefix: EidPrefix
    site: str
    record: MappingRecord
    proxy_reply: bool
    source: tuple[str, int]
    registered_at: float
    expires_at: float
    xtr_id: bytes | None = None
    site_id: bytes | None = None
    reply_record: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.reply_record:  # the proxy Map-Reply record, encoded once (A bit clear)
            wire = MAPPING_RECORD.encode(replace(self.record, authoritative=False))
            object.__setattr__(self, "reply_record", wire)

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": str(self.prefix),
            "site": self.site,
            "record": MAPPING_RECORD.encode(self.record).hex(),
            "proxy_reply": self.proxy_reply,
            "source": list(self.source),
            "registered_at": self.registered_at,
            "expires_at": self.expires_at,
            "xtr_id": self.xtr_id.hex() if self.xtr_id else None,
            "site_id": self.site_id.hex() if self.site_id else None,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Registration:
        record: MappingRecord = MAPPING_RECORD.decode(Reader(bytes.fromhex(doc["record"])))
        return cls(
            prefix=record.prefix,
            site=str(doc["site"]),
            record=record,
            proxy_reply=bool(doc["proxy_reply"]),
            source=(str(doc["source"][0]), int(doc["source"][1])),
            registered_at=float(doc["registered_at"]),
            expires_at=float(doc["expires_at"]),
            xtr_id=bytes.fromhex(doc["xtr_id"]) if doc.get("xtr_id") else None,
            site_id=bytes.fromhex(doc["site_id"]) if doc.get("site_id") else None,
        )


_AFI_SIZE = {0: 2, 1: 6, 2: 18}  # AFI field + address, for the fast path
_SPACE = {1: (0, 4), 2: (0, 6)}  # AFI -> PrefixTable key (instance 0)


def _ntop6(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


_NTOP: dict[int, Callable[[bytes], str]] = {1: socket.inet_ntoa, 2: _ntop6}

_REPLY_DEFAULTS: dict[str, Any] = {
    "probe": False,
    "echo_nonce": False,
    "security": False,
    "reserved": 0,
    "trailer": b"",
}


class TokenBucket:
    """Per-source Map-Request rate limit (token bucket per key).

    At most `max_sources` buckets are kept: beyond that the least recently
    used one is forgotten (it was idle, so its bucket was refilling anyway),
    which bounds memory whatever number of source addresses a flood uses."""

    def __init__(self, rate: float, burst: int, max_sources: int = 10000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        self.tokens: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        tokens = self.tokens
        state = tokens.get(source)
        if state is None:
            if len(tokens) >= self.max_sources:
                tokens.popitem(last=False)
            level = self.burst
        else:
            tokens.move_to_end(source)
            level = min(self.burst, state[0] + (now - state[1]) * self.rate)
        if level < 1.0:
            tokens[source] = (level, now)
            return False
        tokens[source] = (level - 1.0, now)
        return True


class MapServer:
    """The daemon state and its UDP protocol handler."""

    def __init__(
        self, config: MapServerConfig, pcap: PcapWriter | None = None, clock: Clock | None = None
    ) -> None:
        self.config = config
        #: registration times, expiry, rate limits and save periods (tests pass a ManualClock)
        self.clock: Clock = clock or SystemClock()
        self.pcap = pcap
        self.stats: Counter[str] = Counter()
        self.registrations: PrefixTable[Registration] = PrefixTable()
        self.site_prefixes: PrefixTable[Site] = PrefixTable()
        for site in config.sites:
            for p in site.eid_prefixes:
                self.site_prefixes.insert(p, site)
        self.limiter = TokenBucket(
            config.map_request_rate, config.map_request_burst, config.map_request_sources
        )
        self.transport: UdpEndpoint | None = None
        self.local: tuple[str, int] = config.listen
        self.dirty = False  # registrations changed: save at the next housekeeping
        self.refreshed = False  # only refreshed: save within `refresh_save_period`
        self.refresh_save_period = 30.0
        self.last_save = self.clock.now()
        self.fast_path = True  # tests turn it off to compare with the general path
        self._log_state: dict[str, tuple[float, int]] = {}
        # last accepted Map-Register nonce per (site, xTR-ID) (RFC 9301 section 5.6)
        self.last_nonce: dict[tuple[str, bytes | None], int] = {}
        self.site_count: Counter[str] = Counter()  # registrations held per site
        self._expiry: list[tuple[float, int, EidPrefix]] = []  # heap: (expires_at, seq, prefix)
        self._seq = itertools.count()
        self._rows: dict[EidPrefix, str] = {}  # each registration's state-file JSON
        if config.state_file is not None:
            self.load_state(config.state_file)

    # ------------------------------------------------------------------ transport
    def connection_made(self, transport: UdpEndpoint) -> None:
        self.transport = transport
        sockname = transport.get_extra_info("sockname")
        self.local = (sockname[0], sockname[1])

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is None:
            return
        try:
            self.transport.sendto(data, addr)
        except (OSError, ValueError) as exc:
            self.stats["send_errors"] += 1
            log.debug("send to %s failed: %s", addr, exc)
            return
        self.stats["sent"] += 1
        if self.pcap is not None:
            self.pcap.record(self.local, addr, data)

    def error_received(self, exc: Exception) -> None:
        self.stats["socket_errors"] += 1

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.stats["received"] += 1
        if self.pcap is not None:
            self.pcap.record((str(addr[0]), int(addr[1])), self.local, data)
        if self.fast_path and data[:1] == b"\x80" and self.fast_request(data, addr):
            return
        peer = (str(addr[0]), int(addr[1]))
        try:
            msg = decode_message(data)
        except LispDecodeError as exc:
            self.stats["malformed"] += 1
            log.debug("malformed from %s: %s", peer, exc)
            return
        try:
            self.dispatch(msg, data, peer)
        except Exception:  # a bug in a handler must not stop the service
            self.stats["handler_errors"] += 1
            what = "error handling a message from %s"
            self.log_limited("handler", logging.ERROR, what, peer, exc_info=True)

    def log_limited(
        self, kind: str, level: int, fmt: str, *args: Any, exc_info: bool = False
    ) -> None:
        """Log a per-packet event at most once a second per kind (a flood must not
        flood the log, or block the daemon on a full stderr pipe)."""
        now = self.clock.now()
        last, suppressed = self._log_state.get(kind, (-1e9, 0))
        if now - last < 1.0:
            self._log_state[kind] = (last, suppressed + 1)
            return
        self._log_state[kind] = (now, 0)
        if suppressed:
            fmt += f" ({suppressed} similar messages suppressed)"
        log.log(level, fmt, *args, exc_info=exc_info)

    def dispatch(self, msg: Message, data: bytes, peer: tuple[str, int]) -> None:
        if isinstance(msg, MapRegister):
            self.stats["map_register"] += 1
            self.handle_register(msg, data, peer)
        elif isinstance(msg, EncapsulatedControlMessage) and isinstance(msg.message, MapRequest):
            self.stats["map_request"] += 1
            self.handle_request(msg.message, peer, msg.udp.source_port, data)
        elif isinstance(msg, MapRequest):
            self.stats["map_request"] += 1
            self.handle_request(msg, peer, peer[1], None)
        elif isinstance(msg, MapNotifyAck):
            self.stats["map_notify_ack"] += 1
        else:
            self.stats["ignored"] += 1

    # ------------------------------------------------------------------ Map-Register
    def site_for(self, prefix: EidPrefix) -> Site | None:
        hit = self.site_prefixes.lookup(prefix)
        if hit is None:
            return None
        allowed, site = hit
        if allowed != prefix and not site.accept_more_specifics:
            return None
        return site

    def handle_register(self, msg: MapRegister, data: bytes, peer: tuple[str, int]) -> None:
        if not msg.records:
            self.stats["register_rejected"] += 1
            return
        try:
            prefixes = [r.prefix for r in msg.records]
        except ValueError:
            self.stats["register_rejected"] += 1
            return
        site = self.site_for(prefixes[0])
        if site is None or any(self.site_for(p) is not site for p in prefixes[1:]):
            self.stats["register_rejected"] += 1
            what = "Map-Register from %s for unconfigured prefixes %s"
            self.log_limited("register", logging.INFO, what, peer, prefixes)
            return
        if msg.alg_id == auth.ALG_NONE or msg.key_id != site.key_id:
            self.stats["bad_auth"] += 1
            return
        if not auth.verify(data, site.key):
            self.stats["bad_auth"] += 1
            what = "Map-Register from %s for site %s fails authentication"
            self.log_limited("auth", logging.INFO, what, peer, site.name)
            return
        stream = (site.name, msg.xtr_id)
        if site.replay_protection:
            last = self.last_nonce.get(stream)
            if msg.nonce == 0 or (last is not None and msg.nonce <= last):
                self.stats["replayed"] += 1
                what = (
                    "Map-Register from %s for site %s dropped as a replay: nonce 0x%016x, "
                    "last accepted %s (nonces must increase; replay_protection: false "
                    "accepts peers that send 0 or repeat their nonce)"
                )
                seen = "none" if last is None else f"0x{last:016x}"
                self.log_limited("replay", logging.WARNING, what, peer, site.name, msg.nonce, seen)
                return
        if not self.within_limits(site, msg, prefixes, peer):
            return
        new_stream = stream not in self.last_nonce
        if site.replay_protection:
            self.last_nonce[stream] = msg.nonce
        now = self.clock.now()
        for rec, prefix in zip(msg.records, prefixes, strict=True):
            lifetime = self.config.registration_timeout
            if msg.use_ttl_for_timeout:
                lifetime = rec.ttl * 60.0
            reg = Registration(
                prefix=prefix,
                site=site.name,
                record=rec,
                proxy_reply=msg.proxy_reply,
                source=peer,
                registered_at=now,
                expires_at=now + lifetime,
                xtr_id=msg.xtr_id,
                site_id=msg.site_id,
            )
            old = self.store(reg)
            changed = old is None or (old.record, old.proxy_reply) != (rec, reg.proxy_reply)
            self.dirty = self.dirty or changed
        # A change (with its nonce, so that a replay of the state it replaced stays
        # refused after a restart) is saved within a housekeeping period; a refresh
        # of the same records only moves expiry times and nonces: saved less often.
        self.dirty = self.dirty or (new_stream and site.replay_protection)
        self.refreshed = True
        self.stats["registered"] += 1
        if msg.want_map_notify:
            notify = MapNotify(
                nonce=msg.nonce,
                records=msg.records,
                key_id=msg.key_id,
                xtr_id_present=msg.xtr_id_present,
                xtr_id=msg.xtr_id,
                site_id=msg.site_id,
            )
            short = len(msg.auth_data) == auth.TRUNCATED_SIZE[msg.alg_id]
            signed = auth.sign(notify, site.key, msg.alg_id, truncated=short)
            self.send(signed.to_bytes(), peer)
            self.stats["map_notify_sent"] += 1

    def within_limits(
        self, site: Site, msg: MapRegister, prefixes: list[EidPrefix], peer: tuple[str, int]
    ) -> bool:
        """The site's bounds on one Map-Register and on what it holds registered."""
        most = max(len(r.locators) for r in msg.records)
        new = len({p for p in prefixes if self.registrations.get(p) is None})
        held = self.site_count[site.name]
        if len(msg.records) > site.max_records:
            what, value, limit = "records", len(msg.records), site.max_records
        elif most > site.max_locators:
            what, value, limit = "locators in one record", most, site.max_locators
        elif held + new > site.max_prefixes:
            what, value, limit = "registered prefixes", held + new, site.max_prefixes
        else:
            return True
        self.stats["register_too_large"] += 1
        fmt = "Map-Register from %s for site %s refused: %d %s, the site allows %d (%s)"
        key = {"records": "max_records", "registered prefixes": "max_prefixes"}.get(
            what, "max_locators"
        )
        self.log_limited("limit", logging.WARNING, fmt, peer, site.name, value, what, limit, key)
        return False

    def store(self, reg: Registration) -> Registration | None:
        """Insert or replace a registration; its expiry goes on the heap if needed."""
        old = self.registrations.get(reg.prefix)
        self.registrations.insert(reg.prefix, reg)
        self._rows[reg.prefix] = json.dumps(reg.to_json())
        if old is None:
            self.site_count[reg.site] += 1
        if old is None or reg.expires_at < old.expires_at:
            # a later expiry needs no entry: expire() re-queues the old one when it is due
            heapq.heappush(self._expiry, (reg.expires_at, next(self._seq), reg.prefix))
        return old

    # ------------------------------------------------------------------ Map-Request
    def handle_request(
        self, req: MapRequest, peer: tuple[str, int], reply_port: int, ecm: bytes | None
    ) -> None:
        if not self.limiter.allow(peer[0], self.clock.now()):
            self.stats["rate_limited"] += 1
            return
        if req.probe or req.smr:
            self.stats["ignored"] += 1  # probes and SMRs are for xTRs
            return
        now = self.clock.now()
        answers: list[MappingRecord | bytes] = []
        forward_to: set[tuple[str, int]] = set()
        for rr in req.records:
            try:
                query = rr.prefix
            except ValueError:
                self.stats["unsupported_eid"] += 1
                continue
            hit = self.registrations.lookup(query)
            if hit is not None and hit[1].expires_at <= now:
                self.expire(now)
                hit = self.registrations.lookup(query)
                if hit is not None and hit[1].expires_at <= now:
                    hit = None  # not stored through store(): not on the expiry heap
            if hit is None:
                answers.append(self.negative(query))
                self.stats["negative_reply"] += 1
                continue
            reg = hit[1]
            if reg.proxy_reply or ecm is None:
                answers.append(reg.reply_record)
                self.stats["proxy_reply"] += 1
            else:
                forward_to.add(reg.source)
        for dest in forward_to:
            assert ecm is not None
            self.send(ecm, dest)
            self.stats["forwarded"] += 1
        if answers:  # pre-encoded records pass through the List element as bytes
            reply = MapReply.STRUCT.encode(
                {**_REPLY_DEFAULTS, "nonce": req.nonce, "records": answers}
            )
            self.send(reply, (self.reply_address(req, peer), reply_port))

    def fast_request(self, data: bytes, peer: tuple[str | Any, int]) -> bool:
        """Answer the common ECM Map-Request without building any object.

        Handles exactly one shape: ECM (no flags) + IPv4/IPv6 inner header with
        UDP + Map-Request with no flags but A/p/s/L/D, one EID record with a
        plain IPv4/IPv6 EID, nothing after it, hitting a live proxy-reply
        registration.  The reply is the registration's pre-encoded record behind
        a 12-byte header carrying the request's nonce: the same bytes
        `handle_request` builds.  Anything else returns False (nothing counted,
        no token used) and goes through the full decoder and `handle_request`,
        so validation, negative replies, forwarding and counters stay in one
        place.
        """
        size = len(data)
        if size < 52:
            return False
        version = data[4] >> 4
        if version == 4:
            if data[4] != 0x45 or data[13] != 17:
                return False
            m = 32
        elif version == 6:
            if data[10] != 17:
                return False
            m = 52
        else:
            return False
        if (data[m - 4] << 8 | data[m - 3]) != size - m + 8:  # UDP length
            return False
        # type 1; no M, P, S (byte 0); no R, I, reserved (byte 1, only p and s allowed)
        if size < m + 14 or data[m] & 0xF7 != 0x10 or data[m + 1] & 0x3F or data[m + 3] != 1:
            return False
        irc = (data[m + 2] & 0x1F) + 1
        pos = m + 12
        afi = data[pos] << 8 | data[pos + 1]
        pos += _AFI_SIZE.get(afi, 1000)  # source EID
        reply_to = ""
        want = 2 if ":" in self.local[0] else 1
        for _ in range(irc):
            if pos + 2 > size:
                return False
            afi = data[pos] << 8 | data[pos + 1]
            if afi == want and not reply_to and pos + _AFI_SIZE[afi] <= size:
                raw = data[pos + 2 : pos + _AFI_SIZE[afi]]
                reply_to = _NTOP[afi](raw)
            pos += _AFI_SIZE.get(afi, 1000)
        if pos + 4 > size:
            return False
        mask = data[pos + 1]
        afi = data[pos + 2] << 8 | data[pos + 3]
        if afi == 1:
            if mask > 32 or pos + 8 != size:
                return False
        elif afi == 2:
            if mask > 128 or pos + 20 != size:
                return False
        else:
            return False
        reg = self.registrations.match(_SPACE[afi], int.from_bytes(data[pos + 4 :], "big"), mask)
        if reg is None or not reg.proxy_reply or reg.expires_at <= self.clock.now():
            return False  # negative, forward or expiring: the general path decides
        stats = self.stats
        stats["map_request"] += 1
        if not self.limiter.allow(peer[0], self.clock.now()):
            stats["rate_limited"] += 1
            return True
        stats["proxy_reply"] += 1
        port = data[m - 8] << 8 | data[m - 7]
        self.send(b"\x20\x00\x00\x01" + data[m + 4 : m + 12] + reg.reply_record,
                  (reply_to or peer[0], port))  # fmt: skip
        return True

    def reply_address(self, req: MapRequest, peer: tuple[str, int]) -> str:
        """The first ITR-RLOC of our socket's family, else the packet's source."""
        v6 = ":" in self.local[0]
        for rloc in req.itr_rlocs:
            if isinstance(rloc, IPv6Address if v6 else IPv4Address):
                return str(rloc)
        return peer[0]

    def negative(self, query: EidPrefix) -> MappingRecord:
        site_hit = self.site_prefixes.lookup(query)
        if site_hit is None:
            gap = self.site_prefixes.gap(query) or query
            ttl = self.config.negative_ttl
        else:
            shortest = site_hit[0].network.prefixlen
            gap = self.registrations.gap(query, shortest) or query
            ttl = self.config.unregistered_site_ttl
        return MappingRecord.for_prefix(gap, ttl=ttl, action=ACTION_NATIVELY_FORWARD)

    # ------------------------------------------------------------------ time and state
    def expire(self, now: float | None = None) -> int:
        """Remove the registrations due by `now`: heap pops, no table scan.

        The heap holds (expiry, seq, prefix) with at most a few entries per
        prefix; a refresh pushes nothing (the old entry is re-queued at the new
        time when it comes due), so the cost is O(log n) per expiry or refresh."""
        now = self.clock.now() if now is None else now
        heap = self._expiry
        dead = 0
        while heap and heap[0][0] <= now:
            _, _, prefix = heapq.heappop(heap)
            reg = self.registrations.get(prefix)
            if reg is None:
                continue  # removed already (an older entry for the same prefix)
            if reg.expires_at <= now:
                self.registrations.remove(prefix)
                del self._rows[prefix]
                self.site_count[reg.site] -= 1
                dead += 1
            else:
                heapq.heappush(heap, (reg.expires_at, next(self._seq), prefix))
        if dead:
            self.stats["expired"] += dead
            self.dirty = True
        return dead

    def state_writer(self) -> Callable[[], str]:
        """Snapshot the state in the loop (cheap: each registration's JSON is kept
        ready since it was stored); the returned function builds the file's text,
        and can run in a worker thread while the loop keeps serving."""
        rows = list(self._rows.values())
        nonces = [
            {"site": site, "xtr_id": xtr.hex() if xtr else None, "nonce": nonce}
            for (site, xtr), nonce in sorted(
                self.last_nonce.items(), key=lambda kv: (kv[0][0], kv[0][1] or b"")
            )
        ]
        head = {"version": STATE_VERSION, "saved_at": self.clock.now()}

        def text() -> str:
            body = ",\n  ".join(rows)
            return f'{json.dumps(head)[:-1]},\n "registrations": [\n  {body}],\n' + (
                f' "nonces": {json.dumps(nonces)}}}\n'
            )

        return text

    def save_state(self) -> None:
        path = self.config.state_file
        if path is None:
            return
        write = self.state_writer()
        self.dirty = self.refreshed = False
        atomic_write_text(path, write())
        self.last_save = self.clock.now()

    async def save_state_async(self) -> None:
        """save_state with the JSON join, write and fsync in a worker thread: with
        100,000 registrations that is about a second the loop would otherwise stall."""
        path = self.config.state_file
        if path is None:
            return
        write = self.state_writer()
        self.dirty = self.refreshed = False  # changes from now on mark it again
        try:
            await asyncio.to_thread(lambda: atomic_write_text(path, write()))
        except OSError:
            self.dirty = True
            raise
        self.last_save = self.clock.now()

    def load_state(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s: %s", path, exc)
            self.stats["state_errors"] += 1
            return
        now = self.clock.now()
        regs = doc.get("registrations", []) if isinstance(doc, dict) else []
        for item in regs:
            try:
                reg = Registration.from_json(item)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                self.stats["state_errors"] += 1
                log.warning("ignoring a bad registration in %s: %s", path, exc)
                continue
            if reg.expires_at <= now or self.site_for(reg.prefix) is None:
                continue  # expired while down, or the site was removed from the config
            self.store(reg)
            self.stats["restored"] += 1
        nonces = doc.get("nonces", []) if isinstance(doc, dict) else []
        for item in nonces if isinstance(nonces, list) else []:
            try:
                xtr = bytes.fromhex(item["xtr_id"]) if item["xtr_id"] else None
                nonce = item["nonce"]
                if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 < nonce < 2**64:
                    raise ValueError(f"nonce {nonce!r} is not a 64-bit integer")
                self.last_nonce[(str(item["site"]), xtr)] = nonce
            except (KeyError, TypeError, ValueError) as exc:
                self.stats["state_errors"] += 1
                log.warning("ignoring a bad nonce entry in %s: %s", path, exc)

    def stats_doc(self) -> dict[str, Any]:
        return {
            "registrations": len(self.registrations),
            "rate_limit_sources": len(self.limiter.tokens),
            "listen": f"{self.local[0]}:{self.local[1]}",
            **dict(sorted(self.stats.items())),
        }

    async def housekeeping(self, period: float = 0.5) -> None:
        """Expire registrations, flush state and stats; runs until cancelled."""
        last_stats: dict[str, Any] | None = None
        while True:
            await asyncio.sleep(period)
            try:
                self.expire()
                stale = self.clock.now() - self.last_save >= self.refresh_save_period
                if self.dirty or (self.refreshed and stale):
                    await self.save_state_async()
                if self.config.stats_file is not None:
                    doc = self.stats_doc()
                    if doc != last_stats:
                        atomic_write_json(self.config.stats_file, doc, durable=False)
                        last_stats = doc
                if self.pcap is not None:
                    self.pcap.flush()
            except OSError as exc:
                self.stats["state_errors"] += 1
                log.warning("housekeeping: %s", exc)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Write to a temporary file in the same directory, fsync, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, doc: Any, durable: bool = True) -> None:
    """Write JSON to a temporary file in the same directory, fsync, then rename.

    `durable=False` skips the fsync (readers still never see a partial file):
    for statistics, rewritten every second, where an fsync (5-20 ms here) would
    stall the daemon's loop and losing the last copy on a crash costs nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


async def open_map_server(
    config: MapServerConfig, pcap: PcapWriter | None = None, clock: Clock | None = None
) -> tuple[MapServer, UdpEndpoint]:
    """Bind the UDP socket and return the server (with `.local` set) and its endpoint."""
    server = MapServer(config, pcap, clock)
    endpoint = open_udp(config.listen[0], config.listen[1], server.datagram_received)
    server.connection_made(endpoint)
    return server, endpoint


async def serve(config: MapServerConfig, pcap: PcapWriter | None = None) -> None:
    """Run until SIGINT/SIGTERM; state is saved on the way out."""
    from pacao.aio import wait_for_stop_signal

    server, transport = await open_map_server(config, pcap)
    print(f"pacao lisp map-server: listening on {server.local[0]}:{server.local[1]}", flush=True)
    task = asyncio.create_task(server.housekeeping())
    try:
        await wait_for_stop_signal()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        transport.close()
        server.expire()
        server.save_state()
        if config.stats_file is not None:
            atomic_write_json(config.stats_file, server.stats_doc())
        if pcap is not None:
            pcap.close()
