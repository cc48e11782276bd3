"""Classic libpcap files: read UDP datagrams out of captures, write test captures.

Reads Ethernet (with 802.1Q tags), BSD loopback, Linux cooked (SLL, SLL2)
and raw IPv4/IPv6 link types, in either byte order and with micro- or
nanosecond timestamps.  Writes Ethernet frames with all-zero MAC addresses,
like a Linux `lo` capture.  The IP and UDP headers are the declared tables of
:mod:`pacao.lisp.messages`.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from pacao.errors import InputError
from pacao.lisp.messages import (
    IPV4_HEADER,
    IPV6_HEADER,
    UDP_HEADER,
    IPv4Header,
    IPv6Header,
    UDPHeader,
    build_ip_udp,
)
from pacao.lisp.wire import LispDecodeError, Reader

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_MAGICS = {
    0xA1B2C3D4: ("<", 1e-6),
    0xD4C3B2A1: (">", 1e-6),
    0xA1B23C4D: ("<", 1e-9),
    0x4D3CB2A1: (">", 1e-9),
}


@dataclass(frozen=True)
class Datagram:
    """One UDP datagram from a capture (frame numbers start at 1, like tshark)."""

    frame: int
    time: float
    source: IPv4Address | IPv6Address
    source_port: int
    destination: IPv4Address | IPv6Address
    destination_port: int
    payload: bytes


def read_pcap(path: Path) -> list[Datagram]:
    """Every UDP datagram of a classic pcap file (other frames are skipped)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError("FILE", str(path), f"cannot be read ({exc.strerror})") from None
    if len(data) < 24:
        raise InputError("FILE", str(path), "is not a pcap file (too short)")
    magic = int.from_bytes(data[:4], "little")
    if magic not in _MAGICS:
        hint = " (pcapng: convert with `editcap -F pcap`)" if data[:4] == b"\n\r\r\n" else ""
        raise InputError("FILE", str(path), f"is not a classic pcap file{hint}")
    order, unit = _MAGICS[magic]
    linktype = struct.unpack(order + "I", data[20:24])[0] & 0x0FFFFFFF
    out: list[Datagram] = []
    pos, frame = 24, 0
    while pos + 16 <= len(data):
        sec, frac, caplen, _orig = struct.unpack(order + "IIII", data[pos : pos + 16])
        pos += 16
        pkt = data[pos : pos + caplen]
        pos += caplen
        frame += 1
        dgram = _udp_of(linktype, pkt, frame, sec + frac * unit)
        if dgram is not None:
            out.append(dgram)
    return out


def _udp_of(linktype: int, pkt: bytes, frame: int, ts: float) -> Datagram | None:
    try:
        if linktype == LINKTYPE_ETHERNET:
            off, ethertype = 12, int.from_bytes(pkt[12:14], "big")
            while ethertype in (0x8100, 0x88A8):
                off += 4
                ethertype = int.from_bytes(pkt[off : off + 2], "big")
            ip = pkt[off + 2 :]
        elif linktype == LINKTYPE_NULL:
            ip = pkt[4:]
        elif linktype == LINKTYPE_LINUX_SLL:
            ip = pkt[16:]
        elif linktype == LINKTYPE_LINUX_SLL2:
            ip = pkt[20:]
        elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, 12, 14):
            ip = pkt
        else:
            return None
        return _parse_ip(ip, frame, ts)
    except LispDecodeError:
        return None


def _parse_ip(ip: bytes, frame: int, ts: float) -> Datagram | None:
    if not ip:
        return None
    r = Reader(ip)
    version = ip[0] >> 4
    hdr: IPv4Header | IPv6Header
    if version == 4:
        ihl = ip[0] & 0x0F
        if ihl < 5:
            return None
        # options: decode the fixed part as if there were none, then skip them
        v4: IPv4Header = IPV4_HEADER.decode(Reader(bytes([0x45]) + ip[1:20]))
        r = Reader(ip, ihl * 4)
        if v4.protocol != 17 or v4.fragment_offset or v4.flags & 1:
            return None
        hdr = v4
    elif version == 6:
        v6: IPv6Header = IPV6_HEADER.decode(r)
        if v6.next_header != 17:
            return None
        hdr = v6
    else:
        return None
    udp: UDPHeader = UDP_HEADER.decode(r)
    length = udp.length if udp.length else 8 + r.left
    payload = r.take(max(0, min(length - 8, r.left)), "UDP.payload")
    return Datagram(
        frame,
        ts,
        hdr.source,
        udp.source_port,
        hdr.destination,
        udp.destination_port,
        payload,
    )


def frame_bytes(d: Datagram) -> bytes:
    """An Ethernet frame (zero MACs) carrying `d` in IPv4 or IPv6 + UDP."""
    ip: IPv4Header | IPv6Header
    if isinstance(d.source, IPv4Address) and isinstance(d.destination, IPv4Address):
        ip, ethertype = IPv4Header(d.source, d.destination, flags=2), 0x0800
    elif isinstance(d.source, IPv6Address) and isinstance(d.destination, IPv6Address):
        ip, ethertype = IPv6Header(d.source, d.destination), 0x86DD
    else:
        raise ValueError("source and destination address families differ")
    udp = UDPHeader(d.source_port, d.destination_port)
    return bytes(12) + ethertype.to_bytes(2, "big") + build_ip_udp(ip, udp, d.payload)


def write_pcap(path: Path, datagrams: Iterable[Datagram]) -> None:
    """Write datagrams as a classic little-endian microsecond pcap (Ethernet)."""
    parts = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
    for d in datagrams:
        frame = frame_bytes(d)
        sec = int(d.time)
        usec = min(999_999, round((d.time - sec) * 1e6))
        parts.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(parts))


def iter_lisp(datagrams: Iterable[Datagram]) -> Iterator[Datagram]:
    """Datagrams to or from the LISP control port."""
    for d in datagrams:
        if 4342 in (d.source_port, d.destination_port):
            yield d


class PcapWriter:
    """Appends datagrams to a pcap as they are sent or received (daemon `--pcap`)."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "wb")  # noqa: SIM115 - kept open for the daemon's lifetime
        self.fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        self.count = 0

    def record(self, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        try:
            d = Datagram(
                self.count + 1,
                time.time(),
                ip_address(src[0]),
                src[1],
                ip_address(dst[0]),
                dst[1],
                payload,
            )
            frame = frame_bytes(d)
        except ValueError:
            return
        sec = int(d.time)
        usec = min(999_999, round((d.time - sec) * 1e6))
        self.fh.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
        self.count += 1

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
