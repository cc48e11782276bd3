"""The corrected MILP of eq. (4)-(9) in HiGHS, and the paper's batched math-heuristic.

    min  sum_u T_u
    s.t. sum_d r_ud = 1                                   (5)
         n_d = sum_u r_ud <= floor(C_d - e_d)             (6)
         L_d >= a_i (n_d + e_d) / C_d + b_i   every piece i of f_d (replaces 7-8)
         T_u >= (L_d + l_ud) / LT_u - M_ud (1 - r_ud)     (9, as a penalty)
         T_u >= 1,  r binary,  L_d <= Lmax_d

f_d convex means f_d(x) = max_i (a_i x + b_i): L_d >= every piece is exact
because the objective pushes L_d down to f_d(x_d) whenever a user pays for it.
M_ud = (Lmax_d + l_ud) / LT_u - 1 with Lmax_d = f_d at full capacity is the
smallest constant that leaves the row slack for r_ud = 0 (T_u >= 1 and
L_d <= Lmax_d); a row with M_ud <= 0 can never bind and is dropped.

L_d is not a column itself: HiGHS sees D_d = (L_d - Lmin_d) / (Lmax_d - Lmin_d)
in [0, 1] (Lmin_d = f_d with no new user). At a large capacity the whole range
of L_d is tiny (1e-7 ms at C = 1e7), and a column that narrow with 1e-7
coefficients is below what HiGHS's tolerances resolve: HiGHS 1.16 called a
one-user instance infeasible (test_assign:
test_milp_is_feasible_where_the_congestion_range_is_tiny). Scaled, the piece
rows have coefficients near 1 / room and the range is 1.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import highspy
import numpy as np

from pacao.optimize.assign.model import (
    AssignProblem,
    AssignResult,
    InfeasibleError,
    evaluate,
)
from pacao.optimize.highs_util import new_highs
from pacao.optimize.penalty import FloatArray, IntArray

_INF = highspy.kHighsInf
#: A HiGHS dual bound above the objective by less than this (relative) is tolerance noise.
BOUND_TOL = 1e-7
#: A DC whose congestion rises by at most this (relative to its level) over its room is flat.
FLAT_REL = 1e-12


class SolverLimitError(RuntimeError):
    """The solver stopped at its limit without any feasible assignment."""


def _build(p: AssignProblem) -> tuple[highspy.Highs, IntArray, IntArray]:
    nu, nd = p.n_users, p.n_dcs
    pu, pd = np.nonzero(p.allowed)
    npair = pu.size
    room = p.room
    sc = scaled_congestion(p)
    lmin, width = sc.lmin, sc.width
    lmax = lmin + width * sc.upper
    lat = p.latency[pu, pd]
    lt = p.bound[pu]
    big_m = (lmax[pd] + lat) / lt - 1.0
    t_ub = np.ones(nu)
    np.maximum.at(t_ub, pu, (lmax[pd] + lat) / lt)
    if p.integer_penalty:
        t_ub = np.ceil(t_ub)
    # Columns: r (npair) | D_d (nd) | T_u (nu).
    col_d, col_t = npair, npair + nd
    h = new_highs()
    h.setOptionValue("mip_rel_gap", 1e-9)
    h.setOptionValue("mip_abs_gap", 1e-9)
    # HiGHS 1.16's presolve reduced a 2-user instance to empty with a worse assignment
    # it called optimal, also on the scaled model (test_assign:
    # test_milp_optimum_at_huge_capacity_without_presolve); without it the 200- and
    # 1,000-user benchmark instances did as well or better within 60 s.
    h.setOptionValue("presolve", "off")
    # Also the tolerance of the LP relaxations, presolve and the final check: for a MIP,
    # HiGHS uses it in place of primal_feasibility_tolerance.
    h.setOptionValue("mip_feasibility_tolerance", 1e-9)
    lower = np.concatenate([np.zeros(npair), np.zeros(nd), np.ones(nu)])
    upper = np.concatenate([np.ones(npair), sc.upper, t_ub])
    h.addVars(lower.size, lower, upper)
    cost = np.concatenate([np.zeros(npair + nd), np.ones(nu)])
    h.changeColsCost(cost.size, np.arange(cost.size, dtype=np.int32), cost)
    integer = (
        np.arange(npair)
        if not p.integer_penalty
        else np.r_[np.arange(npair), col_t + np.arange(nu)]
    )
    h.changeColsIntegrality(
        integer.size,
        integer.astype(np.int32),
        np.full(integer.size, highspy.HighsVarType.kInteger),
    )
    rows = _Rows()
    pairs = np.arange(npair)
    # (5) one DC per user.
    for u_pairs in np.split(pairs, np.flatnonzero(np.diff(pu)) + 1):
        rows.add(1.0, 1.0, u_pairs, np.ones(u_pairs.size))
    by_dc = [pairs[pd == d] for d in range(nd)]
    for d in range(nd):
        k = by_dc[d]
        # (6) capacity.
        rows.add(-_INF, float(room[d]), k, np.ones(k.size))
        # (7) corrected, scaled: D_d >= c_i n_d + r_i for every piece.
        for c, r in sc.pieces[d]:
            rows.add(r, _INF, np.r_[col_d + d, k], np.r_[1.0, np.full(k.size, -c)])
    # (9) as a penalty: T_u - width_d D_d / LT_u - M r_ud >= (l_ud + lmin_d) / LT_u - M.
    for j in np.flatnonzero(big_m > 0):
        rows.add(
            float((lat[j] + lmin[pd[j]]) / lt[j] - big_m[j]),
            _INF,
            np.array([col_t + pu[j], col_d + pd[j], j]),
            np.array([1.0, -width[pd[j]] / lt[j], -big_m[j]]),
        )
    # Valid cut: u on d means n_d >= 1, so T_u >= c_ud(f_d at one new user). It
    # gives the LP relaxation the congestion-free cost the BigM rows hide.
    l1 = np.array([float(p.level(d, min(1, int(room[d])))) for d in range(nd)])
    floor_cost = p.cost(lat, pu, l1[pd])
    for u_pairs in np.split(pairs, np.flatnonzero(np.diff(pu)) + 1):
        rows.add(
            0.0,
            _INF,
            np.r_[col_t + pu[u_pairs[0]], u_pairs],
            np.r_[1.0, -floor_cost[u_pairs]],
        )
    rows.flush(h)
    return h, pu, pd


class ScaledCongestion(NamedTuple):
    """L_d = lmin_d + width_d D_d with rows D_d >= c n_d + r per piece, D_d in [0, upper_d]."""

    lmin: FloatArray
    width: FloatArray
    pieces: list[list[tuple[float, float]]]
    upper: FloatArray


def scaled_congestion(p: AssignProblem) -> ScaledCongestion:
    """The congestion columns of the model, scaled so that HiGHS resolves them."""
    nd, room = p.n_dcs, p.room
    lmin = np.array([float(p.level(d, 0)) for d in range(nd)])
    lmax = np.array([float(p.level(d, int(room[d]))) for d in range(nd)])
    # A DC whose f is flat over its room has width 0 and D_d fixed at 0: also when f
    # rises by at most FLAT_REL of lmin_d (C = 1e300 and the like), a rise L_d itself
    # barely resolves and that would put 1e280-sized coefficients in the scaled rows.
    width = lmax - lmin
    width[width <= FLAT_REL * np.maximum(1.0, lmin)] = 0.0
    pieces = [_scaled_pieces(p, d, float(width[d]), int(room[d])) for d in range(nd)]
    # D_d's upper bound: 1, or where the pieces put it at full room when their rounding
    # lands above the model's own f_d(room) (a row must not cut off the full DC).
    upper = np.array(
        [max([1.0 if width[d] > 0 else 0.0] + [c * room[d] + r for c, r in pieces[d]])
         for d in range(nd)]
    )  # fmt: skip
    return ScaledCongestion(lmin, width, pieces, upper)


def _scaled_pieces(p: AssignProblem, d: int, width: float, room: int) -> list[tuple[float, float]]:
    """The pieces of f_d as rows D_d >= c n_d + r in the scaled column; none for a flat DC.

    a (n + e) / C + b >= L = lmin + width D  becomes  c = a / (C width) and
    r = (a e / C + b - lmin) / width. A piece that stays at or below lmin for every
    n in [0, room] can never bind (D_d >= 0) and is dropped.
    """
    if width <= 0.0:
        return []
    lmin = float(p.level(d, 0))
    out = []
    for a, b in p.functions[d].pieces():
        with np.errstate(over="ignore"):  # a far-below piece: r = -inf, dropped
            c = float(a / p.capacity[d] / width)
            r = float((a * p.existing[d] / p.capacity[d] + b - lmin) / width)
        if c * room + r <= 0.0:
            continue
        out.append((c, r))
    return out


class _Rows:
    """Collect rows and pass them to HiGHS in one call (row-wise CSR)."""

    def __init__(self) -> None:
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.idx: list[np.ndarray] = []
        self.val: list[np.ndarray] = []

    def add(self, lo: float, hi: float, idx: np.ndarray, val: np.ndarray) -> None:
        self.lo.append(lo)
        self.hi.append(hi)
        self.idx.append(np.asarray(idx, dtype=np.int32))
        self.val.append(np.asarray(val, dtype=np.float64))

    def flush(self, h: highspy.Highs) -> None:
        sizes = np.array([i.size for i in self.idx], dtype=np.int64)
        starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int32)
        h.addRows(
            len(self.lo),
            np.array(self.lo),
            np.array(self.hi),
            int(sizes.sum()),
            starts,
            np.concatenate(self.idx),
            np.concatenate(self.val),
        )


def solve_milp(p: AssignProblem, time_limit: float | None = None) -> AssignResult:
    """Exact for small instances; with ``time_limit`` the best assignment and HiGHS's bound."""
    start = time.perf_counter()
    p.check_feasible()
    h, pu, pd = _build(p)
    if time_limit is not None:
        h.setOptionValue("time_limit", float(time_limit))
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    if status == highspy.HighsModelStatus.kInfeasible:
        raise InfeasibleError(
            "users", p.n_users, "infeasible: the allowed DCs cannot take every user within capacity"
        )
    has_solution = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
    if not has_solution:
        raise SolverLimitError(f"HiGHS found no assignment ({h.modelStatusToString(status)})")
    x = np.asarray(h.getSolution().col_value)[: pu.size]
    take = x > 0.5
    choice = np.empty(p.n_users, dtype=np.int64)
    choice[pu[take]] = pd[take]
    ev = evaluate(p, choice)
    bound = proven_bound(float(info.mip_dual_bound), ev.objective)
    return AssignResult(
        solver="milp",
        choice=choice,
        evaluation=ev,
        lower_bound=bound,
        seconds=time.perf_counter() - start,
        optimal=status == highspy.HighsModelStatus.kOptimal,
        notes={"highs_status": h.modelStatusToString(status), "nodes": int(info.mip_node_count)},
    )


def proven_bound(bound: float, objective: float) -> float:
    """HiGHS's dual bound as a lower bound of ``objective``: above it by tolerance noise
    (``BOUND_TOL``, relative and absolute) it is the objective itself; further above, the
    solver is wrong, and that must not pass as a proof."""
    if bound > objective * (1 + BOUND_TOL) + BOUND_TOL:
        raise AssertionError(f"HiGHS bound {bound} above objective {objective}")
    return min(bound, objective)


def subproblem(p: AssignProblem, users: IntArray, existing: np.ndarray) -> AssignProblem:
    """The instance restricted to ``users`` with existing loads replaced."""
    return AssignProblem(
        dc_names=p.dc_names,
        capacity=p.capacity,
        existing=np.asarray(existing, dtype=np.float64),
        functions=p.functions,
        user_ids=tuple(p.user_ids[int(u)] for u in users),
        bound=p.bound[users],
        latency=p.latency[users],
        integer_penalty=p.integer_penalty,
    )


def solve_batched(
    p: AssignProblem, batch_size: int, time_limit: float | None = None
) -> AssignResult:
    """The paper's math-heuristic: batches in input order, each solved exactly, then frozen.

    Each batch sees the earlier batches' users as existing load e_d, and
    ignores the latency it adds to them: that is what makes it a heuristic.
    No lower bound is proven.
    """
    if batch_size < 1:
        raise InfeasibleError("--batch-size", batch_size, "expected an integer >= 1")
    start = time.perf_counter()
    p.check_feasible()
    choice = np.empty(p.n_users, dtype=np.int64)
    existing = p.existing.copy()
    n_batches = 0
    for first in range(0, p.n_users, batch_size):
        users = np.arange(first, min(first + batch_size, p.n_users))
        left = None
        if time_limit is not None:
            # Share what is left evenly over the remaining batches: each keeps its best.
            batches_left = -(-(p.n_users - first) // batch_size)
            left = max(0.5, (time_limit - (time.perf_counter() - start)) / batches_left)
        sub = subproblem(p, users, existing)
        try:
            res = solve_milp(sub, left)
        except InfeasibleError:
            raise InfeasibleError(
                "--batch-size",
                batch_size,
                f"infeasible for the batched heuristic: batch {n_batches + 1} (users "
                f"{first + 1}..{users[-1] + 1}) has no room left after the earlier batches",
            ) from None
        choice[users] = res.choice
        existing = existing + np.bincount(res.choice, minlength=p.n_dcs)
        n_batches += 1
    return AssignResult(
        solver="batched",
        choice=choice,
        evaluation=evaluate(p, choice),
        lower_bound=None,
        seconds=time.perf_counter() - start,
        notes={"batches": n_batches, "batch_size": batch_size},
    )
