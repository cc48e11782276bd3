"""Plans: execute, fail and revert, approve, and survive a crash mid-migration."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from pacao.clock import ManualClock
from pacao.controller.drivers.base import VmStatus
from pacao.controller.drivers.memory import MemoryHypervisor, MemoryMapping
from pacao.controller.plans import Context, Executor
from pacao.controller.storage import Store

EID = "10.1.0.10/32"


def world(clock: ManualClock) -> tuple[MemoryMapping, MemoryHypervisor]:
    m = MemoryMapping()
    m.priorities[EID] = {"192.0.2.1": 1, "192.0.2.2": 2}
    h = MemoryHypervisor(clock=clock, seconds_per_gib=20.0)
    h.vms["vm1"] = VmStatus("dc1", True)
    h.memory["vm1"] = 4096  # 80 s of migration
    return m, h


def migration_plan(store: Store) -> str:
    steps = [
        (
            "VmMigration",
            {
                "vm": "vm1",
                "src": "dc1",
                "dst": "dc2",
                "job_id": "job-1",
                "bandwidth_mbps": 1000.0,
                "max_downtime_ms": 300.0,
            },
        ),
        (
            "EntrySwitch",
            {
                "vm_eid": EID,
                "rloc": "192.0.2.2",
                "notify": ["203.0.113.5"],
                "priorities": {"192.0.2.2": 1, "192.0.2.1": 2},
            },
        ),
    ]
    pid = store.create_plan("alice", "vm_migration", "test", {}, {}, steps)
    store.approve(pid, by="test")
    return pid


def drive(clock: ManualClock, coro: Coroutine[Any, Any, Any], until: float = 1e9) -> Any:
    """Run ``coro`` while simulated time advances 1 s per step (stop early at ``until``)."""

    async def main() -> Any:
        task = asyncio.ensure_future(coro)
        while not task.done() and clock.now() < until:
            for _ in range(5):
                await asyncio.sleep(0)
            clock.advance(1.0)
        if not task.done():
            task.cancel()  # the "crash": nothing after this point runs
            try:
                await task
            except asyncio.CancelledError:
                return None
        return task.result()

    return asyncio.run(main())


def test_migration_plan_succeeds_in_order(tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    m, h = world(clock)
    ex = Executor(store, Context(m, h, clock, poll_s=1.0))
    pid = migration_plan(store)
    assert drive(clock, ex.run_plan(pid)) == "succeeded"
    assert h.vms["vm1"] == VmStatus("dc2", True)
    assert m.priorities[EID]["192.0.2.2"] == 1
    p = store.plan(pid)
    assert p is not None and [a["state"] for a in p["actions"]] == ["succeeded", "succeeded"]
    assert p["actions"][0]["finished"] - p["actions"][0]["started"] >= 80.0


def test_failed_migration_fails_the_plan_and_reverts(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    m, h = world(clock)
    h.fail_after["vm1"] = 0.5
    ex = Executor(store, Context(m, h, clock, poll_s=1.0))
    pid = migration_plan(store)
    assert drive(clock, ex.run_plan(pid)) == "failed"
    p = store.plan(pid)
    assert p is not None and p["state"] == "failed"
    assert [a["state"] for a in p["actions"]] == ["reverted", "skipped"]
    assert "failed" in p["actions"][0]["error"]
    # The VM was left paused at the source by the failed job; revert resumed it.
    assert h.vms["vm1"] == VmStatus("dc1", True)
    assert m.priorities[EID] == {"192.0.2.1": 1, "192.0.2.2": 2}  # never touched


def test_failed_switch_after_migration_reverts_and_fails(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    m, h = world(clock)
    m.fail_next = 1
    ex = Executor(store, Context(m, h, clock, poll_s=1.0))
    pid = migration_plan(store)
    assert drive(clock, ex.run_plan(pid)) == "failed"
    p = store.plan(pid)
    assert p is not None
    assert [a["state"] for a in p["actions"]] == ["reverted", "reverted"]
    assert m.priorities[EID] == {"192.0.2.1": 1, "192.0.2.2": 2}


def test_restart_mid_migration_neither_loses_nor_repeats(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url, clock=clock)
    m, h = world(clock)
    pid = migration_plan(store)
    # Crash 30 s into an 80 s migration: the process is gone, the hypervisor job is not.
    drive(clock, Executor(store, Context(m, h, clock, poll_s=1.0)).run_plan(pid), until=30.0)
    p = store.plan(pid)
    assert p is not None and p["state"] == "ongoing"
    assert [a["state"] for a in p["actions"]] == ["ongoing", "pending"]
    store.close()
    # A new process on the same database recovers.
    store2 = Store(url, clock=clock)
    ex2 = Executor(store2, Context(m, h, clock, poll_s=1.0))
    assert drive(clock, ex2.recover(auto=True)) == [pid]
    p = store2.plan(pid)
    assert p is not None and p["state"] == "succeeded"
    assert h.started == [("vm1", "dc2", "job-1")]  # one migration, not two
    assert p["actions"][0]["attempts"] == 2  # re-executed, attached to the same job
    assert len(m.calls) == 1 and h.vms["vm1"] == VmStatus("dc2", True)
    # Recovering again finds nothing to do.
    assert drive(clock, ex2.recover(auto=True)) == []
