"""The EID prefix table against a brute-force reference, and the registration rules that
rest on it: longest match in the map-server (general and fast path), the site's key-id,
and the xTR matching a Map-Notify to its pending Map-Register by nonce only."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pacao.lisp import auth
from pacao.lisp.address import EidPrefix
from pacao.lisp.config import config_from_dict
from pacao.lisp.lpm import PrefixTable
from pacao.lisp.mapserver import MapServer
from pacao.lisp.messages import (
    EncapsulatedControlMessage,
    Locator,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    RequestRecord,
    decode_message,
)
from pacao.lisp.xtr import RegistrationAcked, close_xtr, open_xtr, xtr_config_from_dict

# --- the table against brute force ----------------------------------------------------------

BASE = int(IPv4Address("10.0.0.0"))


def net(offset: int, plen: int) -> IPv4Network:
    """A prefix inside 10.0.0.0/24 (plus the /8../23 that contain it): a small address
    space where stored prefixes nest and overlap often."""
    return IPv4Network((BASE + offset, 32), strict=False).supernet(new_prefix=plen)


prefixes = st.builds(net, st.integers(0, 255), st.integers(8, 32))


def ref_lookup(stored: set[IPv4Network], q: IPv4Network) -> IPv4Network | None:
    hits = [p for p in stored if p.prefixlen <= q.prefixlen and q.subnet_of(p)]
    return max(hits, key=lambda p: p.prefixlen) if hits else None


def ref_gap(stored: set[IPv4Network], q: IPv4Network, shortest: int) -> IPv4Network | None:
    host = IPv4Network((int(q.network_address), 32))
    if ref_lookup(stored, host) is not None:
        return None
    for plen in range(shortest, 33):
        cand = host.supernet(new_prefix=plen)
        if not any(cand.overlaps(p) for p in stored):
            return cand
    raise AssertionError("a /32 not covered overlaps nothing")


def eid(n: IPv4Network, iid: int = 0) -> EidPrefix:
    return EidPrefix(iid, n)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(prefixes, max_size=12),
    st.lists(prefixes, max_size=4),
    st.lists(prefixes, min_size=1, max_size=8),
    st.integers(0, 32),
)
def test_table_agrees_with_brute_force(
    inserted: list[IPv4Network],
    removed: list[IPv4Network],
    queries: list[IPv4Network],
    shortest: int,
) -> None:
    table: PrefixTable[str] = PrefixTable()
    for p in inserted:
        table.insert(eid(p), f"v{p}")
    stored = set(inserted)
    for p in removed:
        assert table.remove(eid(p)) == (f"v{p}" if p in stored else None)
        stored.discard(p)
    assert len(table) == len(stored)
    assert sorted(str(p.network) for p, _ in table.items()) == sorted(map(str, stored))
    for p in stored:
        assert table.get(eid(p)) == f"v{p}" and eid(p) in table
    for q in queries:
        want = ref_lookup(stored, q)
        got = table.lookup(eid(q))
        assert (got[0].network, got[1]) == (want, f"v{want}") if want else got is None
        raw = table.match((0, 4), int(q.network_address), q.prefixlen)
        assert raw == (f"v{want}" if want else None)
        # match() takes an address with host bits: every address of q answers alike.
        last = int(q.broadcast_address)
        assert table.match((0, 4), last, q.prefixlen) == raw
        assert table.overlaps(eid(q)) == any(q.overlaps(p) for p in stored)
        assert (eid(q) in table) == (q in stored)
        hole = ref_gap(stored, q, min(shortest, q.prefixlen))
        gap = table.gap(eid(q), min(shortest, q.prefixlen))
        assert (gap.network if gap else None) == hole
        # Another instance-id or family is another table.
        assert table.lookup(eid(q, 5)) is None
        assert table.match((5, 4), int(q.network_address), q.prefixlen) is None
        assert table.match((0, 6), int(q.network_address) << 96, 128) is None


def test_longest_match_examples_ipv4_and_ipv6() -> None:
    table: PrefixTable[str] = PrefixTable()
    for p in ("10.0.0.0/8", "10.1.0.0/16", "10.1.5.0/24", "10.1.5.128/25", "2001:db8::/32"):
        table.insert(EidPrefix.parse(p), p)
    table.insert(EidPrefix.parse("2001:db8:1::/48"), "v6/48")
    table.insert(EidPrefix.parse("10.1.0.0/16", 7), "iid7")
    cases = [
        ("10.1.5.200/32", "10.1.5.128/25"),
        ("10.1.5.1/32", "10.1.5.0/24"),
        ("10.1.6.1/32", "10.1.0.0/16"),
        ("10.2.0.1/32", "10.0.0.0/8"),
        ("10.1.5.0/24", "10.1.5.0/24"),
        ("10.0.0.0/15", "10.0.0.0/8"),  # a query shorter than /16 is not inside it
    ]
    for q, want in cases:
        hit = table.lookup(EidPrefix.parse(q))
        assert hit is not None and str(hit[0]) == want and hit[1] == want
        n = IPv4Network(q)
        assert table.match((0, 4), int(n.network_address) | 1, n.prefixlen) == want
    assert table.lookup(EidPrefix.parse("11.0.0.1/32")) is None
    hit = table.lookup(EidPrefix.parse("2001:db8:1:2::1/128"))
    assert hit is not None and hit[1] == "v6/48"
    addr = int(ipaddress.IPv6Address("2001:db8:2::1"))
    assert table.match((0, 6), addr, 128) == "2001:db8::/32"
    hit = table.lookup(EidPrefix.parse("10.1.9.9/32", 7))
    assert hit is not None and hit[1] == "iid7" and str(hit[0]) == "[7]10.1.0.0/16"
    assert table.lookup(EidPrefix.parse("10.2.0.1/32", 7)) is None
    # The largest hole next to 10.0.0.0/8 holding 11.0.0.1, at most /0: 11.0.0.0/8.
    gap = table.gap(EidPrefix.parse("11.0.0.1/32"))
    assert gap is not None and str(gap) == "11.0.0.0/8"
    gap = table.gap(EidPrefix.parse("11.0.0.1/32"), shortest=12)
    assert gap is not None and str(gap) == "11.0.0.0/12"
    assert table.gap(EidPrefix.parse("10.9.9.9/32")) is None


# --- the map-server: longest match and the site's key-id ------------------------------------

KEY = "s3cret"
LOCS = (Locator(IPv4Address("198.51.100.1"), 1, 50),)
PEER = ("127.0.0.1", 4342)


@dataclass
class Sent:
    """A transport that keeps what the map-server sends."""

    out: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.out.append((data, addr))

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 4342) if name == "sockname" else None

    def take(self) -> list[Any]:
        got = [decode_message(d) for d, _ in self.out]
        self.out.clear()
        return got


def server(key_id: int = 0) -> tuple[MapServer, Sent]:
    doc = {
        "listen": "127.0.0.1:0",
        "sites": [
            {
                "name": "dc1",
                "key": KEY,
                "key_id": key_id,
                "eid_prefixes": ["10.1.0.0/16"],
                "accept_more_specifics": True,
            }
        ],
    }
    ms = MapServer(config_from_dict(doc))
    t = Sent()
    ms.connection_made(t)  # type: ignore[arg-type]
    return ms, t


def register(prefix: str, nonce: int, key_id: int = 0, key: str = KEY) -> bytes:
    rec = MappingRecord.for_prefix(EidPrefix.parse(prefix), locators=LOCS, authoritative=True)
    msg = MapRegister(nonce, (rec,), proxy_reply=True, want_map_notify=True, key_id=key_id)
    return auth.sign(msg, key, auth.ALG_HMAC_SHA256).to_bytes()


def request(eid_text: str, nonce: int) -> bytes:
    prefix = EidPrefix.parse(eid_text)
    req = MapRequest(nonce, (RequestRecord.for_prefix(prefix),), (IPv4Address(PEER[0]),))
    dst = prefix.network.network_address
    return EncapsulatedControlMessage.wrap(req, IPv4Address(PEER[0]), dst, 4343).to_bytes()


def test_map_server_answers_the_longest_registered_prefix_on_both_paths() -> None:
    for fast in (True, False):
        ms, t = server()
        ms.fast_path = fast
        for i, p in enumerate(("10.1.0.0/16", "10.1.5.0/24", "10.1.5.128/25")):
            ms.datagram_received(register(p, i + 1), PEER)
        assert [type(m) for m in t.take()] == [MapNotify] * 3
        for i, (q, want) in enumerate(
            [
                ("10.1.5.200/32", "10.1.5.128/25"),
                ("10.1.5.1/32", "10.1.5.0/24"),
                ("10.1.6.1/32", "10.1.0.0/16"),
            ]
        ):
            ms.datagram_received(request(q, 100 + i), PEER)
            (reply,) = t.take()
            assert isinstance(reply, MapReply) and reply.nonce == 100 + i
            assert [str(r.prefix) for r in reply.records] == [want], fast
            assert reply.records[0].locators == LOCS


def test_map_register_needs_the_site_key_id() -> None:
    ms, t = server(key_id=3)
    # Right key, wrong key-id: dropped as an authentication failure, no Map-Notify.
    ms.datagram_received(register("10.1.1.0/24", 1, key_id=0), PEER)
    ms.datagram_received(register("10.1.1.0/24", 2, key_id=4), PEER)
    assert t.take() == [] and len(ms.registrations) == 0 and ms.stats["bad_auth"] == 2
    ms.datagram_received(register("10.1.1.0/24", 3, key_id=3), PEER)
    (notify,) = t.take()
    assert isinstance(notify, MapNotify) and notify.nonce == 3 and notify.key_id == 3
    assert len(ms.registrations) == 1 and ms.stats["bad_auth"] == 2
    # Wrong key with the right key-id fails as well.
    ms.datagram_received(register("10.1.2.0/24", 4, key_id=3, key="other"), PEER)
    assert t.take() == [] and ms.stats["bad_auth"] == 3 and len(ms.registrations) == 1


# --- the xTR: a Map-Notify acknowledges a Map-Register only with its nonce ------------------


def test_xtr_takes_a_map_notify_as_the_ack_only_with_the_pending_nonce() -> None:
    async def main() -> None:
        ms_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ms_sock.bind(("127.0.0.1", 0))
        ms_sock.settimeout(10)
        ms_addr = ms_sock.getsockname()
        doc = {
            "listen": "127.0.0.1:0",
            "map_servers": [{"address": f"{ms_addr[0]}:{ms_addr[1]}", "key": "kk"}],
            "database": [{"prefix": "10.1.0.0/16", "locators": [{"address": "127.0.0.1"}]}],
        }
        xtr, t, _ = await open_xtr(xtr_config_from_dict(doc))
        loop = asyncio.get_running_loop()
        try:
            data, addr = await loop.run_in_executor(None, ms_sock.recvfrom, 4096)
            reg = decode_message(data)
            assert isinstance(reg, MapRegister)
            # A correctly signed Map-Notify from the map-server, with another nonce, while
            # the register is pending: not its ack (an unsolicited notify, acknowledged).
            wrong = MapNotify(nonce=reg.nonce ^ 0x5A5A, records=reg.records)
            ms_sock.sendto(auth.sign(wrong, "kk", reg.alg_id).to_bytes(), addr)
            data, _ = await loop.run_in_executor(None, ms_sock.recvfrom, 4096)
            ack = decode_message(data)
            assert isinstance(ack, MapNotifyAck) and ack.nonce == wrong.nonce
            assert xtr.registered == {} and xtr.stats["map_notify"] == 0
            early = [xtr.events.get_nowait() for _ in range(xtr.events.qsize())]
            assert not any(isinstance(e, RegistrationAcked) for e in early), early
            # The Map-Notify with the register's nonce is its ack.
            right = MapNotify(nonce=reg.nonce, records=reg.records)
            ms_sock.sendto(auth.sign(right, "kk", reg.alg_id).to_bytes(), addr)
            while True:
                ev = await asyncio.wait_for(xtr.events.get(), 10)
                if isinstance(ev, RegistrationAcked):
                    break
            assert ev.nonce == reg.nonce and xtr.stats["map_notify"] == 1
            assert list(xtr.registered) == [f"{ms_addr[0]}:{ms_addr[1]}"]
        finally:
            await close_xtr(xtr, t, None)
            ms_sock.close()

    asyncio.run(main())
