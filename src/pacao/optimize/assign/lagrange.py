"""`lagrange`: all users at once, with a proven lower bound (docs/assign.md).

Lower bound. For every DC d pick beta_d >= 0. Each user's cost c_ud(L) is
nondecreasing in the congestion latency L and, on the range L can take while u
is on d ([f_d with 1 new user, f_d at capacity]), lies above the line
alpha_ud + beta_d L with

    alpha_ud = min_L (c_ud(L) - beta_d L)

(a minimum over the kinks of c_ud and the range's ends, see :func:`alphas`).
So every assignment with loads n_d costs at least
sum_u alpha_u,d(u) + sum_d beta_d n_d L_d(n_d), and for any prices pi_d

    OPT >= D(pi, beta) = sum_u min_d (alpha_ud + pi_d)
                         - sum_d max_{0 <= n <= room_d} n (pi_d - beta_d L_d(n)).

D is concave in pi; we maximise an entropy-smoothed version with L-BFGS and
report the exact D at the prices found, evaluated over every allowed
(user, DC) pair: any prices give a valid bound, better prices a tighter one.

Upper bound. Users take their cheapest DC at the final prices
(alpha_ud + pi_d), overfull DCs shed their users with the smallest regret,
then exact single-user moves (deltas from the definition of the objective,
every other user's congestion included) run until none improves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.optimize import minimize

from pacao.optimize.assign.model import (
    AssignProblem,
    AssignResult,
    InfeasibleError,
    evaluate,
    penalty,
)
from pacao.optimize.penalty import FloatArray, IntArray

#: DCs per user (cheapest at the final prices) the local search may move a user to.
TOP_K = 8
#: Smoothing temperatures of the dual, in objective units (T ~ 1), coarse to fine.
TEMPERATURES = (0.03, 0.005)
#: Step levels examined per pair for the integer penalty before falling back to
#: the continuous cost (a valid minorant of the step cost).
MAX_STEPS = 48
#: Moves must improve by more than this to be applied.
MOVE_TOL = 1e-9


class DcTables:
    """What the solve needs of the DCs alone: room, congestion levels and the dual's DC term.

    Its size is the DCs' total room (at most |U| per DC), never users x DCs, so one
    copy serves every partition of a partitioned solve.
    """

    def __init__(self, room: IntArray, levels: list[FloatArray]) -> None:
        self.room = room
        self.levels = levels
        self.l1: FloatArray = np.array([lv[min(1, lv.size - 1)] for lv in levels])
        self.lhi: FloatArray = np.array([lv[-1] for lv in levels])

    @classmethod
    def of(cls, p: AssignProblem) -> DcTables:
        return cls(p.room, p.levels())

    @cached_property
    def n_grid(self) -> FloatArray:
        return np.arange(int(self.room.max()) + 1, dtype=np.float64)

    @cached_property
    def padded(self) -> FloatArray:
        """(D, max room + 1): n L_d(n), 0 beyond room_d."""
        out = np.zeros((len(self.levels), self.n_grid.size))
        for d, lv in enumerate(self.levels):
            out[d, : lv.size] = self.n_grid[: lv.size] * lv
        return out

    @cached_property
    def valid_n(self) -> np.ndarray:
        out = np.zeros((len(self.levels), self.n_grid.size), dtype=bool)
        for d, lv in enumerate(self.levels):
            out[d, : lv.size] = True
        return out

    def terms(self, pi: FloatArray, beta: FloatArray) -> FloatArray:
        """max over 0 <= n <= room_d of n (pi_d - beta_d L_d(n)), per DC."""
        per_dc = self.n_grid[None, :] * pi[:, None] - beta[:, None] * self.padded
        out: FloatArray = np.where(self.valid_n, per_dc, -np.inf).max(axis=1)
        return out

    def soft_terms(self, pi: FloatArray, beta: FloatArray, mu: float) -> tuple[float, FloatArray]:
        """Soft-max (temperature mu) of the DC terms, summed, and its gradient in pi."""
        ng = self.n_grid[None, :]
        w = np.where(self.valid_n, ng * pi[:, None] - beta[:, None] * self.padded, -np.inf)
        wm = w.max(axis=1, keepdims=True)
        q = np.exp((w - wm) / mu)
        qs = q.sum(axis=1, keepdims=True)
        value = float(np.sum(wm[:, 0] + mu * np.log(qs[:, 0])))
        return value, (q / qs * ng).sum(axis=1)

    def caps(self, pi: FloatArray, beta: FloatArray, n_users: int) -> IntArray:
        """The load the prices pick per DC, argmax_n n pi_d - beta_d n L_d(n), raised
        towards room_d when these loads cannot hold ``n_users``."""
        w = np.where(
            self.valid_n, self.n_grid[None, :] * pi[:, None] - beta[:, None] * self.padded, -np.inf
        )
        cap: IntArray = w.argmax(axis=1).astype(np.int64)
        short = n_users - int(cap.sum())
        if short > 0:
            spare = self.room - cap
            add = np.floor(spare * short / max(1, int(spare.sum())) + 1).astype(np.int64)
            cap = np.minimum(self.room, cap + add)
        return cap


@dataclass
class _Data:
    p: AssignProblem
    lat: FloatArray  # (U, D), +inf where not allowed (or the DC has no room)
    dcs: DcTables

    @property
    def room(self) -> IntArray:
        return self.dcs.room

    @property
    def levels(self) -> list[FloatArray]:
        return self.dcs.levels


def _prepare(p: AssignProblem, dcs: DcTables | None = None) -> _Data:
    """The users' latencies against ``dcs`` (default: the problem's own DC tables)."""
    dcs = dcs or DcTables.of(p)
    lat = np.where(p.allowed, p.latency, np.inf)
    lat[:, dcs.room < 1] = np.inf
    if np.any(np.all(np.isinf(lat), axis=1)):
        u = int(np.flatnonzero(np.all(np.isinf(lat), axis=1))[0])
        raise InfeasibleError(f"users[{u}]", p.user_ids[u], "infeasible: no allowed DC has room")
    return _Data(p, lat, dcs)


def alphas(
    p: AssignProblem,
    lat: FloatArray,
    lt: FloatArray,
    l1: FloatArray,
    lhi: FloatArray,
    beta: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """alpha = min over L in [l1, lhi] of c(L) - beta L, and the minimising L (broadcast).

    Continuous penalty: c(L) = max(1, (l + L)/LT) is convex with one kink at
    L = LT - l, and c - beta L is concave between kinks, so the minimum is at
    l1, lhi or the kink. Integer penalty: c is a right-closed step function,
    so c - beta L (beta >= 0) is smallest at the right end of a step
    (L = k LT - l) or at lhi. With more than MAX_STEPS steps in range the
    continuous cost, which is below the step cost, is used instead: still valid.
    """
    with np.errstate(invalid="ignore"):
        kink = np.clip(lt - lat, l1, lhi)
        best = np.full(np.broadcast(lat, lt, l1, beta).shape, np.inf)
        arg = np.zeros_like(best)
        cont: list[FloatArray] = [
            np.broadcast_to(l1, best.shape),
            kink,
            np.broadcast_to(lhi, best.shape),
        ]
        cands = cont
        if p.integer_penalty:
            k0 = np.maximum(1.0, np.ceil((l1 + lat) / lt))
            steps = np.floor((lhi + lat) / lt) - k0 + 1
            few = steps <= MAX_STEPS
            n_steps = int(np.nanmax(np.where(few & np.isfinite(steps), steps, 0), initial=0))
            cands = [np.broadcast_to(lhi, best.shape)]
            for j in range(n_steps):
                ell = (k0 + j) * lt - lat
                cands.append(np.where(few & (ell <= lhi) & (ell >= l1), ell, lhi))
            if not np.all(few[np.isfinite(lat)] if np.ndim(few) else few):
                # Pairs with too many steps: the continuous minorant's candidates.
                for c in cont:
                    cands.append(np.where(few, lhi, c))
        for ell in cands:
            if p.integer_penalty:
                cost = penalty((lat + ell) / lt, True)
                cost_c = np.maximum((lat + ell) / lt, 1.0)
                cost = np.where(few, cost, cost_c)
            else:
                cost = np.maximum((lat + ell) / lt, 1.0)
            v = cost - beta * ell
            better = v < best
            best = np.where(better, v, best)
            arg = np.where(better, ell, arg)
    return best, arg


def _dense_alphas(data: _Data, beta: FloatArray) -> tuple[FloatArray, FloatArray]:
    """alpha_ud and its minimising L for every pair (inf where not allowed)."""
    p, dcs = data.p, data.dcs
    a, lstar = alphas(
        p, data.lat, p.bound[:, None], dcs.l1[None, :], dcs.lhi[None, :], beta[None, :]
    )
    return np.where(np.isfinite(data.lat), a, np.inf), lstar


def user_terms(alpha: FloatArray, pi: FloatArray) -> float:
    """sum_u min_d (alpha_ud + pi_d): the users' part of D(pi, beta), in float64."""
    return math.fsum((alpha + pi[None, :]).min(axis=1).tolist())


def _dual_value(data: _Data, alpha: FloatArray, pi: FloatArray, beta: FloatArray) -> float:
    """D(pi, beta) over every allowed pair: the proven lower bound."""
    return user_terms(alpha, pi) - math.fsum(data.dcs.terms(pi, beta).tolist())


class SoftUsers:
    """The users' part of the smoothed dual: sum_u soft-min_d (alpha_ud + pi_d).

    Work is in float32 with DCs as rows, so reductions run over contiguous memory.
    """

    def __init__(self, alpha: FloatArray) -> None:
        self.at = np.ascontiguousarray(alpha.T, dtype=np.float32)
        self.at[~np.isfinite(self.at)] = np.float32(1e30)
        self.buf = np.empty_like(self.at)

    def __call__(self, pi: FloatArray, mu: float) -> tuple[float, FloatArray]:
        """Value and gradient in pi at temperature mu."""
        buf = self.buf
        np.add(self.at, pi.astype(np.float32)[:, None], out=buf)
        vmin = buf.min(axis=0)
        np.subtract(vmin[None, :], buf, out=buf)
        np.multiply(buf, np.float32(1.0 / mu), out=buf)
        np.exp(buf, out=buf)
        s = buf.sum(axis=0, dtype=np.float32).astype(np.float64)
        value = float(np.sum(vmin.astype(np.float64) - mu * np.log(s)))
        np.multiply(buf, (1.0 / s).astype(np.float32)[None, :], out=buf)
        return value, buf.sum(axis=1, dtype=np.float64)


class _Moves:
    """Exact single-user moves: delta = insertion cost at d' - removal saving at d.

    ``load`` is every DC's load (default: this assignment's); a partition of a larger
    instance passes the global loads, the loads it may reach (``lo`` .. ``hi``) and
    ``others``, the cost of the other users on each DC at loads ``lo`` .. ``hi``
    (their assignment fixed), so its deltas stay exact for the whole instance.
    """

    def __init__(
        self,
        data: _Data,
        choice: IntArray,
        cand: IntArray,
        *,
        load: IntArray | None = None,
        lo: IntArray | None = None,
        hi: IntArray | None = None,
        others: FloatArray | None = None,
    ) -> None:
        self.d = data
        self.cand = cand
        self.p = data.p
        self.choice = choice.copy()
        nd = self.p.n_dcs
        own = np.bincount(choice, minlength=nd)
        self.load = own.copy() if load is None else load.copy()
        self.lo = np.zeros(nd, dtype=np.int64) if lo is None else lo
        self.hi = data.room.copy() if hi is None else np.minimum(hi, data.room)
        self.others = others
        self.gain = 0.0  # sum of the applied deltas
        self.add = np.zeros(nd)  # A_d: extra cost of the others when one user joins
        self.rem = np.zeros(nd)  # B_d: saving of all members when one leaves
        for j in range(nd):
            self._refresh(j)

    def _lv(self, j: int, n: int) -> float:
        return float(self.d.levels[j][n]) if self.lo[j] <= n <= self.hi[j] else math.inf

    def _other(self, j: int, n: int) -> float:
        if self.others is None:
            return 0.0
        return float(self.others[j, n - self.lo[j]])

    def _refresh(self, j: int) -> None:
        members = np.flatnonzero(self.choice == j)
        n = int(self.load[j])
        lat = self.d.lat[members, j]
        now_l, down_l, up_l = self._lv(j, n), self._lv(j, n - 1), self._lv(j, n + 1)
        now = self.p.cost(lat, members, np.float64(now_l))
        if members.size == 0 or math.isinf(down_l):
            self.rem[j] = math.inf if members.size and math.isinf(down_l) else 0.0
        else:
            down = self.p.cost(lat, members, np.float64(down_l))
            self.rem[j] = math.fsum((now - down).tolist())
            self.rem[j] += self._other(j, n) - self._other(j, n - 1)
        if math.isinf(up_l):
            self.add[j] = math.inf
        else:
            up = math.fsum((self.p.cost(lat, members, np.float64(up_l)) - now).tolist())
            self.add[j] = up + self._other(j, n + 1) - self._other(j, n)

    def delta(self, u: int, dst: int) -> float:
        src = int(self.choice[u])
        up = self._lv(dst, int(self.load[dst]) + 1)
        down = self._lv(src, int(self.load[src]) - 1)
        if math.isinf(up) or math.isinf(down) or not math.isfinite(self.d.lat[u, dst]):
            return math.inf
        ins = float(self.p.cost(self.d.lat[u, dst], u, np.float64(up))) + self.add[dst]
        out = float(self.p.cost(self.d.lat[u, src], u, np.float64(down))) + self.rem[src]
        return float(ins - out)

    def apply(self, u: int, dst: int, delta: float) -> None:
        src = int(self.choice[u])
        self.choice[u] = dst
        self.load[src] -= 1
        self.load[dst] += 1
        self.gain += delta
        self._refresh(src)
        self._refresh(dst)

    def round(self, deadline: float = math.inf) -> int:
        """One pass: best move per user (vectorised), applied in order if still improving."""
        p, data = self.p, self.d
        users = np.arange(p.n_users)
        top = self.cand
        nxt = np.array(
            [self._lv(j, int(self.load[j]) + 1) for j in range(p.n_dcs)], dtype=np.float64
        )
        with np.errstate(invalid="ignore"):
            ins = p.cost(np.take_along_axis(data.lat, top, 1), users[:, None], nxt[top])
        ins = ins + self.add[top]
        ins[top == self.choice[:, None]] = np.inf
        prev = np.array(
            [self._lv(j, int(self.load[j]) - 1) for j in range(p.n_dcs)], dtype=np.float64
        )
        with np.errstate(invalid="ignore"):
            out = p.cost(data.lat[users, self.choice], users, prev[self.choice])
            out = out + self.rem[self.choice]
            out[np.isinf(prev[self.choice])] = -np.inf  # this DC may not lose a user
            gain = ins - out[:, None]
        gain[np.isnan(gain)] = np.inf
        best = np.argmin(gain, axis=1)
        bgain = gain[users, best]
        order = np.flatnonzero(bgain < -MOVE_TOL)
        order = order[np.argsort(bgain[order])]
        applied = 0
        for i, u in enumerate(order.tolist()):
            if i % 256 == 0 and time.perf_counter() > deadline:
                break
            dst = int(top[u, best[u]])
            delta = self.delta(u, dst)
            if delta < -MOVE_TOL:
                self.apply(u, dst, delta)
                applied += 1
        return applied


def maximise(
    fun: Callable[[FloatArray, float], tuple[float, FloatArray]],
    n_dcs: int,
    deadline: float = math.inf,
    max_evaluations: int = 15000,
) -> FloatArray:
    """Prices maximising a smoothed dual ``fun(pi, mu)`` (value, gradient), with
    L-BFGS at each temperature of TEMPERATURES in turn (80 iterations and
    ``max_evaluations`` of ``fun`` at most each)."""

    def neg(pi: FloatArray, mu: float) -> tuple[float, FloatArray]:
        v, g = fun(pi, mu)
        return -v, -g

    pi = np.zeros(n_dcs)
    for mu in TEMPERATURES:
        if time.perf_counter() > deadline:
            break
        res = minimize(
            neg,
            pi,
            args=(mu,),
            jac=True,
            method="L-BFGS-B",
            options={
                "maxiter": 80,
                "maxfun": max_evaluations,
                "gtol": 1e-6,
                "ftol": 1e-12,
                "maxcor": 20,
            },
            callback=_stop_at(deadline),
        )
        pi = np.asarray(res.x, dtype=np.float64)
    return pi


def _smoothed_prices(
    data: _Data, alpha: FloatArray, beta: FloatArray, deadline: float
) -> FloatArray:
    """Prices maximising D(pi, beta) with min/max replaced by soft-min/soft-max.

    The smoothed D is below the exact one; only the prices are kept.
    """
    soft = SoftUsers(alpha)

    def fun(pi: FloatArray, mu: float) -> tuple[float, FloatArray]:
        v1, g1 = soft(pi, mu)
        v2, g2 = data.dcs.soft_terms(pi, beta, mu)
        return v1 - v2, g1 - g2

    return maximise(fun, data.p.n_dcs, deadline)


def _stop_at(deadline: float) -> Callable[..., None]:
    def cb(*_: object) -> None:
        if time.perf_counter() > deadline:
            raise StopIteration

    return cb


def candidates(red: FloatArray) -> tuple[IntArray, FloatArray]:
    """Each user's TOP_K cheapest DCs at reduced costs ``red`` (ascending) and their costs."""
    n_dcs = red.shape[1]
    k = min(TOP_K, n_dcs)
    if k < n_dcs:
        cand = np.argpartition(red, k - 1, axis=1)[:, :k]
    else:
        cand = np.broadcast_to(np.arange(n_dcs), red.shape).copy()
    rc = np.take_along_axis(red, cand, 1)
    order = np.argsort(rc, axis=1)
    return np.take_along_axis(cand, order, 1), np.take_along_axis(rc, order, 1)


def round_prices(
    red: FloatArray, cap: IntArray, room: IntArray, *, strict: bool = True
) -> tuple[IntArray, IntArray]:
    """Round the prices: users by decreasing regret (second-cheapest minus cheapest
    reduced cost) take their cheapest DC with ``cap`` left; the rest take their
    cheapest DC with ``room`` left. Unplaced users raise InfeasibleError, or with
    ``strict=False`` keep -1. Returns (choice, the users' candidate DCs)."""
    n_users = red.shape[0]
    cand, rc = candidates(red)
    k = cand.shape[1]
    regret = rc[:, 1] - rc[:, 0] if k > 1 else np.zeros(n_users)
    choice = np.full(n_users, -1, dtype=np.int64)
    left = cap.copy()
    finite = np.isfinite(rc)
    for u in np.argsort(-regret, kind="stable").tolist():
        for j in range(k):
            d = int(cand[u, j])
            if not finite[u, j]:
                break
            if left[d] > 0:
                choice[u] = d
                left[d] -= 1
                break
    room_left = room - np.bincount(choice[choice >= 0], minlength=red.shape[1])
    fill_room(red, choice, room_left, strict=strict)
    return choice, cand


def fill_room(red: FloatArray, choice: IntArray, room_left: IntArray, *, strict: bool) -> None:
    """Unplaced users (choice -1), in order, take their cheapest DC with room left."""
    for u in np.flatnonzero(choice < 0).tolist():
        ok = np.isfinite(red[u]) & (room_left > 0)
        if not ok.any():
            if not strict:
                continue
            raise InfeasibleError(
                "users",
                red.shape[0],
                "infeasible: the allowed DCs cannot take every user within capacity",
            )
        d = int(np.flatnonzero(ok)[np.argmin(red[u, ok])])
        choice[u] = d
        room_left[d] -= 1


def default_beta(bound: FloatArray, n_dcs: int) -> FloatArray:
    """beta_d = 1 / median(LT): the slope of a user beyond its bound."""
    return np.full(n_dcs, 1.0 / float(np.median(bound)))


def solve_lagrange(p: AssignProblem, time_limit: float | None = None) -> AssignResult:
    start = time.perf_counter()
    deadline = start + (time_limit if time_limit is not None else 60.0)
    p.check_feasible()
    data = _prepare(p)
    nd = p.n_dcs
    beta = default_beta(p.bound, nd)
    alpha, _ = _dense_alphas(data, beta)
    pi = _smoothed_prices(data, alpha, beta, start + 0.6 * (deadline - start))
    bound = _dual_value(data, alpha, pi, beta)
    # The no-congestion bound (beta = 0, pi = 0) is sometimes better on tiny instances.
    alpha0, _ = _dense_alphas(data, np.zeros(nd))
    bound = max(bound, _dual_value(data, alpha0, np.zeros(nd), np.zeros(nd)))
    t_bound = time.perf_counter() - start
    cap = data.dcs.caps(pi, beta, p.n_users)
    choice, cand = round_prices(alpha + pi[None, :], cap, data.room)
    first = evaluate(p, choice).objective
    moves = _Moves(data, choice, cand)
    rounds = 0
    while time.perf_counter() < deadline and moves.round(deadline) > 0:
        rounds += 1
    choice = moves.choice
    ev = evaluate(p, choice)
    if bound > ev.objective * (1 + 1e-9) + 1e-9:
        raise AssertionError(f"lower bound {bound} above objective {ev.objective}")
    return AssignResult(
        solver="lagrange",
        choice=choice,
        evaluation=ev,
        lower_bound=min(bound, ev.objective),
        seconds=time.perf_counter() - start,
        optimal=False,
        notes={
            "bound_seconds": round(t_bound, 3),
            "price_assignment_objective": round(first, 6),
            "move_rounds": rounds,
        },
    )
