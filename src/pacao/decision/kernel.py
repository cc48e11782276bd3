"""The ranking both steps share: the kernel of problem (1)-(3) per SLA class, and the
objective and secondary key of a given candidate, over arrays of users."""

from __future__ import annotations

import numpy as np

from pacao.decision.params import BoolArray, FloatArray, IntArray, Sla
from pacao.optimize.bulk import choose_parallel
from pacao.optimize.penalty import penalties_from_ratios


def choose(values: FloatArray, sla: Sla, usable: BoolArray) -> tuple[IntArray, FloatArray]:
    """The kernel on metrics m with the users' bounds, per group of users sharing (weights,
    bounds); a candidate is usable when ``usable`` says so and every metric is finite (not
    NaN: measured), tested inside the kernel; rows with nothing usable get -1. Ratios m/M
    are formed chunk by chunk inside the kernel (exact division: the same decisions as on
    a full ratio array, without streaming one through memory)."""
    n = values.shape[0]
    idx = np.full(n, -1, dtype=np.int64)
    obj = np.full(n, np.inf)
    has = usable.any(axis=1)
    if not has.any():
        return idx, obj
    key = np.concatenate([sla.weights, sla.bounds], axis=1)
    if (key == key[0]).all():  # the usual case: one SLA class, no sort
        uniq, inverse = key[:1], np.zeros(n, dtype=np.int64)
    else:
        uniq, inverse = np.unique(key, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
    k = sla.weights.shape[1]
    for g in range(uniq.shape[0]):
        sel = np.flatnonzero((inverse == g) & has)
        if sel.size == 0:
            continue
        part = values if sel.size == n else values[sel]
        use = usable if sel.size == n else usable[sel]
        i, o = choose_parallel(part, uniq[g, :k], use, bounds=uniq[g, k:], exact=True, finite=True)
        idx[sel] = i
        obj[sel] = o
    idx[~np.isfinite(obj)] = -1  # every usable candidate had an unmeasured metric
    return idx, obj


def current_keys(
    values: FloatArray, usable: BoolArray, current: IntArray, sla: Sla
) -> tuple[BoolArray, FloatArray, BoolArray, FloatArray]:
    """(current usable, objective of the current candidate, SLA met on it, the kernel's
    secondary key sum_k alpha_k m/M of it (inf when it is not usable))."""
    n = values.shape[0]
    rows = np.arange(n)
    valid = (current >= 0) & (current < values.shape[1])
    cur = np.where(valid, current, 0)
    picked = pick(values, cur)
    ok = valid & usable[rows, cur] & np.isfinite(picked).all(axis=1)
    with np.errstate(invalid="ignore"):
        ratios = picked / sla.bounds
    ratios = np.where(ok[:, None], ratios, 0.0)
    pen = penalties_from_ratios(ratios)
    obj = np.where(ok, (pen * sla.weights).sum(axis=1), np.inf)
    sec = np.where(ok, (ratios * sla.weights).sum(axis=1), np.inf)
    met = ok & (pen <= 1).all(axis=1)
    return ok, obj, met, sec


def pick(values: FloatArray, idx: IntArray) -> FloatArray:
    """values[u, idx[u]] for every row u of a (users, candidates, ...) array, as one
    gather along the first axis of a flat view (a two-array fancy index is several
    times slower on 100,000 users); ``idx`` must be valid."""
    n, c = values.shape[0], values.shape[1]
    flat = values.reshape((n * c, *values.shape[2:]))
    out: FloatArray = flat[np.arange(n) * c + idx]
    return out


def secondary(values: FloatArray, best: IntArray, sla: Sla) -> FloatArray:
    """The kernel's secondary key of each row's chosen candidate (inf when none)."""
    has = best >= 0
    with np.errstate(invalid="ignore"):
        ratios = pick(values, np.where(has, best, 0)) / sla.bounds
    out: FloatArray = np.where(
        has, (np.where(has[:, None], ratios, 0.0) * sla.weights).sum(1), np.inf
    )
    return out


def finite(values: FloatArray, usable: BoolArray) -> BoolArray:
    """``usable`` and every criterion measured. The criteria are summed by one BLAS
    matrix-vector product and the sum tested: NaN and inf propagate through a sum, and
    metrics are far below the float range, so a finite sum means finite criteria (a
    reduction along the short last axis, or k strided passes, cost several times more)."""
    k = values.shape[-1]
    if k == 1:
        fin = np.isfinite(values[..., 0])
    else:
        flat = np.ascontiguousarray(values).reshape(-1, k)
        with np.errstate(invalid="ignore", over="ignore"):
            fin = np.isfinite(flat @ np.ones(k)).reshape(values.shape[:-1])
    out: BoolArray = fin & usable
    return out
