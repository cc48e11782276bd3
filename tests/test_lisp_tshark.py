"""Every message type pacao sends, written to a pcap and dissected by `tshark -V`.

Wireshark's LISP dissector is an independent decoder: if it finds a field
out of place it reports "Malformed", an expert error, or leaves bytes as
trailing "Data".  tshark 4.0 (Debian 12) has no dissector for Map-Notify-Ack
(type 5): that frame is checked as the Map-Notify it is identical to except
for the type nibble.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from lisp_support import tshark_verbose
from pacao.lisp import auth
from pacao.lisp.address import EidPrefix
from pacao.lisp.messages import (
    ChangePriority,
    DistinguishedName,
    EncapsulatedControlMessage,
    InfoMessage,
    Locator,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapReferral,
    MapRegister,
    MapReply,
    MapRequest,
    Message,
    NatTraversal,
    ReferralRecord,
    ReferralSignature,
    RequestRecord,
    decode_message,
)
from pacao.lisp.pcap import Datagram, write_pcap

LO = IPv4Address("127.0.0.1")
LO6 = IPv6Address("::1")
P4 = EidPrefix.parse("10.1.0.0/16")
P6 = EidPrefix.parse("2001:db8:1::/48")
PI = EidPrefix.parse("[7]10.2.0.0/16")
LOCS = (Locator(IPv4Address("127.0.0.2"), 1, 50), Locator(LO6, 2, 50, local=True, probed=True))
RECS = tuple(MappingRecord.for_prefix(p, locators=LOCS, authoritative=True) for p in (P4, P6, PI))


REFS = (Locator(IPv4Address("192.0.2.1"), 1, 50), Locator(IPv6Address("2001:db8::1"), 2, 50))
REFERRAL = MapReferral(
    0x21,
    (
        ReferralRecord.for_prefix(P4, referrals=REFS, action=1, authoritative=True),
        ReferralRecord.for_prefix(P6, ttl=15, action=4, incomplete=True, map_version=9),
    ),
)
NAT = NatTraversal(4342, 61000, IPv4Address("198.51.100.7"), IPv4Address("203.0.113.1"),
                   IPv4Address("192.168.1.10"), (IPv4Address("203.0.113.9"),))  # fmt: skip
INFO_REQUEST = auth.sign(InfoMessage(0x23, ttl=1440), "k", 2)
INFO_REPLY = InfoMessage(0x24, reply=True, ttl=1440, eid=IPv4Address("10.1.0.0"),
                         eid_mask_len=16, address=NAT)  # fmt: skip


def rr(p: EidPrefix) -> tuple[RequestRecord]:
    return (RequestRecord.for_prefix(p),)


def messages() -> list[tuple[str, Message]]:
    xtr = {"xtr_id_present": True, "xtr_id": bytes(range(16)), "site_id": b"\x01" * 8}
    return [
        ("Map-Request for 10.1.2.3/32", MapRequest(1, rr(EidPrefix.parse("10.1.2.3/32")), (LO,))),
        (
            "Map-Request (RLOC-probe) for 2001:db8:1::/48",
            MapRequest(2, rr(P6), (LO, LO6), source_eid=IPv6Address("2001:db8:2::1"), probe=True),
        ),
        (
            "Map-Request (SMR) for [7] 10.2.0.0/16",
            MapRequest(3, rr(PI), (LO,), smr=True, source_eid=IPv4Address("10.2.0.1")),
        ),
        (
            "Map-Request (SMR-invoked) for 10.1.0.0/16",
            MapRequest(
                4, rr(P4), (LO,), smr_invoked=True, map_data_present=True, map_reply=RECS[0]
            ),
        ),
        (
            "Encapsulated Map-Request for 10.1.0.0/16",
            EncapsulatedControlMessage.wrap(
                MapRequest(5, rr(P4), (LO,)), LO, IPv4Address("10.1.0.0"), 5555
            ),
        ),
        (
            "Encapsulated Map-Request for 2001:db8:1::/48",
            EncapsulatedControlMessage.wrap(
                MapRequest(6, rr(P6), (LO6,), source_eid=LO6), LO6, IPv6Address("2001:db8:1::"), 5
            ),
        ),
        ("Map-Reply", MapReply(7, RECS)),
        (
            "Map-Reply for 10.128.0.0/9",
            MapReply(
                8, (MappingRecord.for_prefix(EidPrefix.parse("10.128.0.0/9"), ttl=15, action=1),)
            ),
        ),
        ("Map-Reply (RLOC-probe reply) for 10.1.0.0/16", MapReply(9, RECS[:1], probe=True)),
        (
            "Map-Register",
            auth.sign(MapRegister(10, RECS, proxy_reply=True, want_map_notify=True), "k", 1),
        ),
        ("Map-Register for 10.1.0.0/16", auth.sign(MapRegister(11, RECS[:1], **xtr), "k", 2)),
        ("Map-Notify", auth.sign(MapNotify(12, RECS), "k", 2)),
        ("Map-Notify for 10.1.0.0/16", auth.sign(MapNotify(13, RECS[:1], **xtr), "k", 1)),
        ("Map-Referral", REFERRAL),
        ("Info-Request for not set/0", INFO_REQUEST),
        ("Info-Reply for 10.1.0.0/16", INFO_REPLY),
        ("Unknown LISP Control Packet (5)", auth.sign(MapNotifyAck(14, RECS), "k", 2)),
        ("Unknown LISP Control Packet (15)", auth.sign(ChangePriority(15, RECS[:1]), "k", 2)),
    ]


def frames_of(text: str) -> list[str]:
    return re.split(r"(?m)^Frame \d+: ", text)[1:]


def assert_clean(frame: str) -> None:
    assert "Locator/ID Separation Protocol" in frame
    for bad in ("Malformed", "Expert Info (Error", "Expert Info (Warning", "Data ("):
        assert bad not in frame, f"tshark reports {bad!r}:\n{frame}"
    assert "[Checksum Status: Bad]" not in frame


def test_tshark_dissects_every_message_type(tmp_path: Path) -> None:
    cases = messages()
    pcap = tmp_path / "pacao-lisp.pcap"
    write_pcap(
        pcap,
        [
            Datagram(i + 1, 1.0 + i, LO, 40000 + i, LO, 4342, m.to_bytes())
            for i, (_, m) in enumerate(cases)
        ],
    )
    frames = frames_of(tshark_verbose(pcap))
    summary = tshark_verbose(pcap, verbose=False).splitlines()
    assert len(frames) == len(cases) == len(summary)
    for (info, msg), frame, line in zip(cases, frames, summary, strict=True):
        assert line.endswith(f"LISP {len(msg.to_bytes()) + 42} {info}"), line
        if isinstance(msg, MapNotifyAck | ChangePriority):
            # tshark 4.0 has no Map-Notify-Ack (5) or shared-extension (15) dissector
            assert f"Type: Unknown ({msg.TYPE})" in frame and "Malformed" not in frame
            continue
        assert "Unknown" not in frame, frame
        assert_clean(frame)
        nonced = MapRequest | MapReply | MapRegister | MapNotify | MapReferral | InfoMessage
        if isinstance(msg, nonced):
            assert f"Nonce: 0x{msg.nonce:016x}" in frame
        if isinstance(msg, MapRegister | MapNotify):
            assert f"Authentication Data: {msg.auth_data.hex()}" in frame
    # the Map-Notify-Ack layout, checked as the Map-Notify it mirrors
    ack = cases[-2][1].to_bytes()
    as_notify = tmp_path / "ack-as-notify.pcap"
    write_pcap(as_notify, [Datagram(1, 1.0, LO, 4342, LO, 4342, bytes([0x40]) + ack[1:])])
    (frame,) = frames_of(tshark_verbose(as_notify))
    assert "Unknown" not in frame
    assert_clean(frame)


def test_tshark_info_lines_name_the_prefixes(tmp_path: Path) -> None:
    pcap = tmp_path / "one.pcap"
    msg = MapReply(8, (MappingRecord.for_prefix(PI, ttl=15, action=1),))
    write_pcap(pcap, [Datagram(1, 1.0, LO, 4342, LO, 5000, msg.to_bytes())])
    text = tshark_verbose(pcap)
    assert "EID Prefix: [7] 10.2.0.0/16" in text or "[7] 10.2.0.0/16" in text
    assert "Action: Natively-Forward (1)" in text
    assert "Record TTL: 15" in text


def test_tshark_reads_referral_and_nat_fields_as_we_do(tmp_path: Path) -> None:
    """Map-Referral (RFC 8111) and Info-Request/Reply (NAT traversal): the values
    Wireshark's dissector reports are the ones we encoded, and our decoder gives
    back the same bytes."""
    sig = ReferralSignature(1440, 1_800_000_000, 1_700_000_000, 0x1234, 1, bytes(range(20)))
    signed = MapReferral(0x22, (ReferralRecord.for_prefix(P4, referrals=REFS[:1],
                                                          signatures=(sig,)),))  # fmt: skip
    msgs: list[Message] = [REFERRAL, signed, INFO_REQUEST, INFO_REPLY]
    for msg in msgs:
        data = msg.to_bytes()
        assert decode_message(data).to_bytes() == data
    pcap = tmp_path / "ddt-nat.pcap"
    write_pcap(pcap, [Datagram(i + 1, 1.0, LO, 4342, LO, 4342, m.to_bytes())
                      for i, m in enumerate(msgs)])  # fmt: skip
    referral, signed_frame, request, reply = frames_of(tshark_verbose(pcap))
    first, second = referral.split("Mapping Record 2,")
    for text in (
        "Type: Map-Referral (6)", "Record Count: 2", "EID Prefix: 10.1.0.0", "Locator Count: 2",
        "= Action: Natively-Forward (1)", "= Authoritative bit: Set", "= Incomplete: Not set",
        "Locator: 192.0.2.1", "Locator: 2001:db8::1", "Priority/Weight: 2/50",
    ):  # fmt: skip
        assert text in first, text
    for text in ("Record TTL: 15", "= Incomplete: Set", "= Mapping Version: 9",
                 "EID Prefix: 2001:db8:1::", "Locator Count: 0"):  # fmt: skip
        assert text in second, text
    # tshark 4.0 counts the signature section but does not dissect it: it shows
    # exactly our section's bytes as trailing data
    assert "= Signature Count: 1" in signed_frame
    section = signed.to_bytes()[-40:]  # 20 bytes of fields + the 20-byte signature
    assert section[:4] == sig.original_ttl.to_bytes(4, "big") and section[-20:] == sig.signature
    assert f"Data: {section.hex()[:72]}" in signed_frame and "[Length: 40]" in signed_frame
    assert "Malformed" not in signed_frame
    digest = INFO_REQUEST.auth_data.hex()
    for text in ("Type: Info (7)", "R bit (Info-Reply): Not set", "Key ID: 0x0002",
                 f"Authentication Data: {digest}", "AFI: Reserved (0)"):  # fmt: skip
        assert text in request, text
    assert_clean(request)
    for text in (
        "R bit (Info-Reply): Set", "TTL: 1440", "EID Prefix: 10.1.0.0/16",
        "Type: NAT Traversal (7)",
        "Length: 28", "MS UDP Port Number: 4342", "ETR UDP Port Number: 61000",
        "RLOC of Global ETR: 198.51.100.7", "RLOC of MS: 203.0.113.1",
        "RLOC of Private ETR: 192.168.1.10", "RLOC of RTR 1: 203.0.113.9",
    ):  # fmt: skip
        assert text in reply, text
    assert_clean(reply)


def test_lispers_info_request_with_a_hostname_round_trips() -> None:
    """lispers.net puts its hostname (AFI 17, NUL-terminated) where the draft has AFI 0;
    tshark 4.0 flags that, we decode it."""
    raw = bytes([0x70, 0, 0, 0]) + (0x1234).to_bytes(8, "big") + bytes(12)
    raw += (17).to_bytes(2, "big") + b"xtr-dc1\x00"
    msg = decode_message(raw)
    assert isinstance(msg, InfoMessage) and not msg.reply and msg.nonce == 0x1234
    assert msg.address == DistinguishedName("xtr-dc1") and msg.eid is None
    assert msg.to_bytes() == raw
