"""From a monitoring window's statistics to the arrays the decision functions take.

:class:`Windows` holds the index the arrays are laid out in (users in config order,
candidate RLOCs in name order, DCs in config order) and the per-user SLA and per-link
figures derived from the config; a reload rebuilds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pacao.controller.config import CRITERIA as UNITS
from pacao.controller.config import ControllerConfig
from pacao.controller.monitoring import USER_XTR, XTR_VM, WindowStat
from pacao.controller.state import UserStates
from pacao.decision import Sla, combine_paths

#: The measured criteria (rtt, jitter, loss), in the order of the arrays' last axis.
CRITERIA = tuple(UNITS)


@dataclass(frozen=True)
class WindowArrays:
    """Metrics of one window, (users, RLOCs, criteria) or (users, RLOCs)."""

    sub: np.ndarray  # user <-> entry xTR sublink
    sub_ok: np.ndarray
    through: np.ndarray  # user -> entry xTR -> VM, the path through each entry
    through_ok: np.ndarray
    #: measured (answered or lost) through each entry: not usable but known = down
    through_known: np.ndarray


class Windows:
    """The arrays' layout and the config figures the decisions read with them."""

    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        owner = cfg.rloc_owner()
        self.rlocs = sorted(owner)  # candidate order = name order = the kernel's tie-break
        self.dcs = [d.name for d in cfg.dcs]
        self.rloc_dc = np.array([self.dcs.index(owner[r]) for r in self.rlocs], dtype=np.int64)
        self.users = list(cfg.users)
        n, k = len(self.users), len(CRITERIA)
        w, b = np.zeros((n, k)), np.full((n, k), np.inf)
        for i, u in enumerate(self.users):
            for j, name in enumerate(CRITERIA):
                if name in u.sla:
                    w[i, j], b[i, j] = u.sla[name].weight, u.sla[name].max
        self.sla = Sla(w, b)
        self.bandwidth = np.full((len(self.dcs), len(self.dcs)), cfg.policy.bandwidth_mbps)
        self.inter_rtt: dict[tuple[int, int], float] = {}
        for link in cfg.policy.links:
            a, c = self.dcs.index(link.a), self.dcs.index(link.b)
            if link.bandwidth_mbps is not None:
                self.bandwidth[a, c] = self.bandwidth[c, a] = link.bandwidth_mbps
            if link.rtt_ms is not None:
                self.inter_rtt[(a, c)] = self.inter_rtt[(c, a)] = link.rtt_ms

    def arrays(self, stats: Sequence[WindowStat], state: UserStates) -> WindowArrays:
        """Sublink and through-entry metrics (users, RLOCs, criteria) from window stats."""
        n, c, k = len(self.users), len(self.rlocs), len(CRITERIA)
        uidx = {u.name: i for i, u in enumerate(self.users)}
        ridx = {r: j for j, r in enumerate(self.rlocs)}
        sub = np.full((n, c, k), np.nan)
        seen = np.zeros((n, c), dtype=bool)  # a user<->xTR aggregate exists (even all lost)
        xv: dict[tuple[str, int], list[tuple[str, np.ndarray]]] = {}
        for s in stats:
            vals = None
            if s.rtt_ms is not None and s.availability > 0:
                vals = np.array([s.rtt_ms, s.jitter_ms or 0.0, 1.0 - s.availability])
            if s.path == USER_XTR and s.subject in uidx and s.rloc in ridx:
                seen[uidx[s.subject], ridx[s.rloc]] = True
                if vals is not None:
                    sub[uidx[s.subject], ridx[s.rloc]] = vals
            elif s.path == XTR_VM and vals is not None:
                xv.setdefault((s.subject, self.dcs.index(s.xtr)), []).append((s.peer, vals))
        sub_ok = np.isfinite(sub).all(axis=-1)
        leg = np.full((n, c, k), np.nan)  # entry xTR <-> VM
        for i, u in enumerate(self.users):
            host = self.dcs.index(state[u.name].host)
            # A direct probe of the VM (peer "") or a probe of its host DC's locator.
            toward = {""} | set(self.cfg.dcs[host].rlocs)
            for j in range(c):
                d = int(self.rloc_dc[j])
                got = [v for peer, v in xv.get((u.vm, d), []) if peer in toward]
                if got:
                    leg[i, j] = got[0]
                elif d == host:
                    leg[i, j] = 0.0
                elif (d, host) in self.inter_rtt:
                    leg[i, j] = [self.inter_rtt[(d, host)], 0.0, 0.0]
        through = combine_paths(sub, leg, CRITERIA)
        return WindowArrays(
            sub=sub,
            sub_ok=sub_ok,
            through=through,
            through_ok=np.asarray(np.isfinite(through).all(axis=-1)),
            through_known=seen & np.isfinite(leg).all(axis=-1),
        )

    def current_idx(self, state: UserStates) -> np.ndarray:
        """Each user's current entry as an RLOC column (-1: not a candidate any more)."""
        ridx = {r: j for j, r in enumerate(self.rlocs)}
        return np.array([ridx.get(state[u.name].entry, -1) for u in self.users], dtype=np.int64)

    def user_values(self, i: int, row: np.ndarray) -> dict[str, Any]:
        """User ``i``'s metrics through each entry, for a plan's stored inputs."""
        u = self.users[i]
        out: dict[str, Any] = {}
        for j, r in enumerate(self.rlocs):
            v = row[j]
            out[r] = (
                None
                if not np.isfinite(v).all()
                else {name: round(float(v[CRITERIA.index(name)]), 6) for name in u.sla}
            )
        return out
