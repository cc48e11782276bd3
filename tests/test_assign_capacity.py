"""The MILP's capacity row (6) with a flat latency function.

A latency function whose last segment rises hides a capacity row that allows one user
too many (L_d <= f_d(full) already forbids it); a flat one does not, so these instances
pin the row itself: every solver keeps each DC within floor(C_d - e_d)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pacao.optimize.assign import problem_from_dict, solve_assign

FLAT = {"breakpoints": [[0, 5], [1, 5]]}


def doc(caps: list[int], existing: list[int], lat: list[list[int]]) -> dict[str, object]:
    return {
        "latency_function": FLAT,
        "dcs": [
            {"name": f"d{j}", "capacity": c, "existing": e}
            for j, (c, e) in enumerate(zip(caps, existing, strict=True))
        ],
        "users": [
            {"id": f"u{i}", "bound_ms": 40, "latency_ms": {f"d{j}": v for j, v in enumerate(row)}}
            for i, row in enumerate(lat)
        ],
    }


@pytest.mark.parametrize("solver", ["milp", "lagrange", "batched"])
def test_a_full_preferred_dc_takes_no_extra_user(solver: str) -> None:
    # Both users prefer d0 (35 ms, T = 1) over d1 (95 ms, T = 2.5); d0 has room for one.
    p = problem_from_dict(doc([2, 4], [1, 0], [[30, 90], [30, 90]]))
    res = solve_assign(p, solver, batch_size=2)
    assert sorted(res.choice.tolist()) == [0, 1]
    assert res.evaluation.load.tolist() == [1, 1]
    assert res.objective == pytest.approx(1 + 95 / 40)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 3), min_size=2, max_size=3).flatmap(
        lambda caps: st.tuples(
            st.just(caps),
            st.lists(
                st.lists(st.integers(10, 120), min_size=len(caps), max_size=len(caps)),
                min_size=1,
                max_size=sum(caps),
            ),
        )
    )
)
def test_milp_loads_stay_within_room_with_a_flat_function(
    case: tuple[list[int], list[list[int]]],
) -> None:
    caps, lat = case
    p = problem_from_dict(doc(caps, [0] * len(caps), lat))
    res = solve_assign(p, "milp")
    assert np.all(res.evaluation.load <= p.room)
    load = np.bincount(res.choice, minlength=len(caps))
    assert (load <= np.array(caps)).all()
