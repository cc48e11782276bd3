"""The controller process as an operator runs it: it answers while it resumes a long
plan, SIGTERM leaves that plan resumable, and a restart finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from ha_support import big_vm_world, free_port
from pacao.controller.storage import Store

TOKEN = "svc-token"


def config_doc(tmp: Path, port: int, seconds_per_gib: float) -> dict[str, Any]:
    return {
        **big_vm_world(),
        "drivers": {
            "mapping": {"name": "memory"},
            "hypervisor": {"name": "memory", "options": {"seconds_per_gib": seconds_per_gib}},
        },
        "storage": {
            "url": f"sqlite:///{tmp / 'ctl.db'}",
            "retention": {"max_age_s": 60, "interval_s": 0.5},
            "history": {"bucket_s": 10},
        },
        "api": {"listen": f"127.0.0.1:{port}", "token": TOKEN},
    }


def wait_for(what: str, cond: Callable[[], Any], proc: subprocess.Popen[bytes], log: Path) -> Any:
    """Poll every 100 ms until cond() is truthy; generous timeout, fail on process exit."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"controller exited ({proc.returncode}) waiting for {what}: "
                                 + log.read_text()[-2000:])  # fmt: skip
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: " + log.read_text()[-2000:])


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None  # not listening yet


def test_answers_while_recovering_and_sigterm_leaves_the_plan_resumable(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = tmp_path / "controller.yaml"
    # 4 GiB at 1000 s/GiB: the resumed migration lasts more than an hour.
    cfg.write_text(yaml.safe_dump(config_doc(tmp_path, port, 1000.0)))
    store = Store(f"sqlite:///{tmp_path / 'ctl.db'}")
    pid = store.create_plan(
        "u1",
        "vm_migration",
        "test: a migration under way when the previous process died",
        {},
        {},
        [
            ("VmMigration", {"vm": "big", "src": "dc1", "dst": "dc2", "job_id": "u1-big-1",
                             "bandwidth_mbps": 1000.0, "max_downtime_ms": 300}),
            ("EntrySwitch", {"vm_eid": "10.1.0.10/32", "rloc": "192.0.2.2",
                             "priorities": {"192.0.2.2": 1, "192.0.2.1": 2}, "notify": []}),
        ],
    )  # fmt: skip
    store.approve(pid, by="test")
    assert store.move_plan(pid, "approved", "ongoing")
    mig = store.plan(pid)["actions"][0]  # type: ignore[index]
    assert store.move_action(mig["id"], "pending", "ongoing", undo={"dc": "dc1", "running": True})
    # Samples of an hour ago: the retention loop rolls them into history, then deletes them.
    old = time.time() - 3600
    store.add_measurements(
        [
            {"ts": old + i, "kind": "sample", "path": "user-xtr", "xtr": "dc1", "subject": "u1",
             "rloc": "192.0.2.1", "rtt_ms": 30.0, "count": 1}
            for i in range(100)
        ]
    )  # fmt: skip
    cmd = [sys.executable, "-m", "pacao.cli", "controller", "run", "--config", str(cfg)]

    log1 = tmp_path / "run1.log"
    polled: list[str] = []
    polling = threading.Event()
    with open(log1, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        health = wait_for("/healthz to answer", lambda: get(f"{base}/healthz"), proc, log1)
        # From its first answer on, /healthz polled every 100 ms answers every time.

        def poll() -> None:
            while not polling.is_set():
                r = get(f"{base}/healthz")
                polled.append("refused" if r is None else r.json()["status"])
                polling.wait(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        assert health.status_code == 200
        assert health.json() == {"status": "recovering", "recovering_plans": [pid]}
        ready = get(f"{base}/readyz")
        assert ready is not None and ready.status_code == 503
        assert ready.json()["status"] == "recovering"
        live = get(f"{base}/livez")
        assert live is not None and live.status_code == 200
        # The loops and the API are up during recovery: the start line is logged and an
        # authenticated route answers.
        wait_for("the start log line", lambda: "controller started" in log1.read_text(),
                 proc, log1)  # fmt: skip
        r = httpx.get(f"{base}/plans/{pid}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["state"] == "ongoing"
        # SIGHUP reloads the file: a bad one is refused and the old config keeps running,
        # a good one replaces it.
        bad = config_doc(tmp_path, port, 1000.0)
        bad["users"][0]["sla"]["rtt"]["weight"] = 0.5
        cfg.write_text(yaml.safe_dump(bad))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for("the refusal", lambda: "config reload refused" in log1.read_text(), proc, log1)
        assert "users[0].sla.*.weight" in log1.read_text()
        good = config_doc(tmp_path, port, 1000.0)
        good["timers"]["s1"] = 2.0
        cfg.write_text(yaml.safe_dump(good))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for("the reload", lambda: '"changed": ["timers"]' in log1.read_text(), proc, log1)
        health = get(f"{base}/healthz")
        assert health is not None and health.json()["status"] == "recovering"
        wait_for("the retention pass", lambda: store.count_measurements() == 0, proc, log1)
        hist = httpx.get(f"{base}/history", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert sum(h["count"] for h in hist) == 100 and {h["rtt_ms"] for h in hist} == {30.0}
        polling.set()
        poller.join(10)
        assert polled and set(polled) == {"recovering"}, polled
    finally:
        polling.set()
        os.kill(proc.pid, signal.SIGTERM)
    # Generous bound (the migration has more than an hour to go): SIGTERM does not wait
    # for it.
    assert proc.wait(timeout=30) == 0, log1.read_text()[-2000:]
    assert "controller stopped" in log1.read_text()
    plan = store.plan(pid)
    assert plan is not None and plan["state"] == "ongoing"
    assert [a["state"] for a in plan["actions"]] == ["ongoing", "pending"]

    # The next start (now a fast migration) resumes it to the end.
    cfg.write_text(yaml.safe_dump(config_doc(tmp_path, port, 0.0)))
    log2 = tmp_path / "run2.log"
    with open(log2, "wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        ready2 = wait_for("readiness", lambda: (r := get(f"{base}/readyz")) is not None
                          and r.status_code == 200 and r, proc, log2)  # fmt: skip
        assert ready2.json() == {"status": "ok", "recovering_plans": []}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log2.read_text()[-2000:]
    assert '"level": "info"' in log1.read_text() and '"level": "info"' not in log2.read_text()
    plan = store.plan(pid)
    assert plan is not None and plan["state"] == "succeeded"
    mig, switch = plan["actions"]
    # Started by the first process (stored), resumed by each of the two restarts.
    assert (mig["state"], mig["attempts"]) == ("succeeded", 3)
    assert (switch["state"], switch["attempts"]) == ("succeeded", 1)
    assert store.get_state("user/u1")["host"] == "dc2"
    store.close()
