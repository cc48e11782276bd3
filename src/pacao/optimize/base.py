"""One interface for the single-user solvers, and the pieces they share."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pacao.errors import InputError
from pacao.optimize.model import (
    PRIORITY_MAX_USABLE,
    PRIORITY_UNUSABLE,
    Candidate,
    Decision,
    Mode,
    Problem,
    RankedCandidate,
)
from pacao.optimize.penalty import RATIO_MAX, FloatArray
from pacao.optimize.ties import rank_order


@dataclass(frozen=True)
class Instance:
    """A problem as arrays: ratios m/M per (candidate, criterion) of usable candidates."""

    problem: Problem
    names: list[str]
    weights: FloatArray
    ratios: FloatArray  # (n_usable, K)
    usable: list[int]  # indices into problem.candidates
    unusable: dict[int, str]  # index -> reason


def ratio(m: float, bound: float) -> float:
    if bound > 0:
        return m / bound
    return 0.0 if m == 0 else math.inf


def build_instance(p: Problem) -> Instance:
    weights = np.array([c.weight for c in p.criteria], dtype=np.float64)
    rows: list[list[float]] = []
    usable: list[int] = []
    unusable: dict[int, str] = {}
    for i, cand in enumerate(p.candidates):
        if not cand.available:
            unusable[i] = "unavailable"
            continue
        row, reason = _candidate_ratios(p, cand)
        if reason is not None:
            unusable[i] = reason
            continue
        for c, q in zip(p.criteria, row, strict=True):
            if q > RATIO_MAX:
                what = "metric" if c.bound is not None else "demand/residual"
                raise InputError(
                    f"candidates[{i}].{c.name}",
                    cand.metrics.get(c.name, cand.residual.get(c.name)),
                    f"{what} is more than {RATIO_MAX:g} times its bound: a data error",
                )
        rows.append(row)
        usable.append(i)
    if not usable:
        raise InputError(
            "candidates",
            {p.candidates[i].name: r for i, r in unusable.items()},
            "no candidate is available and feasible",
        )
    return Instance(
        problem=p,
        names=[c.name for c in p.candidates],
        weights=weights,
        ratios=np.array(rows, dtype=np.float64).reshape(len(rows), len(p.criteria)),
        usable=usable,
        unusable=unusable,
    )


def _candidate_ratios(p: Problem, cand: Candidate) -> tuple[list[float], str | None]:
    row: list[float] = []
    for c in p.criteria:
        if c.bound is not None:
            row.append(ratio(cand.metrics[c.name], c.bound))
            continue
        demand = p.demand[c.name]
        residual = cand.residual[c.name]
        if residual == 0 and demand > 0:
            return row, f"infeasible: residual {c.name} is 0"
        row.append(ratio(demand, residual))
    return row, None


def finish(
    inst: Instance,
    solver: str,
    objectives: dict[int, float],
    penalties: dict[int, dict[str, int]],
    secondary: dict[int, float],
    first: int | None = None,
) -> Decision:
    """Rank usable candidates (objective, secondary, name) and assign LISP priorities.

    ``first`` (a usable candidate's index) is a choice the caller already made with
    the same kernel, e.g. Step 1's: it ranks first and the rest follow in order,
    so the choice is not derived a second time."""
    p = inst.problem
    order = rank_order(objectives, secondary, inst.names)
    if first is not None:
        if first not in objectives:
            raise ValueError(f"first: candidate {inst.names[first]!r} is not usable")
        order = [first, *(i for i in order if i != first)]
    ranked: list[RankedCandidate] = []
    for rank, i in enumerate(order, start=1):
        ranked.append(
            RankedCandidate(
                name=p.candidates[i].name,
                objective=objectives[i],
                penalties=penalties[i],
                priority=min(rank, PRIORITY_MAX_USABLE),
                usable=True,
            )
        )
    for i in sorted(inst.unusable, key=lambda i: p.candidates[i].name):
        ranked.append(
            RankedCandidate(
                name=p.candidates[i].name,
                objective=None,
                penalties={},
                priority=PRIORITY_UNUSABLE,
                usable=False,
                reason=inst.unusable[i],
            )
        )
    best = ranked[0]
    assert best.objective is not None
    return Decision(
        mode=p.mode,
        solver=solver,
        choice=best.name,
        objective=best.objective,
        sla_met=all(t <= 1 for t in best.penalties.values()),
        ranking=ranked,
    )


SolverFn = Callable[[Problem], Decision]

_SOLVERS: dict[str, SolverFn] = {}


def register(name: str) -> Callable[[SolverFn], SolverFn]:
    def deco(fn: SolverFn) -> SolverFn:
        _SOLVERS[name] = fn
        return fn

    return deco


def solvers() -> list[str]:
    return sorted(_SOLVERS)


def solve(problem: Problem, solver: str = "exact") -> Decision:
    """Solve (1)-(3) with the named solver; ``exact`` is the default enumeration."""
    try:
        fn = _SOLVERS[solver]
    except KeyError:
        raise InputError("solver", solver, f"choose one of {solvers()}") from None
    return fn(problem)


__all__ = ["Mode", "build_instance", "finish", "register", "solve", "solvers"]
