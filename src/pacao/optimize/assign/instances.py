"""Random but realistic instances for tests and benchmarks.

Users cluster around cities (Zipf-weighted) in a 1,400 km square, the size of
France; DCs sit where users are (drawn by population, as in the paper's
simulation). RTT = 40 ms (4G bufferbloat) + 3 x distance / 100 km, so RTTs
span about 40-100 ms. LT_u is the strict bound: the 1st decile of all
user-DC RTTs. C_d = 2 |U| / |D| and f reaches 700 ms at full load.
"""

from __future__ import annotations

import numpy as np

from pacao.optimize.assign.model import AssignProblem, LatencyFunction

#: Congestion latency vs load fraction: flat to the equal share (0.5 of C_d = 2|U|/|D|),
#: then convex up to 700 ms at full load (our reading of the paper's Fig. 17).
PAPER_BREAKPOINTS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.5, 5.0),
    (0.75, 50.0),
    (0.9, 200.0),
    (1.0, 700.0),
)


def random_instance(
    n_users: int,
    n_dcs: int,
    seed: int = 0,
    *,
    side_km: float = 1400.0,
    cities: int = 30,
    integer_penalty: bool = False,
    breakpoints: tuple[tuple[float, float], ...] = PAPER_BREAKPOINTS,
) -> AssignProblem:
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, side_km, size=(cities, 2))
    weight = 1.0 / np.arange(1, cities + 1)
    weight /= weight.sum()
    city = rng.choice(cities, size=n_users, p=weight)
    users = centre[city] + rng.normal(0, 40.0, size=(n_users, 2))
    users = np.clip(users, 0, side_km)
    dcs = users[rng.choice(n_users, size=n_dcs, replace=False)] + rng.normal(0, 5, (n_dcs, 2))
    dist = np.linalg.norm(users[:, None, :] - dcs[None, :, :], axis=2)
    rtt = 40.0 + 3.0 * dist / 100.0
    bound = np.full(n_users, float(np.quantile(rtt, 0.1)))
    f = LatencyFunction.from_breakpoints([list(b) for b in breakpoints], "breakpoints")
    return AssignProblem(
        dc_names=tuple(f"dc{d}" for d in range(n_dcs)),
        capacity=np.full(n_dcs, 2.0 * n_users / n_dcs),
        existing=np.zeros(n_dcs),
        functions=(f,) * n_dcs,
        user_ids=tuple(f"u{u}" for u in range(n_users)),
        bound=bound,
        latency=rtt,
        integer_penalty=integer_penalty,
    )
