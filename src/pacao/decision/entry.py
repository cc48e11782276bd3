"""Step 1: entry (RLOC) switching for all users at once, and the LISP priorities of a
switching user's entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pacao.decision.kernel import choose, current_keys, pick, secondary
from pacao.decision.params import BoolArray, FloatArray, IntArray, Params, Reason, Sla
from pacao.optimize.exact import rank_exact
from pacao.optimize.model import Candidate, Criterion, Decision, Mode, Problem
from pacao.optimize.ties import OBJECTIVE_TIE, ranks_before


@dataclass(frozen=True, kw_only=True)
class EntryInputs:
    """What Step 1 knows of every user (arrays over users).

    ``values`` (users, candidates, criteria): the user<->VM metric through each
    entry RLOC over the last S' (see :func:`pacao.decision.combine_paths`);
    ``usable`` (users, candidates): measured and available; ``current`` (users,):
    index of the entry in use (-1: none); ``last_switch``: time of the user's last
    entry switch (-inf: never); ``known`` (users, candidates): something was
    measured (answered or lost probes), default ``usable``; ``sublink`` (users,
    candidates, criteria): the user<->RLOC metric of each entry, required when
    ``Params.entry_metric`` is ``user-rloc``.
    """

    values: FloatArray
    usable: BoolArray
    current: IntArray
    sla: Sla
    last_switch: FloatArray
    known: BoolArray | None = None
    sublink: FloatArray | None = None


@dataclass(frozen=True)
class EntryDecisions:
    """Step 1 for every user (arrays of length users)."""

    sla_met: BoolArray
    current_objective: FloatArray
    best: IntArray
    best_objective: FloatArray
    switch: BoolArray
    reason: IntArray

    @property
    def step2(self) -> BoolArray:
        """Users whose Step 2 runs after S'': those whose SLA was violated (1.2); an
        unmeasured current entry (NO_DATA) is not known to violate it."""
        out: BoolArray = ~self.sla_met & (self.reason != Reason.NO_DATA)
        return out


def decide_entry(now: float, users: EntryInputs, params: Params) -> EntryDecisions:
    """Step 1 for all users.

    A current entry that is not usable but known is down: the user leaves it at
    once; one that is not known is unmeasured: the user leaves it only for an
    entry measured meeting the SLA (Reason.NO_DATA otherwise). With
    ``params.entry_metric`` ``user-rloc`` the entries are ranked (best,
    objectives, margins) by ``users.sublink``, while the SLA check stays on
    ``users.values``.
    """
    values, usable, current, sla = users.values, users.usable, users.current, users.sla
    n = values.shape[0]
    rows = np.arange(n)
    cur_ok, cur_obj, met, cur_sec = current_keys(values, usable, current, sla)
    rank = values
    if params.entry_metric == "user-rloc":
        sublink = users.sublink
        if sublink is None or sublink.shape != values.shape:
            raise ValueError(
                "decide_entry: entry_metric 'user-rloc' needs sublink, the user<->RLOC "
                f"metrics of shape {values.shape}"
            )
        rank = sublink
        _, cur_obj, _, cur_sec = current_keys(rank, usable, current, sla)
    best, best_obj = choose(rank, sla, usable)
    has = best >= 0
    safe_best = np.where(has, best, 0)
    valid = (current >= 0) & (current < values.shape[1])
    if users.known is None:
        unknown = np.zeros(n, dtype=bool)
    else:
        unknown = valid & ~cur_ok & ~users.known[rows, np.where(valid, current, 0)]
    with np.errstate(invalid="ignore"):
        gain = cur_obj - best_obj  # inf - inf (nothing usable anywhere) is NaN: no move
    best_sec = secondary(rank, best, sla)
    no_better = (best == current) | ~ranks_before(gain, cur_sec, best_sec)
    below = cur_ok & (gain < params.min_gain - OBJECTIVE_TIE)  # float noise is no loss
    if params.min_gain_ratio > 0:
        # The margin: the best still ranks strictly before the current one with every
        # metric worse by the fraction r (the kernel's order on inflated metrics).
        f = 1.0 + params.min_gain_ratio
        picked = pick(rank, safe_best) * f
        inflated = np.where(has[:, None], picked, 0.0)
        _, infl_obj, _, infl_sec = current_keys(
            inflated[:, None, :], has[:, None], np.zeros(n, np.int64), sla
        )
        with np.errstate(invalid="ignore"):
            below |= cur_ok & ~ranks_before(cur_obj - infl_obj, cur_sec, infl_sec)
    _, _, best_met, _ = current_keys(values, usable, safe_best, sla)
    no_data = unknown & ~(has & best_met)
    dwell = cur_ok & (now - users.last_switch < params.min_dwell_s)
    reason = np.select(
        [met, ~has, no_data, no_better, below, dwell],
        [
            int(Reason.SLA_MET),
            int(Reason.NO_CANDIDATE),
            int(Reason.NO_DATA),
            int(Reason.CURRENT_IS_BEST),
            int(Reason.GAIN_BELOW_MARGIN),
            int(Reason.DWELL),
        ],
        default=int(Reason.SWITCH),
    ).astype(np.int64)
    return EntryDecisions(
        sla_met=met,
        current_objective=cur_obj,
        best=best,
        best_objective=best_obj,
        switch=reason == Reason.SWITCH,
        reason=reason,
    )


def rank_entries(
    chosen: int,
    names: Sequence[str],
    values: FloatArray,
    usable: BoolArray,
    sla: Mapping[str, tuple[float, float]],
) -> Decision:
    """The full LISP priority ranking of one user's entries once Step 1 chose ``chosen``.

    ``values`` (candidates, criteria) in the order of ``sla`` (criterion ->
    (weight, bound)), candidates in name order (the order the kernel breaks exact
    ties in). The chosen entry ranks first; the others follow in the kernel's order
    (:func:`pacao.optimize.exact.rank_exact`, ties as :mod:`pacao.optimize.ties`).
    """
    crit = [Criterion(name=k, weight=w, bound=b) for k, (w, b) in sla.items()]
    cands = []
    for j, name in enumerate(names):
        ok = bool(usable[j]) and bool(np.isfinite(values[j]).all())
        metrics = {k: float(values[j, i]) for i, k in enumerate(sla)} if ok else {}
        cands.append(Candidate(name=name, metrics=metrics, available=ok))
    problem = Problem(mode=Mode.RLOC, criteria=crit, candidates=cands)
    return rank_exact(problem, first=names[chosen])
