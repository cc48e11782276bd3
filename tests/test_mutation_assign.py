"""The MILP's and the batched heuristic's reported figures (written against the survivors of
mutation testing of optimize/assign/milp.py): a proven optimum has its bound equal to its
objective, the batched heuristic reports its batches and no bound, and its errors name the
option and the batch.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pacao.optimize.assign import InfeasibleError, problem_from_dict
from pacao.optimize.assign.milp import solve_batched, solve_milp
from pacao.optimize.assign.model import evaluate

RISING = {"breakpoints": [[0, 0], [0.5, 4], [1, 30]]}


def doc(caps: list[int], existing: list[int], lat: list[list[float | None]], fn: object = RISING):  # type: ignore[no-untyped-def]
    return {
        "latency_function": fn,
        "dcs": [
            {"name": f"d{j}", "capacity": c, "existing": e}
            for j, (c, e) in enumerate(zip(caps, existing, strict=True))
        ],
        "users": [
            {
                "id": f"u{i}",
                "bound_ms": 40,
                "latency_ms": {f"d{j}": v for j, v in enumerate(row) if v is not None},
            }
            for i, row in enumerate(lat)
        ],
    }


LAT = [[30, 34, 50], [31, 20, 45], [35, 36, 10], [25, 39, 38], [33, 30, 39]]


@pytest.mark.parametrize("integer", [False, True])
def test_a_proven_optimum_has_its_bound_equal_to_its_objective(integer: bool) -> None:
    p = problem_from_dict(doc([4, 3, 2], [1, 0, 1], LAT), integer_penalty=integer)
    res = solve_milp(p)
    assert res.optimal and res.notes["highs_status"] == "Optimal"
    # Enumeration of all 3^5 assignments within the rooms (3, 3, 1) from the model's cost.
    room = [3, 3, 1]
    best = min(
        evaluate(p, np.array(c)).objective
        for c in itertools.product(range(3), repeat=5)
        if all(c.count(d) <= room[d] for d in range(3))
    )
    assert res.objective == pytest.approx(best, rel=1e-9)
    assert res.lower_bound is not None
    assert res.lower_bound == pytest.approx(res.objective, rel=1e-9)
    assert res.lower_bound <= res.objective
    assert res.solver == "milp" and res.seconds > 0


def test_batched_reports_its_batches_and_no_bound() -> None:
    p = problem_from_dict(doc([4, 3, 2], [1, 0, 1], LAT))
    res = solve_batched(p, 2)
    assert res.notes == {"batches": 3, "batch_size": 2}
    assert res.lower_bound is None and res.solver == "batched"
    load = np.bincount(res.choice, minlength=3)
    assert (load <= [3, 3, 1]).all()
    assert res.objective == pytest.approx(evaluate(p, res.choice).objective)
    # One batch of everyone is the MILP itself; a time limit shared over batches that
    # are each solved within it changes nothing.
    whole = solve_batched(p, 5)
    assert whole.notes["batches"] == 1
    assert whole.objective == pytest.approx(solve_milp(p).objective, rel=1e-9)
    limited = solve_batched(p, 2, time_limit=60.0)
    assert limited.choice.tolist() == res.choice.tolist()


def test_batches_see_the_earlier_batches_as_existing_load() -> None:
    # Two users both best at d0, which has room for one; batches of one: the first takes
    # d0, the second must see it full and take d1. d1 is over the 40 ms bound (60 ms), so
    # d0 is strictly better for the first (at 30 ms both were within it: a tie HiGHS broke
    # either way).
    p = problem_from_dict(doc([2, 4], [1, 0], [[10, 60], [10, 60]]))
    res = solve_batched(p, 1)
    assert res.choice.tolist() == [0, 1]
    assert res.notes == {"batches": 2, "batch_size": 1}


def test_batched_errors_name_the_option_and_the_batch() -> None:
    p = problem_from_dict(doc([4, 3, 2], [1, 0, 1], LAT))
    for bad in (0, -3):
        with pytest.raises(InfeasibleError) as err:
            solve_batched(p, bad)
        assert err.value.field == "--batch-size" and err.value.value == bad
        assert err.value.allowed == "expected an integer >= 1"
    # Feasible overall (u1 on d1, u0 on d0) but batch 1 (u0 alone) takes d1, its best, and
    # leaves u1, who can only use d1, no room.
    q = problem_from_dict(doc([2, 2], [1, 1], [[30, 10], [None, 20]]))
    assert solve_milp(q).choice.tolist() == [0, 1]
    with pytest.raises(InfeasibleError) as err:
        solve_batched(q, 1)
    assert err.value.field == "--batch-size" and err.value.value == 1
    assert "batch 2 (users 2..2) has no room left after the earlier batches" in str(err.value)
