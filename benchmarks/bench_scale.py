"""The partitioned simulation at operator scale: users -> dataset -> exact sweep on Dask.

For each user count: generate the user-partitioned Parquet dataset (Dask tasks), scan
it, build the deployments' tables and run the (S', S'') grid as (partition x grid
point) tasks with the exact two-pass reduction, on a LocalCluster of this machine.
Prints the wall time of every step, the number of tasks, and the peak resident memory
of each worker process (ru_maxrss, read on the workers) and of the client. Nothing is
asserted.

    python benchmarks/bench_scale.py [--users 36450 364500 1000000] [--quick]
        [--workers 2] [--memory-limit 6GB] [--partition-users 10000] [--dcs 1 2 4 ...]
        [--congestion] [--no-sweep] [--blocks N]

--congestion runs the congestion-aware stage (pacao.sim.congestion_scale) after the
sweep and prints its wall time, tasks, per-deployment objective/bound/gap and the
workers' peak memory; --no-sweep skips the sweep (to time the stage alone); --blocks
sets the stage's tasks per call (the number of partitions: one task per partition).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import resource
import tempfile
import threading
import time
from pathlib import Path

import dask
import pandas as pd
from distributed import Client, LocalCluster

from pacao.reproduce.pipeline import DC_COUNTS, FULL_GRID, QUICK_GRID
from pacao.sim.congestion_scale import SOLVER_FILE, run_congestion_scaled
from pacao.sim.scale import (
    Shared,
    build_shared,
    generate_dataset,
    open_dataset,
    run_scaled,
    sweep_tasks,
    synthetic_dcs,
    worker_peak_mb,
)
from pacao.sim.sweep import grid, worker_environ


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def one(args: argparse.Namespace, users: int, tmp: Path) -> None:
    environ = worker_environ()  # without Dask's malloc settings (pacao.sim.sweep)
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=args.memory_limit,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"--- {users:,} users, {args.workers} workers, memory limit {args.memory_limit} "
              f"each, {load()}")  # fmt: skip
        t = time.perf_counter()
        if args.dataset is not None:  # one generated before (same seed), e.g. by a stopped run
            ds = open_dataset(args.dataset)
            if ds.meta["users"] != users:
                raise SystemExit(f"--dataset {args.dataset} holds {ds.meta['users']:,} users")
            what = "opened"
        else:
            ds = generate_dataset(
                client, tmp / f"u{users}", users, args.seed, partition_users=args.partition_users
            )
            what = "generated"
        print(f"dataset {what}: {len(ds.files)} partitions, {ds.meta['samples']:,} samples, "
              f"{time.perf_counter() - t:.1f} s")  # fmt: skip
        t = time.perf_counter()
        dcs = synthetic_dcs(args.seed, args.dcs)
        sh = build_shared(client, ds, dcs, seed=args.seed)
        print(f"scan + tables of {len(sh.deployments)} deployments: "
              f"{time.perf_counter() - t:.1f} s; scattered to every worker: "
              f"{len(pickle.dumps(sh)) / 1e6:,.0f} MB")  # fmt: skip
        values = QUICK_GRID if args.quick else FULL_GRID
        points = grid(values, values)
        done = [0]
        total, t_sweep = sweep_tasks(len(ds.files), points), time.perf_counter()

        def advance() -> None:  # a line per 5 % of the tasks: a long run's partial figures
            done[0] += 1
            if done[0] % max(1, total // 20) == 0:
                mb = max(worker_peak_mb(client).values())
                own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"  {done[0]:,} of {total:,} sweep tasks, "
                      f"{time.perf_counter() - t_sweep:.0f} s; peak MB so far: worker "
                      f"{mb:,.0f}, client {own:,.0f}; {load()}", flush=True)  # fmt: skip

        if not args.no_sweep:
            t, wcpu0 = time.perf_counter(), worker_cpu_s(client)
            stats: dict[str, int] = {}
            spill = tmp / f"u{users}-spill"
            with SpillSize(spill) as size:
                rows = run_scaled(
                    client, sh, points, advance, window=args.workers, spill=spill, stats=stats
                )
            took = time.perf_counter() - t
            cpu = sum(c - wcpu0.get(w, 0.0) for w, c in worker_cpu_s(client).items())
            peaks = worker_peak_mb(client)
            kind = "quick" if args.quick else "full"
            print(f"sweep ({kind} grid, {len(points)} points): {len(rows)} configurations, "
                  f"{done[0]} tasks, {took:.1f} s; {load()}")  # fmt: skip
            print(f"pass 2: {stats['pass2_simulated']} of {stats['pass2_jobs']} (partition, "
                  f"point) jobs simulated again; spill <= {size.peak / 1e6:,.0f} MB")  # fmt: skip
            print(f"workers' CPU time in the sweep: {cpu:,.0f} s, "
                  f"{cpu / (len(ds.files) * len(points)):.2f} s per partition-point")  # fmt: skip
            for w, mb in sorted(peaks.items()):
                print(f"peak memory of worker {w}: {mb:,.0f} MB")
            client_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"peak memory of the client (this process, so far): {client_mb:,.0f} MB")
        if args.congestion:
            congestion(client, sh, tmp / f"u{users}-results", dcs, args.blocks)


class SpillSize:
    """The largest size of the spill folder, sampled every 2 s in a thread."""

    def __init__(self, root: Path) -> None:
        self.root, self.peak, self._stop = root, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(2.0):
            if self.root.is_dir():
                total = 0
                for p in self.root.iterdir():
                    with contextlib.suppress(FileNotFoundError):
                        total += p.stat().st_size
                self.peak = max(self.peak, total)

    def __enter__(self) -> SpillSize:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def worker_cpu_s(client: Client) -> dict[str, float]:
    """CPU seconds (user + system) of every worker process so far."""

    def cpu() -> float:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    out: dict[str, float] = client.run(cpu)
    return out


def congestion(
    client: Client, sh: Shared, results: Path, dcs: pd.DataFrame, blocks: int | None
) -> None:
    """The congestion-aware stage (Sec. V-C) of a partitioned run, after the sweep."""
    done = [0]

    def advance() -> None:
        done[0] += 1

    results.mkdir(parents=True, exist_ok=True)
    print(f"congestion-aware stage: start, blocks {blocks or '= worker threads'}, {load()}")
    cpu0, wcpu0 = time.process_time(), worker_cpu_s(client)
    t = time.perf_counter()
    summary = run_congestion_scaled(client, sh, dcs, results, advance, blocks=blocks)
    took = time.perf_counter() - t
    cpu = time.process_time() - cpu0
    wcpu = {w: c - wcpu0.get(w, 0.0) for w, c in worker_cpu_s(client).items()}
    peaks = worker_peak_mb(client)
    print(f"congestion-aware stage: {len(sh.deployments)} deployments, {done[0]} partition "
          f"tasks, {took:.1f} s wall; CPU: client and scheduler {cpu:.1f} s, workers "
          f"{', '.join(f'{c:.1f}' for c in wcpu.values())} s; {load()}")  # fmt: skip
    solver = json.loads((results / SOLVER_FILE).read_text())
    for uc, per in summary.items():
        for n, s in per.items():
            v = solver[uc][n]
            print(f"  {uc} {n:>2} DCs: objective {s['objective']:.2f}, bound "
                  f"{s['lower_bound']:.2f}, gap {100 * s['gap']:.3f} %, {s['seconds']:.1f} s, "
                  f"median RTT {s['median_rtt_ms']:.2f} ms; improvement rounds "
                  f"{v['improvement_rounds']}, dual evaluations {v['dual_evaluations']}, "
                  f"partition steps {v['tasks']}")  # fmt: skip
    for w, mb in sorted(peaks.items()):
        print(f"peak memory of worker {w} (so far, the whole run): {mb:,.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, nargs="+", default=[36450, 364500, 1_000_000])
    ap.add_argument("--quick", action="store_true", help="3 x 3 grid instead of 9 x 9")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="6GB")
    ap.add_argument("--partition-users", type=int, default=10_000)
    ap.add_argument("--dcs", type=int, nargs="+", default=list(DC_COUNTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", type=Path, help="an existing dataset folder (one --users)")
    ap.add_argument(
        "--congestion", action="store_true", help="then the congestion-aware stage (Sec. V-C)"
    )
    ap.add_argument("--no-sweep", action="store_true", help="skip the (S', S'') sweep")
    ap.add_argument(
        "--blocks",
        type=int,
        help="the congestion stage's tasks per call (default: the worker threads; "
        "the partitions' count = one task per partition)",
    )
    args = ap.parse_args()
    if args.blocks is not None and args.blocks < 1:
        ap.error(f"--blocks must be at least 1, got {args.blocks}")
    with tempfile.TemporaryDirectory() as tmp:
        for users in args.users:
            one(args, users, Path(tmp))


if __name__ == "__main__":
    main()
