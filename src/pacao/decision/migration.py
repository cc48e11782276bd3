"""Step 2: VM migration for the users whose S'' is over, with its economics and caps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pacao.decision.kernel import choose, current_keys, finite, pick, secondary
from pacao.decision.params import BoolArray, FloatArray, IntArray, Params, Reason, Sla
from pacao.optimize.ties import ranks_before


@dataclass(frozen=True)
class MigrationTime:
    """Seconds to move each user's VM to a DC, computed only where asked: memory x dirty
    factor / bandwidth(host, d), 0 to stay (the same formula as :func:`migration_seconds`
    without its (users, DCs) matrix: Step 2 needs the chosen DC's time only)."""

    memory_mib: FloatArray
    host: IntArray
    bandwidth_mbps: FloatArray
    dirty_factor: float = 1.0

    def at(self, rows: IntArray, dst: IntArray) -> FloatArray:
        src = self.host[rows]
        with np.errstate(divide="ignore"):
            t = self.memory_mib[rows] * 8.388608 * self.dirty_factor / self.bandwidth_mbps[src, dst]
        out: FloatArray = np.where(dst == src, 0.0, t)
        return out


def migration_seconds(
    memory_mib: FloatArray, host: IntArray, bandwidth_mbps: FloatArray, dirty_factor: float
) -> FloatArray:
    """Seconds to move each user's VM to each DC: memory x dirty factor / bandwidth(host, d).

    ``bandwidth_mbps`` is the (DCs, DCs) inter-DC matrix; staying costs 0.
    """
    bw = bandwidth_mbps[host]  # (users, DCs)
    t: FloatArray = memory_mib[:, None] * 8.388608 * dirty_factor / bw  # MiB -> Mbit
    t[np.arange(host.size), host] = 0.0
    return t


@dataclass(frozen=True, kw_only=True)
class MigrationInputs:
    """What Step 2 knows of each user in it (arrays over those users).

    ``current_values`` (users, criteria): user<->VM over the last S'' through
    the entry in use; ``place_values`` (users, DCs, criteria): what the user
    would get with the VM at each DC (:func:`pacao.decision.placement`);
    ``demand`` (users, R): the VM's RAM and CPU; ``migration_s`` (users, DCs):
    seconds to migrate the VM there (:func:`migration_seconds`), or a
    :class:`MigrationTime` that computes them for the chosen DC only.
    """

    current_values: FloatArray
    current_usable: BoolArray
    place_values: FloatArray
    place_usable: BoolArray
    host: IntArray
    sla: Sla
    demand: FloatArray
    pinned: BoolArray
    last_migration: FloatArray
    expected_stay_s: FloatArray
    migration_s: FloatArray | MigrationTime


@dataclass(frozen=True, kw_only=True)
class DcLoad:
    """The DCs' side of Step 2: ``residual`` (DCs, R) RAM and CPU, a hard constraint (no
    hypervisor starts a VM that does not fit), and the migrations already under way (the
    caps count both ends)."""

    residual: FloatArray
    ongoing_per_dc: IntArray
    ongoing_total: int


@dataclass(frozen=True)
class MigrationDecisions:
    """Step 2 for every user (arrays of length users)."""

    sla_met: BoolArray
    current_objective: FloatArray
    best: IntArray
    best_objective: FloatArray
    migration_s: FloatArray
    migrate: BoolArray
    reason: IntArray


def decide_migration(
    now: float, users: MigrationInputs, dcs: DcLoad, params: Params
) -> MigrationDecisions:
    """Step 2 for all users (only the rows the caller is in Step 2 for)."""
    place_values, place_usable, host, sla = (
        users.place_values,
        users.place_usable,
        users.host,
        users.sla,
    )
    n = place_values.shape[0]
    rows = np.arange(n)
    cur_use = finite(users.current_values[:, None, :], users.current_usable[:, None])
    _, cur_obj, met, cur_sec = current_keys(
        users.current_values[:, None, :], cur_use, np.zeros(n, np.int64), sla
    )
    usable = place_usable & _fits(users.demand, dcs.residual, n)
    usable[rows, host] = place_usable[rows, host]  # the host always "fits" its own VM
    best, best_obj = choose(place_values, sla, usable)
    has = best >= 0
    safe_best = np.where(has, best, 0)
    if isinstance(users.migration_s, MigrationTime):
        t_at = users.migration_s.at(rows, safe_best)
    else:
        t_at = pick(users.migration_s, safe_best)
    t_mig = np.where(has, t_at, np.inf)
    with np.errstate(invalid="ignore"):
        gain = cur_obj - best_obj
        benefit = gain * np.maximum(users.expected_stay_s - t_mig, 0.0)
        # A migration that takes no time costs nothing (the paper's model): any
        # candidate ranking strictly before the current path is worth it.
        worth = (t_mig <= 0) | (benefit > params.migration_cost_weight * t_mig)
    better = ranks_before(gain, cur_sec, secondary(place_values, best, sla))
    reason = np.select(
        [
            met,
            users.pinned,
            ~has,
            (best == host) | ~better,
            gain < params.min_gain,
            now - users.last_migration < params.cooldown_s,
            ~worth,
        ],
        [
            int(Reason.SLA_MET),
            int(Reason.PINNED),
            int(Reason.NO_CANDIDATE),
            int(Reason.CURRENT_IS_BEST),
            int(Reason.GAIN_BELOW_MARGIN),
            int(Reason.COOLDOWN),
            int(Reason.NOT_WORTH),
        ],
        default=int(Reason.MIGRATE),
    ).astype(np.int64)
    _apply_caps(reason, gain, host, best, users.demand, dcs, params)
    return MigrationDecisions(
        sla_met=met,
        current_objective=cur_obj,
        best=best,
        best_objective=best_obj,
        migration_s=t_mig,
        migrate=reason == Reason.MIGRATE,
        reason=reason,
    )


def _fits(demand: FloatArray, residual: FloatArray, n: int) -> BoolArray:
    """(users, DCs): the VM's RAM and CPU fit the DC's residual capacity. Users share a
    few VM sizes, so the test runs once per distinct demand and is gathered."""
    if n == 0:
        return np.zeros((0, residual.shape[0]), dtype=bool)
    if (demand == demand[0]).all():
        row = (residual >= np.asarray(demand)[:1]).all(axis=1)
        out: BoolArray = np.broadcast_to(row, (n, residual.shape[0]))
        return out
    uniq, inverse = np.unique(demand, axis=0, return_inverse=True)
    table: BoolArray = np.all(residual[None, :, :] >= uniq[:, None, :], axis=2)
    fits: BoolArray = table[inverse.reshape(-1)]
    return fits


def _apply_caps(
    reason: IntArray,
    gain: FloatArray,
    host: IntArray,
    best: IntArray,
    demand: FloatArray,
    dcs: DcLoad,
    params: Params,
) -> None:
    """Admit candidate migrations greedily, largest gain first, within caps and capacity."""
    cand = np.flatnonzero(reason == Reason.MIGRATE)
    if cand.size == 0:
        return
    residual, ongoing_total = dcs.residual, dcs.ongoing_total
    src, dst = host[cand], best[cand]
    d_count = residual.shape[0]
    load = (
        np.asarray(dcs.ongoing_per_dc, dtype=np.int64)
        + np.bincount(src, minlength=d_count)
        + np.bincount(dst, minlength=d_count)
    )
    need = np.zeros_like(residual, dtype=np.float64)
    np.add.at(need, dst, demand[cand])
    if (
        ongoing_total + cand.size <= params.max_migrations_total
        and (load <= params.max_migrations_per_dc).all()
        and (need <= residual).all()
    ):
        return  # no cap binds: every candidate is admitted
    order = cand[np.lexsort((cand, -gain[cand]))].tolist()
    per_dc = np.asarray(dcs.ongoing_per_dc, dtype=np.int64).tolist()
    left = residual.astype(np.float64).tolist()
    dem = demand.tolist()
    hosts, bests = host.tolist(), best.tolist()
    total = int(ongoing_total)
    cap_dc, cap_total = params.max_migrations_per_dc, params.max_migrations_total
    for u in order:
        s, d = hosts[u], bests[u]
        if total >= cap_total:
            reason[u] = Reason.CAP_TOTAL
        elif per_dc[s] >= cap_dc or per_dc[d] >= cap_dc:
            reason[u] = Reason.CAP_DC
        elif any(a < b for a, b in zip(left[d], dem[u], strict=True)):
            reason[u] = Reason.CAPACITY
        else:
            total += 1
            per_dc[s] += 1
            per_dc[d] += 1
            left[d] = [a - b for a, b in zip(left[d], dem[u], strict=True)]
