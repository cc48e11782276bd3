"""The controller's per-user state (pacao.controller.state): read and written in bulk, and
where each VM runs for the capacity checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pacao.controller.config import ControllerConfig, config_from_dict
from pacao.controller.state import UserState, UserStates, key
from pacao.controller.storage import Store

DCS = ["a", "b", "c"]


def _cfg(tmp: Path) -> ControllerConfig:
    dcs = [{"name": n, "location": {"lat": 48.0, "lon": 2.0 + i}, "rlocs": [f"192.0.2.{i + 1}"],
            "capacity": {"ram_mib": 8192, "cpu": 8}} for i, n in enumerate(DCS)]  # fmt: skip
    vms: list[dict[str, Any]] = [
        {"name": f"vm{i}", "eid": f"10.1.0.{i + 1}/32", "memory_mib": 1024 * (i + 1),
         "vcpus": 1, "host": "a", "hypervisor_uri": "memory://"} for i in range(3)
    ]  # fmt: skip
    users = [  # vm2 has no user
        {
            "name": f"u{i}",
            "rloc": f"203.0.113.{i + 1}",
            "vm": f"vm{i}",
            "sla": {"rtt": {"weight": 1.0, "max": 40}},
        }
        for i in range(2)
    ]
    return config_from_dict({
        "dcs": dcs, "vms": vms, "users": users, "timers": {"s1": 10, "s2": 5, "s3": 1},
        "drivers": {"mapping": {"name": "memory"}, "hypervisor": {"name": "memory"}},
        "storage": {"url": f"sqlite:///{tmp / 'c.db'}"}, "api": {"token": "t"},
    })  # fmt: skip


def test_load_reads_stored_users_and_writes_the_others_initial(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    store = Store(cfg.storage.url)
    moved = UserState(entry="192.0.2.3", host="c", last_switch=5.0)
    store.put_state(key("u1"), moved.to_json())
    follower = UserStates()
    follower.load(store, cfg, write=False)
    initial = UserState(entry="192.0.2.1", host="a")
    assert follower == {"u0": initial, "u1": moved}
    assert store.get_state(key("u0")) is None  # a follower writes nothing
    leader = UserStates()
    leader.load(store, cfg)
    assert leader == follower
    assert store.get_states([key("u0"), key("u1")]) == {
        key("u0"): initial.to_json(), key("u1"): moved.to_json(),
    }  # fmt: skip


def test_a_vm_runs_where_its_user_says_else_where_configured(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    st = UserStates(
        u0=UserState(entry="192.0.2.2", host="b"), u1=UserState(entry="192.0.2.3", host="c")
    )
    assert st.hosts(cfg, DCS) == {"vm0": 1, "vm1": 2, "vm2": 0}
    assert st.vms_per_dc(cfg, DCS, besides=set()).tolist() == [1, 1, 1]
    assert st.vms_per_dc(cfg, DCS, besides={"vm1"}).tolist() == [1, 1, 0]
    # vm0 1 GiB at b, vm1 2 GiB at c, vm2 3 GiB at a; 1 vCPU each
    assert np.array_equal(
        st.residual(cfg, DCS), [[8192 - 3072, 7], [8192 - 1024, 7], [8192 - 2048, 7]]
    )
