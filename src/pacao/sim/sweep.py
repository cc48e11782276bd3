"""The parameter sweep of Sec. V-B (Figs. 14-15) as Dask tasks.

One task per (S', S'') grid point: it builds the controller schedule once (it
depends only on the traces and the timing) and runs PACAO-2 (and PACAO-1 on the
first S'' of each S') for every deployment and latency bound. The traces are
scattered to the workers once. A LocalCluster is started unless the caller
gives the address of a running scheduler, so a sweep outgrowing one machine
changes one flag.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from pacao.decision import Params
from pacao.errors import InputError
from pacao.sim.engine import Outcome, Start, Trajectories, legacy, schedule, simulate
from pacao.sim.legacy import legacy_start
from pacao.sim.network import BOUND_QUANTILES, Network, build_network, latency_bounds
from pacao.sim.policy import PAPER_PARAMS, Decisions, Policy, Timing, decision_tables

#: Seconds to wait for a remote Dask scheduler before giving up.
CONNECT_TIMEOUT_S = 5
#: Seconds for the whole probe of a remote scheduler: connection and handshake.
HANDSHAKE_TIMEOUT_S = 1 + CONNECT_TIMEOUT_S
#: Statistics kept for every configuration.
QUANTILES = (0.1, 0.5, 0.9)
#: TCP window x 8 bits / 1e6: throughput in Mbit/s = this / RTT in ms x 1000.
WINDOW_MBIT_MS = 163_840 * 8 / 1e6 * 1000


@dataclass(frozen=True)
class Deployment:
    """One DC placement with its RTT tables, bounds, tabulated decisions and the
    users' legacy placement (``start``: shared by every policy, bound and S'/S'')."""

    use_case: str
    n_dcs: int
    net: Network
    bounds: dict[str, float]
    decisions: dict[str, Decisions] = field(repr=False)
    start: Start = field(repr=False)


def deployment_tables(
    pos_lat: np.ndarray,
    pos_lon: np.ndarray,
    pos_weight: np.ndarray,
    dc_lat: np.ndarray,
    dc_lon: np.ndarray,
    params: Params,
    bounds: Sequence[str],
) -> tuple[Network, dict[str, float], dict[str, Decisions]]:
    """A DC set's RTT tables, its latency bounds and the decision tables of ``bounds``:
    the one construction of the in-memory and the partitioned sweeps."""
    net = build_network(pos_lat, pos_lon, dc_lat, dc_lon)
    all_bounds = latency_bounds(net, pos_weight)
    return net, all_bounds, {b: decision_tables(net, all_bounds[b], params) for b in bounds}


def deployment(
    tr: Trajectories,
    use_case: str,
    dc_lat: np.ndarray,
    dc_lon: np.ndarray,
    *,
    params: Params = PAPER_PARAMS,
    legacy: str = "home-entry-random-vm",
    seed: int = 0,
    bounds: Sequence[str] = tuple(BOUND_QUANTILES),
) -> Deployment:
    """RTT tables, the bounds and their decision tables for one DC set, and the legacy
    placement under the reading ``legacy`` (pacao.sim.legacy) drawn with ``seed``."""
    net, all_bounds, decisions = deployment_tables(
        tr.pos_lat, tr.pos_lon, tr.pos_weight, dc_lat, dc_lon, params, bounds
    )
    return Deployment(
        use_case=use_case,
        n_dcs=net.n_dcs,
        net=net,
        bounds=all_bounds,
        decisions=decisions,
        start=legacy_start(tr, net, legacy, seed, use_case),
    )


@dataclass(frozen=True)
class GridPoint:
    s1: float
    s2: float
    relative: bool = True
    migration_s: float = 0.0
    with_pacao1: bool = True

    def timing(self) -> Timing:
        return Timing(self.s1, self.s2, self.relative, self.migration_s)


def grid(
    s1: Sequence[float], s2: Sequence[float], relative: bool = True, migration_s: float = 0.0
) -> list[GridPoint]:
    """All (S', S'') pairs; PACAO-1 (which ignores S'') runs on each S' once."""
    if not s1 or not s2:
        raise InputError("grid", (list(s1), list(s2)), "at least one S' and one S''")
    return [
        GridPoint(a, b, relative, migration_s, with_pacao1=(j == 0))
        for a in s1
        for j, b in enumerate(s2)
    ]


@dataclass(frozen=True)
class SweepData:
    """What every task needs, scattered once to each worker."""

    traces: Trajectories
    deployments: list[Deployment]


class DeploymentKey(Protocol):
    """What a result row names of its deployment (a Deployment, or the partitioned
    sweep's SharedDeployment)."""

    @property
    def use_case(self) -> str: ...
    @property
    def n_dcs(self) -> int: ...
    @property
    def bounds(self) -> dict[str, float]: ...


def result_row(
    dep: DeploymentKey,
    bound: str,
    policy: Policy,
    point: GridPoint | None,
    *,
    quantiles: np.ndarray,
    mean_rtt_ms: float,
    median_throughput_mbps: float,
    switches: int,
    migrations: int,
) -> dict[str, object]:
    """The one layout of a result row (configuration, then the p10 / median / p90 RTT
    ``quantiles`` and the other statistics): the in-memory sweep and the partitioned
    one (pacao.sim.scale) both write it."""
    return {
        "use_case": dep.use_case,
        "n_dcs": dep.n_dcs,
        "bound": bound,
        "bound_ms": dep.bounds[bound],
        "policy": policy.value,
        "s1": np.nan if point is None else point.s1,
        "s2": np.nan if point is None or policy is Policy.PACAO1 else point.s2,
        "relative": True if point is None else point.relative,
        "migration_s": 0.0 if point is None else point.migration_s,
        "median_rtt_ms": float(quantiles[1]),
        "p10_rtt_ms": float(quantiles[0]),
        "p90_rtt_ms": float(quantiles[2]),
        "mean_rtt_ms": mean_rtt_ms,
        "median_throughput_mbps": median_throughput_mbps,
        "switches": switches,
        "migrations": migrations,
    }


def stats_row(
    dep: Deployment, bound: str, policy: Policy, point: GridPoint | None, out: Outcome
) -> dict[str, object]:
    """One result row: the configuration and the statistics of its samples."""
    q = out.quantiles(list(QUANTILES))
    thr = Outcome(WINDOW_MBIT_MS / out.values, out.counts, 0, 0).quantiles([0.5])[0]
    return result_row(
        dep,
        bound,
        policy,
        point,
        quantiles=q,
        mean_rtt_ms=out.mean(),
        median_throughput_mbps=float(thr),
        switches=out.switches,
        migrations=out.migrations,
    )


def run_point(data: SweepData, point: GridPoint) -> list[dict[str, object]]:
    """Every deployment and bound at one (S', S'') point (one Dask task)."""
    sched = schedule(data.traces, point.timing())
    rows = []
    for dep in data.deployments:
        for bound, dec in dep.decisions.items():
            policies = [Policy.PACAO1, Policy.PACAO2] if point.with_pacao1 else [Policy.PACAO2]
            for pol in policies:
                out = simulate(data.traces, sched, dep.net, dec, pol, dep.start)
                rows.append(stats_row(dep, bound, pol, point, out))
    return rows


def legacy_rows(data: SweepData) -> list[dict[str, object]]:
    """Legacy does not depend on S', S'' or the bound; one row per bound for joins."""
    rows = []
    for dep in data.deployments:
        out = legacy(data.traces, dep.net, dep.start)
        rows += [stats_row(dep, b, Policy.LEGACY, None, out) for b in BOUND_QUANTILES]
    return rows


def worker_environ() -> dict[str, str]:
    """Dask's pre-spawn environment for workers without its malloc settings.

    Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also freezes glibc's
    mmap threshold: every array the engine allocates is then mapped and faulted in
    afresh, doubling a task's time (measured: 3.8 s of system time in a 10 s task).
    Dask's thread limits are kept.
    """
    import dask  # the sim extra; imported where the cluster is made

    return {
        k: v
        for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
        if not k.startswith("MALLOC_")
    }


def _probe(address: str) -> None:
    """Connect and handshake under one deadline. Client(address, timeout=...) bounds the
    TCP connection but not the handshake read after it, so a listener that never
    answers (not a scheduler, or a stuck one) would hang it for ever."""
    import asyncio

    from distributed.comm.core import connect

    async def probe() -> None:
        comm = await asyncio.wait_for(
            connect(address, timeout=CONNECT_TIMEOUT_S),  # type: ignore[no-untyped-call]
            HANDSHAKE_TIMEOUT_S,
        )
        await comm.close()

    asyncio.run(probe())


@contextmanager
def dask_client(scheduler: str | None, workers: int | None = None) -> Iterator[object]:
    """A client on the given scheduler, or on a LocalCluster closed afterwards."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            _probe(scheduler)
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError, ValueError) as exc:
            why = str(exc) or f"no Dask handshake within {HANDSHAKE_TIMEOUT_S} s"
            raise InputError(
                "--scheduler", scheduler, f"a reachable Dask scheduler address ({why})"
            ) from None
        with client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    environ = worker_environ()
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


def run_sweep(
    client: object,
    data: SweepData,
    points: Sequence[GridPoint],
    advance: Callable[[], None] = lambda: None,
) -> pd.DataFrame:
    """Run the grid on the Dask client; ``advance`` is called once per finished task."""
    from distributed import Client, as_completed

    assert isinstance(client, Client)
    shared = client.scatter(data, broadcast=True)  # type: ignore[no-untyped-call]
    futures = [client.submit(run_point, shared, p, pure=False) for p in points]
    rows = legacy_rows(data)
    for fut in as_completed(futures):  # type: ignore[no-untyped-call]
        rows.extend(fut.result())
        advance()
    df = pd.DataFrame(rows)
    return df.sort_values(["use_case", "n_dcs", "bound", "policy", "s1", "s2"]).reset_index(
        drop=True
    )
