"""Partitioned simulation: the dataset, the exact reduction, and equality with one task."""

from __future__ import annotations

import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pacao.errors import InputError
from pacao.sim.engine import prepare
from pacao.sim.scale import (
    ExactSum,
    build_shared,
    generate_dataset,
    open_dataset,
    read_partition,
    run_scaled,
)
from pacao.sim.sweep import SweepData, deployment, grid, run_sweep

#: A seed no other test or shipped run uses.
SEED = 23


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,  # type: ignore[no-untyped-call]
    ):
        yield c


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
    parted = run_scaled(client, build_shared(client, ds, dcs, seed=SEED), points)

    # The same users as one partition: one task per grid point.
    one = tmp_path / "one"
    one.mkdir()
    traces = pd.concat([read_partition(ds, i, 0) for i in range(3)], ignore_index=True)
    traces.to_parquet(one / "all.parquet", index=False)
    meta1 = {"format": "pacao-traces-dataset", "synthetic": True}
    meta1["partitions"] = [{"file": "all.parquet"}]
    (one / "_dataset.json").write_text(json.dumps(meta1))
    single = run_scaled(client, build_shared(client, open_dataset(one), dcs, seed=SEED), points)
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
