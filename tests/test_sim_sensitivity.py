"""The legacy draw, the active-session trace variant and unique DC names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pacao.errors import InputError
from pacao.reproduce.pipeline import unique_names
from pacao.sim.activity import active_samples
from pacao.sim.legacy import drawn_dc, reading
from sim_oracle import drawn_dc as oracle_draw


def test_legacy_draw_is_uniform_keyed_and_matches_the_documented_hash() -> None:
    users = np.arange(1, 20001)
    got = drawn_dc(users, 5, "france_isp", 8)
    counts = np.bincount(got, minlength=8)
    expect = len(users) / 8
    chi2 = float(((counts - expect) ** 2 / expect).sum())
    assert chi2 < 30.0  # 7 degrees of freedom: p < 1e-4 above 24.3
    # Keyed by user id: a subset or another order gives each user the same DC.
    sub = users[::7][::-1]
    assert np.array_equal(drawn_dc(sub, 5, "france_isp", 8), got[sub - 1])
    # Another seed, use case or DC count is another draw.
    assert not np.array_equal(drawn_dc(users, 6, "france_isp", 8), got)
    assert not np.array_equal(drawn_dc(users, 5, "europe_ott", 8), got)
    for u in (0, 1, 12345, 2**40 + 3):
        for uc, n in (("france_isp", 64), ("europe_ott", 4)):
            assert drawn_dc(np.array([u]), 9, uc, n)[0] == oracle_draw(u, 9, uc, n)
    with pytest.raises(InputError, match="--legacy"):
        reading("nearest")


def day(n_users: int = 400, seed: int = 0) -> pd.DataFrame:
    """Users at every 6-minute step of a day, moving among 12 LACs."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        lac = 0
        for k in range(240):
            if rng.random() < 0.15:
                lac = int(rng.integers(12))
            rows.append((u, 360 * k, 45.0 + lac * 0.1, 2.0, lac))
    return pd.DataFrame(rows, columns=["user_id", "t", "lat", "lon", "lac"])


def test_active_samples_follow_the_stated_activity_model() -> None:
    traces = day()
    act = active_samples(traces, seed=1)
    assert act.equals(active_samples(traces, seed=1))
    assert not act.equals(active_samples(traces, seed=2))
    # A subset of the rows, in order, every kept user crossing more than 3 LACs.
    merged = act.merge(traces, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
    assert (act.groupby("user_id").lac.nunique() > 3).all()
    assert 0 < len(act) < len(traces)
    # The hourly rate: far fewer samples kept at night (02-05 h) than in the day (08-21 h).
    hour = (act.t // 3600) % 24
    night = float(hour.between(2, 4).mean()) / 3
    daytime = float(hour.between(8, 20).mean()) / 13
    assert night < daytime / 4


def test_repeated_dc_names_are_made_unique_within_a_deployment() -> None:
    dcs = pd.DataFrame(
        {
            "use_case": ["france_isp"] * 3 + ["europe_ott"],
            "n_dcs": [3, 3, 3, 1],
            "name": ["Brest", "Brest", "Lyon", "Brest"],
            "lat": [48.0, 48.1, 45.7, 48.0],
            "lon": [-4.0, -4.1, 4.8, -4.0],
        }
    )
    out = unique_names(dcs)
    assert out["name"].tolist() == ["Brest", "Brest #2", "Lyon", "Brest"]
    same = unique_names(out)
    assert same is out
