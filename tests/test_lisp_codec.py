"""Codec: round trips, exact layouts, authentication and decoder robustness."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisp_support import capture
from pacao.lisp import auth
from pacao.lisp.address import EidPrefix, InstanceIdAddress, LcafAddress
from pacao.lisp.messages import (
    EncapsulatedControlMessage,
    Locator,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    Message,
    RequestRecord,
    decode_message,
    decode_message_unchecked,
)
from pacao.lisp.wire import LispDecodeError, LispEncodeError

V4 = IPv4Address("192.0.2.1")

ipv4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
ipv6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
ip = st.one_of(ipv4, ipv6)
address = st.one_of(
    st.none(),
    ip,
    st.builds(InstanceIdAddress, st.integers(0, 2**32 - 1), ip, st.integers(0, 255)),
)
u8 = st.integers(0, 255)
locator = st.builds(
    Locator,
    address=ip,
    priority=u8,
    weight=u8,
    m_priority=u8,
    m_weight=u8,
    local=st.booleans(),
    probed=st.booleans(),
    reachable=st.booleans(),
)


@st.composite
def eid_and_mask(draw: st.DrawFn) -> tuple[object, int]:
    addr = draw(st.one_of(ip, st.builds(InstanceIdAddress, st.integers(0, 2**24 - 1), ip)))
    inner = addr.address if isinstance(addr, InstanceIdAddress) else addr
    return addr, draw(st.integers(0, 32 if isinstance(inner, IPv4Address) else 128))


@st.composite
def mapping_record(draw: st.DrawFn) -> MappingRecord:
    eid, mask = draw(eid_and_mask())
    return MappingRecord(
        eid=eid,  # type: ignore[arg-type]
        eid_mask_len=mask,
        ttl=draw(st.integers(0, 2**32 - 1)),
        locators=tuple(draw(st.lists(locator, max_size=4))),
        action=draw(st.integers(0, 7)),
        authoritative=draw(st.booleans()),
        map_version=draw(st.integers(0, 4095)),
    )


@st.composite
def request_record(draw: st.DrawFn) -> RequestRecord:
    eid, mask = draw(eid_and_mask())
    return RequestRecord(eid=eid, eid_mask_len=mask)  # type: ignore[arg-type]


nonce = st.integers(0, 2**64 - 1)
records = st.lists(mapping_record(), max_size=3).map(tuple)
map_request = st.builds(
    MapRequest,
    nonce=nonce,
    records=st.lists(request_record(), min_size=1, max_size=3).map(tuple),
    itr_rlocs=st.lists(ip, min_size=1, max_size=3).map(tuple),
    source_eid=address,
    authoritative=st.booleans(),
    probe=st.booleans(),
    smr=st.booleans(),
    pitr=st.booleans(),
    smr_invoked=st.booleans(),
)
map_reply = st.builds(MapReply, nonce=nonce, records=records, probe=st.booleans())
map_register = st.builds(
    MapRegister,
    nonce=nonce,
    records=records,
    proxy_reply=st.booleans(),
    want_map_notify=st.booleans(),
    use_ttl_for_timeout=st.booleans(),
    key_id=u8,
    alg_id=st.sampled_from([0, 1, 2]),
    auth_data=st.binary(max_size=32),
)
map_notify = st.builds(MapNotify, nonce=nonce, records=records, auth_data=st.binary(max_size=32))
any_message = st.one_of(map_request, map_reply, map_register, map_notify)


@given(any_message)
def test_round_trip(msg: Message) -> None:
    data = msg.to_bytes()
    assert decode_message_unchecked(data) == msg
    assert decode_message(data).to_bytes() == data


@given(map_request, st.sampled_from([IPv4Address("127.0.0.1"), IPv6Address("::1")]))
def test_ecm_round_trip_with_checksums(req: MapRequest, src: IPv4Address | IPv6Address) -> None:
    dst = IPv4Address("10.0.0.1") if isinstance(src, IPv4Address) else IPv6Address("2001:db8::1")
    ecm = EncapsulatedControlMessage.wrap(req, src, dst, 40000)
    data = ecm.to_bytes()
    back = decode_message_unchecked(data)
    assert isinstance(back, EncapsulatedControlMessage)
    assert back.message == req and back.ip.source == src and back.udp.source_port == 40000
    assert back.udp.checksum not in (None, 0)
    assert back.to_bytes() == data


def test_map_request_header_bits() -> None:
    req = MapRequest(
        nonce=0x0102030405060708,
        records=(RequestRecord.for_prefix(EidPrefix.parse("10.0.0.0/8")),),
        itr_rlocs=(V4, V4),
        probe=True,
        smr=True,
        smr_invoked=True,
    )
    data = req.to_bytes()
    # type 1, P (0x02) and S (0x01) in the first byte's low nibble, s (0x40) in the second
    assert data[:4] == bytes([0x13, 0x40, 0x01, 0x01])  # IRC = 1 (two ITR-RLOCs), 1 record
    assert data[4:12] == bytes(range(1, 9))
    assert data[12:14] == b"\x00\x00"  # no source EID
    assert data[14:26] == b"\x00\x01" + V4.packed + b"\x00\x01" + V4.packed
    assert data[26:] == b"\x00\x08\x00\x01\x0a\x00\x00\x00"


def test_negative_map_reply_layout() -> None:
    rec = MappingRecord.for_prefix(EidPrefix.parse("10.0.0.0/8"), ttl=15, action=1)
    data = MapReply(nonce=7, records=(rec,)).to_bytes()
    assert data.hex() == "20000001" + "0000000000000007" + "0000000f" + "00082000" + "0000" + (
        "0001" + "0a000000"
    )


def test_instance_id_lcaf_layout() -> None:
    prefix = EidPrefix.parse("[7]10.1.0.0/16")
    rec = RequestRecord.for_prefix(prefix)
    assert rec.eid == InstanceIdAddress(7, IPv4Address("10.1.0.0"))
    req = MapRequest(nonce=1, records=(rec,), itr_rlocs=(V4,))
    tail = req.to_bytes()[-20:]
    # reserved, mask 16, AFI 16387, rsvd1, flags, type 2, iid-mask, length 10, iid 7, AFI 1, addr
    assert tail.hex() == "0010" + "4003" + "00" + "00" + "02" + "00" + "000a" + "00000007" + (
        "0001" + "0a010000"
    )
    back = decode_message(req.to_bytes())
    assert isinstance(back, MapRequest) and back.records[0].prefix == prefix


def test_unknown_lcaf_type_is_kept_verbatim() -> None:
    raw = LcafAddress(lcaf_type=9, payload=b"\x01\x02\x03")
    rec = MappingRecord(eid=V4, eid_mask_len=32, locators=(Locator(address=raw),))
    msg = MapReply(nonce=3, records=(rec,))
    assert decode_message(msg.to_bytes()) == msg


def test_map_register_with_xtr_id_and_site_id() -> None:
    rec = MappingRecord.for_prefix(EidPrefix.parse("10.1.0.0/16"), locators=(Locator(V4),))
    reg = MapRegister(
        nonce=5,
        records=(rec,),
        xtr_id_present=True,
        xtr_id=bytes(range(16)),
        site_id=b"\xaa" * 8,
        want_map_notify=True,
    )
    signed = auth.sign(reg, "k", auth.ALG_HMAC_SHA1)
    data = signed.to_bytes()
    assert data[:4] == bytes([0x32, 0x00, 0x01, 0x01])  # I bit, M bit, 1 record
    assert data[12:16] == bytes([0, 1, 0, 20])  # key-id 0, alg 1, 20-byte digest
    assert data[-24:] == bytes(range(16)) + b"\xaa" * 8
    zeroed = data[:16] + bytes(20) + data[36:]
    assert data[16:36] == hmac.new(b"k", zeroed, hashlib.sha1).digest()
    assert auth.verify(data, "k") and not auth.verify(data, "K")
    assert decode_message(data) == signed


def test_truncated_digests_verify() -> None:
    rec = MappingRecord.for_prefix(EidPrefix.parse("10.1.0.0/16"))
    for alg, size, fn in ((1, 12, hashlib.sha1), (2, 16, hashlib.sha256)):
        msg = MapRegister(nonce=1, records=(rec,), alg_id=alg, auth_data=bytes(size))
        zeroed = msg.to_bytes()
        short = replace(msg, auth_data=hmac.new(b"key", zeroed, fn).digest()[:size])
        assert auth.verify(short.to_bytes(), "key")
        assert not auth.verify(short.to_bytes(), "other")


def test_notify_ack_differs_only_in_type() -> None:
    rec = MappingRecord.for_prefix(EidPrefix.parse("2001:db8::/32"))
    notify = MapNotify(nonce=9, records=(rec,))
    ack = MapNotifyAck(nonce=9, records=(rec,))
    a, b = notify.to_bytes(), ack.to_bytes()
    assert a[0] == 0x40 and b[0] == 0x50 and a[1:] == b[1:]
    assert type(decode_message(b)) is MapNotifyAck


def test_encode_rejects_out_of_range_values() -> None:
    rec = MappingRecord.for_prefix(EidPrefix.parse("10.0.0.0/8"), locators=(Locator(V4, 256),))
    with pytest.raises(LispEncodeError, match="priority"):
        MapReply(nonce=1, records=(rec,)).to_bytes()
    with pytest.raises(LispEncodeError, match="nonce"):
        MapReply(nonce=2**64, records=()).to_bytes()


@pytest.mark.parametrize(
    ("data", "offset", "field"),
    [
        (b"", 0, "type"),
        (b"\x90\x00\x00\x00", 0, "type"),  # type 9 unsupported
        (b"\x20\x00\x00\x01" + bytes(8), 12, "Mapping-Record.ttl"),  # 1 record, none there
        (
            b"\x20\x00\x00\x01"
            + bytes(8)
            + bytes(4)
            + b"\x00\x21\x00\x00\x00\x00\x00\x01"
            + bytes(4),
            17,
            "Mapping-Record.eid_mask_len",
        ),  # /33 for IPv4
        (
            b"\x20\x00\x00\x01" + bytes(8) + bytes(4) + b"\x00\x08\x00\x00\x00\x00\x00\x63",
            22,
            "Mapping-Record.eid.afi",
        ),  # AFI 99
    ],
)
def test_decode_error_offset_and_field(data: bytes, offset: int, field: str) -> None:
    with pytest.raises(LispDecodeError) as err:
        decode_message_unchecked(data)
    assert err.value.field == field
    assert err.value.offset == offset


def test_every_truncation_of_captured_frames_is_a_decode_error() -> None:
    frames = [
        d.payload
        for name in ("map-request-reply-ipv4.pcap", "priority-change.pcap")
        for d in capture(name)
    ]
    for data in frames:
        for n in range(len(data)):
            with pytest.raises(LispDecodeError):
                decode_message_unchecked(data[:n])


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(LispDecodeError):
        decode_message_unchecked(data)


@settings(max_examples=400)
@given(
    st.sampled_from(
        [
            d.payload
            for n in ("map-request-reply-ipv6.pcap", "priority-change.pcap")
            for d in capture(n)
        ]
    ),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_fuzz_mutated_captures(data: bytes, edits: list[tuple[int, int]]) -> None:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    try:
        msg = decode_message_unchecked(bytes(buf))
    except LispDecodeError:
        return
    assert decode_message_unchecked(msg.to_bytes()) == msg


def test_docs_show_the_current_field_tables() -> None:
    from pathlib import Path

    from pacao.lisp.address import LCAF_HEADER
    from pacao.lisp.messages import ECM_HEADER, LOCATOR, MAPPING_RECORD, REQUEST_RECORD
    from pacao.lisp.wire import field_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "lisp.md").read_text()
    structs = [MapRequest.STRUCT, REQUEST_RECORD, MapReply.STRUCT, MAPPING_RECORD, LOCATOR]
    from pacao.lisp.messages import ChangePriority

    structs += [
        MapRegister.STRUCT,
        MapNotify.STRUCT,
        ECM_HEADER,
        LCAF_HEADER,
        ChangePriority.STRUCT,
    ]
    from pacao.lisp.messages import REFERRAL_RECORD, REFERRAL_SIGNATURE, InfoMessage, MapReferral

    structs += [MapReferral.STRUCT, REFERRAL_RECORD, REFERRAL_SIGNATURE, InfoMessage.STRUCT]
    for s in structs:
        section = doc.split(f"#### {s.name}\n", 1)[1].split("####", 1)[0]
        lines = section.strip().splitlines()
        table = list(itertools.takewhile(lambda line: line.startswith("|"), lines))
        rows = [line for line in table if "---" not in line]
        assert rows[1:] == ["| " + " | ".join(r) + " |" for r in field_table(s)], s.name


@settings(max_examples=150)
@given(any_message)
def test_compiled_codec_agrees_with_the_table_interpreter(msg: Message) -> None:
    from pacao.lisp.wire import Reader

    data = msg.STRUCT.encode_slow(msg)
    assert msg.to_bytes() == data
    assert msg.STRUCT.decode_slow(Reader(data)) == msg == msg.STRUCT.decode(Reader(data))


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=120), st.sampled_from([MapRequest, MapReply, MapRegister]))
def test_compiled_and_interpreted_decoders_fail_alike(data: bytes, cls: type[Message]) -> None:
    from pacao.lisp.wire import Reader

    data = bytes([cls.TYPE << 4]) + data[1:]
    outcomes = []
    for decode in (cls.STRUCT.decode, cls.STRUCT.decode_slow):
        try:
            outcomes.append(("ok", decode(Reader(data))))
        except LispDecodeError as exc:
            outcomes.append(("error", (exc.offset, exc.field)))
    assert outcomes[0] == outcomes[1]


def test_change_priority_layout_and_auth() -> None:
    from pacao.lisp.messages import ChangePriority

    rec = MappingRecord.for_prefix(EidPrefix.parse("10.1.0.0/16"), locators=(Locator(V4, 2, 30),))
    msg = auth.sign(ChangePriority(nonce=0xAB, records=(rec,)), "k", auth.ALG_HMAC_SHA256)
    data = msg.to_bytes()
    # type 15, sub-type 4095 (12 bits), A=0, reserved, 1 record; auth at the Map-Notify offset
    assert data[:4] == bytes([0xFF, 0xFF, 0x00, 0x01])
    assert data[4:12] == (0xAB).to_bytes(8, "big") and data[12:16] == bytes([0, 2, 0, 32])
    assert auth.verify(data, "k") and decode_message(data) == msg
    ack = ChangePriority(nonce=0xAB, records=(), ack=True).to_bytes()
    assert ack[2] == 0x80 and ack[3] == 0
    with pytest.raises(LispDecodeError, match="subtype"):
        decode_message(bytes([0xF0, 0x01]) + data[2:])  # another sub-type
