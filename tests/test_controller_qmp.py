"""The QEMU QMP hypervisor driver against real QEMU processes on loopback: live migration
with bandwidth and max downtime, the guest alive afterwards, abort at low bandwidth,
idempotent restart, the controller's VmMigration action, and malformed QMP peers."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migration_support import two_dc_config
from pacao.clock import SystemClock
from pacao.controller.drivers import load_driver
from pacao.controller.drivers.base import DriverError
from pacao.controller.drivers.qmp import (
    MigrationStats,
    QemuQmpDriver,
    QmpClient,
    QmpError,
    query_status,
)
from pacao.controller.plans import Context, VmMigration
from pacao.errors import InputError
from pacao.testbed.vm.guest import READY, TICK
from pacao.testbed.vm.qemuvm import qemu_argv, wait_serial
from qemu_support import Procs, need_qemu

BLOB_MIB = 24  # random bytes in guest RAM: what a migration must really copy


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    try:
        yield ps
    finally:
        ps.kill_all()


def config(tmp: Path) -> Any:
    return two_dc_config(tmp, memory_mib=128)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ticks(path: Path) -> list[int]:
    return [int(m) for m in re.findall(rf"{TICK} (\d+)", path.read_text(errors="replace"))]


async def until_done(drv: QemuQmpDriver, vm: str, timeout: float = 120) -> Any:
    t0 = time.monotonic()
    while True:
        job = await drv.job(vm)
        if job.state in ("completed", "failed"):
            return job
        assert time.monotonic() - t0 < timeout, job
        await asyncio.sleep(0.05)


def test_qmp_driver_live_migration_abort_and_restart(tmp_path: Path, procs: Procs) -> None:
    guest = need_qemu()
    cfg = config(tmp_path)
    append = f"pacao.blob={BLOB_MIB} pacao.tick=0.2"
    qmp = {dc: tmp_path / f"{dc}.qmp" for dc in ("dc1", "dc2")}
    n = iter(range(100))

    def launch(dc: str) -> list[str]:  # a destination QEMU: same VM, -incoming defer
        return qemu_argv(guest, qmp=qmp[dc], serial=tmp_path / f"{dc}-{next(n)}.log",
                         append=append, incoming="defer")  # fmt: skip

    ports = {dc: free_port() for dc in qmp}
    opts = {
        "vms": {
            "tiny": {
                dc: {"qmp": f"unix:{qmp[dc]}", "migrate_uri": f"tcp:127.0.0.1:{ports[dc]}",
                     "launch": launch(dc)}
                for dc in qmp
            }
        }
    }  # fmt: skip
    serial0 = tmp_path / "dc1-src.log"
    src = procs.start(
        qemu_argv(guest, qmp=qmp["dc1"], serial=serial0, append=append), tmp_path / "src.err"
    )
    wait_serial(serial0, READY, 120)
    for bad in ({}, {"vms": {"nosuch": opts["vms"]["tiny"]}},
                {"vms": {"tiny": {"dc9": {"qmp": "unix:/x"}}}},
                {"vms": {"tiny": {"dc1": {"qmp": "tcp:nohost"}}}}):  # fmt: skip
        with pytest.raises(InputError, match=r"drivers\.hypervisor\.options"):
            load_driver("hypervisor", "qemu", cfg, None, bad)

    async def body() -> None:
        drv = load_driver("hypervisor", "qemu", cfg, None, opts)
        assert isinstance(drv, QemuQmpDriver)
        try:
            await scenario(drv)
        finally:
            for p in drv.launched.values():
                procs.add(p)  # killed by PID at teardown
            await drv.close()

    async def scenario(drv: QemuQmpDriver) -> None:
        st = await drv.status("tiny")
        assert (st.dc, st.running) == ("dc1", True)
        # 1. live migration dc1 -> dc2 (destination launched by the driver, -incoming defer)
        before = max(ticks(serial0))
        await drv.start_migration("tiny", "dc2", "job-1", 1000, 300)
        src_q = await drv.client(f"unix:{qmp['dc1']}")
        params = await src_q.execute("query-migrate-parameters")
        assert params["max-bandwidth"] == 125_000_000 and params["downtime-limit"] == 300
        job = await until_done(drv, "tiny")
        assert job.state == "completed" and job.job_id == "job-1" and job.progress == 1.0, job
        stats = await drv.stats("tiny")
        assert stats is not None and stats.status == "completed"
        assert stats.transferred > BLOB_MIB << 20, stats  # the random blob crossed
        assert stats.total_time_ms and stats.downtime_ms, stats.raw  # QEMU's own figures
        print(f"\nQMP driver migration (128 MiB guest, {BLOB_MIB} MiB random, 1 Gbit/s cap):"
              f" total {stats.total_time_ms:.0f} ms, downtime {stats.downtime_ms:.0f} ms,"
              f" {stats.transferred / 2**20:.1f} MiB")  # fmt: skip
        st = await drv.status("tiny")
        assert (st.dc, st.running) == ("dc2", True)
        assert await query_status(src_q) == "postmigrate"
        assert any(ev["event"] == "MIGRATION" for ev in src_q.events)
        assert any(ev["event"] == "STOP" for ev in src_q.events)
        # the guest runs on at the destination: its counter goes on from the source's
        dst_log = next(p for p in tmp_path.glob("dc2-*.log"))
        wait_serial(dst_log, TICK, 20)
        after = ticks(dst_log)
        assert after[0] > before and after[0] - max(ticks(serial0)) <= 2, (before, after[:3])
        # 2. idempotent: same job, and a restarted controller with the same job
        await drv.start_migration("tiny", "dc2", "job-1", 1000, 300)
        assert len(drv.launched) == 1
        drv2 = QemuQmpDriver(cfg, vms=opts["vms"])
        await drv.close()  # a QEMU monitor serves one client at a time
        await drv2.start_migration("tiny", "dc2", "job-1", 1000, 300)
        assert (await drv2.job("tiny")).state == "none"  # nothing started
        assert (await drv2.status("tiny")).dc == "dc2"
        await drv2.close()
        # 3. back to dc1 at 8 Mbit/s (24 MiB: > 20 s), progress shown, then aborted; the
        #    postmigrate QEMU of dc1 is quit and a new destination launched in its place
        await drv.start_migration("tiny", "dc1", "job-2", 8, 250)
        assert src.wait(10) == 0  # the old dc1 QEMU quit
        with pytest.raises(DriverError, match="already has a migration running"):
            await drv.start_migration("tiny", "dc1", "job-3", 8, 250)
        t0 = time.monotonic()
        while (job := await drv.job("tiny")).progress <= 0.02:
            assert job.state == "running" and time.monotonic() - t0 < 60, job  # a timeout
            await asyncio.sleep(0.1)
        assert job.state == "running" and 0 < job.progress < 1, job
        dst_q = await drv.client(f"unix:{qmp['dc2']}")
        params = await dst_q.execute("query-migrate-parameters")
        assert params["max-bandwidth"] == 1_000_000 and params["downtime-limit"] == 250
        # a controller restart mid-migration attaches to the job under way, then aborts it
        await drv.close()
        drv3 = QemuQmpDriver(cfg, vms=opts["vms"])
        await drv3.start_migration("tiny", "dc1", "job-2", 8, 250)
        assert (await drv3.job("tiny")).state == "running"
        assert len(drv3.launched) == 0  # nothing started twice
        await drv3.abort("tiny")
        job = await drv3.job("tiny")
        assert job.state == "failed" and job.error, job
        st = await drv3.status("tiny")
        assert (st.dc, st.running) == ("dc2", True)  # still serving at the source
        await drv3.close()
        assert drv.launched[("tiny", "dc1")].wait(10) != 0  # the failed incoming QEMU exited
        await drv.resume("tiny")  # running already: nothing to do
        # 4. the controller's action: validate, execute (polls the job), a re-run is a no-op
        ctx = Context(None, drv, SystemClock(), poll_s=0.1)  # type: ignore[arg-type]
        p = {"vm": "tiny", "src": "dc2", "dst": "dc1", "job_id": "job-4",
             "bandwidth_mbps": 2000, "max_downtime_ms": 300}  # fmt: skip
        act = VmMigration()
        await act.validate(ctx, p)
        await act.execute(ctx, p)
        st = await drv.status("tiny")
        assert (st.dc, st.running) == ("dc1", True)
        await act.execute(ctx, p)

    asyncio.run(body())


# -- malformed QMP peers -------------------------------------------------------------

GREETING = b'{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}\n'


async def fake_server(path: Path, script: list[bytes | None]) -> asyncio.AbstractServer:
    """A UNIX socket server that answers each client with ``script``: bytes are sent,
    None reads one request line."""

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            for step in script:
                if step is None:
                    await r.readline()
                else:
                    w.write(step)
                    await w.drain()
            await asyncio.sleep(0.3)
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            w.close()

    return await asyncio.start_unix_server(serve, path=str(path))


CASES: dict[str, list[bytes | None]] = {
    "garbage": [b"\x00\xffhello there\n"],
    "not-greeting": [b'{"hello": 1}\n'],
    "json-list": [b"[1, 2]\n"],
    "closed": [],
    "caps-garbage": [GREETING, None, b"}{\n"],
    "caps-error": [GREETING, None, b'{"error": {"class": "X", "desc": "no"}}\n'],
    "silent": [None],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_qmp_is_a_driver_error(tmp_path: Path, case: str) -> None:
    async def body() -> None:
        path = tmp_path / "fake.qmp"
        srv = await fake_server(path, CASES[case])
        try:
            with pytest.raises(QmpError):
                await QmpClient(f"unix:{path}", timeout=1).connect()
            drv = QemuQmpDriver(None, vms={"vm": {"dc1": {"qmp": f"unix:{path}"}}},
                                connect_timeout_s=1)  # fmt: skip
            with pytest.raises(DriverError, match="no QEMU runs VM 'vm'"):
                await drv.status("vm")
            with pytest.raises(DriverError):
                await drv.start_migration("vm", "dc1", "j", 100, 300)
            await drv.close()
        finally:
            srv.close()
            await srv.wait_closed()

    asyncio.run(body())


def test_bad_replies_after_connect_are_driver_errors(tmp_path: Path) -> None:
    """A QMP peer that greets properly, then answers commands with nonsense."""
    ok = b'{"return": {}}\n'

    async def body() -> None:
        path = tmp_path / "fake.qmp"
        replies = {
            "no-return": [GREETING, None, ok, None, b'{"id": "pacao-1"}\n'],
            "garbage": [GREETING, None, ok, None, b"not json\n"],
            "status-list": [GREETING, None, ok, None, b'{"id": "pacao-1", "return": [1]}\n'],
            "event-then-close": [GREETING, None, ok, None, b'{"event": "STOP"}\n'],
        }
        for name, script in replies.items():
            srv = await fake_server(path, script)
            try:
                c = await QmpClient(f"unix:{path}", timeout=1).connect()
                with pytest.raises(QmpError):
                    await query_status(c)
                assert c.events == ([{"event": "STOP"}] if name == "event-then-close" else []), name
                with pytest.raises(QmpError):  # broken connection: every call fails fast
                    await c.execute("query-status")
                await c.close()
            finally:
                srv.close()
                await srv.wait_closed()
                path.unlink(missing_ok=True)

    asyncio.run(body())


def test_qmp_address_and_greeting_json(tmp_path: Path) -> None:
    from pacao.controller.drivers.qmp import parse_address

    assert parse_address("tcp:127.0.0.1:4444") == ("tcp", "127.0.0.1", 4444)
    assert parse_address("/run/x.qmp") == ("unix", "/run/x.qmp", 0)
    with pytest.raises(QmpError):
        parse_address("tcp:host")
    assert json.loads(GREETING)["QMP"]["version"]["qemu"]["major"] == 7
    # QEMU says "completed" a moment before it fills in the times: not final yet
    assert not MigrationStats.parse({"status": "completed", "total-time": 0}).final
    ram = {"total": 100, "remaining": 0, "transferred": 90}
    done = MigrationStats.parse({"status": "completed", "total-time": 700, "ram": ram})
    assert done.final and done.progress == 1.0 and done.transferred == 90
    assert (
        MigrationStats.parse({"status": "active", "ram": {"total": 100, "remaining": 25}}).progress
        == 0.75
    )
    with pytest.raises(QmpError):
        MigrationStats.parse([1])


def test_qmp_over_tcp_with_events_and_concurrent_commands() -> None:
    """A well-behaved peer on TCP: an event before the capabilities reply, replies out of
    order to two concurrent commands (matched by id), an event while waiting."""

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(GREETING)
        await r.readline()
        w.write(b'{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 0}}\n')
        w.write(b'{"return": {}}\n')
        reqs = [json.loads(await r.readline()) for _ in range(2)]
        w.write(b'{"event": "STOP"}\n')
        for req in reversed(reqs):  # out of order
            ret = {"status": "running"} if req["execute"] == "query-status" else {"ok": 1}
            w.write(json.dumps({"id": req["id"], "return": ret}).encode() + b"\n")
        await w.drain()
        await r.readline()  # until the client closes
        w.close()

    async def body() -> None:
        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            c = await QmpClient(f"tcp:127.0.0.1:{port}", timeout=5).connect()
            assert c.greeting["version"]["qemu"]["major"] == 7
            st, other = await asyncio.gather(query_status(c), c.execute("x-other"))
            assert st == "running" and other == {"ok": 1}
            ev = await c.wait_event("STOP", 5)
            assert ev["event"] == "STOP"
            assert [e["event"] for e in c.events] == ["RESUME", "STOP"]
            await c.close()
        finally:
            srv.close()
            await srv.wait_closed()

    asyncio.run(body())
