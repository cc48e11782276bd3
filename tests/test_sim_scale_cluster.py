"""The partitioned sweep on a real Dask cluster (a scheduler and two worker processes on
loopback, started and stopped here by PID) gives the rows of a LocalCluster run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

#: Generous: the machine is shared; this waits for an event, it does not time anything.
START_TIMEOUT_S = 180
DASK = Path(sys.executable).parent / "dask"


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in reversed(procs):
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:  # the child keeps its own descriptor
        return subprocess.Popen([str(DASK), *args], stdout=f, stderr=subprocess.STDOUT, env=env)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    """The scheduler's address; the three processes are stopped by PID afterwards."""
    from distributed import Client

    assert DASK.is_file(), f"the dask command is missing next to {sys.executable}"
    sched_file = tmp_path / "scheduler.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": ""}
    try:
        sched = ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
        procs.append(_spawn([*sched, "--scheduler-file", str(sched_file)], logs / "s.log", env))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not sched_file.is_file():
            assert procs[0].poll() is None, (logs / "s.log").read_text()
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.2)
        for i in range(2):
            worker = ["worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1"]
            worker += ["--nthreads", "1", "--no-dashboard", "--no-nanny"]
            procs.append(_spawn(worker, logs / f"w{i}.log", env))
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        with Client(address, timeout=START_TIMEOUT_S) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(2, timeout=START_TIMEOUT_S)
            assert len(client.scheduler_info()["workers"]) == 2
        yield address
    finally:
        _stop(procs)


def test_partitioned_sweep_on_a_real_cluster_equals_a_localcluster_run(
    cluster: str, tmp_path: Path
) -> None:
    from distributed import Client

    from pacao.sim.scale import build_shared, generate_dataset, run_scaled
    from pacao.sim.sweep import dask_client, grid
    from test_sim_scale import SEED, dc_table

    points = grid((0.3,), (0.5,))
    dcs = dc_table(SEED)
    with Client(cluster, timeout=START_TIMEOUT_S) as client:  # type: ignore[no-untyped-call]
        ds = generate_dataset(client, tmp_path / "ds", 60, SEED, partition_users=20)
        on_cluster = run_scaled(client, build_shared(client, ds, dcs, seed=SEED), points)
        workers = {w["host"] for w in client.scheduler_info()["workers"].values()}
    assert workers == {"127.0.0.1"}
    with dask_client(None, workers=1) as local:
        here = run_scaled(local, build_shared(local, ds, dcs, seed=SEED), points)
    pd.testing.assert_frame_equal(on_cluster, here, check_exact=True)
    assert len(on_cluster) == 2 * 3 * 3  # 2 deployments x 3 bounds x (legacy, PACAO-1, -2)
