"""The bulk kernel's promises that the first round of mutation tests left open: without
``finite`` it is :func:`choose` itself (NaN included: finiteness is then the caller's
test), and the objective comes back in the dtype of the metrics.
"""

from __future__ import annotations

import numpy as np

from pacao.optimize.bulk import choose_parallel
from pacao.optimize.penalty import choose


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
