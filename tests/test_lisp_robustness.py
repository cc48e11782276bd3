"""The daemons as processes under a flood of garbage and of sources (loopback only).

Each test starts the real `pacao lisp map-server` / `pacao lisp xtr`, sends
tens of thousands of random and mutated datagrams (every one classified here
with the decoder, so the exact number of malformed ones is known), then
Map-Requests from 20,000 distinct loopback addresses, and checks that the
daemon still answers, that its `malformed` counter equals what was sent, and
that its resident memory stayed bounded (per-source state is LRU-bounded).
A valid request after every batch acts as a barrier: UDP on loopback keeps
order, so when its answer arrives the whole batch was read (nothing was lost
to a full socket buffer, which would make the counts inexact).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from lisp_support import capture
from pacao.lisp import auth
from pacao.lisp.address import EidPrefix
from pacao.lisp.messages import (
    EncapsulatedControlMessage,
    MapNotify,
    MapReply,
    MapRequest,
    RequestRecord,
    decode_message,
)
from pacao.lisp.wire import LispDecodeError
from test_lisp_cli import SRC, stop
from test_lisp_mapserver import ecm_request, register

GARBAGE = 20_000
SOURCES = 20_000
MAX_SOURCES = 1000
RSS_GROWTH_KB = 3 * 1024  # 20,000 unbounded limiter entries would take ~5 MB
BATCH = 200


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def seeds() -> list[bytes]:
    """Valid datagrams of every type to mutate: ours and lispers.net's."""
    out = [
        register("10.1.1.0/24"),
        register("10.1.2.0/24", alg=auth.ALG_HMAC_SHA1),
        ecm_request("10.1.1.1/32", 1, 4342),
        ecm_request("2001:db8:1::1/128", 2, 4342),
        ecm_request("10.1.1.1/32", 3, 4342, iid=7),
        MapRequest(
            9, (RequestRecord.for_prefix(EidPrefix.parse("10.1.0.0/16")),), (None,)
        ).to_bytes(),
    ]
    for name in ("map-register-notify-sha256.pcap", "map-request-reply-ipv4.pcap",
                 "map-request-reply-ipv6.pcap", "priority-change.pcap"):  # fmt: skip
        out += [d.payload for d in capture(name)]
    return out


def _loopback(addr: object) -> bool:
    return addr is None or (isinstance(addr, IPv4Address | IPv6Address) and addr.is_loopback)


def garbage(rnd: random.Random, base: list[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Endless (datagram, malformed?) pairs: random bytes, mutated, truncated or
    extended valid datagrams.  Datagrams that decode into a Map-Request whose
    answer could leave loopback (a mutated ITR-RLOC) are not sent."""
    while True:
        kind = rnd.random()
        if kind < 0.3:
            data = rnd.randbytes(rnd.randrange(0, 160))
        else:
            buf = bytearray(rnd.choice(base))
            for _ in range(rnd.randrange(0, 4)):
                buf[rnd.randrange(len(buf))] = rnd.randrange(256)
            if kind < 0.6:
                buf = buf[: rnd.randrange(0, len(buf) + 1)]
            elif kind < 0.7:
                buf += rnd.randbytes(rnd.randrange(1, 40))
            elif kind < 0.8:
                buf[0] = rnd.randrange(256)  # any type nibble and flags
            data = bytes(buf)
        try:
            msg = decode_message(data)
        except LispDecodeError:
            yield data, True
            continue
        if isinstance(msg, EncapsulatedControlMessage):
            msg = msg.message
        if isinstance(msg, MapRequest) and not all(_loopback(a) for a in msg.itr_rlocs):
            continue
        yield data, False


@contextmanager
def daemon(args: list[str], line_start: str, log: Path) -> Iterator[tuple[int, str]]:
    """Run `pacao ARGS` (stderr to `log`: a pipe nobody reads would fill up);
    yield (pid, its 'listening on' line); stop it by PID."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pacao.cli", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(line_start), (line, log.read_text())
        yield proc.pid, line
    finally:
        stop(proc)


def udp_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.settimeout(10)
    sock.bind((host, 0))
    return sock


class Flood:
    """Sends garbage and counts it; `barrier` proves the daemon read everything."""

    def __init__(self, target: tuple[str, int], barrier: Callable[[int], None]) -> None:
        self.target = target
        self.barrier_fn = barrier
        self.sent = 0
        self.malformed = 0
        self.nonce = 1 << 40
        self.rnd = random.Random(2026)
        self.stream = garbage(self.rnd, seeds())
        self.sender = udp_socket()

    def barrier(self) -> None:
        self.nonce += 1
        self.barrier_fn(self.nonce)
        self.sent += 1

    def garbage(self, count: int) -> None:
        for i in range(count):
            data, bad = next(self.stream)
            self.sender.sendto(data, self.target)
            self.sent += 1
            self.malformed += bad
            if i % BATCH == BATCH - 1:
                self.barrier()
        self.barrier()

    def sources(self, count: int, offset: int, packet: Callable[[int], bytes]) -> None:
        """One valid request from each of `count` distinct loopback addresses."""
        for i in range(offset, offset + count):
            host = f"127.{1 + (i >> 16) % 250}.{i >> 8 & 255}.{i & 255 or 1}"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((host, 0))
                s.sendto(packet(i), self.target)
            self.sent += 1
            if i % BATCH == BATCH - 1:
                self.barrier()
        self.barrier()


def wait_reply(sock: socket.socket, nonce: int) -> MapReply:
    while True:
        data, _ = sock.recvfrom(4096)
        with contextlib.suppress(LispDecodeError):
            msg = decode_message(data)
            if isinstance(msg, MapReply) and msg.nonce == nonce:
                return msg


def drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(4096)
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(10)


def test_map_server_survives_floods_with_exact_counts_and_bounded_memory(tmp_path: Path) -> None:
    (tmp_path / "ms.yaml").write_text(
        "listen: 127.0.0.1:0\n"
        "stats_file: stats.json\n"
        "map_request_rate: 1000000\n"
        "map_request_burst: 1000000\n"
        f"map_request_sources: {MAX_SOURCES}\n"
        "sites:\n"
        "  - {name: dc1, key: s3cret, accept_more_specifics: true,\n"
        '     eid_prefixes: [10.1.0.0/16, "2001:db8:1::/48"]}\n'
    )
    args = ["lisp", "map-server", "--config", str(tmp_path / "ms.yaml")]
    log = tmp_path / "ms.log"
    with daemon(args, "pacao lisp map-server: listening on", log) as (pid, line):
        ms = ("127.0.0.1", int(line.rsplit(":", 1)[1]))
        sock, sink = udp_socket(), udp_socket()
        sock.sendto(register("10.1.0.0/16", nonce=5), ms)
        notify = decode_message(sock.recvfrom(4096)[0])
        assert isinstance(notify, MapNotify) and notify.nonce == 5
        port = sock.getsockname()[1]

        def barrier(nonce: int) -> None:
            sock.sendto(ecm_request("10.1.200.1/32", nonce, port), ms)
            assert wait_reply(sock, nonce).records[0].locators  # the registration answers
            drain(sink)

        flood = Flood(ms, barrier)
        sink_port = sink.getsockname()[1]

        def request(i: int) -> bytes:  # half hit the registration, half are negative
            eid = f"10.{1 + (i & 1)}.{i >> 8 & 255}.{i & 255}/32"
            return ecm_request(eid, i + 1, sink_port)

        flood.garbage(2000)  # warm-up: allocator pools, limiter at its bound
        flood.sources(2 * MAX_SOURCES, 0, request)
        before = rss_kb(pid)
        flood.garbage(GARBAGE)
        flood.sources(SOURCES, 2 * MAX_SOURCES, request)
        flood.garbage(2000)
        after = rss_kb(pid)
        sock.close()
        sink.close()
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert log.read_text().count("\n") < 200  # per-packet events are rate-limited
    assert flood.malformed > GARBAGE // 2
    assert stats["malformed"] == flood.malformed
    assert stats["received"] == flood.sent + 1  # + the Map-Register
    assert stats.get("handler_errors", 0) == 0
    assert stats["rate_limit_sources"] <= MAX_SOURCES
    print(f"RSS {before} kB -> {after} kB, {flood.sent} datagrams, {flood.malformed} malformed")
    assert after - before < RSS_GROWTH_KB, (before, after)


def test_xtr_survives_floods_with_exact_counts_and_bounded_memory(tmp_path: Path) -> None:
    (tmp_path / "xtr.yaml").write_text(
        "listen: 127.0.0.1:0\n"
        "http: 127.0.0.1:0\n"
        "database:\n"
        "  - prefix: 10.1.0.0/16\n"
        "    locators: [{address: 127.0.0.1, priority: 1, weight: 100}]\n"
    )
    args = ["lisp", "xtr", "--config", str(tmp_path / "xtr.yaml")]
    log = tmp_path / "xtr.log"
    with daemon(args, "pacao lisp xtr: listening on", log) as (pid, line):
        control, http = line.split("listening on ", 1)[1].split(", http on ")
        xtr = ("127.0.0.1", int(control.rsplit(":", 1)[1]))
        sock = udp_socket()

        def probe(nonce: int) -> bytes:
            record = RequestRecord.for_prefix(EidPrefix.parse("10.1.0.0/16"))
            return MapRequest(nonce, (record,), (ip_address("127.0.0.1"),), probe=True).to_bytes()

        def barrier(nonce: int) -> None:
            sock.sendto(probe(nonce), xtr)
            assert wait_reply(sock, nonce).probe

        flood = Flood(xtr, barrier)
        flood.garbage(2000)
        flood.sources(5000, 0, lambda i: probe(i + 1))  # remembered ITRs reach their bound
        before = rss_kb(pid)
        flood.garbage(GARBAGE)
        flood.sources(SOURCES, 5000, lambda i: probe(i + 1))
        flood.garbage(2000)
        after = rss_kb(pid)
        with urllib.request.urlopen(f"http://{http.strip()}/stats", timeout=10) as resp:
            counters = json.loads(resp.read())
        sock.close()
    assert flood.malformed > GARBAGE // 2
    assert counters["malformed"] == flood.malformed
    assert counters["received"] == flood.sent
    assert counters.get("handler_errors", 0) == 0
    print(f"RSS {before} kB -> {after} kB, {flood.sent} datagrams, {flood.malformed} malformed")
    assert after - before < RSS_GROWTH_KB, (before, after)
