"""Decisions into stored plans: Step 1 every S', Step 2 S'' after a violation, and the
congestion-aware multi-user mode; each plan a list of typed actions.

Every S' (timers.s1) :meth:`Planner.step1` closes a monitoring window and decides
entries for all users at once (:func:`pacao.decision.decide_entry`); users
whose SLA was violated get :meth:`Planner.step2` S'' (timers.s2) later, over the
samples the xTRs took every S''' meanwhile. A decision is stored as a plan before it is
handed to ``dispatch`` (approval, then the executor).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from pacao.clock import Clock
from pacao.controller.config import ControllerConfig, User, VirtualMachine
from pacao.controller.metrics import Metrics
from pacao.controller.monitoring import USER_XTR, LastKnown, Monitor, WindowStat
from pacao.controller.priorities import priority_table
from pacao.controller.state import MULTI_USER, UserStates, busy_users, migrations_under_way
from pacao.controller.storage import Store
from pacao.controller.windows import CRITERIA, WindowArrays, Windows
from pacao.decision import (
    REASON_TEXT,
    DcCapacity,
    DcLoad,
    EntryDecisions,
    EntryInputs,
    MigrationDecisions,
    MigrationInputs,
    MigrationTime,
    MultiUserInputs,
    Params,
    Reason,
    Sla,
    decide_entry,
    decide_migration,
    decide_multi_user,
    placement,
    rank_entries,
)
from pacao.optimize.assign import InfeasibleError

log = logging.getLogger("pacao.controller")
IN_FLIGHT = "a plan of the user is approved or under way"


def params_from_config(cfg: ControllerConfig) -> Params:
    p = cfg.policy
    return Params(
        min_dwell_s=p.min_dwell_s,
        min_gain=p.min_gain,
        min_gain_ratio=p.min_gain_ratio,
        cooldown_s=p.cooldown_s,
        migration_cost_weight=p.migration_cost_weight,
        max_migrations_per_dc=p.max_migrations_per_dc,
        max_migrations_total=p.max_migrations_total,
        entry_metric=p.entry_metric,
    )


@dataclass(frozen=True, kw_only=True)
class EntrySwitchStep:
    """Re-register ``vm_eid`` with ``priorities`` (``rloc`` first); SMR ``notify``."""

    kind: ClassVar[str] = "EntrySwitch"
    user: str | None = None  # set in a multi-user plan (the plan's user is "*")
    vm_eid: str
    rloc: str
    priorities: dict[str, int]
    notify: list[str]

    def params(self) -> dict[str, Any]:
        """The stored action parameters (``user`` only where set)."""
        doc = asdict(self)
        if self.user is None:
            del doc["user"]
        return doc


@dataclass(frozen=True, kw_only=True)
class VmMigrationStep:
    """Live-migrate ``vm`` from ``src`` to ``dst`` as hypervisor job ``job_id``."""

    kind: ClassVar[str] = "VmMigration"
    user: str | None = None  # set in a multi-user plan
    vm: str
    src: str
    dst: str
    bandwidth_mbps: float
    max_downtime_ms: float
    job_id: str

    def params(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.user is None:
            del doc["user"]
        return doc


Step = EntrySwitchStep | VmMigrationStep


def _notify(u: User) -> list[str]:
    """Where a switch is signalled: the user's xTR and EID, those it has."""
    return [x for x in (u.rloc, u.eid) if x is not None]


def _num(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


class Planner:
    """Step 1, Step 2 and the multi-user mode over the users' state and window arrays."""

    def __init__(
        self,
        cfg: ControllerConfig,
        store: Store,
        clock: Clock,
        monitor: Monitor,
        state: UserStates,
        metrics: Metrics,
        dispatch: Callable[[str], Awaitable[None]],
        dry_run: bool = False,
        manual: bool = False,
    ) -> None:
        self.store, self.clock, self.monitor = store, clock, monitor
        self.state, self.metrics, self.dispatch = state, metrics, dispatch
        self.dry_run, self.manual = dry_run, manual
        self.sla_now: dict[str, bool] = {}  # last Step 1 answer per user (web view, status)
        self.step2_due: dict[str, float] = {}
        self.last_stats: list[WindowStat] = []
        self._stored = "plan stored"
        self.last_known = LastKnown(cfg.policy.carry_windows * cfg.timers.s1)
        self.configure(cfg)

    def configure(self, cfg: ControllerConfig) -> None:
        """Everything derived from the parts of the config a reload may change."""
        self.cfg = cfg
        self.vms = cfg.vm_index()
        self.params = params_from_config(cfg)
        self.windows = Windows(cfg)
        self.last_known.max_age_s = cfg.policy.carry_windows * cfg.timers.s1

    def new_term(self) -> None:
        """Forget the previous term's pending Step 2 and carried windows."""
        self.step2_due = {}
        self.last_known = LastKnown(self.cfg.policy.carry_windows * self.cfg.timers.s1)

    # -- Step 1 --------------------------------------------------------------------
    async def step1(self, now: float) -> list[str]:
        """Close the S' window, decide entries for every user, store and dispatch plans."""
        t0 = time.perf_counter()
        w = self.windows
        stats = self.last_known.fill(self.monitor.window(now - self.cfg.timers.s1, now), now)
        self.last_stats = stats
        for s in stats:
            if s.path == USER_XTR:
                if s.rtt_ms is not None:
                    self.metrics.probe_rtt.labels(user=s.subject, rloc=s.rloc).set(
                        s.rtt_ms / 1000.0
                    )
                self.metrics.probe_availability.labels(user=s.subject, rloc=s.rloc).set(
                    s.availability
                )
        if not w.users:
            return []
        arr = w.arrays(stats, self.state)
        last = np.array([self.state[u.name].switched() for u in w.users])
        dec = decide_entry(
            now,
            EntryInputs(
                values=arr.through,
                usable=arr.through_ok,
                current=w.current_idx(self.state),
                sla=w.sla,
                last_switch=last,
                known=arr.through_known,
                sublink=arr.sub,
            ),
            self.params,
        )
        created = []
        busy = busy_users(self.store)
        free = np.array([u.name not in busy for u in w.users], dtype=bool)
        together = self._multi_user_batch(dec, free)
        if together.size:
            pid = await self._multi_user_plan(together, arr, dec, now)
            if pid is None:
                together = together[:0]
            else:
                created.append(pid)
        planned = set(together.tolist())
        for i, u in enumerate(w.users):
            if dec.reason[i] != Reason.NO_DATA:
                self.metrics.sla_met.labels(user=u.name).set(1.0 if dec.sla_met[i] else 0.0)
                self.sla_now[u.name] = bool(dec.sla_met[i])
            if dec.step2[i]:
                self.metrics.sla_violations.labels(user=u.name).inc()
            if not free[i]:
                log.info("step 1 holds", extra={"user": u.name, "reason": IN_FLIGHT})
                continue
            if dec.step2[i] and i not in planned:
                self.step2_due.setdefault(u.name, now + self.cfg.timers.s2)
            if i in planned:
                continue
            if dec.switch[i]:
                created.append(await self._entry_plan(i, arr, dec, now))
            elif not dec.sla_met[i]:
                log.info(
                    "step 1 holds",
                    extra={"user": u.name, "reason": REASON_TEXT[Reason(int(dec.reason[i]))]},
                )
        self.metrics.decision_seconds.labels(step="1").observe(time.perf_counter() - t0)
        self.metrics.set_plans(self.store.plan_counts())
        return created

    async def _entry_plan(self, i: int, arr: WindowArrays, dec: EntryDecisions, now: float) -> str:
        w = self.windows
        u = w.users[i]
        crit: dict[str, tuple[float, float]] = {
            k: (u.sla[k].weight, u.sla[k].max) for k in CRITERIA if k in u.sla
        }
        cols = [CRITERIA.index(k) for k in crit]
        best = int(dec.best[i])
        chosen = w.rlocs[best]
        ranking = rank_entries(best, w.rlocs, arr.through[i][:, cols], arr.through_ok[i], crit)
        step = EntrySwitchStep(
            vm_eid=self.vms[u.vm].eid,
            rloc=chosen,
            priorities=priority_table(chosen, w.rlocs, ranking),
            notify=_notify(u),
        )
        pid = self._store_plan(
            u.name,
            "entry_switch",
            REASON_TEXT[Reason.SWITCH],
            {
                "window_end": now,
                "s1": self.cfg.timers.s1,
                "from": self.state[u.name].entry,
                "through": w.user_values(i, arr.through[i]),
                # entries without samples this window, decided on their last aggregate
                "carried": sorted(
                    {
                        s.rloc
                        for s in self.last_stats
                        if s.path == USER_XTR and s.subject == u.name and s.end < now - 1e-9
                    }
                ),
            },
            {
                "current_objective": _num(dec.current_objective[i]),
                "best_objective": _num(dec.best_objective[i]),
                "ranking": ranking.to_dict(),
            },
            [step],
        )
        log.info(
            self._stored, extra={"plan": pid, "user": u.name, "kind": "entry_switch", "to": chosen}
        )
        await self.dispatch(pid)
        return pid

    # -- Congestion-aware multi-user mode ---------------------------------------------
    def _multi_user_batch(self, dec: EntryDecisions, free: np.ndarray) -> np.ndarray:
        """Users decided together this window: the violators with an RTT bound and no
        plan in flight, when the mode says so (``always``, or ``auto`` with at least
        ``min_users`` of them)."""
        mu = self.cfg.multi_user
        rows = np.flatnonzero(dec.step2 & free & np.isfinite(self.windows.sla.bounds[:, 0]))
        if mu.mode == "off" or rows.size == 0:
            return rows[:0]
        if mu.mode == "auto" and rows.size < mu.min_users:
            return rows[:0]
        return rows

    async def _multi_user_plan(
        self, idx: np.ndarray, arr: WindowArrays, dec: EntryDecisions, now: float
    ) -> str | None:
        """Solve (4)-(9) for the users ``idx`` and store one plan with every action it
        implies; None (per-user decisions instead) when they do not fit."""
        mu = self.cfg.multi_user
        w = self.windows
        n_dc = len(w.dcs)
        sla = Sla(w.sla.weights[idx], w.sla.bounds[idx])
        pv, pu, entry = placement(arr.sub[idx], arr.sub_ok[idx], w.rloc_dc, n_dc, sla)
        names = [w.users[int(i)].name for i in idx]
        vms = [self.vms[w.users[int(i)].vm] for i in idx]
        host = np.array([w.dcs.index(self.state[n].host) for n in names], dtype=np.int64)
        existing = self.state.vms_per_dc(self.cfg, w.dcs, {v.name for v in vms})
        # In a thread with a time limit of half a window by default: the solve is CPU-bound
        # and the event loop keeps serving probes and the API meanwhile.
        limit = mu.time_limit_s if mu.time_limit_s is not None else self.cfg.timers.s1 / 2
        try:
            md = await asyncio.to_thread(
                decide_multi_user,
                MultiUserInputs(
                    rtt_ms=pv[..., CRITERIA.index("rtt")],
                    usable=pu,
                    bound_ms=sla.bounds[:, CRITERIA.index("rtt")],
                    host=host,
                    # Pinned VMs and VMs within their cooldown stay where they are.
                    pinned=np.array(
                        [
                            v.pinned or now - self.state[n].migrated() < self.params.cooldown_s
                            for v, n in zip(vms, names, strict=True)
                        ]
                    ),
                    user_ids=names,
                ),
                DcCapacity(
                    capacity=np.array(self.cfg.user_capacity(), dtype=float),
                    existing=existing,
                    latency=self.cfg.latency_function(),
                    names=w.dcs,
                ),
                solver=mu.solver,
                batch_size=mu.batch_size,
                time_limit=limit,
                integer_penalty=mu.integer_penalty,
            )
        except InfeasibleError as exc:
            log.warning("multi-user mode infeasible, deciding per user", extra={"error": str(exc)})
            return None
        migrations: list[VmMigrationStep] = []
        switches: list[EntrySwitchStep] = []
        for r, i in enumerate(idx.tolist()):
            u, vm, src, dst = w.users[i], vms[r], int(host[r]), int(md.dc[r])
            if dst != src:
                migrations.append(self._migration(u, vm, src, dst, now, user=u.name))
                chosen = w.rlocs[int(entry[r, dst])]
            elif dec.switch[i]:
                chosen = w.rlocs[int(dec.best[i])]
            else:
                continue
            switches.append(
                EntrySwitchStep(
                    user=u.name,
                    vm_eid=vm.eid,
                    rloc=chosen,
                    priorities=priority_table(chosen, w.rlocs),
                    notify=_notify(u),
                )
            )
        # Moves out of a DC that also receives users go first: the DC never holds more
        # VMs mid-plan than before or after it.
        receiving = {m.dst for m in migrations}
        migrations.sort(key=lambda m: m.src not in receiving)
        pid = self._store_plan(
            MULTI_USER,
            "multi_user",
            f"{idx.size} users violated their SLA in one S' window: congestion-aware "
            "assignment (4)-(9)",
            {"window_end": now, "s1": self.cfg.timers.s1, "users": names},
            {
                "solver": md.solver,
                "objective": _num(md.objective),
                "lower_bound": None if md.lower_bound is None else _num(md.lower_bound),
                "seconds": round(md.seconds, 6),
                "assignment": {n: w.dcs[int(d)] for n, d in zip(names, md.dc, strict=True)},
                "dc_load": dict(zip(w.dcs, md.load.tolist(), strict=True)),
                "dc_capacity": dict(zip(w.dcs, md.capacity.tolist(), strict=True)),
                "independent_load": dict(zip(w.dcs, md.independent_load.tolist(), strict=True)),
                "dc_congestion_ms": dict(zip(w.dcs, md.congestion_ms.tolist(), strict=True)),
            },
            [*migrations, *switches],
        )
        log.info(
            self._stored,
            extra={"plan": pid, "kind": "multi_user", "users": len(names), "solver": md.solver},
        )
        await self.dispatch(pid)
        return pid

    def _migration(
        self,
        u: User,
        vm: VirtualMachine,
        src: int,
        dst: int,
        now: float,
        user: str | None = None,
    ) -> VmMigrationStep:
        """The live migration of ``vm`` between DC indexes; the job id is the user, the
        VM and the decision time (one job per decision, resumed after a restart)."""
        w = self.windows
        return VmMigrationStep(
            user=user,
            vm=vm.name,
            src=w.dcs[src],
            dst=w.dcs[dst],
            bandwidth_mbps=float(w.bandwidth[src, dst]),
            max_downtime_ms=self.cfg.policy.max_downtime_ms,
            job_id=f"{u.name}-{vm.name}-{now:.3f}",
        )

    # -- Step 2 --------------------------------------------------------------------
    async def step2(self, now: float) -> list[str]:
        """For users whose S'' is over: still violated -> VM placement and migration plans."""
        due = [u for u, t in self.step2_due.items() if t <= now + 1e-9]
        if not due:
            return []
        t0 = time.perf_counter()
        for name in due:
            del self.step2_due[name]
        busy = busy_users(self.store)
        for name in [n for n in due if n in busy]:
            log.info("step 2 holds", extra={"user": name, "reason": IN_FLIGHT})
        due = [n for n in due if n not in busy]
        if not due:
            return []
        w = self.windows
        stats = self.last_known.fill(self.monitor.window(now - self.cfg.timers.s2, now), now)
        arr = w.arrays(stats, self.state)
        idx = np.array([i for i, u in enumerate(w.users) if u.name in due], dtype=np.int64)
        n_dc = len(w.dcs)
        sla = Sla(w.sla.weights[idx], w.sla.bounds[idx])
        cur = w.current_idx(self.state)[idx]
        rows = np.arange(idx.size)
        safe = np.where(cur >= 0, cur, 0)
        cur_vals = arr.through[idx, safe]
        cur_ok = (cur >= 0) & arr.through_ok[idx, safe]
        pv, pu, entry = placement(arr.sub[idx], arr.sub_ok[idx], w.rloc_dc, n_dc, sla)
        vms = [self.vms[w.users[i].vm] for i in idx]
        host = np.array(
            [w.dcs.index(self.state[w.users[i].name].host) for i in idx], dtype=np.int64
        )
        demand = np.array([[v.memory_mib, v.vcpus] for v in vms], dtype=float)
        residual = self.state.residual(self.cfg, w.dcs)
        mig_s = MigrationTime(demand[:, 0], host, w.bandwidth, self.cfg.policy.dirty_factor)
        per_dc, total = migrations_under_way(self.store, w.dcs)
        stay = np.array(
            [w.users[i].expected_stay_s or self.cfg.policy.expected_stay_s for i in idx]
        )
        last = np.array([self.state[w.users[i].name].migrated() for i in idx])
        pinned = np.array([v.pinned for v in vms])
        dec = decide_migration(
            now,
            MigrationInputs(
                current_values=cur_vals,
                current_usable=cur_ok,
                place_values=pv,
                place_usable=pu,
                host=host,
                sla=sla,
                demand=demand,
                pinned=pinned,
                last_migration=last,
                expected_stay_s=stay,
                migration_s=mig_s,
            ),
            DcLoad(residual=residual, ongoing_per_dc=per_dc, ongoing_total=total),
            self.params,
        )
        created = []
        for r in rows:
            u = w.users[int(idx[r])]
            if dec.migrate[r]:
                dst = int(dec.best[r])
                created.append(
                    await self._migration_plan(
                        u, vms[r], int(host[r]), dst, int(entry[r, dst]), dec, int(r), now
                    )
                )
            else:
                log.info(
                    "step 2 holds",
                    extra={"user": u.name, "reason": REASON_TEXT[Reason(int(dec.reason[r]))]},
                )
        self.metrics.decision_seconds.labels(step="2").observe(time.perf_counter() - t0)
        self.metrics.set_plans(self.store.plan_counts())
        return created

    async def _migration_plan(
        self,
        u: User,
        vm: VirtualMachine,
        src: int,
        dst: int,
        entry: int,
        dec: MigrationDecisions,
        r: int,
        now: float,
    ) -> str:
        w = self.windows
        new_entry = w.rlocs[entry]
        steps: list[Step] = [
            self._migration(u, vm, src, dst, now),
            EntrySwitchStep(
                vm_eid=vm.eid,
                rloc=new_entry,
                priorities=priority_table(new_entry, w.rlocs),
                notify=_notify(u),
            ),
        ]
        pid = self._store_plan(
            u.name,
            "vm_migration",
            REASON_TEXT[Reason.MIGRATE],
            {"window_end": now, "s2": self.cfg.timers.s2, "from": w.dcs[src]},
            {
                "current_objective": _num(dec.current_objective[r]),
                "best_objective": _num(dec.best_objective[r]),
                "migration_s": _num(dec.migration_s[r]),
            },
            steps,
        )
        log.info(
            self._stored,
            extra={"plan": pid, "user": u.name, "kind": "vm_migration", "to": w.dcs[dst]},
        )
        await self.dispatch(pid)
        return pid

    # -- plans ----------------------------------------------------------------------
    def _store_plan(
        self,
        user: str,
        kind: str,
        reason: str,
        inputs: dict[str, Any],
        scores: dict[str, Any],
        steps: list[Step],
    ) -> str:
        """Persist a decision before acting. Waiting for a manual approval, a repeat of
        the pending decision refreshes that plan (same id, new expiry) instead of
        superseding it, so the plan an operator is looking at stays approvable."""
        pid, refreshed = self.store.propose_plan(
            user,
            kind,
            reason,
            inputs,
            scores,
            [(s.kind, s.params()) for s in steps],
            dry_run=self.dry_run,
            expires=self.clock.now() + self.cfg.approval.expiry_s,
            refresh=self.manual,
        )
        self._stored = "plan refreshed" if refreshed else "plan stored"
        return pid
