"""Trace loader (formats, errors) and statistics, plus the `pacao traces` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pacao.cli import app
from pacao.errors import InputError
from pacao.sim.geography import build_lacs, haversine_km
from pacao.sim.mobility import generate_traces
from pacao.sim.traces import load_traces, trace_stats


@pytest.fixture(scope="module")
def lacs() -> pd.DataFrame:
    return build_lacs(0)


@pytest.fixture(scope="module")
def small(lacs: pd.DataFrame) -> pd.DataFrame:
    return generate_traces(lacs, n_users=40, seed=2)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_lat_lon(
    tmp_path: Path, lacs: pd.DataFrame, small: pd.DataFrame, suffix: str
) -> None:
    path = tmp_path / f"t{suffix}"
    raw = small[["user_id", "t", "lat", "lon"]]
    raw.to_csv(path, index=False) if suffix == ".csv" else raw.to_parquet(path, index=False)
    got = load_traces(path, lacs)
    pd.testing.assert_frame_equal(got, small, check_exact=False, rtol=1e-12)


def test_round_trip_lac_with_table(tmp_path: Path, lacs: pd.DataFrame, small: pd.DataFrame) -> None:
    # shuffled users (grouping is the loader's job) and a LAC table of our own
    shuffled = small.sample(frac=1.0, random_state=0).sort_values("t", kind="stable")
    shuffled[["user_id", "t", "lac"]].to_parquet(tmp_path / "t.parquet", index=False)
    lacs[["lac", "lat", "lon"]].to_csv(tmp_path / "lacs.csv", index=False)
    got = load_traces(tmp_path / "t.parquet", lacs, tmp_path / "lacs.csv")
    pd.testing.assert_frame_equal(got, small, check_exact=False, rtol=1e-12)


def test_iso_times(tmp_path: Path, lacs: pd.DataFrame) -> None:
    df = pd.DataFrame(
        {
            "user_id": [7, 7, 7],
            "t": ["2024-05-01T08:00:00", "2024-05-01T08:06:00", "2024-05-02T00:00:00"],
            "lat": [48.85, 48.9, 45.76],
            "lon": [2.35, 2.3, 4.84],
        }
    )
    df.to_csv(tmp_path / "iso.csv", index=False)
    got = load_traces(tmp_path / "iso.csv", lacs)
    assert got["t"].tolist() == [8 * 3600, 8 * 3600 + 360, 86400]
    assert got["lat"].tolist() == [48.85, 48.9, 45.76]  # given positions are kept


def _write(tmp_path: Path, df: pd.DataFrame) -> Path:
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    return path


GOOD = {"user_id": [1, 1, 2], "t": [0, 360, 0], "lat": [48.8, 48.9, 45.7], "lon": [2.3, 2.4, 4.8]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "lon"}, "missing column.*lon"),
        ({"drop": "t"}, "missing column.*t"),
        ({"t": [0, 0, 0]}, "user 1 row 1 column t.*increasing"),
        ({"t": [360, 0, 0]}, "user 1 row 1 column t"),
        ({"lat": [48.8, 95.0, 45.7]}, "row 1 column lat.*-90 <= lat <= 90"),
        ({"lon": [2.3, 2.4, 200.0]}, "row 2 column lon"),
        ({"lat": [48.8, None, 45.7]}, "row 1 column lat.*finite"),
        ({"t": ["2024-05-01T08:00", "soon", "2024-05-01"]}, "row 1 column t.*ISO 8601"),
        ({"t": [0.5, 360, 0]}, "row 0 column t.*whole seconds"),
        ({"user_id": [1, 1.5, 2]}, "row 1 column user_id"),
    ],
)
def test_loader_errors(
    tmp_path: Path, lacs: pd.DataFrame, change: dict[str, object], message: str
) -> None:
    df = pd.DataFrame(GOOD)
    for key, value in change.items():
        if key == "drop":
            df = df.drop(columns=[str(value)])
        else:
            df[key] = value
    with pytest.raises(InputError, match=message):
        load_traces(_write(tmp_path, df), lacs)


def test_loader_errors_lac_form(tmp_path: Path, lacs: pd.DataFrame) -> None:
    table = tmp_path / "lacs.csv"
    pd.DataFrame({"lac": [10, 11], "lat": [48.8, 45.7], "lon": [2.3, 4.8]}).to_csv(
        table, index=False
    )
    df = pd.DataFrame({"user_id": [1, 1], "t": [0, 360], "lac": [10, 12]})
    with pytest.raises(InputError, match=r"row 1 column lac.*LAC table"):
        load_traces(_write(tmp_path, df), lacs, table)
    pd.DataFrame({"lac": [10, 10], "lat": [48.8, 45.7], "lon": [2.3, 4.8]}).to_csv(
        table, index=False
    )
    with pytest.raises(InputError, match="unique"):
        load_traces(_write(tmp_path, df), lacs, table)
    pd.DataFrame({"lac": [10], "latitude": [48.8], "lon": [2.3]}).to_csv(table, index=False)
    with pytest.raises(InputError, match=r"missing column.*lat"):
        load_traces(_write(tmp_path, df), lacs, table)
    with pytest.raises(InputError, match="existing"):
        load_traces(tmp_path / "nope.csv", lacs)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match="parquet"):
        load_traces(tmp_path / "x.json", lacs)
    (tmp_path / "empty.csv").write_text("user_id,t,lat,lon\n")
    with pytest.raises(InputError, match="at least one row"):
        load_traces(tmp_path / "empty.csv", lacs)


def test_stats_on_known_traces(lacs: pd.DataFrame) -> None:
    # user 0: Paris then Lyon (one trip ~390 km); user 1: stays in Paris
    paris = lacs.iloc[int(np.argmin(np.abs(lacs["lat"] - 48.85) + np.abs(lacs["lon"] - 2.35)))]
    lyon = lacs.iloc[int(np.argmin(np.abs(lacs["lat"] - 45.76) + np.abs(lacs["lon"] - 4.84)))]
    rows = [(0, t, paris) for t in (0, 360, 720)] + [(0, t, lyon) for t in (1080, 1440)]
    rows += [(1, t, paris) for t in (0, 360)]
    df = pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "t": [r[1] for r in rows],
            "lat": [r[2]["lat"] for r in rows],
            "lon": [r[2]["lon"] for r in rows],
            "lac": [int(r[2]["lac"]) for r in rows],
        }
    )
    s = trace_stats(df)
    km = float(haversine_km(paris["lat"], paris["lon"], lyon["lat"], lyon["lon"]))
    assert s["users"] == 2 and s["samples"] == 7
    assert s["trips"] == 1
    assert s["trip_km"]["median"] == pytest.approx(km)
    assert s["share_users_trip_over_100km"] == 0.5
    assert s["lacs_per_user"]["mean"] == 1.5
    # user 0: 3 samples at A, 2 at B: gyration = km * sqrt(6) / 5 (flat approximation)
    g = sorted([0.0, km * np.sqrt(6) / 5])
    assert s["radius_of_gyration_km"]["median"] == pytest.approx(np.mean(g), rel=0.01)


def test_stats_on_generated(small: pd.DataFrame) -> None:
    s = trace_stats(small)
    assert s["users"] == 40 and s["samples"] == 40 * 240
    assert s["lacs_per_user"]["median"] > 3
    assert s["step_s_median"] == 360.0
    assert 0 < s["trip_km"]["median"] < s["trip_km"]["p90"]


def test_cli_generate_and_stats(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "g.parquet"
    res = runner.invoke(
        app, ["traces", "generate", "--users", "30", "--seed", "4", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert pd.read_parquet(out)["user_id"].nunique() == 30
    res = runner.invoke(app, ["traces", "stats", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["users"] == 30


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"user_id": [1], "t": [0], "lat": [48.0]}).to_csv(bad, index=False)
    for args in (
        ["traces", "stats", str(bad)],
        ["traces", "generate", "--users", "0", "--out", str(tmp_path / "x.parquet")],
        ["traces", "generate", "--out", str(tmp_path / "x.txt")],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pacao: error: ")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("1,0\n1,1e23", r"row 1 column t: 1e\+23 is invalid; whole seconds with \|t\| <= 1e\+12"),
        ("1,-1e23\n1,0", r"row 0 column t: -1e\+23 is invalid; whole seconds"),
        ("1,0\n1,100000000000000000000000", r"row 1 column t: 100000000000000000000000 is inv"),
        ("1,0\n1,9223372036854775808", r"row 1 column t: 9223372036854775808 is invalid"),
        ("1,0\n1,1000000000001", r"row 1 column t: 1000000000001 is invalid"),
        ("9223372036854775808,0\n1,0", r"row 0 column user_id: 9223372036854775808 is invalid"),
        ("1,0\n-9223372036854775808,0", r"row 1 column user_id: -9223372036854775808 is inv"),
        (
            "9223372036854775808,0\n-9223372036854775808,0",
            r"row 0 column user_id: '9223372036854775808' is invalid; an integer with \|user_id\|",
        ),
        ("-9223372036854775809,0\n1,0", r"row 0 column user_id: -9223372036854775809 is inv"),
        ("1e23,0\n1,0", r"row 0 column user_id: 1e\+23 is invalid"),
    ],
)
def test_out_of_range_times_and_ids_are_refused(
    tmp_path: Path, lacs: pd.DataFrame, rows: str, message: str
) -> None:
    """Never cast: int64 casts wrap around and float64 merges ids above 2^53."""
    path = tmp_path / "t.csv"
    lines = [f"{r},48.8,2.3" for r in rows.splitlines()]
    path.write_text("user_id,t,lat,lon\n" + "\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message):
        load_traces(path, lacs)


def test_extreme_but_valid_ids_and_times_are_exact(tmp_path: Path, lacs: pd.DataFrame) -> None:
    """Ids 2^53 and 2^53 + 1 stay two users; int64's extremes and Unix times load as written."""
    path = tmp_path / "t.csv"
    path.write_text(
        "user_id,t,lat,lon\n9007199254740993,0,48.8,2.3\n9007199254740992,0,48.8,2.3\n"
        "9223372036854775807,1700000000,48.8,2.3\n9223372036854775807,1000000000000,48.8,2.3\n"
        "-9223372036854775807,-1000000000000,48.8,2.3\n"
    )
    got = load_traces(path, lacs)
    assert got["user_id"].tolist() == [
        -(2**63 - 1), 2**53, 2**53 + 1, 2**63 - 1, 2**63 - 1
    ]  # fmt: skip
    assert got["t"].tolist() == [-(10**12), 0, 0, 1_700_000_000, 10**12]
    table = tmp_path / "lacs.csv"
    table.write_text("lac,lat,lon\n9223372036854775807,48.8,2.3\n9223372036854775806,45.7,4.8\n")
    codes = tmp_path / "c.csv"
    codes.write_text("user_id,t,lac\n1,0,9223372036854775806\n1,6,9223372036854775807\n")
    assert load_traces(codes, lacs, table)["lac"].tolist() == [2**63 - 2, 2**63 - 1]
