"""Simulator speed: one configuration over 36,450 users, one sweep task, the full grid.

Prints wall times and peak memory (ru_maxrss). Target: one
configuration in under 2 s; the full run of `pacao reproduce` in under 15 min.
By default the full grid is estimated from two timed grid points (one Dask task
each); --full runs it in this process, --dask on a LocalCluster.
--end-to-end times `pacao reproduce --quick --no-testbed` and the full
`pacao reproduce --no-testbed` (targets: 5 and 15 min) and prints both with the
load average before and after each (the machine is shared: say the load).

    python benchmarks/bench_sim.py [--users 36450] [--full | --dask | --end-to-end]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pacao.reproduce.pipeline import (
    FULL_GRID,
    HEADLINE_DCS,
    Options,
    _deployments,
    synthetic_inputs,
)
from pacao.sim.engine import legacy, prepare, schedule, simulate
from pacao.sim.policy import UNKNOWN, Policy, Timing
from pacao.sim.sweep import SweepData, dask_client, grid, run_point, run_sweep


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def end_to_end() -> None:
    """Wall time of the quick and the full `pacao reproduce --no-testbed`, one after the other."""
    for label, extra, target in (("--quick", ["--quick"], 300), ("full", [], 900)):
        with tempfile.TemporaryDirectory() as tmp:
            before = load()
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "pacao.cli", "reproduce", "--no-testbed",
                 "--out", str(Path(tmp) / "run"), *extra],
                check=True, capture_output=True,
            )  # fmt: skip
            took = time.perf_counter() - t
            print(
                f"pacao reproduce {label} --no-testbed: {took:.0f} s (target {target} s); "
                f"{before} before, {load()} after"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=36450)
    ap.add_argument("--full", action="store_true", help="run the whole 9 x 9 grid")
    ap.add_argument("--dask", action="store_true", help="run the grid on a LocalCluster")
    ap.add_argument(
        "--end-to-end", action="store_true", help="time pacao reproduce, quick and full"
    )
    args = ap.parse_args()
    if args.end_to_end:
        end_to_end()
        return

    t = time.perf_counter()
    inputs = synthetic_inputs(args.users, 0)
    took = time.perf_counter() - t
    print(f"traces: {args.users} users, {len(inputs.traces):,} samples, {took:.1f} s")
    t = time.perf_counter()
    tr = prepare(inputs.traces)
    deps = _deployments(tr, inputs.dcs, Options(out=Path(".")))
    took = time.perf_counter() - t
    print(f"RTT tables, bounds, decisions for {len(deps)} deployments: {took:.1f} s")

    dep = next(
        d for d in deps if d.use_case == "france_isp" and d.n_dcs == HEADLINE_DCS["france_isp"]
    )
    dec = dep.decisions["strict"]
    for label, timing in [
        ("S'=10%, S''=10% of S'", Timing(0.1, 0.1)),
        ("S'=6 min, S''=36 s", Timing(360, 36, relative=False)),
    ]:
        t = time.perf_counter()
        sched = schedule(tr, timing)
        ts = time.perf_counter() - t
        for pol in (Policy.PACAO1, Policy.PACAO2):
            times = []
            for _ in range(3):
                t = time.perf_counter()
                out = simulate(tr, sched, dep.net, dec, pol, dep.start)
                out.quantiles([0.1, 0.5, 0.9])
                times.append(time.perf_counter() - t)
            print(
                f"one configuration, France/ISP 64 DCs strict, {label}, {pol.value}: "
                f"{min(times):.3f} s (first run {times[0]:.3f} s, filling the memo of "
                f"controller decisions; + schedule {ts:.3f} s, shared by all configurations "
                "of the point)"
            )
    asked = int((dec.memo1 != UNKNOWN).sum() + (dec.memo2 != UNKNOWN).sum())
    print(
        f"controller decisions asked for this deployment and bound: {asked:,} "
        f"of {2 * dec.memo1.size:,} states"
    )
    t = time.perf_counter()
    legacy(tr, dep.net, dep.start).quantiles([0.5])
    print(f"one configuration, legacy: {time.perf_counter() - t:.3f} s")

    points = grid(FULL_GRID, FULL_GRID)
    data = SweepData(tr, deps)
    if args.dask:
        t = time.perf_counter()
        with dask_client(None) as client:
            df = run_sweep(client, data, points)
        took = time.perf_counter() - t
        print(f"full grid on a LocalCluster: {len(df)} configurations in {took:.1f} s")
    elif args.full:
        t = time.perf_counter()
        n = sum(len(run_point(data, p)) for p in points)
        print(f"full grid in one process: {n} configurations in {time.perf_counter() - t:.1f} s")
    else:
        # A point with PACAO-1 (the first S'' of each S') and one without.
        per: list[float] = []
        for p in (points[0], points[1]):
            t = time.perf_counter()
            n = len(run_point(data, p))
            per.append(time.perf_counter() - t)
            print(f"grid point S'={p.s1:.0%}, S''={p.s2:.0%}: {n} configurations, {per[-1]:.1f} s")
        with_p1 = sum(p.with_pacao1 for p in points)
        est = with_p1 * per[0] + (len(points) - with_p1) * per[1]
        print(f"full grid estimate ({len(points)} points): {est:.0f} s on one core")
    print(f"peak memory (this process): {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
