"""Decode the lispers.net captures (shared/interop/lispers) field by field.

Expected values are those stated in the captures' README.md.  Every frame is
re-encoded and compared byte for byte, and the HMAC of every authenticated
frame is recomputed with the site key.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from lisp_support import capture, interop_dir
from pacao.lisp import auth
from pacao.lisp.address import EidPrefix
from pacao.lisp.messages import (
    EncapsulatedControlMessage,
    IPv4Header,
    IPv6Header,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    Message,
    decode_message,
)

KEY = "interop-key"
FILES = [
    "map-register-notify-sha256.pcap",
    "map-request-reply-ipv4.pcap",
    "map-request-reply-ipv6.pcap",
    "priority-change.pcap",
]


def decoded(name: str) -> list[Message]:
    return [decode_message(d.payload) for d in capture(name)]


def locs(rec: MappingRecord) -> list[tuple[str, int, int, int, int, bool, bool, bool]]:
    return [
        (
            str(x.address),
            *(x.priority, x.weight, x.m_priority, x.m_weight),
            *(x.local, x.probed, x.reachable),
        )
        for x in rec.locators
    ]


def test_all_captures_are_listed_and_found() -> None:
    assert sorted(p.name for p in interop_dir().glob("*.pcap")) == sorted(FILES)


@pytest.mark.parametrize("name", FILES)
def test_every_frame_reencodes_byte_for_byte(name: str) -> None:
    frames = capture(name)
    assert frames, name
    for d in frames:
        msg = decode_message(d.payload)
        assert msg.to_bytes() == d.payload, (name, d.frame)


@pytest.mark.parametrize("name", FILES)
def test_every_authenticated_frame_verifies_and_resigns(name: str) -> None:
    checked = 0
    for d in capture(name):
        msg = decode_message(d.payload)
        if not isinstance(msg, MapRegister | MapNotify) or msg.alg_id == 0:
            continue
        assert msg.key_id == 0 and msg.alg_id == auth.ALG_HMAC_SHA256
        assert len(msg.auth_data) == 32
        assert auth.verify(d.payload, KEY), (name, d.frame)
        assert not auth.verify(d.payload, "wrong-key")
        # our signer reproduces lispers' digest exactly
        assert auth.sign(replace(msg, auth_data=b""), KEY, auth.ALG_HMAC_SHA256) == msg
        tampered = bytearray(d.payload)
        tampered[-1] ^= 1
        assert not auth.verify(bytes(tampered), KEY)
        checked += 1
    assert checked >= 2


def test_map_register_notify_sha256() -> None:
    frames = capture("map-register-notify-sha256.pcap")
    assert [(d.source_port, d.destination_port) for d in frames] == [(42558, 4342), (4342, 42558)]
    reg, notify = (decode_message(d.payload) for d in frames)
    assert isinstance(reg, MapRegister) and type(notify) is MapNotify
    assert frames[0].payload[:4].hex() == "38000101"
    assert reg.proxy_reply and reg.want_map_notify
    assert not (reg.security or reg.xtr_id_present or reg.rtr or reg.use_ttl_for_timeout)
    assert reg.nonce == 0x1111000000000001 == notify.nonce
    assert (reg.key_id, reg.alg_id, len(reg.auth_data)) == (0, 2, 32)
    (rec,) = reg.records
    assert rec.prefix == EidPrefix.parse("10.1.1.0/24")
    assert (rec.ttl, rec.authoritative, rec.map_version, rec.action) == (1440, True, 0, 0)
    assert locs(rec) == [
        ("198.51.100.1", 1, 50, 255, 0, False, False, True),
        ("203.0.113.1", 2, 50, 255, 0, False, False, True),
    ]
    assert frames[1].payload[:4].hex() == "40000001"
    assert (notify.key_id, notify.alg_id, len(notify.auth_data)) == (0, 2, 32)
    assert notify.records == reg.records  # byte-for-byte copy of the record
    assert frames[1].payload.hex() == (
        "40000001111100000000000100020020a472dc1054a1c1a0acfa2de4aead330027345cb9bd00ca29"
        "3076624e1b896d82000005a002181000000000010a0101000132ff0000010001c63364010232ff00"
        "00010001cb007101"
    )


def test_map_request_reply_ipv4() -> None:
    frames = capture("map-request-reply-ipv4.pcap")
    reg, notify, ecm, reply = (decode_message(d.payload) for d in frames)
    assert isinstance(reg, MapRegister) and isinstance(notify, MapNotify)
    assert reg.nonce == notify.nonce == 0x2222000000000001
    assert locs(reg.records[0]) == [
        ("198.51.100.10", 1, 100, 255, 0, False, False, True),
        ("203.0.113.10", 2, 100, 255, 0, False, False, True),
        ("198.51.100.11", 255, 0, 255, 0, False, False, True),
    ]
    assert isinstance(ecm, EncapsulatedControlMessage)
    assert frames[2].payload[:4].hex() == "80000000"
    assert not (ecm.security or ecm.ddt)
    assert isinstance(ecm.ip, IPv4Header)
    assert (ecm.ip.source, ecm.ip.destination) == (ip_address("127.0.0.1"), ip_address("10.1.2.5"))
    assert ecm.ip.ttl == 64
    assert (ecm.udp.source_port, ecm.udp.destination_port, ecm.udp.checksum) == (42170, 4342, 0)
    req = ecm.message
    assert isinstance(req, MapRequest)
    assert req.nonce == 0x2222000000000002
    assert not any([req.authoritative, req.map_data_present, req.probe, req.smr, req.pitr])
    assert req.itr_rlocs == (IPv4Address("127.0.0.1"),) and req.source_eid is None
    assert [r.prefix for r in req.records] == [EidPrefix.parse("10.1.2.5/32")]
    assert isinstance(reply, MapReply)
    assert frames[3].payload[:4].hex() == "20000001"
    assert not (reply.probe or reply.echo_nonce or reply.security)
    assert reply.nonce == req.nonce
    (rec,) = reply.records
    assert rec.prefix == EidPrefix.parse("10.1.2.0/24")  # the registered prefix, not the /32
    assert (rec.ttl, rec.authoritative, rec.action, rec.map_version) == (1440, False, 0, 0)
    assert locs(rec) == locs(reg.records[0])
    assert frames[3].destination_port == ecm.udp.source_port


def test_map_request_reply_ipv6() -> None:
    frames = capture("map-request-reply-ipv6.pcap")
    reg, _notify, ecm, reply = (decode_message(d.payload) for d in frames)
    assert isinstance(reg, MapRegister)
    assert reg.records[0].prefix == EidPrefix.parse("2001:db8:1::/48")
    assert isinstance(ecm, EncapsulatedControlMessage) and isinstance(ecm.ip, IPv6Header)
    assert ecm.ip.source == IPv6Address("2001:db8:2::1")
    assert ecm.ip.destination == IPv6Address("2001:db8:1::5")
    assert ecm.ip.hop_limit == 64
    assert (ecm.udp.source_port, ecm.udp.checksum) == (60879, 0x75E4)
    req = ecm.message
    assert isinstance(req, MapRequest)
    assert req.source_eid == IPv6Address("2001:db8:2::1")
    assert req.itr_rlocs == (IPv4Address("127.0.0.1"),)
    assert [r.prefix for r in req.records] == [EidPrefix.parse("2001:db8:1::5/128")]
    assert isinstance(reply, MapReply) and reply.nonce == 0x4444000000000002
    (rec,) = reply.records
    assert (rec.eid_mask_len, rec.ttl, rec.authoritative) == (48, 1440, False)
    assert locs(rec) == [
        ("198.51.100.20", 1, 50, 255, 0, False, False, True),
        ("203.0.113.20", 2, 50, 255, 0, False, False, True),
    ]


def test_priority_change_and_subscription() -> None:
    msgs = decoded("priority-change.pcap")
    ecm = msgs[2]
    assert isinstance(ecm, EncapsulatedControlMessage)
    sub = ecm.message
    assert isinstance(sub, MapRequest)
    assert sub.xtr_id_present and sub.xtr_id == bytes(range(16))
    assert sub.records[0].reserved == 0x80  # lispers' N (notify-me) bit
    assert sub.records[0].prefix == EidPrefix.parse("10.1.1.0/24")
    ack = msgs[3]
    assert type(ack) is MapNotify and ack.nonce == 0x6666000000000002
    assert (ack.key_id, ack.alg_id, ack.auth_data) == (0, 0, b"")
    assert not ack.records[0].authoritative
    first, swapped = msgs[0], msgs[4]
    assert isinstance(first, MapRegister) and isinstance(swapped, MapRegister)
    assert swapped.nonce == 0x6666000000000001
    assert [(str(x.address), x.priority) for x in swapped.records[0].locators] == [
        ("198.51.100.1", 2),
        ("203.0.113.1", 1),
    ]
    assert [(str(x.address), x.priority) for x in first.records[0].locators] == [
        ("198.51.100.1", 1),
        ("203.0.113.1", 2),
    ]
    notify6 = msgs[5]
    assert isinstance(notify6, MapNotify) and notify6.records == swapped.records
