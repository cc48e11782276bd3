"""The MILP of eq. (4)-(9) with a flat latency function (written against mutmut's survivors in
optimize/assign/milp.py).

A flat f_d makes L_d a constant, so the congestion rows are skipped and what decides the
optimum is the capacity row (6), the bounds on L_d and T_u and the penalty rows (9) in all
their regimes: M_ud <= 0 (the row is dropped, the DC is within the user's bound), 0 < M_ud
<= 1 and M_ud > 1. Every optimum is checked against the enumeration of all assignments, the
Hall-infeasible instance against the solver's own infeasibility verdict, and `subproblem`
field by field.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pacao.optimize.assign import InfeasibleError, problem_from_dict
from pacao.optimize.assign.milp import (
    BOUND_TOL,
    SolverLimitError,
    proven_bound,
    scaled_congestion,
    solve_milp,
    subproblem,
)
from pacao.optimize.assign.model import AssignProblem, evaluate
from test_mutation_assign import doc as assign_doc

FLAT = {"breakpoints": [[0, 5], [1, 5]]}


def doc(caps: list[int], existing: list[int], lat: list[list[float | None]]) -> dict[str, object]:
    """test_mutation_assign's instance with the flat latency function."""
    out: dict[str, object] = assign_doc(caps, existing, lat, FLAT)
    return out


def enumerated(p: AssignProblem) -> float:
    room = p.room.tolist()
    best = np.inf
    for c in itertools.product(range(p.n_dcs), repeat=p.n_users):
        if any(c.count(d) > room[d] for d in range(p.n_dcs)):
            continue
        if not all(np.isfinite(p.latency[u, d]) for u, d in enumerate(c)):
            continue
        best = min(best, evaluate(p, np.array(c)).objective)
    return float(best)


# (5 + l) / 40 per pair: 30 -> 0.875 (M < 0), 50 -> 1.375 and 70 -> 1.875 (0 < M <= 1 with
# L_max = 5: M = (5 + l) / 40 - 1), 110 -> 2.875 (M > 1); the rooms (1, 2, 1) keep the
# preferred DC of most users from taking them all.
CASES = [
    ([2, 3, 1], [1, 1, 0], [[30, 50, 110], [30, 70, 50], [50, 30, 110], [110, 50, 30]]),
    ([1, 2, 2], [0, 0, 1], [[70, 30, None], [30, 110, 50], [50, 50, 70], [None, 30, 50]]),
]


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_flat_function_optimum_matches_enumeration(
    case: tuple[list[int], list[int], list[list[float | None]]], integer: bool
) -> None:
    p = problem_from_dict(doc(*case), integer_penalty=integer)
    res = solve_milp(p)
    best = enumerated(p)
    assert res.objective == pytest.approx(best, rel=1e-9)
    assert res.lower_bound == pytest.approx(best, rel=1e-9)
    assert res.optimal and res.notes["highs_status"] == "Optimal"
    assert isinstance(res.notes["nodes"], int) and res.notes["nodes"] >= 0
    load = np.bincount(res.choice, minlength=p.n_dcs)
    assert (load <= p.room).all()
    assert np.isfinite(p.latency[np.arange(p.n_users), res.choice]).all()


def test_a_dc_at_its_room_sends_the_next_user_past_its_bound() -> None:
    # Two users at 30 ms from d0 (T = 0.875 -> 1), 110 ms from d1 (T = 2.875); d0 has room
    # for exactly one more, so one of them pays 2.875.
    p = problem_from_dict(doc([3, 5], [2, 0], [[30, 110], [30, 110]]))
    res = solve_milp(p)
    assert sorted(res.choice.tolist()) == [0, 1]
    assert res.objective == pytest.approx(1 + 115 / 40)
    assert res.evaluation.penalties.tolist() in ([1.0, 115 / 40], [115 / 40, 1.0])


@pytest.mark.parametrize(
    ("fn", "caps", "lat", "best"),
    [
        # No congestion: T = 1 at 0.2 ms, 4 at 2 ms; d0 takes one user, the other pays 4.
        ({"breakpoints": [[0, 0], [1, 0]]}, [1, 5], [[0.2, 2.0], [0.2, 2.0]], 5.0),
        # f(x) = x ms on one DC: both users there see 1 ms, T = 1.2 / 0.5 = 2.4 each, more
        # than the one-user cut (0.7 / 0.5 = 1.4): the penalty rows (M = 1.4) decide.
        ({"breakpoints": [[0, 0], [1, 1]]}, [2], [[0.2], [0.2]], 4.8),
    ],
)
def test_sub_millisecond_bounds_keep_the_penalty_rows_exact(
    fn: object, caps: list[int], lat: list[list[float | None]], best: float
) -> None:
    d = doc(caps, [0] * len(caps), lat)
    d["latency_function"] = fn
    for user in d["users"]:  # type: ignore[attr-defined]
        user["bound_ms"] = 0.5  # LT below 1 ms: M_ud and T's upper bound divide by it
    p = problem_from_dict(d)
    res = solve_milp(p)
    assert res.objective == pytest.approx(best) and res.lower_bound == pytest.approx(best)


# Instances from a random search (rising functions of three pieces; the numbers as drawn:
# rounded, HiGHS takes other paths and proves them anyway). At its default relative gap
# (1e-4) HiGHS stops the first with its bound 8e-5 below the optimum; at its default
# feasibility tolerance (1e-6), the second 1.8e-7 below it. In the third, u3's latency to
# d0 is set so that the two best assignments are 5e-7 apart: at the default absolute gap
# (1e-6) HiGHS returns the worse one.
SEARCHED = [
    (
        [[0, 0], [0.18329952812884379, 11.77], [0.3824085852724197, 25.295],
         [1.0, 70.37883748530206]],
        [5, 3, 4],
        [1, 0, 3],
        [[17.322, None, 40.184], [17.868, 19.198, 12.343], [None, 33.871, 34.107],
         [50.789, 53.687, 40.559], [5.443, 32.515, 11.271]],
    ),
    (
        [[0, 0], [0.21564854972274328, 8.85], [0.6026917318285873, 28.053],
         [1.0, 92.06094461897712]],
        [4, 5, 5],
        [0, 2, 0],
        [[39.193, 24.899, 29.319], [43.549, 22.878, 9.944], [20.083, 17.707, 25.771],
         [43.791, 19.901, 32.925], [54.178, 14.088, 5.083]],
    ),
    (
        [[0, 0], [0.4364969583739745, 10.464], [0.6572719966416742, 25.147],
         [1.0, 74.09187941776891]],
        [5, 6],
        [3, 3],
        [[22.503, None], [None, 7.231], [57.631, 5.8], [28.913271806979097, 9.872]],
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", SEARCHED)
def test_the_optimum_is_proven_to_its_last_digits(
    case: tuple[list[list[float]], list[int], list[int], list[list[float | None]]],
) -> None:
    breakpoints, caps, existing, lat = case
    p = problem_from_dict(assign_doc(caps, existing, lat, {"breakpoints": breakpoints}))
    res = solve_milp(p)
    best = enumerated(p)
    assert res.optimal
    assert res.objective == pytest.approx(best, rel=1e-9)
    assert res.lower_bound == pytest.approx(best, rel=1e-9)


def test_a_bound_above_the_objective_is_noise_up_to_the_tolerance_then_an_error() -> None:
    # HiGHS's dual bound may exceed the objective by float noise (1e-15 relative on the
    # instances above); up to BOUND_TOL (relative, plus as much absolute) it is the
    # objective, beyond it the solver is wrong and says so.
    obj = 10.0
    edge = obj * (1 + BOUND_TOL) + BOUND_TOL
    assert proven_bound(9.5, obj) == 9.5
    assert proven_bound(-math.inf, obj) == -math.inf  # stopped at a limit without a bound
    assert proven_bound(obj + 1e-12, obj) == obj
    assert proven_bound(edge, obj) == obj
    with pytest.raises(AssertionError, match=r"HiGHS bound .* above objective 10\.0"):
        proven_bound(math.nextafter(edge, math.inf), obj)
    with pytest.raises(AssertionError, match="above objective"):
        proven_bound(obj * 1.5, obj)


@pytest.mark.parametrize("cap", [3.5, 40.0, 1e7, 1e12, 1e300, math.inf])
@pytest.mark.parametrize("share", [0.0, 0.5, "room-3"])
def test_scaled_rows_give_the_model_level_at_every_load(cap: float, share: object) -> None:
    # lmin + width * max(0, rows at n) must be f_d((n + e) / C) for every n the DC can
    # take, to float resolution of the level itself: the MILP prices users by it.
    existing = 0.0 if cap == math.inf else (cap - 3 if share == "room-3" else cap * share)
    fn = {"breakpoints": [[0, 1], [0.25, 3], [0.5, 10], [1, 60]]}
    lat = [[30.0, 40.0]] * 6
    d = assign_doc([cap, cap], [existing, 0.0], lat, fn)
    p = problem_from_dict(d)
    sc = scaled_congestion(p)
    for dc in range(p.n_dcs):
        n = np.arange(int(p.room[dc]) + 1)
        rows = np.zeros(n.size)
        for c, r in sc.pieces[dc]:
            rows = np.maximum(rows, c * n + r)
        assert np.all(rows <= sc.upper[dc])
        level = p.level(dc, n)
        tol = 1e-12 * max(1.0, float(level.max()))
        assert np.allclose(sc.lmin[dc] + sc.width[dc] * rows, level, rtol=0, atol=tol)
    if math.isfinite(cap) and cap < 1e15:
        assert sc.width[1] > 0  # the rise is resolved, not flattened


def test_a_dc_without_room_keeps_its_congestion_bounds() -> None:
    # d0 (2 of 2.5 used) has no room under a rising function: no new user can come, so
    # both bounds of its L_d are f(0.8) = 19.6 ms, the level with 0 new users (one more
    # user would be past full load).
    rising = {"breakpoints": [[0, 0], [0.5, 4], [1, 30]]}
    d = doc([2, 3], [2, 0], [[10, 20], [10, 25]])
    d["dcs"][0]["capacity"] = 2.5  # type: ignore[index]
    d["latency_function"] = rising
    p = problem_from_dict(d)
    assert p.room.tolist() == [0, 2]
    res = solve_milp(p)
    assert res.choice.tolist() == [1, 1]
    assert res.objective == pytest.approx(enumerated(p)) and res.optimal


def test_users_restricted_to_one_full_dc_are_infeasible_for_the_solver() -> None:
    # Each user alone has room (d0 takes one), and the total room (1 + 1) covers both users,
    # so only the solver sees that d0 cannot take both.
    p = problem_from_dict(doc([1, 1], [0, 0], [[30, None], [40, None]]))
    with pytest.raises(InfeasibleError) as err:
        solve_milp(p)
    assert err.value.allowed == "infeasible: the allowed DCs cannot take every user within capacity"
    assert err.value.field == "users" and err.value.value == 2


def test_a_zero_time_limit_reaches_highs() -> None:
    p = problem_from_dict(doc(*CASES[0]))
    with pytest.raises(SolverLimitError) as err:
        solve_milp(p, time_limit=0.0)
    assert str(err.value) == "HiGHS found no assignment (Time limit reached)"


def test_a_congestion_piece_of_slope_one_per_user_is_kept() -> None:
    # f = max(0, 4x - 2) ms on capacity 4: the first piece (flat, 0) is redundant and
    # skipped, the second has coefficient a / C = 1 per user (L_d >= n_d - 2). Three users
    # on d0 (L = 1 ms, T = 1) and one on d1 (2.2 ms, T = 1.1) is the optimum, 4.1; all four
    # on d0 would cost 4 x 1.5 = 6 once the congestion is counted.
    d = doc([4, 4], [0, 0], [[1, 2.2]] * 4)
    d["latency_function"] = {"breakpoints": [[0, 0], [0.5, 0], [1, 2]]}
    for user in d["users"]:  # type: ignore[attr-defined]
        user["bound_ms"] = 2
    p = problem_from_dict(d)
    res = solve_milp(p)
    assert sorted(res.choice.tolist()) == [0, 0, 0, 1]
    assert res.objective == pytest.approx(4.1) == enumerated(p)
    assert res.lower_bound == pytest.approx(4.1)


def test_subproblem_keeps_the_dcs_and_takes_the_users_in_order() -> None:
    p = problem_from_dict(doc(*CASES[0]), integer_penalty=True)
    sub = subproblem(p, np.array([3, 1]), np.array([2, 0, 1]))
    assert sub.dc_names == p.dc_names and sub.functions == p.functions
    assert sub.capacity is p.capacity and sub.integer_penalty
    assert sub.existing.dtype == np.float64 and sub.existing.tolist() == [2.0, 0.0, 1.0]
    assert sub.user_ids == ("u3", "u1")
    assert sub.bound.tolist() == [40.0, 40.0]
    np.testing.assert_array_equal(sub.latency, p.latency[[3, 1]])


class FakeClock:
    """`milp.time` for the batched heuristic: a solve takes 10 s, nothing else takes time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("time_limit", "n_users", "shares"),
    [
        # 3 batches: the first gets a third of 100 s, the next half of the 90 left, the
        # last the 80 left.
        (100.0, 5, [100 / 3, 45.0, 80.0]),
        # Never less than 0.5 s, even when the time is up.
        (1.2, 3, [0.6, 0.5]),
        (None, 5, [None, None, None]),
    ],
)
def test_batches_share_the_time_left_evenly(
    monkeypatch: pytest.MonkeyPatch, time_limit: float | None, n_users: int, shares: list[float]
) -> None:
    from pacao.optimize.assign import milp

    clock = FakeClock()
    real = milp.solve_milp
    seen: list[float | None] = []

    def solve(sub: AssignProblem, limit: float | None = None) -> object:
        seen.append(limit)
        clock.now += 10.0
        return real(sub)  # no limit for HiGHS: the instance is tiny, the verdict exact

    monkeypatch.setattr(milp, "time", clock)
    monkeypatch.setattr(milp, "solve_milp", solve)
    lat = [[30, 50, 110], [30, 70, 50], [50, 30, 110], [110, 50, 30], [30, 30, 30]][:n_users]
    p = problem_from_dict(doc([9, 9, 9], [0, 0, 0], lat))
    res = milp.solve_batched(p, 2, time_limit)
    if time_limit is None:
        assert seen == shares
    else:
        assert seen == pytest.approx(shares, rel=1e-12)
    assert res.notes["batches"] == len(shares)
    assert res.seconds == 10.0 * len(shares)


def test_the_reported_time_is_the_solve_s_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from pacao.optimize.assign import milp

    class Ticking(FakeClock):
        def perf_counter(self) -> float:
            self.now += 1.0
            return self.now

    monkeypatch.setattr(milp, "time", Ticking())
    res = milp.solve_milp(problem_from_dict(doc(*CASES[0])))
    assert res.seconds == 1.0  # read at the start and at the end: one tick apart
