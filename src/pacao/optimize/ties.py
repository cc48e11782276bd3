"""The tie rules of every ranking of problem (1)-(3), in one place.

Candidates rank by the objective sum_k alpha_k T_k, then by the secondary key
sum_k alpha_k m/M, then by candidate order (the controller passes entries in
name order). Objectives within :data:`OBJECTIVE_TIE` of each other are equal:
float noise of a sum of penalties must not decide. When a user would move, the
secondary keys must also differ by more than a relative :data:`SECONDARY_TIE`
(noise of summed path metrics never moves a user): a tie keeps the current path.

The vectorised kernel (:func:`pacao.optimize.penalty.choose_scaled`, run in bulk by
:func:`pacao.optimize.bulk.choose_parallel`), the single-user solvers' full LISP
ranking (:func:`pacao.optimize.base.finish`) and the decision package's "ranks
strictly before the current path" test all take their ties from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

#: Two objectives closer than this are a tie, broken by the secondary key, then by order.
OBJECTIVE_TIE = 1e-9
#: Relative difference of the secondary key (sum_k alpha_k m/M) below which two candidates
#: with the same objective are tied for a move: float noise of summed path metrics never
#: moves a user.
SECONDARY_TIE = 1e-9


def first_in_order(cost: NDArray[np.floating], secondary: NDArray[np.floating]) -> NDArray[np.intp]:
    """Index of the first candidate per row (candidates on the last axis): the lowest
    secondary key among the candidates within OBJECTIVE_TIE of the lowest cost, the lowest
    index among equal keys. Overwrites ``secondary``."""
    # argmin then a gather: a min-reduction along a short last axis is 4x slower.
    first = cost.argmin(axis=-1)[..., None]
    best = np.take_along_axis(cost, first, axis=-1)
    best += OBJECTIVE_TIE
    np.putmask(secondary, cost > best, np.inf)
    out: NDArray[np.intp] = secondary.argmin(axis=-1)
    return out


def rank_order(
    objective: Mapping[int, float], secondary: Mapping[int, float], names: Sequence[str]
) -> list[int]:
    """The candidates ``objective`` holds (indices into ``names``), first to last: sorted by
    (objective, secondary, name), then each run of objectives within OBJECTIVE_TIE of the
    run's first re-sorted by (secondary, name), so ties sort by the secondary key, not by
    float noise."""
    order = sorted(objective, key=lambda i: (objective[i], secondary[i], names[i]))
    if not order:
        return order
    groups: list[list[int]] = [[order[0]]]
    for i in order[1:]:
        if objective[i] <= objective[groups[-1][0]] + OBJECTIVE_TIE:
            groups[-1].append(i)
        else:
            groups.append([i])
    out: list[int] = []
    for g in groups:
        out.extend(sorted(g, key=lambda i: (secondary[i], names[i])))
    return out


def ranks_before(
    gain: NDArray[np.float64], cur_sec: NDArray[np.float64], best_sec: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Whether a candidate ranks strictly before the current one, per user, given
    ``gain`` = objective(current) - objective(candidate) and both secondary keys: a lower
    objective, or the same objective (within OBJECTIVE_TIE) and a secondary key lower by
    more than a relative SECONDARY_TIE. For the kernel's choice this is "the best is not
    tied with the current path"."""
    with np.errstate(invalid="ignore"):
        tied = ~(gain > OBJECTIVE_TIE) & (gain >= -OBJECTIVE_TIE)
        out: NDArray[np.bool_] = (gain > OBJECTIVE_TIE) | (
            tied & (best_sec < cur_sec * (1.0 - SECONDARY_TIE))
        )
    return out
