"""Trace-driven simulation of the online procedure (formulation.md section 2).

Time is continuous; a user's position is the one of its latest sample (held for
the sample's interval). The controller checks the user's path every S' (step 1:
SLA violated -> RLOC switching); S'' after a step 1 that switched, it checks again
(step 2: still violated -> VM placement, the migration completes after the
migration time). A sample's RTT is the time average of the user<->VM RTT over its
interval, so a decision taken inside a 6-minute sample counts for the part of
the sample after it.

Vectorised over users: each round processes the k-th controller cycle of every
user at once. Checks that cannot change anything are not simulated: while a
user stays at the same position, a check after a completed cycle finds the same
path and takes the same decisions (see docs/simulation.md), so only the first
check in each run of samples at one position is kept, plus the first check
after each possible migration completion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pacao.errors import InputError
from pacao.sim.network import Network
from pacao.sim.policy import Decisions, Policy, Timing
from pacao.validate import positive

I64 = NDArray[np.int64]
I32 = NDArray[np.int32]
F64 = NDArray[np.float64]
NONE = np.int64(-1)


@dataclass(frozen=True)
class Trajectories:
    """Traces as sorted arrays (by user, then time) with their derived structure.

    Times are integer milliseconds from the earliest sample. A *run* is a maximal
    stretch of a user's samples at one position (and LAC); a *visit* a maximal
    stretch in one LAC, whose duration is the residence time of relative S'.
    """

    user: I64
    user_ids: I64
    t_ms: I64
    end_ms: I64
    pos: I32
    pos_lat: F64
    pos_lon: F64
    pos_weight: I64
    first: I64
    stop: I64
    run_start: I64
    visit_start: I64
    stride: int
    t0_s: int
    skey: I64

    @property
    def n_samples(self) -> int:
        return int(self.t_ms.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.first.shape[0])

    def key(self, user: I64, t_ms: I64) -> I64:
        out: I64 = user * self.stride + t_ms
        return out

    def sample_at(self, user: I64, t_ms: I64) -> I64:
        """Index of the user's sample whose interval holds t (its last one after the end)."""
        out: I64 = np.searchsorted(self.skey, self.key(user, t_ms), side="right") - 1
        return out


def prepare(traces: pd.DataFrame, step_s: int | None = None) -> Trajectories:
    """Index a trace table (user_id, t [s], lat, lon, lac), sorted by (user_id, t)."""
    need = ["user_id", "t", "lat", "lon", "lac"]
    missing = [c for c in need if c not in traces.columns]
    if missing:
        raise InputError("traces", missing, f"missing columns; required: {need}")
    if len(traces) == 0:
        raise InputError("traces", 0, "at least one sample")
    uid = traces["user_id"].to_numpy(np.int64)
    t = traces["t"].to_numpy(np.int64)
    lat = traces["lat"].to_numpy(np.float64)
    lon = traces["lon"].to_numpy(np.float64)
    lac = traces["lac"].to_numpy(np.int64)
    new_user = np.empty(uid.shape, dtype=bool)
    new_user[0] = True
    np.not_equal(uid[1:], uid[:-1], out=new_user[1:])
    if np.any(uid[1:] < uid[:-1]):
        raise InputError("traces.user_id", "unsorted", "sort by (user_id, t)")
    if np.any((t[1:] <= t[:-1]) & ~new_user[1:]):
        raise InputError("traces.t", "unsorted", "strictly increasing times within a user")
    if not (np.all(np.abs(lat) <= 90) and np.all(np.abs(lon) <= 180)):
        raise InputError("traces.lat/lon", "out of range", "|lat| <= 90, |lon| <= 180")
    user = np.cumsum(new_user) - 1
    first = np.flatnonzero(new_user).astype(np.int64)
    stop = np.append(first[1:], len(t)).astype(np.int64)
    gaps = np.diff(t)[~new_user[1:]]
    if step_s is None:
        step_s = int(np.median(gaps)) if gaps.size else 360
    positive("step_s", step_s, "a sampling step > 0 s")
    t0_s = int(t.min())
    t_ms = (t - t0_s) * 1000
    end_ms = np.empty_like(t_ms)
    end_ms[:-1] = t_ms[1:]
    end_ms[stop - 1] = t_ms[stop - 1] + step_s * 1000
    # Distinct positions: factorise lat and lon, then the pair.
    la, la_u = pd.factorize(lat)
    lo, lo_u = pd.factorize(lon)
    pos, pair_u = pd.factorize(la.astype(np.int64) * len(lo_u) + lo)
    pos_lat = np.asarray(la_u, np.float64)[pair_u // len(lo_u)]
    pos_lon = np.asarray(lo_u, np.float64)[pair_u % len(lo_u)]
    pos = pos.astype(np.int32)
    run_break = new_user.copy()
    run_break[1:] |= (pos[1:] != pos[:-1]) | (lac[1:] != lac[:-1])
    visit_break = new_user.copy()
    visit_break[1:] |= lac[1:] != lac[:-1]
    span = int(end_ms.max()) + 1
    user = user.astype(np.int64)
    return Trajectories(
        user=user,
        user_ids=uid[first],
        t_ms=t_ms,
        end_ms=end_ms,
        pos=pos,
        pos_lat=pos_lat,
        pos_lon=pos_lon,
        pos_weight=np.bincount(pos, minlength=len(pos_lat)).astype(np.int64),
        first=first,
        stop=stop,
        run_start=np.flatnonzero(run_break).astype(np.int64),
        visit_start=np.flatnonzero(visit_break).astype(np.int64),
        stride=span,
        t0_s=t0_s,
        skey=user * span + t_ms,
    )


@dataclass(frozen=True)
class Schedule:
    """Controller cycles that can change something, sorted by (user, check time).

    ``c`` check (step 1) time, ``c2`` step-2 time (-1: none before the next
    check), ``ic``/``ic2`` the samples whose intervals hold them and
    ``pc``/``pc2`` the user's position then; ``rounds`` the offsets of
    the k-th cycle of every user after reordering by rank (see ``order``).
    """

    user: I64
    c: I64
    c2: I64
    ic: I64
    ic2: I64
    pc: I64
    pc2: I64
    order: I64
    rounds: I64
    migration_ms: int


class _Clock:
    """The controller's check times for one timing setting: first check >= t."""

    def __init__(self, tr: Trajectories, timing: Timing) -> None:
        self.tr = tr
        self.timing = timing
        self.user_end = tr.end_ms[tr.stop - 1]
        self.user_t0 = tr.t_ms[tr.first]
        if timing.relative:
            vs = tr.visit_start
            ve = np.append(vs[1:], tr.n_samples)
            self.v_user = tr.user[vs]
            self.v_e = tr.t_ms[vs]
            r = tr.end_ms[ve - 1] - self.v_e
            self.v_step = timing.s1 * r.astype(np.float64)
            # Checks at e + round(j * step) for j = 1..J, strictly inside the visit.
            j = np.maximum(np.ceil(r / np.maximum(self.v_step, 1e-9)).astype(np.int64), 1)
            while True:
                too_far = (j >= 1) & (self._at(np.arange(len(vs)), j) >= self.v_e + r)
                if not too_far.any():
                    break
                j[too_far] -= 1
            self.v_count = j
            self.v_key = tr.key(self.v_user, self.v_e)
            self.s2_ms_abs = 0
        else:
            self.s1_ms = max(round(timing.s1 * 1000), 1)
            self.s2_ms_abs = max(round(timing.s2 * 1000), 1)

    def _at(self, v: I64, j: I64) -> I64:
        out: I64 = self.v_e[v] + np.rint(j * self.v_step[v]).astype(np.int64)
        return out

    def first_at_or_after(self, user: I64, t: I64) -> tuple[I64, I64, I64]:
        """(check time, visit, index j) of the first check >= t; time -1 if none."""
        tr = self.tr
        t = np.minimum(t, self.user_end[user])  # keys stay inside the user's range
        if not self.timing.relative:
            t0 = self.user_t0[user]
            j = np.maximum(-((t0 - t) // self.s1_ms), 1)
            c = t0 + j * self.s1_ms
            c = np.where(c < self.user_end[user], c, NONE)
            return c, np.zeros_like(c), j
        v = np.searchsorted(self.v_key, tr.key(user, t), side="right") - 1
        rel = (t - self.v_e[v]).astype(np.float64)
        j = np.maximum(np.ceil(rel / np.maximum(self.v_step[v], 1e-9)).astype(np.int64), 1)
        # Correct float rounding: smallest j with time >= t.
        back = (j > 1) & (self._at(v, np.maximum(j - 1, 1)) >= t)
        j[back] -= 1
        fwd = self._at(v, j) < t
        j[fwd] += 1
        c = self._at(v, j)
        # Past the visit's last check: the first check of a later visit of the user.
        over = j > self.v_count[v]
        while over.any():
            nv = v[over] + 1
            same = (nv < len(self.v_e)) & (
                self.v_user[np.minimum(nv, len(self.v_e) - 1)] == user[over]
            )
            nv = np.minimum(nv, len(self.v_e) - 1)
            v[over] = nv
            j[over] = 1
            c[over] = np.where(same, self._at(nv, np.ones_like(nv)), NONE)
            over_idx = np.flatnonzero(over)
            over[over_idx] = same & (self.v_count[nv] < 1)
        return c, v, j

    def last_before(self, user: I64, t: I64) -> tuple[I64, I64, I64]:
        """(check time, visit, index j) of the last check < t; time -1 if none."""
        tr = self.tr
        t = np.minimum(t, self.user_end[user])
        if not self.timing.relative:
            t0 = self.user_t0[user]
            j = (t - 1 - t0) // self.s1_ms
            c = np.where(j >= 1, t0 + j * self.s1_ms, NONE)
            return c, np.zeros_like(c), j
        v = np.searchsorted(self.v_key, tr.key(user, t), side="right") - 1
        rel = (t - self.v_e[v]).astype(np.float64)
        j = np.floor(rel / np.maximum(self.v_step[v], 1e-9)).astype(np.int64)
        j = np.clip(j, 0, self.v_count[v])
        # Correct float rounding: largest j <= count with time < t.
        fwd = (j < self.v_count[v]) & (self._at(v, j + 1) < t)
        j[fwd] += 1
        back = (j >= 1) & (self._at(v, np.maximum(j, 1)) >= t)
        j[back] -= 1
        c = np.where(j >= 1, self._at(v, np.maximum(j, 1)), NONE)
        # Before the visit's first check: the last check of an earlier visit.
        under = j < 1
        while under.any():
            pv = v[under] - 1
            same = (pv >= 0) & (self.v_user[np.maximum(pv, 0)] == user[under])
            pv = np.maximum(pv, 0)
            v[under] = pv
            j[under] = self.v_count[pv]
            c[under] = np.where(
                same & (self.v_count[pv] >= 1), self._at(pv, np.maximum(self.v_count[pv], 1)), NONE
            )
            under[np.flatnonzero(under)] = same & (self.v_count[pv] < 1)
        return c, v, j

    def step2(self, user: I64, c: I64, v: I64, j: I64) -> I64:
        """Step-2 time of the check (c, v, j), or -1 when the next check comes first."""
        if not self.timing.relative:
            c2 = c + self.s2_ms_abs
        else:
            c2 = c + np.maximum(np.rint(self.timing.s2 * self.v_step[v]).astype(np.int64), 1)
            nxt, _, _ = self.first_at_or_after(user, c + 1)
            c2 = np.where((nxt >= 0) & (nxt <= c2), NONE, c2)
        return np.where((c >= 0) & (c2 < self.user_end[user]), c2, NONE)


def schedule(tr: Trajectories, timing: Timing) -> Schedule:
    """The controller cycles of one timing setting (network independent)."""
    clock = _Clock(tr, timing)
    rs = tr.run_start
    re = np.append(rs[1:], tr.n_samples)
    ru, r_start, r_end = tr.user[rs], tr.t_ms[rs], tr.end_ms[re - 1]
    # Which checks can change anything (docs/simulation.md): the first check of
    # every run of samples at one position, the last one (its step 2 may fall in
    # the next run), and around every possible migration completion the last
    # check before it (its step 2 may follow it) and the first one after it.
    c, v, j = clock.first_at_or_after(ru, r_start)
    keep = (c >= 0) & (c < r_end)
    parts = [(ru[keep], c[keep], v[keep], j[keep])]
    c, v, j = clock.last_before(ru, r_end)
    keep = (c >= r_start) & (c < r_end)
    keep[keep] = clock.step2(ru[keep], c[keep], v[keep], j[keep]) >= r_end[keep]
    parts.append((ru[keep], c[keep], v[keep], j[keep]))
    cu, cc, cv, cj = (np.concatenate(x) for x in zip(*parts, strict=True))
    _, uniq = np.unique(tr.key(cu, cc), return_index=True)
    cu, cc, cv, cj = cu[uniq], cc[uniq], cv[uniq], cj[uniq]
    mig_ms = round(timing.migration_s * 1000)
    c2 = clock.step2(cu, cc, cv, cj)
    if mig_ms > 0:
        seen = tr.key(cu, cc)
        fu, fc2 = cu, c2
        while fu.size:  # ends: each pass adds new checks from a finite set
            ok = fc2 >= 0
            tu, tdone = fu[ok], fc2[ok] + mig_ms
            got = [clock.first_at_or_after(tu, tdone), clock.last_before(tu, tdone)]
            nu = np.concatenate([tu, tu])
            nc, nv, nj = (np.concatenate(x) for x in zip(*got, strict=True))
            nkey = tr.key(nu, nc)
            fresh = (nc >= 0) & ~np.isin(nkey, seen)
            _, uniq = np.unique(nkey[fresh], return_index=True)
            pick = np.flatnonzero(fresh)[uniq]
            nu, nc, nv, nj = nu[pick], nc[pick], nv[pick], nj[pick]
            seen = np.concatenate([seen, tr.key(nu, nc)])
            n2 = clock.step2(nu, nc, nv, nj)
            cu, cc = np.concatenate([cu, nu]), np.concatenate([cc, nc])
            c2 = np.concatenate([c2, n2])
            fu, fc2 = nu, n2
        srt = np.argsort(tr.key(cu, cc), kind="stable")
        cu, cc, c2 = cu[srt], cc[srt], c2[srt]
    ic = tr.sample_at(cu, cc)
    ic2 = tr.sample_at(cu, np.maximum(c2, cc))
    # Rank of each cycle within its user, then group by rank.
    starts = np.flatnonzero(np.r_[True, cu[1:] != cu[:-1]])
    rank = np.arange(len(cu)) - np.repeat(starts, np.diff(np.r_[starts, len(cu)]))
    order = np.argsort(rank, kind="stable").astype(np.int64)
    counts = np.bincount(rank) if len(rank) else np.zeros(0, np.int64)
    rounds = np.r_[0, np.cumsum(counts)].astype(np.int64)
    return Schedule(
        user=cu,
        c=cc,
        c2=c2,
        ic=ic,
        ic2=ic2,
        pc=tr.pos[ic].astype(np.int64),
        pc2=tr.pos[ic2].astype(np.int64),
        order=order,
        rounds=rounds,
        migration_ms=mig_ms,
    )


@dataclass(frozen=True)
class Outcome:
    """RTT of every sample of one configuration, and what the controller did.

    The RTTs are stored as segments of consecutive samples with one value
    (``values[k]`` repeated ``counts[k]`` times, in sample order): a user at one
    position on one path for hours is one segment, which makes statistics over
    millions of samples cost as much as the number of path changes.
    """

    values: F64
    counts: I64
    switches: int
    migrations: int
    #: The path changes (user, time ms, sample, entry DC, VM DC) sorted by (user, time);
    #: the web view's replay draws them. None for legacy (nothing changes).
    changes: tuple[I64, I64, I64, I64, I64] | None = field(default=None, compare=False)

    @property
    def rtt_ms(self) -> F64:
        """Per-sample RTT, in the order of the traces."""
        out: F64 = np.repeat(self.values, self.counts)
        return out

    def quantiles(self, qs: NDArray[np.float64] | list[float]) -> F64:
        """Same as ``np.quantile(self.rtt_ms, qs)`` without expanding the samples."""
        return weighted_quantiles_exact(self.values, self.counts, np.asarray(qs, np.float64))

    def mean(self) -> float:
        return float(np.dot(self.values, self.counts) / self.counts.sum())


@dataclass(frozen=True)
class Start:
    """Every user's entry DC and VM DC at the first sample (arrays over users, in the
    order of :class:`Trajectories`): the legacy placement, which legacy keeps all day
    and PACAO starts from (:mod:`pacao.sim.legacy` builds the paper's readings)."""

    entry: I64
    vm: I64


def nearest_start(tr: Trajectories, dec: Decisions) -> Start:
    """Entry and VM at the DC nearest to the user's first position."""
    home = dec.nearest[tr.pos[tr.first]].astype(np.int64)
    return Start(home, home.copy())


def legacy(tr: Trajectories, net: Network, start: Start) -> Outcome:
    """Entry and VM fixed all day where ``start`` puts them."""
    u = tr.user[tr.run_start]
    values = net.path_rtt(tr.pos[tr.run_start], start.entry[u], start.vm[u])
    return Outcome(values, np.diff(np.r_[tr.run_start, tr.n_samples]), 0, 0)


def simulate(
    tr: Trajectories,
    sched: Schedule,
    net: Network,
    dec: Decisions,
    policy: Policy,
    start: Start | None = None,
) -> Outcome:
    """Run one policy over all users from ``start`` (default: :func:`nearest_start`);
    returns the per-sample RTT."""
    start = start or nearest_start(tr, dec)
    if start.entry.shape != (tr.n_users,) or start.vm.shape != (tr.n_users,):
        raise InputError(
            "start", start.entry.shape, f"one entry and one VM DC per user ({tr.n_users})"
        )
    if policy is Policy.LEGACY or len(sched.user) == 0:
        return legacy(tr, net, start)
    a = start.entry.astype(np.int64, copy=True)
    v = start.vm.astype(np.int64, copy=True)
    log = _Log()
    switches = 0
    migrations = 0
    two = policy is Policy.PACAO2
    slow = sched.migration_ms > 0
    busy = np.zeros(tr.n_users, dtype=bool)
    done = np.zeros(tr.n_users, dtype=np.int64)
    ta = np.zeros(tr.n_users, dtype=np.int64)
    tv = np.zeros(tr.n_users, dtype=np.int64)

    def complete(idx: I64, at: I64) -> None:
        """Finish the in-flight migrations of users idx due at or before ``at``."""
        u = idx[busy[idx] & (done[idx] <= at)]
        if u.size:
            log.add(u, done[u], None, ta[u], tv[u])
            a[u], v[u], busy[u] = ta[u], tv[u], False

    for k in range(len(sched.rounds) - 1):
        sel = sched.order[sched.rounds[k] : sched.rounds[k + 1]]
        u = sched.user[sel]
        if slow and two:
            complete(u, sched.c[sel])
        cur_a, cur_v = a[u], v[u]
        # Step 1: SLA check on the current path, RLOC switching when violated.
        new_a = dec.step1(dec.key(sched.pc[sel], cur_a, cur_v))
        viol = new_a >= 0
        sel, u, cur_a, cur_v, new_a = sel[viol], u[viol], cur_a[viol], cur_v[viol], new_a[viol]
        moved = new_a != cur_a
        if moved.any():
            switches += int(moved.sum())
            log.add(u[moved], sched.c[sel[moved]], sched.ic[sel[moved]], new_a[moved], cur_v[moved])
            a[u[moved]] = new_a[moved]
        if not two:
            continue
        # Step 2, S'' later: still violated -> VM placement (the entry follows the VM).
        has2 = sched.c2[sel] >= 0
        sel, u, new_a, cur_v = sel[has2], u[has2], new_a[has2], cur_v[has2]
        if slow:
            complete(u, sched.c2[sel])
            free = ~busy[u]
            sel, u = sel[free], u[free]
            new_a, cur_v = a[u], v[u]
        p2 = sched.pc2[sel]
        nv = dec.step2(dec.key(p2, new_a, cur_v))
        act = nv >= 0
        sel, u, p2, cur_v, nv = sel[act], u[act], p2[act], cur_v[act], nv[act]
        na = dec.entry[p2, nv]
        mig = nv != cur_v
        migrations += int(mig.sum())
        now = ~mig | (not slow)
        if now.all():
            log.add(u, sched.c2[sel], sched.ic2[sel], na, nv)
            a[u], v[u] = na, nv
            continue
        log.add(u[now], sched.c2[sel[now]], sched.ic2[sel[now]], na[now], nv[now])
        a[u[now]], v[u[now]] = na[now], nv[now]
        later = ~now
        ul = u[later]
        busy[ul], done[ul] = True, sched.c2[sel[later]] + sched.migration_ms
        ta[ul], tv[ul] = na[later], nv[later]
    if busy.any():
        pending = np.flatnonzero(busy).astype(np.int64)
        complete(pending, np.full(pending.shape, np.iinfo(np.int64).max, dtype=np.int64))
    if not log.users:
        return legacy(tr, net, start)
    changes = log.sorted(tr)
    values, counts = _segments(tr, net, start, *changes)
    return Outcome(values, counts, switches, migrations, changes)


class _Log:
    """Path changes (user, time, sample index or None, entry, VM) in the order made."""

    def __init__(self) -> None:
        self.users: list[I64] = []
        self.times: list[I64] = []
        self.samples: list[I64 | None] = []
        self.entries: list[I64] = []
        self.vms: list[I64] = []

    def add(self, u: I64, t: I64, i: I64 | None, a: I64, v: I64) -> None:
        self.users.append(u)
        self.times.append(np.asarray(t, np.int64))
        self.samples.append(i)
        self.entries.append(np.asarray(a, np.int64))
        self.vms.append(np.asarray(v, np.int64))

    def sorted(self, tr: Trajectories) -> tuple[I64, I64, I64, I64, I64]:
        """Changes before the end of their user's trace, sorted by (user, time, order)."""
        lu, lt = np.concatenate(self.users), np.concatenate(self.times)
        known = [
            np.full(len(u), -1, np.int64) if i is None else i
            for u, i in zip(self.users, self.samples, strict=True)
        ]
        li = np.concatenate(known)
        la, lv = np.concatenate(self.entries), np.concatenate(self.vms)
        live = lt < tr.end_ms[tr.stop[lu] - 1]
        lu, lt, li, la, lv = lu[live], lt[live], li[live], la[live], lv[live]
        unknown = li < 0
        li[unknown] = tr.sample_at(lu[unknown], lt[unknown])
        srt = np.argsort(tr.key(lu, lt), kind="stable")
        return lu[srt], lt[srt], li[srt], la[srt], lv[srt]


def _segments(
    tr: Trajectories, net: Network, start: Start, lu: I64, lt: I64, li: I64, la: I64, lv: I64
) -> tuple[F64, I64]:
    """Time-averaged RTT of every sample, as segments, from the initial placement
    and the path changes.

    Segments start at every run of one position and around every change.
    States are listed user by user, each user's initial state before its
    changes, so the index of the state in force never decreases along the
    segments: one running maximum over markers gives every segment its state.
    A change inside a sample's interval counts for the rest of the interval.
    """
    n, n_users = tr.n_samples, tr.n_users
    inside = tr.t_ms[li] < lt
    s = li + inside  # first sample that starts with the change in force
    stop = tr.stop[lu]
    bnd = np.zeros(n + 1, dtype=bool)
    bnd[tr.run_start] = True
    bnd[s] = True
    bnd[li[inside]] = True
    bnd[n] = False
    seg_start = np.flatnonzero(bnd[:n])

    def seg_of(i: I64) -> I64:
        out: I64 = np.searchsorted(seg_start, i, side="right") - 1
        return out

    counts = np.diff(np.r_[seg_start, n])
    before = np.searchsorted(lu, np.arange(n_users), side="left")
    init_at = np.arange(n_users) + before
    change_at = np.arange(len(lu)) + lu + 1
    state_a = np.empty(n_users + len(lu), dtype=np.int64)
    state_v = np.empty_like(state_a)
    state_a[init_at], state_v[init_at] = start.entry, start.vm
    state_a[change_at], state_v[change_at] = la, lv
    marker = np.zeros(len(seg_start), dtype=np.int64)
    marker[seg_of(tr.first)] = init_at
    # Several changes may take effect at one sample: the last one wins.
    eff = s < stop
    last = np.r_[s[1:] != s[:-1], True] & eff
    marker[seg_of(s[last])] = change_at[last]
    np.maximum.accumulate(marker, out=marker)
    values = net.path_rtt(tr.pos[seg_start], state_a[marker], state_v[marker])
    if inside.any():
        prev = change_at[inside] - 1  # the state just before each change
        ii = li[inside]
        p = tr.pos[ii]
        gain = net.path_rtt(p, la[inside], lv[inside]) - net.path_rtt(
            p, state_a[prev], state_v[prev]
        )
        w = (tr.end_ms[ii] - lt[inside]) / (tr.end_ms[ii] - tr.t_ms[ii])
        values += np.bincount(seg_of(ii), weights=gain * w, minlength=len(seg_start))
    return values, counts


def weighted_quantiles_exact(values: F64, counts: I64, qs: F64) -> F64:
    """``np.quantile(np.repeat(values, counts), qs)`` (linear) in O(len(values)).

    Order statistics are found by a histogram pass (a monotone binning keeps
    the order between bins) and an exact sort of the one bin that holds each rank.
    """
    total = int(counts.sum())
    h = qs * (total - 1)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, total - 1)
    ranks = np.unique(np.r_[lo, hi])
    vmin, vmax = float(values.min()), float(values.max())
    nb = max(1, min(len(values) // 8, 1 << 20))
    if vmax > vmin:
        bins = ((values - vmin) * (nb / (vmax - vmin))).astype(np.int64)
        np.minimum(bins, nb - 1, out=bins)
    else:
        bins = np.zeros(len(values), dtype=np.int64)
    cum = np.cumsum(np.bincount(bins, weights=counts, minlength=nb))
    found: dict[int, float] = {}
    for r in ranks.tolist():
        b = int(np.searchsorted(cum, r, side="right"))
        below = 0 if b == 0 else int(cum[b - 1])
        sel = np.flatnonzero(bins == b)
        order = np.argsort(values[sel], kind="stable")
        cc = np.cumsum(counts[sel][order])
        found[r] = float(values[sel][order][np.searchsorted(cc, r - below, side="right")])
    vlo = np.array([found[int(x)] for x in lo])
    vhi = np.array([found[int(x)] for x in hi])
    out: F64 = vlo + (h - lo) * (vhi - vlo)
    return out
