"""Vectorised penalties of problem (1)-(3), shared by every solver and the simulator.

T_k is the smallest integer with m_dk <= M_dk T_k, i.e. ceil(m_dk / M_dk), read
with two tolerances so that float noise never moves a candidate across a
penalty step (0.3 / 0.1 = 2.9999999999999996 must cost 3, and so must
3.0000000000000004):

    q    = (m_dk / M_dk) (1 - RATIO_EPS)
    T_k  = ceil(q - RATIO_FLOOR)

so a ratio up to a relative 1e-9 above an integer counts as that integer, and
a metric below 1e-9 of its bound counts as 0 (the measurement resolution). The
MILP in :mod:`pacao.optimize.highs` states the same rows.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pacao.optimize.ties import first_in_order

RATIO_EPS = 1e-9
#: Measurement resolution: a metric below this fraction of its bound counts as 0.
RATIO_FLOOR = 1e-9
#: A metric more than this many times its bound is a data error, not a penalty.
RATIO_MAX = 1e9

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def penalties_from_ratios(ratios: NDArray[np.floating]) -> NDArray[np.floating]:
    """Integer penalties T_k (as floats) for an array of ratios m/M."""
    # np.array, not np.multiply: a 0-d input must stay an array for the in-place ops.
    out: NDArray[np.floating] = np.array(ratios, dtype=np.float64)
    out *= 1.0 - RATIO_EPS
    out -= RATIO_FLOOR
    np.ceil(out, out=out)
    out += 0.0  # ceil of a value in (-1, 0) is -0.0: normalise it to 0.0
    return out


def _weighted(x: NDArray[np.floating], w: NDArray[np.floating]) -> NDArray[np.floating]:
    """x @ w over the last axis as one 2-D matrix-vector product (BLAS gemv)."""
    out: NDArray[np.floating] = (x.reshape(-1, x.shape[-1]) @ w).reshape(x.shape[:-1])
    return out


def choose(
    ratios: NDArray[np.floating], weights: NDArray[np.floating], usable: NDArray[np.bool_]
) -> tuple[IntArray, NDArray[np.floating]]:
    """Best candidate per row.

    ``ratios`` has shape (..., candidates, criteria) holding m/M, ``usable``
    shape (..., candidates). Order: objective sum_k alpha_k T_k, then the
    secondary key sum_k alpha_k m/M, then candidate index, ties as
    :mod:`pacao.optimize.ties` says. Returns the chosen
    index and its objective per row. Rows need at least one usable candidate.
    """
    return choose_scaled(np.multiply(ratios, 1.0 - RATIO_EPS), weights, usable)


def choose_scaled(
    q: NDArray[np.floating], weights: NDArray[np.floating], usable: NDArray[np.bool_]
) -> tuple[IntArray, NDArray[np.floating]]:
    """:func:`choose` on q = ratio (1 - RATIO_EPS), which it overwrites."""
    w = np.asarray(weights, dtype=q.dtype)
    # q is the ratio scaled by a constant: the same order for the secondary key.
    secondary = _weighted(q, w)
    q -= RATIO_FLOOR
    np.ceil(q, out=q)
    cost = _weighted(q, w)
    np.putmask(cost, ~usable, np.inf)
    idx = first_in_order(cost, secondary)
    obj = np.take_along_axis(cost, idx[..., None], axis=-1)[..., 0]
    obj += 0.0  # ceil of a value in (-1, 0) is -0.0: report it as 0.0
    return idx.astype(np.int64), obj


def objective_and_secondary(
    ratios: NDArray[np.floating], weights: NDArray[np.floating]
) -> tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating]]:
    """Per-candidate objective, secondary key and integer penalties (as floats)."""
    w = np.asarray(weights, dtype=ratios.dtype)
    pen = penalties_from_ratios(ratios)
    return _weighted(pen, w), _weighted(ratios, w), pen
