"""The plan executor's promises one by one: what each state, phase and failure leaves in the
store and in the world (written against the survivors of mutation testing of plans.py).

Every test drives in-memory drivers with a manual clock, so nothing waits on real time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pacao.clock import ManualClock
from pacao.controller.drivers.base import DriverError, MigrationJob, VmStatus
from pacao.controller.drivers.memory import MemoryHypervisor, MemoryMapping
from pacao.controller.plans import Context, EntrySwitch, Executor, VmMigration
from pacao.controller.storage import Store
from test_controller_plans import EID, drive, migration_plan, world


def store_at(tmp_path: Path, clock: ManualClock) -> Store:
    return Store(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)


def states(store: Store, pid: str) -> tuple[str, list[str]]:
    p = store.plan(pid)
    assert p is not None
    return p["state"], [a["state"] for a in p["actions"]]


def migration(vm: str = "vm1", src: str = "dc1", dst: str = "dc2") -> tuple[str, dict[str, Any]]:
    return (
        "VmMigration",
        {
            "vm": vm,
            "src": src,
            "dst": dst,
            "job_id": f"job-{vm}",
            "bandwidth_mbps": 1000.0,
            "max_downtime_ms": 300.0,
        },
    )


def switch(rloc: str, prio: dict[str, int]) -> tuple[str, dict[str, Any]]:
    return (
        "EntrySwitch",
        {"vm_eid": EID, "rloc": rloc, "notify": ["203.0.113.5"], "priorities": prio},
    )


def test_unknown_plan_is_a_key_error_naming_it(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    m, h = world(clock)
    ex = Executor(store_at(tmp_path, clock), Context(m, h, clock))
    with pytest.raises(KeyError) as err:
        asyncio.run(ex.run_plan("no-such-plan"))
    assert err.value.args == ("no-such-plan",)


def test_a_plan_not_approved_is_not_run_and_its_state_returned(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    ex = Executor(store, Context(m, h, clock, poll_s=1.0))
    pid = store.create_plan("alice", "vm_migration", "t", {}, {}, [migration()])
    assert asyncio.run(ex.run_plan(pid)) == "recommended"
    assert states(store, pid) == ("recommended", ["pending"])
    assert h.started == [] and m.calls == []
    # Run once to the end; a second run returns the final state and does nothing more.
    store.approve(pid, by="t")
    assert drive(clock, ex.run_plan(pid)) == "succeeded"
    assert asyncio.run(ex.run_plan(pid)) == "succeeded"
    assert h.started == [("vm1", "dc2", "job-vm1")]


def test_hooks_see_each_phase_in_order_and_a_failing_hook_changes_nothing(
    tmp_path: Path,
) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    done: list[tuple[str, str]] = []
    ex = Executor(
        store, Context(m, h, clock, poll_s=1.0), on_done=lambda p, s: done.append((p["state"], s))
    )
    seen: list[tuple[str, str, str | None]] = []

    async def record(phase: str, plan: dict[str, Any], action: dict[str, Any]) -> None:
        seen.append((phase, action["kind"], plan["id"]))

    async def broken(phase: str, plan: dict[str, Any], action: dict[str, Any]) -> None:
        raise RuntimeError("hook bug")

    ex.hooks = [broken, record]
    pid = migration_plan(store)
    assert drive(clock, ex.run_plan(pid)) == "succeeded"
    assert seen == [
        ("starting", "VmMigration", pid),
        ("succeeded", "VmMigration", pid),
        ("starting", "EntrySwitch", pid),
        ("succeeded", "EntrySwitch", pid),
    ]
    # on_done runs before the plan's final transition (what the plan did to the user's
    # state is stored first, so a crash between the two leaves the plan to resume), and
    # it is told the outcome; the store has the final state right after.
    assert done == [("ongoing", "succeeded")]
    final = store.plan(pid)
    assert final is not None and final["state"] == "succeeded"
    # One migration measured (the entry switch is not one), in simulated time >= 80 s of
    # a 4 GiB VM at 20 s/GiB is not what monotonic time measures: only the count is pinned.
    assert len(ex.migration_seconds) == 1


def test_starting_hook_gets_the_stored_undo(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    ex = Executor(store, Context(m, h, clock, poll_s=1.0))
    undos: list[tuple[str, Any]] = []

    async def record(phase: str, plan: dict[str, Any], action: dict[str, Any]) -> None:
        undos.append((phase, action["undo"]))

    ex.hooks = [record]
    pid = store.create_plan(
        "alice",
        "entry_switch",
        "t",
        {},
        {},
        [switch("192.0.2.2", {"192.0.2.2": 1, "192.0.2.1": 2})],
    )
    store.approve(pid, by="t")
    assert asyncio.run(ex.run_plan(pid)) == "succeeded"
    before = {"priorities": {"192.0.2.1": 1, "192.0.2.2": 2}}
    assert undos == [("starting", before), ("succeeded", before)]
    p = store.plan(pid)
    assert p is not None and p["actions"][0]["undo"] == before


def test_failed_validation_skips_the_action_and_the_rest_and_reverts_nothing(
    tmp_path: Path,
) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    done: list[str] = []
    ex = Executor(store, Context(m, h, clock, poll_s=1.0), on_done=lambda p, s: done.append(s))
    phases: list[str] = []

    async def record(phase: str, plan: dict[str, Any], action: dict[str, Any]) -> None:
        phases.append(phase)

    ex.hooks = [record]
    # The chosen RLOC does not get priority 1: invalid before anything is done.
    bad = switch("192.0.2.2", {"192.0.2.1": 1, "192.0.2.2": 2})
    pid = store.create_plan("alice", "x", "t", {}, {}, [bad, migration()])
    store.approve(pid, by="t")
    assert asyncio.run(ex.run_plan(pid)) == "failed"
    assert states(store, pid) == ("failed", ["skipped", "skipped"])
    p = store.plan(pid)
    assert p is not None
    assert "192.0.2.2 does not get priority 1" in p["actions"][0]["error"]
    assert p["actions"][1]["error"] == "plan failed"
    assert p["actions"][0]["attempts"] == 0  # never started
    assert phases == [] and done == ["failed"]
    assert m.calls == [] and h.started == []


def test_vm_at_neither_end_fails_validation_with_where_it_is(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    pid = store.create_plan("alice", "x", "t", {}, {}, [migration(src="dc7", dst="dc8")])
    store.approve(pid, by="t")
    assert asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid)) == "failed"
    p = store.plan(pid)
    assert p is not None and p["actions"][0]["state"] == "skipped"
    assert "VM vm1 is at dc1, not at dc7" in p["actions"][0]["error"]
    # A VM already at the destination is valid (a re-run after the move).
    h.vms["vm1"] = VmStatus("dc8", True)
    pid2 = store.create_plan("bob", "x", "t", {}, {}, [migration(src="dc7", dst="dc8")])
    store.approve(pid2, by="t")
    assert asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid2)) == "succeeded"
    assert h.started == []  # nothing to move


def test_the_failed_phase_carries_the_error_and_the_plan_note_names_the_action(
    tmp_path: Path,
) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    h.fail_after["vm1"] = 0.5
    ex = Executor(store, Context(m, h, clock, poll_s=1.0))
    errors: list[tuple[str, Any]] = []

    async def record(phase: str, plan: dict[str, Any], action: dict[str, Any]) -> None:
        errors.append((phase, action.get("error")))

    ex.hooks = [record]
    pid = migration_plan(store)
    assert drive(clock, ex.run_plan(pid)) == "failed"
    msg = "migration of vm1 failed: injected migration failure"
    assert errors == [("starting", None), ("failed", msg)]
    p = store.plan(pid)
    assert p is not None and p["actions"][0]["error"] == msg
    assert p["actions"][1]["error"] == "plan failed"


def test_migration_times_out_after_the_configured_time_only(tmp_path: Path) -> None:
    # 4 GiB at 20 s/GiB: the migration needs 80 s of (simulated) time. Polled every second,
    # the deadline is inclusive: with 79 s the poll at 79 s is still within it and the one at
    # 80 s sees the migration completed; 78 s times out.
    for timeout, want in ((40.0, "failed"), (78.0, "failed"), (79.0, "succeeded"),
                          (200.0, "succeeded")):  # fmt: skip
        clock = ManualClock(0.0)
        store = Store(f"sqlite:///{tmp_path / f't{int(timeout)}.db'}", clock=clock)
        m, h = world(clock)
        ex = Executor(store, Context(m, h, clock, poll_s=1.0, migration_timeout_s=timeout))
        pid = store.create_plan("alice", "x", "t", {}, {}, [migration()])
        store.approve(pid, by="t")
        assert drive(clock, ex.run_plan(pid)) == want, timeout
        p = store.plan(pid)
        assert p is not None
        if want == "failed":
            assert p["actions"][0]["error"] == "migration of vm1 timed out"
            # It gave up once the deadline passed, not before and not much later.
            assert timeout < clock.now() <= timeout + 5.0
            # Reverted: the job aborted, the VM running at the source.
            assert p["actions"][0]["state"] == "reverted"
            assert h.vms["vm1"] == VmStatus("dc1", True)
        else:
            assert h.vms["vm1"] == VmStatus("dc2", True)


class ForgetfulHypervisor(MemoryHypervisor):
    """A hypervisor that forgets a finished job (libvirt after the domain moved): job()
    says ``none`` and only the VM's location tells that the migration is done."""

    async def job(self, vm: str) -> MigrationJob:
        j = await super().job(vm)
        return MigrationJob(state="none") if j.state == "completed" else j


def test_a_forgotten_job_counts_as_done_only_when_the_vm_is_at_the_destination(
    tmp_path: Path,
) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, _ = world(clock)
    h = ForgetfulHypervisor(clock=clock, seconds_per_gib=20.0)
    h.vms["vm1"] = VmStatus("dc1", True)
    h.memory["vm1"] = 4096
    ex = Executor(store, Context(m, h, clock, poll_s=1.0))
    pid = store.create_plan("alice", "x", "t", {}, {}, [migration()])
    store.approve(pid, by="t")
    assert drive(clock, ex.run_plan(pid)) == "succeeded"
    assert h.vms["vm1"] == VmStatus("dc2", True)
    assert clock.now() >= 80.0


def test_revert_of_a_completed_migration_leaves_the_vm_running_where_it_is(
    tmp_path: Path,
) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    m.fail_next = 1  # the entry switch after the migration fails
    ex = Executor(store, Context(m, h, clock, poll_s=1.0))
    pid = migration_plan(store)
    assert drive(clock, ex.run_plan(pid)) == "failed"
    assert states(store, pid) == ("failed", ["reverted", "reverted"])
    assert h.vms["vm1"] == VmStatus("dc2", True)
    assert h.started == [("vm1", "dc2", "job-1")]  # not migrated back


def test_a_paused_vm_is_resumed_by_revert_and_a_running_one_is_left_alone() -> None:
    clock = ManualClock(0.0)
    _, h = world(clock)
    m = MemoryMapping()
    ctx = Context(m, h, clock)
    params = migration()[1]
    resumed: list[str] = []
    real = h.resume

    async def spy(vm: str) -> None:
        resumed.append(vm)
        await real(vm)

    h.resume = spy  # type: ignore[method-assign]
    asyncio.run(VmMigration().revert(ctx, params, {}))
    assert resumed == []  # running at the source: nothing to resume
    h.vms["vm1"] = VmStatus("dc1", False)
    asyncio.run(VmMigration().revert(ctx, params, {}))
    assert resumed == ["vm1"] and h.vms["vm1"] == VmStatus("dc1", True)


def test_entry_switch_revert_without_stored_priorities_touches_nothing() -> None:
    clock = ManualClock(0.0)
    m, h = world(clock)
    ctx = Context(m, h, clock)
    params = switch("192.0.2.2", {"192.0.2.2": 1, "192.0.2.1": 2})[1]
    asyncio.run(EntrySwitch().revert(ctx, params, {}))
    asyncio.run(EntrySwitch().revert(ctx, params, {"priorities": {}}))
    assert m.calls == []
    asyncio.run(EntrySwitch().revert(ctx, params, {"priorities": {"192.0.2.1": 1}}))
    assert m.calls == [(EID, {"192.0.2.1": 1}, ["203.0.113.5"])]


def registers_once(m: MemoryMapping) -> None:
    """The mapping system accepts one registration, then is down (a revert's fails)."""
    real = m.set_priorities
    calls = 0

    async def once(eid: str, prio: dict[str, int], notify: list[str]) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise DriverError("mapping system down")
        await real(eid, prio, notify)

    m.set_priorities = once  # type: ignore[method-assign]


def test_a_revert_that_fails_leaves_the_action_in_its_state(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    first = switch("192.0.2.2", {"192.0.2.2": 1, "192.0.2.1": 2})
    pid = store.create_plan("alice", "x", "t", {}, {}, [first, migration(src="dc7", dst="dc8")])
    store.approve(pid, by="t")
    registers_once(m)
    assert asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid)) == "failed"
    # The switch succeeded, its revert failed: it stays succeeded (the world says so).
    assert states(store, pid) == ("failed", ["succeeded", "skipped"])
    assert m.priorities[EID] == {"192.0.2.2": 1, "192.0.2.1": 2}


def test_recoverable_takes_ongoing_then_approved_oldest_first_and_recommended_in_auto(
    tmp_path: Path,
) -> None:
    clock = ManualClock(100.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    ex = Executor(store, Context(m, h, clock))

    def plan(user: str, dry_run: bool = False) -> str:
        clock.advance(1.0)  # distinct creation times: oldest first is well defined
        return store.create_plan(user, "x", "t", {}, {}, [migration()], dry_run=dry_run)

    appr_old, ong_old, appr_new, ong_new = plan("a"), plan("b"), plan("c"), plan("d")
    rec_old, dry, rec_new = plan("e"), plan("f", dry_run=True), plan("g")
    for pid in (appr_old, ong_old, appr_new, ong_new):
        store.approve(pid, by="t")
    for pid in (ong_old, ong_new):
        assert store.move_plan(pid, "approved", "ongoing")
    assert ex.recoverable(auto=False) == [ong_old, ong_new, appr_old, appr_new]
    assert states(store, rec_old)[0] == "recommended"  # not approved without auto
    got = ex.recoverable(auto=True)
    assert got == [ong_old, ong_new, appr_old, appr_new, rec_old, rec_new]
    assert states(store, rec_old)[0] == "approved" and states(store, rec_new)[0] == "approved"
    assert states(store, dry)[0] == "recommended"  # a dry run is never approved


def test_recoverable_skips_a_recommended_plan_that_cannot_be_approved(tmp_path: Path) -> None:
    clock = ManualClock(100.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    ex = Executor(store, Context(m, h, clock))
    expired, _ = store.propose_plan("a", "x", "t", {}, {}, [migration()], expires=150.0)
    clock.advance(1.0)
    fresh = store.create_plan("b", "x", "t", {}, {}, [migration()])
    clock.advance(100.0)  # the first plan expired unapproved
    assert ex.recoverable(auto=True) == [fresh]
    assert states(store, expired)[0] == "expired"
