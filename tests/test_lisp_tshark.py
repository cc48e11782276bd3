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
)
from pacao.lisp.pcap import Datagram, write_pcap

LO = IPv4Address("127.0.0.1")
LO6 = IPv6Address("::1")
P4 = EidPrefix.parse("10.1.0.0/16")
P6 = EidPrefix.parse("2001:db8:1::/48")
PI = EidPrefix.parse("[7]10.2.0.0/16")
LOCS = (Locator(IPv4Address("127.0.0.2"), 1, 50), Locator(LO6, 2, 50, local=True, probed=True))
RECS = tuple(MappingRecord.for_prefix(p, locators=LOCS, authoritative=True) for p in (P4, P6, PI))


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
        if isinstance(msg, MapRequest | MapReply | MapRegister | MapNotify):
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
