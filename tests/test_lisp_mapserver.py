"""Map-server/map-resolver daemon: real UDP on loopback, in process."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest

from lisp_support import capture
from pacao.clock import ManualClock
from pacao.errors import InputError
from pacao.lisp import auth
from pacao.lisp.address import EidPrefix
from pacao.lisp.config import MapServerConfig, config_from_dict
from pacao.lisp.mapserver import MapServer, open_map_server
from pacao.lisp.messages import (
    EncapsulatedControlMessage,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    Message,
    RequestRecord,
    decode_message,
)

LO = IPv4Address("127.0.0.1")
KEY = "s3cret"
BASE: dict[str, Any] = {
    "listen": "127.0.0.1:0",
    "sites": [
        {
            "name": "dc1",
            "key": KEY,
            "eid_prefixes": [
                "10.1.0.0/16",
                "2001:db8:1::/48",
                {"prefix": "10.1.0.0/16", "instance_id": 7},
            ],
            "accept_more_specifics": True,
        },
        {"name": "dc2", "key": "other", "eid_prefixes": ["10.9.0.0/16"]},
    ],
}
LOCS = (Locator(IPv4Address("198.51.100.1"), 1, 50), Locator(IPv4Address("203.0.113.1"), 2, 50))


class Peer(asyncio.DatagramProtocol):
    """A test xTR: a UDP socket on loopback with a receive queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def recv(self, timeout: float = 10.0) -> tuple[Message, tuple[str, int]]:
        """The next datagram; the timeout is a failure message, generous for a loaded host."""
        data, addr = await asyncio.wait_for(self.queue.get(), timeout)
        return decode_message(data), addr

    async def nothing(self, ms: tuple[str, int]) -> bool:
        """Nothing came for what was sent before: the map-server takes datagrams in order
        and sends a message's answers before it takes the next, so the answer to a
        Map-Request sent now comes after any such datagram (an event, not a quiet period)."""
        nonce = next(_SENTINELS)
        self.send(ecm_request(NOBODYS_EID, nonce, self.port), ms)
        msg, _ = await self.recv()
        return isinstance(msg, MapReply) and msg.nonce == nonce and not msg.records[0].locators


async def peer(host: str = "127.0.0.1") -> Peer:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(Peer, local_addr=(host, 0))
    return proto


def cfg(tmp_path: Path | None = None, **over: Any) -> MapServerConfig:
    doc = {**BASE, **over}
    if tmp_path is not None:
        doc.setdefault("state_file", str(tmp_path / "state.json"))
    return config_from_dict(doc)


def run(
    config: MapServerConfig, body: Callable[[MapServer, tuple[str, int]], Awaitable[None]]
) -> MapServer:
    async def main() -> MapServer:
        server, transport = await open_map_server(config)
        try:
            await body(server, server.local)
        finally:
            transport.close()
        return server

    return asyncio.run(main())


_NONCES = itertools.count(1 << 32)  # increasing by default, as the replay check wants
_SENTINELS = itertools.count(0x5E47_0000_0000)
NOBODYS_EID = "192.0.2.1/32"  # in no site: a negative Map-Reply


def register(
    prefix: str,
    nonce: int | None = None,
    key: str = KEY,
    alg: int = auth.ALG_HMAC_SHA256,
    proxy: bool = True,
    notify: bool = True,
    **kw: Any,
) -> bytes:
    rec = MappingRecord.for_prefix(EidPrefix.parse(prefix), locators=LOCS, authoritative=True)
    if nonce is None:
        nonce = next(_NONCES)
    msg = MapRegister(nonce, (rec,), proxy_reply=proxy, want_map_notify=notify, **kw)
    return auth.sign(msg, key, alg).to_bytes()


def ecm_request(eid: str, nonce: int, reply_port: int, iid: int = 0) -> bytes:
    prefix = EidPrefix.parse(eid, iid)
    req = MapRequest(nonce, (RequestRecord.for_prefix(prefix),), (LO,))
    dst = prefix.network.network_address
    src = LO if isinstance(dst, IPv4Address) else IPv6Address("2001:db8:2::1")
    return EncapsulatedControlMessage.wrap(req, src, dst, reply_port).to_bytes()


@pytest.mark.parametrize("alg", [auth.ALG_HMAC_SHA1, auth.ALG_HMAC_SHA256])
def test_register_with_notify_then_proxy_reply(alg: int) -> None:
    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr, itr = await peer(), await peer()
        etr.send(register("10.1.1.0/24", nonce=0x11, alg=alg), ms)
        notify, src = await etr.recv()
        assert type(notify) is MapNotify and src == ms
        assert notify.nonce == 0x11 and notify.alg_id == alg
        assert auth.verify(notify.to_bytes(), KEY)
        assert notify.records[0].prefix == EidPrefix.parse("10.1.1.0/24")
        # the reply goes to the ITR-RLOC at the inner UDP source port: the ITR's socket
        etr.send(ecm_request("10.1.1.5/32", 0x22, itr.port), ms)
        reply, _ = await itr.recv()
        assert isinstance(reply, MapReply) and reply.nonce == 0x22
        (rec,) = reply.records
        assert rec.prefix == EidPrefix.parse("10.1.1.0/24")
        assert rec.locators == LOCS and not rec.authoritative and rec.action == 0
        assert await etr.nothing(ms)

    server = run(cfg(), body)
    assert server.stats["registered"] == 1 and server.stats["proxy_reply"] == 1


def test_bad_registrations_are_dropped_and_counted() -> None:
    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr = await peer()
        etr.send(register("10.1.1.0/24", key="wrong"), ms)  # bad key
        etr.send(register("10.9.1.0/24"), ms)  # dc2 takes no more-specifics
        etr.send(register("10.9.0.0/16"), ms)  # dc2's prefix signed with dc1's key
        etr.send(register("172.16.0.0/12"), ms)  # nobody's prefix
        etr.send(register("10.1.1.0/24", alg=auth.ALG_NONE), ms)  # unauthenticated
        tampered = bytearray(register("10.1.2.0/24"))
        tampered[-1] ^= 0xFF
        etr.send(bytes(tampered), ms)
        etr.send(register("10.9.0.0/16", key="other", nonce=9), ms)  # valid for dc2
        notify, _ = await etr.recv()
        assert isinstance(notify, MapNotify) and notify.nonce == 9
        assert await etr.nothing(ms)
        assert len(server.registrations) == 1

    server = run(cfg(), body)
    assert server.stats["bad_auth"] == 4
    assert server.stats["register_rejected"] == 2


def test_forward_to_etr_without_proxy_reply() -> None:
    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr, itr = await peer(), await peer()
        etr.send(register("10.1.3.0/24", proxy=False), ms)
        await etr.recv()
        ecm = ecm_request("10.1.3.9/32", 0x33, itr.port)
        itr.send(ecm, ms)
        data, src = await asyncio.wait_for(etr.queue.get(), 10)
        assert data == ecm and src == ms  # the ECM is forwarded untouched
        assert await itr.nothing(ms)

    assert run(cfg(), body).stats["forwarded"] == 1


def test_negative_replies_cover_the_largest_hole() -> None:
    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr, itr = await peer(), await peer()
        etr.send(register("10.1.1.0/24"), ms)
        await etr.recv()
        cases = [
            ("10.2.0.1/32", "10.2.0.0/15", 15),  # outside every site: largest hole
            ("11.0.0.1/32", "11.0.0.0/8", 15),
            ("2001:db8:2::1/128", "2001:db8:2::/47", 15),
            ("10.1.200.1/32", "10.1.128.0/17", 1),  # inside dc1, unregistered part
            ("10.9.0.1/32", "10.9.0.0/16", 1),  # dc2 configured, nothing registered
        ]
        for i, (eid, hole, ttl) in enumerate(cases):
            itr.send(ecm_request(eid, 100 + i, itr.port), ms)
            reply, _ = await itr.recv()
            assert isinstance(reply, MapReply) and reply.nonce == 100 + i
            (rec,) = reply.records
            assert (str(rec.prefix), rec.ttl, rec.action, rec.locators) == (hole, ttl, 1, ())

    assert run(cfg(), body).stats["negative_reply"] == 5


def test_instance_ids_are_separate_tables() -> None:
    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr, itr = await peer(), await peer()
        etr.send(register("[7]10.1.4.0/24"), ms)
        await etr.recv()
        itr.send(ecm_request("10.1.4.1/32", 1, itr.port, iid=7), ms)
        reply, _ = await itr.recv()
        assert isinstance(reply, MapReply) and reply.records[0].locators == LOCS
        assert str(reply.records[0].prefix) == "[7]10.1.4.0/24"
        itr.send(ecm_request("10.1.4.1/32", 2, itr.port), ms)  # instance 0: not registered
        reply, _ = await itr.recv()
        assert isinstance(reply, MapReply) and reply.records[0].locators == ()

    run(cfg(), body)


def test_longest_prefix_wins_ipv4_and_ipv6() -> None:
    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr, itr = await peer(), await peer()
        for i, p in enumerate(["10.1.0.0/16", "10.1.5.0/24", "10.1.5.128/25", "2001:db8:1::/48"]):
            etr.send(register(p, nonce=i + 1), ms)
            await etr.recv()
        etr.send(register("2001:db8:1:2::/64", nonce=9), ms)
        await etr.recv()
        for eid, want in [
            ("10.1.5.200/32", "10.1.5.128/25"),
            ("10.1.5.1/32", "10.1.5.0/24"),
            ("10.1.6.1/32", "10.1.0.0/16"),
            ("2001:db8:1:2::1/128", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1/128", "2001:db8:1::/48"),
        ]:
            itr.send(ecm_request(eid, 5, itr.port), ms)
            reply, _ = await itr.recv()
            assert isinstance(reply, MapReply) and str(reply.records[0].prefix) == want

    run(cfg(), body)


def test_registrations_expire() -> None:
    clock = ManualClock(1000.0)

    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        server.clock = clock
        etr, itr = await peer(), await peer()
        etr.send(register("10.1.1.0/24"), ms)
        # T bit: time out after the Record TTL (here 1 minute) instead of the default
        rec = MappingRecord.for_prefix(EidPrefix.parse("10.1.2.0/24"), ttl=1, locators=LOCS)
        msg = MapRegister(next(_NONCES), (rec,), want_map_notify=True, use_ttl_for_timeout=True)
        etr.send(auth.sign(msg, KEY).to_bytes(), ms)
        await etr.recv()
        await etr.recv()
        assert len(server.registrations) == 2
        clock.advance(59)
        assert server.expire() == 0
        clock.advance(2)  # 61 s: the T-bit registration is gone
        assert server.expire() == 1
        clock.advance(118)  # 179 s: the default 3 x 60 s still holds
        assert server.expire() == 0
        etr.send(register("10.1.1.0/24"), ms)  # refresh
        await etr.recv()
        clock.advance(179)
        assert server.expire() == 0
        clock.advance(2)
        itr.send(ecm_request("10.1.1.1/32", 4, itr.port), ms)
        reply, _ = await itr.recv()
        assert isinstance(reply, MapReply) and reply.records[0].locators == ()
        assert len(server.registrations) == 0

    run(cfg(registration_timeout=180), body)


def test_registrations_survive_a_restart(tmp_path: Path) -> None:
    config = cfg(tmp_path)

    async def first(server: MapServer, ms: tuple[str, int]) -> None:
        etr = await peer()
        etr.send(register("10.1.1.0/24"), ms)
        etr.send(register("2001:db8:1:1::/64"), ms)
        await etr.recv()
        await etr.recv()
        server.save_state()

    run(config, first)
    doc = json.loads((tmp_path / "state.json").read_text())
    assert sorted(r["prefix"] for r in doc["registrations"]) == ["10.1.1.0/24", "2001:db8:1:1::/64"]

    async def second(server: MapServer, ms: tuple[str, int]) -> None:
        assert server.stats["restored"] == 2
        itr = await peer()
        itr.send(ecm_request("2001:db8:1:1::9/128", 7, itr.port), ms)
        reply, _ = await itr.recv()
        assert isinstance(reply, MapReply) and reply.records[0].locators == LOCS

    run(config, second)
    # expired while the daemon was down: not restored
    doc["registrations"][0]["expires_at"] = 0
    doc["registrations"][1]["record"] = "zz"  # corrupt: skipped, counted
    (tmp_path / "state.json").write_text(json.dumps(doc))
    restarted = MapServer(config)
    assert len(restarted.registrations) == 0 and restarted.stats["state_errors"] == 1


async def handled(server: MapServer, count: int, timeout: float = 10.0) -> None:
    """Until the map-server has taken ``count`` datagrams (a state, not a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while server.stats["received"] < count:
        assert asyncio.get_running_loop().time() < deadline, server.stats
        await asyncio.sleep(0.002)


def test_garbage_never_stops_the_service() -> None:
    rnd = random.Random(5)
    valid = [register("10.1.1.0/24"), ecm_request("10.1.1.1/32", 1, 9)]

    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr, itr = await peer(), await peer()
        sent = 0
        for _ in range(300):
            if rnd.random() < 0.5:
                data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 120)))
            else:
                buf = bytearray(rnd.choice(valid))
                for _ in range(rnd.randrange(1, 4)):
                    buf[rnd.randrange(len(buf))] = rnd.randrange(256)
                data = bytes(buf[: rnd.randrange(1, len(buf) + 1)])
            if data:
                itr.send(data, ms)
                sent += 1
            if sent % 20 == 0:  # stay within the socket buffers: wait until handled
                await handled(server, sent)
        await handled(server, sent)
        etr.send(register("10.1.7.0/24", nonce=(1 << 48) + 77), ms)
        notify, _ = await etr.recv()
        assert notify.nonce == (1 << 48) + 77
        assert server.stats["received"] == sent + 1
        assert server.stats["handler_errors"] == 0
        assert server.stats["malformed"] > 100

    run(cfg(), body)


def test_map_request_flood_is_rate_limited_per_source() -> None:
    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        itr = await peer()
        for i in range(40):
            itr.send(ecm_request("10.2.0.1/32", i, itr.port), ms)
        for _ in range(1000):  # until all 40 are handled and answered (10 s at most)
            if server.stats["received"] == 40 and itr.queue.qsize() >= 10:
                break
            await asyncio.sleep(0.01)
        assert itr.queue.qsize() == 10

    server = run(cfg(map_request_rate=0.01, map_request_burst=10), body)
    assert server.stats["rate_limited"] == 30


def test_ipv6_listener() -> None:
    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr = await peer("::1")
        etr.send(register("2001:db8:1:9::/64", nonce=6), ms)
        notify, src = await etr.recv()
        assert notify.nonce == 6 and src[0] == "::1"
        req = MapRequest(
            8,
            (RequestRecord.for_prefix(EidPrefix.parse("2001:db8:1:9::1/128")),),
            (IPv6Address("::1"),),
        )
        ecm = EncapsulatedControlMessage.wrap(
            req, IPv6Address("::1"), IPv6Address("2001:db8:1:9::1"), etr.port
        )
        etr.send(ecm.to_bytes(), ms)
        reply, _ = await etr.recv()
        assert isinstance(reply, MapReply) and reply.records[0].locators == LOCS

    run(cfg(listen="[::1]:0"), body)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"sites": []}, "sites"),
        ({"listen": "localhost:4342"}, "listen"),
        ({"listen": "127.0.0.1:70000"}, "listen"),
        (
            {"sites": [{"name": "a", "key": "k", "eid_prefixes": ["10.0.0.1/8"]}]},
            "sites[0].eid_prefixes[0]",
        ),
        ({"sites": [{"name": "a", "eid_prefixes": ["10.0.0.0/8"]}]}, "sites[0].key"),
        (
            {"sites": [{"name": "a", "key": "k", "eid_prefixes": ["10.0.0.0/8"], "x": 1}]},
            "sites[0].x",
        ),
        ({"registration_timeout": -1}, "registration_timeout"),
        ({"colour": "red"}, "colour"),
        (
            {"sites": [{"name": "a", "key": "k", "eid_prefixes": ["10.0.0.0/8"],
                        "replay_protection": "no"}]},
            "sites[0].replay_protection",
        ),
        (
            {"sites": [{"name": "a", "key": "k", "eid_prefixes": ["10.0.0.0/8"],
                        "max_records": 256}]},
            "sites[0].max_records",
        ),
    ],
)  # fmt: skip
def test_config_errors_name_the_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as err:
        config_from_dict({**BASE, **doc})
    assert err.value.field == field


def test_rfc6833_truncated_digests_are_answered_alike() -> None:
    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr = await peer()
        rec = MappingRecord.for_prefix(EidPrefix.parse("10.1.9.0/24"), locators=LOCS)
        for alg, size in ((auth.ALG_HMAC_SHA1, 12), (auth.ALG_HMAC_SHA256, 16)):
            msg = MapRegister(alg, (rec,), want_map_notify=True)
            etr.send(auth.sign(msg, KEY, alg, truncated=True).to_bytes(), ms)
            notify, _ = await etr.recv()
            assert isinstance(notify, MapNotify) and len(notify.auth_data) == size
            assert auth.verify(notify.to_bytes(), KEY)

    run(cfg(), body)


# ---------------------------------------------------------------- replay protection


def lispers_register() -> bytes:
    """Frame 1 of the lispers.net capture: a Map-Register signed with `interop-key`."""
    (frame, *_) = capture("map-register-notify-sha256.pcap")
    assert isinstance(decode_message(frame.payload), MapRegister)
    return frame.payload


INTEROP = {
    "listen": "127.0.0.1:0",
    "sites": [
        {
            "name": "interop",
            "key": "interop-key",
            "eid_prefixes": ["10.1.0.0/16"],
            "accept_more_specifics": True,
        }
    ],
}


@pytest.mark.parametrize("protect", [True, False])
def test_replayed_capture_is_dropped_unless_the_site_opts_out(protect: bool) -> None:
    frame = lispers_register()
    doc = {**INTEROP, "sites": [{**INTEROP["sites"][0], "replay_protection": protect}]}

    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr = await peer()
        for _ in range(3):  # the lispers.net frame, then the same bytes twice more
            etr.send(frame, ms)
        notify, _ = await etr.recv()
        assert isinstance(notify, MapNotify) and notify.nonce == 0x1111000000000001
        if protect:
            assert await etr.nothing(ms)
        else:
            for _ in range(2):
                assert isinstance((await etr.recv())[0], MapNotify)

    server = run(config_from_dict(doc), body)
    assert server.stats["registered"] == (1 if protect else 3)
    assert server.stats["replayed"] == (2 if protect else 0)


def test_replay_cannot_revert_a_priority_switch(tmp_path: Path) -> None:
    """The operator's case: 1/2, then 2/1, then the first datagram again."""
    first = register("10.1.2.0/24", nonce=(1_800_000_000 << 32) | 1)
    swapped = tuple(Locator(x.address, 3 - x.priority, x.weight) for x in LOCS)
    rec = MappingRecord.for_prefix(EidPrefix.parse("10.1.2.0/24"), locators=swapped)
    msg = MapRegister((1_800_000_000 << 32) | 2, (rec,), proxy_reply=True, want_map_notify=True)
    second = auth.sign(msg, KEY).to_bytes()
    config = cfg(tmp_path)

    async def served(ms: tuple[str, int], itr: Peer) -> tuple[int, ...]:
        itr.send(ecm_request("10.1.2.7/32", 5, itr.port), ms)
        reply, _ = await itr.recv()
        assert isinstance(reply, MapReply)
        return tuple(x.priority for x in reply.records[0].locators)

    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr, itr = await peer(), await peer()
        for data in (first, second):
            etr.send(data, ms)
            await etr.recv()
        assert await served(ms, itr) == (2, 1)
        etr.send(first, ms)
        assert await etr.nothing(ms)  # no Map-Notify for a replay
        assert await served(ms, itr) == (2, 1)
        server.save_state()

    assert run(config, body).stats["replayed"] == 1

    async def after_restart(server: MapServer, ms: tuple[str, int]) -> None:
        etr, itr = await peer(), await peer()
        etr.send(first, ms)  # the last nonce was persisted with the registrations
        assert await etr.nothing(ms)
        assert await served(ms, itr) == (2, 1)

    assert run(config, after_restart).stats["replayed"] == 1
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["nonces"] == [{"site": "dc1", "xtr_id": None, "nonce": (1_800_000_000 << 32) | 2}]


def test_nonces_are_tracked_per_xtr_id_and_zero_is_refused() -> None:
    a, b = bytes(range(16)), bytes(range(1, 17))
    sec = 1_800_000_000 << 32

    def reg(nonce: int, xtr: bytes | None) -> bytes:
        if xtr is None:
            return register("10.1.3.0/24", nonce=nonce)
        return register("10.1.3.0/24", nonce=nonce, xtr_id_present=True, xtr_id=xtr,
                        site_id=bytes(8))  # fmt: skip

    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr = await peer()
        # two xTRs of one site in the same second, each with its own counter: both fresh
        for nonce, xtr, fresh in [
            (sec | 5, a, True),
            (sec | 5, b, True),
            (sec | 6, a, True),
            (sec | 5, a, False),  # a's older one
            (sec | 6, a, False),  # a's last one, again
            (sec | 7, None, True),  # no xTR-ID: the site's own stream
            (sec | 6, None, False),
            (0, b, False),  # nonce 0: no anti-replay information at all
        ]:
            etr.send(reg(nonce, xtr), ms)
            if fresh:
                notify, _ = await etr.recv()
                assert notify.nonce == nonce
            else:
                assert await etr.nothing(ms), (hex(nonce), xtr)

    assert run(cfg(), body).stats["replayed"] == 4


def test_xtr_and_set_priority_send_increasing_nonces() -> None:
    from pacao.lisp.xtr import RegistrationAcked, Xtr, close_xtr, open_xtr, xtr_config_from_dict

    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        docs = [
            {
                "listen": f"127.0.0.{i}:0",
                "map_servers": [{"address": f"{ms[0]}:{ms[1]}", "key": KEY}],
                "database": [
                    {
                        "prefix": "10.1.4.0/24",
                        "locators": [
                            {"address": "127.0.0.1", "priority": 1},
                            {"address": "127.0.0.2", "priority": 2},
                        ],
                    }
                ],
            }
            for i in (1, 2)
        ]
        opened = [await open_xtr(xtr_config_from_dict(d)) for d in docs]
        agents: list[Xtr] = [o[0] for o in opened]
        try:
            for agent in agents:  # both registered at start (same site, same second)
                ev = await asyncio.wait_for(agent.events.get(), 30)  # timeouts, generous
                while not isinstance(ev, RegistrationAcked):
                    ev = await asyncio.wait_for(agent.events.get(), 30)
            prefix = EidPrefix.parse("10.1.4.0/24")
            for round_ in range(3):  # switches in quick succession, both agents
                for agent in agents:
                    sent = server.clock.now()
                    agent.set_priorities(prefix, {"127.0.0.1": 2 + round_, "127.0.0.2": 1})
                    ev = await asyncio.wait_for(agent.events.get(), 30)
                    while not isinstance(ev, RegistrationAcked):
                        ev = await asyncio.wait_for(agent.events.get(), 30)
                    # the nonce's high half is the send time in seconds: between the two
                    # clock readings around it (1 s for the truncation), however long it took
                    assert sent - 1 <= ev.nonce >> 32 <= server.clock.now(), (sent, ev.nonce >> 32)
            assert agents[0].xtr_id != agents[1].xtr_id
        finally:
            for x, transport, http in opened:
                await close_xtr(x, transport, http)

    server = run(cfg(), body)
    assert server.stats["registered"] == 8 and server.stats["replayed"] == 0
    assert len(server.last_nonce) == 2


# ---------------------------------------------------------------- per-site limits


def test_oversized_registrations_are_refused_and_counted() -> None:
    many_locs = tuple(Locator(IPv4Address(f"198.51.100.{i}"), 1, 10) for i in range(1, 10))
    doc = {**BASE, "sites": [{**BASE["sites"][0], "max_records": 3, "max_locators": 8,
                              "max_prefixes": 5}, BASE["sites"][1]]}  # fmt: skip

    def reg(prefixes: list[str], locs: tuple[Locator, ...] = LOCS) -> bytes:
        recs = tuple(MappingRecord.for_prefix(EidPrefix.parse(p), locators=locs) for p in prefixes)
        return auth.sign(MapRegister(next(_NONCES), recs, want_map_notify=True), KEY).to_bytes()

    async def body(server: MapServer, ms: tuple[str, int]) -> None:
        etr = await peer()
        refused = [
            reg([f"10.1.{i}.0/24" for i in range(4)]),  # 4 records > 3
            reg(["10.1.9.0/24"], many_locs),  # 9 locators > 8
        ]
        for data in refused:
            etr.send(data, ms)
            assert await etr.nothing(ms)
        for chunk in (["10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"], ["10.1.4.0/24"]):
            etr.send(reg(chunk), ms)
            await etr.recv()
        etr.send(reg(["10.1.1.0/24", "10.1.5.0/24"]), ms)  # 5 held: a refresh + 1 new fits
        await etr.recv()
        etr.send(reg(["10.1.6.0/24"]), ms)  # a 6th prefix does not
        assert await etr.nothing(ms)
        assert len(server.registrations) == 5

    server = run(config_from_dict(doc), body)
    assert server.stats["register_too_large"] == 3 and server.stats["registered"] == 3


def test_expiry_pops_only_what_is_due() -> None:
    """Expiry is a heap: refreshes and shortened lifetimes are honoured without a scan."""
    clock = ManualClock(1000.0)
    server = MapServer(cfg(), clock=clock)
    sec = 1_800_000_000 << 32
    for i in range(200):
        server.handle_register(
            decode_message(register(f"10.1.{i}.0/24", nonce=sec + i)),  # type: ignore[arg-type]
            register(f"10.1.{i}.0/24", nonce=sec + i), ("127.0.0.1", 1),
        )  # fmt: skip
    assert len(server.registrations) == 200 and server.site_count["dc1"] == 200
    clock.advance(100)
    for i in range(100):  # refresh half of them 100 s later
        data = register(f"10.1.{i}.0/24", nonce=sec + 1000 + i)
        server.handle_register(decode_message(data), data, ("127.0.0.1", 1))  # type: ignore[arg-type]
    clock.advance(80)  # 1180 s
    assert server.expire() == 100  # the 100 not refreshed
    assert sorted(str(p) for p, _ in server.registrations.items())[:1] == ["10.1.0.0/24"]
    assert server.expire() == 0
    clock.advance(100)  # 1280 s
    assert server.expire() == 100 and len(server.registrations) == 0
    assert server.site_count["dc1"] == 0 and len(server._expiry) == 0
