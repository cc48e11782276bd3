"""The libvirt hypervisor driver against two real libvirt daemons on this machine
(tests/libvirt_support.py): live migration with bandwidth and max downtime, job
progress, abort, idempotent restart, and the controller's VmMigration action."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest
import yaml

from libvirt_support import create_domain, libvirt_pair
from pacao.controller.clock import SystemClock
from pacao.controller.config import load_config
from pacao.controller.drivers import load_driver
from pacao.controller.drivers.base import DriverError
from pacao.controller.drivers.libvirt import LibvirtHypervisor
from pacao.controller.plans import Context, VmMigration
from pacao.errors import InputError


def config(tmp: Path) -> Any:
    doc = {
        "dcs": [
            {"name": dc, "location": {"lat": 48.85, "lon": 2.35}, "rlocs": [rloc],
             "capacity": {"ram_mib": 4096, "cpu": 4}, "xtr": {"stats_url": "http://127.0.0.1:1/"}}
            for dc, rloc in (("dc1", "192.0.2.1"), ("dc2", "192.0.2.2"))
        ],
        "vms": [{"name": "tiny", "eid": "10.1.0.10/32", "memory_mib": 32, "vcpus": 1,
                 "host": "dc1", "hypervisor_uri": "qemu:///system"}],
        "users": [],
        "timers": {"s1": 10, "s2": 5, "s3": 1},
        "drivers": {"mapping": {"name": "memory"}, "hypervisor": {"name": "memory"}},
        "storage": {"url": f"sqlite:///{tmp / 'c.db'}"},
        "api": {"token": "t"},
    }  # fmt: skip
    p = tmp / "c.yaml"
    p.write_text(yaml.safe_dump(doc))
    return load_config(p)


async def until_done(drv: LibvirtHypervisor, vm: str, timeout: float = 60) -> Any:
    t0 = time.monotonic()
    while True:
        job = await drv.job(vm)
        if job.state in ("completed", "failed"):
            return job
        assert time.monotonic() - t0 < timeout, job
        await asyncio.sleep(0.1)


def test_libvirt_live_migration_abort_and_action(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with libvirt_pair(tmp_path) as uris:
        fill = tmp_path / "fill.bin"
        fill.write_bytes(os.urandom(12 << 20))  # 12 MiB of incompressible guest memory
        create_domain(uris["dc1"], "tiny", mib=32, fill=fill)
        loop = {dc: "tcp://127.0.0.1" for dc in uris}
        with pytest.raises(InputError, match=r"drivers\.hypervisor\.options"):
            load_driver("hypervisor", "libvirt", cfg, None, {"uris": {"dc1": uris["dc1"]}})

        async def body() -> None:
            drv = load_driver(
                "hypervisor", "libvirt", cfg, None, {"uris": uris, "migrate_uris": loop}
            )
            assert isinstance(drv, LibvirtHypervisor)
            assert await drv.status("tiny") == (await drv.status("tiny"))
            st = await drv.status("tiny")
            assert (st.dc, st.running) == ("dc1", True)
            # 1. live migration dc1 -> dc2 with a bandwidth cap and a max downtime
            await drv.start_migration("tiny", "dc2", "job-1", 8000, 300)
            job = await until_done(drv, "tiny")
            assert job.state == "completed" and job.job_id == "job-1", job
            st = await drv.status("tiny")
            assert (st.dc, st.running) == ("dc2", True)
            await drv.start_migration("tiny", "dc2", "job-1", 8000, 300)  # idempotent
            assert (await drv.job("tiny")).state == "completed"
            # 2. a slow migration back (1 MiB/s for 12 MiB of data) shows progress, is aborted
            await drv.start_migration("tiny", "dc1", "job-2", 8.4, 300)
            with pytest.raises(DriverError, match="already has a migration running"):
                await drv.start_migration("tiny", "dc1", "job-3", 8.4, 300)
            t0 = time.monotonic()
            while (job := await drv.job("tiny")).progress <= 0:
                assert job.state == "running" and time.monotonic() - t0 < 20, job
                await asyncio.sleep(0.2)
            assert 0 < job.progress < 1
            src = libvirt.open(uris["dc2"])
            dom = src.lookupByName("tiny")
            assert dom.migrateGetMaxSpeed() == 1  # MiB/s, from 8.4 Mbit/s
            assert dom.migrateGetMaxDowntime() == 300  # ms
            src.close()
            await drv.abort("tiny")
            job = await drv.job("tiny")
            assert job.state == "failed" and job.error, job
            st = await drv.status("tiny")
            assert (st.dc, st.running) == ("dc2", True)  # still serving at the source
            # 3. the controller's action: validate, execute (polls the job), done
            ctx = Context(None, drv, SystemClock(), poll_s=0.2)  # type: ignore[arg-type]
            params = {"vm": "tiny", "src": "dc2", "dst": "dc1", "job_id": "job-4",
                      "bandwidth_mbps": 8000, "max_downtime_ms": 300}  # fmt: skip
            act = VmMigration()
            await act.validate(ctx, params)
            await act.execute(ctx, params)
            st = await drv.status("tiny")
            assert (st.dc, st.running) == ("dc1", True)
            await act.execute(ctx, params)  # a re-run after a crash: already there
            await drv.close()

        asyncio.run(body())
