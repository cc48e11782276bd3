"""`pacao reproduce` end to end on a few users, and its command-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pacao.sim.reproduce import HEADLINE_DCS, SUMMARY_KEYS, Options, reproduce
from sim_oracle import km

FILES = [
    "traces.parquet",
    "dcs.csv",
    "summary.json",
    "report.html",
    "fig12_map.png",
    "fig13_rtt_cdf.png",
    "fig14_france_isp_heatmaps.png",
    "fig15_europe_ott_heatmaps.png",
    "fig16_throughput_cdf.png",
    "fig18_congestion_rtt_cdf.png",
    "fig19_users_per_dc.png",
    "results/sweep.parquet",
    "results/headline.json",
    "results/headline_france_isp.parquet",
    "results/headline_europe_ott.parquet",
    "results/congestion_users.parquet",
    "results/congestion_dcs.parquet",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reproduce")
    reproduce(None, Options(out=out, quick=True, users=120, seed=3, workers=1))
    return out


def test_every_output_file_is_written(run: Path) -> None:
    for f in FILES:
        assert (run / f).is_file() and (run / f).stat().st_size > 0, f
    html = (run / "report.html").read_text()
    for f in FILES:
        if f.endswith(".png"):
            assert f'src="{f}"' in html
    assert "paper" in html and "Where we differ" in html


def test_outputs_have_the_documented_columns(run: Path) -> None:
    traces = pd.read_parquet(run / "traces.parquet")
    assert list(traces.columns) == ["user_id", "t", "lat", "lon", "lac"]
    assert traces.user_id.nunique() == 120
    dcs = pd.read_csv(run / "dcs.csv")
    assert list(dcs.columns) == ["use_case", "n_dcs", "name", "lat", "lon"]
    for uc in ("france_isp", "europe_ott"):
        for n in (1, 2, 4, 8, 16, 32, 64):
            assert len(dcs[(dcs.use_case == uc) & (dcs.n_dcs == n)]) == n
    sweep = pd.read_parquet(run / "results" / "sweep.parquet")
    # 14 deployments x 3 bounds x (legacy + 3 PACAO-1 + 9 PACAO-2) on the quick 3x3 grid.
    assert len(sweep) == 14 * 3 * (1 + 3 + 9)
    assert set(sweep.policy) == {"legacy", "pacao1", "pacao2"}


def test_summary_has_exactly_the_issue_keys(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary) == ["france_isp", "europe_ott", "congestion"]
    for uc in HEADLINE_DCS:
        s = summary[uc]
        assert list(s) == list(SUMMARY_KEYS)
        assert s["n_dcs"] == HEADLINE_DCS[uc]


def test_summary_is_consistent_with_the_per_sample_results(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    for uc in HEADLINE_DCS:
        s = summary[uc]
        df = pd.read_parquet(run / "results" / f"headline_{uc}.parquet")
        thr = {
            p: np.median(163_840 * 8 / (df[f"{p}_rtt_ms"] / 1000) / 1e6)
            for p in ("legacy", "pacao1", "pacao2")
        }
        for p in ("legacy", "pacao1", "pacao2"):
            assert s[f"{p}_median_rtt_ms"] == pytest.approx(df[f"{p}_rtt_ms"].median(), rel=1e-12)
        for p in ("pacao1", "pacao2"):
            assert s[f"{p}_median_throughput_gain"] == pytest.approx(
                thr[p] / thr["legacy"] - 1, abs=1e-12
            )
        # The sweep picked the headline's S', S'': PACAO-2 at its best setting.
        sweep = pd.read_parquet(run / "results" / "sweep.parquet")
        best = sweep[
            (sweep.use_case == uc)
            & (sweep.n_dcs == s["n_dcs"])
            & (sweep.bound == "strict")
            & (sweep.policy == "pacao2")
        ].median_rtt_ms.min()
        assert s["pacao2_median_rtt_ms"] == pytest.approx(best, rel=1e-12)


def test_legacy_rtt_recomputed_from_traces_and_dcs(run: Path) -> None:
    """The paper's formula from the published files, without the package's code."""
    traces = pd.read_parquet(run / "traces.parquet")
    dcs = pd.read_csv(run / "dcs.csv")
    for uc, n in HEADLINE_DCS.items():
        d = dcs[(dcs.use_case == uc) & (dcs.n_dcs == n)][["lat", "lon"]].to_numpy()
        head = pd.read_parquet(run / "results" / f"headline_{uc}.parquet")
        got = head.legacy_rtt_ms.to_numpy()
        rows = traces[["user_id", "lat", "lon"]].to_numpy()
        first: dict[int, int] = {}
        for i, (u, lat, lon) in enumerate(rows):
            if int(u) not in first:
                dist = [km(lat, lon, a, b) for a, b in d]
                first[int(u)] = int(np.argmin(dist))
            a, b = d[first[int(u)]]
            want = 40.0 + 3.0 * km(lat, lon, a, b) / 100.0
            assert math.isclose(got[i], want, abs_tol=1e-9), (uc, i)


def test_congestion_summary_matches_the_per_user_results(run: Path) -> None:
    cong = json.loads((run / "summary.json").read_text())["congestion"]
    users = pd.read_parquet(run / "results" / "congestion_users.parquet")
    assert set(cong) == set(HEADLINE_DCS)
    for uc, per_n in cong.items():
        assert sorted(int(n) for n in per_n) == [1, 2, 4, 8, 16, 32, 64]
        for n, s in per_n.items():
            u = users[(users.use_case == uc) & (users.n_dcs == int(n))]
            assert len(u) == s["users"] == 120
            assert u.user_id.is_unique
            rtt = u.latency_aware_ms + u.congestion_aware_ms
            assert np.allclose(u.rtt_aware_ms, rtt)
            assert s["median_rtt_ms"] == pytest.approx(float(np.median(rtt)), rel=1e-12)
            assert s["unaware_median_rtt_ms"] == pytest.approx(u.rtt_unaware_ms.median())
            assert s["share_over_75ms"] == pytest.approx(float(np.mean(rtt > 75.0)))
            # The proven bound holds and the gap is the one it implies.
            assert s["lower_bound"] <= s["objective"] * (1 + 1e-9)
            gap = (s["objective"] - s["lower_bound"]) / s["objective"]
            assert s["gap"] == pytest.approx(max(0.0, gap), abs=1e-12)
            # The objective is recomputed from the saved RTTs and the strict bound.
            t = np.maximum(1.0, rtt.to_numpy() / s["bound_ms"])
            assert s["objective"] == pytest.approx(float(t.sum()), rel=1e-9)


def test_congestion_assignment_respects_capacity_and_the_latency_curve(run: Path) -> None:
    from pacao.optimize.assign.instances import PAPER_BREAKPOINTS

    users = pd.read_parquet(run / "results" / "congestion_users.parquet")
    dcs = pd.read_parquet(run / "results" / "congestion_dcs.parquet")
    xs, ys = zip(*PAPER_BREAKPOINTS, strict=True)
    for (uc, n), g in users.groupby(["use_case", "n_dcs"]):
        d = dcs[(dcs.use_case == uc) & (dcs.n_dcs == n)].set_index("dc")
        cap = float(d.capacity.iloc[0])
        assert cap == pytest.approx(max(2 * 120 / n, 1.0))
        load = g.dc_aware.value_counts().reindex(d.index, fill_value=0)
        assert (load.to_numpy() == d.users_aware.to_numpy()).all()
        assert load.max() <= cap, (uc, n)
        near = g.dc_unaware.value_counts().reindex(d.index, fill_value=0)
        assert (near.to_numpy() == d.users_unaware.to_numpy()).all()
        # Each user's congestion latency is its DC's f at the DC's load fraction.
        want = np.interp(load.to_numpy() / cap, xs, ys)
        assert np.allclose(g.congestion_aware_ms, want[g.dc_aware.to_numpy()])
        # The unaware DC is the nearest one: no aware DC is nearer.
        assert (
            g.latency_aware_ms + 1e-9
            >= g.rtt_unaware_ms - np.interp(near.to_numpy() / cap, xs, ys)[g.dc_unaware.to_numpy()]
        ).all()
    html = (run / "report.html").read_text()
    assert "Section V-C" in html and "50 % of users exceed 75 ms" in html


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pacao.cli", "reproduce", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0"], "--users"),
        (["--dc-gbps", "0"], "--dc-gbps"),
        (["--vm-memory-gb", "-1"], "--vm-memory-gb"),
        (["--scheduler", "tcp://127.0.0.1:9"], "scheduler"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    res = cli("--quick", "--out", str(tmp_path / "o"), *args)
    assert res.returncode == 2, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.startswith("pacao: error:")]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_cli_out_must_be_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    res = cli("--quick", "--out", str(f))
    assert res.returncode == 2 and "--out" in res.stderr


def test_own_traces_give_the_same_results_as_the_same_synthetic_run(
    run: Path, tmp_path: Path
) -> None:
    """traces.parquet written by a run, fed back as a user's CSV, reproduces its summary."""
    from pacao.sim.reproduce import trace_inputs

    own = tmp_path / "own.csv"
    pd.read_parquet(run / "traces.parquet")[["user_id", "t", "lat", "lon"]].to_csv(own, index=False)
    out = tmp_path / "out"
    reproduce(trace_inputs(own, None, seed=3), Options(out=out, quick=True, seed=3, workers=1))
    mine = json.loads((out / "summary.json").read_text())
    theirs = json.loads((run / "summary.json").read_text())
    for uc in HEADLINE_DCS:
        for key in SUMMARY_KEYS:
            assert mine[uc][key] == pytest.approx(theirs[uc][key], rel=1e-12), (uc, key)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lac-table", "x.csv"], "--lac-table"),
        (["--traces", "t.csv", "--users", "5"], "--users"),
    ],
)
def test_cli_trace_option_errors(tmp_path: Path, args: list[str], message: str) -> None:
    res = cli("--quick", "--out", str(tmp_path / "o"), *args)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_cli_bad_trace_file_names_the_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,time,lat,lon\n1,0,48.8,2.3\n")
    res = cli("--quick", "--out", str(tmp_path / "o"), "--traces", str(bad))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "missing column(s) t" in res.stderr.splitlines()[-1]
