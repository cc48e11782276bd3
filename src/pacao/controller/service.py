"""The controller service: one asyncio process running monitoring, decisions, plans and the API.

Every S' (timers.s1) it closes a monitoring window and runs Step 1 for all
users at once (:func:`pacao.controller.policy.decide_entry`); users whose SLA
was violated get Step 2 S'' (timers.s2) later, over the samples the xTRs took
every S''' (timers.s3) meanwhile. Decisions become stored plans first, then
actions. Time comes only from the injected :class:`~pacao.clock.Clock`.

With ``ha.enabled`` (PostgreSQL) several processes run the same config: the one
holding the lease in the database leads (one *term* per epoch: the loops, the plans,
the recovery); the others follow, serve reads and refuse writes (docs/controller.md,
"High availability").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from pacao.clock import Clock, SystemClock
from pacao.controller import retention
from pacao.controller.ams import Ams
from pacao.controller.config import ControllerConfig, load_config
from pacao.controller.drivers import load_driver
from pacao.controller.lifecycle import IN_FLIGHT as PLANS_IN_FLIGHT
from pacao.controller.lifecycle import ActionState, PlanState
from pacao.controller.metrics import Metrics
from pacao.controller.monitoring import (
    USER_XTR,
    XTR_VM,
    LastKnown,
    Monitor,
    SamplesIngested,
    Source,
    SourceError,
    WindowStat,
    sources_from_config,
)
from pacao.controller.plans import Context, Executor
from pacao.controller.policy import (
    REASON_TEXT,
    MigrationTime,
    Params,
    Reason,
    Sla,
    combine_paths,
    decide_entry,
    decide_migration,
    decide_multi_user,
    placement,
    rank_entries,
)
from pacao.controller.priorities import priority_table
from pacao.controller.storage import Fence, NotLeader, Store, check_storage
from pacao.errors import InputError
from pacao.optimize.assign import InfeasibleError

log = logging.getLogger("pacao.controller")
CRITERIA = ("rtt", "jitter", "loss")
#: The user column of a multi-user plan (no user name can start with "*").
MULTI_USER = "*"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    _std: ClassVar[frozenset[str]] = frozenset(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in self._std and k not in doc:
                doc[k] = v
        return json.dumps(doc, default=str)


def setup_logging(stream: Any = None, level: str = "info") -> None:
    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(JsonFormatter())
    root = logging.getLogger("pacao")
    root.handlers[:] = [h]
    root.setLevel(level.upper())
    root.propagate = False


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


class Controller:
    """Decision cycles and plan dispatch over a config, a store, a monitor and drivers."""

    def __init__(
        self,
        cfg: ControllerConfig,
        store: Store,
        sources: Sequence[Source],
        mapping: Any,
        hypervisor: Any,
        clock: Clock,
        dry_run: bool = False,
        manual: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg, self.store, self.clock = cfg, store, clock
        self.dry_run, self.manual = dry_run, manual
        self.metrics = metrics or Metrics()
        self.monitor = Monitor(cfg, store, sources)
        self.monitor.subscribers.append(self._on_event)
        self.mapping, self.hypervisor = mapping, hypervisor
        self.executor = Executor(
            store,
            Context(mapping, hypervisor, clock, poll_s=min(1.0, cfg.timers.s3)),
            on_done=self._plan_done,
        )
        self.running: dict[str, asyncio.Task[str]] = {}
        self.ams = Ams(cfg, store, clock)  # application mobility notifications (docs/mec.md)
        self.executor.hooks.append(self.ams.on_action)
        self.sla_now: dict[str, bool] = {}  # last Step 1 answer per user (web view, status)
        owner = cfg.rloc_owner()
        self.rlocs = sorted(owner)  # candidate order = name order = the kernel's tie-break
        self.dcs = [d.name for d in cfg.dcs]
        self.rloc_dc = np.array([self.dcs.index(owner[r]) for r in self.rlocs], dtype=np.int64)
        self._configure(cfg)
        self.state: dict[str, dict[str, Any]] = {}
        #: plans being resumed after a restart (empty once recovery ended): /readyz is
        #: 503 while it is not empty, and :meth:`recover` runs in the background
        self.recovering: set[str] = set()
        self.in_recovery = False
        self.step2_due: dict[str, float] = {}
        self.last_stats: list[WindowStat] = []
        self._stored = "plan stored"
        #: the config file, for a reload (SIGHUP, POST /config/reload); None: not from a file
        self.config_path: Path | None = None
        #: the API's bearer token (a reload may change it)
        self.api_token: str | None = None
        #: replicas (ha.enabled): this process's lease state; None: a single controller
        self.fence: Fence | None = None
        self.leadership: Leadership | None = None
        #: `run --listen`: replaces api.listen of the file (several replicas on one host)
        self.listen_override: str | None = None
        #: called with the exception of a plan task that failed outside the drivers (the
        #: store went away): a replica then ends its term and a new one recovers the plan
        self.on_plan_error: Callable[[BaseException], None] | None = None

    def _configure(self, cfg: ControllerConfig) -> None:
        """Everything derived from the parts of the config a reload may change."""
        self.cfg = cfg
        self.monitor.cfg = cfg
        self.params = params_from_config(cfg)
        self.executor.ctx.poll_s = min(1.0, cfg.timers.s3)
        self.users = list(cfg.users)
        n, k = len(self.users), len(CRITERIA)
        w, b = np.zeros((n, k)), np.full((n, k), np.inf)
        for i, u in enumerate(self.users):
            for j, name in enumerate(CRITERIA):
                if name in u.sla:
                    w[i, j], b[i, j] = u.sla[name].weight, u.sla[name].max
        self.sla = Sla(w, b)
        self.bandwidth = np.full((len(self.dcs), len(self.dcs)), cfg.policy.bandwidth_mbps)
        self.inter_rtt: dict[tuple[int, int], float] = {}
        for link in cfg.policy.links:
            a, c = self.dcs.index(link.a), self.dcs.index(link.b)
            if link.bandwidth_mbps is not None:
                self.bandwidth[a, c] = self.bandwidth[c, a] = link.bandwidth_mbps
            if link.rtt_ms is not None:
                self.inter_rtt[(a, c)] = self.inter_rtt[(c, a)] = link.rtt_ms
        carry = cfg.policy.carry_windows * cfg.timers.s1
        if getattr(self, "last_known", None) is None:
            self.last_known = LastKnown(carry)
        else:
            self.last_known.max_age_s = carry

    def reload(self, path: Path | None = None) -> list[str]:
        """Re-read the config file; validated in full before it replaces the running one.
        Returns the top-level keys that changed. Raises InputError (and changes nothing)
        on a bad file or on a change that needs a restart (see RESTART_KEYS)."""
        path = path or self.config_path
        if path is None:
            raise InputError("config", None, "this controller was not started from a file")
        new = with_listen(load_config(path), self.listen_override)
        restart_only(self.cfg, new)
        token = new.api_token() if self.api_token is not None else None
        old = self.cfg.model_dump(mode="json")
        changed = [k for k, v in new.model_dump(mode="json").items() if old.get(k) != v]
        self._configure(new)
        if token is not None:
            self.api_token = token
        log.info("config reloaded", extra={"changed": changed, "file": str(path)})
        return changed

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, SamplesIngested):
            self.metrics.samples.labels(xtr=ev.source).inc(ev.count)
        elif isinstance(ev, SourceError):
            log.warning(
                "measurement source problem", extra={"source": ev.source, "error": ev.error}
            )

    # -- per-user state ------------------------------------------------------
    def load_state(self, write: bool = True) -> None:
        """Per-user state from the store; ``write=False`` (a follower's view) does not
        store the initial state of a user the database does not know yet."""
        for u in self.users:
            st = self.store.get_state(f"user/{u.name}")
            if st is None:
                vm = self.cfg.vm(u.vm)
                st = {
                    "entry": self.cfg.dc(vm.host).rlocs[0],
                    "host": vm.host,
                    "last_switch": None,
                    "last_migration": None,
                }
                if write:
                    self.store.put_state(f"user/{u.name}", st)
            self.state[u.name] = dict(st)

    # -- replicas -------------------------------------------------------------
    def enable_fencing(self, fence: Fence) -> None:
        """Make every store write and every driver action of this process check ``fence``."""
        self.fence = fence
        self.store.fence = fence

        async def check() -> None:
            self.store.check_fence()

        self.executor.ctx.fence = check
        for drv in (self.mapping, self.hypervisor):
            drv.fence = check

    def new_term(self) -> None:
        """Forget what the previous term had in memory: the next leader term starts from
        the database, as a restarted process does."""
        self.running = {}
        self.step2_due = {}
        self.recovering = set()
        self.in_recovery = False
        self.last_known = LastKnown(self.cfg.policy.carry_windows * self.cfg.timers.s1)

    def _save(self, user: str) -> None:
        self.store.put_state(f"user/{user}", self.state[user])

    def _plan_done(self, plan: dict[str, Any], final: PlanState) -> None:
        now = self.clock.now()
        touched: set[str] = set()
        for a in plan["actions"]:
            # A multi-user plan names each action's user; the others are the plan's.
            st = self.state.get(a["params"].get("user", plan["user"]))
            if st is None:
                continue
            touched.add(a["params"].get("user", plan["user"]))
            if a["kind"] == "VmMigration" and a["state"] in (
                ActionState.FAILED,
                ActionState.REVERTED,
            ):
                st["last_migration"] = now  # cooldown after a failed migration too
            if a["state"] != ActionState.SUCCEEDED:
                continue
            if a["kind"] == "EntrySwitch":
                st["entry"], st["last_switch"] = a["params"]["rloc"], now
            elif a["kind"] == "VmMigration":
                st["host"], st["last_migration"] = a["params"]["dst"], now
                if a["started"] is not None and a["finished"] is not None:
                    self.metrics.migration_seconds.observe(a["finished"] - a["started"])
        failed = final == PlanState.FAILED
        if plan["kind"] == "vm_migration" and failed and plan["user"] in self.state:
            self.state[plan["user"]]["last_migration"] = now
            touched.add(plan["user"])
        for user in touched:
            self._save(user)
        self.metrics.set_plans(self.store.plan_counts())

    def _busy(self) -> set[str]:
        """Users with a plan approved or under way: their entry/host state is about to
        change, so no new plan for them until it ends (two plans of one user would race
        on the same mapping, and each window would add one while a slow action runs)."""
        out: set[str] = set()
        for p in self.store.plans(state=PLANS_IN_FLIGHT, limit=100000):
            if p["user"] == MULTI_USER:
                out.update(str(a["params"].get("user")) for a in p["actions"])
            else:
                out.add(str(p["user"]))
        return out

    @staticmethod
    def _t(v: Any) -> float:
        return -math.inf if v is None else float(v)

    # -- arrays from a window ----------------------------------------------------
    def arrays(self, stats: Sequence[WindowStat]) -> dict[str, Any]:
        """Sublink and through-entry metrics (users, RLOCs, criteria) from window stats."""
        n, c, k = len(self.users), len(self.rlocs), len(CRITERIA)
        uidx = {u.name: i for i, u in enumerate(self.users)}
        ridx = {r: j for j, r in enumerate(self.rlocs)}
        sub = np.full((n, c, k), np.nan)
        seen = np.zeros((n, c), dtype=bool)  # a user<->xTR aggregate exists (even all lost)
        xv: dict[tuple[str, int], list[tuple[str, np.ndarray]]] = {}
        for s in stats:
            vals = None
            if s.rtt_ms is not None and s.availability > 0:
                vals = np.array([s.rtt_ms, s.jitter_ms or 0.0, 1.0 - s.availability])
            if s.path == USER_XTR and s.subject in uidx and s.rloc in ridx:
                seen[uidx[s.subject], ridx[s.rloc]] = True
                if vals is not None:
                    sub[uidx[s.subject], ridx[s.rloc]] = vals
            elif s.path == XTR_VM and vals is not None:
                xv.setdefault((s.subject, self.dcs.index(s.xtr)), []).append((s.peer, vals))
        sub_ok = np.isfinite(sub).all(axis=-1)
        leg = np.full((n, c, k), np.nan)  # entry xTR <-> VM
        for i, u in enumerate(self.users):
            host = self.dcs.index(self.state[u.name]["host"])
            # A direct probe of the VM (peer "") or a probe of its host DC's locator.
            toward = {""} | set(self.cfg.dcs[host].rlocs)
            for j in range(c):
                d = int(self.rloc_dc[j])
                got = [v for peer, v in xv.get((u.vm, d), []) if peer in toward]
                if got:
                    leg[i, j] = got[0]
                elif d == host:
                    leg[i, j] = 0.0
                elif (d, host) in self.inter_rtt:
                    leg[i, j] = [self.inter_rtt[(d, host)], 0.0, 0.0]
        through = combine_paths(sub, leg, CRITERIA)
        return {
            "sub": sub,
            "sub_ok": sub_ok,
            "through": through,
            "through_ok": np.isfinite(through).all(axis=-1),
            # measured (answered or lost) through each entry: not usable but known = down
            "through_known": seen & np.isfinite(leg).all(axis=-1),
        }

    def _current_idx(self) -> np.ndarray:
        ridx = {r: j for j, r in enumerate(self.rlocs)}
        return np.array(
            [ridx.get(self.state[u.name]["entry"], -1) for u in self.users], dtype=np.int64
        )

    def _user_values(self, i: int, row: np.ndarray) -> dict[str, Any]:
        u = self.users[i]
        out: dict[str, Any] = {}
        for j, r in enumerate(self.rlocs):
            v = row[j]
            out[r] = (
                None
                if not np.isfinite(v).all()
                else {name: round(float(v[CRITERIA.index(name)]), 6) for name in u.sla}
            )
        return out

    # -- Step 1 --------------------------------------------------------------------
    async def step1(self, now: float) -> list[str]:
        """Close the S' window, decide entries for every user, store and dispatch plans."""
        t0 = time.perf_counter()
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
        if not self.users:
            return []
        arr = self.arrays(stats)
        last = np.array([self._t(self.state[u.name]["last_switch"]) for u in self.users])
        dec = decide_entry(
            now,
            arr["through"],
            arr["through_ok"],
            self._current_idx(),
            self.sla,
            last,
            self.params,
            known=arr["through_known"],
            sublink=arr["sub"],
        )
        created = []
        busy = self._busy()
        free = np.array([u.name not in busy for u in self.users], dtype=bool)
        together = self._multi_user_batch(dec, free)
        if together.size:
            pid = await self._multi_user_plan(together, arr, dec, now)
            if pid is None:
                together = together[:0]
            else:
                created.append(pid)
        planned = set(together.tolist())
        for i, u in enumerate(self.users):
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

    async def _entry_plan(self, i: int, arr: dict[str, Any], dec: Any, now: float) -> str:
        u = self.users[i]
        crit: dict[str, tuple[float, float]] = {
            k: (u.sla[k].weight, u.sla[k].max) for k in CRITERIA if k in u.sla
        }
        cols = [CRITERIA.index(k) for k in crit]
        ranking = rank_entries(self.rlocs, arr["through"][i][:, cols], arr["through_ok"][i], crit)
        chosen = self.rlocs[int(dec.best[i])]
        prio = priority_table(chosen, self.rlocs, ranking)
        vm = self.cfg.vm(u.vm)
        params = {
            "vm_eid": vm.eid,
            "rloc": chosen,
            "priorities": prio,
            "notify": [x for x in (u.rloc, u.eid) if x is not None],
        }
        pid = self._store_plan(
            u.name,
            "entry_switch",
            REASON_TEXT[Reason.SWITCH],
            {
                "window_end": now,
                "s1": self.cfg.timers.s1,
                "from": self.state[u.name]["entry"],
                "through": self._user_values(i, arr["through"][i]),
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
            [("EntrySwitch", params)],
        )
        log.info(
            self._stored, extra={"plan": pid, "user": u.name, "kind": "entry_switch", "to": chosen}
        )
        await self.dispatch(pid)
        return pid

    # -- Congestion-aware multi-user mode ---------------------------------------------
    def _multi_user_batch(self, dec: Any, free: np.ndarray) -> np.ndarray:
        """Users decided together this window: the violators with an RTT bound and no
        plan in flight, when the mode says so (``always``, or ``auto`` with at least
        ``min_users`` of them)."""
        mu = self.cfg.multi_user
        rows = np.flatnonzero(dec.step2 & free & np.isfinite(self.sla.bounds[:, 0]))
        if mu.mode == "off" or rows.size == 0:
            return rows[:0]
        if mu.mode == "auto" and rows.size < mu.min_users:
            return rows[:0]
        return rows

    async def _multi_user_plan(
        self, idx: np.ndarray, arr: dict[str, Any], dec: Any, now: float
    ) -> str | None:
        """Solve (4)-(9) for the users ``idx`` and store one plan with every action it
        implies; None (per-user decisions instead) when they do not fit."""
        mu = self.cfg.multi_user
        n_dc = len(self.dcs)
        sla = Sla(self.sla.weights[idx], self.sla.bounds[idx])
        pv, pu, entry = placement(arr["sub"][idx], arr["sub_ok"][idx], self.rloc_dc, n_dc, sla)
        names = [self.users[int(i)].name for i in idx]
        vms = [self.cfg.vm(self.users[int(i)].vm) for i in idx]
        host = np.array([self.dcs.index(self.state[n]["host"]) for n in names], dtype=np.int64)
        existing = np.zeros(n_dc)
        moving = {v.name for v in vms}
        for vm in self.cfg.vms:
            if vm.name not in moving:
                existing[self.dcs.index(self._host_of(vm.name))] += 1
        # In a thread with a time limit of half a window by default: the solve is CPU-bound
        # and the event loop keeps serving probes and the API meanwhile.
        limit = mu.time_limit_s if mu.time_limit_s is not None else self.cfg.timers.s1 / 2
        try:
            md = await asyncio.to_thread(
                decide_multi_user,
                pv[..., CRITERIA.index("rtt")],
                pu,
                sla.bounds[:, CRITERIA.index("rtt")],
                host,
                # Pinned VMs and VMs within their cooldown stay where they are.
                np.array(
                    [
                        v.pinned
                        or now - self._t(self.state[n]["last_migration"]) < self.params.cooldown_s
                        for v, n in zip(vms, names, strict=True)
                    ]
                ),
                np.array(self.cfg.user_capacity(), dtype=float),
                existing,
                self.cfg.latency_function(),
                mu.solver,
                batch_size=mu.batch_size,
                time_limit=limit,
                integer_penalty=mu.integer_penalty,
                dc_names=self.dcs,
                user_ids=names,
            )
        except InfeasibleError as exc:
            log.warning("multi-user mode infeasible, deciding per user", extra={"error": str(exc)})
            return None
        migrations: list[tuple[str, dict[str, Any]]] = []
        switches: list[tuple[str, dict[str, Any]]] = []
        for r, i in enumerate(idx.tolist()):
            u, vm, src, dst = self.users[i], vms[r], int(host[r]), int(md.dc[r])
            notify = [x for x in (u.rloc, u.eid) if x is not None]
            if dst != src:
                migrations.append(
                    (
                        "VmMigration",
                        {
                            "user": u.name,
                            "vm": vm.name,
                            "src": self.dcs[src],
                            "dst": self.dcs[dst],
                            "bandwidth_mbps": float(self.bandwidth[src, dst]),
                            "max_downtime_ms": self.cfg.policy.max_downtime_ms,
                            "job_id": f"{u.name}-{vm.name}-{now:.3f}",
                        },
                    )
                )
                chosen = self.rlocs[int(entry[r, dst])]
            elif dec.switch[i]:
                chosen = self.rlocs[int(dec.best[i])]
            else:
                continue
            prio = priority_table(chosen, self.rlocs)
            switches.append(
                (
                    "EntrySwitch",
                    {
                        "user": u.name,
                        "vm_eid": vm.eid,
                        "rloc": chosen,
                        "priorities": prio,
                        "notify": notify,
                    },
                )
            )
        # Moves out of a DC that also receives users go first: the DC never holds more
        # VMs mid-plan than before or after it.
        receiving = {p["dst"] for _, p in migrations}
        migrations.sort(key=lambda a: a[1]["src"] not in receiving)
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
                "assignment": {n: self.dcs[int(d)] for n, d in zip(names, md.dc, strict=True)},
                "dc_load": dict(zip(self.dcs, md.load.tolist(), strict=True)),
                "dc_capacity": dict(zip(self.dcs, md.capacity.tolist(), strict=True)),
                "independent_load": dict(zip(self.dcs, md.independent_load.tolist(), strict=True)),
                "dc_congestion_ms": dict(zip(self.dcs, md.congestion_ms.tolist(), strict=True)),
            },
            migrations + switches,
        )
        log.info(
            self._stored,
            extra={"plan": pid, "kind": "multi_user", "users": len(names), "solver": md.solver},
        )
        await self.dispatch(pid)
        return pid

    def _host_of(self, vm: str) -> str:
        user = next((u for u in self.users if u.vm == vm), None)
        return str(self.state[user.name]["host"]) if user is not None else self.cfg.vm(vm).host

    # -- Step 2 --------------------------------------------------------------------
    async def step2(self, now: float) -> list[str]:
        """For users whose S'' is over: still violated -> VM placement and migration plans."""
        due = [u for u, t in self.step2_due.items() if t <= now + 1e-9]
        if not due:
            return []
        t0 = time.perf_counter()
        for name in due:
            del self.step2_due[name]
        busy = self._busy()
        for name in [n for n in due if n in busy]:
            log.info("step 2 holds", extra={"user": name, "reason": IN_FLIGHT})
        due = [n for n in due if n not in busy]
        if not due:
            return []
        stats = self.last_known.fill(self.monitor.window(now - self.cfg.timers.s2, now), now)
        arr = self.arrays(stats)
        idx = np.array([i for i, u in enumerate(self.users) if u.name in due], dtype=np.int64)
        n_dc = len(self.dcs)
        sla = Sla(self.sla.weights[idx], self.sla.bounds[idx])
        cur = self._current_idx()[idx]
        rows = np.arange(idx.size)
        safe = np.where(cur >= 0, cur, 0)
        cur_vals = arr["through"][idx, safe]
        cur_ok = (cur >= 0) & arr["through_ok"][idx, safe]
        pv, pu, entry = placement(arr["sub"][idx], arr["sub_ok"][idx], self.rloc_dc, n_dc, sla)
        vms = [self.cfg.vm(self.users[i].vm) for i in idx]
        host = np.array(
            [self.dcs.index(self.state[self.users[i].name]["host"]) for i in idx], dtype=np.int64
        )
        demand = np.array([[v.memory_mib, v.vcpus] for v in vms], dtype=float)
        residual = self._residual()
        mig_s = MigrationTime(demand[:, 0], host, self.bandwidth, self.cfg.policy.dirty_factor)
        per_dc, total = self._ongoing()
        stay = np.array(
            [self.users[i].expected_stay_s or self.cfg.policy.expected_stay_s for i in idx]
        )
        last = np.array([self._t(self.state[self.users[i].name]["last_migration"]) for i in idx])
        pinned = np.array([v.pinned for v in vms])
        dec = decide_migration(
            now,
            cur_vals,
            cur_ok,
            pv,
            pu,
            host,
            sla,
            demand,
            residual,
            pinned,
            last,
            stay,
            mig_s,
            per_dc,
            total,
            self.params,
        )
        created = []
        for r in rows:
            u = self.users[int(idx[r])]
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

    def _residual(self) -> np.ndarray:
        res = np.array([[d.capacity.ram_mib, d.capacity.cpu] for d in self.cfg.dcs], dtype=float)
        for v in self.cfg.vms:
            user = next((u for u in self.users if u.vm == v.name), None)
            host = self.state[user.name]["host"] if user is not None else v.host
            res[self.dcs.index(host)] -= [v.memory_mib, v.vcpus]
        out: np.ndarray = np.maximum(res, 0.0)
        return out

    def _ongoing(self) -> tuple[np.ndarray, int]:
        per = np.zeros(len(self.dcs), dtype=np.int64)
        total = 0
        for p in self.store.plans(state=PLANS_IN_FLIGHT):
            for a in p["actions"]:
                if a["kind"] == "VmMigration" and a["state"] in (
                    ActionState.PENDING,
                    ActionState.ONGOING,
                ):
                    total += 1
                    per[self.dcs.index(a["params"]["src"])] += 1
                    per[self.dcs.index(a["params"]["dst"])] += 1
        return per, total

    async def _migration_plan(
        self, u: Any, vm: Any, src: int, dst: int, entry: int, dec: Any, r: int, now: float
    ) -> str:
        new_entry = self.rlocs[entry]
        prio = priority_table(new_entry, self.rlocs)
        bw = float(self.bandwidth[src, dst])
        steps = [
            (
                "VmMigration",
                {
                    "vm": vm.name,
                    "src": self.dcs[src],
                    "dst": self.dcs[dst],
                    "bandwidth_mbps": bw,
                    "max_downtime_ms": self.cfg.policy.max_downtime_ms,
                    "job_id": f"{u.name}-{vm.name}-{now:.3f}",
                },
            ),
            (
                "EntrySwitch",
                {
                    "vm_eid": vm.eid,
                    "rloc": new_entry,
                    "priorities": prio,
                    "notify": [x for x in (u.rloc, u.eid) if x is not None],
                },
            ),
        ]
        pid = self._store_plan(
            u.name,
            "vm_migration",
            REASON_TEXT[Reason.MIGRATE],
            {"window_end": now, "s2": self.cfg.timers.s2, "from": self.dcs[src]},
            {
                "current_objective": _num(dec.current_objective[r]),
                "best_objective": _num(dec.best_objective[r]),
                "migration_s": _num(dec.migration_s[r]),
            },
            steps,
        )
        log.info(
            self._stored,
            extra={"plan": pid, "user": u.name, "kind": "vm_migration", "to": self.dcs[dst]},
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
        steps: list[tuple[str, dict[str, Any]]],
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
            steps,
            dry_run=self.dry_run,
            expires=self.clock.now() + self.cfg.approval.expiry_s,
            refresh=self.manual,
        )
        self._stored = "plan refreshed" if refreshed else "plan stored"
        return pid

    async def dispatch(self, pid: str) -> None:
        if self.dry_run:
            self.store.move_plan(pid, PlanState.RECOMMENDED, PlanState.SKIPPED, "dry-run")
            return
        if self.manual:
            return  # waits for `pacao controller approve` or POST /plans/{id}/approve
        self.store.approve(pid, by="auto")
        self.start(pid)

    def start(self, pid: str) -> None:
        if pid in self.running and not self.running[pid].done():
            return
        task = asyncio.ensure_future(self.executor.run_plan(pid))
        self.running[pid] = task
        if self.on_plan_error is not None:
            task.add_done_callback(self._plan_task_done)

    def _plan_task_done(self, task: asyncio.Task[str]) -> None:
        if task.cancelled() or self.on_plan_error is None:
            return
        exc = task.exception()
        if exc is not None:
            log.warning("plan stopped by a storage error", extra={"error": str(exc)})
            self.on_plan_error(exc)

    async def recover(self) -> list[str]:
        """After a restart: resume ``ongoing`` plans, start ``approved`` ones and, in auto
        mode, approve the ``recommended`` ones the crash interrupted; all at once (they
        were running side by side before the crash) and in the background, so the API
        and the loops answer meanwhile. Returns the plan ids taken up."""
        ids = self.executor.recoverable(auto=not self.manual and not self.dry_run)
        self.recovering.update(ids)
        try:
            for pid in ids:
                self.start(pid)
            tasks = [self.running[pid] for pid in ids]
            if tasks:
                await asyncio.wait(tasks)
        finally:
            self.recovering.clear()
            self.in_recovery = False
        log.info("recovery done", extra={"plans": len(ids)})
        return ids

    def maintain(self, now: float) -> retention.Pruned:
        """One storage retention pass (roll measurements up into history, then prune)."""
        done = retention.maintain(self.store, self.cfg, now)
        self.metrics.history_rows.inc(done.rolled)
        self.metrics.pruned.labels(table="measurements").inc(done.measurements)
        self.metrics.pruned.labels(table="history").inc(done.history)
        if done.measurements or done.history:
            log.info(
                "storage pruned",
                extra={"measurements": done.measurements, "history": done.history},
            )
        return done

    async def run_approved(self) -> None:
        for pid in self.store.expire_plans(self.clock.now()):
            log.info("plan expired", extra={"plan": pid})
        for p in self.store.plans(state=PlanState.APPROVED):
            self.start(p["id"])

    async def drain(self) -> None:
        """Wait for plans this process started (tests, shutdown)."""
        tasks = [t for t in self.running.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks)


IN_FLIGHT = "a plan of the user is approved or under way"

#: What a reload cannot change in a running controller (the monitor's sources, the
#: decision arrays' shape, the drivers, the database and the API socket are built from
#: them at start): changing one is refused, naming the key, and needs a restart.
RESTART_KEYS = ("dcs", "vms", "drivers", "storage.url", "api.listen")
#: Per-user keys a reload may change; anything else of a user needs a restart.
USER_RELOADABLE = frozenset({"sla", "expected_stay_s"})


def restart_only(old: ControllerConfig, new: ControllerConfig) -> None:
    """Refuse a new config that changes what only a restart can change."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    for key in RESTART_KEYS:
        va: Any = a
        vb: Any = b
        for part in key.split("."):
            va, vb = va.get(part), vb.get(part)
        if va != vb:
            raise InputError(key, "changed", "a reload cannot change it; restart the controller")
    ua, ub = a["users"], b["users"]
    if [u["name"] for u in ua] != [u["name"] for u in ub]:
        raise InputError("users", "changed", "adding, removing or reordering users needs a restart")
    for i, (x, y) in enumerate(zip(ua, ub, strict=True)):
        for k in sorted(set(x) | set(y)):
            if k not in USER_RELOADABLE and x.get(k) != y.get(k):
                raise InputError(
                    f"users[{i}].{k}",
                    "changed",
                    "a reload cannot change it; restart the controller",
                )


def _num(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


class Service:
    """The asyncio process: loops for probing, Step 1, Step 2, approvals and the API."""

    def __init__(self, ctl: Controller, api_server: Any = None, grace_s: float = 2.0) -> None:
        self.ctl = ctl
        self.api_server = api_server
        #: on stop, plans under way get this long to end (succeeded/failed) before they
        #: are cancelled; a cancelled one stays ``ongoing`` and is resumed at the next start
        self.grace_s = grace_s
        self.stop = asyncio.Event()

    async def _every(self, period: Callable[[], float], fn: Any) -> None:
        """Run fn every period() seconds (read each time: a reload may change timers)."""
        clock = self.ctl.clock
        nxt = clock.now() + period()
        while not self.stop.is_set():
            await clock.sleep(nxt - clock.now())
            try:
                await fn(nxt)
            except NotLeader:
                return  # the lease is gone: the term ends
            except Exception:
                log.exception("loop iteration failed")
            nxt += period()

    def reload(self) -> list[str] | None:
        """SIGHUP: reload the config file; a bad one is logged and the old one kept."""
        try:
            return self.ctl.reload()
        except InputError as exc:
            log.error(
                "config reload refused, the running config is kept", extra={"error": str(exc)}
            )
            return None

    async def serve(self) -> None:
        ctl = self.ctl
        api = None
        if self.api_server is not None:
            api = asyncio.ensure_future(self.api_server.serve())
        if ctl.cfg.ha.enabled:
            left = await self._replica()
        else:
            left = await self._term(self.stop)
        if self.api_server is not None:
            self.api_server.should_exit = True
        if api is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await api
        log.info("controller stopped", extra={"plans_left_ongoing": left})

    async def _term(self, until: asyncio.Event) -> int:
        """Lead until ``until`` is set: load the state, resume the plans a previous process
        or leader left, run the loops. Returns how many plans were left under way."""
        ctl = self.ctl

        def t() -> Any:  # read at every tick: a reload may change the timers
            return ctl.cfg.timers

        try:
            ctl.load_state()
            ctl.ams.start()
        except Exception:
            await ctl.ams.stop()
            raise
        # Recovery in the background: a plan under way can be a migration of minutes, and
        # the API, the probes and SIGTERM must not wait for it (/readyz says when it ends).
        ctl.in_recovery = True
        recovery = asyncio.ensure_future(ctl.recover())
        if ctl.on_plan_error is not None:
            recovery.add_done_callback(self._recovery_done)

        async def poll(_: float) -> None:
            await ctl.monitor.poll()

        async def step(now: float) -> None:
            await ctl.step1(now)

        async def step2(now: float) -> None:
            await ctl.step2(now)

        async def approvals(_: float) -> None:
            await ctl.run_approved()

        in_memory = ctl.store.engine.url.database in (None, "", ":memory:")

        async def maintain(now: float) -> None:
            # In a thread: a first pass over a large table must not stall the loops (an
            # in-memory SQLite database exists in its own thread only).
            if in_memory:
                ctl.maintain(now)
            else:
                await asyncio.to_thread(ctl.maintain, now)

        loops: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._every(lambda: t().s3, poll)),
            asyncio.ensure_future(self._every(lambda: t().s1, step)),
            asyncio.ensure_future(self._every(lambda: t().s3, step2)),
            asyncio.ensure_future(self._every(lambda: t().s3, approvals)),
            asyncio.ensure_future(
                self._every(lambda: ctl.cfg.storage.retention.interval_s, maintain)
            ),
            recovery,
        ]
        log.info(
            "controller started",
            extra={"users": len(ctl.users), "dry_run": ctl.dry_run, "manual": ctl.manual},
        )
        await until.wait()
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        under_way = [t for t in ctl.running.values() if not t.done()]
        if under_way and self.stop.is_set():
            # A clean stop lets plans end; a lost lease cancels them at once (the new
            # leader resumes them, and this process's writes are refused anyway).
            await asyncio.wait(under_way, timeout=self.grace_s)
        left = sum(not t.done() for t in under_way)
        for task in ctl.running.values():
            task.cancel()
        for task in under_way:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await ctl.ams.stop()
        return left

    def _recovery_done(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or self.ctl.on_plan_error is None:
            return
        exc = task.exception()
        if exc is not None:
            log.warning("recovery stopped by a storage error", extra={"error": str(exc)})
            self.ctl.on_plan_error(exc)

    async def _relay(self, ended: asyncio.Event) -> None:
        await self.stop.wait()
        ended.set()

    def _enders(
        self, ended: asyncio.Event, loop: asyncio.AbstractEventLoop
    ) -> tuple[Callable[[str], None], Callable[[BaseException], None]]:
        """How a term ends: the lease lost (from any thread: a fenced write in a worker
        thread), or a plan stopped by a storage error (the next term recovers it)."""
        lead = self.ctl.leadership
        assert lead is not None

        def end(why: str) -> None:
            lead.lose(why)
            loop.call_soon_threadsafe(ended.set)

        def plan_error(exc: BaseException) -> None:
            end(f"a plan stopped: {exc}")

        return end, plan_error

    async def _replica(self) -> int:
        """Follow until the lease is ours, lead one term per epoch, follow again when it
        is lost; until stopped. Returns the plans left under way by the last term."""
        ctl = self.ctl
        lead = ctl.leadership
        assert lead is not None, "ha.enabled needs Controller.leadership (run_forever)"
        loop = asyncio.get_running_loop()
        left = 0
        while not self.stop.is_set():
            if not await lead.campaign():
                await lead.follow()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), ctl.cfg.ha.renew_every())
                continue
            ended = asyncio.Event()

            end, plan_error = self._enders(ended, loop)
            lead.fence.on_lost = end
            ctl.on_plan_error = plan_error
            keeper = asyncio.ensure_future(lead.keep(end))
            relay = asyncio.ensure_future(self._relay(ended))
            ctl.new_term()
            try:
                left = await self._term(ended)
            except (SQLAlchemyError, NotLeader) as exc:
                # The state could not be read at the start of the term: nothing ran yet.
                lead.lose(f"the term could not start: {exc}")
            for task in (keeper, relay):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            ctl.on_plan_error = None
            lead.fence.on_lost = None
            if self.stop.is_set() and lead.leading():
                await lead.release()
            lead.step_down()
            ctl.new_term()
            with contextlib.suppress(TimeoutError):  # others get a chance first
                await asyncio.wait_for(self.stop.wait(), ctl.cfg.ha.renew_every())
        return left


class Leadership:
    """This replica's side of the lease (docs/controller.md "High availability"): take it
    when free, renew it, notice losing it; what /healthz and the metrics show."""

    def __init__(self, ctl: Controller, holder: str, address: str) -> None:
        self.ctl, self.holder, self.address = ctl, holder, address
        self.fence = Fence()
        ctl.leadership = self
        ctl.enable_fencing(self.fence)
        self.epoch: int | None = None
        self.since: float | None = None  # database clock, when this replica took the lease
        self.valid_until = 0.0  # monotonic: when this replica must stop assuming it leads
        self.last_wake = 0.0  # monotonic: the keeper's last wake-up (to report stalls)
        self.lease: dict[str, Any] | None = None  # the lease row as last read
        self.why: str | None = None  # why the last term ended
        self.db_error: str | None = None
        ctl.metrics.leader.set(0)

    def leading(self) -> bool:
        return self.fence.epoch is not None

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A lease call in a thread, bounded by the lease time (a hung server must not
        hold the loop); raises on errors."""
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.ctl.cfg.ha.lease_s)

    async def campaign(self) -> bool:
        ha = self.ctl.cfg.ha
        t0 = time.monotonic()
        try:
            got = await self._db(
                self.ctl.store.acquire_lease, self.holder, self.address, ha.lease_s
            )
        except (SQLAlchemyError, TimeoutError) as exc:
            self._db_down(exc)
            return False
        self.db_error = None
        if got is None:
            return False
        self.epoch, self.since = got
        self.valid_until = t0 + ha.lease_s
        self.last_wake = time.monotonic()
        self.fence.epoch = self.epoch
        self.lease = {"holder": self.holder, "epoch": self.epoch, "since": self.since,
                      "address": self.address, "valid": True}  # fmt: skip
        m = self.ctl.metrics
        m.leader.set(1)
        m.leader_epoch.set(self.epoch)
        m.leader_since.set(self.since)
        m.leader_terms.inc()
        log.info("leading", extra={"epoch": self.epoch, "holder": self.holder})
        return True

    async def keep(self, end: Callable[[str], None]) -> None:
        """Renew every ha.renew_s; end the term when another replica holds the lease or
        when the last renewal that succeeded is a lease time old (database unreachable,
        or this process was stopped that long)."""
        ha = self.ctl.cfg.ha
        while True:
            nap = max(0.0, min(ha.renew_every(), self.valid_until - time.monotonic()))
            await asyncio.sleep(nap)
            t0 = time.monotonic()
            late = t0 - self.last_wake - nap
            self.last_wake = t0
            if t0 >= self.valid_until:
                end(f"the lease was not renewed within ha.lease_s (woke {late:.2f} s late)")
                return
            assert self.epoch is not None
            try:
                got = await asyncio.wait_for(
                    asyncio.to_thread(
                        self.ctl.store.renew_lease, self.holder, self.epoch, ha.lease_s
                    ),
                    max(0.05, self.valid_until - t0),
                )
            except (SQLAlchemyError, TimeoutError) as exc:
                self._db_down(exc)
                continue
            self.db_error = None
            if got is None:
                end("another replica holds the lease")
                return
            took = time.monotonic() - t0
            if took > ha.renew_every() or late > ha.renew_every():
                log.warning(
                    "lease renewal slow",
                    extra={"renewal_s": round(took, 3), "woke_late_s": round(late, 3)},
                )
            self.valid_until = t0 + ha.lease_s

    def lose(self, why: str) -> None:
        """Stop acting now (any thread): the fence refuses this process's writes."""
        if self.fence.epoch is None:
            return
        self.fence.epoch = None
        self.why = why
        self.lease = None  # who leads now is read again by the next follow()
        self.ctl.metrics.leader.set(0)
        log.warning("lease lost: following", extra={"epoch": self.epoch, "why": why})

    def step_down(self) -> None:
        self.lose("stopped")
        self.epoch = self.since = None

    async def release(self) -> None:
        """A clean stop hands the lease over at once instead of after ha.lease_s."""
        if self.epoch is None:
            return
        try:
            await self._db(self.ctl.store.release_lease, self.holder, self.epoch)
        except (SQLAlchemyError, TimeoutError) as exc:
            self._db_down(exc)

    async def follow(self) -> None:
        """A follower's view: who leads, and the users' state for the read-only API."""
        try:
            self.lease = await self._db(self.ctl.store.lease)
            self.ctl.load_state(write=False)
        except (SQLAlchemyError, TimeoutError) as exc:
            self._db_down(exc)
            return
        self.db_error = None
        m = self.ctl.metrics
        m.leader.set(0)
        if self.lease is not None:
            m.leader_epoch.set(self.lease["epoch"])
            m.leader_since.set(self.lease["since"])

    def _db_down(self, exc: BaseException) -> None:
        msg = (
            str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if str(exc)
            else type(exc).__name__
        )
        if msg != self.db_error:
            log.warning("lease storage unreachable", extra={"error": msg})
        self.db_error = msg

    def info(self) -> dict[str, Any]:
        """Who leads and since when (database clock), for /healthz."""
        lease = self.lease or {}
        return {
            "role": "leader" if self.leading() else "follower",
            "replica": self.holder,
            "epoch": lease.get("epoch"),
            "leader": lease.get("holder") if lease.get("valid") else None,
            "leader_api": lease.get("address") if lease.get("valid") else None,
            "leader_since": lease.get("since") if lease.get("valid") else None,
            "storage_error": self.db_error,
        }


def check_runtime(cfg: ControllerConfig) -> None:
    """Every check `run` makes before it starts, starting nothing: `check-config` calls
    exactly this. Each driver accepts its options (drivers validate them in their
    constructor and connect nothing there), the storage opens (or can be created) and
    the API token is readable."""
    d = cfg.drivers
    clock = SystemClock()
    made = [load_driver("mapping", d.mapping.name, cfg, clock, dict(d.mapping.options))]
    try:
        made.append(
            load_driver("hypervisor", d.hypervisor.name, cfg, clock, dict(d.hypervisor.options))
        )
        check_storage(cfg.storage.url)
        cfg.api_token()
    finally:
        asyncio.run(_close_all(made))


async def _close_all(drivers: Sequence[Any]) -> None:
    for drv in drivers:
        closer = getattr(drv, "close", None)
        if closer is not None:
            await closer()


def build(
    cfg: ControllerConfig,
    clock: Clock | None = None,
    dry_run: bool = False,
    manual: bool = False,
    sources: Sequence[Source] | None = None,
) -> Controller:
    clock = clock or SystemClock()
    # A replica's sessions: one stopped inside a transaction must not hold the lease
    # row's lock for longer than half a lease.
    idle = cfg.ha.lease_s / 2 if cfg.ha.enabled else None
    store = Store(cfg.storage.url, clock=clock, idle_tx_timeout_s=idle)
    d = cfg.drivers
    mapping = load_driver("mapping", d.mapping.name, cfg, clock, dict(d.mapping.options))
    hyper = load_driver("hypervisor", d.hypervisor.name, cfg, clock, dict(d.hypervisor.options))
    return Controller(
        cfg,
        store,
        sources if sources is not None else sources_from_config(cfg),
        mapping,
        hyper,
        clock,
        dry_run=dry_run,
        manual=manual,
    )


def make_server(ctl: Controller, port: int | None = None) -> Any:
    """A uvicorn server for the API in this event loop (signals stay with the service)."""
    import uvicorn

    from pacao.controller.api import create_app

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    host, cfg_port = ctl.cfg.listen()
    ctl.api_token = ctl.cfg.api_token()
    config = uvicorn.Config(
        create_app(ctl, ctl.api_token),
        host=host,
        port=cfg_port if port is None else port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,  # open web-view event streams never end by themselves
    )
    return _Server(config)


def with_listen(cfg: ControllerConfig, listen: str | None) -> ControllerConfig:
    """The config with api.listen replaced (`run --listen`), checked like the file's."""
    if listen is None:
        return cfg
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError("--listen", listen, "expected HOST:PORT")
    return cfg.model_copy(update={"api": cfg.api.model_copy(update={"listen": listen})})


def replica_id() -> str:
    """This process's lease holder name: host, PID and a random part (never reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def run_forever(
    config_path: Path,
    dry_run: bool = False,
    manual: bool = False,
    log_level: str = "info",
    listen: str | None = None,
    advertise: str | None = None,
) -> None:
    """`pacao controller run`: until SIGINT/SIGTERM."""
    cfg = with_listen(load_config(config_path), listen)
    check_runtime(cfg)
    setup_logging(level=log_level)

    async def main() -> None:
        ctl = build(cfg, dry_run=dry_run, manual=manual)
        ctl.config_path = config_path
        ctl.listen_override = listen
        if cfg.ha.enabled:
            host, port = cfg.listen()
            if host in ("0.0.0.0", "::", ""):
                host = socket.gethostname()
            Leadership(ctl, replica_id(), advertise or f"http://{host}:{port}")
        svc = Service(ctl, make_server(ctl))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, svc.stop.set)
        loop.add_signal_handler(signal.SIGHUP, svc.reload)
        await svc.serve()

    asyncio.run(main())
