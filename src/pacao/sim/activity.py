"""A trace variant that keeps positions only while a data session is active.

The paper's positions come from per-session network tickets ("collecting
LAC-level positioning and application volume information on a per-session
basis, every 6 minutes"): a phone with no session reports nothing. Our
synthetic traces have every user at every 6-minute step. This variant keeps a
sample only when a session overlaps its step, under a stated activity model
(docs/traces.md, "Active-session variant"):

* sessions start as a Poisson process whose hourly rate follows
  :data:`HOURLY_RATE` (per hour of the day, from the first sample's midnight),
  scaled per user by a gamma(2, 1/2) factor (mean 1: some users use their
  phone far more than others);
* a session lasts an exponential time of mean :data:`MEAN_SESSION_S`;
* then, as the paper, only users whose kept samples cross more than 3 LACs stay.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Session starts per hour, hours 0..23 (night low, commuting and evening peaks).
HOURLY_RATE = np.array(
    [0.3, 0.2, 0.1, 0.1, 0.1, 0.3, 0.8, 1.6, 2.0, 1.5, 1.4, 1.5,
     1.8, 1.6, 1.4, 1.4, 1.5, 1.8, 2.0, 2.0, 1.9, 1.6, 1.1, 0.6]
)  # fmt: skip
MEAN_SESSION_S = 600.0
#: The paper's filter: trajectories crossing more than this many LACs.
MIN_LACS = 3


def active_samples(traces: pd.DataFrame, seed: int = 0, step_s: int = 360) -> pd.DataFrame:
    """The rows of ``traces`` (user_id, t, lat, lon, lac; sorted by user, t) during which a
    session is active, for users whose kept rows cross more than 3 LACs."""
    rng = np.random.default_rng([int(seed), 0xAC7])
    uid = traces["user_id"].to_numpy(np.int64)
    t = traces["t"].to_numpy(np.int64)
    users, inv = np.unique(uid, return_inverse=True)
    n_users = len(users)
    t0 = int(t.min())
    day0 = t0 - t0 % 86400
    horizon = int(t.max()) + step_s - day0
    hours = int(np.ceil(horizon / 3600))
    rate = HOURLY_RATE[np.arange(hours) % 24]
    scale = rng.gamma(2.0, 0.5, size=n_users)
    # Session starts per (user, hour), then uniform inside the hour.
    counts = rng.poisson(scale[:, None] * rate[None, :])
    per = counts.ravel()
    su = np.repeat(np.repeat(np.arange(n_users), hours), per)
    sh = np.repeat(np.tile(np.arange(hours), n_users), per)
    start = day0 + (sh + rng.random(su.size)) * 3600.0
    end = start + rng.exponential(MEAN_SESSION_S, size=su.size)
    # A row [t, t + step) is active when some session of its user overlaps it: mark the
    # covered steps of each session on a per-user step grid (difference array).
    n_steps = int(np.ceil((horizon + step_s) / step_s)) + 1
    first = np.clip(np.floor((start - day0) / step_s).astype(np.int64), 0, n_steps - 1)
    last = np.clip(np.ceil((end - day0) / step_s).astype(np.int64), 0, n_steps - 1)
    diff = np.zeros(n_users * (n_steps + 1), dtype=np.int32)
    np.add.at(diff, su * (n_steps + 1) + first, 1)
    np.add.at(diff, su * (n_steps + 1) + last, -1)
    cover = np.cumsum(diff.reshape(n_users, n_steps + 1), axis=1)[:, :n_steps] > 0
    # Rows on the grid: the row covers steps floor((t - day0) / step) .. (t + step) exclusive.
    k0 = (t - day0) // step_s
    k1 = (t - day0 + step_s - 1) // step_s
    keep = cover[inv, np.clip(k0, 0, n_steps - 1)] | cover[inv, np.clip(k1, 0, n_steps - 1)]
    out = traces.loc[keep]
    lacs = out.groupby("user_id")["lac"].nunique()
    ok = lacs.index[lacs > MIN_LACS]
    return out[out["user_id"].isin(ok)].reset_index(drop=True)
