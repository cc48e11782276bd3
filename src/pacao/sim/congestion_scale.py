"""The congestion-aware stage (Sec. V-C) of a partitioned run: the experiment of
:mod:`pacao.sim.congestion` on a user-partitioned dataset, as Dask tasks.

Each partition's users stay on a worker, in blocks of consecutive partitions (one per
worker thread, :class:`DaskPartitions`): a block's task takes every user's snapshot
position (the rule of :func:`pacao.sim.congestion.snapshot_positions`, 12 h after the
dataset's first sample), and per deployment builds its partitions' rows l_ud and
alpha_ud of the solve. The coordinator, here, runs the partitioned ``lagrange`` solve
(:func:`pacao.optimize.assign.partitioned.solve_partitioned`), broadcasting the prices
and loads and receiving only per-partition sums. The tasks write the per-user table
themselves, one file per partition; the client receives per partition only counts over
(position, DC) pairs, which give the exact medians."""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from pacao.optimize.assign.partitioned import (
    ROUNDS,
    Instance,
    LocalPartitions,
    Part,
    make_part,
    median_of_counts,
    part_choice,
    solve_partitioned,
)
from pacao.sim.congestion import (
    RTT_THRESHOLD_MS,
    SNAPSHOT_S,
    CongestionRun,
    Solve,
    dcs_table,
    latency_function,
    snapshot_positions,
    summary_of,
    users_table,
)
from pacao.sim.scale import Dataset, Scan, Shared, merge_counts, part_trajectories

M = TypeVar("M")
R = TypeVar("R")

#: The per-user table of a partitioned run: one file per partition in this folder.
USERS_DIR = "congestion_users"
SOLVER_FILE = "congestion_solver.json"


class DaskPartitions:
    """The solve's partitions as futures on a Dask cluster (pacao.optimize.assign's
    Partitions), kept in blocks: each call is one task per block holding a partition it
    addresses, and the block's task runs the partitions' steps one after another.

    A call's work per partition is milliseconds, so one task per partition made the
    scheduler and the round trips the stage's cost; a block per worker thread keeps the
    partitions (the unit of the solve, hence its numbers) and pays one task per thread.
    """

    def __init__(self, client: Any, blocks: list[Any], ranges: list[range]) -> None:
        self.client = client
        self.blocks = blocks  # futures of list[Part], one per range
        self.ranges = ranges  # the partitions of each block, consecutive

    def __len__(self) -> int:
        return sum(len(r) for r in self.ranges)

    def _by_block(self, msgs: Mapping[int, M]) -> dict[int, dict[int, M]]:
        """Per block holding some of ``msgs``' partitions: their messages, by index in it."""
        out: dict[int, dict[int, M]] = {}
        for b, r in enumerate(self.ranges):
            mine = {i - r.start: m for i, m in msgs.items() if i in r}
            if mine:
                out[b] = mine
        return out

    def _in_key_order(
        self, msgs: Mapping[int, M], by_block: dict[int, dict[int, M]], got: list[list[R]]
    ) -> list[R]:
        by_key = {
            self.ranges[b].start + j: r
            for (b, mine), results in zip(by_block.items(), got, strict=True)
            for j, r in zip(mine, results, strict=True)
        }
        return [by_key[i] for i in msgs]

    def map(self, fn: Callable[[Part, M], R], msgs: Mapping[int, M]) -> list[R]:
        c, by_block = self.client, self._by_block(msgs)
        futs = [
            c.submit(block_map, fn, self.blocks[b], mine, pure=False)
            for b, mine in by_block.items()
        ]
        return self._in_key_order(msgs, by_block, c.gather(futs))

    def update(self, fn: Callable[[Part, M], tuple[Part, R]], msgs: Mapping[int, M]) -> list[R]:
        c, by_block = self.client, self._by_block(msgs)
        both = {
            b: c.submit(block_update, fn, self.blocks[b], mine, pure=False)
            for b, mine in by_block.items()
        }
        for b, f in both.items():
            self.blocks[b] = c.submit(operator.getitem, f, 0, pure=False)
        got = [c.submit(operator.getitem, f, 1, pure=False) for f in both.values()]
        return self._in_key_order(msgs, by_block, c.gather(got))


# A block's task: the in-memory Partitions over its partitions (by index in the block).


def block_map(fn: Callable[[Part, M], R], block: list[Part], mine: dict[int, M]) -> list[R]:
    return LocalPartitions(block).map(fn, mine)


def block_update(
    fn: Callable[[Part, M], tuple[Part, R]], block: list[Part], mine: dict[int, M]
) -> tuple[list[Part], list[R]]:
    local = LocalPartitions(block)  # a copy of the list: the block's future stays as it was
    out = local.update(fn, mine)
    return local.parts, out


def block_ranges(n_parts: int, blocks: int) -> list[range]:
    """``n_parts`` partitions in ``blocks`` consecutive runs of sizes differing by at most 1."""
    k = max(1, min(blocks, n_parts))
    cuts = [n_parts * b // k for b in range(k + 1)]
    return [range(cuts[b], cuts[b + 1]) for b in range(k)]


@dataclass(frozen=True)
class Source:
    """What a task needs to read its partition (scattered once)."""

    ds: Dataset
    scan: Scan
    lac_seed: int


@dataclass(frozen=True)
class Snapshot:
    """One partition's users (ids in file order) and their snapshot positions (global index)."""

    user_ids: np.ndarray
    pos: np.ndarray


def snapshot_part(src: Source, i: int) -> Snapshot:
    tr = part_trajectories(src.ds, src.scan, i, src.lac_seed)
    # SNAPSHOT_S after the dataset's first sample, on this partition's clock.
    return Snapshot(tr.user_ids, snapshot_positions(tr, SNAPSHOT_S + src.scan.t0_s - tr.t0_s))


@dataclass(frozen=True)
class StageDeployment:
    """What the stage needs of a deployment: RTT per (position, DC) and the strict bound."""

    use_case: str
    n_dcs: int
    user_dc: np.ndarray
    bound_ms: float


def build_part(inst: Instance, dep: StageDeployment, snap: Snapshot) -> Part:
    latency = dep.user_dc[snap.pos]
    ids = [str(u) for u in snap.user_ids.tolist()]
    return make_part(inst, ids, np.full(len(ids), dep.bound_ms), latency)


@dataclass(frozen=True)
class PairCounts:
    """Users per (position, DC) pair, aware and unaware, and the unaware loads."""

    aware: tuple[np.ndarray, np.ndarray]
    unaware: tuple[np.ndarray, np.ndarray]
    load_unaware: np.ndarray


def _pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k, c = np.unique(keys, return_counts=True)
    return k, c.astype(np.int64)


def pair_counts(dep: StageDeployment, snap: Snapshot, choice: np.ndarray) -> PairCounts:
    near = np.argmin(dep.user_dc[snap.pos], axis=1)
    pos = snap.pos.astype(np.int64)
    return PairCounts(
        _pairs(pos * dep.n_dcs + choice),
        _pairs(pos * dep.n_dcs + near),
        np.bincount(near, minlength=dep.n_dcs).astype(np.int64),
    )


@dataclass(frozen=True)
class ScaledRun(Solve):
    """One deployment's partitioned solve: the figures of CongestionRun over every user."""

    load_aware: np.ndarray
    load_unaware: np.ndarray
    congestion_aware: np.ndarray  # f_d per DC at its aware load
    congestion_unaware: np.ndarray
    stats: dict[str, float | int | None]
    notes: dict[str, float | int]

    def summary(self) -> dict[str, float | int | None]:
        return self.stats


def _rtt(dep: StageDeployment, keys: np.ndarray, cong: np.ndarray) -> np.ndarray:
    """l_ud + f_d of each (position, DC) pair key."""
    pos, dc = keys // dep.n_dcs, keys % dep.n_dcs
    out: np.ndarray = dep.user_dc[pos, dc] + cong[dc]
    return out


def write_users(
    snap: Snapshot,
    deps: list[StageDeployment],
    runs: list[ScaledRun],
    choices: list[np.ndarray],
    path: Path,
) -> int:
    """This partition's rows of the per-user table (results/congestion_users.parquet's
    columns), every deployment in order, written by the task itself."""
    users = np.arange(len(snap.pos))
    per = []
    for dep, r, ch in zip(deps, runs, choices, strict=True):
        lat = dep.user_dc[snap.pos]
        near = np.argmin(lat, axis=1)
        per.append(
            CongestionRun(
                **r.solve_fields(),
                dc_aware=ch,
                dc_unaware=near.astype(np.int64),
                latency_aware_ms=lat[users, ch],
                congestion_aware_ms=r.congestion_aware[ch],
                rtt_unaware_ms=lat[users, near] + r.congestion_unaware[near],
                load_aware=r.load_aware,
                load_unaware=r.load_unaware,
            )
        )
    users_table(snap, per).to_parquet(path, index=False)
    return len(users)


def snapshot_block(src: Source, r: range) -> list[Snapshot]:
    return [snapshot_part(src, i) for i in r]


def build_block(inst: Instance, dep: StageDeployment, snaps: list[Snapshot]) -> list[Part]:
    return [build_part(inst, dep, s) for s in snaps]


def block_choices(block: list[Part]) -> list[np.ndarray]:
    return [part_choice(p, None) for p in block]


def block_pair_counts(
    dep: StageDeployment, snaps: list[Snapshot], choices: list[np.ndarray]
) -> list[PairCounts]:
    return [pair_counts(dep, s, c) for s, c in zip(snaps, choices, strict=True)]


def write_block(
    snaps: list[Snapshot],
    deps: list[StageDeployment],
    runs: list[ScaledRun],
    choices: list[list[np.ndarray]],  # per deployment, per partition of the block
    folder: Path,
    r: range,
) -> int:
    return sum(
        write_users(s, deps, runs, [c[j] for c in choices], folder / f"part-{i:05d}.parquet")
        for j, (i, s) in enumerate(zip(r, snaps, strict=True))
    )


def stage_tasks(n_parts: int, n_deps: int) -> int:
    """About how many partition tasks the stage runs (the progress bar's length): the
    dual's evaluations vary, about 150-250 per deployment."""
    return n_parts * (2 + n_deps * (200 + 4 * ROUNDS + 8))


def run_congestion_scaled(
    client: Any,
    sh: Shared,
    dcs: pd.DataFrame,
    results: Path,
    advance: Callable[[], None] = lambda: None,
    *,
    blocks: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Sec. V-C on a partitioned dataset: writes ``results``/congestion_dcs.parquet,
    ``results``/congestion_users/part-NNNNN.parquet and ``results``/congestion_solver.json
    (per deployment: improvement rounds taken, dual evaluations, tasks); returns summary.json's
    "congestion" entry (the keys of the single-file run's). ``blocks``: tasks per call
    (:class:`DaskPartitions`), by default the cluster's threads; the numbers do not
    depend on it."""
    from distributed import wait

    def did(k: int) -> None:
        for _ in range(k):
            advance()

    src = client.scatter(Source(sh.ds, sh.scan, sh.lac_seed), broadcast=True, hash=False)
    n_parts = len(sh.ds.files)
    if blocks is not None and blocks < 1:
        raise ValueError(f"blocks must be at least 1, got {blocks}")
    threads = sum(client.nthreads().values()) if blocks is None else blocks
    ranges = block_ranges(n_parts, threads)
    snaps = [client.submit(snapshot_block, src, r, pure=False) for r in ranges]
    wait(snaps)  # type: ignore[no-untyped-call]
    did(n_parts)
    f = latency_function()
    n_users = sh.scan.users
    deps = [
        StageDeployment(d.use_case, d.n_dcs, d.net.user_dc, float(d.bounds["strict"]))
        for d in sh.deployments
    ]
    runs: list[ScaledRun] = []
    choices: list[list[Any]] = []  # per deployment, a future per block
    for dep in deps:
        start = time.perf_counter()
        capacity = max(2.0 * n_users / dep.n_dcs, 1.0)
        inst = Instance(
            dc_names=tuple(f"dc{j}" for j in range(dep.n_dcs)),
            capacity=np.full(dep.n_dcs, capacity),
            existing=np.zeros(dep.n_dcs),
            functions=(f,) * dep.n_dcs,
            n_users=n_users,
        )
        inst_f, dep_f = client.scatter([inst, dep], broadcast=True, hash=False)
        built = [client.submit(build_block, inst_f, dep_f, s, pure=False) for s in snaps]
        parts = DaskPartitions(client, built, ranges)  # replaces built's items as it updates
        del built
        res = solve_partitioned(inst, parts, advance=did)
        chosen = [client.submit(block_choices, b, pure=False) for b in parts.blocks]
        counted = [
            client.submit(block_pair_counts, dep_f, s, c, pure=False)
            for s, c in zip(snaps, chosen, strict=True)
        ]
        counts: list[PairCounts] = [c for per in client.gather(counted) for c in per]
        del parts  # the partitions' rows: only the chosen DCs stay on the workers
        did(2 * n_parts)
        load_unaware = np.sum([c.load_unaware for c in counts], axis=0).astype(np.int64)
        cong_near = f(load_unaware / capacity)  # holds 700 ms beyond full load, as run_deployment
        aware = merge_counts([c.aware for c in counts])
        unaware = merge_counts([c.unaware for c in counts])
        rtt_aware = _rtt(dep, aware[0], res.congestion_ms)
        rtt_unaware = _rtt(dep, unaware[0], cong_near)
        seconds = time.perf_counter() - start
        run = ScaledRun(
            use_case=dep.use_case,
            n_dcs=dep.n_dcs,
            capacity=capacity,
            bound_ms=dep.bound_ms,
            objective=res.objective,
            lower_bound=res.lower_bound,
            gap=res.gap,
            seconds=seconds,
            load_aware=res.load,
            load_unaware=load_unaware,
            congestion_aware=res.congestion_ms,
            congestion_unaware=cong_near,
            stats={},
            notes=res.notes,
        )
        stats = summary_of(
            run,
            users=n_users,
            median_rtt_ms=median_of_counts([rtt_aware], [aware[1]]),
            unaware_median_rtt_ms=median_of_counts([rtt_unaware], [unaware[1]]),
            share_over_75ms=float(aware[1][rtt_aware > RTT_THRESHOLD_MS].sum() / n_users),
        )
        runs.append(replace(run, stats=stats))
        choices.append(chosen)
    folder = results / USERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    written = [
        client.submit(
            write_block, snaps[b], deps, runs, [c[b] for c in choices], folder, r, pure=False
        )
        for b, r in enumerate(ranges)
    ]
    client.gather(written)
    did(n_parts)
    dcs_table(runs, dcs).to_parquet(results / "congestion_dcs.parquet")
    out: dict[str, dict[str, Any]] = {}
    solver: dict[str, dict[str, dict[str, float | int]]] = {}
    for r in runs:
        out.setdefault(r.use_case, {})[str(r.n_dcs)] = r.summary()
        solver.setdefault(r.use_case, {})[str(r.n_dcs)] = r.notes
    # what the solve spent of its budgets (rounds, dual evaluations): the stage's time
    # and gap per deployment follow them
    (results / SOLVER_FILE).write_text(json.dumps(solver, indent=1) + "\n")
    return out
