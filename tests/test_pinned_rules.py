"""Anti-flapping rules and plan revert pinned at their boundaries and sizes.

The other policy tests place their times well inside or outside a threshold (10 s and
50 s around a 30 s dwell), so a ``<`` turned ``<=`` or a threshold halved ships green.
Here every rule is probed exactly at its threshold, just below it and at a size that
tells the configured value from half of it. One criterion (RTT, bound 60 ms, weight 1)
keeps the arithmetic exact: the objective is the integer penalty ceil(rtt / 60) and the
secondary key rtt / 60.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from decision_support import entry_step, migration_step
from pacao.clock import ManualClock
from pacao.controller.app import build
from pacao.controller.config import config_from_dict
from pacao.controller.drivers.base import VmStatus
from pacao.controller.drivers.memory import MemoryHypervisor, MemoryMapping
from pacao.controller.plans import Context, Executor
from pacao.controller.state import MULTI_USER
from pacao.controller.storage import Store
from pacao.decision import Params, Reason, Sla
from test_controller_multiuser import N_USERS, Probes, config

NOW = 10_000.0


def one_sla(n: int) -> Sla:
    return Sla(np.ones((n, 1)), np.full((n, 1), 60.0))


def step1(
    current_rtt: float, best_rtt: float, since_switch: list[float], **params: Any
) -> list[int]:
    """Reasons of Step 1 for users on entry 0 (``current_rtt``) with entry 1 at ``best_rtt``,
    each having switched ``since_switch[i]`` seconds ago."""
    n = len(since_switch)
    values = np.tile([[current_rtt], [best_rtt]], (n, 1, 1)).astype(float)
    d = entry_step(
        NOW,
        values,
        np.ones((n, 2), bool),
        np.zeros(n, np.int64),
        one_sla(n),
        NOW - np.array(since_switch, dtype=float),
        Params(**params),
    )
    return [int(r) for r in d.reason]


def test_dwell_holds_strictly_below_the_threshold_and_releases_at_it() -> None:
    # 130 ms (T = 3) against 50 ms (T = 1): a clear gain, only the dwell time can hold.
    got = step1(130, 50, [30.0, 29.999, 16.0, 0.0], min_dwell_s=30, min_gain_ratio=0)
    assert got == [Reason.SWITCH, Reason.DWELL, Reason.DWELL, Reason.DWELL]
    # The size: 16 s is more than half of 30 s; with a 10 s dwell it is released.
    assert step1(130, 50, [16.0], min_dwell_s=10, min_gain_ratio=0) == [Reason.SWITCH]


def test_a_dead_entry_ignores_the_dwell_time() -> None:
    n = 1
    d = entry_step(
        NOW,
        np.array([[[130.0], [50.0]]]),
        np.array([[False, True]]),
        np.zeros(n, np.int64),
        one_sla(n),
        np.array([NOW - 1.0]),
        Params(min_dwell_s=30),
    )
    assert d.reason.tolist() == [Reason.SWITCH] and d.best.tolist() == [1]


def test_relative_margin_is_the_configured_fraction() -> None:
    # Same penalty (T = 2): only the secondary key rtt/60 ranks them. With r = 0.2 the
    # best must stay strictly better than 100 ms after x 1.2: 80 ms (96) passes, 85 ms
    # (102) does not, though 85 x 1.1 = 93.5 would (a halved margin); 100 / 1.2 is a tie.
    assert step1(100, 80, [1e6], min_gain_ratio=0.2) == [Reason.SWITCH]
    assert step1(100, 85, [1e6], min_gain_ratio=0.2) == [Reason.GAIN_BELOW_MARGIN]
    assert step1(100, 100 / 1.2, [1e6], min_gain_ratio=0.2) == [Reason.GAIN_BELOW_MARGIN]
    assert step1(100, 100 / 1.2 - 0.01, [1e6], min_gain_ratio=0.2) == [Reason.SWITCH]
    # Without a relative margin, any strictly shorter path of the same penalty moves.
    assert step1(100, 99, [1e6], min_gain_ratio=0) == [Reason.SWITCH]
    # Across penalties the inflated best is compared in objective: 55 ms (T = 1) x 1.2 =
    # 66 ms costs T = 2, still before 130 ms (T = 3); 110 x 1.2 = 132 costs T = 3, a tie.
    assert step1(130, 55, [1e6], min_gain_ratio=0.2) == [Reason.SWITCH]
    assert step1(130, 110, [1e6], min_gain_ratio=0.2) == [Reason.GAIN_BELOW_MARGIN]


def test_absolute_gain_margin_is_inclusive() -> None:
    # 130 ms (T = 3) vs 50 ms (T = 1): gain exactly 2.
    assert step1(130, 50, [1e6], min_gain=2.0, min_gain_ratio=0) == [Reason.SWITCH]
    assert step1(130, 50, [1e6], min_gain=2.001, min_gain_ratio=0) == [Reason.GAIN_BELOW_MARGIN]


def step2(since_migration: list[float], **kw: Any) -> list[int]:
    """Step 2 for users whose VM is on DC 0 (200 ms, T = 4) with DC 1 at 20 ms (T = 1):
    gain 3, migration time 40 s, expected stay 1 h unless given."""
    n = len(since_migration)
    params = kw.pop("params", Params(max_migrations_per_dc=100, max_migrations_total=100))
    args: dict[str, Any] = dict(
        now=NOW,
        current_values=np.full((n, 1), 200.0),
        current_usable=np.ones(n, bool),
        place_values=np.tile([[200.0], [20.0]], (n, 1, 1)),
        place_usable=np.ones((n, 2), bool),
        host=np.zeros(n, np.int64),
        sla=one_sla(n),
        demand=np.tile([1024.0, 1.0], (n, 1)),
        residual=np.array([[0.0, 0.0], [1e6, 1e3]]),
        pinned=np.zeros(n, bool),
        last_migration=NOW - np.array(since_migration, dtype=float),
        expected_stay_s=np.full(n, 3600.0),
        migration_s=np.tile([0.0, 40.0], (n, 1)),
        ongoing_per_dc=np.zeros(2, np.int64),
        ongoing_total=0,
        params=params,
    )
    args.update(kw)
    return [int(r) for r in migration_step(**args).reason]


def test_cooldown_holds_strictly_below_the_threshold_and_releases_at_it() -> None:
    p = Params(cooldown_s=300, max_migrations_per_dc=100, max_migrations_total=100)
    got = step2([300.0, 299.999, 160.0, 0.0], params=p)
    assert got == [Reason.MIGRATE, Reason.COOLDOWN, Reason.COOLDOWN, Reason.COOLDOWN]
    q = Params(cooldown_s=100, max_migrations_per_dc=100, max_migrations_total=100)
    assert step2([160.0], params=q) == [Reason.MIGRATE]


def test_migration_economics_at_the_break_even_point() -> None:
    # gain 3 x (stay - 40 s) against weight x 40 s: stay 80 s with weight 3 breaks even
    # (120 = 120), which is not worth it; a little longer stay is.
    p = Params(migration_cost_weight=3.0, max_migrations_per_dc=100, max_migrations_total=100)
    assert step2([1e6], params=p, expected_stay_s=np.array([80.0])) == [Reason.NOT_WORTH]
    assert step2([1e6], params=p, expected_stay_s=np.array([80.5])) == [Reason.MIGRATE]
    # A stay shorter than the migration gains nothing at all.
    assert step2([1e6], params=p, expected_stay_s=np.array([30.0])) == [Reason.NOT_WORTH]


def test_migration_gain_margin_is_inclusive() -> None:
    ok = Params(min_gain=3.0, max_migrations_per_dc=100, max_migrations_total=100)
    high = Params(min_gain=3.001, max_migrations_per_dc=100, max_migrations_total=100)
    assert step2([1e6], params=ok) == [Reason.MIGRATE]
    assert step2([1e6], params=high) == [Reason.GAIN_BELOW_MARGIN]


def test_caps_bind_exactly_at_their_value() -> None:
    # Equal gains: admitted in user order. A total cap of 3 admits 3, not 2 or 4.
    total = Params(max_migrations_per_dc=100, max_migrations_total=3)
    assert step2([1e6] * 3, params=total) == [Reason.MIGRATE] * 3
    got = step2([1e6] * 3, params=total, ongoing_total=1)
    assert got == [Reason.MIGRATE, Reason.MIGRATE, Reason.CAP_TOTAL]
    # A migration takes a slot at both ends: a per-DC cap of 2 admits two 0 -> 1 moves.
    per_dc = Params(max_migrations_per_dc=2, max_migrations_total=100)
    assert step2([1e6] * 2, params=per_dc) == [Reason.MIGRATE] * 2
    got = step2([1e6] * 3, params=per_dc)
    assert got == [Reason.MIGRATE, Reason.MIGRATE, Reason.CAP_DC]
    # A single candidate is capped as well, by migrations already under way.
    one = Params(max_migrations_per_dc=1, max_migrations_total=1)
    assert step2([1e6], params=one, ongoing_per_dc=np.array([1, 0])) == [Reason.CAP_DC]
    assert step2([1e6], params=one, ongoing_total=1) == [Reason.CAP_TOTAL]


# --- the multi-user mode keeps VMs within their cooldown where they are --------------------


def test_multi_user_mode_keeps_vms_within_their_cooldown(tmp_path: Path) -> None:
    doc = config(tmp_path, "always", min_users=1)
    doc["policy"]["cooldown_s"] = 300
    clock = ManualClock(1000.0)
    src = Probes()
    ctl = build(config_from_dict(doc), clock=clock, sources=src.agents)
    decided_at = 1010.0  # the multi-user plan is made at the end of the first S' window
    # Users 0-3 migrated within the cooldown (the last one 0.001 s short of it); user 4
    # exactly one cooldown ago; user 5 never.
    since = [0.0, 15.0, 200.0, 299.999, 300.0, None]

    async def go() -> list[str]:
        ctl.load_state()
        for i, s in enumerate(since):
            if s is not None:
                ctl.state[f"user{i}"].last_migration = decided_at - s
        clock.advance(10)
        assert clock.now() == decided_at
        src.now = clock.now() - 0.5
        await ctl.monitor.poll()
        made = await ctl.step1(clock.now())
        await ctl.drain()
        return list(made)

    made = asyncio.run(go())
    plans = [ctl.store.plan(p) for p in made]
    assert [(p["kind"], p["user"]) for p in plans] == [("multi_user", MULTI_USER)]  # type: ignore[index]
    moved = {f"user{i}" for i in range(N_USERS) if ctl.state[f"user{i}"].host != "far"}
    # Free users leave "far" (90 ms against a 40 ms bound); users in cooldown do not.
    assert moved == {"user4", "user5"}


# --- a failed plan reverts its succeeded actions newest first -------------------------------

EID = "10.1.0.10/32"
ORIGINAL = {"192.0.2.1": 1, "192.0.2.2": 2, "192.0.2.3": 3}


def switch(prio: dict[str, int]) -> tuple[str, dict[str, Any]]:
    chosen = next(r for r, p in prio.items() if p == 1)
    return (
        "EntrySwitch",
        {"vm_eid": EID, "rloc": chosen, "notify": ["203.0.113.5"], "priorities": prio},
    )


def test_failed_plan_reverts_two_succeeded_actions_newest_first(tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    m = MemoryMapping()
    m.priorities[EID] = dict(ORIGINAL)
    h = MemoryHypervisor(clock=clock)
    h.vms["vm1"] = VmStatus("dc1", True)
    first = {"192.0.2.2": 1, "192.0.2.1": 2, "192.0.2.3": 3}
    second = {"192.0.2.3": 1, "192.0.2.1": 2, "192.0.2.2": 3}
    # The third action fails: vm1 is at dc1, not at the migration's source dc9.
    bad = (
        "VmMigration",
        {
            "vm": "vm1",
            "src": "dc9",
            "dst": "dc8",
            "job_id": "j",
            "bandwidth_mbps": 1000.0,
            "max_downtime_ms": 300.0,
        },
    )
    pid = store.create_plan(
        "alice", "entry_switch", "t", {}, {}, [switch(first), switch(second), bad]
    )
    store.approve(pid, by="test")
    seen: list[dict[str, int]] = []
    real = m.set_priorities

    async def record(eid: str, prio: dict[str, int], notify: list[str]) -> None:
        seen.append(dict(prio))
        await real(eid, prio, notify)

    m.set_priorities = record  # type: ignore[method-assign]
    state = asyncio.run(Executor(store, Context(m, h, clock)).run_plan(pid))
    assert state == "failed"
    # Executed first, second; reverted second (back to first), then first (back to ORIGINAL).
    assert seen == [first, second, first, ORIGINAL]
    assert m.priorities[EID] == ORIGINAL
    plan = store.plan(pid)
    assert plan is not None
    assert [a["state"] for a in plan["actions"]] == ["reverted", "reverted", "skipped"]
