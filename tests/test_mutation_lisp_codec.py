"""The LISP codec's hand-written parts (written against mutmut's survivors in lisp/messages.py).

The field tables themselves are checked by test_lisp_codec (round trips, layouts against the
RFC, the docs' tables); these tests pin the code around them, each against bytes written out
by hand from RFC 9301 (messages, ECM), RFC 1071 / RFC 768 / RFC 8200 (checksums), and the
NAT-traversal draft (Info-Request / Info-Reply): the EID mask bound, the Info message's last
element (Distinguished Name, NAT-Traversal LCAF), the ECM's inner IP/UDP headers and its
nesting limit, and the decoder's safety net.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from pacao.lisp import messages
from pacao.lisp.address import EidPrefix, InstanceIdAddress, LcafAddress
from pacao.lisp.messages import (
    DistinguishedName,
    EncapsulatedControlMessage,
    InfoMessage,
    IPv4Header,
    IPv6Header,
    Locator,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapReply,
    MapRequest,
    NatTraversal,
    ReferralRecord,
    RequestRecord,
    UDPHeader,
    build_ip_udp,
    checksum16,
    decode_message,
    decode_message_unchecked,
    udp_checksum,
)
from pacao.lisp.wire import LispDecodeError, LispEncodeError, Reader, field_table

V4 = IPv4Address("192.0.2.1")
V6 = IPv6Address("2001:db8::1")


def decode_error(data: bytes) -> LispDecodeError:
    with pytest.raises(LispDecodeError) as err:
        decode_message_unchecked(data)
    return err.value


def ones_complement_sum(data: bytes) -> int:
    """RFC 1071 written independently: add 16-bit words with end-around carry."""
    if len(data) % 2:
        data = data + b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


# --- EID mask length bound (RFC 9301 section 5.4: at most the address's bit length) ----------


def reply_with_mask(eid: object, mask: int) -> bytes:
    """A Map-Reply with one record for `eid`, its mask byte patched to `mask`."""
    rec = MappingRecord(eid=eid, eid_mask_len=0)  # type: ignore[arg-type]
    data = bytearray(MapReply(nonce=1, records=(rec,)).to_bytes())
    data[17] = mask  # 12-byte header, TTL (4), locator count (1), then the mask
    return bytes(data)


@pytest.mark.parametrize(
    ("eid", "bits"),
    [(V4, 32), (V6, 128), (InstanceIdAddress(7, IPv4Address("10.0.0.0")), 32)],
)
def test_the_eid_mask_may_reach_the_address_bits_but_not_exceed_them(
    eid: object, bits: int
) -> None:
    ok = decode_message(reply_with_mask(eid, bits))
    assert isinstance(ok, MapReply) and ok.records[0].eid_mask_len == bits
    err = decode_error(reply_with_mask(eid, bits + 1))
    assert err.field == "Mapping-Record.eid_mask_len" and err.offset == 17
    assert err.reason == f"{bits + 1} exceeds {bits} address bits"


def test_a_record_without_an_address_takes_any_mask() -> None:
    ok = decode_message(reply_with_mask(None, 255))
    assert isinstance(ok, MapReply) and ok.records[0].eid_mask_len == 255


def test_request_records_have_the_same_bound() -> None:
    req = MapRequest(nonce=1, records=(RequestRecord(V4, 32),), itr_rlocs=(V4,))
    data = bytearray(req.to_bytes())
    assert decode_message(bytes(data)) == req
    data[-7] = 33  # reserved, mask, AFI (2), address (4)
    err = decode_error(bytes(data))
    assert err.field == "Request-Record.eid_mask_len" and err.reason == "33 exceeds 32 address bits"


@pytest.mark.parametrize("cls", [MappingRecord, ReferralRecord])
def test_records_for_a_prefix_carry_its_address_mask_and_the_other_fields(cls: type) -> None:
    rec = cls.for_prefix(EidPrefix.parse("[5]10.1.0.0/16"), ttl=7, action=1)
    assert rec.eid == InstanceIdAddress(5, IPv4Address("10.1.0.0"))
    assert rec.eid_mask_len == 16 and rec.ttl == 7 and rec.action == 1
    assert rec.prefix == EidPrefix.parse("[5]10.1.0.0/16")
    req = RequestRecord.for_prefix(EidPrefix.parse("2001:db8::/32"))
    assert req == RequestRecord(IPv6Address("2001:db8::"), 32)


# --- Map-Notify and Map-Notify-Ack share one table (RFC 9301 section 5.7) -------------------


@pytest.mark.parametrize(
    ("name", "code", "cls"), [("Map-Notify", 4, MapNotify), ("Map-Notify-Ack", 5, MapNotifyAck)]
)
def test_the_notify_table_builds_the_rfc_layout(name: str, code: int, cls: type[MapNotify]) -> None:
    struct = messages._notify_struct(name, code, cls)
    assert struct.name == name and field_table(struct) == field_table(cls.STRUCT)
    rec = MappingRecord.for_prefix(EidPrefix.parse("10.1.0.0/16"), ttl=3)
    msg = cls(
        nonce=0x0102030405060708,
        records=(rec,),
        key_id=9,
        alg_id=1,
        auth_data=b"\xee" * 20,
        xtr_id_present=True,
        rtr=True,
        reserved=0x2AAAA,
        xtr_id=bytes(range(16)),
        site_id=b"\x55" * 8,
        trailer=b"\x01\x02",
    )
    data = struct.encode(msg)
    # type, I (0x08), R (0x04), 18 reserved bits, 1 record
    assert data[:4] == bytes([code << 4 | 0x0C | 0x2, 0xAA, 0xAA, 0x01])
    assert data[4:12] == bytes(range(1, 9)) and data[12:16] == bytes([9, 1, 0, 20])
    assert data[16:36] == b"\xee" * 20
    # the record: TTL 3, no locators, /16, no flags, AFI 1, 10.1.0.0
    assert data[36:52] == bytes([0, 0, 0, 3, 0, 16, 0, 0, 0, 0, 0, 1, 10, 1, 0, 0])
    assert data[52:] == bytes(range(16)) + b"\x55" * 8 + b"\x01\x02"
    assert data == msg.to_bytes()
    back = struct.decode(Reader(data))
    assert type(back) is cls and back == msg


# --- Info-Request / Info-Reply: the last element ---------------------------------------------

# type 7, R clear; nonce 5; no key, no auth data; TTL 0; reserved, mask 0; no EID (AFI 0)
INFO_HEAD = bytes.fromhex("70000000" "0000000000000005" "00000000" "00000000" "0000"
                          "0000")  # fmt: skip


def test_info_request_with_a_distinguished_name() -> None:
    msg = InfoMessage(5, address=DistinguishedName("h\xf4te"))
    data = msg.to_bytes()
    # AFI 17, the name in latin-1 (one byte per character), a NUL
    assert data == INFO_HEAD + b"\x00\x11h\xf4te\x00"
    back = decode_message(data)
    assert back == msg and str(back.address) == "h\xf4te"  # type: ignore[attr-defined]
    assert back.name == "Info-Request"  # type: ignore[attr-defined]
    # An empty name; bytes after the terminator are the trailer, however many NULs they hold.
    back = decode_message(INFO_HEAD + b"\x00\x11\x00" + b"x\x00")
    assert isinstance(back, InfoMessage)
    assert back.address == DistinguishedName("") and back.trailer == b"x\x00"


def test_info_message_address_errors() -> None:
    assert decode_message(INFO_HEAD + b"\x00\x00") == InfoMessage(5)  # AFI 0: no address
    for tail, reason in [
        (b"", "needs 2 bytes, 0 left"),
        (b"\x00", "needs 2 bytes, 1 left"),
        (b"\x00\x11", "Distinguished Name without a NUL terminator"),
        (b"\x00\x11ab", "Distinguished Name without a NUL terminator"),
    ]:
        err = decode_error(INFO_HEAD + tail)
        assert (err.offset, err.field, err.reason) == (24, "Info.address", reason), tail


NAT = NatTraversal(
    4342,
    61000,
    IPv4Address("198.51.100.7"),
    IPv4Address("203.0.113.1"),
    IPv4Address("10.0.0.2"),
    rtr_rlocs=(IPv4Address("192.0.2.9"), V6),
)
NAT_BODY = (
    "10f6" "ee48"  # MS port 4342, ETR port 61000
    "0001c6336407" "0001cb007101" "00010a000002"  # global ETR, MS, private ETR RLOCs
    "0001c0000209" "000220010db8000000000000000000000001"  # the RTRs, to the end
)  # fmt: skip


def test_info_reply_with_the_nat_traversal_lcaf() -> None:
    msg = InfoMessage(6, reply=True, ttl=1440, address=NAT)
    data = msg.to_bytes()
    head = bytes.fromhex("78000000" "0000000000000006" "00000000" "000005a0" "0000"
                         "0000")  # fmt: skip
    # AFI 16387, rsvd1, flags, type 7, rsvd2, length of what follows
    assert data.hex() == head.hex() + "4003" "00" "00" "07" "00" "002e" + NAT_BODY  # fmt: skip
    back = decode_message(data)
    assert isinstance(back, InfoMessage) and back.name == "Info-Reply"
    assert back.address == NatTraversal(**{**NAT.__dict__, "length": 0x2E})
    # Reserved bits and a length other than the contents' (lispers.net sends 16) are kept.
    odd = NatTraversal(**{**NAT.__dict__, "rsvd1": 1, "flags": 2, "rsvd2": 3, "length": 16})
    data = InfoMessage(6, reply=True, address=odd).to_bytes()
    assert data[24:32].hex() == "4003" "01" "02" "07" "03" "0010"  # fmt: skip
    back = decode_message(data)
    assert isinstance(back, InfoMessage) and back.address == odd and back.to_bytes() == data


def test_info_reply_lcaf_decode_paths() -> None:
    # Another LCAF type (Instance-ID) goes through the common address codec.
    iid = InstanceIdAddress(3, IPv4Address("10.0.0.1"))
    assert decode_message(InfoMessage(6, address=iid).to_bytes()).address == iid  # type: ignore[attr-defined]
    # Type 7 in the LCAF type byte (not in rsvd2) selects NAT traversal; an LCAF header
    # alone (8 bytes) is a NAT-Traversal LCAF without its ports: an error, not a raw LCAF.
    err = decode_error(INFO_HEAD + bytes.fromhex("4003" "00" "00" "07" "00" "0000"))  # fmt: skip
    assert err.field.startswith("NAT-Traversal.ms_port") and err.offset == 32
    raw = decode_message(INFO_HEAD + bytes.fromhex("4003" "00" "00" "09" "07" "0000"))  # fmt: skip
    assert raw.address == LcafAddress(lcaf_type=9, payload=b"", rsvd2=7)  # type: ignore[attr-defined]
    # A plain address is not taken for an LCAF, whatever its bytes (third octet 7 here).
    back = decode_message(INFO_HEAD + b"\x00\x01" + bytes([10, 0, 7, 1]) + b"zz")
    assert isinstance(back, InfoMessage)
    assert (back.address, back.trailer) == (IPv4Address("10.0.7.1"), b"zz")
    err = decode_error(INFO_HEAD + b"\x00\x63" + bytes(8))
    assert (err.field, err.offset) == ("Info.address.afi", 24)
    # Each RLOC's errors name it.
    body = bytes.fromhex(NAT_BODY)
    head = INFO_HEAD + bytes.fromhex("4003" "00" "00" "07" "00" "002e")  # fmt: skip
    for at, name in [(4, "global_etr_rloc"), (10, "ms_rloc"), (16, "private_etr_rloc")]:
        bad = head + body[:at] + b"\x00\x63" + body[at + 2 :]
        err = decode_error(bad)
        assert (err.field, err.offset) == (f"Info.address.{name}.afi", 32 + at), name
    err = decode_error(head + body[:28] + b"\x00\x63")
    assert (err.field, err.offset) == ("Info.address.rtr_rlocs.afi", 60)


def test_info_reply_encoding_errors_name_the_rloc() -> None:
    for nat, field in [
        (NatTraversal(1, 2, "x", None, None), "Info.address.rloc"),  # type: ignore[arg-type]
        (NatTraversal(1, 2, None, "x", None), "Info.address.rloc"),  # type: ignore[arg-type]
        (NatTraversal(1, 2, None, None, None, rtr_rlocs=("x",)), "Info.address.rtr_rlocs"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(LispEncodeError) as err:
            InfoMessage(6, reply=True, address=nat).to_bytes()
        assert err.value.field == field
    with pytest.raises(LispEncodeError) as err:
        InfoMessage(6, address="x").to_bytes()  # type: ignore[arg-type]
    assert err.value.field == "Info.address"


# --- checksums --------------------------------------------------------------------------------


def test_internet_checksum_rfc_1071() -> None:
    # RFC 1071 section 3's example words sum to 0xddf2.
    assert checksum16(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    assert checksum16(b"\x01") == 0xFEFF  # an odd byte is the high byte of a padded word
    assert checksum16(b"\x01\x00\x02") == 0xFFFF - 0x0300
    assert checksum16(b"") == 0xFFFF
    # 0xffff + 0xffff + 0x0001 = 0x1ffff: the carry is folded twice (0xffff + 1 = 0x10000).
    assert checksum16(bytes.fromhex("ffffffff0001")) == 0xFFFE
    assert checksum16(bytes.fromhex("ffffffff")) == 0
    for data in (b"\x12\x34\x56\x78\x9a", bytes(range(1, 200))):
        assert checksum16(data) == 0xFFFF - ones_complement_sum(data)


@pytest.mark.parametrize(("src", "dst"), [(V4, IPv4Address("10.0.0.1")), (V6, IPv6Address("::2"))])
def test_udp_checksum_covers_the_pseudo_header(
    src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address
) -> None:
    udp = bytes.fromhex("9c4010f6000e0000") + b"abcd"
    if isinstance(src, IPv4Address):  # RFC 768: src, dst, zero, protocol 17, UDP length
        pseudo = src.packed + dst.packed + bytes([0, 17, 0, len(udp)])
    else:  # RFC 8200 section 8.1: src, dst, 32-bit length, 3 zero bytes, next header 17
        pseudo = src.packed + dst.packed + len(udp).to_bytes(4, "big") + bytes([0, 0, 0, 17])
    assert udp_checksum(src, dst, udp) == 0xFFFF - ones_complement_sum(pseudo + udp)
    assert udp_checksum(dst, src, udp) == udp_checksum(src, dst, udp)  # a sum: order-free
    # A datagram whose checksum computes to 0 is sent with 0xffff (0 means "none").
    base = udp + b"\x00\x00"  # one more word, tuned below
    s = ones_complement_sum(udp_pseudo(src, dst, base) + base)
    tuned = udp + (0xFFFF - s).to_bytes(2, "big")
    assert ones_complement_sum(udp_pseudo(src, dst, tuned) + tuned) == 0xFFFF
    assert udp_checksum(src, dst, tuned) == 0xFFFF


def udp_pseudo(src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, udp: bytes) -> bytes:
    if isinstance(src, IPv4Address):
        return src.packed + dst.packed + bytes([0, 17]) + len(udp).to_bytes(2, "big")
    return src.packed + dst.packed + len(udp).to_bytes(4, "big") + bytes([0, 0, 0, 17])


# --- ECM inner headers (RFC 9301 section 5.8) ------------------------------------------------


def test_ipv4_and_udp_headers_fill_lengths_and_checksums() -> None:
    ip = IPv4Header(V4, IPv4Address("10.0.0.1"), ttl=9, identification=0x1234, flags=2)
    payload = b"hello"
    data = build_ip_udp(ip, UDPHeader(40000), payload)
    hdr, udp = data[:20], data[20:]
    assert hdr[:4] == bytes([0x45, 0, 0, 20 + 8 + 5]) and hdr[4:8] == bytes([0x12, 0x34, 0x40, 0])
    assert hdr[8:10] == bytes([9, 17]) and hdr[12:20] == V4.packed + bytes([10, 0, 0, 1])
    assert checksum16(hdr) == 0 and hdr[10:12] != b"\x00\x00"  # a valid header checksum
    assert udp[:6] == bytes.fromhex("9c4010f6000d") and udp[8:] == payload
    zeroed = udp[:6] + b"\x00\x00" + udp[8:]
    assert int.from_bytes(udp[6:8], "big") == udp_checksum(ip.source, ip.destination, zeroed)
    # Without the UDP checksum: 0; values set by the caller are kept as they are.
    bare = build_ip_udp(ip, UDPHeader(40000), payload, compute_udp_checksum=False)
    assert bare[26:28] == bytes(2)
    kept = build_ip_udp(
        IPv4Header(V4, V4, total_length=99, checksum=0xABCD),
        UDPHeader(1, 2, length=77, checksum=0x1111),
        payload,
    )
    assert kept[2:4] == bytes([0, 99]) and kept[10:12] == bytes([0xAB, 0xCD])
    assert kept[20:28] == bytes([0, 1, 0, 2, 0, 77, 0x11, 0x11])


def test_ipv6_header_fills_the_payload_length() -> None:
    ip = IPv6Header(V6, IPv6Address("::2"), hop_limit=7, traffic_class=0xAB, flow_label=0x12345)
    data = build_ip_udp(ip, UDPHeader(1000, 4342), b"xyz")
    assert data[:8] == bytes([0x6A, 0xB1, 0x23, 0x45, 0, 11, 17, 7])
    assert data[8:40] == V6.packed + IPv6Address("::2").packed
    assert data[40:46] == bytes([0x03, 0xE8, 0x10, 0xF6, 0, 11]) and data[48:] == b"xyz"
    assert int.from_bytes(data[46:48], "big") == udp_checksum(
        V6, IPv6Address("::2"), data[40:46] + b"\x00\x00" + b"xyz"
    )
    kept = build_ip_udp(replace_v6(ip, 500), UDPHeader(1, 2), b"xyz")
    assert kept[4:6] == (500).to_bytes(2, "big")


def replace_v6(ip: IPv6Header, payload_length: int) -> IPv6Header:
    return IPv6Header(**{**ip.__dict__, "payload_length": payload_length})


def test_inner_addresses_must_have_the_header_family() -> None:
    for ip, field in [
        (IPv4Header(V6, IPv4Address("1.1.1.1")), "IPv4.source"),  # type: ignore[arg-type]
        (IPv4Header(V4, "1.1.1.1"), "IPv4.destination"),  # type: ignore[arg-type]
        (IPv6Header(V4, V6), "IPv6.source"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(LispEncodeError) as err:
            build_ip_udp(ip, UDPHeader(1), b"", compute_udp_checksum=False)
        family = "IPv4" if isinstance(ip, IPv4Header) else "IPv6"
        assert err.value.field == field and err.value.reason == f"expected an {family} address"
    assert messages._RawIP(4).size == 4 and messages._RawIP(6).size == 16


REQ = MapRequest(nonce=7, records=(RequestRecord.for_prefix(EidPrefix.parse("10.1.0.0/16")),),
                 itr_rlocs=(V4,))  # fmt: skip


def test_ecm_wrap_and_header_flags() -> None:
    ecm = EncapsulatedControlMessage.wrap(REQ, V4, IPv4Address("10.1.0.1"), 40000)
    assert ecm.ip == IPv4Header(V4, IPv4Address("10.1.0.1"), ttl=64)
    assert ecm.udp == UDPHeader(40000, 4342) and ecm.message == REQ
    four = EncapsulatedControlMessage.wrap(REQ, V4, IPv4Address("10.1.0.1"), 5, ttl=3)
    assert four.ip == IPv4Header(V4, IPv4Address("10.1.0.1"), ttl=3)
    six = EncapsulatedControlMessage.wrap(REQ, V6, IPv6Address("2001:db8::9"), 5, ttl=3)
    assert six.ip == IPv6Header(V6, IPv6Address("2001:db8::9"), hop_limit=3)
    for src, dst in [(V4, V6), (V6, V4)]:
        with pytest.raises(LispEncodeError) as err:
            EncapsulatedControlMessage.wrap(REQ, src, dst, 1)
        assert err.value.field == "ECM.ip"
        assert err.value.reason == "inner source and destination families differ"
    flagged = EncapsulatedControlMessage(
        ecm.ip, ecm.udp, REQ, security=True, ddt=False, to_etr=True, to_ms=False, reserved=0x123456
    )
    data = flagged.to_bytes()
    assert data[:4] == bytes([0x8A, 0x12, 0x34, 0x56])  # type 8, S (0x08), E (0x02)
    assert data[4:] == build_ip_udp(ecm.ip, ecm.udp, REQ.to_bytes())
    back = decode_message(data)
    assert isinstance(back, EncapsulatedControlMessage) and back.to_bytes() == data
    assert (back.security, back.ddt, back.to_etr, back.to_ms) == (True, False, True, False)
    assert back.reserved == 0x123456 and back.message == REQ
    other = EncapsulatedControlMessage(ecm.ip, ecm.udp, REQ, ddt=True, to_ms=True)
    back = decode_message(other.to_bytes())
    assert other.to_bytes()[0] == 0x85 and isinstance(back, EncapsulatedControlMessage)
    assert (back.security, back.ddt, back.to_etr, back.to_ms) == (False, True, False, True)


def ecm_bytes(inner: bytes, version: int = 4) -> bytes:
    if version == 4:
        ip: IPv4Header | IPv6Header = IPv4Header(V4, IPv4Address("10.1.0.1"))
    else:
        ip = IPv6Header(V6, IPv6Address("2001:db8::9"))
    return bytes([0x80, 0, 0, 0]) + build_ip_udp(ip, UDPHeader(40000), inner)


def test_ecm_decoding_checks_the_inner_headers() -> None:
    inner = REQ.to_bytes()
    for version in (4, 6):
        back = decode_message(ecm_bytes(inner, version))
        assert isinstance(back, EncapsulatedControlMessage) and back.message == REQ
    v4 = bytearray(ecm_bytes(inner))
    v4[13] = 6  # protocol TCP
    err = decode_error(bytes(v4))
    assert (err.offset, err.field, err.reason) == (13, "IPv4.protocol", "6 is not UDP")
    v6 = bytearray(ecm_bytes(inner, 6))
    v6[10] = 6
    err = decode_error(bytes(v6))
    assert (err.offset, err.field, err.reason) == (10, "IPv6.next_header", "6 is not UDP")
    err = decode_error(bytes([0x80, 0, 0, 0]))  # an ECM header and nothing inside
    assert (err.offset, err.field) == (4, "ECM.ip.version")
    for cut, field in [(4 + 14, "IPv4.source"), (4 + 18, "IPv4.destination")]:
        err = decode_error(ecm_bytes(inner)[:cut])
        assert (err.offset, err.field) == (cut - 2, field)
    v5 = bytearray(ecm_bytes(inner))
    v5[4] = 0x55
    err = decode_error(bytes(v5))
    assert (err.offset, err.field, err.reason) == (4, "ECM.ip.version", "inner IP version 5")
    opts = bytearray(ecm_bytes(inner))
    opts[4] = 0x46  # IHL 6: options
    err = decode_error(bytes(opts))
    assert (err.field, err.reason) == ("IPv4.ihl", "IPv4 options are not supported")
    for delta in (1, -1):  # the UDP length must be the bytes that follow
        bad = bytearray(ecm_bytes(inner))
        ulen = 8 + len(inner) + delta
        bad[28:30] = ulen.to_bytes(2, "big")
        err = decode_error(bytes(bad))
        assert (err.offset, err.field) == (28, "UDP.length")
        assert err.reason == f"{ulen} but {8 + len(inner)} bytes follow"


def test_ecm_nesting_stops_at_two_levels() -> None:
    twice = EncapsulatedControlMessage.wrap(
        EncapsulatedControlMessage.wrap(REQ, V4, V4, 1), V4, V4, 2
    )
    back = decode_message(twice.to_bytes())
    assert isinstance(back, EncapsulatedControlMessage) and back.udp.source_port == 2
    assert isinstance(back.message, EncapsulatedControlMessage) and back.message.message == REQ
    thrice = EncapsulatedControlMessage.wrap(twice, V4, V4, 3)
    err = decode_error(thrice.to_bytes())
    assert (err.offset, err.field, err.reason) == (64, "ECM", "nested too deeply")
    err = decode_error(ecm_bytes(b"\x90\x00\x00\x00"))
    assert (err.offset, err.field, err.reason) == (32, "type", "unsupported message type 9")


def test_decoder_safety_net_and_input_types() -> None:
    with pytest.raises(LispDecodeError) as err:
        decode_message("not bytes")  # type: ignore[arg-type]
    assert (err.value.offset, err.value.field) == (0, "message")
    assert err.value.reason.startswith("undecodable (TypeError: ")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    decode_error(b"\x90")  # a LispDecodeError passes through unchanged
    with pytest.raises(LispDecodeError) as err:
        decode_message(b"\x90")
    assert (err.value.offset, err.value.field) == (0, "type")
    rec = MappingRecord.for_prefix(EidPrefix.parse("10.0.0.0/8"), locators=(Locator(V4),))
    msg = MapNotify(nonce=3, records=(rec,), alg_id=1, auth_data=b"\x01" * 20, trailer=b"t")
    data = msg.to_bytes()
    for view in (bytearray(data), memoryview(data)):
        back = decode_message_unchecked(view)  # type: ignore[arg-type]
        assert back == msg and type(back.auth_data) is bytes and type(back.trailer) is bytes  # type: ignore[attr-defined]
