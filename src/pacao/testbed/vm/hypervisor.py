"""The controller's ``testbed`` hypervisor driver: migrate the testbed's VM between DC sites.

Registered as entry point ``testbed`` of ``pacao.drivers.hypervisor``. Options:
``state_file`` (the run's ``/run/pacao/testbed-<id>.json``). The controller's VM and
DC names are the topology's vm and dc node names (``TestbedControlPlane`` generates
that config). A migration runs ``pacao.testbed.vm.migration.migrate_vm`` in a thread;
``job`` reports it; ``abort`` cancels it during the pre-copy only (after that the
stop-and-copy completes, as a real hypervisor's would); ``resume`` has nothing to do
(a failed namespace migration never leaves the VM paused).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from pacao.controller.drivers.base import DriverError, MigrationJob, VmStatus
from pacao.errors import InputError
from pacao.testbed.net import Testbed, TestbedError
from pacao.testbed.vm.migration import (
    migrate_vm,
    migration_estimate,
    run_topology,
    stored_model,
    vm_location,
)


class TestbedHypervisor:
    __test__ = False

    def __init__(self, config: Any = None, clock: Any = None, state_file: str = "") -> None:
        if not state_file or not Path(state_file).is_file():
            raise TypeError(f"state_file must name a running testbed's state, not {state_file!r}")
        self.state = Testbed.load(Path(state_file))
        self.jobs: dict[str, dict[str, Any]] = {}

    async def status(self, vm: str) -> VmStatus:
        try:
            dc = await asyncio.to_thread(vm_location, self.state, vm)
        except InputError as exc:
            raise DriverError(str(exc)) from None
        return VmStatus(dc=dc, running=True)

    async def start_migration(
        self, vm: str, dst: str, job_id: str, bandwidth_mbps: float, max_downtime_ms: float
    ) -> None:
        job = self.jobs.get(vm)
        if job is not None and job["job_id"] == job_id:
            return  # idempotent
        if job is not None and job["state"] == "running":
            raise DriverError(f"VM {vm!r} already has a migration running")
        if (await self.status(vm)).dc == dst:
            self.jobs[vm] = {"job_id": job_id, "dst": dst, "state": "completed", "error": None,
                             "start": time.monotonic(), "expected": 0.0}  # fmt: skip
            return
        model = stored_model(self.state)
        topo = run_topology(self.state)
        src = vm_location(self.state, vm, topo)
        bw = model.bandwidth_bps(topo, src, dst)
        total = migration_estimate(model, bw)[0] * model.time_scale
        abort = threading.Event()
        job = {"job_id": job_id, "dst": dst, "state": "running", "error": None,
               "start": time.monotonic(), "expected": total, "abort": abort}  # fmt: skip
        self.jobs[vm] = job

        def work() -> None:
            try:
                res = migrate_vm(self.state, vm, dst, model, abort=abort)
                job["state"], job["result"] = "completed", res
            except (TestbedError, InputError, OSError) as exc:
                job["state"], job["error"] = "failed", str(exc)

        job["thread"] = threading.Thread(target=work, name=f"migrate-{vm}", daemon=True)
        job["thread"].start()

    async def job(self, vm: str) -> MigrationJob:
        job = self.jobs.get(vm)
        if job is None:
            return MigrationJob(state="none")
        if job["state"] == "running":
            exp = job["expected"]
            progress = min(0.99, (time.monotonic() - job["start"]) / exp) if exp > 0 else 0.5
        else:
            progress = 1.0 if job["state"] == "completed" else 0.0
        return MigrationJob(
            state=job["state"], dc=job["dst"], progress=progress, error=job["error"],
            job_id=job["job_id"],
        )  # fmt: skip

    async def abort(self, vm: str) -> None:
        job = self.jobs.get(vm)
        if job is not None and job["state"] == "running":
            job["abort"].set()

    async def resume(self, vm: str) -> None:
        return None

    async def close(self) -> None:
        for job in self.jobs.values():
            t = job.get("thread")
            if t is not None and t.is_alive():
                await asyncio.to_thread(t.join, 60)
