"""One entry point for the assignment solvers."""

from __future__ import annotations

from pacao.errors import InputError
from pacao.optimize.assign.model import AssignProblem, AssignResult

SOLVERS = ("milp", "batched", "lagrange")


def solve_assign(
    problem: AssignProblem,
    solver: str = "lagrange",
    *,
    batch_size: int = 100,
    time_limit: float | None = None,
) -> AssignResult:
    """Solve with ``milp`` (exact), ``batched`` (the paper's heuristic) or ``lagrange``."""
    if time_limit is not None and not time_limit > 0:
        raise InputError("--time-limit", time_limit, "expected a number of seconds > 0")
    if solver == "milp":
        from pacao.optimize.assign.milp import solve_milp

        return solve_milp(problem, time_limit)
    if solver == "batched":
        from pacao.optimize.assign.milp import solve_batched

        return solve_batched(problem, batch_size, time_limit)
    if solver == "lagrange":
        from pacao.optimize.assign.lagrange import solve_lagrange

        return solve_lagrange(problem, time_limit)
    raise InputError("--solver", solver, f"choose one of {list(SOLVERS)}")
