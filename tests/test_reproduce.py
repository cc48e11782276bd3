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

from pacao.reproduce.pipeline import HEADLINE_DCS, SUMMARY_KEYS, Options, reproduce
from sim_oracle import World, drawn_dc, km, simulate_user

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
    "results/sensitivity.parquet",
    "results/positions.parquet",
    "results/lacs.parquet",
    "results/inputs.json",
    "results/paper_setting.json",
    "legacy_placement.parquet",
    "fig_sensitivity.png",
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
    # The report's inputs: every sample at one of the positions, counted once.
    pos = pd.read_parquet(run / "results" / "positions.parquet")
    assert list(pos.columns) == ["lat", "lon", "samples"]
    want = traces.groupby(["lat", "lon"]).size()
    assert (pos.set_index(["lat", "lon"]).samples.sort_index() == want.sort_index()).all()
    info = json.loads((run / "results" / "inputs.json").read_text())
    assert (info["users"], info["samples"]) == (120, len(traces))


def test_summary_has_exactly_the_issue_keys(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary) == [
        "france_isp",
        "europe_ott",
        "settings",
        "congestion",
        "claims",
        "sensitivity",
    ]
    assert summary["settings"] == {
        "legacy": "home-entry-random-vm",
        "entry_metric": "user-rloc",
        "europe": "abutting",
    }
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
    """The paper's formula from the published files, without the package's code: entry at
    the DC nearest the first position, VM at the documented draw."""
    traces = pd.read_parquet(run / "traces.parquet")
    dcs = pd.read_csv(run / "dcs.csv")
    place = pd.read_parquet(run / "legacy_placement.parquet")
    assert list(place.columns) == ["use_case", "n_dcs", "user_id", "entry_dc", "vm_dc"]
    assert len(place) == 14 * 120
    drew_elsewhere = 0
    for (uc, n), p in place.groupby(["use_case", "n_dcs"]):
        names = dcs[(dcs.use_case == uc) & (dcs.n_dcs == n)]["name"].tolist()
        assert names == sorted(set(names), key=names.index)  # names are keys
        for r in p.itertuples():
            assert r.vm_dc == names[drawn_dc(int(r.user_id), 3, str(uc), int(n))]
        drew_elsewhere += int((p.entry_dc != p.vm_dc).sum())
    assert drew_elsewhere > 0
    for uc, n in HEADLINE_DCS.items():
        d = dcs[(dcs.use_case == uc) & (dcs.n_dcs == n)]
        where = dict(zip(d["name"], zip(d["lat"], d["lon"], strict=True), strict=True))
        p = place[(place.use_case == uc) & (place.n_dcs == n)].set_index("user_id")
        head = pd.read_parquet(run / "results" / f"headline_{uc}.parquet")
        got = head.legacy_rtt_ms.to_numpy()
        rows = traces[["user_id", "lat", "lon"]].to_numpy()
        seen: set[int] = set()
        for i, (u, lat, lon) in enumerate(rows):
            a, v = where[p.entry_dc[int(u)]], where[p.vm_dc[int(u)]]
            if int(u) not in seen:  # the entry is the DC nearest the first position
                seen.add(int(u))
                near = min(km(lat, lon, *x) for x in where.values())
                assert km(lat, lon, *a) == pytest.approx(near, abs=1e-9)
            want = 40.0 + 3.0 * km(lat, lon, *a) / 100.0 + 3.0 * km(*a, *v) / 100.0
            assert math.isclose(got[i], want, abs_tol=1e-9), (uc, i)


def test_independent_recomputation_of_the_headline_and_claims(run: Path) -> None:
    """Legacy, PACAO-1 and PACAO-2 of the headline configurations recomputed by the
    literal oracle from traces.parquet, dcs.csv, legacy_placement.parquet and the
    headline setting, then the medians, gains and claims of summary.json."""
    traces = pd.read_parquet(run / "traces.parquet")
    dcs = pd.read_csv(run / "dcs.csv")
    place = pd.read_parquet(run / "legacy_placement.parquet")
    head = json.loads((run / "results" / "headline.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    t0 = int(traces.t.min())
    claims = {c["id"]: c for c in summary["claims"]}
    for uc, n in HEADLINE_DCS.items():
        d = dcs[(dcs.use_case == uc) & (dcs.n_dcs == n)]
        pts = list(zip(d["lat"], d["lon"], strict=True))
        index = {name: i for i, name in enumerate(d["name"])}
        # Strict bound: 1st decile of user-DC RTT over all (sample, DC) pairs (Fig. 13).
        ud = np.array([[40.0 + 3.0 * km(a, b, *x) / 100.0 for x in pts] for a, b in
                       traces[["lat", "lon"]].drop_duplicates().to_numpy()])  # fmt: skip
        weights = traces.groupby(["lat", "lon"], sort=False).size()
        pos = traces[["lat", "lon"]].drop_duplicates().to_numpy()
        w = np.array([weights[(a, b)] for a, b in pos])
        strict = float(np.quantile(np.repeat(ud.ravel(), np.repeat(w, n)), 0.1))
        assert head[uc]["bound_ms"] == pytest.approx(strict, rel=1e-9)
        world = World(pts, strict, "user-rloc")
        p = place[(place.use_case == uc) & (place.n_dcs == n)].set_index("user_id")
        s1, s2 = head[uc]["s1_fraction_of_residence"], head[uc]["s2_fraction_of_s1"]
        rtt: dict[str, list[float]] = {"legacy": [], "pacao1": [], "pacao2": []}
        for u, g in traces.groupby("user_id", sort=True):
            samples = list(g[["t", "lat", "lon", "lac"]].itertuples(index=False, name=None))
            start = (index[p.entry_dc[u]], index[p.vm_dc[u]])
            for pol in rtt:
                rtt[pol] += simulate_user(world, samples, pol, s1, s2, True, 360, t0, 0.0, start)
        med = {k: float(np.median(v)) for k, v in rtt.items()}
        thr = {
            k: float(np.median(163_840 * 8 / (np.array(v) / 1000) / 1e6)) for k, v in rtt.items()
        }
        s = summary[uc]
        for pol in rtt:
            assert s[f"{pol}_median_rtt_ms"] == pytest.approx(med[pol], abs=1e-7), (uc, pol)
        for pol in ("pacao1", "pacao2"):
            gain = thr[pol] / thr["legacy"] - 1.0
            assert s[f"{pol}_median_throughput_gain"] == pytest.approx(gain, abs=1e-9)
        paper = {"france_isp": 0.40, "europe_ott": 0.30}[uc]
        g2 = thr["pacao2"] / thr["legacy"] - 1.0
        assert claims[f"gain_{uc}"]["holds"] == (abs(g2 - paper) <= paper / 3)
        if uc == "france_isp":
            share = float(np.mean(np.array(rtt["legacy"]) > strict))
            assert claims["strict_bound_90pct"]["ours"].startswith(f"{share:.1%}")
            assert claims["strict_bound_90pct"]["holds"] == (abs(share - 0.9) <= 0.3)


def test_claims_are_computed_rows_with_a_verdict(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    ids = [c["id"] for c in summary["claims"]]
    assert len(ids) == len(set(ids))
    for c in summary["claims"]:
        assert list(c) == ["id", "claim", "paper", "ours", "holds"]
        assert isinstance(c["holds"], bool) and c["ours"] and c["paper"]
    need = {
        "gain_france_isp",
        "gain_europe_ott",
        "pacao1_limited_france_isp",
        "largest_gain_dcs_france_isp",
        "largest_gain_dcs_europe_ott",
        "strict_bound_90pct",
        "strict_vs_median_5_10pct",
        "latency_gain_france_isp",
        "latency_gain_europe_ott",
        "vc_overlap_france_isp",
        "vc_64dcs_half_over_75ms_france_isp",
        "vc_balanced_france_isp",
        "vc_balanced_europe_ott",
        "vc_east_europe_ott",
    }
    assert need <= set(ids)
    sweep = pd.read_parquet(run / "results" / "sweep.parquet")
    st = sweep[(sweep.use_case == "france_isp") & (sweep.bound == "strict")]
    gains = {}
    for n, g in st.groupby("n_dcs"):
        leg = g[g.policy == "legacy"].median_throughput_mbps.iloc[0]
        best = g[g.policy == "pacao2"].sort_values(["median_rtt_ms", "s1", "s2"]).iloc[0]
        if n > 1:
            gains[int(n)] = best.median_throughput_mbps / leg - 1
    top = max(gains, key=lambda k: (gains[k], -k))
    c = next(c for c in summary["claims"] if c["id"] == "largest_gain_dcs_france_isp")
    assert c["ours"].startswith(f"largest with {top} DCs") and c["holds"] == (top == 64)
    html = (run / "report.html").read_text()
    assert "The paper's claims, checked on this run" in html
    assert html.count("<b style=") >= len(ids)
    assert "home-entry-random-vm" in html and "user-rloc" in html


def test_sensitivity_rows_include_the_run_itself(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    sens = pd.read_parquet(run / "results" / "sensitivity.parquet")
    assert set(sens.group) == {"readings", "frozen", "geography", "active"}
    mine = sens[sens.run & (sens.group == "readings")]
    assert len(mine) == 2
    for r in mine.itertuples():
        assert r.pacao2_gain == pytest.approx(
            summary[r.use_case]["pacao2_median_throughput_gain"], abs=1e-12
        )
    assert len(sens[sens.group == "readings"]) == 2 * 3 * 2
    assert len(summary["sensitivity"]) == len(sens)


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
        (["--legacy", "nearest"], "--legacy"),
        (["--entry-metric", "rtt"], "--entry-metric"),
        (["--europe", "asia"], "--europe"),
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
    from pacao.reproduce.pipeline import trace_inputs

    own = tmp_path / "own.csv"
    pd.read_parquet(run / "traces.parquet")[["user_id", "t", "lat", "lon"]].to_csv(own, index=False)
    out = tmp_path / "out"
    opts = Options(out=out, quick=True, seed=3, workers=1, sensitivity=False)
    reproduce(trace_inputs(own, None, seed=3), opts)
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
