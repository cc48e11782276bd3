"""LISP control plane: the map-resolver daemon under open-loop load, and xTR costs.

* The real daemon process (`pacao lisp map-server --config ...`, as deployed:
  housekeeping task with expiry, state and stats files) restores N registered
  /24 prefixes (proxy-reply) from its state file; the per-source rate limit is
  configured out of the way because the load comes from one address.  A
  separate client process sends pre-built ECM Map-Requests for random EIDs
  over loopback and sleeps in select() rather than busy-polling, so that it
  leaves the second core to the server:
  - open loop at fixed rates (500, 5,000, 20,000/s; paced by the clock in 1 ms
    ticks whatever the replies do): p50/p99/p99.9 request-to-reply latency for
    1,000, 10,000 and 100,000 prefixes;
  - closed loop with a window of outstanding requests: Map-Replies per second
    and the server's CPU time per reply (from /proc).
* `MapServer.expire()` with nothing due (what the housekeeping task runs every
  0.5 s) against the full scan it replaced, at each table size.
* The xTR probe scheduler with 10,000 cached locators at a 1 s interval: CPU
  time per second of probing.
* How long a remote ITR takes to switch after `Xtr.set_priorities`.
Targets: p99 < 2 ms at 5,000 requests/s with 100,000 prefixes (printed, not asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pacao.lisp.address import EidPrefix
from pacao.lisp.config import config_from_dict
from pacao.lisp.mapserver import MapServer, Registration, open_map_server
from pacao.lisp.messages import (
    EncapsulatedControlMessage,
    Locator,
    MappingRecord,
    MapRequest,
    RequestRecord,
)

LO = IPv4Address("127.0.0.1")
_AUTOGROUP_ENV = "PACAO_BENCH_OWN_AUTOGROUP"
LOCS = (Locator(IPv4Address("192.0.2.1"), 1, 50), Locator(IPv4Address("192.0.2.2"), 2, 50))


def prefix_text(i: int) -> str:
    """The i-th /24 of 10.0.0.0/7 (131,072 distinct)."""
    return f"{10 + (i >> 16)}.{i >> 8 & 255}.{i & 255}.0/24"


def daemon_config(n: int, workdir: Path) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "state_file": "state.json",
        "stats_file": "stats.json",
        "map_request_rate": 1e7,
        "map_request_burst": 10**8,
        "sites": [
            {"name": "s", "key": "k", "eid_prefixes": ["10.0.0.0/8", "11.0.0.0/8"],
             "accept_more_specifics": True, "max_prefixes": max(n, 1)}
        ],
    }  # fmt: skip


def write_state(n: int, path: Path, lifetime: float = 86400.0) -> None:
    """A state file with n registrations, as the daemon writes it (restored on start)."""
    now = time.time()
    regs = []
    for i in range(n):
        p = EidPrefix.parse(prefix_text(i))
        rec = MappingRecord.for_prefix(p, locators=LOCS, authoritative=True)
        reg = Registration(p, "s", rec, True, ("127.0.0.1", 9), now, now + lifetime)
        regs.append(reg.to_json())
    doc = {"version": 1, "saved_at": now, "registrations": regs}
    path.write_text(json.dumps(doc), encoding="utf-8")


class Daemon:
    """`pacao lisp map-server` as a process, started and stopped by PID."""

    def __init__(self, n: int, workdir: Path) -> None:
        import yaml

        workdir.mkdir(parents=True, exist_ok=True)
        write_state(n, workdir / "state.json")
        (workdir / "ms.yaml").write_text(yaml.safe_dump(daemon_config(n, workdir)))
        self.workdir = workdir
        cmd = [sys.executable, "-m", "pacao.cli", "lisp", "map-server",
               "--config", str(workdir / "ms.yaml")]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise SystemExit(f"the map-server did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        self.pid = self.proc.pid

    def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.workdir / "stats.json").read_text())
        return doc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def expire_cost(n: int, workdir: Path, calls: int = 20) -> tuple[float, float, float, float]:
    """Seconds per housekeeping expire() with nothing due, heap vs the former full scan;
    seconds a state save blocks the loop (snapshot), and a whole synchronous save."""
    doc = {**daemon_config(n, workdir), "state_file": str(workdir / f"cost{n}.json")}
    server = MapServer(config_from_dict({**doc, "stats_file": None}))
    now = time.time()
    for i in range(n):
        p = EidPrefix.parse(prefix_text(i))
        rec = MappingRecord.for_prefix(p, locators=LOCS, authoritative=True)
        server.store(Registration(p, "s", rec, True, ("127.0.0.1", 9), now, now + 3600))
    t0 = time.perf_counter()
    for _ in range(calls):
        server.expire(now + 1)
    heap = (time.perf_counter() - t0) / calls
    t0 = time.perf_counter()
    for _ in range(calls):  # what expire() did before: look at every registration
        dead = [p for p, r in server.registrations.items() if r.expires_at <= now + 1]
        assert not dead
    scan = (time.perf_counter() - t0) / calls
    t0 = time.perf_counter()
    server.state_writer()  # what a save costs the loop; the rest runs in a thread
    snapshot = time.perf_counter() - t0
    t0 = time.perf_counter()
    server.save_state()
    return heap, scan, snapshot, time.perf_counter() - t0


def echo_main(port_q: Any, stop_ev: Any, nice: int = 0) -> None:
    """Baseline: the least a Python UDP responder can do (blocking recvfrom, send the
    nonce back).  Its latency under the same load is the machine's floor."""
    if nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    port_q.put(sock.getsockname()[1])
    while not stop_ev.is_set():
        try:
            data, addr = sock.recvfrom(2048)
        except TimeoutError:
            continue
        sock.sendto(data[32:44], addr)  # bytes 4..12 of the answer: the request's nonce


def request_bytes(nonce: int, n: int, port: int, rnd: random.Random) -> bytes:
    i = rnd.randrange(n)
    eid = IPv4Address(prefix_text(i).replace(".0/24", f".{rnd.randrange(1, 255)}"))
    req = MapRequest(nonce, (RequestRecord.for_prefix(EidPrefix.host(eid)),), (LO,))
    return EncapsulatedControlMessage.wrap(req, LO, eid, port).to_bytes()


def request_packets(total: int, n: int, port: int, seed: int) -> list[bytes]:
    """`total` ECM Map-Requests for random EIDs of the n prefixes, nonces 1..total.

    Built from 4,096 templates whose inner UDP checksum is 0 (none, allowed
    over IPv4) so that patching the nonce (bytes 36..44) keeps them valid."""
    rnd = random.Random(seed)
    templates = []
    for _ in range(min(total, 4096)):
        t = bytearray(request_bytes(1, n, port, rnd))
        t[30:32] = b"\x00\x00"
        templates.append(bytes(t))
    return [
        (t := templates[k % len(templates)])[:36] + (k + 1).to_bytes(8, "big") + t[44:]
        for k in range(total)
    ]


def _client_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket, on_reply: Any) -> None:
    recv = sock.recv
    try:
        while True:
            on_reply(recv(2048))
    except BlockingIOError:
        pass


def closed_loop(ms: int, n: int, total: int, window: int, pid: int = 0) -> tuple[float, float]:
    """Keep `window` requests outstanding: Map-Replies per second.

    The client sleeps in select() while the window is full instead of
    busy-polling, so that it leaves the second core to the map-resolver;
    a large window amortises the wake-ups (costly in this VM).  Returns the
    rate and the CPU share (of one core) that process `pid` used meanwhile."""
    sock = _client_socket()
    port = sock.getsockname()[1]
    packets = request_packets(total, n, port, 1)
    dest = ("127.0.0.1", ms)
    got = 0

    def count(_: bytes) -> None:
        nonlocal got
        got += 1

    sent = 0
    cpu0 = process_cpu(pid) if pid else 0.0
    t0 = last = time.perf_counter()
    while got < total:
        while sent < total and sent - got < window:
            sock.sendto(packets[sent], dest)
            sent += 1
        if not select.select([sock], [], [], 1.0)[0]:
            break  # replies lost: stop counting
        _drain(sock, count)
        last = time.perf_counter()
    busy = (process_cpu(pid) - cpu0) / (time.perf_counter() - t0) if pid else 0.0
    sock.close()
    return got / (last - t0), busy


def open_loop(
    ms: int, n: int, rate: float, seconds: float, pid: int = 0, tick: float = 0.001
) -> tuple[list[float], int, float]:
    """Send at a fixed rate whatever the replies do (open loop): latencies in seconds.

    Requests leave in clock ticks of `tick` seconds (10 per 1 ms tick at
    10,000/s), each time-stamped as it leaves; its nonce indexes the stamp.
    Between ticks the client sleeps in select() and reads replies as they
    come: one wake-up per tick rather than per request keeps the client cheap,
    so that on a busy 2-core machine it does not fall behind and measure its
    own queue.  Returns the latencies, the number sent and the CPU share of
    process `pid`."""
    sock = _client_socket()
    port = sock.getsockname()[1]
    total = int(rate * seconds)
    packets = request_packets(total, n, port, 2)
    sent_at = [0.0] * (total + 1)
    lat: list[float] = []
    clock = time.perf_counter
    dest = ("127.0.0.1", ms)
    per_tick = max(1, round(rate * tick))

    def stamp(data: bytes) -> None:
        lat.append(clock() - sent_at[int.from_bytes(data[4:12], "big")])

    cpu0 = process_cpu(pid) if pid else 0.0
    t0 = clock()
    k = 0
    while len(lat) < total:
        now = clock()
        if k < total:
            due = min(total, int((now - t0) * rate) + 1)
            while k < due:
                sent_at[k + 1] = clock()
                sock.sendto(packets[k], dest)
                k += 1
            wait = max(0.0, t0 + (k + per_tick - 1) / rate - clock())
        elif now - t0 > seconds + 1.0:
            break  # the rest is lost
        else:
            wait = 0.1
        end = clock() + wait
        while True:  # replies until the next tick
            if select.select([sock], [], [], max(0.0, end - clock()))[0]:
                _drain(sock, stamp)
            if clock() >= end:
                break
    busy = (process_cpu(pid) - cpu0) / (clock() - t0) if pid else 0.0
    sock.close()
    return lat, total, busy


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[int(q * (len(sorted_values) - 1))] if sorted_values else float("nan")


def latency_line(head: str, lat: list[float], total: int) -> str:
    """`lat` sorted, in seconds."""
    ms = [percentile(lat, q) * 1e3 for q in (0.5, 0.99, 0.999)]
    return (
        f"{head}: p50 {ms[0]:.3f} ms, p99 {ms[1]:.3f} ms, p99.9 {ms[2]:.3f} ms, "
        f"{len(lat)}/{total} answered"
    )


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid` (from /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probe_cost(locators: int, interval: float) -> float:
    """CPU seconds spent per wall second of probing `locators` RLOCs."""
    from pacao.lisp.xtr import Xtr, xtr_config_from_dict

    cfg = xtr_config_from_dict(
        {"listen": "127.0.0.1:0", "probe": {"interval": interval, "timeout": 10}}
    )

    class Null:
        def sendto(self, data: bytes, addr: Any) -> None:
            pass

    xtr = Xtr(cfg)
    xtr.transport = Null()  # type: ignore[assignment]
    per = 2
    for i in range(locators // per):
        p = EidPrefix.parse(f"10.{i >> 8 & 255}.{i & 255}.0/24")
        locs = tuple(Locator(IPv4Address(f"192.0.{j}.{i % 250 + 1}"), j + 1) for j in range(per))
        xtr.install(MappingRecord.for_prefix(p, locators=locs))
    while not xtr.events.empty():
        xtr.events.get_nowait()
    start = time.monotonic()
    xtr.probe_due(start + interval)  # first round
    cpu0 = time.process_time()
    sent = 0
    for step in range(1, 11):  # 10 simulated seconds in 100 ms ticks
        for tick in range(10):
            sent += xtr.probe_due(start + interval * step + (tick + 1) * interval / 10)
        xtr.pending.clear()  # replies are not simulated; keep the dict bounded
    cpu = time.process_time() - cpu0
    assert sent >= locators * 9, sent
    return cpu / (10 * interval)


def switch_times(rounds: int) -> dict[str, list[float]]:
    """Seconds from Xtr.set_priorities() to the remote ITR's map-cache showing the change."""
    from pacao.lisp.xtr import (
        MappingAdded,
        PrioritiesChanged,
        ProbeResult,
        close_xtr,
        open_xtr,
        xtr_config_from_dict,
    )

    async def run() -> dict[str, list[float]]:
        site = {"name": "s", "key": "k", "eid_prefixes": ["10.2.0.0/16"]}
        server, ms_t = await open_map_server(
            config_from_dict({"listen": "127.0.0.1:0", "sites": [site]})
        )
        ms = f"127.0.0.1:{server.local[1]}"
        common = {
            "map_resolvers": [ms],
            "probe": {"interval": 0.2, "timeout": 1},
            "change_priority": {"key": "c", "method": "both"},
        }
        locs = [{"address": "127.0.0.2", "priority": 1}, {"address": "127.0.0.3", "priority": 2}]
        etr_doc = {
            **common,
            "listen": "127.0.0.2:0",
            "map_servers": [{"address": ms, "key": "k"}],
            "database": [{"prefix": "10.2.0.0/16", "locators": locs}],
        }
        etr, etr_t, _ = await open_xtr(xtr_config_from_dict(etr_doc))
        itr_doc = {
            **common,
            "listen": "127.0.0.4:0",
            "control_port": etr.local[1],
            "watch": ["10.2.3.4/32"],
        }
        itr, itr_t, _ = await open_xtr(xtr_config_from_dict(itr_doc))
        seen: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        itr.callbacks.append(lambda e: seen.put_nowait((time.perf_counter(), e)))
        while not isinstance((await asyncio.wait_for(seen.get(), 10))[1], ProbeResult):
            pass
        prefix = EidPrefix.parse("10.2.0.0/16")
        out: dict[str, list[float]] = {"change-priority": [], "smr": []}
        for r in range(rounds):
            for method, kind in (("change-priority", PrioritiesChanged), ("smr", MappingAdded)):
                want = 10 + (2 * r + (method == "smr")) % 200
                while not seen.empty():
                    seen.get_nowait()
                t0 = time.perf_counter()
                etr.set_priorities(prefix, {"127.0.0.2": want}, method=method)
                while True:
                    t, ev = await asyncio.wait_for(seen.get(), 5)
                    if isinstance(ev, kind) and ev.locators[0].priority == want:
                        out[method].append(t - t0)
                        break
                await asyncio.sleep(0.02)
        await close_xtr(itr, itr_t, None)
        await close_xtr(etr, etr_t, None)
        ms_t.close()
        return out

    return asyncio.run(run())


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prefixes", default="1000,10000,100000", help="table sizes, comma-separated")
    ap.add_argument("--rates", default="500,5000,20000", help="open-loop rates, requests/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="per open-loop run")
    ap.add_argument("--requests", type=int, default=100_000, help="per closed-loop run")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--locators", type=int, default=10_000)
    ap.add_argument("--skip-xtr", action="store_true", help="only the map-resolver figures")
    ap.add_argument(
        "--priority",
        action="store_true",
        help="run in a session of its own whose scheduler autogroup gets nice -20 (root): "
        "on a shared machine, the figures of the resolver rather than of the other jobs",
    )
    args = ap.parse_args()
    if args.priority and not os.environ.get(_AUTOGROUP_ENV):
        # Linux autogroups: CPU is shared between sessions first, so nice alone does
        # not help against other sessions' jobs; a new session gets its own group.
        env = {**os.environ, _AUTOGROUP_ENV: "1"}
        done = subprocess.run([sys.executable, *sys.argv], env=env, start_new_session=True)
        raise SystemExit(done.returncode)
    if os.environ.get(_AUTOGROUP_ENV):
        try:
            with open("/proc/self/autogroup", "w", encoding="ascii") as fh:
                fh.write("-20")
            print("scheduling: own session, autogroup nice -20")
        except OSError as exc:
            print(f"scheduling: cannot raise the autogroup's priority ({exc}); running as is")
    sizes, rates = _ints(args.prefixes), _ints(args.rates)
    print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rows: list[tuple[int, int, list[float], int, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-lisp-") as tmp:
        for n in sizes:
            heap, scan, snap, save = expire_cost(n, Path(tmp))
            print(f"housekeeping expire(), {n} registrations, nothing due: {heap * 1e6:.1f} us "
                  f"(heap); the former full scan: {scan * 1e3:.2f} ms; state save: "
                  f"{snap * 1e3:.1f} ms in the loop, {save * 1e3:.0f} ms in all")  # fmt: skip
        for n in sizes:
            daemon = Daemon(n, Path(tmp) / f"ms{n}")
            try:
                closed_loop(daemon.port, n, 2000, args.window)  # warm-up
                rps, busy = closed_loop(daemon.port, n, args.requests, args.window, daemon.pid)
                print(f"daemon, {n} prefixes: {rps:,.0f} Map-Replies/s (closed loop, window "
                      f"{args.window}; server CPU {busy:.0%} of a core, "
                      f"{busy / rps * 1e6:.1f} us per reply)")  # fmt: skip
                for rate in rates:
                    load0 = os.getloadavg()[0]
                    lat, total, busy = open_loop(daemon.port, n, rate, args.seconds, daemon.pid)
                    lat.sort()
                    head = f"daemon, {n} prefixes, {rate:,} req/s for {args.seconds:g} s"
                    print(latency_line(head, lat, total)
                          + f" (server CPU {busy:.0%} of a core; load {load0:.1f})")  # fmt: skip
                    rows.append((n, rate, lat, total, load0))
                stats = daemon.stats()
                assert stats["registrations"] == n, stats
                print(f"  daemon counters: registrations {stats['registrations']}, "
                      f"proxy_reply {stats.get('proxy_reply', 0)}, "
                      f"negative_reply {stats.get('negative_reply', 0)}, "
                      f"rate_limited {stats.get('rate_limited', 0)}")  # fmt: skip
            finally:
                daemon.stop()
    print("\n| prefixes | rate (req/s) | p50 (ms) | p99 (ms) | p99.9 (ms) | answered | load |")
    print("|---|---|---|---|---|---|---|")
    for n, rate, lat, total, load0 in rows:
        p = [percentile(lat, q) * 1e3 for q in (0.5, 0.99, 0.999)]
        print(f"| {n:,} | {rate:,} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | "
              f"{len(lat)}/{total} | {load0:.1f} |")  # fmt: skip
    print()
    ctx = mp.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=echo_main, args=(q, stop))
    proc.start()
    try:
        port = q.get(timeout=60)
        for rate in rates:
            lat, total, _ = open_loop(port, 1000, rate, args.seconds)
            lat.sort()
            head = f"baseline: minimal Python UDP echo at {rate:,} req/s, same client"
            print(latency_line(head, lat, total))
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
    if not args.skip_xtr:
        for method, times in switch_times(20).items():
            times.sort()
            med, worst = statistics.median(times) * 1e3, times[-1] * 1e3
            print(f"ITR switch after set_priorities ({method}): median {med:.2f} ms, "
                  f"max {worst:.2f} ms")  # fmt: skip
        load = probe_cost(args.locators, 1.0)
        per = load * 1e6 / args.locators
        head = f"probe scheduler, {args.locators} locators every 1 s"
        print(f"{head}: {load * 100:.1f}% of one core ({per:.1f} us per probe)")
    print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
