"""Three controller replicas on one real PostgreSQL: one leads by lease, the others follow.

Each scenario runs a live migration plan (VM migration, then entry switch) in a world
the replicas share (the memory drivers' ``world_file``) and hurts the leader mid-
migration: kill -9; SIGSTOP past its lease then SIGCONT; a PostgreSQL restart. In
each, the plan ends ``succeeded`` under a later epoch, the migration job was started
once and the entry switch registered once. Every wait is for a state, with a generous
timeout; nothing asserts on elapsed time (benchmarks/bench_failover.py measures it).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from controller_pg import postgres_cluster
from ha_support import (
    TOKEN,
    Group,
    Replica,
    calls_now,
    config_doc,
    finished,
    migration_plan,
    started,
)
from pacao.cli import app
from pacao.controller.storage import Fence, NotLeader, Store


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    tmp = tmp_path_factory.mktemp("ha")
    with postgres_cluster() as cluster:
        world, cfg = tmp / "world.json", tmp / "controller.yaml"
        cfg.write_text(yaml.safe_dump(config_doc(cluster.url, world)))
        store = Store(cluster.url)
        g = Group(cluster, store, world, cfg, tmp)
        try:
            for _ in range(3):
                g.start()
            yield g
        finally:
            for r in g.replicas:
                if r.stopped:
                    os.kill(r.proc.pid, signal.SIGCONT)
                if r.proc.poll() is None:
                    os.kill(r.proc.pid, signal.SIGTERM)
            for r in g.replicas:
                try:
                    r.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.kill(r.proc.pid, signal.SIGKILL)
                    r.proc.wait(timeout=10)
            store.close()


def check_once(g: Group, pid: str, job: str, calls_before: int) -> dict[str, Any]:
    """The plan succeeded; its migration was started once, its entry switch done once."""
    plan: dict[str, Any] = g.wait("the plan to end", lambda: finished(g, pid))
    assert plan["state"] == "succeeded", (plan, g.logs())
    assert [a["state"] for a in plan["actions"]] == ["succeeded", "succeeded"]
    assert len(started(g, job)) == 1, g.world_doc()
    calls = g.world_doc()["mapping"]["calls"]
    assert len(calls) == calls_before + 1, calls  # this plan's entry switch, once
    assert calls[-1][1] == plan["actions"][1]["params"]["priorities"]
    assert plan["actions"][1]["attempts"] >= 1
    return plan


def test_followers_answer_reads_and_refuse_writes(group: Group) -> None:
    g = group
    g.leader()
    for each in g.replicas:
        g.wait("every replica's API", each.health)

    def agree() -> tuple[Replica, Replica, dict[str, Any]] | None:
        """A follower and the leader agreeing with the lease row (the lease may move on
        a loaded machine: then the next poll looks again)."""
        lease = g.lease()
        if lease is None or not lease["valid"]:
            return None
        docs = [(x, x.health()) for x in g.replicas]
        lead = [x for x, d in docs if d and d["role"] == "leader" and
                d["replica"] == lease["holder"]]  # fmt: skip
        fol = [(x, d) for x, d in docs if d and d["role"] == "follower" and
               (d["leader"], d["epoch"], d["leader_since"]) ==
               (lease["holder"], lease["epoch"], lease["since"])]  # fmt: skip
        return (fol[0][0], lead[0], fol[0][1]) if lead and fol else None

    follower, leader, h = g.wait("a follower agreeing with the leader", agree)
    assert h["leader_api"] == leader.base
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.get(f"{follower.base}/plans", headers=auth)
    assert r.status_code == 200

    def refused() -> httpx.Response | None:
        """The follower's 503 names the leader of the lease row (read just after)."""
        got = httpx.post(f"{follower.base}/plans/nope/approve", headers=auth)
        now = g.lease()
        if got.status_code != 503 or now is None or now["holder"] not in got.text:
            return None
        return got

    r = g.wait("the follower's refusal naming the leader", refused)
    assert "this replica follows" in r.json()["detail"]
    assert r.headers["X-Pacao-Leader"] == r.json()["leader_api"]
    assert r.json()["leader_api"] in {x.base for x in g.replicas}

    # The leader handles it (404: no such plan). Waited for: on a loaded machine the lease
    # may have moved meanwhile, and then the new leader answers.
    def taken() -> Replica | None:
        for rep in g.replicas:
            got = httpx.post(f"{rep.base}/plans/nope/approve", headers=auth)
            if got.status_code == 404:
                return rep
        return None

    writer = g.wait("a replica that takes writes", taken)
    h = writer.health()
    assert h is not None and h["role"] == "leader", g.logs()
    m = httpx.get(f"{writer.base}/metrics", headers=auth).text
    assert "pacao_leader 1.0" in m and "pacao_leader_terms_total" in m
    m = httpx.get(f"{follower.base}/metrics", headers=auth).text
    assert "pacao_leader 0.0" in m


def mid_migration(g: Group, src: str, dst: str, job: str) -> tuple[str, Replica, dict[str, Any]]:
    """Store a migration plan, wait until it is under way; the leader running it now."""
    pid = migration_plan(g.store, src, dst, job)
    g.wait("the migration to start", lambda: started(g, job))
    old, lease = g.leader()
    plan = g.store.plan(pid)
    assert plan is not None and plan["actions"][0]["state"] == "ongoing", (plan, g.logs())
    return pid, old, lease


def test_kill_9_of_the_leader_mid_migration(group: Group) -> None:
    g = group
    before = calls_now(g)
    pid, old, lease = mid_migration(g, "dc1", "dc2", "job-kill")
    os.kill(old.proc.pid, signal.SIGKILL)
    old.proc.wait(timeout=30)
    _, lease2 = g.leader(not_pid=old.proc.pid)
    assert lease2["epoch"] > lease["epoch"]
    plan = check_once(g, pid, "job-kill", before)
    # Started, then resumed by the new leader (and once more per further takeover, if a
    # starved leader lost its lease too: each resumes it, none repeats it).
    assert plan["actions"][0]["attempts"] >= 2
    notes = [t["note"] for t in g.store.transitions(pid)]
    assert notes.count("resumed after a restart") == plan["actions"][0]["attempts"] - 1
    assert g.store.get_state("user/u1")["host"] == "dc2"


def test_sigstop_past_the_lease_then_sigcont(group: Group) -> None:
    g = group
    before = calls_now(g)
    pid, old, lease = mid_migration(g, "dc2", "dc1", "job-stop")
    os.kill(old.proc.pid, signal.SIGSTOP)
    old.stopped = True
    _, lease2 = g.leader(not_pid=old.proc.pid)
    assert lease2["epoch"] > lease["epoch"]
    check_once(g, pid, "job-stop", before)
    transitions = len(g.store.transitions(pid))
    os.kill(old.proc.pid, signal.SIGCONT)
    old.stopped = False

    def follows() -> bool:
        h, now = old.health(), g.lease()
        return bool(h and now and h["role"] == "follower" and h["leader"] == now["holder"])

    g.wait("the woken replica to follow the current leader", follows)
    g.wait("its log line", lambda: "lease lost: following" in old.log.read_text())
    # It did not act again: nothing new in the world, no transition written by it.
    plan = check_once(g, pid, "job-stop", before)
    assert len(g.store.transitions(pid)) == transitions
    assert plan["actions"][0]["attempts"] >= 2
    assert g.store.get_state("user/u1")["host"] == "dc1"


def test_postgresql_restart_under_the_replicas(group: Group) -> None:
    g = group
    before = calls_now(g)
    pid, _, lease = mid_migration(g, "dc1", "dc2", "job-pg")
    g.cluster.restart()
    check_once(g, pid, "job-pg", before)
    _, lease2 = g.leader()
    assert lease2["epoch"] >= lease["epoch"]
    live = [r for r in g.replicas if r.proc.poll() is None]
    want = ["follower"] * (len(live) - 1) + ["leader"]

    def one_leader() -> bool:
        hs = [r.health() for r in live]
        return all(hs) and sorted(h["role"] for h in hs if h) == want

    g.wait("one leader among the live replicas", one_leader)
    assert g.store.get_state("user/u1")["host"] == "dc2"
    # No plan lost over the three scenarios: every one of them succeeded.
    assert {p["state"] for p in g.store.plans()} == {"succeeded"}
    assert len(g.world_doc()["hypervisor"]["started"]) == 3


def test_the_store_refuses_a_stale_epoch(group: Group) -> None:
    """Fencing at the storage (a database of its own beside the replicas'): once another
    holder took the lease, a write of the old epoch raises and changes nothing."""
    admin = Store(group.cluster.url)
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("DROP DATABASE IF EXISTS fencing")
        c.exec_driver_sql("CREATE DATABASE fencing")
    admin.close()
    url = group.cluster.url.rsplit("/", 1)[0] + "/fencing"
    a, b = Store(url), Store(url)
    try:
        a.fence, b.fence = Fence(), Fence()
        lost: list[str] = []
        a.fence.on_lost = lost.append
        got = a.acquire_lease("a", "http://a", 2.0)
        assert got is not None and got[0] == 1
        assert b.acquire_lease("b", "http://b", 30.0) is None  # held and unexpired
        a.fence.epoch = got[0]
        a.put_state("k", 1)
        assert a.get_state("k") == 1
        taken = group.wait("the lease to expire", lambda: b.acquire_lease("b", "http://b", 30.0))
        assert taken[0] == 2
        b.fence.epoch = taken[0]
        with pytest.raises(NotLeader, match="stale"):
            a.put_state("k", 2)
        assert lost and "epoch 1 is stale" in lost[0]
        assert a.get_state("k") == 1
        with pytest.raises(NotLeader):
            a.check_fence()
        assert a.renew_lease("a", 1, 30.0) is None  # the old holder cannot renew either
        b.put_state("k", 3)
        assert b.get_state("k") == 3
        assert b.release_lease("b", 2)
        with pytest.raises(NotLeader, match="expired: True"):
            b.put_state("k", 4)  # released: its own epoch but no longer valid
        b.fence.epoch = None
        with pytest.raises(NotLeader, match="not the leader"):
            b.put_state("k", 5)
        assert b.get_state("k") == 3
    finally:
        a.close()
        b.close()


def test_check_config_says_replicas_need_postgresql(tmp_path: Path) -> None:
    doc = config_doc(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "w.json")
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(doc))
    r = CliRunner().invoke(app, ["controller", "check-config", str(f)])
    assert r.exit_code == 2
    assert "ha.enabled" in r.output and "PostgreSQL" in r.output
    doc["ha"]["renew_s"] = doc["ha"]["lease_s"]
    doc["storage"]["url"] = "postgresql://nobody@127.0.0.1:1/x"
    f.write_text(yaml.safe_dump(doc))
    r = CliRunner().invoke(app, ["controller", "check-config", str(f)])
    assert r.exit_code == 2 and "ha.renew_s" in r.output
