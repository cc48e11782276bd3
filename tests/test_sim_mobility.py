"""Synthetic traces: shape, determinism, the >3-LAC filter, speeds, daily rhythm."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pacao.errors import InputError
from pacao.sim import mobility as mob
from pacao.sim.geography import build_lacs, haversine_km
from pacao.sim.mobility import DEFAULT_PARAMS, generate_traces, simulate_true

N = 1500
STEPS = 240


@pytest.fixture(scope="module")
def lacs() -> pd.DataFrame:
    return build_lacs(0)


@pytest.fixture(scope="module")
def run(lacs: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    traces, tlat, tlon = simulate_true(lacs, N, seed=11)
    return traces, tlat.reshape(N, STEPS), tlon.reshape(N, STEPS)


def test_table_shape(lacs: pd.DataFrame, run: tuple[pd.DataFrame, np.ndarray, np.ndarray]) -> None:
    traces = run[0]
    assert list(traces.columns) == ["user_id", "t", "lat", "lon", "lac"]
    assert [str(traces[c].dtype) for c in traces.columns] == [
        "int64",
        "int64",
        "float64",
        "float64",
        "int64",
    ]
    assert len(traces) == N * STEPS
    assert (traces["user_id"].to_numpy() == np.repeat(np.arange(N), STEPS)).all()
    assert (traces["t"].to_numpy() == np.tile(np.arange(0, 86400, 360), N)).all()
    # positions are the centres of the LAC the user is in
    centre = lacs.set_index("lac").loc[traces["lac"]]
    assert (centre["lat"].to_numpy() == traces["lat"].to_numpy()).all()
    assert (centre["lon"].to_numpy() == traces["lon"].to_numpy()).all()


def test_generate_matches_simulate_and_is_deterministic(
    lacs: pd.DataFrame, run: tuple[pd.DataFrame, np.ndarray, np.ndarray]
) -> None:
    again = generate_traces(lacs, n_users=N, seed=11)
    pd.testing.assert_frame_equal(again, run[0])
    other = generate_traces(lacs, n_users=N, seed=12)
    assert not np.array_equal(other["lac"].to_numpy(), again["lac"].to_numpy())


def test_only_users_crossing_more_than_three_lacs(
    lacs: pd.DataFrame, run: tuple[pd.DataFrame, np.ndarray, np.ndarray]
) -> None:
    per_user = run[0].groupby("user_id")["lac"].nunique()
    assert (per_user > 3).all()
    # the filter matters: unfiltered candidates often stay within fewer LACs
    k = mob._kernels(lacs, DEFAULT_PARAMS)
    raw = mob._simulate(
        k, 2000, DEFAULT_PARAMS, np.random.default_rng(0), np.arange(0, 86400, 360.0)
    )
    distinct = np.array([len(np.unique(row)) for row in raw.lac])
    assert (distinct <= 3).mean() > 0.2


def test_speeds_bounded_and_rail_present(
    run: tuple[pd.DataFrame, np.ndarray, np.ndarray],
) -> None:
    _t, lat, lon = run
    kmh = haversine_km(lat[:, :-1], lon[:, :-1], lat[:, 1:], lon[:, 1:]) / 0.1
    assert kmh.max() <= DEFAULT_PARAMS.max_speed_kmh
    assert (kmh > 150).any()  # long trips by rail exist
    moving = kmh[kmh > 1]
    assert 20 < np.median(moving) < 120  # most movement is road-speed


def test_daily_rhythm(run: tuple[pd.DataFrame, np.ndarray, np.ndarray]) -> None:
    lac = run[0]["lac"].to_numpy().reshape(N, STEPS)
    change = (lac[:, 1:] != lac[:, :-1]).mean(axis=0)  # share of users moving per step
    hour = np.arange(1, STEPS) * 360 / 3600
    night = change[(hour >= 1) & (hour < 5)].mean()
    morning = change[(hour >= 7) & (hour < 9)].mean()
    evening = change[(hour >= 17) & (hour < 19)].mean()
    assert morning > 5 * night and evening > 5 * night
    # most users spend the night where they end the day (at home)
    assert (lac[:, 0] == lac[:, -1]).mean() > 0.8


def test_long_trips_exist_but_are_a_minority(
    run: tuple[pd.DataFrame, np.ndarray, np.ndarray],
) -> None:
    _t, lat, lon = run
    span = haversine_km(lat[:, :1], lon[:, :1], lat, lon).max(axis=1)
    share = (span > 100).mean()
    assert 0.02 < share < 0.4


def test_bad_arguments(lacs: pd.DataFrame) -> None:
    for kwargs in ({"n_users": 0}, {"step_s": 0}, {"step_s": 90000}, {"n_users": 2.5}):
        with pytest.raises(InputError):
            generate_traces(lacs, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="radius_km"):
        generate_traces(lacs.drop(columns=["radius_km"]), n_users=5)


def test_other_step(lacs: pd.DataFrame) -> None:
    traces = generate_traces(lacs, n_users=50, seed=1, step_s=600, day_s=43200)
    assert len(traces) == 50 * 72
    assert traces["t"].max() == 43200 - 600
    assert (traces.groupby("user_id")["lac"].nunique() > 3).all()
