"""User-space LISP data plane (RFC 9300 section 5) for one xTR, on a TUN device.

ITR: packets the kernel routes into the TUN (remote EID prefixes) are looked up in
the map-cache (longest-prefix match), a locator is chosen (lowest priority value
among those up, priority 255 never; weights split flows among equal priorities,
by a hash of the inner 5-tuple so a flow stays on one locator), and the packet is
sent as outer IPv4/UDP to RLOC:4341 with the 8-byte LISP header (N and L bits:
nonce and locator-status-bits). ETR: datagrams on RLOC:4341 are checked and their
inner packet is written to the TUN, from where the kernel delivers it.

A JSON-lines UNIX control socket changes the map-cache at run time, so a
controller (or the LISP agent) moving an RLOC priority moves real traffic.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import random
import selectors
import socket
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacao.testbed.daemons import control as control_channel
from pacao.testbed.daemons import drain, serve

LISP_DATA_PORT = 4341
HEADER_LEN = 8
FLAG_N = 0x80
FLAG_L = 0x40
FLAG_E = 0x20
FLAG_V = 0x10
FLAG_I = 0x08
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SOURCE_PORTS = 8


def encap_header(nonce: int, lsb: int) -> bytes:
    """N=1, L=1: flags byte, 24-bit nonce, 32-bit locator-status-bits."""
    return struct.pack("!II", (FLAG_N | FLAG_L) << 24 | (nonce & 0xFFFFFF), lsb & 0xFFFFFFFF)


def parse_header(data: bytes) -> tuple[int, int | None, int | None, int | None]:
    """(flags, nonce or None, lsb or None, instance id or None) of a LISP data header."""
    if len(data) < HEADER_LEN:
        raise ValueError("short LISP header")
    word1, word2 = struct.unpack_from("!II", data)
    flags = word1 >> 24
    nonce = word1 & 0xFFFFFF if flags & FLAG_N else None
    iid = word2 >> 8 if flags & FLAG_I else None
    if flags & FLAG_L:
        lsb: int | None = word2 & 0xFF if flags & FLAG_I else word2
    else:
        lsb = None
    return flags, nonce, lsb, iid


@dataclass
class Locator:
    rloc: ipaddress.IPv4Address
    priority: int = 1
    weight: int = 100
    up: bool = True
    packets: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "rloc": str(self.rloc),
            "priority": self.priority,
            "weight": self.weight,
            "up": self.up,
            "packets": self.packets,
        }


@dataclass
class Entry:
    prefix: ipaddress.IPv4Network
    locators: list[Locator]
    slots: list[Locator] = field(default_factory=list)

    def rebuild(self) -> None:
        """Weighted slot table over the best usable priority (empty: no usable locator)."""
        usable = [lo for lo in self.locators if lo.up and lo.priority < 255]
        self.slots = []
        if not usable:
            return
        best = min(lo.priority for lo in usable)
        chosen = [lo for lo in usable if lo.priority == best]
        if all(lo.weight == 0 for lo in chosen):
            self.slots = list(chosen)
            return
        for lo in chosen:
            self.slots.extend([lo] * lo.weight)

    def pick(self, flow: int) -> Locator | None:
        if not self.slots:
            return None
        return self.slots[flow % len(self.slots)]

    def to_json(self) -> dict[str, Any]:
        return {"prefix": str(self.prefix), "locators": [lo.to_json() for lo in self.locators]}


class MapCache:
    """EID prefix -> locator set, with longest-prefix match and a per-destination cache."""

    def __init__(self) -> None:
        self.entries: dict[ipaddress.IPv4Network, Entry] = {}
        self._by_len: list[tuple[int, dict[int, Entry]]] = []
        self._dst: dict[bytes, Entry | None] = {}

    def _index(self) -> None:
        lens: dict[int, dict[int, Entry]] = {}
        for prefix, entry in self.entries.items():
            lens.setdefault(prefix.prefixlen, {})[int(prefix.network_address)] = entry
        self._by_len = sorted(lens.items(), reverse=True)
        self._dst.clear()

    def put(self, prefix: ipaddress.IPv4Network, locators: list[Locator]) -> None:
        entry = Entry(prefix, locators)
        entry.rebuild()
        self.entries[prefix] = entry
        self._index()

    def remove(self, prefix: ipaddress.IPv4Network) -> bool:
        found = self.entries.pop(prefix, None) is not None
        self._index()
        return found

    def changed(self, entry: Entry) -> None:
        entry.rebuild()

    def lookup(self, dst: bytes) -> Entry | None:
        """Longest-prefix match of a 4-byte destination."""
        try:
            return self._dst[dst]
        except KeyError:
            pass
        value = int.from_bytes(dst, "big")
        found = None
        for plen, table in self._by_len:
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
            found = table.get(value & mask)
            if found is not None:
                break
        if len(self._dst) > 65536:
            self._dst.clear()
        self._dst[dst] = found
        return found


def flow_hash(pkt: bytes) -> int:
    """Hash of the inner (src, dst, proto, ports) so one flow keeps one locator."""
    ihl = (pkt[0] & 0x0F) * 4
    proto = pkt[9]
    key = pkt[12:20] + bytes([proto])
    if proto in (6, 17) and len(pkt) >= ihl + 4:
        key += pkt[ihl : ihl + 4]
    return zlib.crc32(key)


@dataclass
class Counters:
    encap: int = 0
    decap: int = 0
    no_mapping: int = 0
    no_locator: int = 0
    bad: int = 0


class DataPlane:
    """The xTR data-plane event loop: TUN <-> UDP 4341, plus the control socket."""

    def __init__(self, tun: str, rloc: str, lsb: int, control: Path) -> None:
        self.rloc = rloc
        self.lsb = lsb
        self.cache = MapCache()
        self.counters = Counters()
        self.rng = random.Random()
        self.tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(self.tun, TUNSETIFF, struct.pack("16sH", tun.encode(), IFF_TUN | IFF_NO_PI))
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rx.bind((rloc, LISP_DATA_PORT))
        self.rx.setblocking(False)
        self.tx: list[socket.socket] = []
        for _ in range(SOURCE_PORTS):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.bind((rloc, 0))
            s.setblocking(False)
            self.tx.append(s)
        self.ctl = control_channel.listen(control)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.tun, selectors.EVENT_READ, "tun")
        self.sel.register(self.rx, selectors.EVENT_READ, "rx")
        self.sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        self.running = True

    # -- forwarding ------------------------------------------------------------------
    def _from_tun(self) -> None:
        read, tun = os.read, self.tun
        header = struct.Struct("!II")
        flags = (FLAG_N | FLAG_L) << 24
        getrandbits = self.rng.getrandbits
        for _ in range(256):
            try:
                pkt = read(tun, 65535)
            except BlockingIOError:
                return
            if len(pkt) < 20 or pkt[0] >> 4 != 4:
                self.counters.bad += 1
                continue
            entry = self.cache.lookup(pkt[16:20])
            if entry is None:
                self.counters.no_mapping += 1
                continue
            flow = flow_hash(pkt)
            loc = entry.pick(flow)
            if loc is None:
                self.counters.no_locator += 1
                continue
            loc.packets += 1
            data = header.pack(flags | getrandbits(24), self.lsb) + pkt
            try:
                self.tx[flow % SOURCE_PORTS].sendto(data, (str(loc.rloc), LISP_DATA_PORT))
                self.counters.encap += 1
            except (BlockingIOError, OSError):
                self.counters.bad += 1

    def _from_udp(self) -> None:
        write, tun = os.write, self.tun
        for _ in range(256):
            try:
                data = self.rx.recv(65535)
            except BlockingIOError:
                return
            if len(data) < HEADER_LEN + 20 or data[HEADER_LEN] >> 4 != 4:
                self.counters.bad += 1
                continue
            try:
                write(tun, data[HEADER_LEN:])
                self.counters.decap += 1
            except OSError:
                self.counters.bad += 1

    # -- control -----------------------------------------------------------------------
    def command(self, req: dict[str, Any]) -> dict[str, Any]:
        """Apply one control request; errors come back as {"ok": false, "error": ...}."""
        op = req.get("op")
        try:
            if op == "show":
                return {"ok": True, "map_cache": [e.to_json() for e in self.cache.entries.values()]}
            if op == "stats":
                return {"ok": True, **self.counters.__dict__}
            if op == "set":
                prefix = ipaddress.IPv4Network(str(req["prefix"]))
                locs = [
                    Locator(
                        ipaddress.IPv4Address(str(lo["rloc"])),
                        int(lo.get("priority", 1)),
                        int(lo.get("weight", 100)),
                        bool(lo.get("up", True)),
                    )
                    for lo in req["locators"]
                ]
                for lo in locs:
                    if not (0 <= lo.priority <= 255 and 0 <= lo.weight <= 255):
                        raise ValueError("priority and weight are 0..255")
                self.cache.put(prefix, locs)
                return {"ok": True}
            if op in ("priority", "up", "down"):
                prefix = ipaddress.IPv4Network(str(req["prefix"]))
                entry = self.cache.entries[prefix]
                rloc = ipaddress.IPv4Address(str(req["rloc"]))
                hit = [lo for lo in entry.locators if lo.rloc == rloc]
                if not hit:
                    raise KeyError(f"no locator {rloc} for {prefix}")
                for lo in hit:
                    if op == "priority":
                        value = int(req["priority"])
                        if not 0 <= value <= 255:
                            raise ValueError("priority is 0..255")
                        lo.priority = value
                        if "weight" in req:
                            lo.weight = int(req["weight"])
                    else:
                        lo.up = op == "up"
                self.cache.changed(entry)
                return {"ok": True}
            if op == "remove":
                return {"ok": self.cache.remove(ipaddress.IPv4Network(str(req["prefix"])))}
            if op == "stop":
                self.running = False
                return {"ok": True}
        except (KeyError, ValueError, TypeError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _control(self) -> None:
        control_channel.answer(self.ctl, self.command)

    def run(self, wake: int) -> None:
        self.sel.register(wake, selectors.EVENT_READ, "wake")
        while self.running:
            for key, _ in self.sel.select(timeout=1.0):
                if key.data == "tun":
                    self._from_tun()
                elif key.data == "rx":
                    self._from_udp()
                elif key.data == "ctl":
                    self._control()
                else:
                    drain(wake)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pacao testbed LISP data plane (one xTR)")
    parser.add_argument("--tun", required=True)
    parser.add_argument("--rloc", required=True)
    parser.add_argument("--lsb", type=int, default=1)
    parser.add_argument("--control", required=True)
    parser.add_argument("--map-cache", help="JSON list of {prefix, locators}")
    args = parser.parse_args(argv)
    dp = DataPlane(args.tun, args.rloc, args.lsb, Path(args.control))
    if args.map_cache:
        for item in json.loads(Path(args.map_cache).read_text()):
            reply = dp.command({"op": "set", **item})
            if not reply["ok"]:
                print(f"bad map-cache entry {item}: {reply['error']}", file=sys.stderr)
                return 2

    return serve(dp)


if __name__ == "__main__":
    sys.exit(main())
