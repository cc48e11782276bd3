"""The ranking kernel's promises that the first round of mutation tests left open: without
``finite`` the bulk kernel is :func:`choose` itself (NaN included: finiteness is then the
caller's test), the objective comes back in the dtype of the metrics, and :func:`choose`
ranks any leading shape of users.
"""

from __future__ import annotations

import numpy as np

from pacao.optimize.bulk import choose_parallel
from pacao.optimize.penalty import choose, objective_and_secondary, penalties_from_ratios
from pacao.optimize.ties import (
    OBJECTIVE_TIE,
    SECONDARY_TIE,
    first_in_order,
    rank_order,
    ranks_before,
)


def test_without_finite_a_nan_metric_is_ranked_as_choose_ranks_it() -> None:
    # Row 0: candidate 0 has a NaN metric; choose on the whole array does not skip it.
    ratios = np.array([[[np.nan, 0.5], [0.5, 0.5]], [[2.5, 0.1], [0.5, 0.5]]])
    w = np.array([0.5, 0.5])
    usable = np.ones((2, 2), dtype=bool)
    want_idx, want_obj = choose(ratios.copy(), w, usable)
    idx, obj = choose_parallel(ratios, w, usable, workers=1)
    assert idx.tolist() == want_idx.tolist() == [0, 1]
    np.testing.assert_array_equal(obj, want_obj)
    assert np.isnan(obj[0]) and obj[1] == 1.0
    # finite=True is what skips it.
    idx, obj = choose_parallel(ratios, w, usable, workers=1, finite=True)
    assert idx.tolist() == [1, 1] and obj.tolist() == [1.0, 1.0]


def test_the_objective_has_the_dtype_of_the_metrics() -> None:
    metrics = np.array([[[30.0], [90.0]], [[130.0], [50.0]]], dtype=np.float32)
    bounds = np.array([60.0], dtype=np.float32)
    w = np.array([1.0], dtype=np.float32)
    usable = np.ones((2, 2), dtype=bool)
    for exact in (False, True):
        idx, obj = choose_parallel(metrics, w, usable, bounds=bounds, exact=exact, workers=1)
        assert obj.dtype == np.float32, exact
        assert idx.tolist() == [0, 1] and obj.tolist() == [1.0, 1.0]


def test_choose_keeps_float32_and_ranks_any_leading_shape() -> None:
    # (candidates, criteria) for one user, and (2, 2, candidates, criteria) for a grid of
    # users: the same decisions as row by row on (users, candidates, criteria).
    rng = np.random.default_rng(3)
    ratios = np.round(rng.uniform(0, 3, size=(4, 5, 2)), 1)
    w = np.array([0.75, 0.25])
    usable = rng.random((4, 5)) > 0.2
    usable[:, 0] = True
    want_idx, want_obj = choose(ratios.copy(), w, usable)
    idx, obj = choose(ratios.reshape(2, 2, 5, 2).copy(), w, usable.reshape(2, 2, 5))
    assert idx.reshape(-1).tolist() == want_idx.tolist()
    assert obj.reshape(-1).tolist() == want_obj.tolist()
    for u in range(4):
        i, o = choose(ratios[u].copy(), w, usable[u])
        assert (int(i), float(o)) == (want_idx[u], want_obj[u])
    _, o32 = choose(ratios.astype(np.float32), w, usable)
    assert o32.dtype == np.float32
    # The secondary key stays in the ratios' dtype (the penalties are float64 integers).
    _, sec_c, _ = objective_and_secondary(ratios.astype(np.float32), w)
    assert sec_c.dtype == np.float32


def test_penalties_of_whole_and_float32_ratios_are_float64() -> None:
    # Integers are their own penalty; a float32 ratio of 1 (bound met exactly) costs 1.
    pen = penalties_from_ratios(np.array([0, 1, 2, 3]))
    assert pen.dtype == np.float64 and pen.tolist() == [0.0, 1.0, 2.0, 3.0]
    pen32 = penalties_from_ratios(np.array([1.0, 2.0, 0.5], dtype=np.float32))
    assert pen32.dtype == np.float64 and pen32.tolist() == [1.0, 2.0, 1.0]


def test_objectives_exactly_one_tolerance_apart_are_tied_in_both_rankings() -> None:
    # Candidate 0 costs exactly OBJECTIVE_TIE more than candidate 1 and has the lower
    # secondary key: tied, it ranks first, in the kernel as in the full LISP ranking.
    c0 = 1.0 + OBJECTIVE_TIE
    cost = np.array([[c0, 1.0]])
    assert first_in_order(cost, np.array([[0.1, 0.5]])).tolist() == [0]
    assert rank_order({0: c0, 1: 1.0}, {0: 0.1, 1: 0.5}, ["a", "b"]) == [0, 1]
    # Just past the tolerance it is not tied any more.
    c2 = 1.0 + 2 * OBJECTIVE_TIE
    assert first_in_order(np.array([[c2, 1.0]]), np.array([[0.1, 0.5]])).tolist() == [1]


def test_ranks_before_at_the_tie_boundaries() -> None:
    t, s = OBJECTIVE_TIE, SECONDARY_TIE
    cur = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    gain = np.array([t, t, -t, -1.0, 0.0, 0.0])
    best = np.array([0.5, 1.0, 0.5, 0.5, 1.0 * (1.0 - s), 0.9])
    got = ranks_before(gain, cur, best).tolist()
    # A gain of exactly the tolerance is a tie: only a lower secondary key ranks first;
    # so is a loss of exactly it; a real loss never ranks first; the secondary key must be
    # lower by more than the relative tolerance.
    assert got == [True, False, True, False, False, True]
