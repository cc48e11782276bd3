"""A loopback lab for the web view and AMS tests: in-memory xTR sources and drivers,
the controller service with its API in a thread of its own."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

from pacao.controller.app import build, make_server
from pacao.controller.config import config_from_dict
from pacao.controller.service import Controller, Service
from pacao.measurement import Cursor
from probe_support import FakeAgent

#: Debian's system browser (no browser download) and its headless flags: the browser
#: tests and benchmarks/bench_webview.py launch it alike.
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RLOC = {"dc1": "192.0.2.1", "dc2": "192.0.2.2", "dc3": "198.51.100.1"}
LOC = {"dc1": (48.85, 2.35), "dc2": (45.76, 4.84), "dc3": (43.30, 5.37)}
USERS = {"alice": ("10.9.0.0/24", "203.0.113.5"), "bob": ("10.9.1.0/24", "203.0.113.6")}
VMS = {"vm1": ("10.1.0.10/32", "dc1"), "vm2": ("10.1.0.20/32", "dc3")}
STEP = 0.05
TOKEN = "web-s3cret"


class Scenario:
    """User<->xTR RTTs; alice's path through dc1 rises to 300 ms at ``stress_at``."""

    def __init__(self) -> None:
        self.stress_at = float("inf")
        self.hypervisor: Any = None  # where the VMs are now (their probes follow them)

    def offer(self, agent: FakeAgent, now: float) -> None:
        """The last 40 probe rounds of ``agent`` (its DC's xTR) up to ``now``."""
        dc = agent.name
        k = int(now / STEP)
        for i in range(k - 40, k + 1):
            ts = i * STEP
            for user, (eid, rloc) in USERS.items():
                base = {"dc1": 30.0, "dc2": 40.0, "dc3": 80.0}[dc]
                if user == "bob":
                    base = {"dc1": 50.0, "dc2": 40.0, "dc3": 10.0}[dc]
                if user == "alice" and dc == "dc1" and ts >= self.stress_at:
                    base = 300.0
                agent.probe(ts, eid, rloc, base + (i % 3) * 0.5)
            for vm, (eid, host) in VMS.items():
                if self.hypervisor is not None:
                    host = self.hypervisor.vms[vm].dc
                agent.probe(ts, eid, RLOC[host], 0.3 if dc == host else 50.0)


class MemSource(FakeAgent):
    def __init__(self, name: str, sc: Scenario) -> None:
        super().__init__(name, RLOC[name])
        self.sc = sc

    async def fetch(self, cursor: Cursor | None) -> Any:
        self.now = time.time()
        self.sc.offer(self, self.now)
        return self.doc(cursor)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lab_config(tmp: Path, port: int, s1: float = 0.8, **extra: Any) -> Any:
    doc = {
        "dcs": [
            {
                "name": dc,
                "location": {"lat": LOC[dc][0], "lon": LOC[dc][1]},
                "rlocs": [RLOC[dc]],
                "capacity": {"ram_mib": 8192, "cpu": 8},
            }
            for dc in RLOC
        ],
        "vms": [
            {
                "name": vm,
                "eid": eid,
                "memory_mib": 1024,
                "vcpus": 1,
                "host": host,
                "hypervisor_uri": f"memory://{host}",
            }
            for vm, (eid, host) in VMS.items()
        ],
        "users": [
            {
                "name": u,
                "eid": eid,
                "rloc": rloc,
                "vm": "vm1" if u == "alice" else "vm2",
                "sla": {"rtt": {"weight": 0.8, "max": 60}, "jitter": {"weight": 0.2, "max": 10}},
            }
            for u, (eid, rloc) in USERS.items()
        ],
        "timers": {"s1": s1, "s2": s1 / 2, "s3": STEP},
        "policy": {"min_dwell_s": 0, "cooldown_s": 60},
        "drivers": {
            "mapping": {"name": "memory"},
            "hypervisor": {"name": "memory", "options": {"seconds_per_gib": 0.3}},
        },
        "storage": {"url": f"sqlite:///{tmp / 'ctl.db'}"},
        "api": {"listen": f"127.0.0.1:{port}", "token": TOKEN},
        **extra,
    }
    return config_from_dict(doc, tmp)


class Lab:
    """The controller service (API included) running in a background thread."""

    def __init__(self, tmp: Path, manual: bool = False, **extra: Any) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.sc = Scenario()
        cfg = lab_config(tmp, self.port, **extra)
        self.ctl: Controller = build(
            cfg, manual=manual, sources=[MemSource(dc, self.sc) for dc in RLOC]
        )
        self.sc.hypervisor = self.ctl.hypervisor
        self.svc: Service | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.svc = Service(self.ctl, make_server(self.ctl))
            task = asyncio.ensure_future(self.svc.serve())
            while not (self.svc.api_server and self.svc.api_server.started):
                if task.done():
                    break
                await asyncio.sleep(0.02)
            self.ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self.ready.set()

    def __enter__(self) -> Lab:
        self.thread.start()
        assert self.ready.wait(30), "controller did not start"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.loop is not None and self.svc is not None:
            self.loop.call_soon_threadsafe(self.svc.stop.set)
        self.thread.join(30)
        assert not self.thread.is_alive(), "controller did not stop"
        if self.error is not None and exc[0] is None:
            raise self.error

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a coroutine function in the controller's loop and wait for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(fn(*args), self.loop).result(30)
