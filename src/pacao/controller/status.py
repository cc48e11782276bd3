"""`pacao controller status`: the web view's picture in a terminal.

Asks the running controller's API first (it alone knows the SLA state of the
last window); when it does not answer, reads the database (entry, VM location
and plans are persisted there), and says so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pacao.controller.config import ControllerConfig
from pacao.controller.lifecycle import UNFINISHED
from pacao.controller.state import key
from pacao.controller.storage import Store
from pacao.errors import InputError


def _when(t: Any) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%S")


def gather(cfg: ControllerConfig, url: str | None = None, timeout_s: float = 2.0) -> dict[str, Any]:
    """Users (entry, VM DC, SLA) and open plans: from the API, else from the database."""
    host, port = cfg.listen()
    base = url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    owner = cfg.rloc_owner()
    source, note, sla = "api", "", {}
    try:
        token = cfg.api_token()
        r = httpx.get(
            f"{base}/ui/api/snapshot",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )
        if r.status_code != 200:
            raise httpx.HTTPError(f"HTTP {r.status_code}")
        snap = r.json()
        code = {0: "met", 1: "violated", -1: "unknown"}
        sla = {n: code[int(s)] for n, s in zip(snap["names"], snap["users"]["sla"], strict=True)}
    except (httpx.HTTPError, InputError, ValueError, KeyError) as exc:
        source, note = "database", f"controller API at {base} not reachable ({exc})"
    store = Store(cfg.storage.url)
    try:
        users = []
        stored = store.get_states([key(u.name) for u in cfg.users])
        vms = cfg.vm_index()
        for u in cfg.users:
            st = stored.get(key(u.name)) or {}
            vm = vms[u.vm]
            entry = st.get("entry", cfg.dc(vm.host).rlocs[0])
            users.append(
                {
                    "user": u.name,
                    "entry_rloc": entry,
                    "entry_dc": owner.get(entry),
                    "vm": vm.name,
                    "vm_dc": st.get("host", vm.host),
                    "sla": sla.get(u.name, "?"),
                    "last_switch": st.get("last_switch"),
                    "last_migration": st.get("last_migration"),
                }
            )
        plans = store.plans(state=UNFINISHED, limit=1000)
        counts = store.plan_counts()
    finally:
        store.close()
    return {"source": source, "note": note, "users": users, "plans": plans, "counts": counts}


def render(doc: dict[str, Any], console: Console, limit: int = 200) -> None:
    users = sorted(doc["users"], key=lambda u: (u["sla"] != "violated", u["user"]))
    t = Table(title=f"users ({len(users)}; from the {doc['source']})")
    for col in ("user", "entry", "VM", "SLA", "last switch", "last migration"):
        t.add_column(col)
    for u in users[:limit]:
        t.add_row(
            escape(u["user"]),
            f"{u['entry_dc']} ({u['entry_rloc']})",
            f"{u['vm']} @ {u['vm_dc']}",
            u["sla"],
            _when(u["last_switch"]),
            _when(u["last_migration"]),
        )
    console.print(t)
    if len(users) > limit:
        console.print(f"... {len(users) - limit} more users (--json lists all)")
    if doc["note"]:
        console.print(f"note: {doc['note']}; SLA state unknown (?)")
    # One plan per line (its full id: `pacao controller approve` needs it), actions below.
    console.print(f"pending and running plans ({len(doc['plans'])})", style="bold")
    for pl in doc["plans"]:
        console.print(
            escape(
                f"{pl['id']}  {pl['kind']}  {pl['user']}  {pl['state']}  {_when(pl['created'])}"
            ),
            soft_wrap=True,
        )
        for a in pl["actions"]:
            pr = a["params"]
            what = (
                f"{pr['vm']} {pr['src']} -> {pr['dst']}"
                if a["kind"] == "VmMigration"
                else f"entry {pr['rloc']}"
            )
            console.print(escape(f"    {a['kind']} {what} [{a['state']}]"), soft_wrap=True)
    c = doc["counts"]
    console.print("plans: " + ", ".join(f"{k} {v}" for k, v in c.items() if v) or "plans: none")
