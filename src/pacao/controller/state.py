"""What the controller knows of the world between windows: each user's entry RLOC and VM
DC with the times they last changed (stored under ``user/<name>``, so a restart or a new
leader starts from them), and what that leaves of each DC's capacity.

The plan lifecycle changes this state only through :meth:`UserStates.apply`, once a plan
has ended, from what its actions did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pacao.controller.config import ControllerConfig, VirtualMachine
from pacao.controller.lifecycle import IN_FLIGHT, ActionState, PlanState
from pacao.controller.storage import Store

#: The user column of a multi-user plan (no user name can start with "*").
MULTI_USER = "*"


@dataclass
class UserState:
    """A user's current entry RLOC and VM DC; when each last changed (None: never)."""

    entry: str
    host: str
    last_switch: float | None = None
    last_migration: float | None = None

    @classmethod
    def initial(cls, cfg: ControllerConfig, vm: VirtualMachine) -> UserState:
        """Before any plan: the user's VM at its configured host, entered through that
        DC's first RLOC."""
        return cls(entry=cfg.dc(vm.host).rlocs[0], host=vm.host)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> UserState:
        return cls(
            entry=str(doc["entry"]),
            host=str(doc["host"]),
            last_switch=doc.get("last_switch"),
            last_migration=doc.get("last_migration"),
        )

    def to_json(self) -> dict[str, Any]:
        """The stored row and the API's ``state`` field."""
        return asdict(self)

    def switched(self) -> float:
        """The last entry switch for the dwell rule (never: -inf)."""
        return -math.inf if self.last_switch is None else float(self.last_switch)

    def migrated(self) -> float:
        """The last migration (or failed one) for the cooldown rule (never: -inf)."""
        return -math.inf if self.last_migration is None else float(self.last_migration)


def key(user: str) -> str:
    return f"user/{user}"


class UserStates(dict[str, UserState]):
    """Every configured user's state, read from and written to the store."""

    def load(self, store: Store, cfg: ControllerConfig, write: bool = True) -> None:
        """Per-user state from the store; ``write=False`` (a follower's view) does not
        store the initial state of a user the database does not know yet."""
        stored = store.get_states([key(u.name) for u in cfg.users])
        vms = cfg.vm_index()
        new: dict[str, Any] = {}
        for u in cfg.users:
            doc = stored.get(key(u.name))
            if doc is None:
                st = UserState.initial(cfg, vms[u.vm])
                new[key(u.name)] = st.to_json()
            else:
                st = UserState.from_json(doc)
            self[u.name] = st
        if write:
            store.put_states(new)

    def save(self, store: Store, user: str) -> None:
        store.put_state(key(user), self[user].to_json())

    def apply(
        self,
        plan: Mapping[str, Any],
        final: PlanState,
        now: float,
        migrated: Callable[[float], None],
    ) -> set[str]:
        """What an ended plan did: new entries and hosts, and the switch and migration
        times the dwell and cooldown rules read (a failed migration starts a cooldown
        too). ``migrated`` gets the duration of each migration done. Returns the users
        whose state changed (to be saved)."""
        touched: set[str] = set()
        for a in plan["actions"]:
            # A multi-user plan names each action's user; the others are the plan's.
            user = a["params"].get("user", plan["user"])
            st = self.get(user)
            if st is None:
                continue
            touched.add(user)
            if a["kind"] == "VmMigration" and a["state"] in (
                ActionState.FAILED,
                ActionState.REVERTED,
            ):
                st.last_migration = now  # cooldown after a failed migration too
            if a["state"] != ActionState.SUCCEEDED:
                continue
            if a["kind"] == "EntrySwitch":
                st.entry, st.last_switch = a["params"]["rloc"], now
            elif a["kind"] == "VmMigration":
                st.host, st.last_migration = a["params"]["dst"], now
                if a["started"] is not None and a["finished"] is not None:
                    migrated(a["finished"] - a["started"])
        if plan["kind"] == "vm_migration" and final == PlanState.FAILED and plan["user"] in self:
            self[plan["user"]].last_migration = now
            touched.add(plan["user"])
        return touched

    def hosts(self, cfg: ControllerConfig, dcs: list[str]) -> dict[str, int]:
        """The index in ``dcs`` of where each VM runs: its user's state (one user per
        VM), or the config for a VM no user has."""
        at = {d: i for i, d in enumerate(dcs)}
        out = {v.name: at[v.host] for v in cfg.vms}
        out.update({u.vm: at[self[u.name].host] for u in cfg.users})
        return out

    def residual(self, cfg: ControllerConfig, dcs: list[str]) -> np.ndarray:
        """Each DC's free (RAM MiB, vCPUs) with every VM where it runs now."""
        res = np.array([[d.capacity.ram_mib, d.capacity.cpu] for d in cfg.dcs], dtype=float)
        where = self.hosts(cfg, dcs)
        for v in cfg.vms:
            res[where[v.name]] -= [v.memory_mib, v.vcpus]
        out: np.ndarray = np.maximum(res, 0.0)
        return out

    def vms_per_dc(self, cfg: ControllerConfig, dcs: list[str], besides: set[str]) -> np.ndarray:
        """How many VMs each DC holds, not counting the VMs named in ``besides``."""
        existing = np.zeros(len(dcs))
        where = self.hosts(cfg, dcs)
        for vm in cfg.vms:
            if vm.name not in besides:
                existing[where[vm.name]] += 1
        return existing


def busy_users(store: Store) -> set[str]:
    """Users with a plan approved or under way: their entry/host state is about to
    change, so no new plan for them until it ends (two plans of one user would race
    on the same mapping, and each window would add one while a slow action runs)."""
    out: set[str] = set()
    for p in store.plans(state=IN_FLIGHT, limit=None):
        if p["user"] == MULTI_USER:
            out.update(str(a["params"].get("user")) for a in p["actions"])
        else:
            out.add(str(p["user"]))
    return out


def migrations_under_way(store: Store, dcs: list[str]) -> tuple[np.ndarray, int]:
    """Migrations not ended yet: per DC (as source or destination) and in total, for the
    per-DC and total migration caps."""
    per = np.zeros(len(dcs), dtype=np.int64)
    total = 0
    for p in store.plans(state=IN_FLIGHT):
        for a in p["actions"]:
            if a["kind"] == "VmMigration" and a["state"] in (
                ActionState.PENDING,
                ActionState.ONGOING,
            ):
                total += 1
                per[dcs.index(a["params"]["src"])] += 1
                per[dcs.index(a["params"]["dst"])] += 1
    return per, total
