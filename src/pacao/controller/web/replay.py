"""Replay a simulator run in the web view: users move on the map, entries switch and VMs
migrate as PACAO-2 decided on the run's traces (docs/webview.md).

The run folder is `pacao reproduce --out DIR`'s (``traces.parquet``, ``dcs.csv``,
``results/headline.json``). By default the headline configuration of a use case
is re-simulated (same DCs, bound, S', S'', migration time); ``--n-dcs``,
``--s1``, ``--s2``, ``--bound-ms`` pick another single configuration. A subset
of users can be replayed: PACAO-2 decides each user alone against a fixed bound,
so a user's path is the same as in the full run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacao.controller.web.view import SLA_OK, SLA_VIOLATED, box, geography
from pacao.errors import InputError
from pacao.validate import in_range, integer_in, positive

MAX_USERS = 20_000


@dataclass(frozen=True)
class ReplayOptions:
    use_case: str | None = None
    users: int = 2000
    frames: int = 240
    n_dcs: int | None = None
    s1: float | None = None  # fraction of the residence time (the run's relative S')
    s2: float | None = None  # fraction of S'
    bound_ms: float | None = None
    seed: int = 0


def _read(run: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    if not run.is_dir():
        raise InputError("RUN_DIR", str(run), "a `pacao reproduce --out` folder")
    need = [run / "traces.parquet", run / "dcs.csv", run / "results" / "headline.json"]
    for f in need:
        if not f.is_file():
            raise InputError("RUN_DIR", str(run), f"has no {f.relative_to(run)}")
    try:
        traces = pd.read_parquet(need[0])
        dcs = pd.read_csv(need[1])
        head = json.loads(need[2].read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError("RUN_DIR", str(run), f"unreadable ({exc})") from None
    return traces, dcs, head


class Replay:
    """Per-frame columns of every replayed user, computed once."""

    def __init__(self, run: Path, opts: ReplayOptions) -> None:
        from pacao.sim.engine import prepare, schedule, simulate
        from pacao.sim.network import build_network
        from pacao.sim.policy import Policy, Timing, decision_tables

        traces, dcs, head = _read(run)
        uc = opts.use_case or next(iter(head), None)
        if uc not in head:
            raise InputError("--use-case", uc, f"one of {sorted(head)}")
        h = head[uc]
        n_dcs = opts.n_dcs or int(h["n_dcs"])
        mine = dcs[(dcs.use_case == uc) & (dcs.n_dcs == n_dcs)]
        if mine.empty:
            have = sorted(set(dcs[dcs.use_case == uc].n_dcs.tolist()))
            raise InputError("--n-dcs", n_dcs, f"one of the run's deployments: {have}")
        integer_in("--users", opts.users, 1, MAX_USERS, f"1..{MAX_USERS}")
        integer_in("--frames", opts.frames, 2, 5000, "2..5000")
        s1 = float(opts.s1 if opts.s1 is not None else h["s1_fraction_of_residence"])
        s2 = float(opts.s2 if opts.s2 is not None else h["s2_fraction_of_s1"])
        bound = float(opts.bound_ms if opts.bound_ms is not None else h["bound_ms"])
        for name, v in (("--s1", s1), ("--s2", s2)):
            in_range(name, v, "a fraction in (0, 1]", low=0.0, high=1.0, low_open=True)
        positive("--bound-ms", bound, "milliseconds > 0")
        ids = np.sort(traces["user_id"].unique())
        n_all = len(ids)
        if opts.users < n_all:
            ids = np.sort(np.random.default_rng(opts.seed).choice(ids, opts.users, replace=False))
        sub = traces[traces["user_id"].isin(ids)].sort_values(["user_id", "t"], kind="stable")
        tr = prepare(sub.reset_index(drop=True))
        dlat, dlon = mine["lat"].to_numpy(np.float64), mine["lon"].to_numpy(np.float64)
        net = build_network(tr.pos_lat, tr.pos_lon, dlat, dlon)
        dec = decision_tables(net, bound)
        timing = Timing(s1, s2, True, float(h.get("migration_s", 0.0)))
        out = simulate(tr, schedule(tr, timing), net, dec, Policy.PACAO2)
        rtt = out.rtt_ms
        self.title = (
            f"replay: {run.name}, {uc}, {n_dcs} DCs, bound {bound:.1f} ms, "
            f"S' {s1:g} x residence, S'' {s2:g} x S' ({tr.n_users} of {n_all} users)"
        )
        self.dcs: list[dict[str, Any]] = [
            {"name": str(r.name), "lat": float(r.lat), "lon": float(r.lon), "rlocs": []}
            for r in mine.itertuples()
        ]
        self.names = [f"user {int(u)}" for u in tr.user_ids]
        self.bound = bound
        self.settings = {"s1": s1, "s2": s2, "bound_ms": bound, "n_dcs": n_dcs, "use_case": uc}
        n, f = tr.n_users, opts.frames
        t_end = int(tr.end_ms.max())
        self.t_ms = np.linspace(0, t_end - 1, f).astype(np.int64)
        self.t0_s = tr.t0_s
        users = np.arange(n, dtype=np.int64)
        home = dec.nearest[tr.pos[tr.first]]
        entry = np.empty((f, n), np.int16)
        host = np.empty((f, n), np.int16)
        sla = np.empty((f, n), np.int8)
        lat = np.empty((f, n), np.float32)
        lon = np.empty((f, n), np.float32)
        self.rtt = np.empty((f, n), np.float32)
        if out.changes is not None:
            cu, ct, _, ca, cv = out.changes
        else:
            cu = ct = ca = cv = np.zeros(0, np.int64)
        ckey = cu * tr.stride + ct
        for k, t in enumerate(self.t_ms):
            i = tr.sample_at(users, np.full(n, t))
            i = np.clip(i, tr.first, tr.stop - 1)
            p = tr.pos[i]
            lat[k], lon[k] = tr.pos_lat[p], tr.pos_lon[p]
            # The user's last change at or before t, else the first placement.
            j = np.searchsorted(ckey, users * tr.stride + t, side="right") - 1
            has = (j >= 0) & (cu[np.maximum(j, 0)] == users) if cu.size else np.zeros(n, bool)
            jj = np.maximum(j, 0)
            entry[k] = np.where(has, ca[jj] if cu.size else 0, home)
            host[k] = np.where(has, cv[jj] if cu.size else 0, home)
            self.rtt[k] = rtt[i]
            sla[k] = np.where(rtt[i] <= bound + 1e-9, SLA_OK, SLA_VIOLATED)
        self.cols: dict[str, np.ndarray] = {
            "entry": entry,
            "host": host,
            "sla": sla,
            "lat": np.round(lat, 4),
            "lon": np.round(lon, 4),
        }
        # Decisions as the plans panel shows them: (time ms, user, kind, from, to).
        self.events: list[tuple[int, int, str, int, int]] = []
        prev_a, prev_v = home.copy(), home.copy()
        for u, t, a, v in zip(cu.tolist(), ct.tolist(), ca.tolist(), cv.tolist(), strict=True):
            if v != prev_v[u]:
                self.events.append((t, u, "vm_migration", int(prev_v[u]), v))
            elif a != prev_a[u]:
                self.events.append((t, u, "entry_switch", int(prev_a[u]), a))
            prev_a[u], prev_v[u] = a, v
        self.events.sort()
        self.event_t = np.array([e[0] for e in self.events], np.int64)
        self.switches, self.migrations = out.switches, out.migrations

    @property
    def frames(self) -> int:
        return len(self.t_ms)

    def now(self, k: int) -> float:
        return float(self.t0_s + self.t_ms[k] / 1000.0)

    def users_at(self, k: int, idx: np.ndarray | None = None) -> dict[str, Any]:
        cols = {c: (v[k] if idx is None else v[k][idx]).tolist() for c, v in self.cols.items()}
        return cols

    def plans_at(self, k: int, limit: int = 40) -> list[dict[str, Any]]:
        hi = int(np.searchsorted(self.event_t, self.t_ms[k], side="right"))
        out = []
        for t, u, kind, a, b in reversed(self.events[max(0, hi - limit) : hi]):
            when = self.t0_s + t / 1000.0
            src, dst = self.dcs[a]["name"], self.dcs[b]["name"]
            act = "VmMigration" if kind == "vm_migration" else "EntrySwitch"
            what = f"{src} -> {dst}" if kind == "vm_migration" else f"entry {src} -> {dst}"
            out.append(
                {
                    "id": f"{u}-{t}",
                    "created": when,
                    "updated": when,
                    "user": self.names[u],
                    "kind": kind,
                    "state": "succeeded",
                    "reason": "simulated PACAO-2 decision",
                    "approved_by": "simulation",
                    "actions": [
                        {
                            "kind": act,
                            "state": "succeeded",
                            "what": what,
                            "error": None,
                            "started": when,
                            "finished": when,
                        }
                    ],
                }
            )
        return out

    def counts_at(self, k: int) -> dict[str, int]:
        hi = int(np.searchsorted(self.event_t, self.t_ms[k], side="right"))
        kinds = [e[2] for e in self.events[:hi]]
        return {
            "entry switches": kinds.count("entry_switch"),
            "migrations": kinds.count("vm_migration"),
        }


class ReplayView:
    """A :class:`~pacao.controller.web.view.View` over a :class:`Replay`."""

    mode = "replay"

    def __init__(self, replay: Replay) -> None:
        self.r = replay

    def snapshot(self) -> dict[str, Any]:
        r = self.r
        pts = [(d["lat"], d["lon"]) for d in r.dcs]
        lat, lon = r.cols["lat"], r.cols["lon"]
        pts += [(float(lat.min()), float(lon.min())), (float(lat.max()), float(lon.max()))]
        b = box(pts, pad=0.5)
        return {
            "mode": self.mode,
            "title": r.title,
            "manual": False,
            "dry_run": False,
            "timers": r.settings,
            "dcs": r.dcs,
            "geo": geography(*b),
            "box": b,
            "frames": r.frames,
            "names": r.names,
            **self.frame(0),
        }

    def frame(self, k: int, since: int | None = None) -> dict[str, Any]:
        r = self.r
        if since is None:
            users = {"idx": list(range(len(r.names))), **r.users_at(k)}
        else:
            diff = np.zeros(len(r.names), bool)
            for v in r.cols.values():
                diff |= v[k] != v[since]
            idx = np.flatnonzero(diff)
            users = {"idx": idx.tolist(), **r.users_at(k, idx)}
        return {
            "now": r.now(k),
            "frame": k,
            "users": users,
            "plans": r.plans_at(k),
            "counts": r.counts_at(k),
            "reverts": [],
        }

    def tick(self) -> dict[str, Any]:
        return self.frame(0)

    def user_detail(self, name: str, frame: int | None = None) -> dict[str, Any] | None:
        r = self.r
        try:
            u = r.names.index(name)
        except ValueError:
            return None
        k = min(max(0, frame or 0), r.frames - 1)
        lo = max(0, k - 40)
        series = [
            {"ts": r.now(j), "rtt_ms": float(r.rtt[j, u]), "jitter_ms": None, "availability": 1.0}
            for j in range(lo, k + 1)
        ]
        dc = r.dcs
        return {
            "name": name,
            "vm": f"VM of {name}",
            "state": {
                "entry": dc[int(r.cols["entry"][k, u])]["name"],
                "host": dc[int(r.cols["host"][k, u])]["name"],
            },
            "entry_dc": dc[int(r.cols["entry"][k, u])]["name"],
            "sla_met": bool(r.cols["sla"][k, u] == SLA_OK),
            "sla": {"rtt": {"weight": 1.0, "max": round(r.bound, 3)}},
            "rloc_dc": {},
            "windows": {"path in use": series},
            "priorities": None,
            "timers_text": (
                f"S' = {r.settings['s1']:g} x residence time, S'' = {r.settings['s2']:g} x S'"
            ),
            "now": r.now(k),
        }

    def routes(self, router: Any, guarded: list[Any]) -> None:
        from pacao.controller.web.replay_api import add_replay_routes

        add_replay_routes(router, self, guarded)


def serve_replay(replay: Replay, token: str, host: str, port: int) -> None:
    """Run the replay's web server until interrupted."""
    import uvicorn

    from pacao.controller.web.replay_api import replay_app

    app = replay_app(ReplayView(replay), token)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
