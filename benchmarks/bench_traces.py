"""Time the data side of the simulator: LAC build, 36,450-user traces, load, stats.

Prints wall-clock seconds and the peak resident memory; the targets (traces
for 36,450 users in well under 20 s) are checked by eye, not asserted.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from pacao.sim import geography
from pacao.sim.geography import build_lacs, dc_sites
from pacao.sim.mobility import generate_traces
from pacao.sim.traces import load_traces, trace_stats

USERS = 36450


def _timed(label: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    print(f"{label:<40} {time.perf_counter() - t0:7.2f} s")
    return out


def main() -> None:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else USERS
    lacs = _timed("build_lacs (first call, no cache)", build_lacs, 0)
    geography._build.cache_clear()
    _timed("build_lacs (again, no cache)", build_lacs, 0)
    _timed(
        "dc_sites france_isp 64 + europe_ott 64",
        lambda: [dc_sites(u, 64, lacs) for u in ("france_isp", "europe_ott")],
    )
    traces = _timed(f"generate_traces ({users} users)", generate_traces, lacs, users, 0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traces.parquet"
        _timed("write parquet", traces[["user_id", "t", "lat", "lon"]].to_parquet, path)
        loaded = _timed("load_traces (parquet, lat/lon)", load_traces, path, lacs)
    stats = _timed("trace_stats", trace_stats, loaded)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'peak resident memory':<40} {peak:7.0f} MiB")
    print(f"{'LACs':<40} {len(lacs):7d}")
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
