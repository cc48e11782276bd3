"""`pacao assign`: read an instance, solve it, print JSON (the CLI only wires this in)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pacao.errors import InputError
from pacao.optimize.assign.api import SOLVERS, solve_assign
from pacao.optimize.assign.io import load_assign_problem
from pacao.optimize.assign.milp import SolverLimitError


def run_assign(
    file: Path,
    solver: str,
    batch_size: int,
    integer_penalty: bool,
    time_limit: float | None,
) -> tuple[int, str]:
    """Return (exit status, message): 0 and nothing on success (JSON on stdout)."""
    if solver not in SOLVERS:
        return 2, str(InputError("--solver", solver, f"choose one of {list(SOLVERS)}"))
    if batch_size < 1:
        return 2, str(InputError("--batch-size", batch_size, "expected an integer >= 1"))
    try:
        problem = load_assign_problem(file, integer_penalty=True if integer_penalty else None)
        result = solve_assign(problem, solver, batch_size=batch_size, time_limit=time_limit)
    except InputError as exc:
        return 2, str(exc)
    except SolverLimitError as exc:
        return 1, str(exc)
    json.dump(result.to_dict(problem), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0, ""
