"""The congestion-aware assignment (paper Sec. V-C, problem (4)-(9)) of many violating
users at once: the controller's multi-user mode and the simulator's congestion stage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pacao.decision.kernel import choose, finite
from pacao.decision.params import BoolArray, FloatArray, IntArray, Sla
from pacao.optimize.assign.model import LatencyFunction


@dataclass(frozen=True, kw_only=True)
class MultiUserInputs:
    """The users of one batch (arrays over them): ``rtt_ms`` (users, DCs) the RTT each
    would get with its VM at each DC (:func:`pacao.decision.placement`), ``bound_ms`` its
    latency bound, ``host`` the VM's DC; a pinned VM may only stay. ``user_ids`` name
    them in the solver's problem (default u0, u1, ...)."""

    rtt_ms: FloatArray
    usable: BoolArray
    bound_ms: FloatArray
    host: IntArray
    pinned: BoolArray
    user_ids: Sequence[str] | None = None


@dataclass(frozen=True, kw_only=True)
class DcCapacity:
    """The DCs of the batch: ``capacity`` C_d and ``existing`` e_d in users (VMs of users
    outside the batch), one congestion ``latency`` function f for all, and their
    ``names`` in the solver's problem (default dc0, dc1, ...)."""

    capacity: FloatArray
    existing: FloatArray
    latency: LatencyFunction
    names: Sequence[str] | None = None


@dataclass(frozen=True)
class MultiUserDecisions:
    """Problem (4)-(9) over the users of one S' window (arrays over those users / DCs).

    ``dc`` is the assigned DC (the VM's host, entered through that DC's best
    entry); ``independent`` what each user would pick alone (the kernel's
    choice, blind to congestion), for comparison; loads count users per DC
    after the move, ``existing`` included; ``congestion_ms`` is f_d at each DC's
    load.
    """

    dc: IntArray
    independent: IntArray
    objective: float
    lower_bound: float | None
    gap: float | None
    solver: str
    seconds: float
    load: IntArray
    independent_load: IntArray
    capacity: FloatArray
    congestion_ms: FloatArray


def decide_multi_user(
    users: MultiUserInputs,
    dcs: DcCapacity,
    *,
    solver: str = "lagrange",
    batch_size: int = 100,
    time_limit: float | None = None,
    integer_penalty: bool = False,
) -> MultiUserDecisions:
    """Assign ``users`` to ``dcs`` minimising (4)-(9).

    Solved by :func:`pacao.optimize.assign.solve_assign` (``lagrange``, ``milp``
    or ``batched``); raises :class:`pacao.optimize.assign.InfeasibleError` when
    the users do not fit.
    """
    from pacao.optimize.assign import AssignProblem, solve_assign

    rtt_ms, bound_ms = users.rtt_ms, users.bound_ms
    n, d = rtt_ms.shape
    ok = finite(rtt_ms[..., None], users.usable)
    ok &= ~users.pinned[:, None] | (np.arange(d)[None, :] == users.host[:, None])
    lat = np.where(ok, rtt_ms, np.nan)
    problem = AssignProblem(
        dc_names=tuple(dcs.names or (f"dc{j}" for j in range(d))),
        capacity=np.asarray(dcs.capacity, dtype=np.float64),
        existing=np.asarray(dcs.existing, dtype=np.float64),
        functions=(dcs.latency,) * d,
        user_ids=tuple(users.user_ids or (f"u{i}" for i in range(n))),
        bound=np.asarray(bound_ms, dtype=np.float64),
        latency=lat,
        integer_penalty=integer_penalty,
    )
    res = solve_assign(problem, solver, batch_size=batch_size, time_limit=time_limit)
    alone, _ = choose(rtt_ms[..., None], Sla(np.ones((n, 1)), bound_ms[:, None]), ok)
    base = np.asarray(dcs.existing, dtype=np.int64)
    return MultiUserDecisions(
        dc=np.asarray(res.choice, dtype=np.int64),
        independent=alone,
        objective=res.objective,
        lower_bound=res.lower_bound,
        gap=res.gap,
        solver=solver,
        seconds=res.seconds,
        load=base + np.bincount(res.choice, minlength=d),
        independent_load=base + np.bincount(alone[alone >= 0], minlength=d),
        capacity=problem.capacity,
        congestion_ms=res.evaluation.congestion_ms,
    )
