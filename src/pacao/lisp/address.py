"""AFI-encoded addresses (RFC 9301 §5, RFC 8060 LCAF) and EID prefixes.

On the wire every address is a 16-bit AFI followed by the address: AFI 0
(no address), 1 (IPv4), 2 (IPv6) or 16387 (LCAF).  Of the LCAF types only
Instance-ID (type 2) is interpreted; others are kept as opaque payloads so
that they round-trip.  The LCAF header is itself a declared :class:`Struct`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from pacao.lisp.wire import Bits, LispDecodeError, LispEncodeError, Reader, Struct, Writer

AFI_NONE = 0
AFI_IPV4 = 1
AFI_IPV6 = 2
AFI_LCAF = 16387
LCAF_INSTANCE_ID = 2
MAX_LCAF_NESTING = 4


@dataclass(frozen=True)
class InstanceIdAddress:
    """RFC 8060 §4.1 Instance-ID LCAF: an address inside a virtual network."""

    instance_id: int
    address: Address
    iid_mask_len: int = 0
    flags: int = 0
    rsvd1: int = 0

    def __str__(self) -> str:
        return f"[{self.instance_id}]{self.address}"


@dataclass(frozen=True)
class LcafAddress:
    """An LCAF of a type this codec does not interpret, kept verbatim."""

    lcaf_type: int
    payload: bytes
    flags: int = 0
    rsvd1: int = 0
    rsvd2: int = 0

    def __str__(self) -> str:
        return f"lcaf-{self.lcaf_type}:{self.payload.hex()}"


Address = IPv4Address | IPv6Address | InstanceIdAddress | LcafAddress | None

LCAF_HEADER = Struct(
    "LCAF",
    [
        Bits("rsvd1", 8, "reserved"),
        Bits("flags", 8, "flags"),
        Bits("lcaf_type", 8, "LCAF type (2 = Instance-ID)"),
        Bits("rsvd2", 8, "type-specific; IID mask-len for Instance-ID"),
        Bits("length", 16, "bytes that follow this field"),
    ],
)
INSTANCE_ID = Struct("Instance-ID", [Bits("instance_id", 32, "instance ID (24 bits used)")])


def decode_address(r: Reader, field: str, depth: int = 0) -> Address:
    start = r.pos
    buf = r.buf
    if r.end - start >= 6 and buf[start] == 0 and buf[start + 1] == AFI_IPV4:  # hot path
        r.pos = start + 6
        return IPv4Address(int.from_bytes(buf[start + 2 : start + 6], "big"))
    afi = int.from_bytes(r.take(2, f"{field}.afi"), "big")
    if afi == AFI_NONE:
        return None
    if afi == AFI_IPV4:
        return IPv4Address(r.take(4, field))
    if afi == AFI_IPV6:
        return IPv6Address(r.take(16, field))
    if afi != AFI_LCAF:
        raise LispDecodeError(start, f"{field}.afi", f"unsupported AFI {afi}")
    if depth >= MAX_LCAF_NESTING:
        raise LispDecodeError(start, field, "LCAF nested too deeply")
    hdr = LCAF_HEADER.decode(r)
    body_start = r.pos
    end = body_start + hdr["length"]
    if end > r.end:
        raise LispDecodeError(r.pos - 2, f"{field}.lcaf.length", "runs past the end")
    if hdr["lcaf_type"] != LCAF_INSTANCE_ID:
        return LcafAddress(
            hdr["lcaf_type"],
            r.take(hdr["length"], field),
            flags=hdr["flags"],
            rsvd1=hdr["rsvd1"],
            rsvd2=hdr["rsvd2"],
        )
    sub = Reader(r.buf, r.pos, end)
    iid = INSTANCE_ID.decode(sub)["instance_id"]
    inner = decode_address(sub, f"{field}.iid-address", depth + 1)
    if sub.pos != end:
        raise LispDecodeError(sub.pos, f"{field}.lcaf.length", "does not match the contents")
    r.pos = end
    return InstanceIdAddress(iid, inner, hdr["rsvd2"], hdr["flags"], hdr["rsvd1"])


def encode_address(w: Writer, addr: Address, field: str) -> None:
    if addr is None:
        w.put(b"\x00\x00")
    elif isinstance(addr, IPv4Address):
        w.put(b"\x00\x01" + addr.packed)
    elif isinstance(addr, IPv6Address):
        w.put(b"\x00\x02" + addr.packed)
    elif isinstance(addr, InstanceIdAddress):
        inner = Writer()
        inner.put(INSTANCE_ID.encode({"instance_id": addr.instance_id}))
        encode_address(inner, addr.address, f"{field}.iid-address")
        body = inner.getvalue()
        hdr = {
            "rsvd1": addr.rsvd1,
            "flags": addr.flags,
            "lcaf_type": LCAF_INSTANCE_ID,
            "rsvd2": addr.iid_mask_len,
            "length": len(body),
        }
        w.put(AFI_LCAF.to_bytes(2, "big") + LCAF_HEADER.encode(hdr) + body)
    elif isinstance(addr, LcafAddress):
        hdr = {
            "rsvd1": addr.rsvd1,
            "flags": addr.flags,
            "lcaf_type": addr.lcaf_type,
            "rsvd2": addr.rsvd2,
            "length": len(addr.payload),
        }
        w.put(AFI_LCAF.to_bytes(2, "big") + LCAF_HEADER.encode(hdr) + addr.payload)
    else:
        raise LispEncodeError(field, f"not an address: {addr!r}")


class AddressCodec:
    """The AFI + address element used in the message tables."""

    def decode(self, r: Reader, field: str) -> Any:
        return decode_address(r, field)

    def encode(self, w: Writer, value: Any, field: str) -> None:
        encode_address(w, value, field)


ADDRESS = AddressCodec()


def address_bits(addr: Address) -> int | None:
    """Bit length of the innermost IP address, None when there is none."""
    while isinstance(addr, InstanceIdAddress):
        addr = addr.address
    if isinstance(addr, IPv4Address):
        return 32
    if isinstance(addr, IPv6Address):
        return 128
    return None


Network = IPv4Network | IPv6Network


@dataclass(frozen=True)
class EidPrefix:
    """An EID prefix in an instance (virtual network): the key of the mapping system."""

    instance_id: int
    network: Network

    @classmethod
    def parse(cls, text: str, instance_id: int = 0) -> EidPrefix:
        """'10.0.0.0/8', '2001:db8::/32' or '[7]10.0.0.0/8' (instance 7)."""
        text = text.strip()
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise ValueError(f"unclosed instance-id in {text!r}")
            instance_id = int(text[1:close])
            text = text[close + 1 :]
        if not 0 <= instance_id < 1 << 24:
            raise ValueError(f"instance-id {instance_id} out of range 0..16777215")
        return cls(instance_id, ipaddress.ip_network(text, strict=True))

    @classmethod
    def from_wire(cls, addr: Address, mask_len: int) -> EidPrefix:
        """EID prefix of a record; host bits beyond mask_len are cleared."""
        iid = 0
        if isinstance(addr, InstanceIdAddress):
            iid = addr.instance_id
            addr = addr.address
        bits = 32 if isinstance(addr, IPv4Address) else 128
        if not isinstance(addr, IPv4Address | IPv6Address):
            raise ValueError(f"not an IP EID: {addr!r}")
        if not 0 <= mask_len <= bits:
            raise ValueError(f"mask length {mask_len} out of range 0..{bits}")
        start = int(addr) >> (bits - mask_len) << (bits - mask_len) if mask_len else 0
        net: Network = (IPv4Network if bits == 32 else IPv6Network)((start, mask_len))
        return cls(iid, net)

    @classmethod
    def host(cls, addr: IPv4Address | IPv6Address, instance_id: int = 0) -> EidPrefix:
        return cls(instance_id, ipaddress.ip_network(addr))

    def to_wire(self) -> tuple[Address, int]:
        ip: Address = self.network.network_address
        if self.instance_id:
            ip = InstanceIdAddress(self.instance_id, ip)
        return ip, self.network.prefixlen

    def __str__(self) -> str:
        return f"[{self.instance_id}]{self.network}" if self.instance_id else str(self.network)
