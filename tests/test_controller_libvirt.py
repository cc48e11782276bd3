"""The libvirt hypervisor driver against two real libvirt daemons on this machine
(tests/libvirt_support.py): live migration with bandwidth and max downtime, job
progress, abort, idempotent restart, and the controller's VmMigration action."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest
import yaml

from libvirt_support import create_domain, libvirt_pair
from migration_support import two_dc_config
from pacao.clock import SystemClock
from pacao.controller.drivers import load_driver
from pacao.controller.drivers.base import DriverError
from pacao.controller.drivers.libvirt import LibvirtHypervisor
from pacao.controller.plans import Context, VmMigration
from pacao.controller.storage import Store
from pacao.errors import InputError


def config(tmp: Path) -> Any:
    return two_dc_config(tmp, memory_mib=32)


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
            with pytest.raises(DriverError, match="'absent'"):
                await drv.status("absent")  # a VM in no DC is an error naming it
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
                assert job.state == "running" and time.monotonic() - t0 < 60, job  # a timeout
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


def _wait(what: str, cond: Any, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> Any:
    t0 = time.monotonic()
    while True:
        got = cond()
        if got:
            return got
        if proc is not None:
            assert proc.poll() is None, f"the controller exited ({proc.returncode}) before {what}"
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_controller_killed_mid_migration_resumes_the_plan(tmp_path: Path) -> None:
    """SIGKILL the running `pacao controller run` while libvirt migrates the VM, start it
    again: the plan is resumed (the migration attached to, not started again; the entry
    switch after it run once), and ends succeeded with the VM and the state at dc2."""
    with libvirt_pair(tmp_path) as uris:
        fill = tmp_path / "fill.bin"
        # 40 MiB of incompressible guest memory at 1 MiB/s: the migration lasts about 40 s,
        # long enough to kill the controller and start it again on a loaded machine.
        fill.write_bytes(os.urandom(40 << 20))
        create_domain(uris["dc1"], "tiny", mib=64, fill=fill)
        doc = {
            "dcs": [
                {"name": dc, "location": {"lat": 48.85, "lon": 2.35}, "rlocs": [rloc],
                 "capacity": {"ram_mib": 4096, "cpu": 4}}
                for dc, rloc in (("dc1", "192.0.2.1"), ("dc2", "192.0.2.2"))
            ],
            "vms": [{"name": "tiny", "eid": "10.1.0.10/32", "memory_mib": 64, "vcpus": 1,
                     "host": "dc1", "hypervisor_uri": uris["dc1"]}],
            "users": [{"name": "u1", "rloc": "203.0.113.1", "vm": "tiny",
                       "sla": {"rtt": {"weight": 1.0, "max": 50}}}],
            # No decision cycle during the test: only the stored plan runs.
            "timers": {"s1": 3600, "s2": 1800, "s3": 1},
            "drivers": {
                "mapping": {"name": "memory"},
                "hypervisor": {"name": "libvirt", "options": {
                    "uris": uris, "migrate_uris": {dc: "tcp://127.0.0.1" for dc in uris}}},
            },
            "storage": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
            "api": {"token": "t", "listen": "127.0.0.1:0"},
        }  # fmt: skip
        cfg_path = tmp_path / "c.yaml"
        cfg_path.write_text(yaml.safe_dump(doc))
        store = Store(doc["storage"]["url"])  # type: ignore[index]
        prio = {"192.0.2.2": 1, "192.0.2.1": 2}
        pid = store.create_plan(
            "u1",
            "vm_migration",
            "test: a migration plan the controller stored before it was killed",
            {},
            {},
            [
                ("VmMigration", {"vm": "tiny", "src": "dc1", "dst": "dc2", "job_id": "u1-1",
                                 "bandwidth_mbps": 8.4, "max_downtime_ms": 300}),
                ("EntrySwitch", {"vm_eid": "10.1.0.10/32", "rloc": "192.0.2.2",
                                 "priorities": prio, "notify": ["203.0.113.1"]}),
            ],
        )  # fmt: skip
        store.approve(pid, by="test")
        cmd = [sys.executable, "-m", "pacao.cli", "controller", "run", "--config", str(cfg_path)]
        src = libvirt.open(uris["dc1"])

        def progress() -> bool:
            try:
                return int(src.lookupByName("tiny").jobStats().get("data_processed", 0)) > 0
            except libvirt.libvirtError:
                return False

        def action(kind: str) -> dict[str, Any]:
            plan = store.plan(pid)
            assert plan is not None
            return next(a for a in plan["actions"] if a["kind"] == kind)

        log1 = open(tmp_path / "run1.log", "wb")  # noqa: SIM115
        first = subprocess.Popen(cmd, stdout=log1, stderr=subprocess.STDOUT)
        try:
            _wait("the migration to start", lambda: action("VmMigration")["state"] == "ongoing"
                  and progress(), 120, first)  # fmt: skip
        finally:
            os.kill(first.pid, signal.SIGKILL)  # a crash: no cleanup, no revert
            first.wait(10)
            log1.close()
        plan = store.plan(pid)
        assert plan is not None and plan["state"] == "ongoing"
        assert [a["state"] for a in plan["actions"]] == ["ongoing", "pending"]
        # The source daemon carries on with the peer-to-peer migration.
        assert progress()
        log2 = open(tmp_path / "run2.log", "wb")  # noqa: SIM115
        second = subprocess.Popen(cmd, stdout=log2, stderr=subprocess.STDOUT)

        def ended() -> bool:
            return (store.plan(pid) or {})["state"] in ("succeeded", "failed")

        def attached() -> bool:
            return b"attached to the migration under way" in (tmp_path / "run2.log").read_bytes()

        try:
            # Once the second controller has attached to the migration, the slow link has
            # done its job (time to kill and restart): lift libvirt's cap so the rest of
            # the 40 MiB goes at loopback speed instead of 1 MiB/s (about 30 s less).
            _wait("the second controller to attach", lambda: ended() or attached(), 180, second)
            with contextlib.suppress(libvirt.libvirtError):  # the migration may just be over
                src.lookupByName("tiny").migrateSetMaxSpeed(8000)
            _wait("the plan to end", ended, 180, second)
        finally:
            os.kill(second.pid, signal.SIGTERM)
            second.wait(30)
            log2.close()
        src.close()
        plan = store.plan(pid)
        assert plan is not None and plan["state"] == "succeeded", plan
        mig, switch = plan["actions"]
        # Attempts: the migration started once and was resumed once; the switch ran once.
        assert (mig["state"], mig["attempts"]) == ("succeeded", 2), mig
        assert (switch["state"], switch["attempts"]) == ("succeeded", 1), switch
        notes = [t["note"] for t in store.transitions(pid) if t["action_id"] == mig["id"]]
        assert notes.count("resumed after a restart") == 1
        text = (tmp_path / "run2.log").read_text()
        assert "attached to the migration under way" in text, text[-2000:]
        assert "controller started" in text
        # Where the VM runs, and what the controller remembers, agree: dc2.
        dst = libvirt.open(uris["dc2"])
        assert dst.lookupByName("tiny").state()[0] == libvirt.VIR_DOMAIN_RUNNING
        dst.close()
        c1 = libvirt.open(uris["dc1"])
        assert [d.name() for d in c1.listAllDomains() if d.isActive()] == []
        c1.close()
        assert store.get_state("user/u1")["host"] == "dc2"
        assert store.get_state("user/u1")["entry"] == "192.0.2.2"
        store.close()
