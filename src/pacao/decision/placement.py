"""What a user would get through each entry, or with its VM at each DC, from the measured
sublinks: the candidates of Step 1 and Step 2."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pacao.decision.kernel import choose, finite
from pacao.decision.params import BoolArray, FloatArray, IntArray, Sla


def combine_paths(user_xtr: FloatArray, xtr_vm: FloatArray, criteria: Sequence[str]) -> FloatArray:
    """User<->VM metric through an entry from its two sublinks (same shapes, criteria last).

    RTT and jitter add (the jitter sum is a conservative bound); loss combines
    as 1 - (1 - a)(1 - b). NaN (not measured) propagates.
    """
    out = user_xtr + xtr_vm
    for k, name in enumerate(criteria):
        if name == "loss":
            out[..., k] = 1.0 - (1.0 - user_xtr[..., k]) * (1.0 - xtr_vm[..., k])
    return out


def placement(
    sublink: FloatArray, usable: BoolArray, rloc_dc: IntArray, dc_count: int, sla: Sla
) -> tuple[FloatArray, BoolArray, IntArray]:
    """What each user would get with its VM at each DC: through that DC's best own RLOC.

    ``sublink`` (users, RLOCs, criteria) is the user<->xTR metric per RLOC and
    ``rloc_dc`` the DC of each RLOC. Returns (values (users, DCs, criteria),
    usable (users, DCs), entry RLOC index per (user, DC), meaningful where usable).
    A DC is usable when its RLOC is and the metrics are finite; with one RLOC per
    DC in DC order (the view is the sublink itself) the finiteness is left to the
    kernel of :func:`pacao.decision.decide_migration`, which tests it in cache.
    """
    n, _, k = sublink.shape
    counts = np.bincount(rloc_dc, minlength=dc_count)
    if sublink.shape[1] == dc_count and (rloc_dc == np.arange(dc_count)).all():
        ident: IntArray = np.broadcast_to(np.arange(dc_count, dtype=np.int64), (n, dc_count))
        return sublink, usable, ident
    usable = finite(sublink, usable)
    values = np.full((n, dc_count, k), np.nan)
    use = np.zeros((n, dc_count), dtype=bool)
    entry = np.full((n, dc_count), -1, dtype=np.int64)
    single = np.flatnonzero(counts == 1)
    if single.size:  # one RLOC: it is the DC's best entry, no ranking needed
        col = np.full(dc_count, -1, dtype=np.int64)
        col[rloc_dc[counts[rloc_dc] == 1]] = np.flatnonzero(counts[rloc_dc] == 1)
        cols1 = col[single]
        ok = usable[:, cols1]
        values[:, single] = np.where(ok[..., None], sublink[:, cols1], np.nan)
        use[:, single] = ok
        entry[:, single] = np.where(ok, cols1[None, :], -1)
    multi = np.flatnonzero(counts > 1)
    for d in multi:
        cols = np.flatnonzero(rloc_dc == d)
        i, _ = choose(sublink[:, cols], sla, usable[:, cols])
        ok = i >= 0
        entry[:, d] = np.where(ok, cols[np.where(ok, i, 0)], -1)
        rows = np.flatnonzero(ok)
        values[rows, d] = sublink[rows, entry[rows, d]]
        use[:, d] = ok
    return values, use, entry
