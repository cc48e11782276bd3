"""The congestion-aware stage of a partitioned run: exact parts equal across partitionings
and equal to the single-file stage; the solve's figures deterministic per partitioning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pacao.optimize.assign.partitioned import ROUNDS
from pacao.sim.congestion import run_deployment, snapshot_positions, users_table
from pacao.sim.congestion_scale import (
    SOLVER_FILE,
    USERS_DIR,
    DaskPartitions,
    block_ranges,
    run_congestion_scaled,
)
from pacao.sim.engine import prepare
from pacao.sim.scale import build_shared, generate_dataset, open_dataset, read_partition
from pacao.sim.sweep import deployment

#: A seed no other test or shipped run uses.
SEED = 29


def dc_table() -> pd.DataFrame:
    from pacao.sim.geography import build_lacs, dc_sites

    lacs = build_lacs(0)
    frames = [
        dc_sites(uc, n, lacs, seed=SEED).assign(use_case=uc, n_dcs=n)
        for uc, n in (("france_isp", 8), ("europe_ott", 2))
    ]
    return pd.concat(frames, ignore_index=True)[["use_case", "n_dcs", "name", "lat", "lon"]]


def run_stage(
    client: Any, root: Path, dcs: pd.DataFrame, out: Path, blocks: int | None = None
) -> dict[str, Any]:
    sh = build_shared(client, open_dataset(root), dcs, seed=SEED)
    summary = run_congestion_scaled(client, sh, dcs, out, blocks=blocks)
    users = pd.concat(
        [pd.read_parquet(f) for f in sorted((out / USERS_DIR).glob("part-*.parquet"))],
        ignore_index=True,
    )
    return {
        "summary": summary,
        "dcs": pd.read_parquet(out / "congestion_dcs.parquet"),
        "solver": json.loads((out / SOLVER_FILE).read_text()),
        "users": users.sort_values(["use_case", "n_dcs", "user_id"]).reset_index(drop=True),
    }


def without_seconds(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        uc: {n: {k: v for k, v in s.items() if k != "seconds"} for n, s in per.items()}
        for uc, per in summary.items()
    }


def test_partitioned_stage_against_one_partition_and_the_single_file_run(
    client: Any, tmp_path: Path
) -> None:
    ds = generate_dataset(client, tmp_path / "ds", 300, SEED, partition_users=100)
    one = tmp_path / "one"
    one.mkdir()
    traces = pd.concat([read_partition(ds, i, 0) for i in range(3)], ignore_index=True)
    traces.to_parquet(one / "all.parquet", index=False)
    (one / "_dataset.json").write_text(
        json.dumps(
            {
                "format": "pacao-traces-dataset",
                "synthetic": True,
                "partitions": [{"file": "all.parquet"}],
            }
        )
    )
    dcs = dc_table()
    three = run_stage(client, tmp_path / "ds", dcs, tmp_path / "r3", blocks=3)
    single = run_stage(client, one, dcs, tmp_path / "r1")
    again = run_stage(client, tmp_path / "ds", dcs, tmp_path / "r3b", blocks=2)

    # Deterministic per partitioning, whatever the partitions per task (one each, then
    # blocks of 2 and 1): every number again, but the wall time.
    assert without_seconds(again["summary"]) == without_seconds(three["summary"])
    assert again["solver"] == three["solver"]  # the same rounds and evaluations too
    for run in (three, single):
        assert run["solver"].keys() == run["summary"].keys()
        for uc, per in run["solver"].items():
            assert per.keys() == run["summary"][uc].keys()
            for v in per.values():
                assert 0 <= v["improvement_rounds"] <= ROUNDS and v["dual_evaluations"] > 0
    # 3 partitions: each dual evaluation is one step per partition, and 5 calls more
    for per in three["solver"].values():
        assert all(v["tasks"] >= 3 * (v["dual_evaluations"] + 5) for v in per.values())
    pd.testing.assert_frame_equal(again["dcs"], three["dcs"], check_exact=True)
    pd.testing.assert_frame_equal(again["users"], three["users"], check_exact=True)

    # What does not depend on the solve is equal whatever the partitioning.
    exact = ["use_case", "n_dcs", "user_id", "dc_unaware", "rtt_unaware_ms"]
    pd.testing.assert_frame_equal(three["users"][exact], single["users"][exact], check_exact=True)
    pd.testing.assert_frame_equal(
        three["dcs"].drop(columns=["users_aware", "congestion_aware_ms"]),
        single["dcs"].drop(columns=["users_aware", "congestion_aware_ms"]),
        check_exact=True,
    )
    for uc, per in three["summary"].items():
        for n, s in per.items():
            s1 = single["summary"][uc][n]
            assert s["users"] == 300
            assert s["unaware_median_rtt_ms"] == s1["unaware_median_rtt_ms"]
            assert s["lower_bound"] <= s["objective"]
            assert s["lower_bound"] == pytest.approx(s1["lower_bound"], rel=1e-5)
            assert s["objective"] <= s1["objective"] * 1.01
    assert (three["dcs"].users_aware <= three["dcs"].capacity).all()

    # One partition against the single-file stage (decide_multi_user, solve_lagrange) on
    # the same users: the same l_ud, the same unaware reference, the same bound; the
    # objective within 0.1 % (equal when solve_lagrange's moves end within the rounds).
    tr = prepare(traces)
    pos = snapshot_positions(tr)
    runs = [
        run_deployment(tr, deployment(tr, str(uc), g.lat.to_numpy(), g.lon.to_numpy()), pos)
        for (uc, _), g in dcs.groupby(["use_case", "n_dcs"], sort=False)
    ]
    ref = users_table(tr, runs).sort_values(["use_case", "n_dcs", "user_id"])
    ref = ref.reset_index(drop=True)
    pd.testing.assert_frame_equal(single["users"][exact], ref[exact], check_exact=True)
    for r in runs:
        s1 = single["summary"][r.use_case][str(r.n_dcs)]
        assert r.lower_bound is not None
        assert s1["lower_bound"] == pytest.approx(r.lower_bound, rel=1e-12)
        assert s1["objective"] == pytest.approx(r.objective, rel=1e-3)
        summary = r.summary()
        for key in ("unaware_median_rtt_ms", "capacity_per_dc", "bound_ms", "users"):
            assert s1[key] == summary[key]
    # Where both runs chose the same DC, the same l_ud (the RTT from the snapshot position).
    same = single["users"].dc_aware == ref.dc_aware
    assert same.mean() > 0.9
    np.testing.assert_array_equal(
        single["users"].latency_aware_ms[same], ref.latency_aware_ms[same]
    )


def test_blocks_answer_in_the_order_of_the_messages(client: Any) -> None:
    assert block_ranges(10, 3) == [range(0, 3), range(3, 6), range(6, 10)]
    assert block_ranges(2, 8) == [range(0, 1), range(1, 2)]
    ranges = block_ranges(5, 2)
    blocks = [client.submit(list, [10 * i for i in r], pure=False) for r in ranges]
    parts = DaskPartitions(client, blocks, ranges)
    assert len(parts) == 5
    msgs = {4: 1, 0: 2, 3: 3}  # not in key order, two blocks, one partition of a block
    assert parts.map(lambda p, m: (p, m), msgs) == [(40, 1), (0, 2), (30, 3)]
    # update replaces only the addressed partitions, in their blocks
    assert parts.update(lambda p, m: (p + m, -p), {3: 5, 1: 7}) == [-30, -10]
    got = parts.map(lambda p, m: p, dict.fromkeys(range(5)))
    assert got == [0, 17, 20, 35, 40]
