"""Partitioned simulation: the dataset, the exact reduction, and equality with one task."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pacao.errors import InputError
from pacao.sim.engine import prepare
from pacao.sim.scale import (
    KEEP_MASS,
    ExactSum,
    bins_for,
    build_shared,
    generate_dataset,
    job_groups,
    open_dataset,
    pass1,
    pass2,
    read_partition,
    run_scaled,
)
from pacao.sim.sweep import SweepData, deployment, grid, run_sweep

#: A seed no other test or shipped run uses.
SEED = 23


def dc_table(seed: int) -> pd.DataFrame:
    from pacao.sim.geography import build_lacs, dc_sites

    lacs = build_lacs(0)
    frames = [
        dc_sites(uc, n, lacs, seed=seed).assign(use_case=uc, n_dcs=n)
        for uc, n in (("france_isp", 4), ("europe_ott", 2))
    ]
    return pd.concat(frames, ignore_index=True)[["use_case", "n_dcs", "name", "lat", "lon"]]


def test_exact_sum_is_exact_and_mergeable() -> None:
    rng = np.random.default_rng(SEED)
    v = rng.lognormal(3, 1, 5000) * rng.choice([1e-3, 1.0, 1e3], 5000)
    c = rng.integers(1, 500, 5000)
    exact = sum(Fraction(float(x)) * int(k) for x, k in zip(v, c, strict=True))
    whole = ExactSum.of(v, c)
    parts = ExactSum.of(v[:1234], c[:1234]) + ExactSum.of(v[1234:], c[1234:])
    assert Fraction(whole.num) * Fraction(2) ** whole.exp == exact
    assert parts.mean(int(c.sum())) == whole.mean(int(c.sum())) == float(exact / int(c.sum()))


def test_partitioned_sweep_equals_one_task_and_the_in_memory_sweep(
    client: Any, tmp_path: Path
) -> None:
    ds = generate_dataset(client, tmp_path / "ds", 240, SEED, partition_users=80)
    assert len(ds.files) == 3
    meta = json.loads((tmp_path / "ds" / "_dataset.json").read_text())
    assert [p["users"] for p in meta["partitions"]] == [80, 80, 80]
    assert meta["samples"] == sum(len(read_partition(ds, i, 0)) for i in range(3))
    dcs = dc_table(SEED)
    points = grid((0.2, 0.7), (0.3,))
    shared = build_shared(client, ds, dcs, seed=SEED)
    parted = run_scaled(client, shared, points)
    # Pass 2 answers from pass 1's kept values, or simulates a partition again when a
    # wanted bin was not kept: the rows do not depend on how much was kept.
    for keep, again in ((0.0, True), (1.0, False)):
        stats: dict[str, int] = {}
        spill = tmp_path / f"spill{keep:g}"
        rows = run_scaled(client, shared, points, keep=keep, spill=spill, stats=stats)
        pd.testing.assert_frame_equal(rows, parted, check_exact=True)
        assert stats["pass2_tasks"] == 3 * 3  # 3 partitions x (2 S' rows + legacy)
        assert (stats["pass2_simulated"] > 0) is again, (keep, stats)
        assert not any(spill.iterdir())
    # A pass-2 task whose kept file is gone (a retried task) simulates its points again,
    # which gives the same values.
    group = job_groups(points)[0]
    gone = tmp_path / "gone"
    gone.mkdir()
    own = pass1(shared, 0, points, group, gone, 0, KEEP_MASS)
    want = {c: sorted({b for b, _ in bins_for(p).values()}) for c, p in own.items()}
    kept, n_kept = pass2(shared, 0, points, group, gone, 0, want)
    again, n_again = pass2(shared, 0, points, group, gone, 0, want)  # the file is gone now
    assert (n_kept, n_again) == (0, len(group)) and kept.keys() == again.keys() == want.keys()
    for c, bins in kept.items():
        assert sorted(bins) == want[c]
        for b, (v, n) in bins.items():
            assert np.array_equal(v, again[c][b][0]) and np.array_equal(n, again[c][b][1])

    # The same users as one partition: one task per S' row.
    one = tmp_path / "one"
    one.mkdir()
    traces = pd.concat([read_partition(ds, i, 0) for i in range(3)], ignore_index=True)
    traces.to_parquet(one / "all.parquet", index=False)
    meta1 = {"format": "pacao-traces-dataset", "synthetic": True}
    meta1["partitions"] = [{"file": "all.parquet"}]
    (one / "_dataset.json").write_text(json.dumps(meta1))
    stats = {}
    single = run_scaled(
        client,
        build_shared(client, open_dataset(one), dcs, seed=SEED),
        points,
        keep=0.0,
        stats=stats,
    )
    assert stats["pass2_simulated"] == 0  # one partition's own bins are the run's
    pd.testing.assert_frame_equal(parted, single, check_exact=True)
    assert (parted.switches > 0).any() and (parted.migrations > 0).any()

    # And the in-memory sweep of pacao reproduce on those traces: the same order
    # statistics bit for bit; the mean there is a float dot product (last bits differ).
    tr = prepare(traces)
    deps = [
        deployment(tr, str(uc), g.lat.to_numpy(), g.lon.to_numpy(), seed=SEED)
        for (uc, _), g in dcs.groupby(["use_case", "n_dcs"], sort=False)
    ]
    old = run_sweep(client, SweepData(tr, deps), points)
    exact_cols = [c for c in old.columns if c != "mean_rtt_ms"]
    pd.testing.assert_frame_equal(parted[exact_cols], old[exact_cols], check_exact=True)
    np.testing.assert_allclose(parted.mean_rtt_ms, old.mean_rtt_ms, rtol=1e-12)


def test_overlapping_partitions_are_refused(client: Any, tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"user_id": [1, 1, 1, 1], "t": [0, 360, 720, 1080], "lat": 48.85, "lon": 2.35}
    )
    df.to_parquet(tmp_path / "a.parquet", index=False)
    df.to_parquet(tmp_path / "b.parquet", index=False)
    with pytest.raises(InputError, match="disjoint user-id ranges"):
        build_shared(client, open_dataset(tmp_path), dc_table(SEED))


def test_dataset_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"at least one \.parquet partition"):
        open_dataset(tmp_path)
    (tmp_path / "_dataset.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="pacao-traces-dataset"):
        open_dataset(tmp_path)


# --------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def part_run(client: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A partitioned `pacao reproduce` (2 partitions of 80 users, quick grid, DC counts 4
    and 64 to keep it short) through the test's cluster; records the size of every array
    a task hands back to this process."""
    import distributed

    from pacao.reproduce import pipeline

    root = tmp_path_factory.mktemp("part")
    ds = generate_dataset(client, root / "ds", 160, SEED, partition_users=80)
    returned: list[int] = []

    def sizes(obj: Any) -> None:
        if isinstance(obj, np.ndarray):
            returned.append(obj.size)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                sizes(k)
                sizes(v)
        elif isinstance(obj, list | tuple):
            for v in obj:
                sizes(v)
        elif hasattr(obj, "__dataclass_fields__"):
            for name in obj.__dataclass_fields__:
                sizes(getattr(obj, name))

    result, gather = distributed.Future.result, distributed.Client.gather

    def recorded_result(self: Any, *a: Any, **kw: Any) -> Any:
        out = result(self, *a, **kw)
        sizes(out)
        return out

    def recorded_gather(self: Any, *a: Any, **kw: Any) -> Any:
        out = gather(self, *a, **kw)
        sizes(out)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distributed.Future, "result", recorded_result)
        mp.setattr(distributed.Client, "gather", recorded_gather)
        opts = pipeline.Options(
            out=root / "run",
            quick=True,
            seed=SEED,
            scheduler=client.scheduler.address,
            dc_counts=(4, 64),
        )
        report = pipeline.reproduce_partitioned(ds.root, opts, 80)
    return {"out": root / "run", "ds": ds, "report": report, "returned": returned}


def test_partitioned_report_draws_the_figures_from_reduced_files(part_run: dict[str, Any]) -> None:
    out: Path = part_run["out"]
    html = part_run["report"].read_text()
    assert part_run["report"] == out / "report.html"
    assert not (out / "sweep-spill").exists()  # pass 1's kept values, removed after the sweep
    for fig in ("fig12_map", "fig13_rtt_cdf", "fig14_france_isp_heatmaps",
                "fig15_europe_ott_heatmaps", "fig16_throughput_cdf"):  # fmt: skip
        assert (out / f"{fig}.png").stat().st_size > 0
        assert f'src="{fig}.png"' in html
    assert "Partitioned run" in html and "binned" in html
    assert not (out / "results" / "headline_france_isp.parquet").exists()
    summary = json.loads((out / "summary.json").read_text())
    not_run = summary["partitioned"]["not_run"]
    assert "sensitivity" in not_run and "claim strict_bound_90pct" in not_run
    # The Sec. V-C stage ran (pacao.sim.congestion_scale): its figures and summary entry.
    assert set(summary["congestion"]) == {"france_isp", "europe_ott"}
    assert not any("Sec. V-C" in k and "claim" not in k for k in not_run)
    for fig in ("fig18_congestion_rtt_cdf", "fig19_users_per_dc"):
        assert f'src="{fig}.png"' in html
    ids = {c["id"] for c in summary["claims"]}
    assert {"gain_france_isp", "largest_gain_dcs_europe_ott", "loose_bound_flat"} <= ids
    assert not any(c["ours"].startswith("not computed") for c in summary["claims"])
    assert ids.isdisjoint(k.removeprefix("claim ") for k in not_run)


def test_partitioned_reduced_files_match_an_independent_computation(
    part_run: dict[str, Any],
) -> None:
    """The map's positions count every sample; each headline histogram equals
    np.histogram of the per-sample RTTs of the same configuration simulated in memory on
    all users at once."""
    from pacao.sim.engine import legacy, schedule, simulate
    from pacao.sim.policy import Policy
    from pacao.sim.sweep import GridPoint

    out, ds = part_run["out"], part_run["ds"]
    traces = pd.concat([read_partition(ds, i, 0) for i in range(2)], ignore_index=True)
    pos = pd.read_parquet(out / "results" / "positions.parquet")
    assert int(pos.samples.sum()) == len(traces) == ds.meta["samples"]
    want = traces.groupby(["lat", "lon"]).size()
    assert (pos.set_index(["lat", "lon"]).samples.sort_index() == want.sort_index()).all()

    tr = prepare(traces)
    dcs = pd.read_csv(out / "dcs.csv")
    head = json.loads((out / "results" / "headline.json").read_text())
    for uc, h in head.items():
        d = dcs[(dcs.use_case == uc) & (dcs.n_dcs == h["n_dcs"])]
        dep = deployment(tr, uc, d.lat.to_numpy(), d.lon.to_numpy(), seed=SEED)
        assert dep.bounds["strict"] == h["bound_ms"]
        sched = schedule(
            tr, GridPoint(h["s1_fraction_of_residence"], h["s2_fraction_of_s1"]).timing()
        )
        dec = dep.decisions["strict"]
        rtt = {
            "legacy": legacy(tr, dep.net, dep.start).rtt_ms,
            "pacao1": simulate(tr, sched, dep.net, dec, Policy.PACAO1, dep.start).rtt_ms,
            "pacao2": simulate(tr, sched, dep.net, dec, Policy.PACAO2, dep.start).rtt_ms,
        }
        hist = pd.read_parquet(out / "results" / f"rtt_hist_{uc}.parquet")
        for pol, r in rtt.items():
            hp = hist[hist.policy == pol].sort_values("lo_ms")
            edges = np.unique(np.r_[hp.lo_ms, hp.hi_ms])
            counts, _ = np.histogram(r, bins=edges)
            at = np.searchsorted(edges, hp.lo_ms)
            assert (counts[at] == hp.samples.to_numpy()).all(), (uc, pol)
            assert int(hp.samples.sum()) == len(r) == len(traces)
            assert (hp.hi_ms.to_numpy() / hp.lo_ms.to_numpy() - 1 <= 1 / 256).all()


def test_no_partitioned_step_hands_per_sample_arrays_to_the_client(
    part_run: dict[str, Any],
) -> None:
    """By design every task returns counts per histogram bin, per position or per
    (position, DC) pair, or (Sec. V-C stage) a DC x load-window cost table, never one
    value per sample: the largest array any task handed back is bounded by sizes that
    do not grow with the users, and a bin histogram is far smaller than one partition's
    samples."""
    from pacao.optimize.assign.partitioned import WINDOW

    out = part_run["out"]
    per_part = part_run["ds"].meta["samples"] // 2
    pairs = len(pd.read_parquet(out / "results" / "positions.parquet")) * 64  # 64 DCs at most
    window = 64 * (2 * WINDOW + 1)
    returned = part_run["returned"]
    assert returned and max(returned) <= max(pairs, window)
    assert sorted(returned)[len(returned) // 2] < per_part / 8  # the typical result: bins


def test_congestion_figures_from_a_folder_of_parts_or_one_file(
    part_run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Figs. 18-19 and the Sec. V-C section from files written here: the per-user table as
    part files (a partitioned run) read column-limited and binned, as one file exactly."""
    import shutil

    from pacao.report.figures import figure_plan
    from pacao.report.html import write_report
    from pacao.report.results import CONGESTION_COLUMNS, read_congestion_users
    from pacao.reproduce.pipeline import Options

    out = tmp_path / "run"
    shutil.copytree(part_run["out"], out)
    shutil.rmtree(out / "results" / "congestion_users")  # the run's own, replaced below
    rng = np.random.default_rng(SEED)
    users, summ, per_dc = [], {}, []
    for uc, n in (("france_isp", 64), ("europe_ott", 4), ("europe_ott", 64)):
        dc = rng.integers(0, n, 150)
        cong = rng.uniform(0, 8, n)
        lat = rng.uniform(40, 90, 150)
        users.append(pd.DataFrame({
            "use_case": uc, "n_dcs": n, "user_id": np.arange(150), "dc_aware": dc,
            "latency_aware_ms": lat, "congestion_aware_ms": cong[dc],
            "rtt_aware_ms": lat + cong[dc], "dc_unaware": dc, "rtt_unaware_ms": lat,
        }))  # fmt: skip
        load = np.bincount(dc, minlength=n)
        per_dc.append(pd.DataFrame({
            "use_case": uc, "n_dcs": n, "dc": np.arange(n), "name": [f"dc{i}" for i in range(n)],
            "lat": 45.0, "lon": rng.uniform(-5, 25, n), "capacity": 300 / n,
            "users_aware": load, "users_unaware": load, "congestion_aware_ms": cong,
            "congestion_unaware_ms": cong,
        }))  # fmt: skip
        rtt = lat + cong[dc]
        summ.setdefault(uc, {})[str(n)] = {
            "users": 150, "capacity_per_dc": 300 / n, "bound_ms": 50.0,
            "median_rtt_ms": float(np.median(rtt)), "unaware_median_rtt_ms": 60.0,
            "share_over_75ms": float(np.mean(rtt > 75)), "max_load_fraction": 0.5,
            "unaware_dcs_over_capacity": 0, "objective": 1.0, "lower_bound": None, "gap": None,
            "seconds": 0.1,
        }  # fmt: skip
    table = pd.concat(users, ignore_index=True)
    pd.concat(per_dc, ignore_index=True).to_parquet(out / "results" / "congestion_dcs.parquet")
    parts = out / "results" / "congestion_users"
    parts.mkdir()
    for i, part in enumerate((table.iloc[::2], table.iloc[1::2])):  # users split in two
        part.to_parquet(parts / f"part-{i:05d}.parquet")
    doc = json.loads((out / "summary.json").read_text())
    doc["congestion"] = summ
    (out / "summary.json").write_text(json.dumps(doc))

    read = pd.read_parquet
    columns: list[Any] = []

    def spy(path: Any, *a: Any, **kw: Any) -> pd.DataFrame:
        if "congestion_users" in str(path):
            columns.append(kw.get("columns"))
        return read(path, *a, **kw)

    monkeypatch.setattr(pd, "read_parquet", spy)
    binned = read_congestion_users(out, partitioned=True)
    assert binned is not None and columns == [CONGESTION_COLUMNS] * 2
    table.to_parquet(out / "results" / "congestion_users.parquet")
    exact = read_congestion_users(out, partitioned=False)
    assert exact is not None and set(binned.curves) == set(exact.curves)
    for key, c in binned.curves.items():
        v = table[(table.use_case == key[0]) & (table.n_dcs == key[1])].rtt_aware_ms.to_numpy()
        assert c.binned and not exact.curves[key].binned
        # The binned CDF is exact at its bin edges: the share of users below each edge.
        np.testing.assert_allclose(c.y[1:], [np.mean(v < x) for x in c.x[1:]])
        assert binned.max_congestion_ms[key] == exact.max_congestion_ms[key]

    plan = figure_plan(out)
    assert [k for k, _ in plan][-2:] == ["fig18", "fig19"]
    figs = {k: draw() for k, draw in plan if k in ("fig18", "fig19")}
    report = write_report(
        out, opts=Options(out=out, quick=True), figures=figs, stage_seconds={}, total_seconds=0
    ).read_text()
    assert "Section V-C" in report and 'src="fig18_congestion_rtt_cdf.png"' in report
    assert (out / "fig19_users_per_dc.png").stat().st_size > 0


def test_dc_counts_option_keeps_the_headline_deployments() -> None:
    from pacao.reproduce.pipeline import Options, parse_dc_counts

    assert parse_dc_counts(" 64,4,4") == (4, 64)
    assert parse_dc_counts("1,2,4,8,16,32,64") == (1, 2, 4, 8, 16, 32, 64)
    for text, value in (("4,x", "'x'"), ("4,64,3", "3"), ("1,4", "'1,4'"), ("4,,64", "'4,,64'")):
        with pytest.raises(InputError, match=f"--dc-counts: {value} is invalid") as err:
            parse_dc_counts(text)
        assert "with 4 and 64" in str(err.value) or "integers" in str(err.value)
    with pytest.raises(InputError, match="--workers: 2 is invalid; only without --scheduler"):
        Options(out=Path("o"), workers=2, scheduler="tcp://127.0.0.1:8786").validate()


def test_the_client_holds_a_value_seen_in_many_partitions_once() -> None:
    from pacao.sim.scale import COMPACT_EVERY, hold, merge_counts

    rng = np.random.default_rng(SEED)
    table = rng.uniform(1, 500, 40)  # values every partition shares, as tabulated RTTs
    parts = []
    for _ in range(5 * COMPACT_EVERY):
        v = np.unique(np.r_[rng.choice(table, 30), rng.uniform(1, 500, 2)])
        parts.append((v, rng.integers(1, 9, len(v))))
    held: list[tuple[np.ndarray, np.ndarray]] = []
    for p in parts:
        hold(held, p)
        assert len(held) < COMPACT_EVERY
    values, counts = merge_counts(held)
    everything = np.concatenate([v for v, _ in parts])
    assert np.array_equal(values, np.unique(everything))
    assert counts.sum() == sum(int(c.sum()) for _, c in parts)
    want = pd.Series(np.concatenate([c for _, c in parts])).groupby(everything).sum()
    assert np.array_equal(counts, want.to_numpy())
    assert sum(len(v) for v, _ in held) <= len(table) + 2 * len(parts) + 32 * COMPACT_EVERY
