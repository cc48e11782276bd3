"""What the web view shows, as JSON: a snapshot, then per-tick differences.

Users travel as columns (names, entry DC index, VM DC index, SLA state, and in a
replay the position), so 10,000 users cost a few hundred kB once and only the
users that changed afterwards. ``LiveView`` reads a running controller;
:mod:`pacao.controller.web.replay` gives the same shape from a simulator run.
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from pacao.controller.lifecycle import ActionState

if TYPE_CHECKING:
    from pacao.controller.service import Controller

#: SLA state codes in ``users.sla``.
SLA_OK, SLA_VIOLATED, SLA_UNKNOWN = 0, 1, -1


class View(Protocol):
    mode: str

    def snapshot(self) -> dict[str, Any]: ...

    def tick(self) -> dict[str, Any]:
        """The changing part (users' columns, plans, clock); diffed by :func:`diff`."""
        ...

    def user_detail(self, name: str, frame: int | None = None) -> dict[str, Any] | None:
        """One user's panel (``frame``: the replay frame shown)."""
        ...


def diff(prev: dict[str, Any] | None, cur: dict[str, Any]) -> dict[str, Any] | None:
    """Only what changed between two ticks (None: nothing)."""
    if prev is None:
        return cur
    out: dict[str, Any] = {}
    pu, cu = prev["users"], cur["users"]
    cols = [k for k in cu if k != "names"]
    changed = [i for i in range(len(cu["entry"])) if any(pu[k][i] != cu[k][i] for k in cols)]
    if changed:
        out["users"] = {"idx": changed, **{k: [cu[k][i] for i in changed] for k in cols}}
    for k, v in cur.items():
        if k not in ("users", "now") and prev.get(k) != v:
            out[k] = v
    if not out:
        return None
    out["now"] = cur["now"]
    return out


@lru_cache(maxsize=8)
def geography(
    lat0: float, lat1: float, lon0: float, lon1: float, limit: int = 4000
) -> list[list[float]]:
    """Shipped towns and cities inside a box, as [lat, lon]: the map's background.

    The largest places first, so a limit keeps the shape of the country.
    """
    rows: list[tuple[float, float, float]] = []
    for name in ("fr_towns.csv", "eu_cities.csv"):
        with resources.files("pacao.data").joinpath(name).open(encoding="utf-8") as f:
            for r in csv.DictReader(f):
                la, lo = float(r["lat"]), float(r["lon"])
                if lat0 <= la <= lat1 and lon0 <= lo <= lon1:
                    rows.append((float(r["population"] or 0), la, lo))
    rows.sort(reverse=True)
    return [[round(la, 3), round(lo, 3)] for _, la, lo in rows[:limit]]


def box(points: list[tuple[float, float]], pad: float = 1.0) -> tuple[float, float, float, float]:
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    return (
        math.floor(min(lats) - pad),
        math.ceil(max(lats) + pad),
        math.floor(min(lons) - pad),
        math.ceil(max(lons) + pad),
    )


def _plan_doc(p: dict[str, Any]) -> dict[str, Any]:
    acts = []
    for a in p["actions"]:
        pr = a["params"]
        what = (
            f"{pr.get('vm')}: {pr.get('src')} -> {pr.get('dst')}"
            if a["kind"] == "VmMigration"
            else f"{pr.get('vm_eid')} via {pr.get('rloc')}"
        )
        if "user" in pr:
            what = f"{pr['user']}: {what}"
        acts.append(
            {
                "kind": a["kind"],
                "state": a["state"],
                "what": what,
                "error": a["error"],
                "started": a["started"],
                "finished": a["finished"],
            }
        )
    return {
        "id": p["id"],
        "created": p["created"],
        "updated": p["updated"],
        "user": p["user"],
        "kind": p["kind"],
        "state": p["state"],
        "reason": p["reason"],
        "approved_by": p["approved_by"],
        "actions": acts,
    }


class LiveView:
    """The running controller: config, in-memory user state, stored plans."""

    mode = "live"

    def __init__(self, ctl: Controller, plan_limit: int = 60) -> None:
        self.ctl = ctl
        self.plan_limit = plan_limit
        cfg = ctl.cfg
        self.dcs = [d.name for d in cfg.dcs]
        self.owner = cfg.rloc_owner()
        self.names = [u.name for u in cfg.users]

    def snapshot(self) -> dict[str, Any]:
        cfg = self.ctl.cfg
        pts = [(d.location.lat, d.location.lon) for d in cfg.dcs]
        b = box(pts, pad=2.0)
        return {
            "mode": self.mode,
            "title": "pacao controller",
            "manual": bool(self.ctl.manual),
            "dry_run": bool(self.ctl.dry_run),
            "timers": cfg.timers.model_dump(),
            "dcs": [
                {"name": d.name, "lat": d.location.lat, "lon": d.location.lon, "rlocs": d.rlocs}
                for d in cfg.dcs
            ],
            "geo": geography(*b),
            "box": b,
            **self.tick(),
            "names": self.names,
        }

    def tick(self) -> dict[str, Any]:
        ctl = self.ctl
        idx = {d: i for i, d in enumerate(self.dcs)}
        entry, host, sla = [], [], []
        for n in self.names:
            st = ctl.state.get(n)
            entry.append(-1 if st is None else idx.get(self.owner.get(st.entry, ""), -1))
            host.append(-1 if st is None else idx.get(st.host, -1))
            s = ctl.planner.sla_now.get(n)
            sla.append(SLA_UNKNOWN if s is None else (SLA_OK if s else SLA_VIOLATED))
        rows = ctl.store.plans(limit=self.plan_limit)
        plans = [_plan_doc(p) for p in rows]
        reverts = [
            {
                "plan": p["id"],
                "user": p["user"],
                "kind": a["kind"],
                "what": a["what"],
                "at": a["finished"],
            }
            for p in plans
            for a in p["actions"]
            if a["state"] == ActionState.REVERTED
        ]
        return {
            "now": ctl.clock.now(),
            "users": {"entry": entry, "host": host, "sla": sla},
            "plans": plans,
            "counts": ctl.store.plan_counts(),
            "reverts": reverts,
            "step2_due": {k: round(v, 3) for k, v in ctl.planner.step2_due.items()},
        }

    def user_detail(self, name: str, frame: int | None = None) -> dict[str, Any] | None:
        ctl = self.ctl
        user = next((u for u in ctl.cfg.users if u.name == name), None)
        if user is None:
            return None
        n_rloc = sum(len(d.rlocs) for d in ctl.cfg.dcs)
        rows = ctl.store.measurements(subject=name, kind="window", limit=12 * n_rloc)
        series: dict[str, list[dict[str, Any]]] = {}
        for r in reversed(rows):
            if r["path"] != "user-xtr":
                continue
            series.setdefault(r["rloc"], []).append(
                {
                    "ts": r["ts"],
                    "rtt_ms": r["rtt_ms"],
                    "jitter_ms": r["jitter_ms"],
                    "availability": r["availability"],
                }
            )
        prio, prio_at = None, None
        for p in ctl.store.plans(user=name, limit=50):
            for a in p["actions"]:
                if a["kind"] == "EntrySwitch" and a["state"] == ActionState.SUCCEEDED:
                    prio, prio_at = a["params"]["priorities"], a["finished"]
                    break
            if prio is not None:
                break
        st = ctl.state.get(name)
        last_windows = [s.end for s in ctl.planner.last_stats]
        return {
            "name": name,
            "vm": user.vm,
            "eid": user.eid,
            "rloc": user.rloc,
            "sla": {k: v.model_dump() for k, v in user.sla.items()},
            "state": {} if st is None else st.to_json(),
            "entry_dc": self.owner.get("" if st is None else st.entry),
            "sla_met": ctl.planner.sla_now.get(name),
            "rloc_dc": dict(self.owner),
            "windows": series,
            "priorities": prio,
            "priorities_set_at": prio_at,
            "timers": ctl.cfg.timers.model_dump(),
            "last_window_end": max(last_windows) if last_windows else None,
            "step2_due": ctl.planner.step2_due.get(name),
            "now": ctl.clock.now(),
        }
