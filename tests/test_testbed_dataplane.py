"""LISP data-plane pieces that need no root: header, map-cache LPM, locator choice."""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter

from pacao.testbed.daemons.dataplane import (
    FLAG_L,
    FLAG_N,
    Locator,
    MapCache,
    encap_header,
    flow_hash,
    parse_header,
)


def ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def test_header_roundtrip_rfc9300_layout() -> None:
    hdr = encap_header(0xABCDEF, 0b101)
    assert len(hdr) == 8
    assert hdr[0] == FLAG_N | FLAG_L  # N and L set, E/V/I clear
    assert hdr[1:4] == b"\xab\xcd\xef"  # 24-bit nonce
    assert struct.unpack("!I", hdr[4:])[0] == 0b101  # locator-status-bits
    assert parse_header(hdr) == (FLAG_N | FLAG_L, 0xABCDEF, 0b101, None)
    # instance-id form: I bit, 24-bit IID then 8 LSBs
    _flags, nonce, lsb, iid = parse_header(bytes([0x48, 0, 0, 0, 0, 0, 7, 3]))
    assert (nonce, lsb, iid) == (None, 3, 7)


def loc(rloc: str, priority: int = 1, weight: int = 100, up: bool = True) -> Locator:
    return Locator(ipaddress.IPv4Address(rloc), priority, weight, up)


def test_longest_prefix_match() -> None:
    cache = MapCache()
    cache.put(ipaddress.IPv4Network("10.0.0.0/8"), [loc("172.16.0.1")])
    cache.put(ipaddress.IPv4Network("10.2.0.0/24"), [loc("172.16.0.2")])
    cache.put(ipaddress.IPv4Network("10.2.0.10/32"), [loc("172.16.0.3")])
    pick = lambda dst: cache.lookup(ip(dst))  # noqa: E731
    assert str(pick("10.2.0.10").prefix) == "10.2.0.10/32"  # type: ignore[union-attr]
    assert str(pick("10.2.0.11").prefix) == "10.2.0.0/24"  # type: ignore[union-attr]
    assert str(pick("10.9.9.9").prefix) == "10.0.0.0/8"  # type: ignore[union-attr]
    assert pick("192.168.1.1") is None
    cache.remove(ipaddress.IPv4Network("10.2.0.10/32"))
    assert str(pick("10.2.0.10").prefix) == "10.2.0.0/24"  # type: ignore[union-attr]


def test_lowest_priority_up_wins_and_255_is_never_used() -> None:
    cache = MapCache()
    prefix = ipaddress.IPv4Network("10.2.0.0/24")
    locs = [loc("172.16.0.2", 1), loc("172.16.0.3", 2), loc("172.16.0.4", 255)]
    cache.put(prefix, locs)
    entry = cache.entries[prefix]
    assert {str(entry.pick(h).rloc) for h in range(50)} == {"172.16.0.2"}  # type: ignore[union-attr]
    locs[0].priority = 3
    cache.changed(entry)
    assert {str(entry.pick(h).rloc) for h in range(50)} == {"172.16.0.3"}  # type: ignore[union-attr]
    locs[1].up = False
    cache.changed(entry)
    assert {str(entry.pick(h).rloc) for h in range(50)} == {"172.16.0.2"}  # type: ignore[union-attr]
    locs[0].up = False
    cache.changed(entry)
    assert entry.pick(1) is None  # only priority 255 left: do not use


def test_weights_split_flows_among_equal_priorities() -> None:
    cache = MapCache()
    prefix = ipaddress.IPv4Network("10.2.0.0/24")
    cache.put(prefix, [loc("172.16.0.2", 1, 75), loc("172.16.0.3", 1, 25), loc("172.16.0.4", 2)])
    entry = cache.entries[prefix]
    counts: Counter[str] = Counter()
    for port in range(4000):
        pkt = bytearray(28)
        pkt[0], pkt[9] = 0x45, 17
        pkt[12:16], pkt[16:20] = ip("10.1.0.10"), ip("10.2.0.10")
        pkt[20:24] = struct.pack("!HH", 10000 + port, 5201)
        first = entry.pick(flow_hash(bytes(pkt)))
        assert first is entry.pick(flow_hash(bytes(pkt)))  # a flow sticks to its locator
        counts[str(first.rloc)] += 1  # type: ignore[union-attr]
    assert "172.16.0.4" not in counts
    assert 0.70 < counts["172.16.0.2"] / 4000 < 0.80
