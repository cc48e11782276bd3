"""`pacao reproduce`, partitioned, on a real Dask cluster (a scheduler and two worker
processes on loopback, started here and stopped by PID) writes the summary.json and
results/sweep.parquet of the same command run on a LocalCluster."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

#: Generous: the machine is shared; these wait for an event, they do not time anything.
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 900
BIN = Path(sys.executable).parent
#: A seed no other test uses.
SEED = 31
#: summary.json fields that are wall times, as dotted paths ("*": any one key): the
#: congestion stage's solver seconds. Every other field must be equal.
WALL_TIME_FIELDS = ("congestion.*.*.seconds",)
#: Two partitions of 100 users, the quick grid, the two headline deployments' DC counts.
RUN = [
    "reproduce", "--quick", "--users", "200", "--partition-users", "100",
    "--dc-counts", "4,64", "--seed", str(SEED), "--no-testbed", "--no-sensitivity",
]  # fmt: skip


def command(name: str) -> Path:
    """A console script of this virtualenv; missing: the test fails and says which."""
    path = BIN / name
    assert path.is_file(), f"the {name!r} command is missing next to {sys.executable}"
    return path


@dataclass(frozen=True)
class Cluster:
    address: str
    logs: Path

    def log_text(self) -> str:
        return "".join(
            f"\n--- {p.name} ---\n{p.read_text(errors='replace')}"
            for p in sorted(self.logs.glob("*.log"))
        )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """The workers (procs[1:]) together, then the scheduler: the workers leave a live
    scheduler instead of waiting for a gone one."""
    for group in (procs[1:], procs[:1]):
        for p in group:
            if p.poll() is None:
                p.terminate()
        for p in group:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _spawn(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:  # the child keeps its own descriptor
        return subprocess.Popen(
            [str(command("dask")), *args], stdout=f, stderr=subprocess.STDOUT, cwd=cwd
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A scheduler and two workers on loopback, run from outside the source tree (the
    project is importable as installed). Stopped by PID afterwards, whatever happened;
    their logs are printed then, which pytest shows when the test failed."""
    from distributed import Client

    sched_file = tmp_path / "scheduler.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    cl = Cluster("", logs)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sched = ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
        procs.append(_spawn([*sched, "--scheduler-file", str(sched_file)], logs / "s.log", logs))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not sched_file.is_file():
            assert procs[0].poll() is None, "dask scheduler exited" + cl.log_text()
            assert time.monotonic() < deadline, "dask scheduler did not start" + cl.log_text()
            time.sleep(0.2)
        for i in range(2):
            worker = ["worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1"]
            worker += ["--nthreads", "1", "--no-dashboard", "--no-nanny"]
            procs.append(_spawn(worker, logs / f"w{i}.log", logs))
        cl = Cluster(json.loads(sched_file.read_text())["address"], logs)
        assert cl.address.startswith("tcp://127.0.0.1:")
        with Client(cl.address, timeout=START_TIMEOUT_S) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(2, timeout=START_TIMEOUT_S)
        yield cl
    finally:
        _stop(procs)
        print(cl.log_text())


def _start_cli(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(command("pacao")), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its LocalCluster's workers go with it on a timeout
    )


def _finish(p: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    """Exit status and output; after ``timeout`` (a hang) the run's process group is
    killed by its id."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return -1, f"no exit within {timeout} s\n{out}{err}"
    return p.returncode, out + err


def flat(doc: object, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every leaf of a JSON document by its key path (list items by index)."""
    if isinstance(doc, dict) and doc:
        return {k: v for key, sub in doc.items() for k, v in flat(sub, (*path, key)).items()}
    if isinstance(doc, list) and doc:
        return {k: v for i, sub in enumerate(doc) for k, v in flat(sub, (*path, str(i))).items()}
    return {path: doc}


def is_wall_time(path: tuple[str, ...]) -> bool:
    return any(
        len(path) == len(parts) and all(p in ("*", k) for p, k in zip(parts, path, strict=True))
        for parts in (f.split(".") for f in WALL_TIME_FIELDS)
    )


def test_partitioned_reproduce_on_a_real_cluster_equals_a_localcluster_run(
    cluster: Cluster, tmp_path: Path
) -> None:
    from distributed import Client

    runs = {"cluster": tmp_path / "on-cluster", "local": tmp_path / "local"}
    on_cluster = ["--out", str(runs["cluster"]), "--scheduler", cluster.address]
    # Both at once: the cluster run's own process mostly waits for the two workers.
    procs = {
        "cluster": _start_cli([*RUN, *on_cluster], tmp_path),
        "local": _start_cli([*RUN, "--out", str(runs["local"]), "--workers", "1"], tmp_path),
    }
    for name, p in procs.items():
        code, output = _finish(p, RUN_TIMEOUT_S)
        assert code == 0, f"pacao reproduce ({name}) exited {code}:\n{output}"
    with Client(cluster.address, timeout=START_TIMEOUT_S) as client:  # type: ignore[no-untyped-call]
        workers = client.scheduler_info()["workers"].values()
        # The run scattered its tables to every worker of this scheduler.
        used = client.run(lambda: "pacao.sim.scale" in sys.modules)
    assert {w["host"] for w in workers} == {"127.0.0.1"} and len(used) == 2
    assert all(used.values()), used

    summary = {k: flat(json.loads((d / "summary.json").read_text())) for k, d in runs.items()}
    on, here = summary["cluster"], summary["local"]
    assert on.keys() == here.keys(), sorted(on.keys() ^ here.keys())
    differ = {".".join(k): (on[k], here[k]) for k in on if not is_wall_time(k) and on[k] != here[k]}
    assert not differ, differ
    assert on[("partitioned", "users")] == 200 and on[("partitioned", "partitions")] == 2
    assert on[("france_isp", "n_dcs")] == 64 and on[("europe_ott", "n_dcs")] == 4

    sweep = {k: pd.read_parquet(d / "results" / "sweep.parquet") for k, d in runs.items()}
    assert sweep["cluster"].equals(sweep["local"])
    deployments = set(sweep["local"][["use_case", "n_dcs"]].itertuples(index=False, name=None))
    assert deployments == {(uc, n) for uc in ("france_isp", "europe_ott") for n in (4, 64)}

    # The partitions the workers generated are the ones generated locally.
    for part in sorted((runs["local"] / "traces").glob("part-*.parquet")):
        theirs = pd.read_parquet(runs["cluster"] / "traces" / part.name)
        assert theirs.equals(pd.read_parquet(part)), part.name


def test_a_scheduler_that_never_answers_is_one_error_line(tmp_path: Path) -> None:
    """A listener that accepts and stays silent (not a scheduler, or a stuck one)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        p = _start_cli([*RUN, "--out", str(tmp_path / "o"), "--scheduler", address], tmp_path)
        code, output = _finish(p, START_TIMEOUT_S)
    errors = [x for x in output.splitlines() if x.startswith("pacao: error:")]
    assert code == 2, output
    assert len(errors) == 1 and f"--scheduler: '{address}'" in errors[0], output
    assert "Traceback" not in output
    assert not (tmp_path / "o" / "summary.json").exists()
