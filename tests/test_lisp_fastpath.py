"""The map-resolver's fast path must be invisible: same bytes out, same counters.

Every request here goes to two servers with identical state, one with the
fast path and one without; what they send and count must be equal, for
crafted requests of every shape and for hypothesis-mutated ones."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pacao.clock import ManualClock
from pacao.lisp.address import Address, EidPrefix, InstanceIdAddress
from pacao.lisp.config import config_from_dict
from pacao.lisp.mapserver import MapServer, Registration
from pacao.lisp.messages import (
    EncapsulatedControlMessage,
    Locator,
    MappingRecord,
    MapRequest,
    RequestRecord,
)

SITES = [
    {
        "name": "dc1",
        "key": "k",
        "eid_prefixes": [
            "10.1.0.0/16",
            "2001:db8:1::/48",
            {"prefix": "10.1.0.0/16", "instance_id": 7},
        ],
        "accept_more_specifics": True,
    }
]
LOCS = (Locator(IPv4Address("198.51.100.1"), 1, 50), Locator(IPv6Address("2001:db8:ff::1"), 2, 50))
PEER = ("127.0.0.1", 40000)


class Recorder:
    """A transport that keeps what the server sends."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def get_extra_info(self, name: str) -> Any:
        return (self.host, 4342)


def server(
    fast: bool, host: str = "127.0.0.1", rate: float = 1e6, burst: int = 10**6
) -> tuple[MapServer, Recorder]:
    cfg = config_from_dict(
        {
            "listen": f"{host}:0",
            "sites": SITES,
            "map_request_rate": rate,
            "map_request_burst": burst,
        }
    )
    ms = MapServer(cfg, clock=ManualClock(1000.0))  # time stands still: equal token levels
    ms.fast_path = fast
    rec = Recorder(host)
    ms.connection_made(rec)  # type: ignore[arg-type]
    regs = [
        ("10.1.2.0/24", True, 2000.0),
        ("10.1.3.0/24", False, 2000.0),  # forwarded to the ETR
        ("10.1.4.0/24", True, 999.0),  # expired
        ("10.1.4.128/25", True, 2000.0),
        ("2001:db8:1:2::/64", True, 2000.0),
        ("[7]10.1.2.0/24", True, 2000.0),
    ]
    for text, proxy, expires in regs:
        prefix = EidPrefix.parse(text)
        record = MappingRecord.for_prefix(prefix, locators=LOCS, authoritative=True)
        ms.store(Registration(prefix, "dc1", record, proxy, ("127.0.0.9", 4342), 0.0, expires))
    return ms, rec


EIDS = ["10.1.2.7", "10.1.3.7", "10.1.4.7", "10.1.4.200", "10.1.9.9", "10.7.0.1",
        "2001:db8:1:2::5", "2001:db8:1:3::5", "2001:db8:9::1"]  # fmt: skip


def request(
    eid: str,
    nonce: int,
    port: int = 5555,
    iid: int = 0,
    mask: int | None = None,
    source_eid: Address = None,
    itr_rlocs: tuple[Address, ...] = (IPv4Address("127.0.0.3"),),
    **flags: Any,
) -> bytes:
    addr = IPv4Address(eid) if "." in eid else IPv6Address(eid)
    host = EidPrefix.host(addr, iid)
    record = RequestRecord.for_prefix(host)
    if mask is not None:
        record = RequestRecord(record.eid, mask)
    req = MapRequest(nonce, (record,), itr_rlocs, source_eid=source_eid, **flags)
    src = IPv4Address("127.0.0.3") if isinstance(addr, IPv4Address) else IPv6Address("::1")
    return EncapsulatedControlMessage.wrap(req, src, addr, port).to_bytes()


def both(
    packets: list[bytes], host: str = "127.0.0.1", rate: float = 1e6, burst: int = 10**6
) -> MapServer:
    """Feed both servers; assert identical output and counters; return the fast one."""
    fast, fast_out = server(True, host, rate, burst)
    slow, slow_out = server(False, host, rate, burst)
    for ms in (fast, slow):
        ms.limiter.tokens.clear()
    for data in packets:
        for ms in (fast, slow):
            ms.datagram_received(data, PEER)
    assert fast_out.sent == slow_out.sent
    assert fast.stats == slow.stats
    return fast


def shapes() -> list[bytes]:
    out = []
    nonce = 1
    rlocs: list[tuple[Address, ...]] = [
        (IPv4Address("127.0.0.3"),),
        (IPv6Address("::3"), IPv4Address("127.0.0.4")),
        (None, IPv6Address("::3")),
        (InstanceIdAddress(3, IPv4Address("127.0.0.5")), IPv4Address("127.0.0.6")),
    ]
    sources: list[Address] = [None, IPv4Address("10.9.9.9"), IPv6Address("2001:db8::9"),
                              InstanceIdAddress(1, IPv4Address("10.9.9.9"))]  # fmt: skip
    flag_sets: list[dict[str, bool]] = [
        {},
        {"authoritative": True},
        {"pitr": True, "smr_invoked": True},
        {"local_xtr": True, "dont_map_reply": True},
        {"probe": True},
        {"smr": True},
    ]
    for eid in EIDS:
        for itr in rlocs:
            for src in sources:
                for flags in flag_sets:
                    nonce += 1
                    out.append(request(eid, nonce, source_eid=src, itr_rlocs=itr, **flags))
        out.append(request(eid, nonce + 1, iid=7))
        out.append(request(eid, nonce + 2, mask=20 if "." in eid else 60))
    return out


def test_every_shape_is_answered_identically() -> None:
    fast = both(shapes())
    assert fast.stats["proxy_reply"] > 50
    assert fast.stats["forwarded"] > 10
    assert fast.stats["negative_reply"] > 50
    assert fast.stats["ignored"] > 10


def test_ipv6_listener_answers_identically() -> None:
    both(shapes()[:400], host="::1")


def test_rate_limit_is_shared_by_both_paths() -> None:
    fast = both([request("10.1.2.7", n) for n in range(10)], rate=0.001, burst=3)
    assert fast.stats["rate_limited"] == 7
    assert fast.stats["proxy_reply"] == 3


def test_fast_path_really_runs() -> None:
    """The equivalence tests are only meaningful if the fast path takes the common case."""
    ms, out = server(True)
    assert ms.fast_request(request("10.1.2.7", 9), PEER)
    assert ms.fast_request(request("2001:db8:1:2::5", 9), PEER)
    assert len(out.sent) == 2
    for data in (
        request("10.1.9.9", 9),
        request("10.1.3.7", 9),
        request("10.1.2.7", 9, probe=True),
    ):
        assert not ms.fast_request(data, PEER)
    assert ms.stats["proxy_reply"] == 2


VALID = [request(eid, 77, itr_rlocs=(IPv4Address("127.0.0.3"), IPv6Address("::3"))) for eid in EIDS]


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
    st.integers(-12, 12),
)
def test_mutated_requests_are_answered_identically(
    base: bytes, flips: list[tuple[int, int]], resize: int
) -> None:
    buf = bytearray(base)
    for pos, value in flips:
        if pos < len(buf):
            buf[pos] = value
    if resize < 0:
        buf = buf[:resize]
    else:
        buf += bytes(random.Random(resize).randrange(256) for _ in range(resize))
    both([bytes(buf)])
