"""HiGHS MILP that states (1)-(3) literally.

    min sum_k alpha_k T_k
    s.t. sum_d r_d = 1,  r_d binary
         m_dk r_d <= M_dk T_k   (scaled: r_d - T_k / (q (1 - eps)) <= 0, q = m_dk/M_dk)
         T_k integer >= 0

The full ranking comes from re-solving with the candidates ranked so far fixed
to r_d = 0: each solve proves the next best objective. It is the reference for
the enumeration and the base for side constraints, not the fast path.
"""

from __future__ import annotations

import math

import highspy
import numpy as np

from pacao.optimize.base import build_instance, finish, register
from pacao.optimize.highs_util import new_highs
from pacao.optimize.model import Decision, Problem
from pacao.optimize.penalty import RATIO_EPS, RATIO_FLOOR

_INF = highspy.kHighsInf


def _model(ratios: np.ndarray, weights: np.ndarray) -> highspy.Highs:
    n, k = ratios.shape
    h = new_highs()
    h.setOptionValue("primal_feasibility_tolerance", 1e-10)
    h.setOptionValue("mip_feasibility_tolerance", 1e-10)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 0.0)
    # Columns 0..n-1: r_d binary; n..n+k-1: T_k integer >= 0.
    big_t = max(1.0, float(np.ceil(np.nanmax(np.where(np.isfinite(ratios), ratios, 0.0))) + 1))
    for _ in range(n):
        h.addVar(0.0, 1.0)
    for _ in range(k):
        h.addVar(0.0, big_t)
    for j in range(n + k):
        h.changeColIntegrality(j, highspy.HighsVarType.kInteger)
    for kk in range(k):
        h.changeColCost(n + kk, float(weights[kk]))
    h.addRow(1.0, 1.0, n, np.arange(n, dtype=np.int32), np.ones(n))
    # Row: q r_d - T_k <= floor (q = ratio (1 - eps)), the enumeration's rule.
    # With q < 1 the row is divided by q, so that HiGHS's absolute feasibility
    # tolerance acts as a relative one; a ratio under the floor binds nothing.
    for d in range(n):
        for kk in range(k):
            q = float(ratios[d, kk]) * (1.0 - RATIO_EPS)
            if q <= RATIO_FLOOR:
                continue
            if q < 1.0:
                coefs, rhs = np.array([1.0, -1.0 / q]), RATIO_FLOOR / q
            else:
                coefs, rhs = np.array([q, -1.0]), RATIO_FLOOR
            h.addRow(-_INF, rhs, 2, np.array([d, n + kk], dtype=np.int32), coefs)
    return h


@register("highs")
def solve_highs(problem: Problem) -> Decision:
    inst = build_instance(problem)
    if not np.all(np.isfinite(inst.ratios)):
        # An infinite ratio cannot be a MILP coefficient; it only arises for
        # demand > 0 on residual 0, which build_instance already excludes.
        raise AssertionError("non-finite ratio reached the MILP")
    n, k = inst.ratios.shape
    h = _model(inst.ratios, inst.weights)
    names = [c.name for c in problem.criteria]
    objectives: dict[int, float] = {}
    penalties: dict[int, dict[str, int]] = {}
    secondary: dict[int, float] = {}
    for _ in range(n):
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            raise RuntimeError(f"HiGHS did not prove optimality: {h.getModelStatus()}")
        x = np.asarray(h.getSolution().col_value)
        d = int(np.argmax(x[:n]))
        i = inst.usable[d]
        objectives[i] = float(h.getInfo().objective_function_value)
        t = _minimal_penalties(h, d, n, inst.weights)
        penalties[i] = dict(zip(names, t, strict=True))
        secondary[i] = math.fsum(
            float(inst.weights[kk]) * float(inst.ratios[d, kk]) for kk in range(k)
        )
        h.changeColBounds(d, 0.0, 0.0)  # r_d = 0: rank the rest
    return finish(inst, "highs", objectives, penalties, secondary)


def _minimal_penalties(h: highspy.Highs, d: int, n: int, weights: np.ndarray) -> list[int]:
    """The smallest T_k for the chosen r_d = 1 (a zero-weight T_k is otherwise free)."""
    k = len(weights)
    h.changeColBounds(d, 1.0, 1.0)
    for kk in range(k):
        h.changeColCost(n + kk, 1.0)
    h.run()
    t = [round(v) for v in np.asarray(h.getSolution().col_value)[n:]]
    for kk in range(k):
        h.changeColCost(n + kk, float(weights[kk]))
    h.changeColBounds(d, 0.0, 1.0)
    return t


def optimum_only(problem: Problem) -> float:
    """The optimal objective from a single MILP solve (no ranking)."""
    inst = build_instance(problem)
    h = _model(inst.ratios, inst.weights)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"HiGHS did not prove optimality: {h.getModelStatus()}")
    return float(h.getInfo().objective_function_value)
