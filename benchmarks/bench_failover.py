"""Failover time of controller replicas on a real PostgreSQL (printed, never asserted).

Three `pacao controller run` replicas (ha.enabled, memory drivers sharing a world
file) on a PostgreSQL cluster started here (tests/controller_pg.py). Each round puts
a migration plan under way, then hurts the leader:

* ``kill -9``: the lease must expire (lease_s after the last renewal) before a
  follower takes it;
* ``SIGTERM``: a clean stop releases the lease, the next attempt takes it.

Per round it prints the seconds from the signal to the new leader's lease
(``since``, database clock; same host, so the same clock as the signal's
``time.time()``) and to the resumption of the plan by the new leader (its
``resumed after a restart`` transition), then restarts the replica it stopped.

    python benchmarks/bench_failover.py [--lease-s 5] [--renew-s S] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))

import yaml  # noqa: E402

from controller_pg import postgres_cluster  # noqa: E402
from ha_support import Group, config_doc, finished, migration_plan, started  # noqa: E402
from pacao.controller.storage import Store  # noqa: E402


def resumed_at(store: Store, pid: str, since: float) -> float | None:
    """When a new leader resumed the plan (its transition's time), if it did."""
    for t in store.transitions(pid):
        if t["note"] == "resumed after a restart" and t["ts"] >= since:
            return float(t["ts"])
    return None


def one_round(g: Group, store: Store, sig: signal.Signals, n: int) -> tuple[str, int, float, float]:
    """Put a migration under way, signal the leader, time the take-over, restart it."""
    src, dst = ("dc1", "dc2") if n % 2 else ("dc2", "dc1")
    job = f"bench-{n}"
    pid = migration_plan(store, src, dst, job)
    g.wait("the migration to start", lambda: started(g, job))
    old, lease = g.leader()  # the leader running it now
    t0 = time.time()
    os.kill(old.proc.pid, sig)
    old.proc.wait(timeout=120)
    g.replicas.remove(old)  # its exit is expected (SIGTERM: code 0)
    _, new = g.leader(not_pid=old.proc.pid)
    resumed = g.wait("the resumption", lambda: resumed_at(store, pid, t0))
    plan = g.wait("the plan to end", lambda: finished(g, pid))
    assert plan["state"] == "succeeded", plan
    took = float(new["since"]) - t0
    print(
        f"{sig.name:8s} round {n}: new leader after {took:6.2f} s, plan resumed after "
        f"{resumed - t0:6.2f} s (epoch {lease['epoch']} -> {new['epoch']})",
        flush=True,
    )
    g.wait("the restarted replica's API", g.start().health)
    return sig.name, n, took, resumed - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lease-s", type=float, default=5.0)
    ap.add_argument("--renew-s", type=float, default=None, help="default lease_s / 4")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per signal")
    a = ap.parse_args()
    renew = a.renew_s if a.renew_s is not None else a.lease_s / 4
    tmp = Path(tempfile.mkdtemp(prefix="pacao-failover-"))
    rows: list[tuple[str, int, float, float]] = []
    with postgres_cluster() as cluster:
        world, cfg = tmp / "world.json", tmp / "controller.yaml"
        doc = config_doc(cluster.url, world, lease_s=a.lease_s, seconds_per_gib=4.0)
        doc["ha"]["renew_s"] = renew
        cfg.write_text(yaml.safe_dump(doc))
        store = Store(cluster.url)
        g = Group(cluster, store, world, cfg, tmp)
        try:
            for _ in range(3):
                g.start()
            for r in g.replicas:
                g.wait("every replica's API", r.health)
            n = 0
            for sig in (signal.SIGKILL, signal.SIGTERM):
                for _ in range(a.rounds):
                    n += 1
                    rows.append(one_round(g, store, sig, n))
        finally:
            for r in g.replicas:
                if r.proc.poll() is None:
                    os.kill(r.proc.pid, signal.SIGTERM)
            for r in g.replicas:
                r.proc.wait(timeout=60)
            store.close()
    print(f"\nlease_s {a.lease_s:g}, renew_s {renew:g}, 3 replicas, PostgreSQL on loopback")
    print("signal   | rounds | new leader after (s) median [min, max] | plan resumed after (s)")
    for name in ("SIGKILL", "SIGTERM"):
        took = [r[2] for r in rows if r[0] == name]
        res = [r[3] for r in rows if r[0] == name]
        if took:
            print(
                f"{name:8s} | {len(took):6d} | {statistics.median(took):6.2f} "
                f"[{min(took):.2f}, {max(took):.2f}] | {statistics.median(res):6.2f} "
                f"[{min(res):.2f}, {max(res):.2f}]"
            )


if __name__ == "__main__":
    main()
