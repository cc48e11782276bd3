"""Single-user problem (1)-(3): both meanings, both solvers, the ranking rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pacao.errors import InputError
from pacao.optimize import (
    Candidate,
    Criterion,
    Mode,
    Problem,
    choose,
    penalties_from_ratios,
    problem_from_dict,
    solve,
)


def rloc(cands: list[dict[str, object]], weights: tuple[float, float] = (0.7, 0.3)) -> Problem:
    return problem_from_dict(
        {
            "mode": "rloc",
            "criteria": {
                "rtt": {"weight": weights[0], "max": 60},
                "jitter": {"weight": weights[1], "max": 10},
            },
            "candidates": cands,
        }
    )


def brute_force_cost(p: Problem, cand: Candidate) -> float:
    """The objective from its definition (docs/formulation.md): the smallest integer T_k
    with (m / M)(1 - 1e-9) - 1e-9 <= T_k, written without the code's arrays."""
    total = 0.0
    for c in p.criteria:
        if c.bound is not None:
            m, bound = cand.metrics[c.name], c.bound
        else:
            m, bound = p.demand[c.name], cand.residual[c.name]
        t = 0
        while (m / bound) * (1 - 1e-9) - 1e-9 > t:
            t += 1
        total += c.weight * t
    return total


@pytest.mark.parametrize("solver", ["exact", "highs"])
def test_rloc_example_ranking(solver: str) -> None:
    p = rloc(
        [
            {"name": "telcocenter", "rtt": 37, "jitter": 1.5},
            {"name": "marilyn", "rtt": 135, "jitter": 20},
            {"name": "lip6", "rtt": 30, "jitter": 2, "available": False},
        ]
    )
    d = solve(p, solver)
    assert d.choice == "telcocenter"
    assert d.sla_met
    assert [r.name for r in d.ranking] == ["telcocenter", "marilyn", "lip6"]
    assert [r.priority for r in d.ranking] == [1, 2, 255]
    # marilyn: rtt 135/60 -> T=3, jitter 20/10 -> T=2
    assert dict(d.ranking[1].penalties) == {"rtt": 3, "jitter": 2}
    assert d.ranking[1].objective == pytest.approx(0.7 * 3 + 0.3 * 2)


def test_unavailable_best_metric_is_never_chosen() -> None:
    p = rloc(
        [
            {"name": "a", "rtt": 500, "jitter": 50},
            {"name": "b", "rtt": 1, "jitter": 0, "available": False},
        ]
    )
    d = solve(p)
    assert d.choice == "a"
    assert not d.sla_met
    assert d.ranking[-1].name == "b" and d.ranking[-1].priority == 255


def test_unavailable_candidate_may_lack_metrics() -> None:
    p = rloc([{"name": "a", "rtt": 10, "jitter": 1}, {"name": "down", "available": False}])
    assert solve(p, "highs").choice == "a"


@pytest.mark.parametrize("solver", ["exact", "highs"])
def test_ties_broken_by_normalised_metric_then_name(solver: str) -> None:
    # All within the bound: same objective 1.0; c has the smallest sum alpha m/M.
    p = rloc(
        [
            {"name": "b", "rtt": 30, "jitter": 5},
            {"name": "a", "rtt": 30, "jitter": 5},
            {"name": "c", "rtt": 10, "jitter": 5},
        ]
    )
    d = solve(p, solver)
    assert [r.name for r in d.ranking] == ["c", "a", "b"]
    assert {r.objective for r in d.ranking} == {1.0}


@pytest.mark.parametrize("solver", ["exact", "highs"])
def test_vm_mode_capacity_and_infeasible(solver: str) -> None:
    p = problem_from_dict(
        {
            "mode": "vm",
            "criteria": {
                "ram": {"weight": 0.3},
                "cpu": {"weight": 0.2},
                "rtt": {"weight": 0.5, "max": 60},
            },
            "demand": {"ram": 4096, "cpu": 2},
            "candidates": [
                {"name": "lip6", "residual": {"ram": 16384, "cpu": 8}, "rtt": 45},
                {"name": "marilyn", "residual": {"ram": 2048, "cpu": 8}, "rtt": 20},
                {"name": "full", "residual": {"ram": 0, "cpu": 8}, "rtt": 1},
            ],
        }
    )
    d = solve(p, solver)
    assert d.choice == "lip6"
    marilyn = next(r for r in d.ranking if r.name == "marilyn")
    assert dict(marilyn.penalties) == {"ram": 2, "cpu": 1, "rtt": 1}
    full = d.ranking[-1]
    assert full.name == "full" and full.priority == 255 and full.reason is not None
    assert "ram" in full.reason


def test_zero_demand_on_zero_residual_is_feasible() -> None:
    p = problem_from_dict(
        {
            "mode": "vm",
            "criteria": {"gpu": {"weight": 0.5}, "rtt": {"weight": 0.5, "max": 50}},
            "demand": {"gpu": 0},
            "candidates": [{"name": "x", "residual": {"gpu": 0}, "rtt": 10}],
        }
    )
    d = solve(p, "highs")
    assert d.choice == "x" and dict(d.ranking[0].penalties) == {"gpu": 0, "rtt": 1}


def test_absurd_ratio_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"candidates\[0\]\.rtt"):
        solve(rloc([{"name": "a", "rtt": 1e12, "jitter": 1}]))


def test_float_noise_does_not_cross_a_penalty_step() -> None:
    # 0.3 / 0.1 is 2.9999999999999996 in binary floating point; it must count as exactly 3.
    ratios = np.array([0.3 / 0.1, 0.30000000000000004 / 0.1, 2.0, 2.0 + 1e-6])
    assert penalties_from_ratios(ratios).tolist() == [3.0, 3.0, 2.0, 3.0]


def test_penalties_of_a_scalar_ratio() -> None:
    # A 0-d array (one user-DC pair) goes through the same rule as a whole array.
    assert float(penalties_from_ratios(np.asarray(2.02857143))) == 3.0
    assert float(penalties_from_ratios(np.asarray(1e-12))) == 0.0


def test_vectorised_choose_matches_solver() -> None:
    rng = np.random.default_rng(7)
    ratios = rng.uniform(0, 3, size=(200, 6, 2))
    usable = rng.random((200, 6)) > 0.2
    usable[:, 0] = True
    w = np.array([0.6, 0.4])
    idx, obj = choose(ratios, w, usable)
    for u in range(200):
        cands = [
            {"name": f"d{j}", "rtt": ratios[u, j, 0] * 60, "jitter": ratios[u, j, 1] * 10}
            | ({} if usable[u, j] else {"available": False})
            for j in range(6)
        ]
        d = solve(rloc(cands, (0.6, 0.4)))
        assert obj[u] == pytest.approx(d.objective)
        assert f"d{idx[u]}" == d.choice


# --- property: enumeration and MILP agree on the optimum, ties included -------------------

metric = st.one_of(
    st.integers(0, 200).map(float),
    st.floats(0, 200, allow_nan=False, allow_infinity=False),
)


@st.composite
def problems(draw: st.DrawFn) -> Problem:
    k = draw(st.integers(1, 4))
    raw = draw(st.lists(st.integers(0, 10), min_size=k, max_size=k).filter(lambda w: sum(w) > 0))
    weights = [w / sum(raw) for w in raw]
    weights[-1] = 1.0 - math.fsum(weights[:-1])
    bounds = draw(
        st.lists(st.sampled_from([1.0, 5.0, 10.0, 30.0, 60.0, 0.5]), min_size=k, max_size=k)
    )
    crit = [Criterion(f"k{i}", max(0.0, weights[i]), bounds[i]) for i in range(k)]
    n = draw(st.integers(1, 8))
    cands = []
    for j in range(n):
        metrics = {f"k{i}": draw(metric) for i in range(k)}
        cands.append(Candidate(f"c{j}", metrics, available=j == 0 or draw(st.booleans())))
    # Duplicate some candidates' metrics to force exact ties.
    if n > 1 and draw(st.booleans()):
        cands[-1] = Candidate(cands[-1].name, dict(cands[0].metrics), available=True)
    return Problem(Mode.RLOC, crit, cands)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_enumeration_and_milp_agree(p: Problem) -> None:
    exact = solve(p, "exact")
    milp = solve(p, "highs")
    assert milp.objective == pytest.approx(exact.objective, abs=1e-9)
    by_name = {c.name: c for c in p.candidates}
    assert exact.objective == pytest.approx(brute_force_cost(p, by_name[exact.choice]), abs=1e-9)
    best = min(brute_force_cost(p, c) for c in p.candidates if c.available)
    assert exact.objective == pytest.approx(best, abs=1e-9)
    # Same ranking, ties included (objectives per candidate agree too).
    assert [r.name for r in milp.ranking] == [r.name for r in exact.ranking]
    for a, b in zip(exact.ranking, milp.ranking, strict=True):
        assert (a.objective is None) == (b.objective is None)
        if a.objective is not None and b.objective is not None:
            assert a.objective == pytest.approx(b.objective, abs=1e-9)
            assert dict(a.penalties) == dict(b.penalties)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"criteria": {"rtt": {"weight": 0.5, "max": 1}}}, "criteria.*.weight"),
        ({"criteria": {"rtt": {"weight": 1.2, "max": 1}}}, "criteria.rtt.weight"),
        ({"criteria": {"rtt": {"weight": 1}}}, "criteria.rtt.max"),
        ({"criteria": {"rtt": {"weight": 1, "max": 0}}}, "criteria.rtt.max"),
        ({"candidates": [{"name": "a", "rtt": -1}]}, "candidates[0].rtt"),
        ({"candidates": [{"name": "a"}]}, "candidates[0].rtt"),
        ({"candidates": []}, "candidates"),
        ({"candidates": [{"name": "a", "rtt": 1, "available": False}]}, "candidates"),
        ({"candidates": [{"name": "a", "rtt": 1, "colour": 3}]}, "candidates[0].colour"),
        ({"extra": 1}, "extra"),
        ({"mode": "dns"}, "mode"),
    ],
)
def test_bad_input_names_the_field(doc: dict[str, object], field: str) -> None:
    base: dict[str, object] = {
        "mode": "rloc",
        "criteria": {"rtt": {"weight": 1.0, "max": 60}},
        "candidates": [{"name": "a", "rtt": 10}],
    }
    base.update(doc)
    with pytest.raises(InputError) as err:
        problem_from_dict(base)
    assert err.value.field == field


def test_bulk_chunked_threads_match_whole_array() -> None:
    from pacao.optimize.bulk import choose_parallel

    rng = np.random.default_rng(3)
    bounds = np.array([60.0, 10.0, 2.0])
    w = np.array([0.5, 0.3, 0.2])
    metrics = np.round(rng.uniform(0, 3, size=(3000, 16, 3)) * bounds, 1)  # many exact ties
    usable = rng.random((3000, 16)) > 0.1
    usable[:, 5] = True
    want_idx, want_obj = choose(metrics / bounds, w, usable)
    for workers in (1, 2):
        idx, obj = choose_parallel(metrics, w, usable, bounds=bounds, workers=workers, chunk=257)
        assert np.array_equal(idx, want_idx)
        assert np.allclose(obj, want_obj, atol=1e-12)


def test_bulk_exact_division_equals_the_ratio_path_bit_for_bit() -> None:
    from pacao.optimize.bulk import choose_parallel

    rng = np.random.default_rng(5)
    bounds = np.array([60.0, 10.0, np.inf])  # inf: a criterion outside the SLA
    w = np.array([0.7, 0.3, 0.0])
    metrics = np.round(rng.uniform(0, 3, size=(2000, 16, 3)) * [60.0, 10.0, 1.0], 1)
    metrics[rng.random((2000, 16)) < 0.05] = np.nan  # unmeasured, masked by usable
    usable = (rng.random((2000, 16)) > 0.1) & np.isfinite(metrics).all(axis=-1)
    usable[:, 3] = True
    metrics[:, 3] = 1.0
    with np.errstate(invalid="ignore"):
        ratios = np.where(usable[..., None], metrics / bounds, 0.0)
    want_idx, want_obj = choose(ratios, w, usable)
    for workers in (1, 2):
        idx, obj = choose_parallel(metrics, w, usable, bounds=bounds, workers=workers,
                                   chunk=129, exact=True)  # fmt: skip
        assert np.array_equal(idx, want_idx)
        assert np.array_equal(obj, want_obj)
