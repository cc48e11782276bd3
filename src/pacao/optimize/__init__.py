"""The paper's optimization problems.

Single-user problem (1)-(3) in its two meanings (RLOC ranking, VM placement),
solved by enumeration (default) or a literal HiGHS MILP; the vectorised kernel
in :mod:`pacao.optimize.penalty` is what the simulator and controller call in bulk.
"""

from pacao.optimize import exact as _exact  # noqa: F401  (registers "exact")
from pacao.optimize import highs as _highs  # noqa: F401  (registers "highs")
from pacao.optimize.base import solve, solvers
from pacao.optimize.io import load_problem, problem_from_dict
from pacao.optimize.model import (
    Candidate,
    Criterion,
    Decision,
    Mode,
    Problem,
    RankedCandidate,
)
from pacao.optimize.penalty import choose, penalties_from_ratios

__all__ = [
    "Candidate",
    "Criterion",
    "Decision",
    "Mode",
    "Problem",
    "RankedCandidate",
    "choose",
    "load_problem",
    "penalties_from_ratios",
    "problem_from_dict",
    "solve",
    "solvers",
]
