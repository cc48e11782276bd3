"""The plan executor's promises that the first round of mutation tests left open: resuming
after a crash (an entry switch already registered is not registered again, a succeeded
action is skipped but still reverted, an ongoing action keeps its stored undo), what each
record and log line says, the migration deadline at its exact value, and a restart that
finds more plans than one page of the store.

In-memory drivers and a manual clock throughout: nothing waits on real time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from pacao.clock import ManualClock
from pacao.controller.drivers.base import MigrationJob, VmStatus
from pacao.controller.drivers.memory import MemoryHypervisor, MemoryMapping
from pacao.controller.plans import Context, Executor, VmMigration
from pacao.controller.storage import Store, plans
from test_controller_plans import EID, drive, migration_plan, world
from test_mutation_plans import migration, registers_once, states, store_at, switch

ORIGINAL = {"192.0.2.1": 1, "192.0.2.2": 2}
NEW = {"192.0.2.2": 1, "192.0.2.1": 2}


class Records(logging.Handler):
    """The records of one logger, whatever the root logger's handlers and propagation."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def plan_log() -> Iterator[Records]:
    logger = logging.getLogger("pacao.controller.plans")
    h = Records()
    old = logger.level
    logger.addHandler(h)
    logger.setLevel(logging.DEBUG)
    try:
        yield h
    finally:
        logger.removeHandler(h)
        logger.setLevel(old)


def start_running(store: Store, pid: str, undo: dict[str, Any], succeeded: int = 0) -> None:
    """The store as a crash leaves it: the plan ongoing, its first ``succeeded`` actions
    succeeded and the next one ongoing with ``undo`` stored (the driver maybe called)."""
    assert store.move_plan(pid, "approved", "ongoing")
    p = store.plan(pid)
    assert p is not None
    for a in p["actions"][:succeeded]:
        assert store.move_action(a["id"], "pending", "ongoing", undo=undo)
        assert store.move_action(a["id"], "ongoing", "succeeded")
    a = p["actions"][succeeded]
    assert store.move_action(a["id"], "pending", "ongoing", undo=undo)


def one_switch_plan(store: Store) -> str:
    pid = store.create_plan("alice", "entry_switch", "t", {}, {}, [switch("192.0.2.2", NEW)])
    store.approve(pid, by="t")
    return pid


# -- resuming an entry switch ---------------------------------------------------------


def test_a_resumed_switch_already_registered_is_not_registered_again(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    pid = one_switch_plan(store)
    start_running(store, pid, {"priorities": ORIGINAL})
    m.priorities[EID] = dict(NEW)  # registered before the crash
    assert asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid)) == "succeeded"
    assert m.calls == []  # no second registration, no second SMR
    assert states(store, pid) == ("succeeded", ["succeeded"])
    p = store.plan(pid)
    assert p is not None and p["actions"][0]["attempts"] == 2


def test_a_resumed_switch_not_yet_registered_is_registered_once(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    pid = one_switch_plan(store)
    start_running(store, pid, {"priorities": ORIGINAL})
    assert asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid)) == "succeeded"
    assert m.calls == [(EID, NEW, ["203.0.113.5"])]
    assert m.priorities[EID] == NEW


def test_a_fresh_switch_registers_and_notifies_even_when_the_priorities_match(
    tmp_path: Path,
) -> None:
    # Only a resumed action may skip the registration: a new one always notifies the xTR.
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    m.priorities[EID] = dict(NEW)
    pid = one_switch_plan(store)
    assert asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid)) == "succeeded"
    assert m.calls == [(EID, NEW, ["203.0.113.5"])]


def test_a_resumed_action_that_fails_is_reverted_with_its_stored_undo(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    undo = {"priorities": {"192.0.2.1": 1, "192.0.2.2": 3}}  # told apart from ORIGINAL
    pid = one_switch_plan(store)
    start_running(store, pid, undo)
    m.fail_next = 1
    assert asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid)) == "failed"
    assert m.calls == [(EID, undo["priorities"], ["203.0.113.5"])]
    assert states(store, pid) == ("failed", ["reverted"])


def test_a_resumed_plan_skips_its_succeeded_action_and_still_reverts_it_newest_first(
    tmp_path: Path,
) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    first = {"192.0.2.2": 1, "192.0.2.1": 2, "192.0.2.3": 3}
    second = {"192.0.2.3": 1, "192.0.2.1": 2, "192.0.2.2": 3}
    pid = store.create_plan(
        "alice",
        "x",
        "t",
        {},
        {},
        [
            switch("192.0.2.2", first),
            switch("192.0.2.3", second),
            migration(src="dc9", dst="dc8"),  # fails validation: vm1 is at dc1
        ],
    )
    store.approve(pid, by="t")
    p = store.plan(pid)
    assert p is not None
    # The first switch succeeded before the crash (its undo: the original priorities).
    m.priorities[EID] = dict(first)
    a0 = p["actions"][0]
    assert store.move_plan(pid, "approved", "ongoing")
    assert store.move_action(a0["id"], "pending", "ongoing", undo={"priorities": ORIGINAL})
    assert store.move_action(a0["id"], "ongoing", "succeeded")
    assert asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid)) == "failed"
    # The second ran (once), then both were reverted, the newer first.
    assert [c[1] for c in m.calls] == [second, first, ORIGINAL]
    assert states(store, pid) == ("failed", ["reverted", "reverted", "skipped"])


def test_an_action_left_failed_by_a_crash_fails_the_resumed_plan_naming_it(
    tmp_path: Path,
) -> None:
    # The crash came after the action failed and before the plan did.
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    pid = one_switch_plan(store)
    start_running(store, pid, {"priorities": ORIGINAL})
    p = store.plan(pid)
    assert p is not None
    aid = p["actions"][0]["id"]
    assert store.move_action(aid, "ongoing", "failed", error="driver down")
    assert asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid)) == "failed"
    assert store.transitions(pid)[-1]["note"] == f"EntrySwitch: action {aid} is failed"
    assert m.calls == []


# -- what the records say -------------------------------------------------------------


def test_a_migration_stores_where_the_vm_was_as_its_undo(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    pid = store.create_plan("alice", "x", "t", {}, {}, [migration()])
    store.approve(pid, by="t")
    assert drive(clock, Executor(store, Context(m, h, clock, poll_s=1.0)).run_plan(pid)) == (
        "succeeded"
    )
    p = store.plan(pid)
    assert p is not None and p["actions"][0]["undo"] == {"dc": "dc1", "running": True}


class RecordingHypervisor(MemoryHypervisor):
    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock=clock, seconds_per_gib=20.0)
        self.args: list[tuple[Any, ...]] = []

    async def start_migration(
        self, vm: str, dst: str, job_id: str, bandwidth_mbps: float, max_downtime_ms: float
    ) -> None:
        self.args.append((vm, dst, job_id, bandwidth_mbps, max_downtime_ms))
        await super().start_migration(vm, dst, job_id, bandwidth_mbps, max_downtime_ms)


def test_a_migration_passes_its_bandwidth_and_downtime_to_the_hypervisor(
    tmp_path: Path,
) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, _ = world(clock)
    h = RecordingHypervisor(clock)
    h.vms["vm1"] = VmStatus("dc1", True)
    h.memory["vm1"] = 4096
    pid = store.create_plan("alice", "x", "t", {}, {}, [migration()])
    store.approve(pid, by="t")
    assert drive(clock, Executor(store, Context(m, h, clock, poll_s=1.0)).run_plan(pid)) == (
        "succeeded"
    )
    assert h.args == [("vm1", "dc2", "job-vm1", 1000.0, 300.0)]


def test_hooks_get_the_plan_the_state_and_the_undo_of_each_phase(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    h.fail_after["vm1"] = 0.5
    ex = Executor(store, Context(m, h, clock, poll_s=1.0))
    seen: list[tuple[str, str, Any, Any]] = []

    async def record(phase: str, plan: dict[str, Any], action: dict[str, Any]) -> None:
        seen.append((phase, plan["id"], action.get("state"), action.get("undo")))

    ex.hooks = [record]
    ok = store.create_plan("bob", "x", "t", {}, {}, [switch("192.0.2.2", NEW)])
    store.approve(ok, by="t")
    assert asyncio.run(ex.run_plan(ok)) == "succeeded"
    pid = store.create_plan("alice", "x", "t", {}, {}, [migration()])
    store.approve(pid, by="t")
    assert drive(clock, ex.run_plan(pid)) == "failed"
    at_src = {"dc": "dc1", "running": True}
    assert seen == [
        ("starting", ok, "pending", {"priorities": ORIGINAL}),
        ("succeeded", ok, "succeeded", {"priorities": ORIGINAL}),
        ("starting", pid, "pending", at_src),
        ("failed", pid, "pending", at_src),
    ]


def test_a_failed_plan_notes_the_action_kind_and_the_error(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    h.fail_after["vm1"] = 0.5
    pid = migration_plan(store)
    assert drive(clock, Executor(store, Context(m, h, clock, poll_s=1.0)).run_plan(pid)) == (
        "failed"
    )
    last = store.transitions(pid)[-1]
    assert (last["from_state"], last["to_state"]) == ("ongoing", "failed")
    assert last["note"] == "VmMigration: migration of vm1 failed: injected migration failure"


def test_a_first_action_failing_skips_every_later_one(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    h.fail_after["vm1"] = 0.5
    steps = [migration(), switch("192.0.2.2", NEW), migration(vm="vm2")]
    pid = store.create_plan("alice", "x", "t", {}, {}, steps)
    store.approve(pid, by="t")
    assert drive(clock, Executor(store, Context(m, h, clock, poll_s=1.0)).run_plan(pid)) == (
        "failed"
    )
    assert states(store, pid) == ("failed", ["reverted", "skipped", "skipped"])
    p = store.plan(pid)
    assert p is not None and [a["error"] for a in p["actions"][1:]] == ["plan failed"] * 2


def test_migration_seconds_counts_migrations_only(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    ex = Executor(store, Context(m, h, clock, poll_s=1.0))
    assert asyncio.run(ex.run_plan(one_switch_plan(store))) == "succeeded"
    assert ex.migration_seconds == []
    pid = store.create_plan("bob", "x", "t", {}, {}, [migration()])
    store.approve(pid, by="t")
    before = time.monotonic()
    assert drive(clock, ex.run_plan(pid)) == "succeeded"
    after = time.monotonic()
    # One figure, measured within the run (monotonic time: the manual clock is not it).
    assert len(ex.migration_seconds) == 1
    assert 0.0 <= ex.migration_seconds[0] <= after - before


def test_a_plan_taken_meanwhile_is_not_run_and_its_new_state_returned(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    pid = one_switch_plan(store)
    stale = store.plan(pid)
    # Superseded between the executor's read and its approved -> ongoing move.
    assert store.move_plan(pid, "approved", "superseded")
    real = store.plan
    reads = 0

    def plan(p: str) -> dict[str, Any] | None:
        nonlocal reads
        reads += 1
        return stale if reads == 1 else real(p)

    store.plan = plan  # type: ignore[method-assign]
    assert asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid)) == "superseded"
    assert m.calls == [] and reads == 2


# -- the migration itself ---------------------------------------------------------------


def test_a_timed_out_migration_is_aborted_and_never_completes(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    ex = Executor(store, Context(m, h, clock, poll_s=1.0, migration_timeout_s=40.0))
    pid = store.create_plan("alice", "x", "t", {}, {}, [migration()])
    store.approve(pid, by="t")
    assert drive(clock, ex.run_plan(pid)) == "failed"
    clock.advance(100.0)  # past the 80 s the job would have needed
    assert asyncio.run(h.status("vm1")) == VmStatus("dc1", True)
    assert h.jobs["vm1"]["error"] == "aborted"


class LostJobHypervisor(MemoryHypervisor):
    """Knows no job at all (a hypervisor restarted and lost it): the VM never moves."""

    async def job(self, vm: str) -> MigrationJob:
        return MigrationJob(state="none")


def test_a_lost_job_with_the_vm_still_at_the_source_is_not_done(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, _ = world(clock)
    h = LostJobHypervisor(clock=clock, seconds_per_gib=1e9)
    h.vms["vm1"] = VmStatus("dc1", True)
    h.memory["vm1"] = 4096
    ex = Executor(store, Context(m, h, clock, poll_s=1.0, migration_timeout_s=10.0))
    pid = store.create_plan("alice", "x", "t", {}, {}, [migration()])
    store.approve(pid, by="t")
    assert drive(clock, ex.run_plan(pid)) == "failed"
    p = store.plan(pid)
    assert p is not None and p["actions"][0]["error"] == "migration of vm1 timed out"


def test_revert_resumes_a_vm_paused_at_the_destination() -> None:
    clock = ManualClock(0.0)
    _, h = world(clock)
    h.vms["vm1"] = VmStatus("dc2", False)
    asyncio.run(VmMigration().revert(Context(MemoryMapping(), h, clock), migration()[1], {}))
    assert h.vms["vm1"] == VmStatus("dc2", True)


# -- logs -------------------------------------------------------------------------------


def test_failures_are_logged_with_the_plan_action_and_phase(
    tmp_path: Path, plan_log: Records
) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    ex = Executor(store, Context(m, h, clock))

    async def broken(phase: str, plan: dict[str, Any], action: dict[str, Any]) -> None:
        raise RuntimeError("hook bug")

    ex.hooks = [broken]
    pid = store.create_plan(
        "alice", "x", "t", {}, {}, [switch("192.0.2.2", NEW), migration(src="dc7", dst="dc8")]
    )
    store.approve(pid, by="t")
    registers_once(m)
    assert asyncio.run(ex.run_plan(pid)) == "failed"
    p = store.plan(pid)
    assert p is not None
    a0, a1 = (a["id"] for a in p["actions"])
    got = [
        (
            r.levelname,
            r.getMessage(),
            getattr(r, "plan", None),
            getattr(r, "action", None),
            getattr(r, "phase", None),
        )
        for r in plan_log.records
    ]
    assert got == [
        ("ERROR", "action hook failed", pid, None, "starting"),
        ("ERROR", "action hook failed", pid, None, "succeeded"),
        ("WARNING", "action failed: VM vm1 is at dc1, not at dc7", pid, a1, None),
        ("ERROR", "revert failed: mapping system down", None, a0, None),
    ]
    assert plan_log.records[0].exc_info is not None  # the hook's traceback is kept


# -- recovery ---------------------------------------------------------------------------


def test_recover_in_auto_mode_approves_and_runs_a_recommended_plan(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    pid = store.create_plan("alice", "entry_switch", "t", {}, {}, [switch("192.0.2.2", NEW)])
    ex = Executor(store, Context(m, h, clock))
    assert asyncio.run(ex.recover(auto=True)) == [pid]
    p = store.plan(pid)
    assert p is not None and p["state"] == "succeeded" and p["approved_by"] == "auto"
    assert m.priorities[EID] == NEW


def test_a_restart_takes_up_more_plans_than_one_page_of_the_store(tmp_path: Path) -> None:
    # Store.plans returns 1000 rows unless told otherwise: a restart must see them all. The
    # rows are written in one statement (1001 plans through create_plan take seconds).
    clock = ManualClock(0.0)
    store = store_at(tmp_path, clock)
    m, h = world(clock)
    n = 1001
    ids = [f"plan-{i:04d}" for i in range(n)]
    with store.engine.begin() as c:
        c.execute(
            insert(plans),
            [
                {
                    "id": pid,
                    "created": float(i),
                    "updated": float(i),
                    "user": f"u{i}",
                    "kind": "x",
                    "state": "ongoing",
                    "reason": "t",
                    "inputs": {},
                    "scores": {},
                    "dry_run": i > 0,  # the oldest plan only is a real one
                }
                for i, pid in enumerate(ids)
            ],
        )
    ex = Executor(store, Context(m, h, clock))
    for state in ("ongoing", "approved"):
        with store.engine.begin() as c:
            c.execute(update(plans).values(state=state))
        assert ex.recoverable(auto=False) == ids, state
    # Recommended: the oldest one is approved although 1000 newer dry runs come first.
    with store.engine.begin() as c:
        c.execute(update(plans).values(state="recommended"))
    assert ex.recoverable(auto=True) == [ids[0]]
    assert states(store, ids[0])[0] == "approved"
