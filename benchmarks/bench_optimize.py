"""Decisions per second of the single-user problem (1)-(3).

100,000 random users x 64 candidates x 3 criteria: the vectorised enumeration
(pacao.optimize.choose, the kernel the simulator and controller call) against
the HiGHS MILP on a sample of users. Target: >= 1,000,000 decisions/s for the
enumeration on a 2-core machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pacao.optimize import Candidate, Criterion, Mode, Problem, solve
from pacao.optimize.bulk import choose_parallel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--highs-sample", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    n, c, k = args.users, args.candidates, 3
    bounds = np.array([60.0, 10.0, 2.0])
    weights = np.array([0.5, 0.3, 0.2])
    metrics = rng.uniform(0, 3, size=(n, c, k)) * bounds
    usable = rng.random((n, c)) > 0.05
    usable[:, 0] = True

    # Ratios m/M are part of the measured work (computed chunk by chunk).
    def once(parallel: bool) -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        workers = 2 if parallel else 1
        idx = choose_parallel(metrics, weights, usable, bounds=bounds, workers=workers)[0]
        return time.perf_counter() - t0, idx

    rates: dict[str, float] = {}
    for mode in (False, True):
        times = []
        for _ in range(args.repeat):
            dt, _ = once(mode)
            times.append(dt)
        best = min(times)
        label = "enumeration, 2 threads" if mode else "enumeration, 1 thread "
        print(f"{label}: {n / best:>12,.0f} decisions/s  (best of {args.repeat}: {best:.3f} s)")
        rates[label.strip()] = n / best

    m = args.highs_sample
    crit = [Criterion("rtt", 0.5, 60), Criterion("jitter", 0.3, 10), Criterion("loss", 0.2, 2)]
    problems = [
        Problem(
            Mode.RLOC,
            crit,
            [
                Candidate(
                    f"d{j:02d}",
                    {"rtt": metrics[u, j, 0], "jitter": metrics[u, j, 1], "loss": metrics[u, j, 2]},
                    available=bool(usable[u, j]),
                )
                for j in range(c)
            ],
        )
        for u in range(m)
    ]
    # HiGHS proves the optimum (the full ranking would need one MILP per rank).
    from pacao.optimize.highs import optimum_only

    t0 = time.perf_counter()
    chosen = [optimum_only(p) for p in problems]
    dt = time.perf_counter() - t0
    highs_rate = m / dt
    agree = sum(
        abs(solve(p).objective - opt) <= 1e-9 for p, opt in zip(problems, chosen, strict=True)
    )
    print(f"HiGHS MILP (optimum only)  : {highs_rate:>12,.0f} decisions/s  ({m} users, {dt:.2f} s)")
    print(f"same optimum on the sample : {agree}/{m}")
    best_label = max(rates, key=lambda k: rates[k])
    enum_rate = rates[best_label]
    print(f"ratio enumeration / HiGHS  : {enum_rate / highs_rate:,.0f}x  (best: {best_label})")
    target = 1_000_000
    verdict = "met" if enum_rate >= target else "NOT met"
    print(f"target >= {target:,} decisions/s: {verdict} ({enum_rate:,.0f}/s, {best_label})")


if __name__ == "__main__":
    main()
