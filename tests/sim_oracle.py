"""A slow, literal simulator of the online procedure, written from the paper and
docs/simulation.md without the engine's arrays, pruning or tables: the reference
the vectorised engine is tested against.

Every check of the controller is simulated (no pruning), events are processed in
time order one user at a time, decisions are plain argmins over Python lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

R_EARTH = 6371.0088  # IUGG mean radius, as pacao.sim.geography


def km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R_EARTH * math.asin(math.sqrt(min(1.0, max(0.0, h))))


_KM: dict[tuple[tuple[float, float], tuple[float, float]], float] = {}


def km_cached(p: tuple[float, float], q: tuple[float, float]) -> float:
    """km() remembered per pair of points (users sit at LAC centres: few distinct pairs)."""
    key = (p, q)
    if key not in _KM:
        if len(_KM) > 1_000_000:
            _KM.clear()
        _KM[key] = km(*p, *q)
    return _KM[key]


MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """The splitmix64 finaliser on Python ints (the published algorithm, written again)."""
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def drawn_dc(user_id: int, seed: int, use_case: str, n_dcs: int) -> int:
    """docs/simulation.md's legacy VM draw: splitmix64 chain over (seed, use case, DC count,
    user id), modulo the DC count."""
    code = {"france_isp": 1, "europe_ott": 2}[use_case]
    key = splitmix64(splitmix64(seed & MASK) ^ (code << 16 | n_dcs))
    return splitmix64(splitmix64((user_id & MASK) ^ key)) % n_dcs


@dataclass
class World:
    """``metric``: what step 1 ranks entries by, "path" (user -> entry -> VM) or
    "user-rloc" (user <-> entry only); the SLA check is on the path either way."""

    dcs: list[tuple[float, float]]
    bound: float
    metric: str = "path"

    def ud(self, pos: tuple[float, float], d: int) -> float:
        return 40.0 + 3.0 * km_cached(pos, self.dcs[d]) / 100.0

    def dd(self, a: int, v: int) -> float:
        return 0.0 if a == v else 3.0 * km_cached(self.dcs[a], self.dcs[v]) / 100.0

    def path(self, pos: tuple[float, float], a: int, v: int) -> float:
        return self.ud(pos, a) + self.dd(a, v)

    def violated(self, rtt: float) -> bool:
        return rtt > self.bound * (1 + 2e-9)

    def rank(self, pos: tuple[float, float], a: int, v: int) -> float:
        return self.ud(pos, a) if self.metric == "user-rloc" else self.path(pos, a, v)

    def best_entry(self, pos: tuple[float, float], v: int) -> int:
        vals = [self.rank(pos, a, v) for a in range(len(self.dcs))]
        return vals.index(min(vals))

    def placement(self, pos: tuple[float, float]) -> tuple[int, int]:
        vals = [self.path(pos, self.best_entry(pos, d), d) for d in range(len(self.dcs))]
        d = vals.index(min(vals))
        return self.best_entry(pos, d), d

    def nearest(self, pos: tuple[float, float]) -> int:
        vals = [km(*pos, *dc) for dc in self.dcs]
        return vals.index(min(vals))


def simulate_user(
    world: World,
    samples: list[tuple[int, float, float, int]],
    policy: str,
    s1: float,
    s2: float,
    relative: bool,
    step_s: int,
    t0_s: int = 0,
    migration_s: float = 0.0,
    start: tuple[int, int] | None = None,
) -> list[float]:
    """Per-sample time-averaged RTT of one user. samples: (t s, lat, lon, lac); ``start``
    (entry, VM): the legacy placement, default both at the DC nearest the first sample."""
    t = [(x[0] - t0_s) * 1000 for x in samples]
    pos = [(x[1], x[2]) for x in samples]
    lac = [x[3] for x in samples]
    end = [*t[1:], t[-1] + step_s * 1000]
    user_end = end[-1]

    def sample_at(x: int) -> int:
        i = 0
        while i + 1 < len(t) and t[i + 1] <= x:
            i += 1
        return i

    # Every check of the controller, with its step-2 time.
    checks: list[tuple[int, int]] = []
    if relative:
        i = 0
        while i < len(t):
            j = i
            while j + 1 < len(t) and lac[j + 1] == lac[i]:
                j += 1
            e, r = t[i], end[j] - t[i]
            step = s1 * float(r)
            k = 1
            while e + round(k * step) < e + r:
                c = e + round(k * step)
                checks.append((c, c + max(round(s2 * step), 1)))
                k += 1
            i = j + 1
        valid = []
        for n, (c, c2) in enumerate(checks):
            nxt = checks[n + 1][0] if n + 1 < len(checks) else None
            valid.append((c, c2 if (nxt is None or c2 < nxt) and c2 < user_end else -1))
        checks = valid
    else:
        s1_ms, s2_ms = max(round(s1 * 1000), 1), max(round(s2 * 1000), 1)
        c = t[0] + s1_ms
        while c < user_end:
            checks.append((c, c + s2_ms if c + s2_ms < user_end else -1))
            c += s1_ms

    home = world.nearest(pos[0])
    a0, v0 = start if start is not None else (home, home)
    a, v = a0, v0
    changes: list[tuple[int, int, int]] = []
    pending: tuple[int, int, int] | None = None  # (done, entry, vm)
    mig_ms = round(migration_s * 1000)

    def finish(at: int) -> None:
        nonlocal a, v, pending
        if pending is not None and pending[0] <= at:
            a, v = pending[1], pending[2]
            changes.append(pending)
            pending = None

    for c, c2 in checks:
        if policy == "legacy":
            break
        if policy == "pacao2":
            finish(c)
        p = pos[sample_at(c)]
        if not world.violated(world.path(p, a, v)):
            continue
        na = world.best_entry(p, v)
        if world.rank(p, na, v) < world.rank(p, a, v) * (1 - 1e-9):
            a = na
            changes.append((c, a, v))
        if policy != "pacao2" or c2 < 0:
            continue
        finish(c2)
        if pending is not None:
            continue
        p = pos[sample_at(c2)]
        cur = world.path(p, a, v)
        if not world.violated(cur):
            continue
        pa, pv = world.placement(p)
        # Step 2 migrates the VM: a placement at the VM's own DC changes nothing now
        # (a better entry for it waits for the next S').
        if pv == v or not world.path(p, pa, pv) < cur * (1 - 1e-9):
            continue
        if pv != v and mig_ms > 0:
            pending = (c2 + mig_ms, pa, pv)
        else:
            a, v = pa, pv
            changes.append((c2, a, v))
    if pending is not None:
        changes.append(pending)

    out: list[float] = []
    for i in range(len(t)):
        sa, sv = a0, v0
        for when, ca, cv in changes:
            if when <= t[i]:
                sa, sv = ca, cv
        acc, last = 0.0, t[i]
        for when, ca, cv in changes:
            if t[i] < when < end[i]:
                acc += world.path(pos[i], sa, sv) * (when - last)
                sa, sv, last = ca, cv, when
        acc += world.path(pos[i], sa, sv) * (end[i] - last)
        out.append(acc / (end[i] - t[i]))
    return out
