"""Policy helpers and edge rows pinned by what they promise (written against the survivors
of mutation testing of the decision policy): placement through a DC's best own RLOC,
several SLA classes at once, invalid current entries, the secondary-key tie, the
loss combination, and the multi-user decision's loads.
"""

from __future__ import annotations

import numpy as np
import pytest

from decision_support import entry_step
from pacao.decision import (
    DcCapacity,
    MultiUserInputs,
    Params,
    Reason,
    Sla,
    combine_paths,
    decide_multi_user,
    migration_seconds,
    placement,
)
from pacao.decision.kernel import finite
from pacao.optimize.assign.model import LatencyFunction

NOW = 1000.0


def one(n: int, bound: float = 60.0) -> Sla:
    return Sla(np.ones((n, 1)), np.full((n, 1), bound))


def step1(values: list[list[float]], current: list[int], sla: Sla | None = None, **kw: object):  # type: ignore[no-untyped-def]
    v = np.array(values, dtype=float)[..., None]
    n = v.shape[0]
    return entry_step(
        NOW,
        v,
        np.isfinite(v[..., 0]),
        np.array(current, dtype=np.int64),
        sla or one(n),
        np.full(n, -np.inf),
        Params(min_gain_ratio=0.0, **kw),  # type: ignore[arg-type]
    )


def test_a_current_index_outside_the_candidates_is_no_current_entry() -> None:
    # -1 (none) and 2 (no such entry): both have no usable current path; the best is taken.
    d = step1([[90.0, 30.0], [90.0, 30.0], [90.0, 30.0]], [-1, 2, 0])
    assert d.best.tolist() == [1, 1, 1]
    assert d.current_objective.tolist() == [np.inf, np.inf, 2.0]
    assert d.sla_met.tolist() == [False, False, False]
    assert d.reason.tolist() == [Reason.SWITCH] * 3


def test_users_of_several_sla_classes_are_ranked_with_their_own_bounds() -> None:
    # Entry 0: 50 ms, entry 1: 70 ms. Bound 60: entry 0 meets it. Bound 40: both violate
    # with T = 2, and entry 0's shorter path ranks first. Bound 100: both meet it.
    vals = [[70.0, 50.0]] * 3 + [[50.0, 70.0]]
    sla = Sla(np.ones((4, 1)), np.array([[60.0], [40.0], [100.0], [40.0]]))
    d = step1(vals, [0, 0, 0, 0], sla)
    assert d.best.tolist() == [1, 1, 1, 0]
    assert d.best_objective.tolist() == [1.0, 2.0, 1.0, 2.0]
    assert d.current_objective.tolist() == [2.0, 2.0, 1.0, 2.0]
    assert d.reason.tolist() == [
        Reason.SWITCH,
        Reason.SWITCH,
        Reason.SLA_MET,
        Reason.CURRENT_IS_BEST,
    ]


def test_a_class_with_nothing_usable_gets_no_candidate() -> None:
    v = np.array([[[np.nan], [np.nan]], [[90.0], [30.0]]])
    sla = Sla(np.ones((2, 1)), np.array([[60.0], [50.0]]))
    d = entry_step(
        NOW, v, np.array([[True, True], [True, True]]), np.array([0, 0]), sla,
        np.full(2, -np.inf), Params(min_gain_ratio=0.0),
    )  # fmt: skip
    assert d.best.tolist() == [-1, 1]
    assert d.reason.tolist() == [Reason.NO_CANDIDATE, Reason.SWITCH]


def test_secondary_key_tie_is_relative_1e_minus_9() -> None:
    # Same penalty (T = 2); the other entry shorter by 1e-8 relative is a real improvement,
    # by 1e-12 relative it is float noise.
    d = step1([[100.0, 100.0 * (1 - 1e-8)], [100.0, 100.0 * (1 - 1e-12)]], [0, 0])
    assert d.reason.tolist() == [Reason.SWITCH, Reason.CURRENT_IS_BEST]


def test_absolute_margin_within_float_noise_is_met() -> None:
    # Gain 1.0 against a margin of 1.0: met (float noise of 1e-12 is no loss).
    d = step1([[90.0, 30.0]], [0], min_gain=1.0 + 1e-12)
    assert d.reason.tolist() == [Reason.SWITCH]
    d = step1([[90.0, 30.0]], [0], min_gain=1.0 + 1e-6)
    assert d.reason.tolist() == [Reason.GAIN_BELOW_MARGIN]


def test_user_rloc_ranking_needs_a_sublink_of_the_same_shape() -> None:
    v = np.full((1, 2, 1), 90.0)
    args = (NOW, v, np.ones((1, 2), bool), np.zeros(1, np.int64), one(1), np.full(1, -np.inf))
    p = Params(entry_metric="user-rloc")
    with pytest.raises(ValueError, match=r"user-rloc.*sublink.*\(1, 2, 1\)"):
        entry_step(*args, p)
    with pytest.raises(ValueError, match="sublink"):
        entry_step(*args, p, sublink=np.zeros((1, 3, 1)))
    with pytest.raises(
        ValueError, match=r"policy\.entry_metric: 'rtt' is invalid; one of path, user-rloc"
    ):
        Params(entry_metric="rtt")


def test_finite_needs_every_criterion_measured() -> None:
    v = np.array([[[1.0, 2.0], [np.nan, 2.0], [1.0, np.inf]]])
    assert finite(v, np.ones((1, 3), bool)).tolist() == [[True, False, False]]
    assert finite(v, np.array([[False, True, True]])).tolist() == [[False, False, False]]
    assert finite(v[..., :1], np.ones((1, 3), bool)).tolist() == [[True, False, True]]


def test_loss_combines_as_independent_losses_and_the_rest_add() -> None:
    a = np.array([[0.1, 10.0, 2.0]])
    b = np.array([[0.2, 5.0, 3.0]])
    c = combine_paths(a, b, ["loss", "rtt", "jitter"])
    assert np.allclose(c, [[1 - 0.9 * 0.8, 15.0, 5.0]], rtol=0, atol=1e-15)
    assert a.tolist() == [[0.1, 10.0, 2.0]]  # inputs untouched
    nan = combine_paths(np.array([[np.nan, 1.0]]), np.array([[0.1, 1.0]]), ["loss", "rtt"])
    assert np.isnan(nan[0, 0]) and nan[0, 1] == 2.0


def test_placement_through_the_best_own_rloc_and_a_dc_without_any() -> None:
    # RLOCs: 0 and 2 at DC 0, 1 at DC 1; DC 2 has none. RLOC 2 is shorter than RLOC 0.
    sub = np.array([[[90.0], [40.0], [30.0]], [[20.0], [np.nan], [30.0]]])
    usable = np.array([[True, True, True], [True, True, False]])
    vals, use, ent = placement(sub, usable, np.array([0, 1, 0]), 3, one(2))
    assert ent.tolist() == [[2, 1, -1], [0, -1, -1]]
    assert use.tolist() == [[True, True, False], [True, False, False]]
    assert vals[0, :2, 0].tolist() == [30.0, 40.0] and vals[1, 0, 0] == 20.0
    assert np.isnan(vals[0, 2, 0]) and np.isnan(vals[1, 1, 0]) and np.isnan(vals[1, 2, 0])


def test_placement_with_one_rloc_per_dc_in_order_is_the_sublink_itself() -> None:
    sub = np.array([[[90.0], [40.0]]])
    usable = np.array([[True, False]])
    vals, use, ent = placement(sub, usable, np.array([0, 1]), 2, one(1))
    assert vals.tolist() == sub.tolist() and use.tolist() == usable.tolist()
    assert ent.tolist() == [[0, 1]]
    # The same RLOCs listed in the other DC order go through the general path.
    vals, use, ent = placement(sub, usable, np.array([1, 0]), 2, one(1))
    assert ent.tolist() == [[-1, 0]] and use.tolist() == [[False, True]]
    assert vals[0, 1, 0] == 90.0


def test_migration_seconds_are_memory_in_megabits_over_bandwidth() -> None:
    bw = np.array([[1.0, 100.0, 50.0], [100.0, 1.0, 25.0], [50.0, 25.0, 1.0]])
    t = migration_seconds(np.array([1024.0, 512.0]), np.array([1, 2]), bw, 2.0)
    mbit = np.array([1024.0, 512.0]) * 1024 * 1024 * 8 / 1e6
    assert np.allclose(t, [[mbit[0] * 2 / 100, 0.0, mbit[0] * 2 / 25],
                           [mbit[1] * 2 / 50, mbit[1] * 2 / 25, 0.0]], rtol=1e-12)  # fmt: skip


def test_multi_user_reports_loads_with_and_without_congestion() -> None:
    # Three users all closest to DC 0 (capacity 2, one existing VM); DC 1 is far but empty.
    rtt = np.array([[10.0, 40.0], [10.0, 45.0], [10.0, 50.0]])
    flat = LatencyFunction(loads=(0.0, 1.0), ms=(0.0, 0.0))
    d = decide_multi_user(
        MultiUserInputs(
            rtt_ms=rtt,
            usable=np.ones((3, 2), bool),
            bound_ms=np.full(3, 60.0),
            host=np.array([0, 0, 1]),
            pinned=np.array([False, False, True]),
        ),
        DcCapacity(capacity=np.array([2.0, 10.0]), existing=np.array([1.0, 0.0]), latency=flat),
        solver="milp",
    )
    # User 2 is pinned at DC 1; DC 0 has room for one more user: user 0 or 1.
    assert d.dc[2] == 1 and sorted(d.dc[:2].tolist()) == [0, 1]
    assert d.independent.tolist() == [0, 0, 1]
    assert d.load.tolist() == [2, 2] and d.independent_load.tolist() == [3, 1]
    assert d.capacity.tolist() == [2.0, 10.0] and d.solver == "milp"
    assert d.objective == pytest.approx(3.0)
