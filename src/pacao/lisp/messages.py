"""LISP control messages (RFC 9301 §5), declared as field tables.

Each message is a frozen dataclass plus a :class:`~pacao.lisp.wire.Struct`
whose element names are the dataclass fields.  Field meanings cite the RFC
letter of each flag (RFC 9301, with RFC 6830/6833 names where those differ,
and the bits that lispers.net and Wireshark use).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, ClassVar

from pacao.lisp.address import (
    ADDRESS,
    AFI_LCAF,
    LCAF_HEADER,
    Address,
    EidPrefix,
    address_bits,
    decode_address,
    encode_address,
)
from pacao.lisp.wire import (
    Bits,
    Bytes,
    Custom,
    Flag,
    If,
    LispDecodeError,
    LispEncodeError,
    List,
    Reader,
    Struct,
    Sub,
    Tail,
    Writer,
)

LISP_CONTROL_PORT = 4342
LISP_DATA_PORT = 4341

MAP_REQUEST = 1
MAP_REPLY = 2
MAP_REGISTER = 3
MAP_NOTIFY = 4
MAP_NOTIFY_ACK = 5
MAP_REFERRAL = 6  # RFC 8111 (LISP-DDT)
INFO = 7  # Info-Request / Info-Reply (NAT traversal, draft-ietf-lisp-nat-traversal)
ENCAPSULATED_CONTROL = 8
SHARED_EXTENSION = 15  # RFC 8113 / RFC 9304
CHANGE_PRIORITY_SUBTYPE = 4095  # pacao's CHANGE-PRIORITY; experimental, not IANA-registered

# Map-Reply record actions (RFC 9301 §5.4, IANA "LISP Map-Reply Action")
ACTION_NO_ACTION = 0
ACTION_NATIVELY_FORWARD = 1
ACTION_SEND_MAP_REQUEST = 2
ACTION_DROP_NO_REASON = 3
ACTION_DROP_POLICY_DENIED = 4
ACTION_DROP_AUTH_FAILURE = 5
ACTIONS = {
    0: "no-action",
    1: "natively-forward",
    2: "send-map-request",
    3: "drop/no-reason",
    4: "drop/policy-denied",
    5: "drop/auth-failure",
}
# Map-Referral record actions (RFC 8111 section 6.4.2, IANA "LISP-DDT Referral Actions")
REFERRAL_ACTIONS = {
    0: "node-referral",
    1: "ms-referral",
    2: "ms-ack",
    3: "ms-not-registered",
    4: "delegation-hole",
    5: "not-authoritative",
}


def _mask_ok(values: Mapping[str, Any]) -> tuple[str, str] | None:
    bits = address_bits(values["eid"])
    if bits is not None and values["eid_mask_len"] > bits:
        return "eid_mask_len", f"{values['eid_mask_len']} exceeds {bits} address bits"
    return None


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Locator:
    """One RLOC of a mapping with its unicast/multicast priority and weight."""

    address: Address
    priority: int = 1
    weight: int = 100
    m_priority: int = 255
    m_weight: int = 0
    local: bool = False
    probed: bool = False
    reachable: bool = True
    unused: int = 0


LOCATOR = Struct(
    "Locator",
    [
        Bits("priority", 8, "unicast priority; 255 = do not use for unicast"),
        Bits("weight", 8, "unicast weight among equal priorities"),
        Bits("m_priority", 8, "multicast priority"),
        Bits("m_weight", 8, "multicast weight"),
        Bits("unused", 13, "unused flags"),
        Flag("local", "L: the locator is local to the sender"),
        Flag("probed", "p: RLOC-probe reply from this locator"),
        Flag("reachable", "R: the locator is reachable"),
        Custom("address", ADDRESS, "Loc-AFI + locator address"),
    ],
    factory=Locator,
)


@dataclass(frozen=True)
class MappingRecord:
    """An EID-prefix to locator-set mapping (Map-Reply/Register/Notify record)."""

    eid: Address
    eid_mask_len: int
    ttl: int = 1440
    locators: tuple[Locator, ...] = ()
    action: int = ACTION_NO_ACTION
    authoritative: bool = False
    map_version: int = 0
    reserved: int = 0
    reserved2: int = 0

    @classmethod
    def for_prefix(cls, prefix: EidPrefix, **kw: Any) -> MappingRecord:
        eid, mask = prefix.to_wire()
        return cls(eid=eid, eid_mask_len=mask, **kw)

    @property
    def prefix(self) -> EidPrefix:
        return EidPrefix.from_wire(self.eid, self.eid_mask_len)


MAPPING_RECORD = Struct(
    "Mapping-Record",
    [
        Bits("ttl", 32, "Record TTL in minutes"),
        Bits("locator_count", 8, "number of locators", count_of="locators"),
        Bits("eid_mask_len", 8, "EID mask length"),
        Bits("action", 3, "ACT: action for negative replies (0 no-action, 1 native fwd, ...)"),
        Flag("authoritative", "A: sent by an authoritative source (ETR)"),
        Bits("reserved", 12, "reserved"),
        Bits("reserved2", 4, "Rsvd"),
        Bits("map_version", 12, "Map-Version number"),
        Custom("eid", ADDRESS, "EID-Prefix-AFI + EID prefix"),
        List("locators", LOCATOR, "locator_count", "locator records"),
    ],
    factory=MappingRecord,
    check=_mask_ok,
)


@dataclass(frozen=True)
class RequestRecord:
    """An EID prefix asked for in a Map-Request."""

    eid: Address
    eid_mask_len: int
    reserved: int = 0

    @classmethod
    def for_prefix(cls, prefix: EidPrefix) -> RequestRecord:
        eid, mask = prefix.to_wire()
        return cls(eid=eid, eid_mask_len=mask)

    @property
    def prefix(self) -> EidPrefix:
        return EidPrefix.from_wire(self.eid, self.eid_mask_len)


REQUEST_RECORD = Struct(
    "Request-Record",
    [
        Bits("reserved", 8, "reserved (lispers.net: 0x80 = N, notify-me for pubsub)"),
        Bits("eid_mask_len", 8, "EID mask length"),
        Custom("eid", ADDRESS, "EID-Prefix-AFI + EID prefix"),
    ],
    factory=RequestRecord,
    check=_mask_ok,
)

ITR_RLOC = Struct(
    "ITR-RLOC", [Custom("address", ADDRESS, "ITR-RLOC-AFI + address")], single="address"
)


# --------------------------------------------------------------------------- messages


class Message:
    """Base of the control messages: `to_bytes()` and a type code."""

    TYPE: ClassVar[int]
    STRUCT: ClassVar[Struct]

    def to_bytes(self) -> bytes:
        return self.STRUCT.encode(self)


@dataclass(frozen=True)
class MapRequest(Message):
    """Map-Request (type 1): ask for a mapping, probe an RLOC (P), or solicit one (S)."""

    nonce: int
    records: tuple[RequestRecord, ...]
    itr_rlocs: tuple[Address, ...]
    source_eid: Address = None
    authoritative: bool = False
    map_data_present: bool = False
    probe: bool = False
    smr: bool = False
    pitr: bool = False
    smr_invoked: bool = False
    reserved_r: bool = False
    xtr_id_present: bool = False
    reserved: int = 0
    local_xtr: bool = False
    dont_map_reply: bool = False
    map_reply: MappingRecord | None = None
    xtr_id: bytes | None = None
    trailer: bytes = b""

    TYPE: ClassVar[int] = MAP_REQUEST


MapRequest.STRUCT = Struct(
    "Map-Request",
    [
        Bits("type", 4, "message type", const=MAP_REQUEST),
        Flag("authoritative", "A: authoritative (set by an ETR or probing ITR)"),
        Flag("map_data_present", "M: a Map-Reply record follows the EID records"),
        Flag("probe", "P: RLOC-probe"),
        Flag("smr", "S: Solicit-Map-Request"),
        Flag("pitr", "p: sent by a Proxy-ITR"),
        Flag("smr_invoked", "s: sent because of an SMR"),
        Flag("reserved_r", "R: reserved"),
        Flag("xtr_id_present", "I: xTR-ID follows the records (RFC 9437 pubsub)"),
        Bits("reserved", 5, "reserved"),
        Flag("local_xtr", "L: sent by a local xTR"),
        Flag("dont_map_reply", "D: do not send a Map-Reply"),
        Bits("irc", 5, "ITR-RLOC count minus one", count_of="itr_rlocs", bias=1),
        Bits("record_count", 8, "EID records", count_of="records"),
        Bits("nonce", 64, "nonce echoed by the reply"),
        Custom("source_eid", ADDRESS, "Source-EID-AFI + source EID (AFI 0 when none)"),
        List("itr_rlocs", ITR_RLOC, "irc", "ITR-RLOC-AFI + address, IRC+1 times", bias=1),
        List("records", REQUEST_RECORD, "record_count", "EID prefixes asked for"),
        If("map_data_present", (Custom("map_reply", Sub(MAPPING_RECORD), "Map-Reply record"),)),
        If("xtr_id_present", (Bytes("xtr_id", 16, "xTR-ID (128 bits)"),)),
        Tail("trailer", "trailing bytes (site-ID or extensions), kept verbatim"),
    ],
    factory=MapRequest,
)


@dataclass(frozen=True)
class MapReply(Message):
    """Map-Reply (type 2): mappings, negative replies (no locators) or probe replies (P)."""

    nonce: int
    records: tuple[MappingRecord, ...]
    probe: bool = False
    echo_nonce: bool = False
    security: bool = False
    reserved: int = 0
    trailer: bytes = b""

    TYPE: ClassVar[int] = MAP_REPLY


MapReply.STRUCT = Struct(
    "Map-Reply",
    [
        Bits("type", 4, "message type", const=MAP_REPLY),
        Flag("probe", "P: reply to an RLOC-probe"),
        Flag("echo_nonce", "E: echo-nonce locator reachability enabled"),
        Flag("security", "S: LISP-SEC data follows"),
        Bits("reserved", 17, "reserved"),
        Bits("record_count", 8, "records", count_of="records"),
        Bits("nonce", 64, "nonce copied from the Map-Request"),
        List("records", MAPPING_RECORD, "record_count", "mapping records"),
        Tail("trailer", "trailing bytes (LISP-SEC), kept verbatim"),
    ],
    factory=MapReply,
)


@dataclass(frozen=True)
class MapRegister(Message):
    """Map-Register (type 3): an ETR registers its EID prefixes with a Map-Server."""

    nonce: int
    records: tuple[MappingRecord, ...]
    key_id: int = 0
    alg_id: int = 0
    auth_data: bytes = b""
    proxy_reply: bool = False
    security: bool = False
    xtr_id_present: bool = False
    rtr: bool = False
    reserved: int = 0
    use_ttl_for_timeout: bool = False
    merge: bool = False
    mobile_node: bool = False
    want_map_notify: bool = False
    xtr_id: bytes | None = None
    site_id: bytes | None = None
    trailer: bytes = b""

    TYPE: ClassVar[int] = MAP_REGISTER


_AUTH_ELEMENTS: tuple[Bits | Bytes, ...] = (
    Bits("nonce", 64, "nonce"),
    Bits("key_id", 8, "Key ID (RFC 6833: high byte of the 16-bit Key ID)"),
    Bits("alg_id", 8, "Algorithm ID: 1 HMAC-SHA-1, 2 HMAC-SHA-256"),
    Bits("auth_len", 16, "authentication data length", length_of="auth_data"),
    Bytes("auth_data", "auth_len", "HMAC over the message with this field zeroed"),
)
_XTR_ID = If(
    "xtr_id_present",
    (
        Bytes("xtr_id", 16, "xTR-ID (128 bits)"),
        Bytes("site_id", 8, "site-ID (64 bits)"),
    ),
)

MapRegister.STRUCT = Struct(
    "Map-Register",
    [
        Bits("type", 4, "message type", const=MAP_REGISTER),
        Flag("proxy_reply", "P: Map-Server answers Map-Requests for these prefixes"),
        Flag("security", "S: LISP-SEC capable"),
        Flag("xtr_id_present", "I: xTR-ID and site-ID follow the records"),
        Flag("rtr", "R: built for an RTR (NAT traversal)"),
        Bits("reserved", 12, "reserved"),
        Flag("use_ttl_for_timeout", "T: time the registration out after Record TTL"),
        Flag("merge", "a: merge request"),
        Flag("mobile_node", "m: mobile node (lispers.net)"),
        Flag("want_map_notify", "M: want a Map-Notify acknowledgement"),
        Bits("record_count", 8, "records", count_of="records"),
        *_AUTH_ELEMENTS,
        List("records", MAPPING_RECORD, "record_count", "mapping records"),
        _XTR_ID,
        Tail("trailer", "trailing bytes, kept verbatim"),
    ],
    factory=MapRegister,
)


@dataclass(frozen=True)
class MapNotify(Message):
    """Map-Notify (type 4): acknowledges a Map-Register or announces a mapping change."""

    nonce: int
    records: tuple[MappingRecord, ...]
    key_id: int = 0
    alg_id: int = 0
    auth_data: bytes = b""
    xtr_id_present: bool = False
    rtr: bool = False
    reserved: int = 0
    xtr_id: bytes | None = None
    site_id: bytes | None = None
    trailer: bytes = b""

    TYPE: ClassVar[int] = MAP_NOTIFY


@dataclass(frozen=True)
class MapNotifyAck(MapNotify):
    """Map-Notify-Ack (type 5): an xTR acknowledges a Map-Notify (same layout)."""

    TYPE: ClassVar[int] = MAP_NOTIFY_ACK


def _notify_struct(name: str, type_code: int, factory: type[MapNotify]) -> Struct:
    return Struct(
        name,
        [
            Bits("type", 4, "message type", const=type_code),
            Flag("xtr_id_present", "I: xTR-ID and site-ID follow the records"),
            Flag("rtr", "R: built for an RTR"),
            Bits("reserved", 18, "reserved"),
            Bits("record_count", 8, "records", count_of="records"),
            *_AUTH_ELEMENTS,
            List("records", MAPPING_RECORD, "record_count", "mapping records"),
            _XTR_ID,
            Tail("trailer", "trailing bytes, kept verbatim"),
        ],
        factory=factory,
    )


MapNotify.STRUCT = _notify_struct("Map-Notify", MAP_NOTIFY, MapNotify)
MapNotifyAck.STRUCT = _notify_struct("Map-Notify-Ack", MAP_NOTIFY_ACK, MapNotifyAck)


@dataclass(frozen=True)
class ChangePriority(Message):
    """CHANGE-PRIORITY (Raad et al. 2014) as an RFC 8113 shared extension message.

    An ETR tells the ITRs caching its mappings the new locator priorities and
    weights directly; they switch without a Map-Request round trip.  Signed
    like a Map-Notify (HMAC over the message with the auth field zeroed, at
    the same offset), answered by the same message with the A bit set.
    """

    nonce: int
    records: tuple[MappingRecord, ...]
    ack: bool = False
    key_id: int = 0
    alg_id: int = 0
    auth_data: bytes = b""
    reserved: int = 0
    trailer: bytes = b""

    TYPE: ClassVar[int] = SHARED_EXTENSION


ChangePriority.STRUCT = Struct(
    "Change-Priority",
    [
        Bits("type", 4, "message type: shared extension", const=SHARED_EXTENSION),
        Bits("subtype", 12, "RFC 8113 sub-type: CHANGE-PRIORITY", const=CHANGE_PRIORITY_SUBTYPE),
        Flag("ack", "A: acknowledgement of a CHANGE-PRIORITY with this nonce"),
        Bits("reserved", 7, "reserved"),
        Bits("record_count", 8, "records", count_of="records"),
        *_AUTH_ELEMENTS,
        List("records", MAPPING_RECORD, "record_count", "mappings with the new priorities"),
        Tail("trailer", "trailing bytes, kept verbatim"),
    ],
    factory=ChangePriority,
)


# --------------------------------------------------------------------------- LISP-DDT


@dataclass(frozen=True)
class ReferralSignature:
    """A signature section of a Map-Referral record (RFC 8111 section 6.4.1)."""

    original_ttl: int
    expiration: int
    inception: int
    key_tag: int
    algorithm: int
    signature: bytes
    reserved: int = 0


REFERRAL_SIGNATURE = Struct(
    "Referral-Signature",
    [
        Bits("original_ttl", 32, "Original Record TTL"),
        Bits("expiration", 32, "Signature Expiration (Unix seconds)"),
        Bits("inception", 32, "Signature Inception (Unix seconds)"),
        Bits("key_tag", 16, "Key Tag: which key of the signer"),
        Bits("sig_length", 16, "Sig Length: signature bytes", length_of="signature"),
        Bits("algorithm", 8, "Sig-Algorithm"),
        Bits("reserved", 24, "reserved"),
        Bytes("signature", "sig_length", "Signature"),
    ],
    factory=ReferralSignature,
)


@dataclass(frozen=True)
class ReferralRecord:
    """A Map-Referral record: an EID prefix and where to ask next (RFC 8111 section 6.4)."""

    eid: Address
    eid_mask_len: int
    ttl: int = 1440
    referrals: tuple[Locator, ...] = ()
    action: int = 0
    authoritative: bool = False
    incomplete: bool = False
    reserved: int = 0
    map_version: int = 0
    signatures: tuple[ReferralSignature, ...] = ()

    @classmethod
    def for_prefix(cls, prefix: EidPrefix, **kw: Any) -> ReferralRecord:
        eid, mask = prefix.to_wire()
        return cls(eid=eid, eid_mask_len=mask, **kw)

    @property
    def prefix(self) -> EidPrefix:
        return EidPrefix.from_wire(self.eid, self.eid_mask_len)


REFERRAL_RECORD = Struct(
    "Referral-Record",
    [
        Bits("ttl", 32, "Record TTL in minutes"),
        Bits("referral_count", 8, "Referral Count: referral locators", count_of="referrals"),
        Bits("eid_mask_len", 8, "EID mask length"),
        Bits("action", 3, "ACT: referral action (0 node-referral, 1 ms-referral, 2 ms-ack, ...)"),
        Flag("authoritative", "A: sent by an authoritative DDT node"),
        Flag("incomplete", "I: the referral set is incomplete"),
        Bits("reserved", 11, "reserved"),
        Bits("sig_count", 4, "SigCnt: signature sections", count_of="signatures"),
        Bits("map_version", 12, "Map-Version number"),
        Custom("eid", ADDRESS, "EID-Prefix-AFI + EID prefix"),
        List("referrals", LOCATOR, "referral_count", "referral locators (DDT nodes / Map-Servers)"),
        List("signatures", REFERRAL_SIGNATURE, "sig_count", "signature sections"),
    ],
    factory=ReferralRecord,
    check=_mask_ok,
)


# --------------------------------------------------------------------------- NAT traversal


@dataclass(frozen=True)
class NatTraversal:
    """NAT-Traversal LCAF (type 7) of an Info-Reply: what the Map-Server saw of the ETR.

    The RTR list runs to the end of the message.  The LCAF length is kept as
    received (None: computed when encoding), because lispers.net sends a fixed
    16 whatever the addresses, and decoding then re-encoding must be exact."""

    ms_port: int
    etr_port: int
    global_etr_rloc: Address
    ms_rloc: Address
    private_etr_rloc: Address
    rtr_rlocs: tuple[Address, ...] = ()
    rsvd1: int = 0
    flags: int = 0
    rsvd2: int = 0
    length: int | None = None


@dataclass(frozen=True)
class DistinguishedName:
    """AFI 17 (Distinguished Name): a NUL-terminated string; lispers.net puts its
    hostname in the Info-Request this way."""

    name: str

    def __str__(self) -> str:
        return self.name


AFI_DISTINGUISHED_NAME = 17
LCAF_NAT_TRAVERSAL = 7
NAT_PORTS = Struct(
    "NAT-Traversal",
    [
        Bits("ms_port", 16, "MS UDP port number"),
        Bits("etr_port", 16, "ETR UDP port number (as translated by the NAT)"),
    ],
)


class _InfoAddressCodec:
    """The last element of an Info message: AFI 0 or a Distinguished Name (request),
    the NAT-Traversal LCAF (reply); any other address through the common codec."""

    def decode(self, r: Reader, field: str) -> Any:
        if r.left < 2:
            raise LispDecodeError(r.pos, field, f"needs 2 bytes, {r.left} left")
        afi = int.from_bytes(r.buf[r.pos : r.pos + 2], "big")
        if afi == AFI_DISTINGUISHED_NAME:
            start = r.pos
            end = r.buf.find(b"\x00", r.pos + 2, r.end)
            if end < 0:
                raise LispDecodeError(start, field, "Distinguished Name without a NUL terminator")
            r.take(2, field)
            name = r.take(end - r.pos, field).decode("latin-1")
            r.take(1, field)
            return DistinguishedName(name)
        if afi != AFI_LCAF or r.left < 8 or r.buf[r.pos + 4] != LCAF_NAT_TRAVERSAL:
            return decode_address(r, field)
        r.take(2, field)
        hdr = LCAF_HEADER.decode(r)
        ports = NAT_PORTS.decode(r)
        global_etr = decode_address(r, f"{field}.global_etr_rloc")
        ms_rloc = decode_address(r, f"{field}.ms_rloc")
        private_etr = decode_address(r, f"{field}.private_etr_rloc")
        rtrs = []
        while r.left:
            rtrs.append(decode_address(r, f"{field}.rtr_rlocs"))
        return NatTraversal(
            ports["ms_port"], ports["etr_port"], global_etr, ms_rloc, private_etr,
            rtr_rlocs=tuple(rtrs), rsvd1=hdr["rsvd1"], flags=hdr["flags"], rsvd2=hdr["rsvd2"],
            length=hdr["length"],
        )  # fmt: skip

    def encode(self, w: Any, value: Any, field: str) -> None:
        if isinstance(value, DistinguishedName):
            w.put(AFI_DISTINGUISHED_NAME.to_bytes(2, "big"))
            w.put(value.name.encode("latin-1") + b"\x00")
            return
        if not isinstance(value, NatTraversal):
            encode_address(w, value, field)
            return
        body = Writer()
        body.put(NAT_PORTS.encode({"ms_port": value.ms_port, "etr_port": value.etr_port}))
        for addr in (value.global_etr_rloc, value.ms_rloc, value.private_etr_rloc):
            encode_address(body, addr, f"{field}.rloc")
        for addr in value.rtr_rlocs:
            encode_address(body, addr, f"{field}.rtr_rlocs")
        data = body.getvalue()
        hdr = {
            "rsvd1": value.rsvd1,
            "flags": value.flags,
            "lcaf_type": LCAF_NAT_TRAVERSAL,
            "rsvd2": value.rsvd2,
            "length": len(data) if value.length is None else value.length,
        }
        w.put(AFI_LCAF.to_bytes(2, "big") + LCAF_HEADER.encode(hdr) + data)


INFO_ADDRESS = _InfoAddressCodec()


@dataclass(frozen=True)
class MapReferral(Message):
    """Map-Referral (type 6, RFC 8111): a DDT node's answer to a Map-Request."""

    nonce: int
    records: tuple[ReferralRecord, ...]
    reserved: int = 0
    trailer: bytes = b""

    TYPE: ClassVar[int] = MAP_REFERRAL


MapReferral.STRUCT = Struct(
    "Map-Referral",
    [
        Bits("type", 4, "message type", const=MAP_REFERRAL),
        Bits("reserved", 20, "reserved"),
        Bits("record_count", 8, "records", count_of="records"),
        Bits("nonce", 64, "nonce copied from the Map-Request"),
        List("records", REFERRAL_RECORD, "record_count", "referral records"),
        Tail("trailer", "trailing bytes, kept verbatim"),
    ],
    factory=MapReferral,
)


@dataclass(frozen=True)
class InfoMessage(Message):
    """Info-Request (R clear) / Info-Reply (R set), type 7: an xTR behind a NAT learns
    its translated address and port, and the RTRs to use (NAT traversal)."""

    nonce: int
    reply: bool = False
    key_id: int = 0
    alg_id: int = 0
    auth_data: bytes = b""
    ttl: int = 0
    eid: Address = None
    eid_mask_len: int = 0
    address: Address | NatTraversal | DistinguishedName = None
    reserved: int = 0
    reserved2: int = 0
    trailer: bytes = b""

    TYPE: ClassVar[int] = INFO

    @property
    def name(self) -> str:
        return "Info-Reply" if self.reply else "Info-Request"


InfoMessage.STRUCT = Struct(
    "Info",
    [
        Bits("type", 4, "message type", const=INFO),
        Flag("reply", "R: Info-Reply (clear: Info-Request)"),
        Bits("reserved", 27, "reserved"),
        *_AUTH_ELEMENTS,
        Bits("ttl", 32, "TTL in minutes of the Info-Reply's information"),
        Bits("reserved2", 8, "reserved"),
        Bits("eid_mask_len", 8, "EID mask length"),
        Custom("eid", ADDRESS, "EID-Prefix-AFI + EID prefix (AFI 0: none)"),
        Custom("address", INFO_ADDRESS,
               "request: AFI 0 (or 17, a hostname); reply: the NAT-Traversal LCAF (type 7)"),
        Tail("trailer", "trailing bytes, kept verbatim"),
    ],
    factory=InfoMessage,
    check=_mask_ok,
)  # fmt: skip


# --------------------------------------------------------------------------- ECM


class _RawIP:
    def __init__(self, version: int) -> None:
        self.size = 4 if version == 4 else 16

    def decode(self, r: Reader, field: str) -> Any:
        return ipaddress.ip_address(r.take(self.size, field))

    def encode(self, w: Any, value: Any, field: str) -> None:
        if not isinstance(value, IPv4Address | IPv6Address) or len(value.packed) != self.size:
            raise LispEncodeError(field, f"expected an IPv{4 if self.size == 4 else 6} address")
        w.put(value.packed)


@dataclass(frozen=True)
class IPv4Header:
    """Inner IPv4 header of an ECM (no options)."""

    source: IPv4Address
    destination: IPv4Address
    ttl: int = 64
    protocol: int = 17
    tos: int = 0
    identification: int = 0
    flags: int = 0
    fragment_offset: int = 0
    total_length: int | None = None
    checksum: int | None = None
    ihl: int = 5


def _ihl_ok(values: Mapping[str, Any]) -> tuple[str, str] | None:
    return None if values["ihl"] == 5 else ("ihl", "IPv4 options are not supported")


IPV4_HEADER = Struct(
    "IPv4",
    [
        Bits("version", 4, "IP version", const=4),
        Bits("ihl", 4, "header length in words (5: no options)"),
        Bits("tos", 8, "DSCP + ECN"),
        Bits("total_length", 16, "header + payload bytes"),
        Bits("identification", 16, "identification"),
        Bits("flags", 3, "flags (2 = DF)"),
        Bits("fragment_offset", 13, "fragment offset"),
        Bits("ttl", 8, "time to live"),
        Bits("protocol", 8, "payload protocol (17 = UDP)"),
        Bits("checksum", 16, "header checksum"),
        Custom("source", _RawIP(4), "source address"),
        Custom("destination", _RawIP(4), "destination address"),
    ],
    factory=IPv4Header,
    check=_ihl_ok,
)


@dataclass(frozen=True)
class IPv6Header:
    """Inner IPv6 header of an ECM (no extension headers)."""

    source: IPv6Address
    destination: IPv6Address
    hop_limit: int = 64
    next_header: int = 17
    traffic_class: int = 0
    flow_label: int = 0
    payload_length: int | None = None


IPV6_HEADER = Struct(
    "IPv6",
    [
        Bits("version", 4, "IP version", const=6),
        Bits("traffic_class", 8, "traffic class"),
        Bits("flow_label", 20, "flow label"),
        Bits("payload_length", 16, "payload bytes"),
        Bits("next_header", 8, "next header (17 = UDP)"),
        Bits("hop_limit", 8, "hop limit"),
        Custom("source", _RawIP(6), "source address"),
        Custom("destination", _RawIP(6), "destination address"),
    ],
    factory=IPv6Header,
)


@dataclass(frozen=True)
class UDPHeader:
    source_port: int
    destination_port: int = LISP_CONTROL_PORT
    length: int | None = None
    checksum: int | None = None


UDP_HEADER = Struct(
    "UDP",
    [
        Bits("source_port", 16, "source port"),
        Bits("destination_port", 16, "destination port"),
        Bits("length", 16, "header + payload bytes"),
        Bits("checksum", 16, "checksum (0 = none, IPv4 only)"),
    ],
    factory=UDPHeader,
)

ECM_HEADER = Struct(
    "ECM",
    [
        Bits("type", 4, "message type", const=ENCAPSULATED_CONTROL),
        Flag("security", "S: LISP-SEC"),
        Flag("ddt", "D: DDT-originated"),
        Flag("to_etr", "E: forwarded by a Map-Server to an ETR"),
        Flag("to_ms", "M: sent to a Map-Server"),
        Bits("reserved", 24, "reserved"),
    ],
)


def checksum16(data: bytes) -> int:
    """Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_checksum(src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, udp: bytes) -> int:
    """UDP checksum over the pseudo-header; 0 is sent as 0xFFFF."""
    if isinstance(src, IPv4Address):
        pseudo = src.packed + dst.packed + bytes([0, 17]) + len(udp).to_bytes(2, "big")
    else:
        pseudo = src.packed + dst.packed + len(udp).to_bytes(4, "big") + b"\x00\x00\x00\x11"
    value = checksum16(pseudo + udp)
    return value or 0xFFFF


def build_ip_udp(
    ip: IPv4Header | IPv6Header, udp: UDPHeader, payload: bytes, compute_udp_checksum: bool = True
) -> bytes:
    """IP + UDP header + payload, filling lengths and checksums left as None."""
    ulen = 8 + len(payload) if udp.length is None else udp.length
    csum = udp.checksum
    if csum is None:
        raw = UDP_HEADER.encode({**_asdict(udp), "length": ulen, "checksum": 0}) + payload
        csum = udp_checksum(ip.source, ip.destination, raw) if compute_udp_checksum else 0
    udp_bytes = UDP_HEADER.encode({**_asdict(udp), "length": ulen, "checksum": csum}) + payload
    if isinstance(ip, IPv4Header):
        values = _asdict(ip)
        if ip.total_length is None:
            values["total_length"] = 20 + len(udp_bytes)
        if ip.checksum is None:
            values["checksum"] = 0
            values["checksum"] = checksum16(IPV4_HEADER.encode(values))
        return IPV4_HEADER.encode(values) + udp_bytes
    values = _asdict(ip)
    if ip.payload_length is None:
        values["payload_length"] = len(udp_bytes)
    return IPV6_HEADER.encode(values) + udp_bytes


def _asdict(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}


@dataclass(frozen=True)
class EncapsulatedControlMessage(Message):
    """ECM (type 8): a control message with an inner IP/UDP header, sent to a Map-Resolver."""

    ip: IPv4Header | IPv6Header
    udp: UDPHeader
    message: Message
    security: bool = False
    ddt: bool = False
    to_etr: bool = False
    to_ms: bool = False
    reserved: int = 0

    TYPE: ClassVar[int] = ENCAPSULATED_CONTROL

    def to_bytes(self) -> bytes:
        head = ECM_HEADER.encode(self)
        return head + build_ip_udp(self.ip, self.udp, self.message.to_bytes())

    @classmethod
    def wrap(
        cls,
        message: Message,
        source: IPv4Address | IPv6Address,
        destination: IPv4Address | IPv6Address,
        source_port: int,
        ttl: int = 64,
    ) -> EncapsulatedControlMessage:
        """Encapsulate `message` with an inner header from `source` to the EID asked for."""
        ip: IPv4Header | IPv6Header
        if isinstance(source, IPv4Address) and isinstance(destination, IPv4Address):
            ip = IPv4Header(source, destination, ttl=ttl)
        elif isinstance(source, IPv6Address) and isinstance(destination, IPv6Address):
            ip = IPv6Header(source, destination, hop_limit=ttl)
        else:
            raise LispEncodeError("ECM.ip", "inner source and destination families differ")
        return cls(ip=ip, udp=UDPHeader(source_port, LISP_CONTROL_PORT), message=message)


_ECM_BUILDER = Struct("ECM", [], factory=EncapsulatedControlMessage)


def _decode_ecm(r: Reader, depth: int) -> EncapsulatedControlMessage:
    head = ECM_HEADER.decode(r)
    version = r.peek_u8("ECM.ip.version") >> 4
    ip: IPv4Header | IPv6Header
    if version == 4:
        v4: IPv4Header = IPV4_HEADER.decode(r)
        if v4.protocol != 17:
            raise LispDecodeError(r.pos - 11, "IPv4.protocol", f"{v4.protocol} is not UDP")
        ip = v4
    elif version == 6:
        v6: IPv6Header = IPV6_HEADER.decode(r)
        if v6.next_header != 17:
            raise LispDecodeError(r.pos - 34, "IPv6.next_header", f"{v6.next_header} is not UDP")
        ip = v6
    else:
        raise LispDecodeError(r.pos, "ECM.ip.version", f"inner IP version {version}")
    udp: UDPHeader = UDP_HEADER.decode(r)
    if udp.length is not None and udp.length != 8 + r.left:
        raise LispDecodeError(
            r.pos - 4, "UDP.length", f"{udp.length} but {8 + r.left} bytes follow"
        )
    inner = _decode(r, depth + 1)
    ecm: EncapsulatedControlMessage = _ECM_BUILDER.build(
        {
            "ip": ip,
            "udp": udp,
            "message": inner,
            "security": head["security"],
            "ddt": head["ddt"],
            "to_etr": head["to_etr"],
            "to_ms": head["to_ms"],
            "reserved": head["reserved"],
        }
    )
    return ecm


# --------------------------------------------------------------------------- dispatch

MESSAGE_CLASSES: dict[int, type[Message]] = {
    MAP_REQUEST: MapRequest,
    MAP_REPLY: MapReply,
    MAP_REGISTER: MapRegister,
    MAP_NOTIFY: MapNotify,
    MAP_NOTIFY_ACK: MapNotifyAck,
    SHARED_EXTENSION: ChangePriority,
    MAP_REFERRAL: MapReferral,
    INFO: InfoMessage,
}
MESSAGE_NAMES = {
    MAP_REQUEST: "Map-Request",
    MAP_REPLY: "Map-Reply",
    MAP_REGISTER: "Map-Register",
    MAP_NOTIFY: "Map-Notify",
    MAP_NOTIFY_ACK: "Map-Notify-Ack",
    ENCAPSULATED_CONTROL: "Encapsulated-Control-Message",
    SHARED_EXTENSION: "Change-Priority",
    MAP_REFERRAL: "Map-Referral",
    INFO: "Info-Request",  # InfoMessage.name tells a request from a reply
}


def _decode(r: Reader, depth: int = 0) -> Message:
    t = r.peek_u8("type") >> 4
    if t == ENCAPSULATED_CONTROL:
        if depth >= 2:
            raise LispDecodeError(r.pos, "ECM", "nested too deeply")
        return _decode_ecm(r, depth)
    cls = MESSAGE_CLASSES.get(t)
    if cls is None:
        raise LispDecodeError(r.pos, "type", f"unsupported message type {t}")
    msg: Message = cls.STRUCT.decode(r)
    return msg


def decode_message_unchecked(data: bytes) -> Message:
    """Decoder without the safety net; tests use it to catch stray exceptions."""
    return _decode(Reader(data if data.__class__ is bytes else bytes(data)))


def decode_message(data: bytes) -> Message:
    """Decode one LISP control message; any failure is a :class:`LispDecodeError`."""
    try:
        return decode_message_unchecked(data)
    except LispDecodeError:
        raise
    except Exception as exc:  # safety net: a decoder bug must not kill a daemon
        raise LispDecodeError(0, "message", f"undecodable ({type(exc).__name__}: {exc})") from None


def encode_message(msg: Message) -> bytes:
    return msg.to_bytes()
