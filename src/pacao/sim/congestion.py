"""The paper's Section V-C experiment: congestion-aware assignment of all users at once.

For every deployment (use case x DC count) the users are taken at one snapshot
time (their position 12 h after the traces' first sample: 12:00 for the
synthetic traces, which start at midnight; midday, when most users are away
from home) and assigned to DCs by the controller's multi-user decision
(:func:`pacao.decision.decide_multi_user`, the ``lagrange`` solver of
:mod:`pacao.optimize.assign`) with the paper's settings: l_ud = the sim's
user<->DC RTT (:mod:`pacao.sim.network`), LT_u = the deployment's strict bound,
C_d = 2 |U| / |D| (at least 1), no existing load, and the convex latency
function :data:`pacao.optimize.assign.instances.PAPER_BREAKPOINTS` (700 ms at
full load). The congestion-unaware reference puts every user on its nearest DC
(PACAO without (4)-(9)); its DCs may exceed capacity, where f stays at 700 ms.
A partitioned run does the same per partition (:mod:`pacao.sim.congestion_scale`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pacao.decision import DcCapacity, MultiUserInputs, decide_multi_user
from pacao.optimize.assign import LatencyFunction
from pacao.optimize.assign.instances import PAPER_BREAKPOINTS
from pacao.sim.engine import Trajectories
from pacao.sim.sweep import Deployment

#: Snapshot: every user's position this many seconds after the traces' first sample.
SNAPSHOT_S = 12 * 3600
#: The paper's Fig. 18 threshold: share of users above 75 ms.
RTT_THRESHOLD_MS = 75.0
#: Time limit of one lagrange solve (its default is 60 s).
SOLVE_LIMIT_S = 30.0


@dataclass(frozen=True)
class Solve:
    """One deployment's solve as both the single-file and the partitioned stage report it."""

    use_case: str
    n_dcs: int
    capacity: float
    bound_ms: float
    objective: float
    lower_bound: float | None
    gap: float | None
    seconds: float

    def solve_fields(self) -> dict[str, Any]:
        """These fields alone, to build the other kind of run from this one."""
        return {f.name: getattr(self, f.name) for f in fields(Solve)}


@dataclass(frozen=True)
class CongestionRun(Solve):
    """One deployment's congestion-aware and -unaware assignments of the snapshot users."""

    dc_aware: np.ndarray  # DC index per user
    dc_unaware: np.ndarray
    latency_aware_ms: np.ndarray  # l_ud of the chosen DC
    congestion_aware_ms: np.ndarray  # f_d(x_d) of the chosen DC
    rtt_unaware_ms: np.ndarray
    load_aware: np.ndarray  # users per DC
    load_unaware: np.ndarray

    @property
    def rtt_aware_ms(self) -> np.ndarray:
        out: np.ndarray = self.latency_aware_ms + self.congestion_aware_ms
        return out

    def summary(self) -> dict[str, float | int | None]:
        aware = self.rtt_aware_ms
        return summary_of(
            self,
            users=int(aware.shape[0]),
            median_rtt_ms=float(np.median(aware)),
            unaware_median_rtt_ms=float(np.median(self.rtt_unaware_ms)),
            share_over_75ms=float(np.mean(aware > RTT_THRESHOLD_MS)),
        )


class DcLoads(Protocol):
    """One deployment's solve as the per-DC table and the summary need it."""

    @property
    def use_case(self) -> str: ...
    @property
    def n_dcs(self) -> int: ...
    @property
    def capacity(self) -> float: ...
    @property
    def bound_ms(self) -> float: ...
    @property
    def objective(self) -> float: ...
    @property
    def lower_bound(self) -> float | None: ...
    @property
    def gap(self) -> float | None: ...
    @property
    def seconds(self) -> float: ...
    @property
    def load_aware(self) -> np.ndarray: ...
    @property
    def load_unaware(self) -> np.ndarray: ...


class UserIds(Protocol):
    """Whatever names the users of the runs, in their order (trajectories, a snapshot)."""

    @property
    def user_ids(self) -> np.ndarray: ...


def summary_of(
    r: DcLoads,
    *,
    users: int,
    median_rtt_ms: float,
    unaware_median_rtt_ms: float,
    share_over_75ms: float,
) -> dict[str, float | int | None]:
    """summary.json's entry of one deployment, from its figures over every user."""
    return {
        "users": users,
        "capacity_per_dc": r.capacity,
        "bound_ms": r.bound_ms,
        "median_rtt_ms": median_rtt_ms,
        "unaware_median_rtt_ms": unaware_median_rtt_ms,
        "share_over_75ms": share_over_75ms,
        "max_load_fraction": float(r.load_aware.max() / r.capacity),
        "unaware_dcs_over_capacity": int(np.sum(r.load_unaware > r.capacity)),
        "objective": r.objective,
        "lower_bound": r.lower_bound,
        "gap": r.gap,
        "seconds": r.seconds,
    }


def latency_function() -> LatencyFunction:
    return LatencyFunction.from_breakpoints([list(b) for b in PAPER_BREAKPOINTS], "breakpoints")


def snapshot_positions(tr: Trajectories, at_s: int = SNAPSHOT_S) -> np.ndarray:
    """Position of every user ``at_s`` after the first sample (its latest sample by then)."""
    users = np.arange(tr.n_users, dtype=np.int64)
    t_ms = np.full(tr.n_users, at_s * 1000, dtype=np.int64)
    idx = np.maximum(tr.sample_at(users, t_ms), tr.first)
    out: np.ndarray = tr.pos[idx]
    return out


def run_deployment(tr: Trajectories, dep: Deployment, pos: np.ndarray) -> CongestionRun:
    """Solve one deployment with and without congestion awareness."""
    n_users, n_dcs = int(pos.shape[0]), dep.n_dcs
    latency = np.ascontiguousarray(dep.net.user_dc[pos])
    capacity = max(2.0 * n_users / n_dcs, 1.0)
    f = latency_function()
    # Every user may move (none pinned), so the hosts are only a placeholder.
    md = decide_multi_user(
        MultiUserInputs(
            rtt_ms=latency,
            usable=np.ones((n_users, n_dcs), dtype=bool),
            bound_ms=np.full(n_users, dep.bounds["strict"]),
            host=np.zeros(n_users, dtype=np.int64),
            pinned=np.zeros(n_users, dtype=bool),
            user_ids=[str(u) for u in tr.user_ids.tolist()],
        ),
        DcCapacity(capacity=np.full(n_dcs, capacity), existing=np.zeros(n_dcs), latency=f),
        solver="lagrange",
        time_limit=SOLVE_LIMIT_S,
    )
    users = np.arange(n_users)
    near = np.argmin(latency, axis=1)
    load_near = np.bincount(near, minlength=n_dcs)
    cong_near = f(load_near / capacity)  # np.interp holds 700 ms beyond full load
    return CongestionRun(
        use_case=dep.use_case,
        n_dcs=n_dcs,
        capacity=capacity,
        bound_ms=dep.bounds["strict"],
        objective=md.objective,
        lower_bound=md.lower_bound,
        gap=md.gap,
        seconds=md.seconds,
        dc_aware=md.dc,
        dc_unaware=near.astype(np.int64),
        latency_aware_ms=latency[users, md.dc],
        congestion_aware_ms=md.congestion_ms[md.dc],
        rtt_unaware_ms=latency[users, near] + cong_near[near],
        load_aware=md.load,
        load_unaware=load_near.astype(np.int64),
    )


def users_table(tr: UserIds, runs: Sequence[CongestionRun]) -> pd.DataFrame:
    """Per user and deployment: the DCs and RTTs (results/congestion_users.parquet)."""
    frames = [
        pd.DataFrame(
            {
                "use_case": r.use_case,
                "n_dcs": r.n_dcs,
                "user_id": tr.user_ids,
                "dc_aware": r.dc_aware,
                "latency_aware_ms": r.latency_aware_ms,
                "congestion_aware_ms": r.congestion_aware_ms,
                "rtt_aware_ms": r.rtt_aware_ms,
                "dc_unaware": r.dc_unaware,
                "rtt_unaware_ms": r.rtt_unaware_ms,
            }
        )
        for r in runs
    ]
    return pd.concat(frames, ignore_index=True)


def dcs_table(runs: Sequence[DcLoads], dcs: pd.DataFrame) -> pd.DataFrame:
    """Per deployment and DC: users with and without awareness (results/congestion_dcs.parquet)."""
    f = latency_function()
    frames = []
    for r in runs:
        d = dcs[(dcs.use_case == r.use_case) & (dcs.n_dcs == r.n_dcs)].reset_index(drop=True)
        frames.append(
            pd.DataFrame(
                {
                    "use_case": r.use_case,
                    "n_dcs": r.n_dcs,
                    "dc": np.arange(r.n_dcs),
                    "name": d["name"].astype(str),
                    "lat": d["lat"],
                    "lon": d["lon"],
                    "capacity": r.capacity,
                    "users_aware": r.load_aware,
                    "users_unaware": r.load_unaware,
                    "congestion_aware_ms": f(r.load_aware / r.capacity),
                    "congestion_unaware_ms": f(r.load_unaware / r.capacity),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def run_all(
    tr: Trajectories, deps: list[Deployment], advance: Callable[[], None] = lambda: None
) -> list[CongestionRun]:
    """Every deployment, in the order given."""
    pos = snapshot_positions(tr)
    out = []
    for dep in deps:
        out.append(run_deployment(tr, dep, pos))
        advance()
    return out
