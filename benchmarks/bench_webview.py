"""Web view cost with 10,000 users x 64 DCs: server side (snapshot, per-tick diff) and
in Debian's headless Chromium (applying an update, redrawing map, tables and plans).

A real controller object (memory drivers, SQLite) serves the real routes; a thread
changes 5 % of the users' entry, VM DC or SLA state every 0.5 s while the page
follows the event stream. Figures are printed, not asserted.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from webview_support import ARGS, CHROMIUM  # the browser tests launch it alike

USERS, DCS, CHANGED = 10_000, 64, 0.05


def controller(tmp: Path) -> Any:
    from pacao.controller.app import build
    from pacao.controller.config import config_from_dict
    from pacao.controller.storage import Store

    rng = random.Random(1)
    dcs = [
        {
            "name": f"dc{i}",
            "location": {"lat": rng.uniform(43.0, 50.5), "lon": rng.uniform(-1.5, 7.5)},
            "rlocs": [f"10.200.{i}.1"],
            "capacity": {"ram_mib": 10**7, "cpu": 10**5},
        }
        for i in range(DCS)
    ]
    vms, users = [], []
    for u in range(USERS):
        host = f"dc{rng.randrange(DCS)}"
        vms.append(
            {
                "name": f"vm{u}",
                "eid": f"10.{u // 65536 + 1}.{u // 256 % 256}.{u % 256}/32",
                "memory_mib": 512,
                "vcpus": 1,
                "host": host,
                "hypervisor_uri": "memory://",
            }
        )
        users.append(
            {
                "name": f"user{u}",
                "rloc": f"172.{16 + u // 65536}.{u // 256 % 256}.{u % 256}",
                "vm": f"vm{u}",
                "sla": {"rtt": {"weight": 1.0, "max": 40}},
            }
        )
    cfg = config_from_dict(
        {
            "dcs": dcs,
            "vms": vms,
            "users": users,
            "timers": {"s1": 10, "s2": 5, "s3": 1},
            "drivers": {"mapping": {"name": "memory"}, "hypervisor": {"name": "memory"}},
            "storage": {"url": f"sqlite:///{tmp / 'bench.db'}"},
            "api": {"token": "bench"},
        }
    )
    ctl = build(cfg, sources=[])
    ctl.load_state()
    for u in ctl.cfg.users:
        ctl.planner.sla_now[u.name] = True
    store: Store = ctl.store
    for k in range(60):  # a full plans panel
        store.create_plan(
            f"user{k}",
            "entry_switch",
            "bench",
            {},
            {},
            [("EntrySwitch", {"vm_eid": "x", "rloc": "10.200.1.1", "priorities": {}})],
        )
    return ctl


def mutate(ctl: Any, rng: random.Random) -> None:
    rlocs = [d.rlocs[0] for d in ctl.cfg.dcs]
    for n in rng.sample([u.name for u in ctl.cfg.users], int(USERS * CHANGED)):
        st = ctl.state[n]
        what = rng.randrange(3)
        if what == 0:
            ctl.state[n] = replace(st, entry=rng.choice(rlocs))
        elif what == 1:
            ctl.state[n] = replace(st, host=f"dc{rng.randrange(DCS)}")
        if what == 2:
            ctl.planner.sla_now[n] = not ctl.planner.sla_now[n]


def server_side(ctl: Any) -> dict[str, float]:
    from pacao.controller.web import _json
    from pacao.controller.web.view import LiveView, diff

    view = LiveView(ctl)
    t = []
    for _ in range(5):
        t0 = time.perf_counter()
        snap = _json(view.snapshot())
        t.append(time.perf_counter() - t0)
    rng = random.Random(2)
    prev = view.tick()
    ticks, sizes = [], []
    for _ in range(20):
        mutate(ctl, rng)
        t0 = time.perf_counter()
        cur = view.tick()
        d = diff(prev, cur)
        body = _json(d)
        ticks.append(time.perf_counter() - t0)
        sizes.append(len(body))
        prev = cur
    return {
        "snapshot_ms": 1000 * statistics.median(t),
        "snapshot_kb": len(snap) / 1024,
        "tick_ms": 1000 * statistics.median(ticks),
        "update_kb": statistics.median(sizes) / 1024,
    }


def browser_side(ctl: Any, seconds: float = 12.0) -> dict[str, float]:
    import uvicorn
    from fastapi import FastAPI
    from playwright.sync_api import sync_playwright

    from pacao.controller.api import create_app

    app: FastAPI = create_app(ctl, "bench")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    while not srv.started:
        time.sleep(0.05)
    stop = threading.Event()

    def churn() -> None:
        rng = random.Random(3)
        while not stop.wait(0.5):
            mutate(ctl, rng)

    threading.Thread(target=churn, daemon=True).start()
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = b.new_page(viewport={"width": 1400, "height": 950})
            page.goto(f"http://127.0.0.1:{port}/ui/")
            t0 = time.perf_counter()
            page.fill("#token", "bench")
            page.click("#login-button")
            page.wait_for_function("() => window.pacao.stats.renders > 0", timeout=60_000)
            first = time.perf_counter() - t0
            page.evaluate("() => { const s = window.pacao.stats; for (const k in s) s[k] = 0; }")
            time.sleep(seconds)
            st = page.evaluate("() => Object.assign({}, window.pacao.stats)")
            full = page.evaluate(
                "() => { const r = []; for (let i = 0; i < 10; i++) {"
                " const t = performance.now(); window.pacao.render();"
                " r.push(performance.now() - t); } r.sort((a, b) => a - b); return r[5]; }"
            )
            b.close()
    finally:
        stop.set()
        srv.should_exit = True
        th.join(10)
    return {
        "first_render_s": first,
        "updates": st["updates"],
        "apply_ms": st["applyMs"] / max(1, st["updates"]),
        "renders": st["renders"],
        "render_ms": st["drawMs"] / max(1, st["renders"]),
        "map_ms": st["mapMs"] / max(1, st["renders"]),
        "render_median_ms": full,
    }


def main() -> int:
    import os

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        ctl = controller(Path(d))
        took = time.perf_counter() - t0
        print(f"controller with {USERS} users x {DCS} DCs built in {took:.1f} s")
        s = server_side(ctl)
        print(
            f"server: snapshot {s['snapshot_ms']:.0f} ms ({s['snapshot_kb']:.0f} kB JSON); "
            f"tick + diff with {CHANGED:.0%} of users changed {s['tick_ms']:.1f} ms "
            f"({s['update_kb']:.0f} kB per update), medians"
        )
        if not Path(CHROMIUM).exists():
            print(f"{CHROMIUM} missing: browser part not measured", file=sys.stderr)
            return 1
        b = browser_side(ctl)
        print(
            f"chromium: login to first drawing {b['first_render_s']:.2f} s; "
            f"{b['updates']} updates applied, {b['apply_ms']:.2f} ms each; "
            f"{b['renders']} redraws (map + tables + plans), {b['render_ms']:.1f} ms each, "
            f"of which the map {b['map_ms']:.1f} ms "
            f"(a forced redraw: median {b['render_median_ms']:.1f} ms)"
        )
        print(json.dumps({"server": s, "browser": b}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
