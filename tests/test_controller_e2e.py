"""End to end on loopback: fake xTR stats endpoints, the controller service with its API,
in-memory drivers. An SLA violation yields an EntrySwitch plan, then (S'' later, still
violated through the new entry) a VmMigration plan, each stored before it is acted on."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from pacao.controller.app import build, make_server
from pacao.controller.config import load_config
from pacao.controller.drivers.memory import MemoryMapping
from pacao.controller.service import Service
from pacao.measurement import Cursor
from probe_support import FakeAgent

RLOC = {"dc1": "192.0.2.1", "dc2": "192.0.2.2", "dc3": "198.51.100.1"}
USER_RLOC = "203.0.113.5"
VM_EID = "10.1.0.10/32"
STEP = 0.05  # S''' of the fake xTRs


class Scenario:
    """User<->xTR RTTs per DC; dc1's rises to 300 ms at ``stress_at``. VM sits at dc1."""

    def __init__(self) -> None:
        self.stress_at = float("inf")

    def offer(self, agent: FakeAgent, now: float) -> None:
        """The last 60 probe rounds of ``agent`` (its DC's xTR) up to ``now``."""
        dc = agent.name
        k = int(now / STEP)
        for i in range(k - 60, k + 1):
            ts = i * STEP
            base = {"dc1": 30.0, "dc2": 40.0, "dc3": 80.0}[dc]
            if dc == "dc1" and ts >= self.stress_at:
                base = 300.0
            agent.probe(ts, "10.9.0.0/24", USER_RLOC, base + (i % 3) * 0.5)
            vm_rtt = 0.3 if dc == "dc1" else 50.0  # the VM is behind dc1
            agent.probe(ts, VM_EID, RLOC["dc1"], vm_rtt)
            agent.probe(ts, "10.77.0.0/16", "203.0.113.99", 5.0)  # not ours: ignored


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def xtrs() -> Iterator[tuple[Scenario, dict[str, str]]]:
    sc = Scenario()
    servers = []
    urls = {}
    for dc in RLOC:

        class H(BaseHTTPRequestHandler):
            agent = FakeAgent(dc, RLOC[dc])
            lock = threading.Lock()

            def do_GET(self) -> None:
                """The agent's ``/samples?stream=S&after=N`` (docs/input-formats.md)."""
                url = urlsplit(self.path)
                if url.path != "/samples":
                    self.send_error(404)
                    return
                q = parse_qs(url.query)
                cursor = Cursor(q["stream"][0], int(q["after"][0])) if "stream" in q else None
                with self.lock:
                    self.agent.now = time.time()
                    sc.offer(self.agent, self.agent.now)
                    body = json.dumps(self.agent.doc(cursor)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        urls[dc] = f"http://127.0.0.1:{srv.server_address[1]}/"
    yield sc, urls
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def write_config(tmp: Path, urls: dict[str, str], port: int) -> Path:
    doc = {
        "dcs": [
            {
                "name": dc,
                "location": {"lat": 48.85, "lon": 2.35},
                "rlocs": [RLOC[dc]],
                "capacity": {"ram_mib": 8192, "cpu": 8},
                "xtr": {"stats_url": urls[dc]},
            }
            for dc in RLOC
        ],
        "vms": [
            {
                "name": "vm1",
                "eid": VM_EID,
                "memory_mib": 1024,
                "vcpus": 1,
                "host": "dc1",
                "hypervisor_uri": "memory://dc1",
            }
        ],
        "users": [
            {
                "name": "alice",
                "eid": "10.9.0.0/24",
                "rloc": USER_RLOC,
                "vm": "vm1",
                "sla": {"rtt": {"weight": 0.8, "max": 60}, "jitter": {"weight": 0.2, "max": 10}},
            }
        ],
        "timers": {"s1": 0.6, "s2": 0.3, "s3": STEP},
        "policy": {"min_dwell_s": 0, "cooldown_s": 60},
        "drivers": {"mapping": {"name": "memory"}, "hypervisor": {"name": "memory"}},
        "storage": {"url": f"sqlite:///{tmp / 'ctl.db'}"},
        "api": {"listen": f"127.0.0.1:{port}", "token": "s3cret"},
    }
    f = tmp / "controller.yaml"
    f.write_text(yaml.safe_dump(doc))
    return f


def test_violation_gives_switch_then_migration_persisted_first(
    tmp_path: Path, xtrs: tuple[Scenario, dict[str, str]]
) -> None:
    sc, urls = xtrs
    port = free_port()
    cfg = load_config(write_config(tmp_path, urls, port))
    ctl = build(cfg)
    seen: list[tuple[str, list[str]]] = []
    mapping: MemoryMapping = ctl.mapping
    orig = mapping.set_priorities

    async def spy(vm_eid: str, prio: dict[str, int], notify: list[str]) -> None:
        # What was stored at the moment the controller acts.
        seen.append(
            (min(prio, key=prio.__getitem__), [p["kind"] for p in ctl.store.plans(state="ongoing")])
        )
        await orig(vm_eid, prio, notify)

    mapping.set_priorities = spy  # type: ignore[method-assign]
    decided: list[float] = []
    step1 = ctl.step1

    async def counted(now: float) -> list[str]:
        out = await step1(now)
        decided.append(now)
        return out

    ctl.step1 = counted  # type: ignore[method-assign]
    svc = Service(ctl, make_server(ctl))
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer s3cret"}

    async def main() -> None:
        task = asyncio.ensure_future(svc.serve())
        deadline = time.monotonic() + 30  # a timeout, not the behaviour
        while len(decided) < 2:  # two S' windows decided with the SLA met
            assert time.monotonic() < deadline, "the controller decided no S' window"
            await asyncio.sleep(0.05)
        assert ctl.store.plans() == []
        sc.stress_at = time.time()
        deadline = time.monotonic() + 60  # a timeout: check() fails if nothing was done
        while time.monotonic() < deadline:
            done = ctl.store.plans(state="succeeded")
            if any(p["kind"] == "vm_migration" for p in done):
                break
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"{base}/plans")).status_code == 401
            assert (
                await c.get(f"{base}/metrics", headers={"Authorization": "Bearer x"})
            ).status_code == 401
            assert (await c.get(f"{base}/healthz")).status_code == 200
            r = await c.get(f"{base}/plans", headers=auth)
            assert r.status_code == 200
            api_plans = r.json()
            metrics = (await c.get(f"{base}/metrics", headers=auth)).text
            topo = (await c.get(f"{base}/topology", headers=auth)).json()
            spec = (await c.get(f"{base}/openapi.json")).json()
        svc.stop.set()
        await task
        check(api_plans, metrics, topo, spec)

    def check(api_plans: list[dict[str, Any]], metrics: str, topo: Any, spec: Any) -> None:
        kinds = [p["kind"] for p in reversed(api_plans)]
        assert kinds[:2] == ["entry_switch", "vm_migration"], kinds
        first, second = api_plans[-1], api_plans[-2]
        assert first["state"] == "succeeded" and second["state"] == "succeeded"
        assert first["actions"][0]["params"]["rloc"] == RLOC["dc2"]
        assert second["actions"][0]["params"]["dst"] == "dc2"
        assert first["scores"]["best_objective"] < first["scores"]["current_objective"]
        # The switch was decided on a stored window, and the plan was stored before acting.
        windows = ctl.store.measurements(kind="window", limit=10000)
        assert any(
            w["ts"] <= first["created"]
            and w["rloc"] == RLOC["dc1"]
            and w["rtt_ms"] > 60
            and w["path"] == "user-xtr"
            for w in windows
        )
        assert seen[0] == (RLOC["dc2"], ["entry_switch"])
        for p in (first, second):
            hist = ctl.store.transitions(p["id"])
            assert [h["to_state"] for h in hist if h["action_id"] is None][:3] == [
                "recommended",
                "approved",
                "ongoing",
            ]
            started = min(h["ts"] for h in hist if h["action_id"] is not None)
            assert hist[0]["ts"] <= started
        assert ctl.hypervisor.vms["vm1"].dc == "dc2"
        assert ctl.state["alice"].host == "dc2"
        assert 'pacao_plans{state="succeeded"} 2.0' in metrics
        assert 'pacao_probe_rtt_seconds{rloc="192.0.2.1",user="alice"}' in metrics
        assert "pacao_sla_violations_total" in metrics and "pacao_decision_latency" in metrics
        assert topo["users"][0]["state"]["entry"] == RLOC["dc2"]
        assert "/plans/{pid}/approve" in spec["paths"]

    asyncio.run(main())
