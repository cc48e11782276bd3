"""xTR agent against the map-server on loopback: registration, resolution, probing."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pacao.clock import ManualClock
from pacao.errors import InputError
from pacao.lisp.address import EidPrefix
from pacao.lisp.config import config_from_dict
from pacao.lisp.mapserver import open_map_server
from pacao.lisp.messages import Locator, MapReply, MapRequest, RequestRecord
from pacao.lisp.xtr import (
    Event,
    LocatorDown,
    LocatorState,
    LocatorUp,
    MappingAdded,
    MappingRemoved,
    ProbeResult,
    RegistrationAcked,
    Xtr,
    close_xtr,
    open_xtr,
    xtr_config_from_dict,
)
from pacao.measurement import decode

MS_DOC: dict[str, Any] = {
    "listen": "127.0.0.1:0",
    "sites": [
        {"name": "dc1", "key": "k1", "eid_prefixes": ["10.1.0.0/16"]},
        {
            "name": "dc2",
            "key": "k2",
            "eid_prefixes": ["10.2.0.0/16"],
            "accept_more_specifics": True,
        },
    ],
}


def xtr_doc(ms: tuple[str, int], port: int, host: str, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "listen": f"{host}:{port}",
        "map_servers": [{"address": f"{ms[0]}:{ms[1]}", "key": "k2", "alg": "sha1"}],
        "map_resolvers": [f"{ms[0]}:{ms[1]}"],
        "register_interval": 60,
        "probe": {"interval": 0.05, "timeout": 0.1, "down_after": 3},
        "map_request": {"rate": 100, "burst": 100, "timeout": 0.3},
    }
    if port:
        doc["control_port"] = port
    doc.update(over)
    return doc


async def wait_for(xtr: Xtr, kind: type, pred: Callable[[Any], bool] = lambda e: True) -> Any:
    while True:
        ev = await asyncio.wait_for(xtr.events.get(), 10)  # a timeout, not the behaviour
        if isinstance(ev, kind) and pred(ev):
            return ev


async def until(pred: Callable[[], Any], timeout: float = 10.0) -> None:
    """Until pred() holds: a wait for a state, not a fixed sleep (fails after timeout)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def run(body: Callable[..., Awaitable[None]]) -> None:
    async def main() -> None:
        server, transport = await open_map_server(config_from_dict(MS_DOC))
        try:
            await body(server, server.local)
        finally:
            transport.close()

    asyncio.run(main())


def test_register_resolve_probe_down_and_up(tmp_path: Path) -> None:
    async def body(server: Any, ms: tuple[str, int]) -> None:
        # ETR for 10.2.0.0/16 on 127.0.0.2; its second locator 127.0.0.3 is silent at first
        etr_cfg = xtr_config_from_dict(
            xtr_doc(ms, 0, "127.0.0.2", database=[{
                "prefix": "10.2.0.0/16", "ttl": 10,
                "locators": [{"address": "127.0.0.2", "priority": 1, "weight": 50},
                             {"address": "127.0.0.3", "priority": 2, "weight": 50}],
            }])
        )  # fmt: skip
        t_reg = time.monotonic()
        etr, etr_t, _ = await open_xtr(etr_cfg)
        port = etr.local[1]
        acked = await wait_for(etr, RegistrationAcked)
        # the RTT is in seconds and within what this test saw pass (no fixed bound)
        assert acked.map_server == f"{ms[0]}:{ms[1]}"
        assert 0 < acked.rtt <= time.monotonic() - t_reg
        assert len(server.registrations) == 1
        # ITR on 127.0.0.4 (same port number), watching an EID of the ETR's prefix
        itr_cfg = xtr_config_from_dict(
            xtr_doc(ms, port, "127.0.0.4", watch=["10.2.3.4/32"], map_servers=[],
                    stats_file=str(tmp_path / "itr.json"), http="127.0.0.1:0",
                    samples_file=str(tmp_path / "samples.json"))
        )  # fmt: skip
        t_itr = time.monotonic()
        itr, itr_t, http = await open_xtr(itr_cfg)
        try:
            added = await wait_for(itr, MappingAdded)
            assert added.prefix == EidPrefix.parse("10.2.0.0/16")
            assert [(str(x.address), x.priority) for x in added.locators] == [
                ("127.0.0.2", 1),
                ("127.0.0.3", 2),
            ]
            res = await wait_for(itr, ProbeResult, lambda e: e.locator == "127.0.0.2")
            assert 0 < res.rtt <= time.monotonic() - t_itr
            down = await wait_for(itr, LocatorDown)
            assert down.locator == "127.0.0.3" and down.lost == 3
            # now something answers on 127.0.0.3: the locator comes back
            peer_cfg = xtr_config_from_dict(
                xtr_doc(ms, port, "127.0.0.3", map_servers=[], map_resolvers=[],
                        database=etr_cfg.database and [{"prefix": "10.2.0.0/16", "locators": [
                            {"address": "127.0.0.3"}]}])
            )  # fmt: skip
            peer, peer_t, _ = await open_xtr(peer_cfg)
            up = await wait_for(itr, LocatorUp)
            assert up.locator == "127.0.0.3" and up.rtt > 0
            await close_xtr(peer, peer_t, None)
            entry = itr.cache.lookup(EidPrefix.parse("10.2.3.4/32"), itr.clock.now())
            assert entry is not None
            first = entry.locators[0]
            assert first.replies >= 3 and first.rtt is not None and first.jitter >= 0
            assert etr.stats["probe_replied"] >= 3
            # HTTP/JSON endpoint and stats file
            assert http is not None
            host, hport = http.sockets[0].getsockname()[:2]

            async def get(path: str) -> tuple[bytes, Any]:
                reader, writer = await asyncio.open_connection(host, hport)
                writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                raw = await reader.read()
                writer.close()
                head, body_bytes = raw.split(b"\r\n\r\n", 1)
                return head, json.loads(body_bytes)

            head, cache = await get("/map-cache")
            assert head.startswith(b"HTTP/1.0 200")
            assert cache[0]["prefix"] == "10.2.0.0/16"
            assert cache[0]["locators"][0]["rtt_ms"] > 0
            # every probe's outcome, in the controller's format: the RTTs the ITR
            # measured (ProbeResult, LocatorUp) and the silent locator's losses
            head, doc = await get("/samples")
            batch = decode(doc)
            assert head.startswith(b"HTTP/1.0 200") and batch.rloc == "127.0.0.4"
            by_loc = {a: [r for r in batch.samples if r.locator == a]
                      for a in ("127.0.0.2", "127.0.0.3")}  # fmt: skip
            assert round(res.rtt * 1000, 3) in [r.rtt_ms for r in by_loc["127.0.0.2"]]
            assert round(up.rtt * 1000, 3) in [r.rtt_ms for r in by_loc["127.0.0.3"]]
            assert sum(r.lost for r in by_loc["127.0.0.3"]) >= 3
            assert all(r.eid == "10.2.0.0/16" for r in batch.samples)
            # a reader's cursor: only what follows it; another stream: everything
            last = batch.next_seq - 1
            _, doc = await get(f"/samples?stream={batch.stream}&after={last}")
            assert all(r.seq > last for r in decode(doc).samples)
            _, doc = await get(f"/samples?stream=other&after={last}")
            assert decode(doc).samples[0].seq == batch.first_seq
            head, doc = await get("/samples?stream=x&after=-1")
            assert head.startswith(b"HTTP/1.0 400") and "after" in doc["error"]
            snap: dict[str, Any] = {}
            for _ in range(200):  # until a snapshot with 3 probe replies is written (10 s)
                f = tmp_path / "itr.json"
                snap = json.loads(f.read_text()) if f.exists() else {}
                if snap.get("counters", {}).get("probe_reply", 0) >= 3:
                    break
                await asyncio.sleep(0.05)
            assert snap["map_cache"][0]["locators"][1]["address"] == "127.0.0.3"
            assert snap["counters"]["probe_reply"] >= 3
        finally:
            await close_xtr(itr, itr_t, http)
            await close_xtr(etr, etr_t, None)
        # the file written at close holds the whole buffer
        written = decode(json.loads((tmp_path / "samples.json").read_text()))
        assert [(r.seq, r.ts) for r in written.samples] == [
            (r.seq, r.ts) for r in itr.samples.records
        ]

    run(body)


def test_unknown_nonces_are_ignored_and_negative_replies_cached() -> None:
    async def body(server: Any, ms: tuple[str, int]) -> None:
        cfg = xtr_config_from_dict(xtr_doc(ms, 0, "127.0.0.1", map_servers=[]))
        itr, t, _ = await open_xtr(cfg)
        try:
            itr.send(MapReply(nonce=12345, records=()).to_bytes(), itr.local)
            await until(lambda: itr.stats["unknown_nonce"])
            assert itr.stats["unknown_nonce"] == 1
            assert itr.lookup(EidPrefix.parse("172.16.0.1/32")) is None
            assert itr.lookup(EidPrefix.parse("172.16.0.1/32")) is None  # in flight: no 2nd
            assert itr.stats["map_request_sent"] == 1
            await until(lambda: itr.lookup(EidPrefix.parse("172.16.0.1/32")) is not None)
            entry = itr.lookup(EidPrefix.parse("172.16.0.1/32"))
            assert entry is not None and entry.negative
            assert entry.record.action == 1 and entry.record.ttl == 15
            assert str(entry.prefix) == "128.0.0.0/1"  # the sites are 10.1/16 and 10.2/16
        finally:
            await close_xtr(itr, t, None)

    run(body)


def test_map_requests_on_miss_are_rate_limited() -> None:
    async def body(server: Any, ms: tuple[str, int]) -> None:
        doc = xtr_doc(ms, 0, "127.0.0.1", map_servers=[], map_request={"rate": 1, "burst": 5})
        itr, t, _ = await open_xtr(xtr_config_from_dict(doc))
        try:
            for i in range(50):
                itr.lookup(EidPrefix.parse(f"172.20.{i}.1/32"))
            assert itr.stats["map_request_sent"] == 5
            assert itr.stats["request_rate_limited"] == 45
        finally:
            await close_xtr(itr, t, None)

    run(body)


def test_map_cache_is_lru_bounded_and_expires() -> None:
    async def body(server: Any, ms: tuple[str, int]) -> None:
        doc = xtr_doc(ms, 0, "127.0.0.1", map_servers=[], map_cache={"max_entries": 2})
        clock = ManualClock(1000.0)
        itr, t, _ = await open_xtr(xtr_config_from_dict(doc), clock)
        events: list[Event] = []
        itr.callbacks.append(events.append)
        try:
            from pacao.lisp.messages import MappingRecord

            for i in range(3):
                rec = MappingRecord.for_prefix(
                    EidPrefix.parse(f"10.{i}.0.0/16"),
                    ttl=1,
                    locators=(Locator(IPv4Address("127.0.0.9")),),
                )
                itr.install(rec)
                if i == 1:  # touch 10.0/16 so that 10.1/16 is the least recently used
                    assert itr.cache.lookup(EidPrefix.parse("10.0.0.1/32"), clock.now()) is not None
            assert len(itr.cache) == 2
            assert [str(e.prefix) for e in events if isinstance(e, MappingRemoved)] == [
                "10.1.0.0/16"
            ]
            clock.advance(61)
            assert itr.cache.lookup(EidPrefix.parse("10.0.0.1/32"), clock.now()) is None
            assert len(itr.cache.expired(clock.now())) == 2
        finally:
            await close_xtr(itr, t, None)

    run(body)


def test_jitter_follows_rfc3550() -> None:
    loc = LocatorState(Locator(IPv4Address("192.0.2.1")))
    rtts = [0.010, 0.030, 0.020, 0.020, 0.050]
    j = 0.0
    for prev, cur in itertools.pairwise(rtts):
        j += (abs(cur - prev) - j) / 16
    for r in rtts:
        loc.observe(r)
    assert loc.jitter == pytest.approx(j)
    assert loc.rtt == 0.050 and loc.replies == 5


def test_rloc_probe_reply_sets_p_bit() -> None:
    async def body(server: Any, ms: tuple[str, int]) -> None:
        doc = xtr_doc(ms, 0, "127.0.0.1", map_servers=[], database=[
            {"prefix": "10.5.0.0/16", "locators": [{"address": "127.0.0.1"}]}])  # fmt: skip
        etr, t, _ = await open_xtr(xtr_config_from_dict(doc))
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class P(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if not got.done():
                    got.set_result(data)

        tr, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
        try:
            req = MapRequest(77, (RequestRecord.for_prefix(EidPrefix.parse("10.5.1.1/32")),),
                             (IPv4Address("127.0.0.1"),), probe=True)  # fmt: skip
            tr.sendto(req.to_bytes(), etr.local)
            from pacao.lisp.messages import decode_message

            reply = decode_message(await asyncio.wait_for(got, 10))
            assert isinstance(reply, MapReply) and reply.probe and reply.nonce == 77
            (rec,) = reply.records
            assert rec.authoritative and rec.locators[0].probed and rec.locators[0].local
        finally:
            tr.close()
            await close_xtr(etr, t, None)

    run(body)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"watch": ["10.0.0.0/8"], "map_resolvers": []}, "map_resolvers"),
        (
            {"database": [{"prefix": "10.0.0.0/8", "locators": [{"address": "x"}]}]},
            "database[0].locators[0].address",
        ),
        ({"probe": {"interval": 0}}, "probe.interval"),
        (
            {"map_servers": [{"address": "127.0.0.1:1", "key": "k", "alg": "md5"}]},
            "map_servers[0].alg",
        ),
    ],
)
def test_xtr_config_errors(over: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as err:
        xtr_config_from_dict(xtr_doc(("127.0.0.1", 1), 0, "127.0.0.1", **over))
    assert err.value.field == field


_MS_WORDS = "expected {address: HOST:PORT, key: SECRET, alg: sha1|sha256}"


@pytest.mark.parametrize(
    ("over", "field", "value", "allowed"),
    [
        ({"bogus": 1, "listen": 5}, "bogus", 1, "unknown key; allowed: ["),  # keys first
        ({"map_servers": [{"address": "127.0.0.1:1"}]}, "map_servers[0]",
         {"address": "127.0.0.1:1"}, _MS_WORDS),
        ({"map_servers": [5]}, "map_servers[0]", 5, _MS_WORDS),
        ({"map_resolvers": ["x"]}, "map_resolvers[0]", "x", "the host must be an IPv4 or"),
        ({"database": [{"prefix": "10.0.0.0/8"}]}, "database[0].locators", None,
         "expected a non-empty list"),
        ({"database": [{"prefix": "10.0.0.0/8", "locators": [{"address": "1.2.3.4", "x": 1}]}]},
         "database[0].locators[0].x", 1, "allowed: address, priority, weight"),
        ({"probe": 3}, "probe", 3, "expected a mapping"),
        ({"map_request": {"burst": 0}}, "map_request.burst", 0, "expected a number in [1, "),
        ({"change_priority": {"key": "k", "x": 1}}, "change_priority", {"key": "k", "x": 1},
         "expected {key: SECRET, method: ...}"),
        ({"change_priority": {"method": "both"}}, "change_priority.key", None,
         "required for method both"),
        ({"xtr_id": "00"}, "xtr_id", "00", "expected 32 hexadecimal digits (128 bits)"),
    ],
)  # fmt: skip
def test_xtr_config_errors_name_the_key_path_value_and_allowed(
    over: dict[str, Any], field: str, value: object, allowed: str
) -> None:
    with pytest.raises(InputError) as err:
        xtr_config_from_dict(xtr_doc(("127.0.0.1", 1), 0, "127.0.0.1", **over))
    assert (err.value.field, err.value.value) == (field, value)
    assert err.value.allowed.startswith(allowed)


def test_etr_answers_forwarded_requests_without_proxy_reply() -> None:
    async def body(server: Any, ms: tuple[str, int]) -> None:
        db = [{"prefix": "10.2.8.0/24", "locators": [{"address": "127.0.0.2", "priority": 3}]}]
        etr_cfg = xtr_config_from_dict(xtr_doc(ms, 0, "127.0.0.2", database=db, proxy_reply=False))
        etr, etr_t, _ = await open_xtr(etr_cfg)
        itr_cfg = xtr_config_from_dict(xtr_doc(ms, etr.local[1], "127.0.0.4", map_servers=[]))
        itr, itr_t, _ = await open_xtr(itr_cfg)
        try:
            await wait_for(etr, RegistrationAcked)
            itr.lookup(EidPrefix.parse("10.2.8.9/32"))
            added = await wait_for(itr, MappingAdded)
            assert str(added.prefix) == "10.2.8.0/24" and added.locators[0].priority == 3
            entry = itr.cache.lookup(EidPrefix.parse("10.2.8.9/32"), itr.clock.now())
            assert entry is not None and entry.record.authoritative  # from the ETR itself
            assert server.stats["forwarded"] == 1 and etr.stats["map_reply_sent"] == 1
        finally:
            await close_xtr(itr, itr_t, None)
            await close_xtr(etr, etr_t, None)

    run(body)


def test_xtr_survives_garbage() -> None:
    import random

    async def body(server: Any, ms: tuple[str, int]) -> None:
        db = [{"prefix": "10.5.0.0/16", "locators": [{"address": "127.0.0.1"}]}]
        etr, t, _ = await open_xtr(xtr_config_from_dict(xtr_doc(ms, 0, "127.0.0.1", database=db)))
        loop = asyncio.get_running_loop()
        replies: asyncio.Queue[bytes] = asyncio.Queue()

        class P(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                replies.put_nowait(data)

        tr, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
        rnd = random.Random(7)
        probe = MapRequest(1, (RequestRecord.for_prefix(EidPrefix.parse("10.5.1.1/32")),),
                           (IPv4Address("127.0.0.1"),), probe=True).to_bytes()  # fmt: skip
        try:
            for i in range(200):
                buf = bytearray(probe if i % 2 else bytes(rnd.randrange(256) for _ in range(40)))
                buf[rnd.randrange(len(buf))] = rnd.randrange(256)
                tr.sendto(bytes(buf), etr.local)
                if i % 20 == 0:  # stay within the socket buffers: until handled
                    await until(lambda n=i: etr.stats["received"] >= n)
            await until(lambda: etr.stats["received"] >= 200)
            while not replies.empty():
                replies.get_nowait()
            last = MapRequest(4242, (RequestRecord.for_prefix(EidPrefix.parse("10.5.1.1/32")),),
                              (IPv4Address("127.0.0.1"),), probe=True).to_bytes()  # fmt: skip
            tr.sendto(last, etr.local)
            from pacao.lisp.messages import decode_message

            reply = decode_message(await asyncio.wait_for(replies.get(), 10))
            while reply.nonce != 4242:  # a late answer to one of the mutated probes
                reply = decode_message(await asyncio.wait_for(replies.get(), 10))
            assert isinstance(reply, MapReply) and reply.probe
            assert etr.stats["handler_errors"] == 0 and etr.stats["malformed"] > 50
        finally:
            tr.close()
            await close_xtr(etr, t, None)

    run(body)


def test_priority_change_switches_the_itr() -> None:
    async def body(server: Any, ms: tuple[str, int]) -> None:
        import os
        import sys

        from pacao.lisp.xtr import ChangeAcked, PrioritiesChanged

        change = {"key": "shared", "method": "both"}
        db = [{"prefix": "10.2.0.0/16", "locators": [
            {"address": "127.0.0.2", "priority": 1, "weight": 50},
            {"address": "127.0.0.3", "priority": 2, "weight": 50}]}]  # fmt: skip
        # A pending CHANGE-PRIORITY expires after the request timeout: generous here, so
        # that a loaded host delaying the ack is not a failure (nothing here is lost).
        slow_ok = {"rate": 100, "burst": 100, "timeout": 10}
        etr_doc = xtr_doc(ms, 0, "127.0.0.2", database=db, change_priority=change,
                          map_request=slow_ok)  # fmt: skip
        etr_doc["http"] = "127.0.0.1:0"
        etr, etr_t, http = await open_xtr(xtr_config_from_dict(etr_doc))
        port = etr.local[1]
        itr_doc = xtr_doc(ms, port, "127.0.0.4", map_servers=[], watch=["10.2.3.4/32"],
                          change_priority=change, map_request=slow_ok)  # fmt: skip
        itr, itr_t, _ = await open_xtr(xtr_config_from_dict(itr_doc))
        prefix = EidPrefix.parse("10.2.0.0/16")

        def prios() -> list[int]:
            entry = itr.cache.lookup(EidPrefix.parse("10.2.3.4/32"), itr.clock.now())
            assert entry is not None
            return [x.locator.priority for x in entry.locators]

        try:
            await wait_for(itr, MappingAdded)
            await wait_for(itr, ProbeResult)  # the ETR has now seen the ITR's probes
            await until(lambda: etr.itr_peers.get(prefix))
            # 1. CHANGE-PRIORITY: applied in place, acknowledged
            report = etr.set_priorities(
                prefix, {"127.0.0.2": 2, "127.0.0.3": 1}, method="change-priority"
            )
            assert ("127.0.0.4", port) in report.itrs
            changed = await wait_for(itr, PrioritiesChanged)
            assert [x.priority for x in changed.locators] == [2, 1] == prios()
            ack = await wait_for(etr, ChangeAcked)
            assert ack.nonce == report.nonce and ack.elapsed >= 0
            # 2. SMR: the ITR re-asks the map-server, which has the new registration
            etr.set_priorities(prefix, {"127.0.0.2": 1, "127.0.0.3": 3}, method="smr")
            added = await wait_for(itr, MappingAdded, lambda e: e.locators[1].priority == 3)
            assert [x.priority for x in added.locators] == [1, 3] == prios()
            assert itr.stats["smr_received"] >= 1 and etr.stats["smr_sent"] >= 1
            reg = server.registrations.get(prefix)
            assert [x.priority for x in reg.record.locators] == [1, 3]
            # 3. the CLI, through the ETR's HTTP endpoint
            assert http is not None
            hport = http.sockets[0].getsockname()[1]
            src = str(Path(__file__).resolve().parents[1] / "src")
            env = {**os.environ, "PYTHONPATH": src}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pacao.cli", "lisp", "set-priority", "10.2.0.0/16",
                "127.0.0.2=5", "127.0.0.3=4/10", "--xtr", f"127.0.0.1:{hport}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err
            answer = json.loads(out)
            assert answer["method"] == "both" and answer["itrs"] == [f"127.0.0.4:{port}"]
            await wait_for(itr, PrioritiesChanged, lambda e: e.locators[0].priority == 5)
            assert prios() == [5, 4]
            entry = itr.cache.lookup(EidPrefix.parse("10.2.3.4/32"), itr.clock.now())
            assert entry is not None and entry.locators[1].locator.weight == 10
            bad = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pacao.cli", "lisp", "set-priority", "10.2.0.0/16",
                "127.0.0.9=1", "--xtr", f"127.0.0.1:{hport}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            _, err = await asyncio.wait_for(bad.communicate(), 60)
            assert bad.returncode == 2 and b"not a locator of 10.2.0.0/16" in err
        finally:
            await close_xtr(itr, itr_t, None)
            await close_xtr(etr, etr_t, http)

    run(body)


def test_change_priority_needs_the_key() -> None:
    async def body(server: Any, ms: tuple[str, int]) -> None:
        from pacao.lisp import auth
        from pacao.lisp.messages import ChangePriority, MappingRecord

        doc = xtr_doc(ms, 0, "127.0.0.1", map_servers=[], change_priority={"key": "right"})
        itr, t, _ = await open_xtr(xtr_config_from_dict(doc))
        try:
            loc = Locator(IPv4Address("127.0.0.9"), 1)
            rec = MappingRecord.for_prefix(EidPrefix.parse("10.7.0.0/16"), ttl=5, locators=(loc,))
            itr.install(rec)
            forged = ChangePriority(1, (replace_priority(rec, 9),))
            itr.send(auth.sign(forged, "wrong").to_bytes(), itr.local)
            itr.send(
                auth.sign(ChangePriority(2, (replace_priority(rec, 7),)), "right").to_bytes(),
                itr.local,
            )
            for _ in range(1000):  # until both are handled (10 s at most), not a fixed sleep
                if itr.stats["bad_auth"] + itr.stats["change_priority_received"] >= 2:
                    break
                await asyncio.sleep(0.01)
            entry = itr.cache.table.get(EidPrefix.parse("10.7.0.0/16"))
            assert entry is not None and entry.locators[0].locator.priority == 7
            assert itr.stats["bad_auth"] == 1 and itr.stats["change_priority_received"] == 1
        finally:
            await close_xtr(itr, t, None)

    run(body)


def replace_priority(rec: Any, prio: int) -> Any:
    from dataclasses import replace

    return replace(rec, locators=tuple(replace(x, priority=prio) for x in rec.locators))


def test_map_notify_from_another_address_is_matched_by_nonce() -> None:
    """lispers.net answers from whatever source address the kernel picks: the
    Map-Notify of our Map-Register is verified with the key of the map-server
    the register went to; an unsolicited one from an unknown address is not."""
    import socket

    from pacao.lisp import auth
    from pacao.lisp.messages import MapNotify, MapRegister, decode_message

    async def main() -> None:
        ms_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ms_sock.bind(("127.0.0.7", 0))
        other.bind(("127.0.0.8", 0))
        ms_sock.settimeout(5)
        doc = {
            "listen": "127.0.0.1:0",
            "map_servers": [{"address": f"127.0.0.7:{ms_sock.getsockname()[1]}", "key": "kk"}],
            "database": [{"prefix": "10.1.0.0/16", "locators": [{"address": "127.0.0.1"}]}],
        }
        xtr, t, _ = await open_xtr(xtr_config_from_dict(doc))
        try:
            loop = asyncio.get_running_loop()
            data, addr = await loop.run_in_executor(None, ms_sock.recvfrom, 4096)
            reg = decode_message(data)
            assert isinstance(reg, MapRegister) and auth.verify(data, "kk")
            notify = MapNotify(nonce=reg.nonce, records=reg.records)
            other.sendto(auth.sign(notify, "kk", reg.alg_id).to_bytes(), addr)
            acked = await wait_for(xtr, RegistrationAcked)
            assert acked.nonce == reg.nonce and xtr.stats["bad_auth"] == 0
            stray = MapNotify(nonce=reg.nonce + 1, records=reg.records)
            other.sendto(auth.sign(stray, "kk", reg.alg_id).to_bytes(), addr)
            await until(lambda: xtr.stats["bad_auth"])
            assert xtr.stats["bad_auth"] == 1
        finally:
            await close_xtr(xtr, t, None)
            ms_sock.close()
            other.close()

    asyncio.run(main())
