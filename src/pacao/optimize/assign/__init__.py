"""Congestion-aware multi-user assignment (paper Section V-C, eq. 4-9, corrected).

``solve_assign(problem, solver)`` runs one of :data:`SOLVERS`: ``milp`` (exact,
HiGHS), ``batched`` (the paper's math-heuristic) or ``lagrange`` (all users at once,
with a proven lower bound). docs/assign.md gives the model and the methods.
"""

from pacao.optimize.assign.api import SOLVERS, solve_assign
from pacao.optimize.assign.io import load_assign_problem, problem_from_dict
from pacao.optimize.assign.model import (
    AssignProblem,
    AssignResult,
    Evaluation,
    InfeasibleError,
    LatencyFunction,
    evaluate,
)

__all__ = [
    "SOLVERS",
    "AssignProblem",
    "AssignResult",
    "Evaluation",
    "InfeasibleError",
    "LatencyFunction",
    "evaluate",
    "load_assign_problem",
    "problem_from_dict",
    "solve_assign",
]
