"""In-memory mapping and hypervisor drivers: the world as Python dicts.

Used by the tests, the simulator and dry runs against a lab. Migrations take
``seconds_per_gib`` of (injected clock) time; failures can be injected to test
revert. Both are idempotent like real drivers must be.

With ``world_file`` the world is a JSON file shared by several processes (each
operation reads and writes it under an exclusive ``flock``): controller replicas
then act on one world, and a test reads from it what each of them did.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pacao.clock import Clock
from pacao.controller.config import ControllerConfig
from pacao.controller.drivers.base import DriverError, MigrationJob, VmStatus, fenced
from pacao.controller.priorities import in_order


@contextmanager
def shared_world(
    path: Path | None, section: str, obj: Any, fields: tuple[str, ...]
) -> Iterator[None]:
    """Load ``fields`` of ``obj`` from the file's ``section``, run the block, store them."""
    if path is None:
        yield
        return
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        part = doc.get(section)
        if part is not None:
            for f in fields:
                setattr(obj, f, obj.decode(f, part[f]))
        yield
        doc[section] = {f: obj.encode(f, getattr(obj, f)) for f in fields}
        tmp = path.with_name(path.name + f".{os.getpid()}")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)


class MemoryMapping:
    _FIELDS = ("priorities", "calls")

    def __init__(
        self,
        config: ControllerConfig | None = None,
        clock: Clock | None = None,
        world_file: str | None = None,
    ) -> None:
        if world_file is not None and not isinstance(world_file, str):
            raise TypeError(f"world_file must be a path, not {world_file!r}")
        self.world = Path(world_file) if world_file is not None else None
        self.priorities: dict[str, dict[str, int]] = {}
        self.calls: list[tuple[str, dict[str, int], list[str]]] = []
        self.fail_next = 0
        if config is not None:
            for vm in config.vms:
                host = config.dc(vm.host)
                rank = [r for r in host.rlocs] + [
                    r for d in config.dcs if d.name != host.name for r in d.rlocs
                ]
                self.priorities[vm.eid] = in_order(rank)

    @staticmethod
    def encode(field: str, value: Any) -> Any:
        return value

    @staticmethod
    def decode(field: str, value: Any) -> Any:
        return [tuple(c) for c in value] if field == "calls" else value

    async def get_priorities(self, vm_eid: str) -> dict[str, int]:
        with shared_world(self.world, "mapping", self, self._FIELDS):
            return dict(self.priorities.get(vm_eid, {}))

    async def set_priorities(
        self, vm_eid: str, priorities: dict[str, int], notify: list[str]
    ) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise DriverError("injected mapping failure")
        await fenced(self)
        with shared_world(self.world, "mapping", self, self._FIELDS):
            self.calls.append((vm_eid, dict(priorities), list(notify)))
            self.priorities[vm_eid] = dict(priorities)

    async def close(self) -> None:
        return None


class MemoryHypervisor:
    """VMs at DCs; a migration completes after memory / rate seconds of ``clock`` time."""

    _FIELDS = ("vms", "jobs", "started")

    def __init__(
        self,
        config: ControllerConfig | None = None,
        clock: Clock | None = None,
        seconds_per_gib: float = 0.0,
        world_file: str | None = None,
    ) -> None:
        if world_file is not None and not isinstance(world_file, str):
            raise TypeError(f"world_file must be a path, not {world_file!r}")
        self.world = Path(world_file) if world_file is not None else None
        self.clock = clock
        if isinstance(seconds_per_gib, bool) or not isinstance(seconds_per_gib, int | float):
            raise TypeError(f"seconds_per_gib must be a number, not {seconds_per_gib!r}")
        self.seconds_per_gib = float(seconds_per_gib)
        self.vms: dict[str, VmStatus] = {}
        self.memory: dict[str, int] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.started: list[tuple[str, str, str]] = []  # (vm, dst, job_id): never twice
        self.fail_after: dict[str, float] = {}  # vm -> fail when progress reaches this
        if config is not None:
            for vm in config.vms:
                self.vms[vm.name] = VmStatus(dc=vm.host, running=True)
                self.memory[vm.name] = vm.memory_mib

    @staticmethod
    def encode(field: str, value: Any) -> Any:
        if field == "vms":
            return {k: [v.dc, v.running] for k, v in value.items()}
        return value

    @staticmethod
    def decode(field: str, value: Any) -> Any:
        if field == "vms":
            return {k: VmStatus(dc=v[0], running=v[1]) for k, v in value.items()}
        if field == "started":
            return [tuple(x) for x in value]
        return value

    def _shared(self) -> Any:
        return shared_world(self.world, "hypervisor", self, self._FIELDS)

    def _now(self) -> float:
        return float(self.clock.now()) if self.clock is not None else time.time()

    def _vm(self, vm: str) -> VmStatus:
        try:
            return self.vms[vm]
        except KeyError:
            raise DriverError(f"unknown VM {vm!r}") from None

    async def status(self, vm: str) -> VmStatus:
        with self._shared():
            await self._advance(vm)
            return self._vm(vm)

    async def start_migration(
        self, vm: str, dst: str, job_id: str, bandwidth_mbps: float, max_downtime_ms: float
    ) -> None:
        await fenced(self)
        with self._shared():
            await self._start(vm, dst, job_id)

    async def _start(self, vm: str, dst: str, job_id: str) -> None:
        cur = self._vm(vm)
        job = self.jobs.get(vm)
        if job is not None and job["job_id"] == job_id:
            return  # idempotent: this job already exists (running or finished)
        if cur.dc == dst:
            return
        if job is not None and job["state"] == "running":
            raise DriverError(f"VM {vm!r} already has a migration running")
        duration = self.memory.get(vm, 0) / 1024 * self.seconds_per_gib
        self.jobs[vm] = {
            "job_id": job_id,
            "dst": dst,
            "start": self._now(),
            "duration": duration,
            "state": "running",
            "error": None,
        }
        self.started.append((vm, dst, job_id))
        await self._advance(vm)

    async def _advance(self, vm: str) -> None:
        job = self.jobs.get(vm)
        if job is None or job["state"] != "running":
            return
        elapsed = self._now() - job["start"]
        progress = 1.0 if job["duration"] <= 0 else min(1.0, elapsed / job["duration"])
        fail_at = self.fail_after.get(vm)
        if fail_at is not None and progress >= fail_at:
            job["state"], job["error"] = "failed", "injected migration failure"
            # A failed live migration leaves the VM paused at the source.
            self.vms[vm] = VmStatus(dc=self.vms[vm].dc, running=False)
            return
        if progress >= 1.0:
            job["state"] = "completed"
            self.vms[vm] = VmStatus(dc=job["dst"], running=True)

    async def job(self, vm: str) -> MigrationJob:
        with self._shared():
            await self._advance(vm)
            job = self.jobs.get(vm)
        if job is None:
            return MigrationJob(state="none")
        el = self._now() - job["start"]
        prog = 1.0 if job["duration"] <= 0 else min(1.0, el / job["duration"])
        return MigrationJob(
            state=job["state"],
            dc=job["dst"],
            progress=prog,
            error=job["error"],
            job_id=job["job_id"],
        )

    async def abort(self, vm: str) -> None:
        await fenced(self)
        with self._shared():
            job = self.jobs.get(vm)
            if job is not None and job["state"] == "running":
                job["state"], job["error"] = "failed", "aborted"

    async def resume(self, vm: str) -> None:
        await fenced(self)
        with self._shared():
            cur = self._vm(vm)
            self.vms[vm] = VmStatus(dc=cur.dc, running=True)

    async def close(self) -> None:
        return None
