"""Exact solver: enumerate the candidates (exactly one r_d is 1, so this is optimal)."""

from __future__ import annotations

from pacao.optimize.base import build_instance, finish, register
from pacao.optimize.model import Decision, Problem
from pacao.optimize.penalty import objective_and_secondary


@register("exact")
def solve_exact(problem: Problem) -> Decision:
    return rank_exact(problem)


def rank_exact(problem: Problem, first: str | None = None) -> Decision:
    """Every candidate ranked by enumeration; ``first`` names a candidate the caller already
    chose with the same kernel (Step 1's choice), ranked first without being derived again."""
    inst = build_instance(problem)
    obj, sec, pen = objective_and_secondary(inst.ratios, inst.weights)
    names = [c.name for c in problem.criteria]
    objectives = {i: float(obj[j]) for j, i in enumerate(inst.usable)}
    secondary = {i: float(sec[j]) for j, i in enumerate(inst.usable)}
    penalties = {
        i: {k: int(pen[j, n]) for n, k in enumerate(names)} for j, i in enumerate(inst.usable)
    }
    at = None if first is None else inst.names.index(first)
    return finish(inst, "exact", objectives, penalties, secondary, first=at)
