"""Congestion-aware assignment: solve time and gap to the proven bound vs users x DCs.

Instances: pacao.optimize.assign.instances.random_instance (users clustered in
cities over a 1,400 km square, RTT = 40 ms + 3 x km / 100 so 40-100 ms, strict
bound LT = 1st decile of all user-DC RTTs, C_d = 2|U|/|D|, congestion latency
breakpoints (load fraction, ms) = (0,0) (0.5,5) (0.75,50) (0.9,200) (1,700)).

The gap of every solver is measured against the best proven lower bound of the
row (the lagrange bound, or HiGHS's when higher). The HiGHS MILP runs only
where its model is small enough (1,000 users), with --milp-time-limit (600 s
by default: the "finishes in 10 minutes" rule); batched runs with a total time
limit and each batch gets an even share of it.

Then the capacity scan: the same 1,000-user instance with every C_d set to
2|U|/|D|, 1e7, 1e12, 1e300 and +inf, each solved by `python -m pacao assign`
(default solver) in a child process limited to 1 GiB of address space
(RLIMIT_AS, as `prlimit --as`): seconds, peak RSS and objective. Memory and
time must not grow with the capacity.

    python benchmarks/bench_assign.py [--quick] [--milp-time-limit S] [--batch-size N]
                                      [--only-capacity-scan]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from pacao.optimize.assign import AssignProblem, solve_assign
from pacao.optimize.assign.instances import PAPER_BREAKPOINTS, random_instance

#: The address-space limit of the capacity scan's solver process.
AS_LIMIT = 1 << 30


def _as_document(p: AssignProblem, capacity: float) -> dict[str, object]:
    return {
        "latency_function": {"breakpoints": [list(b) for b in PAPER_BREAKPOINTS]},
        "dcs": [{"name": n, "capacity": capacity} for n in p.dc_names],
        "users": [
            {
                "id": uid,
                "bound_ms": float(p.bound[u]),
                "latency_ms": {n: float(p.latency[u, d]) for d, n in enumerate(p.dc_names)},
            }
            for u, uid in enumerate(p.user_ids)
        ],
    }


def capacity_scan(n_users: int = 1000, n_dcs: int = 16) -> None:
    """`pacao assign` under a 1 GiB RLIMIT_AS while the capacities grow to +inf."""
    p = random_instance(n_users, n_dcs, seed=7)
    print(f"\ncapacity scan: {n_users} users, {n_dcs} DCs, lagrange, RLIMIT_AS 1 GiB")
    head = f"{'capacity':>10} {'process s':>9} {'solve s':>8} {'peak RSS MB':>12}"
    print(f"{head} {'objective':>12}  exit")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

    for cap in (2.0 * n_users / n_dcs, 1e7, 1e12, 1e300, math.inf):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(_as_document(p, cap), f)
        t = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            child = subprocess.Popen(
                [sys.executable, "-m", "pacao", "assign", f.name],
                stdout=out,
                stderr=err,
                text=True,
                preexec_fn=limit,
            )
            _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
            child.returncode = os.waitstatus_to_exitcode(status)
            sec = time.perf_counter() - t
            out.seek(0)
            err.seek(0)
            proc = subprocess.CompletedProcess(child.args, child.returncode, out.read(), err.read())
        os.unlink(f.name)
        rss = f"{usage.ru_maxrss / 1024:12.0f}"
        res = json.loads(proc.stdout) if proc.returncode == 0 else {}
        obj, solve_s = res.get("objective", math.nan), res.get("seconds", math.nan)
        note = "" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1][:60]
        print(
            f"{cap:>10g} {sec:9.2f} {solve_s:8.2f} {rss} {obj:12.2f}  {proc.returncode} {note}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1k and 5k users only, short limits")
    ap.add_argument("--milp-time-limit", type=float, default=600.0)
    ap.add_argument("--batched-time-limit", type=float, default=600.0)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--solvers", default="lagrange,batched,milp")
    ap.add_argument("--only-capacity-scan", action="store_true")
    args = ap.parse_args()
    if args.only_capacity_scan:
        capacity_scan()
        return
    users = [1000, 5000] if args.quick else [1000, 5000, 36450]
    milp_limit = min(args.milp_time_limit, 30.0) if args.quick else args.milp_time_limit
    batched_limit = min(args.batched_time_limit, 60.0) if args.quick else args.batched_time_limit
    solvers = args.solvers.split(",")
    print(f"breakpoints (load, ms): {PAPER_BREAKPOINTS}; cpus: {os.cpu_count()}")
    print(
        f"milp time limit {milp_limit:g} s (1,000 users only); batched: batch size "
        f"{args.batch_size}, total limit {batched_limit:g} s"
    )
    header = f"{'users':>6} {'DCs':>4} {'solver':>9} {'seconds':>8} {'objective':>12} "
    header += f"{'bound':>12} {'gap %':>7}  note"
    print(header)
    for n_users in users:
        for n_dcs in (4, 64):
            p = random_instance(n_users, n_dcs, seed=n_users + n_dcs)
            rows = []
            for solver in solvers:
                if solver == "milp" and n_users > 1000:
                    continue
                limit = {"milp": milp_limit, "batched": batched_limit}.get(solver, 60.0)
                t = time.perf_counter()
                res = solve_assign(p, solver, batch_size=args.batch_size, time_limit=limit)
                rows.append((solver, time.perf_counter() - t, res))
            bound = max(r.lower_bound for _, _, r in rows if r.lower_bound is not None)
            for solver, sec, res in rows:
                gap = 100 * (res.objective - bound) / res.objective
                note = ""
                if solver == "milp":
                    note = str(res.notes.get("highs_status", ""))
                own = "-" if res.lower_bound is None else f"{res.lower_bound:12.2f}"
                print(
                    f"{n_users:>6} {n_dcs:>4} {solver:>9} {sec:8.2f} {res.objective:12.2f} "
                    f"{own:>12} {gap:7.3f}  {note}",
                    flush=True,
                )
    capacity_scan()


if __name__ == "__main__":
    main()
