"""The ranking kernel's paths against the whole-array kernel and against the definition
(written against the survivors of mutation testing of penalty.py and bulk.py).

:func:`choose_parallel` promises the decisions of :func:`choose` on the whole array,
whatever the chunking, threading, bound shape or NaN handling; :func:`choose` promises
the order objective, then secondary key, then index, with the objective the integer
penalties of docs/formulation.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from pacao.optimize.bulk import choose_parallel
from pacao.optimize.penalty import choose, objective_and_secondary, penalties_from_ratios


def data(seed: int, n: int, c: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bounds = np.array([60.0, 10.0])
    w = np.array([0.75, 0.25])
    metrics = np.round(rng.uniform(0, 3, size=(n, c, 2)) * bounds, 0)  # exact ties, steps
    usable = rng.random((n, c)) > 0.2
    usable[:, c - 1] = True
    return metrics, bounds, w, usable


@pytest.mark.parametrize("n", [1, 5, 40, 41])
@pytest.mark.parametrize("workers", [None, 1, 2, 3])
def test_ratios_without_bounds_match_the_whole_array(n: int, workers: int | None) -> None:
    metrics, bounds, w, usable = data(n, n)
    ratios = metrics / bounds
    want = choose(ratios, w, usable)
    for chunk in (4, 40, 256):
        idx, obj = choose_parallel(ratios, w, usable, workers=workers, chunk=chunk)
        assert idx.tolist() == want[0].tolist()
        assert obj.tolist() == want[1].tolist()
    # Every row written: a chunk boundary that drops the last rows would leave garbage.
    idx, obj = choose_parallel(ratios, w, usable, workers=workers, chunk=3)
    assert idx.tolist() == want[0].tolist() and obj.tolist() == want[1].tolist()


@pytest.mark.parametrize("exact", [False, True])
def test_per_candidate_bounds_match_the_ratio_array(exact: bool) -> None:
    metrics, _, w, usable = data(11, 50)
    rng = np.random.default_rng(12)
    bounds = rng.choice([30.0, 60.0, 90.0], size=(7, 2))  # (candidates, criteria)
    ratios = metrics / bounds
    want_idx, want_obj = choose(ratios, w, usable)
    idx, obj = choose_parallel(metrics, w, usable, bounds=bounds, workers=2, chunk=8, exact=exact)
    assert np.allclose(obj, want_obj, atol=1e-12)
    if exact:  # the same ratios: the same decisions, bit for bit
        assert idx.tolist() == want_idx.tolist() and obj.tolist() == want_obj.tolist()
    else:  # m ((1 - eps) / M) may differ from (m / M)(1 - eps) in the last bit: ties may flip
        one, _ = choose_parallel(metrics, w, usable, bounds=bounds, workers=1, chunk=50)
        assert idx.tolist() == one.tolist()
        assert np.mean(idx == want_idx) > 0.9


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("workers", [1, 2])
def test_finite_treats_unmeasured_candidates_as_unusable(exact: bool, workers: int) -> None:
    metrics, bounds, w, usable = data(21, 60)
    rng = np.random.default_rng(22)
    nan = rng.random(metrics.shape[:2]) < 0.3
    metrics[nan, rng.integers(0, 2, size=int(nan.sum()))] = np.nan
    metrics[7, :, 0] = np.nan  # a row with nothing measured at all
    measured = usable & np.isfinite(metrics).all(axis=-1)
    idx, obj = choose_parallel(
        metrics, w, usable, bounds=bounds, workers=workers, chunk=16, exact=exact, finite=True
    )
    assert obj[7] == np.inf
    rows = measured.any(axis=1)
    with np.errstate(invalid="ignore"):
        ratios = np.where(measured[..., None], metrics / bounds, 0.0)
    want_idx, want_obj = choose(ratios[rows], w, measured[rows])
    assert idx[rows].tolist() == want_idx.tolist()
    assert np.allclose(obj[rows], want_obj, atol=1e-12)
    assert measured[np.flatnonzero(rows), idx[rows]].all()


def test_a_nan_metric_is_never_chosen_with_finite() -> None:
    # Candidate 0 would win on its measured criterion; its other one is not measured.
    metrics = np.array([[[1.0, np.nan], [50.0, 5.0], [70.0, 5.0]]])
    usable = np.ones((1, 3), bool)
    bounds = np.array([60.0, 10.0])
    w = np.array([0.5, 0.5])
    for exact in (False, True):
        idx, obj = choose_parallel(metrics, w, usable, bounds=bounds, exact=exact, finite=True)
        assert idx.tolist() == [1] and obj.tolist() == [1.0]


def brute(ratios: np.ndarray, w: np.ndarray, usable: np.ndarray) -> tuple[int, float]:
    """One row from the definition: T_k = the smallest integer t with
    (m/M)(1 - 1e-9) - 1e-9 <= t; order objective (ties within 1e-9), then the secondary
    key sum_k w_k m/M, then index."""
    best: tuple[float, float, int] | None = None
    for j in range(ratios.shape[0]):
        if not usable[j]:
            continue
        t = [
            0 if r * (1 - 1e-9) - 1e-9 <= 0 else int(np.ceil(r * (1 - 1e-9) - 1e-9))
            for r in ratios[j]
        ]
        objective = float(sum(wk * tk for wk, tk in zip(w, t, strict=True)))
        sec = float(sum(wk * r for wk, r in zip(w, ratios[j], strict=True)))
        if (
            best is None
            or objective < best[0] - 1e-9
            or (abs(objective - best[0]) <= 1e-9 and sec < best[1])
        ):
            best = (objective, sec, j)
    assert best is not None
    return best[2], best[0]


def test_choose_follows_the_definition_on_steps_and_ties() -> None:
    w = np.array([0.5, 0.5])
    # Ratios exactly at integers, just above (beyond the tolerance), zero, and ties.
    rows = [
        ([[1.0, 1.0], [0.5, 1.5], [2.0, 0.0]], [True, True, True]),  # 1, 1.5, 1: tie -> sec
        ([[1.0 + 1e-6, 0.0], [1.0, 1.0]], [True, True]),  # 1.5 (=2*.5+0) vs 1.0
        ([[0.0, 0.0], [0.0, 0.0]], [False, True]),  # only the second is usable
        ([[3.0, 3.0], [2.5, 3.0], [2.5, 3.0]], [True, True, True]),  # exact tie -> index
        ([[0.2, 0.9], [0.9, 0.2], [0.1, 1.0]], [True, True, True]),  # all 1 -> sec: 1.1, 1.1, 1.1
    ]
    for r, u in rows:
        ratios = np.array([r])
        usable = np.array([u])
        idx, obj = choose(ratios, w, usable)
        want = brute(ratios[0], w, usable[0])
        assert (int(idx[0]), float(obj[0])) == want, r


def test_objectives_within_the_tie_tolerance_are_ranked_by_the_secondary_key() -> None:
    # Objectives 1.0 and 1.0 + 5e-10 (weights summing to one in float noise) are a tie:
    # the second candidate's smaller secondary key wins. 0.5 apart is not a tie.
    w = np.array([0.5, 0.5 + 1e-9])
    ratios = np.array([[[1.0, 0.9], [0.8, 1.0]]])
    idx, _ = choose(ratios, w, np.ones((1, 2), bool))
    assert idx.tolist() == [1]
    ratios = np.array([[[1.0, 0.9], [0.8, 2.0]]])  # objective 0.5 + 1.0 against 1.0: no tie
    idx, obj = choose(ratios, np.array([0.5, 0.5]), np.ones((1, 2), bool))
    assert idx.tolist() == [0] and obj.tolist() == [1.0]


def test_zero_objectives_are_reported_as_positive_zero() -> None:
    # ceil of a value in (-1, 0) is -0.0; the promised figure is 0.0 (no sign bit).
    ratios = np.zeros((2, 2, 1))
    _, obj = choose(ratios, np.array([1.0]), np.ones((2, 2), bool))
    assert obj.tolist() == [0.0, 0.0] and not np.signbit(obj).any()
    pen = penalties_from_ratios(np.array([0.0, 1e-12]))
    assert pen.tolist() == [0.0, 0.0] and not np.signbit(pen).any()


def test_objective_and_secondary_per_candidate() -> None:
    ratios = np.array([[[0.5, 2.5], [1.0, 1.0 + 1e-6]]])
    w = np.array([0.25, 0.75])
    obj, sec, pen = objective_and_secondary(ratios, w)
    assert pen.tolist() == [[[1.0, 3.0], [1.0, 2.0]]]
    assert obj.tolist() == [[0.25 + 2.25, 0.25 + 1.5]]
    assert np.allclose(sec, [[0.125 + 1.875, 0.25 + 0.75 * (1 + 1e-6)]], rtol=0, atol=1e-15)
    assert obj.shape == (1, 2) and sec.shape == (1, 2)
