"""Congestion-aware multi-user mode: problem (4)-(9) when many users
violate their SLA in one S' window, one plan with every action it implies."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pacao.cli import app
from pacao.clock import ManualClock
from pacao.controller.app import build
from pacao.controller.config import config_from_dict
from pacao.controller.state import MULTI_USER
from pacao.decision import DcCapacity, MultiUserInputs, decide_multi_user
from pacao.measurement import Cursor
from pacao.optimize.assign import InfeasibleError, LatencyFunction
from probe_support import FakeAgent

FIG17 = LatencyFunction.from_breakpoints([[0, 0], [0.5, 5], [0.75, 50], [0.9, 200], [1, 700]], "f")
N_USERS = 6
#: User <-> xTR RTT by DC: "near" is best for everyone, "mid" next, "far" hosts the VMs.
RTT = {"near": 20.0, "mid": 30.0, "far": 90.0}


def test_the_assignment_respects_capacity_where_independent_choices_overload() -> None:
    rtt = np.tile([RTT["near"], RTT["mid"], RTT["far"]], (N_USERS, 1))
    md = decide_multi_user(
        MultiUserInputs(
            rtt_ms=rtt,
            usable=np.ones(rtt.shape, bool),
            bound_ms=np.full(N_USERS, 40.0),
            host=np.full(N_USERS, 2),
            pinned=np.zeros(N_USERS, bool),
        ),
        DcCapacity(capacity=np.array([2.0, 4.0, 8.0]), existing=np.zeros(3), latency=FIG17),
        solver="milp",
    )
    # Alone, every user picks "near": 6 users on a DC of 2.
    assert md.independent.tolist() == [0] * N_USERS
    assert md.independent_load.tolist() == [N_USERS, 0, 0]
    assert (md.load <= md.capacity).all()
    # By hand, bound 40 ms, T = max(1, (l + f) / 40): "near" with 1 user is at half load
    # (5 ms, T = 1) but with 2 at capacity (700 ms); "mid" holds 2 at T = 1, a third
    # would cost T = (30 + 50) / 40 = 2 each; "far" costs (90 + f(3/8)) / 40 = 2.34.
    assert md.load.tolist() == [1, 2, 3]
    assert md.objective == pytest.approx(1 + 2 + 3 * (90 + 3.75) / 40)
    assert md.lower_bound is not None and md.objective <= md.lower_bound + 1e-6


def test_pinned_users_stay_and_too_many_users_are_infeasible() -> None:
    rtt = np.tile([20.0, 90.0], (3, 1))
    md = decide_multi_user(
        MultiUserInputs(
            rtt_ms=rtt,
            usable=np.ones((3, 2), bool),
            bound_ms=np.full(3, 40.0),
            host=np.array([1, 1, 1]),
            pinned=np.array([True, False, False]),
        ),
        DcCapacity(capacity=np.array([4.0, 4.0]), existing=np.zeros(2), latency=FIG17),
        solver="lagrange",
    )
    assert md.dc[0] == 1
    with pytest.raises(InfeasibleError):
        decide_multi_user(
            MultiUserInputs(
                rtt_ms=rtt,
                usable=np.ones((3, 2), bool),
                bound_ms=np.full(3, 40.0),
                host=np.array([1, 1, 1]),
                pinned=np.zeros(3, bool),
            ),
            DcCapacity(capacity=np.array([1.0, 1.0]), existing=np.zeros(2), latency=FIG17),
            solver="lagrange",
        )


def config(tmp: Path, mode: str, min_users: int = 3) -> dict[str, Any]:
    dcs = []
    for j, (name, cap) in enumerate((("near", 2), ("mid", 4), ("far", 8))):
        dcs.append(
            {
                "name": name,
                "location": {"lat": 48.0 + j, "lon": 2.0},
                "rlocs": [f"192.0.2.{j + 1}"],
                "capacity": {"ram_mib": 65536, "cpu": 64, "users": cap},
            }
        )
    vms = [
        {
            "name": f"vm{i}",
            "eid": f"10.1.0.{i + 1}/32",
            "memory_mib": 1024,
            "vcpus": 1,
            "host": "far",
            "hypervisor_uri": "memory://",
        }
        for i in range(N_USERS)
    ]
    users = [
        {
            "name": f"user{i}",
            "rloc": f"203.0.113.{i + 1}",
            "vm": f"vm{i}",
            "sla": {"rtt": {"weight": 1.0, "max": 40}},
        }
        for i in range(N_USERS)
    ]
    return {
        "dcs": dcs,
        "vms": vms,
        "users": users,
        "timers": {"s1": 10, "s2": 5, "s3": 1},
        "policy": {
            "min_dwell_s": 0,
            "cooldown_s": 0,
            "max_migrations_per_dc": 100,
            "max_migrations_total": 100,
        },
        "multi_user": {"mode": mode, "min_users": min_users, "solver": "milp"},
        "drivers": {"mapping": {"name": "memory"}, "hypervisor": {"name": "memory"}},
        "storage": {"url": f"sqlite:///{tmp / 'c.db'}"},
        "api": {"token": "t"},
    }


class Probes:
    """Every user sees each DC's xTR at RTT[dc] (no network): one agent per DC."""

    def __init__(self) -> None:
        self.now = 0.0
        self.agents = [ProbeAgent(self, dc, f"192.0.2.{j + 1}") for j, dc in enumerate(RTT)]


class ProbeAgent(FakeAgent):
    def __init__(self, probes: Probes, name: str, rloc: str) -> None:
        super().__init__(name, rloc)
        self.probes = probes

    async def fetch(self, cursor: Cursor | None) -> Any:
        for i in range(N_USERS):
            for k in range(5):
                ts = self.probes.now - k
                self.probe(ts, f"10.9.{i}.0/24", f"203.0.113.{i + 1}", RTT[self.name])
        return self.doc(cursor)


def window(tmp: Path, mode: str, min_users: int = 3) -> tuple[Any, list[str]]:
    clock = ManualClock(1000.0)
    src = Probes()
    ctl = build(config_from_dict(config(tmp, mode, min_users)), clock=clock, sources=src.agents)

    async def go() -> list[str]:
        ctl.load_state()
        clock.advance(10)
        src.now = clock.now() - 0.5
        await ctl.monitor.poll()
        made = await ctl.step1(clock.now())
        await ctl.drain()
        clock.advance(5)
        src.now = clock.now() - 0.1
        await ctl.monitor.poll()
        made += await ctl.step2(clock.now())
        await ctl.drain()
        return list(made)

    return ctl, asyncio.run(go())


def hosts(ctl: Any) -> dict[str, int]:
    out = {d: 0 for d in RTT}
    for st in ctl.state.values():
        out[st.host] += 1
    return out


def test_controller_plans_all_violators_together_within_capacity(tmp_path: Path) -> None:
    ctl, made = window(tmp_path, "auto")
    plans = [ctl.store.plan(p) for p in made]
    assert [(p["kind"], p["user"], p["state"]) for p in plans] == [
        ("multi_user", MULTI_USER, "succeeded")
    ]
    scores = plans[0]["scores"]
    assert scores["independent_load"]["near"] == N_USERS  # alone, all would crowd "near"
    final = hosts(ctl)
    assert final == {d: scores["dc_load"][d] for d in RTT}
    assert all(final[d] <= scores["dc_capacity"][d] for d in RTT)
    assert final["far"] < N_USERS  # users did move
    # The hypervisor agrees, and every moved user enters through its new DC.
    hv = ctl.hypervisor.vms
    for i in range(N_USERS):
        st = ctl.state[f"user{i}"]
        assert hv[f"vm{i}"].dc == st.host
        assert st.entry == ctl.cfg.dc(st.host).rlocs[0]


def test_below_the_threshold_users_are_decided_alone_and_overload(tmp_path: Path) -> None:
    ctl, made = window(tmp_path, "auto", min_users=N_USERS + 1)
    kinds = sorted(ctl.store.plan(p)["kind"] for p in made)  # type: ignore[index]
    assert "multi_user" not in kinds and "vm_migration" in kinds
    # The per-user rule sends every VM to "near", twice its capacity of 2 users.
    assert hosts(ctl)["near"] > 2
    (tmp_path / "off").mkdir()
    ctl, made = window(tmp_path / "off", "off", min_users=1)
    assert all(ctl.store.plan(p)["kind"] != "multi_user" for p in made)  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["multi_user"].update(mode="sometimes"), "multi_user.mode"),
        (lambda d: d["multi_user"].update(min_users=0), "multi_user.min_users"),
        (lambda d: d["multi_user"].update(solver="cplex"), "multi_user.solver"),
        (lambda d: d["multi_user"].update(speed=1), "multi_user.speed"),
        (lambda d: d["dcs"][0]["capacity"].update(users=0), "dcs[0].capacity.users"),
        (
            lambda d: d["multi_user"].update(latency_function={"breakpoints": [[0, 0], [0.8, 9]]}),
            "multi_user.latency_function.breakpoints[1][0]",
        ),
        (
            lambda d: d["multi_user"].update(
                latency_function={"breakpoints": [[0, 0], [0.5, 100], [1, 110]]}
            ),
            "multi_user.latency_function.breakpoints[2]",
        ),
    ],
)
def test_bad_multi_user_settings_name_the_key(tmp_path: Path, change: Any, path: str) -> None:
    doc = config(tmp_path, "auto")
    change(doc)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(doc))
    r = CliRunner().invoke(app, ["controller", "check-config", str(f)])
    assert r.exit_code == 2 and r.stderr.startswith(f"pacao: error: {path}:"), r.stderr
    assert r.stderr.count("\n") == 1
