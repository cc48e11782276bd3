"""Longest-prefix match over EID prefixes, per instance-id and address family.

Prefixes are kept as integers in one dict per mask length, so a lookup costs
one dict probe per distinct mask length in use (a handful in practice), and a
sorted list of prefix start addresses answers "does anything stored lie
inside this range?" with one bisection.  That second query yields the
least-specific prefix that covers an address and overlaps nothing stored: the
prefix a negative Map-Reply should carry (RFC 9301 §8.4).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pacao.lisp.address import EidPrefix, Network

T = TypeVar("T")


@dataclass
class _Space(Generic[T]):
    bits: int
    by_len: dict[int, dict[int, T]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)  # descending
    starts: list[int] = field(default_factory=list)  # sorted, with repeats


def _key(prefix: EidPrefix) -> tuple[tuple[int, int], int, int, int]:
    net = prefix.network
    bits = net.max_prefixlen
    return (prefix.instance_id, net.version), bits, int(net.network_address), net.prefixlen


class PrefixTable(Generic[T]):
    """A map from EID prefixes to values with longest-prefix-match lookups."""

    def __init__(self) -> None:
        self._spaces: dict[tuple[int, int], _Space[T]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, prefix: EidPrefix) -> bool:
        return self.get(prefix) is not None

    def get(self, prefix: EidPrefix) -> T | None:
        space_key, _bits, start, plen = _key(prefix)
        space = self._spaces.get(space_key)
        if space is None:
            return None
        return space.by_len.get(plen, {}).get(start)

    def insert(self, prefix: EidPrefix, value: T) -> None:
        space_key, bits, start, plen = _key(prefix)
        space = self._spaces.get(space_key)
        if space is None:
            space = self._spaces[space_key] = _Space(bits)
        table = space.by_len.get(plen)
        if table is None:
            table = space.by_len[plen] = {}
            space.lengths = sorted(space.by_len, reverse=True)
        if start not in table:
            bisect.insort(space.starts, start)
            self._size += 1
        table[start] = value

    def remove(self, prefix: EidPrefix) -> T | None:
        space_key, _bits, start, plen = _key(prefix)
        space = self._spaces.get(space_key)
        if space is None:
            return None
        table = space.by_len.get(plen)
        if table is None or start not in table:
            return None
        value = table.pop(start)
        i = bisect.bisect_left(space.starts, start)
        del space.starts[i]
        self._size -= 1
        if not table:
            del space.by_len[plen]
            space.lengths = sorted(space.by_len, reverse=True)
        return value

    def lookup(self, query: EidPrefix) -> tuple[EidPrefix, T] | None:
        """The most specific stored prefix that contains `query` (LPM)."""
        space_key, bits, start, plen = _key(query)
        space = self._spaces.get(space_key)
        if space is None:
            return None
        for length in space.lengths:
            if length > plen:
                continue
            masked = start >> (bits - length) << (bits - length) if length else 0
            hit = space.by_len[length].get(masked)
            if hit is not None:
                return _make(query, masked, length), hit
        return None

    def match(self, space_key: tuple[int, int], address: int, plen: int) -> T | None:
        """`lookup` for a raw (instance-id, version) key and integer address, no objects built.

        The map-resolver's fast path uses it; `address` may carry host bits."""
        space = self._spaces.get(space_key)
        if space is None:
            return None
        bits = space.bits
        by_len = space.by_len
        for length in space.lengths:
            if length > plen:
                continue
            shift = bits - length
            hit = by_len[length].get(address >> shift << shift)
            if hit is not None:
                return hit
        return None

    def overlaps(self, query: EidPrefix) -> bool:
        """True when a stored prefix contains `query` or lies inside it."""
        if self.lookup(query) is not None:
            return True
        return self._inside(query)

    def _inside(self, query: EidPrefix) -> bool:
        space_key, bits, start, plen = _key(query)
        space = self._spaces.get(space_key)
        if space is None:
            return False
        end = start | ((1 << (bits - plen)) - 1)
        i = bisect.bisect_left(space.starts, start)
        return i < len(space.starts) and space.starts[i] <= end

    def gap(self, query: EidPrefix, shortest: int = 0) -> EidPrefix | None:
        """Least-specific prefix (mask >= `shortest`) holding query's first address
        and overlapping no stored prefix; None when that address is covered."""
        space_key, bits, start, _ = _key(query)
        host = EidPrefix(query.instance_id, _net(query, start, bits))
        if self.lookup(host) is not None:
            return None
        space = self._spaces.get(space_key)
        if space is None:
            return _make(query, start >> (bits - shortest) << (bits - shortest), shortest)
        # "some stored prefix lies inside candidate /L" is monotone in L: bisect on L.
        lo, hi = shortest, bits
        while lo < hi:
            mid = (lo + hi) // 2
            base = start >> (bits - mid) << (bits - mid) if mid else 0
            if self._inside(_make(query, base, mid)):
                lo = mid + 1
            else:
                hi = mid
        base = start >> (bits - lo) << (bits - lo) if lo else 0
        return _make(query, base, lo)

    def items(self) -> Iterator[tuple[EidPrefix, T]]:
        for (iid, version), space in self._spaces.items():
            for length, table in space.by_len.items():
                for start, value in table.items():
                    net: ipaddress.IPv4Network | ipaddress.IPv6Network
                    if version == 4:
                        net = ipaddress.IPv4Network((start, length))
                    else:
                        net = ipaddress.IPv6Network((start, length))
                    yield EidPrefix(iid, net), value


def _net(query: EidPrefix, start: int, length: int) -> Network:
    if query.network.version == 4:
        return ipaddress.IPv4Network((start, length))
    return ipaddress.IPv6Network((start, length))


def _make(query: EidPrefix, start: int, length: int) -> EidPrefix:
    return EidPrefix(query.instance_id, _net(query, start, length))
