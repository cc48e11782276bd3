"""Controller replicas for the HA test and benchmarks/bench_failover.py: a config with
``ha.enabled``, the replica processes, waits for states, a migration plan in a world
the replicas share (the memory drivers' ``world_file``)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from controller_pg import Cluster
from pacao.controller.storage import Store

TOKEN = "ha-token"
LEASE_S = 3.0
#: 4 GiB at 1 s/GiB: each migration lasts 4 s of wall time
SECONDS_PER_GIB = 1.0
#: generous: three replicas starting on a loaded 2-core machine took up to minutes
WAIT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def big_vm_world() -> dict[str, Any]:
    """Two DCs, one 4 GiB VM at dc1 and one user with an RTT SLA: the replica and the
    single-controller service tests share it (their drivers, storage and API differ)."""
    return {
        "dcs": [
            {
                "name": dc,
                "location": {"lat": 48.85, "lon": 2.35},
                "rlocs": [rloc],
                "capacity": {"ram_mib": 16384, "cpu": 8},
            }
            for dc, rloc in (("dc1", "192.0.2.1"), ("dc2", "192.0.2.2"))
        ],
        "vms": [
            {
                "name": "big",
                "eid": "10.1.0.10/32",
                "memory_mib": 4096,
                "vcpus": 2,
                "host": "dc1",
                "hypervisor_uri": "memory://dc1",
            }
        ],
        "users": [
            {
                "name": "u1",
                "rloc": "203.0.113.1",
                "vm": "big",
                "sla": {"rtt": {"weight": 1.0, "max": 60}},
            }
        ],
        "timers": {"s1": 1.0, "s2": 0.5, "s3": 0.25},
    }


def config_doc(
    url: str, world: Path, lease_s: float = LEASE_S, seconds_per_gib: float = SECONDS_PER_GIB
) -> dict[str, Any]:
    return {
        **big_vm_world(),
        "drivers": {
            "mapping": {"name": "memory", "options": {"world_file": str(world)}},
            "hypervisor": {
                "name": "memory",
                "options": {"seconds_per_gib": seconds_per_gib, "world_file": str(world)},
            },
        },
        "storage": {"url": url},
        "api": {"listen": "127.0.0.1:8080", "token": TOKEN},
        "ha": {"enabled": True, "lease_s": lease_s, "renew_s": lease_s / 4},
    }


@dataclass
class Replica:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    stopped: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict[str, Any] | None:
        try:
            r = httpx.get(f"{self.base}/healthz", timeout=2)
        except httpx.TransportError:
            return None
        doc: dict[str, Any] = r.json()
        return doc


@dataclass
class Group:
    cluster: Cluster
    store: Store
    world: Path
    cfg: Path
    tmp: Path
    replicas: list[Replica] = field(default_factory=list)

    def start(self) -> Replica:
        port = free_port()
        log = self.tmp / f"replica-{len(self.replicas)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pacao.cli", "controller", "run", "--config",
                 str(self.cfg), "--listen", f"127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        r = Replica(port, log, proc)
        self.replicas.append(r)
        return r

    def logs(self) -> str:
        return "\n".join(f"--- {r.log.name}\n{r.log.read_text()[-3000:]}" for r in self.replicas)

    def wait(self, what: str, cond: Callable[[], Any]) -> Any:
        """Poll until cond() is truthy; generous timeout; fail when a replica not killed
        by the test exits."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            got = cond()
            if got:
                return got
            for r in self.replicas:
                if r.proc.poll() is not None and r.proc.returncode != -signal.SIGKILL:
                    raise AssertionError(f"replica exited ({r.proc.returncode}) waiting for "
                                         f"{what}:\n{self.logs()}")  # fmt: skip
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.logs()}")

    def lease(self) -> dict[str, Any] | None:
        try:
            return self.store.lease()
        except Exception:  # the server is restarting
            return None

    def leader(self, not_pid: int | None = None) -> tuple[Replica, dict[str, Any]]:
        """Wait for a valid lease held by a live replica (not ``not_pid``)."""

        def found() -> tuple[Replica, dict[str, Any]] | None:
            lease = self.lease()
            if lease is None or not lease["valid"]:
                return None
            pid = int(lease["holder"].split(":")[-2])
            if pid == not_pid:
                return None
            r = next((r for r in self.replicas if r.proc.pid == pid), None)
            return None if r is None else (r, lease)

        got: tuple[Replica, dict[str, Any]] = self.wait("a leader", found)
        return got

    def world_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.world.read_text())
        return doc


def migration_plan(store: Store, src: str, dst: str, job: str) -> str:
    """An approved plan, as a leader's decision leaves it: the leader's approvals loop
    starts it."""
    rloc, other = ("192.0.2.1", "192.0.2.2") if dst == "dc1" else ("192.0.2.2", "192.0.2.1")
    prio = {rloc: 1, other: 2}
    pid = store.create_plan(
        "u1", "vm_migration", f"test: {job}", {}, {},
        [
            ("VmMigration", {"vm": "big", "src": src, "dst": dst, "job_id": job,
                             "bandwidth_mbps": 1000.0, "max_downtime_ms": 300}),
            ("EntrySwitch", {"vm_eid": "10.1.0.10/32", "rloc": rloc,
                             "priorities": prio, "notify": ["203.0.113.1"]}),
        ],
    )  # fmt: skip
    store.approve(pid, by="test")
    return pid


def started(g: Group, job: str) -> list[Any]:
    try:
        return [s for s in g.world_doc()["hypervisor"]["started"] if s[2] == job]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return []


def finished(g: Group, pid: str) -> dict[str, Any] | None:
    try:
        plan = g.store.plan(pid)
    except Exception:  # the server is restarting
        return None
    return plan if plan is not None and plan["state"] in ("succeeded", "failed") else None


def calls_now(g: Group) -> int:
    try:
        return len(g.world_doc()["mapping"]["calls"])
    except (FileNotFoundError, KeyError):
        return 0
