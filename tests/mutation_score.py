"""Score of the last `mutmut run` per module, and its survivors (run by `make mutation`).

Killed = a test failed or the mutant timed out; "no tests" counts as survived (no fast
test calls the function). The score is a figure to read, not a gate; the exit status is
non-zero only when mutmut left mutants unchecked (an unfinished run has no score)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {"killed", "timeout"}


def main() -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run(
        [str(mutmut), "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    per: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: list[str] = []
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name:
            continue
        module = name.split(".x")[0].rsplit(".x_", 1)[0]
        per[module][status] += 1
        if status not in KILLED and status != "skipped":
            survivors.append(f"{name}: {status}")
    total: Counter[str] = Counter()
    print(f"{'module':40} {'mutants':>8} {'killed':>8} {'score':>7}")
    for module in sorted(per):
        c = per[module]
        n, k = sum(c.values()) - c["skipped"], sum(c[s] for s in KILLED)
        total.update(c)
        print(f"{module:40} {n:8d} {k:8d} {100 * k / max(n, 1):6.1f}%")
    n, k = sum(total.values()) - total["skipped"], sum(total[s] for s in KILLED)
    print(f"{'total':40} {n:8d} {k:8d} {100 * k / max(n, 1):6.1f}%")
    print(f"\n{len(survivors)} survivors (`mutmut show NAME` prints the diff):")
    for s in survivors:
        print("  " + s)
    if total["not checked"]:
        # An unfinished run (e.g. its stats pass failed) is no score: say so, fail.
        print(
            f"\nmutmut did not finish: {total['not checked']} mutants not checked", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
