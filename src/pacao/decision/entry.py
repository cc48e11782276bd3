"""The decision policy: Step 1 (entry switching) and Step 2 (VM migration), pure and vectorised.

Nothing here reads a clock, a database or a driver: the caller passes ``now``,
the measurements and the per-user state as arrays over users, and gets arrays
of decisions and reasons back. The controller service calls it once per S'
for all its users; the simulator calls the very same functions over its
simulated users in simulated time (docs/controller.md, "Policy").

Ranking is :func:`pacao.optimize.bulk.choose_parallel` (the kernel of problem
(1)-(3)); the penalties of the current path are
:func:`pacao.optimize.penalty.penalties_from_ratios`; LISP priorities for a
switching user come from :func:`pacao.optimize.solve`. No second ranking here.

Beyond the paper (Sec. III-D), a move must also pass:

* a minimum gain margin: objective(current) - objective(best) >= min_gain;
* a relative margin for switches (min_gain_ratio r): the best entry must still
  rank strictly before the current one with each of its metrics worsened by the
  fraction r (two entries measured within noise of each other are a tie);
* a minimum dwell time on an entry before switching away (min_dwell_s);
* a cooldown per user after a migration (cooldown_s);
* migration economics: the gain only accrues after the migration time t
  (memory / inter-DC bandwidth x dirty factor) and lasts the rest of the
  user's expected stay T; migrate when gain x (T - t) > cost_weight x t;
* caps on concurrent migrations per DC (source and destination) and in total;
* pinned VMs never migrate.

Step 1 ranks the entries by ``Params.entry_metric``: ``path`` (the default, a
product choice) by the whole user->entry->VM metric, ``user-rloc`` (the paper's
eq. 3: "the measured RTT or jitter between RLOC d and the user") by the
user<->RLOC sublink alone. Either way the SLA check that triggers Step 1 and
Step 2 is on the user<->VM path (Sec. IV-B), and Step 2 is unchanged.

An unavailable current entry (probes lost) overrides the margins and the dwell
time: a user never waits on a dead locator. An *unmeasured* current entry (no
sample at all, ``known`` False) is not a dead one: the user keeps it unless
another entry is measured meeting the SLA (Reason.NO_DATA).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from pacao.optimize import Candidate, Criterion, Decision, Mode, Problem, solve
from pacao.optimize.assign.model import LatencyFunction
from pacao.optimize.bulk import choose_parallel
from pacao.optimize.penalty import penalties_from_ratios
from pacao.optimize.ties import OBJECTIVE_TIE, ranks_before

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


class Reason(IntEnum):
    """Why a user got the decision it got (stored with every plan)."""

    SLA_MET = 0
    SWITCH = 1
    MIGRATE = 2
    CURRENT_IS_BEST = 3
    GAIN_BELOW_MARGIN = 4
    DWELL = 5
    COOLDOWN = 6
    PINNED = 7
    NOT_WORTH = 8
    CAP_DC = 9
    CAP_TOTAL = 10
    CAPACITY = 11
    NO_CANDIDATE = 12
    NO_DATA = 13


REASON_TEXT: dict[Reason, str] = {
    Reason.SLA_MET: "SLA met on the current path: store and wait (step 1.1)",
    Reason.SWITCH: "SLA violated: switch entry RLOC (step 1.2)",
    Reason.MIGRATE: "SLA still violated after S'': migrate the VM (step 2)",
    Reason.CURRENT_IS_BEST: "no candidate ranks strictly before the current one",
    Reason.GAIN_BELOW_MARGIN: "gain below the minimum gain margin",
    Reason.DWELL: "current entry held for less than the minimum dwell time",
    Reason.COOLDOWN: "user's last migration is within the cooldown",
    Reason.PINNED: "the VM is pinned",
    Reason.NOT_WORTH: "gain over the expected stay does not pay the migration time",
    Reason.CAP_DC: "concurrent-migration cap of a DC reached",
    Reason.CAP_TOTAL: "total concurrent-migration cap reached",
    Reason.CAPACITY: "destination filled by another migration of this cycle",
    Reason.NO_CANDIDATE: "no available candidate",
    Reason.NO_DATA: "current entry not measured and no candidate measured meeting the SLA",
}


#: What Step 1 ranks entries by (config key ``policy.entry_metric``).
ENTRY_METRICS = ("path", "user-rloc")


@dataclass(frozen=True)
class Params:
    """Anti-flapping and migration settings, and Step 1's ranking metric (config key
    ``policy``); ``entry_metric`` is one of :data:`ENTRY_METRICS`."""

    min_dwell_s: float = 30.0
    min_gain: float = 0.0
    min_gain_ratio: float = 0.2
    cooldown_s: float = 300.0
    migration_cost_weight: float = 1.0
    max_migrations_per_dc: int = 1
    max_migrations_total: int = 4
    entry_metric: str = "path"

    def __post_init__(self) -> None:
        if self.entry_metric not in ENTRY_METRICS:
            raise ValueError(
                f"policy.entry_metric: {self.entry_metric!r} is invalid; one of "
                + ", ".join(ENTRY_METRICS)
            )


@dataclass(frozen=True)
class Sla:
    """Per-user weights alpha_k and bounds M_k, shape (users, criteria)."""

    weights: FloatArray
    bounds: FloatArray


@dataclass(frozen=True)
class EntryDecisions:
    """Step 1 for every user (arrays of length users)."""

    sla_met: BoolArray
    current_objective: FloatArray
    best: IntArray
    best_objective: FloatArray
    switch: BoolArray
    reason: IntArray

    @property
    def step2(self) -> BoolArray:
        """Users whose Step 2 runs after S'': those whose SLA was violated (1.2); an
        unmeasured current entry (NO_DATA) is not known to violate it."""
        out: BoolArray = ~self.sla_met & (self.reason != Reason.NO_DATA)
        return out


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


def _choose(values: FloatArray, sla: Sla, usable: BoolArray) -> tuple[IntArray, FloatArray]:
    """The kernel on metrics m with the users' bounds, per group of users sharing (weights,
    bounds); a candidate is usable when ``usable`` says so and every metric is finite (not
    NaN: measured), tested inside the kernel; rows with nothing usable get -1. Ratios m/M
    are formed chunk by chunk inside the kernel (exact division: the same decisions as on
    a full ratio array, without streaming one through memory)."""
    n = values.shape[0]
    idx = np.full(n, -1, dtype=np.int64)
    obj = np.full(n, np.inf)
    has = usable.any(axis=1)
    if not has.any():
        return idx, obj
    key = np.concatenate([sla.weights, sla.bounds], axis=1)
    if (key == key[0]).all():  # the usual case: one SLA class, no sort
        uniq, inverse = key[:1], np.zeros(n, dtype=np.int64)
    else:
        uniq, inverse = np.unique(key, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
    k = sla.weights.shape[1]
    for g in range(uniq.shape[0]):
        sel = np.flatnonzero((inverse == g) & has)
        if sel.size == 0:
            continue
        part = values if sel.size == n else values[sel]
        use = usable if sel.size == n else usable[sel]
        i, o = choose_parallel(part, uniq[g, :k], use, bounds=uniq[g, k:], exact=True, finite=True)
        idx[sel] = i
        obj[sel] = o
    idx[~np.isfinite(obj)] = -1  # every usable candidate had an unmeasured metric
    return idx, obj


def _current(
    values: FloatArray, usable: BoolArray, current: IntArray, sla: Sla
) -> tuple[BoolArray, FloatArray, BoolArray]:
    """(current usable, objective of the current candidate, SLA met on it)."""
    ok, obj, met, _ = _current_keys(values, usable, current, sla)
    return ok, obj, met


def _current_keys(
    values: FloatArray, usable: BoolArray, current: IntArray, sla: Sla
) -> tuple[BoolArray, FloatArray, BoolArray, FloatArray]:
    """:func:`_current` plus the kernel's secondary key sum_k alpha_k m/M of the current
    candidate (inf when it is not usable)."""
    n = values.shape[0]
    rows = np.arange(n)
    valid = (current >= 0) & (current < values.shape[1])
    cur = np.where(valid, current, 0)
    picked = _pick(values, cur)
    ok = valid & usable[rows, cur] & np.isfinite(picked).all(axis=1)
    with np.errstate(invalid="ignore"):
        ratios = picked / sla.bounds
    ratios = np.where(ok[:, None], ratios, 0.0)
    pen = penalties_from_ratios(ratios)
    obj = np.where(ok, (pen * sla.weights).sum(axis=1), np.inf)
    sec = np.where(ok, (ratios * sla.weights).sum(axis=1), np.inf)
    met = ok & (pen <= 1).all(axis=1)
    return ok, obj, met, sec


def _pick(values: FloatArray, idx: IntArray) -> FloatArray:
    """values[u, idx[u]] for every row u of a (users, candidates, ...) array, as one
    gather along the first axis of a flat view (a two-array fancy index is several
    times slower on 100,000 users); ``idx`` must be valid."""
    n, c = values.shape[0], values.shape[1]
    flat = values.reshape((n * c, *values.shape[2:]))
    out: FloatArray = flat[np.arange(n) * c + idx]
    return out


def _secondary(values: FloatArray, best: IntArray, sla: Sla) -> FloatArray:
    """The kernel's secondary key of each row's chosen candidate (inf when none)."""
    has = best >= 0
    with np.errstate(invalid="ignore"):
        ratios = _pick(values, np.where(has, best, 0)) / sla.bounds
    out: FloatArray = np.where(
        has, (np.where(has[:, None], ratios, 0.0) * sla.weights).sum(1), np.inf
    )
    return out


def _finite(values: FloatArray, usable: BoolArray) -> BoolArray:
    """``usable`` and every criterion measured. The criteria are summed by one BLAS
    matrix-vector product and the sum tested: NaN and inf propagate through a sum, and
    metrics are far below the float range, so a finite sum means finite criteria (a
    reduction along the short last axis, or k strided passes, cost several times more)."""
    k = values.shape[-1]
    if k == 1:
        fin = np.isfinite(values[..., 0])
    else:
        flat = np.ascontiguousarray(values).reshape(-1, k)
        with np.errstate(invalid="ignore", over="ignore"):
            fin = np.isfinite(flat @ np.ones(k)).reshape(values.shape[:-1])
    out: BoolArray = fin & usable
    return out


def decide_entry(
    now: float,
    values: FloatArray,
    usable: BoolArray,
    current: IntArray,
    sla: Sla,
    last_switch: FloatArray,
    params: Params,
    known: BoolArray | None = None,
    sublink: FloatArray | None = None,
) -> EntryDecisions:
    """Step 1 for all users.

    ``values`` (users, candidates, criteria): the user<->VM metric through each
    entry RLOC over the last S' (see :func:`combine_paths`); ``usable``
    (users, candidates): measured and available; ``current`` (users,): index of
    the entry in use (-1: none); ``last_switch``: time of the user's last
    entry switch (-inf: never); ``known`` (users, candidates): something was
    measured (answered or lost probes), default ``usable``. A current entry that
    is not usable but known is down: the user leaves it at once; one that is not
    known is unmeasured: the user leaves it only for an entry measured meeting
    the SLA (Reason.NO_DATA otherwise). ``sublink`` (users, candidates,
    criteria): the user<->RLOC metric of each entry, required when
    ``params.entry_metric`` is ``user-rloc``: the entries are then ranked (best,
    objectives, margins) by it, while the SLA check stays on ``values``.
    """
    n = values.shape[0]
    rows = np.arange(n)
    cur_ok, cur_obj, met, cur_sec = _current_keys(values, usable, current, sla)
    rank = values
    if params.entry_metric == "user-rloc":
        if sublink is None or sublink.shape != values.shape:
            raise ValueError(
                "decide_entry: entry_metric 'user-rloc' needs sublink, the user<->RLOC "
                f"metrics of shape {values.shape}"
            )
        rank = sublink
        _, cur_obj, _, cur_sec = _current_keys(rank, usable, current, sla)
    best, best_obj = _choose(rank, sla, usable)
    has = best >= 0
    safe_best = np.where(has, best, 0)
    valid = (current >= 0) & (current < values.shape[1])
    if known is None:
        unknown = np.zeros(n, dtype=bool)
    else:
        unknown = valid & ~cur_ok & ~known[rows, np.where(valid, current, 0)]
    with np.errstate(invalid="ignore"):
        gain = cur_obj - best_obj  # inf - inf (nothing usable anywhere) is NaN: no move
    best_sec = _secondary(rank, best, sla)
    no_better = (best == current) | ~ranks_before(gain, cur_sec, best_sec)
    below = cur_ok & (gain < params.min_gain - OBJECTIVE_TIE)  # float noise is no loss
    if params.min_gain_ratio > 0:
        # The margin: the best still ranks strictly before the current one with every
        # metric worse by the fraction r (the kernel's order on inflated metrics).
        f = 1.0 + params.min_gain_ratio
        picked = _pick(rank, safe_best) * f
        inflated = np.where(has[:, None], picked, 0.0)
        _, infl_obj, _, infl_sec = _current_keys(
            inflated[:, None, :], has[:, None], np.zeros(n, np.int64), sla
        )
        with np.errstate(invalid="ignore"):
            below |= cur_ok & ~ranks_before(cur_obj - infl_obj, cur_sec, infl_sec)
    _, _, best_met, _ = _current_keys(values, usable, safe_best, sla)
    no_data = unknown & ~(has & best_met)
    dwell = cur_ok & (now - last_switch < params.min_dwell_s)
    reason = np.select(
        [met, ~has, no_data, no_better, below, dwell],
        [
            int(Reason.SLA_MET),
            int(Reason.NO_CANDIDATE),
            int(Reason.NO_DATA),
            int(Reason.CURRENT_IS_BEST),
            int(Reason.GAIN_BELOW_MARGIN),
            int(Reason.DWELL),
        ],
        default=int(Reason.SWITCH),
    ).astype(np.int64)
    return EntryDecisions(
        sla_met=met,
        current_objective=cur_obj,
        best=best,
        best_objective=best_obj,
        switch=reason == Reason.SWITCH,
        reason=reason,
    )


def decide_migration(
    now: float,
    current_values: FloatArray,
    current_usable: BoolArray,
    place_values: FloatArray,
    place_usable: BoolArray,
    host: IntArray,
    sla: Sla,
    demand: FloatArray,
    residual: FloatArray,
    pinned: BoolArray,
    last_migration: FloatArray,
    expected_stay_s: FloatArray,
    migration_s: FloatArray | MigrationTime,
    ongoing_per_dc: IntArray,
    ongoing_total: int,
    params: Params,
) -> MigrationDecisions:
    """Step 2 for all users (only the rows the caller is in Step 2 for).

    ``current_values`` (users, criteria): user<->VM over the last S'' through
    the entry in use; ``place_values`` (users, DCs, criteria): what the user
    would get with the VM at each DC (:func:`placement`); ``demand`` (users, R)
    and ``residual`` (DCs, R): RAM and CPU, a hard constraint (no hypervisor
    starts a VM that does not fit); ``migration_s`` (users, DCs): seconds to
    migrate the VM there (:func:`migration_seconds`), or a :class:`MigrationTime`
    that computes them for the chosen DC only; ``ongoing_*``: migrations already
    under way (caps count both ends).
    """
    n = place_values.shape[0]
    rows = np.arange(n)
    cur_use = _finite(current_values[:, None, :], current_usable[:, None])
    _, cur_obj, met, cur_sec = _current_keys(
        current_values[:, None, :], cur_use, np.zeros(n, np.int64), sla
    )
    usable = place_usable & _fits(demand, residual, n)
    usable[rows, host] = place_usable[rows, host]  # the host always "fits" its own VM
    best, best_obj = _choose(place_values, sla, usable)
    has = best >= 0
    safe_best = np.where(has, best, 0)
    if isinstance(migration_s, MigrationTime):
        t_at = migration_s.at(rows, safe_best)
    else:
        t_at = _pick(migration_s, safe_best)
    t_mig = np.where(has, t_at, np.inf)
    with np.errstate(invalid="ignore"):
        gain = cur_obj - best_obj
        benefit = gain * np.maximum(expected_stay_s - t_mig, 0.0)
        # A migration that takes no time costs nothing (the paper's model): any
        # candidate ranking strictly before the current path is worth it.
        worth = (t_mig <= 0) | (benefit > params.migration_cost_weight * t_mig)
    better = ranks_before(gain, cur_sec, _secondary(place_values, best, sla))
    reason = np.select(
        [
            met,
            pinned,
            ~has,
            (best == host) | ~better,
            gain < params.min_gain,
            now - last_migration < params.cooldown_s,
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
    _apply_caps(reason, gain, host, best, demand, residual, ongoing_per_dc, ongoing_total, params)
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
    residual: FloatArray,
    ongoing_per_dc: IntArray,
    ongoing_total: int,
    params: Params,
) -> None:
    """Admit candidate migrations greedily, largest gain first, within caps and capacity."""
    cand = np.flatnonzero(reason == Reason.MIGRATE)
    if cand.size == 0:
        return
    src, dst = host[cand], best[cand]
    d_count = residual.shape[0]
    load = (
        np.asarray(ongoing_per_dc, dtype=np.int64)
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
    per_dc = np.asarray(ongoing_per_dc, dtype=np.int64).tolist()
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


@dataclass(frozen=True)
class MultiUserDecisions:
    """Problem (4)-(9) over the users of one S' window (arrays over those users / DCs).

    ``dc`` is the assigned DC (the VM's host, entered through that DC's best
    entry); ``independent`` what each user would pick alone (the kernel's
    choice, blind to congestion), for comparison; loads count users per DC
    after the move, ``existing`` included.
    """

    dc: IntArray
    independent: IntArray
    objective: float
    lower_bound: float | None
    solver: str
    seconds: float
    load: IntArray
    independent_load: IntArray
    capacity: FloatArray
    congestion_ms: FloatArray


def decide_multi_user(
    rtt_ms: FloatArray,
    usable: BoolArray,
    bound_ms: FloatArray,
    host: IntArray,
    pinned: BoolArray,
    capacity: FloatArray,
    existing: FloatArray,
    latency: LatencyFunction,
    solver: str = "lagrange",
    *,
    batch_size: int = 100,
    time_limit: float | None = None,
    integer_penalty: bool = False,
    dc_names: Sequence[str] | None = None,
    user_ids: Sequence[str] | None = None,
) -> MultiUserDecisions:
    """The congestion-aware assignment (paper Sec. V-C) of many violating users at once.

    ``rtt_ms`` (users, DCs): the RTT each user would get with its VM at each DC
    (:func:`placement`); ``capacity`` C_d and ``existing`` e_d in users (VMs of
    users outside this batch). Pinned VMs may only stay. Solved by
    :func:`pacao.optimize.assign.solve_assign` (``lagrange``, ``milp`` or
    ``batched``); raises :class:`pacao.optimize.assign.InfeasibleError` when the
    users do not fit.
    """
    from pacao.optimize.assign import AssignProblem, solve_assign

    n, d = rtt_ms.shape
    ok = _finite(rtt_ms[..., None], usable)
    ok &= ~pinned[:, None] | (np.arange(d)[None, :] == host[:, None])
    lat = np.where(ok, rtt_ms, np.nan)
    problem = AssignProblem(
        dc_names=tuple(dc_names or (f"dc{j}" for j in range(d))),
        capacity=np.asarray(capacity, dtype=np.float64),
        existing=np.asarray(existing, dtype=np.float64),
        functions=(latency,) * d,
        user_ids=tuple(user_ids or (f"u{i}" for i in range(n))),
        bound=np.asarray(bound_ms, dtype=np.float64),
        latency=lat,
        integer_penalty=integer_penalty,
    )
    res = solve_assign(problem, solver, batch_size=batch_size, time_limit=time_limit)
    alone, _ = _choose(rtt_ms[..., None], Sla(np.ones((n, 1)), bound_ms[:, None]), ok)
    base = np.asarray(existing, dtype=np.int64)
    return MultiUserDecisions(
        dc=np.asarray(res.choice, dtype=np.int64),
        independent=alone,
        objective=res.objective,
        lower_bound=res.lower_bound,
        solver=solver,
        seconds=res.seconds,
        load=base + np.bincount(res.choice, minlength=d),
        independent_load=base + np.bincount(alone[alone >= 0], minlength=d),
        capacity=problem.capacity,
        congestion_ms=res.evaluation.congestion_ms,
    )


def combine_paths(user_xtr: FloatArray, xtr_vm: FloatArray, criteria: Sequence[str]) -> FloatArray:
    """User<->VM metric through an entry from its two sublinks (same shapes, criteria last).

    RTT and jitter add (the jitter sum is a conservative bound); loss combines
    as 1 - (1 - a)(1 - b). NaN (not measured) propagates.
    """
    out = user_xtr + xtr_vm
    for k, name in enumerate(criteria):
        if name == "loss":
            out[..., k] = 1.0 - (1.0 - user_xtr[..., k]) * (1.0 - xtr_vm[..., k])
    return out


def placement(
    sublink: FloatArray, usable: BoolArray, rloc_dc: IntArray, dc_count: int, sla: Sla
) -> tuple[FloatArray, BoolArray, IntArray]:
    """What each user would get with its VM at each DC: through that DC's best own RLOC.

    ``sublink`` (users, RLOCs, criteria) is the user<->xTR metric per RLOC and
    ``rloc_dc`` the DC of each RLOC. Returns (values (users, DCs, criteria),
    usable (users, DCs), entry RLOC index per (user, DC), meaningful where usable).
    A DC is usable when its RLOC is and the metrics are finite; with one RLOC per
    DC in DC order (the view is the sublink itself) the finiteness is left to the
    kernel of :func:`decide_migration`, which tests it in cache.
    """
    n, _, k = sublink.shape
    counts = np.bincount(rloc_dc, minlength=dc_count)
    if sublink.shape[1] == dc_count and (rloc_dc == np.arange(dc_count)).all():
        ident: IntArray = np.broadcast_to(np.arange(dc_count, dtype=np.int64), (n, dc_count))
        return sublink, usable, ident
    usable = _finite(sublink, usable)
    values = np.full((n, dc_count, k), np.nan)
    use = np.zeros((n, dc_count), dtype=bool)
    entry = np.full((n, dc_count), -1, dtype=np.int64)
    single = np.flatnonzero(counts == 1)
    if single.size:  # one RLOC: it is the DC's best entry, no ranking needed
        col = np.full(dc_count, -1, dtype=np.int64)
        col[rloc_dc[counts[rloc_dc] == 1]] = np.flatnonzero(counts[rloc_dc] == 1)
        cols1 = col[single]
        ok = usable[:, cols1]
        values[:, single] = np.where(ok[..., None], sublink[:, cols1], np.nan)
        use[:, single] = ok
        entry[:, single] = np.where(ok, cols1[None, :], -1)
    multi = np.flatnonzero(counts > 1)
    for d in multi:
        cols = np.flatnonzero(rloc_dc == d)
        i, _ = _choose(sublink[:, cols], sla, usable[:, cols])
        ok = i >= 0
        entry[:, d] = np.where(ok, cols[np.where(ok, i, 0)], -1)
        rows = np.flatnonzero(ok)
        values[rows, d] = sublink[rows, entry[rows, d]]
        use[:, d] = ok
    return values, use, entry


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


def rank_entries(
    names: Sequence[str],
    values: FloatArray,
    usable: BoolArray,
    sla: Mapping[str, tuple[float, float]],
) -> Decision:
    """Full LISP priority ranking of one user's entries, by :func:`pacao.optimize.solve`.

    ``values`` (candidates, criteria) in the order of ``sla`` (criterion ->
    (weight, bound)). Candidates are passed in name order, the order the
    kernel breaks exact ties in, so the choice agrees with :func:`decide_entry`.
    """
    crit = [Criterion(name=k, weight=w, bound=b) for k, (w, b) in sla.items()]
    cands = []
    for j, name in enumerate(names):
        ok = bool(usable[j]) and bool(np.isfinite(values[j]).all())
        metrics = {k: float(values[j, i]) for i, k in enumerate(sla)} if ok else {}
        cands.append(Candidate(name=name, metrics=metrics, available=ok))
    return solve(Problem(mode=Mode.RLOC, criteria=crit, candidates=cands))
