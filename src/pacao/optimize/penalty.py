"""Vectorised penalties of problem (1)-(3), shared by every solver and the simulator.

T_k = ceil(m_dk / M_dk): the smallest integer with m_dk <= M_dk T_k. A ratio that
exceeds an integer by less than ``RATIO_EPS`` counts as that integer, so that
float noise (0.3 / 0.1 = 2.9999999999999996 or 3.0000000000000004) never
moves a candidate across a penalty step. The MILP states the same tolerance.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

RATIO_EPS = 1e-9
#: Two objectives closer than this are a tie, broken by the secondary key, then by order.
OBJECTIVE_TIE = 1e-9

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def penalties_from_ratios(ratios: NDArray[np.floating]) -> NDArray[np.floating]:
    """ceil(ratio - eps), clipped at 0, computed without temporaries beyond one copy."""
    out: NDArray[np.floating] = np.subtract(ratios, RATIO_EPS)
    np.ceil(out, out=out)
    np.maximum(out, 0.0, out=out)
    return out


def choose(
    ratios: NDArray[np.floating], weights: NDArray[np.floating], usable: NDArray[np.bool_]
) -> tuple[IntArray, NDArray[np.floating]]:
    """Best candidate per row.

    ``ratios`` has shape (..., candidates, criteria) holding m/M, ``usable``
    shape (..., candidates). Order: objective sum_k alpha_k T_k, then the
    secondary key sum_k alpha_k m/M, then candidate index. Returns the chosen
    index and its objective per row. Rows need at least one usable candidate.
    """
    w = np.asarray(weights, dtype=ratios.dtype)
    pen = penalties_from_ratios(ratios)
    cost = pen @ w
    cost[~usable] = np.inf
    best = cost.min(axis=-1, keepdims=True)
    tied = cost <= best + OBJECTIVE_TIE
    secondary = ratios @ w
    secondary[~tied] = np.inf
    idx = secondary.argmin(axis=-1)
    return idx.astype(np.int64), np.take_along_axis(cost, idx[..., None], axis=-1)[..., 0]


def objective_and_secondary(
    ratios: NDArray[np.floating], weights: NDArray[np.floating]
) -> tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating]]:
    """Per-candidate objective, secondary key and integer penalties (as floats)."""
    w = np.asarray(weights, dtype=ratios.dtype)
    pen = penalties_from_ratios(ratios)
    return pen @ w, ratios @ w, pen
