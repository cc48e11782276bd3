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
from dataclasses import dataclass

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


@dataclass
class _Data:
    p: AssignProblem
    lat: FloatArray  # (U, D), +inf where not allowed (or the DC has no room)
    room: IntArray
    levels: list[FloatArray]
    l1: FloatArray  # f_d with one new user
    lhi: FloatArray  # f_d at capacity
    padded: FloatArray  # (D, max room + 1): n L_d(n), 0 beyond room_d
    n_grid: FloatArray  # (max room + 1,)
    valid_n: np.ndarray  # (D, max room + 1) bool


def _prepare(p: AssignProblem) -> _Data:
    room = p.room
    levels = p.levels()
    lat = np.where(p.allowed, p.latency, np.inf)
    lat[:, room < 1] = np.inf
    if np.any(np.all(np.isinf(lat), axis=1)):
        u = int(np.flatnonzero(np.all(np.isinf(lat), axis=1))[0])
        raise InfeasibleError(f"users[{u}]", p.user_ids[u], "infeasible: no allowed DC has room")
    l1 = np.array([lv[min(1, lv.size - 1)] for lv in levels])
    lhi = np.array([lv[-1] for lv in levels])
    m = int(room.max()) + 1
    n_grid = np.arange(m, dtype=np.float64)
    padded = np.zeros((p.n_dcs, m))
    valid = np.zeros((p.n_dcs, m), dtype=bool)
    for d, lv in enumerate(levels):
        padded[d, : lv.size] = n_grid[: lv.size] * lv
        valid[d, : lv.size] = True
    return _Data(p, lat, room, levels, l1, lhi, padded, n_grid, valid)


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
    p = data.p
    a, lstar = alphas(
        p, data.lat, p.bound[:, None], data.l1[None, :], data.lhi[None, :], beta[None, :]
    )
    return np.where(np.isfinite(data.lat), a, np.inf), lstar


def _dual_value(data: _Data, alpha: FloatArray, pi: FloatArray, beta: FloatArray) -> float:
    """D(pi, beta) over every allowed pair: the proven lower bound."""
    users = math.fsum((alpha + pi[None, :]).min(axis=1).tolist())
    return users - math.fsum(_dc_terms(data, pi, beta).tolist())


def _dc_terms(data: _Data, pi: FloatArray, beta: FloatArray) -> FloatArray:
    """max over 0 <= n <= room_d of n (pi_d - beta_d L_d(n)), per DC."""
    per_dc = data.n_grid[None, :] * pi[:, None] - beta[:, None] * data.padded
    out: FloatArray = np.where(data.valid_n, per_dc, -np.inf).max(axis=1)
    return out


class _Moves:
    """Exact single-user moves: delta = insertion cost at d' - removal saving at d."""

    def __init__(self, data: _Data, choice: IntArray, cand: IntArray) -> None:
        self.d = data
        self.cand = cand
        self.p = data.p
        self.choice = choice.copy()
        self.load = np.bincount(choice, minlength=self.p.n_dcs)
        nd = self.p.n_dcs
        self.add = np.zeros(nd)  # A_d: extra cost of the others when one user joins
        self.rem = np.zeros(nd)  # B_d: saving of all members when one leaves
        for j in range(nd):
            self._refresh(j)

    def _lv(self, j: int, n: int) -> float:
        lv = self.d.levels[j]
        return float(lv[n]) if 0 <= n < lv.size else math.inf

    def _refresh(self, j: int) -> None:
        members = np.flatnonzero(self.choice == j)
        n = int(self.load[j])
        if n == 0:
            self.add[j] = 0.0
            self.rem[j] = 0.0
            return
        lat = self.d.lat[members, j]
        now = self.p.cost(lat, members, np.float64(self._lv(j, n)))
        down = self.p.cost(lat, members, np.float64(self._lv(j, n - 1)))
        self.rem[j] = math.fsum((now - down).tolist())
        up_l = self._lv(j, n + 1)
        self.add[j] = (
            math.inf
            if math.isinf(up_l)
            else math.fsum((self.p.cost(lat, members, np.float64(up_l)) - now).tolist())
        )

    def delta(self, u: int, dst: int) -> float:
        src = int(self.choice[u])
        up = self._lv(dst, int(self.load[dst]) + 1)
        if math.isinf(up) or not math.isfinite(self.d.lat[u, dst]):
            return math.inf
        ins = float(self.p.cost(self.d.lat[u, dst], u, np.float64(up))) + self.add[dst]
        down = self._lv(src, int(self.load[src]) - 1)
        out = float(self.p.cost(self.d.lat[u, src], u, np.float64(down))) + self.rem[src]
        return float(ins - out)

    def apply(self, u: int, dst: int) -> None:
        src = int(self.choice[u])
        self.choice[u] = dst
        self.load[src] -= 1
        self.load[dst] += 1
        self._refresh(src)
        self._refresh(dst)

    def round(self, deadline: float) -> int:
        """One pass: best move per user (vectorised), applied in order if still improving."""
        p, data = self.p, self.d
        users = np.arange(p.n_users)
        top = self.cand
        nxt = np.array(
            [self._lv(j, int(self.load[j]) + 1) for j in range(p.n_dcs)], dtype=np.float64
        )
        ins = p.cost(np.take_along_axis(data.lat, top, 1), users[:, None], nxt[top])
        ins = ins + self.add[top]
        ins[top == self.choice[:, None]] = np.inf
        prev = np.array(
            [self._lv(j, int(self.load[j]) - 1) for j in range(p.n_dcs)], dtype=np.float64
        )
        out = p.cost(data.lat[users, self.choice], users, prev[self.choice]) + self.rem[self.choice]
        with np.errstate(invalid="ignore"):
            gain = ins - out[:, None]
        best = np.argmin(gain, axis=1)
        bgain = gain[users, best]
        order = np.flatnonzero(bgain < -MOVE_TOL)
        order = order[np.argsort(bgain[order])]
        applied = 0
        for i, u in enumerate(order.tolist()):
            if i % 256 == 0 and time.perf_counter() > deadline:
                break
            dst = int(top[u, best[u]])
            if self.delta(u, dst) < -MOVE_TOL:
                self.apply(u, dst)
                applied += 1
        return applied


def _smoothed_prices(
    data: _Data, alpha: FloatArray, beta: FloatArray, deadline: float
) -> FloatArray:
    """Prices maximising D(pi, beta) with min/max replaced by soft-min/soft-max (L-BFGS).

    The smoothed D is below the exact one; only the prices are kept. Work is
    in float32 with DCs as rows, so reductions run over contiguous memory.
    """
    nd = data.p.n_dcs
    at = np.ascontiguousarray(alpha.T, dtype=np.float32)
    at[~np.isfinite(at)] = np.float32(1e30)
    buf = np.empty_like(at)
    h = beta[:, None] * data.padded
    ng = data.n_grid[None, :]

    def fun(pi: FloatArray, mu: float) -> tuple[float, FloatArray]:
        np.add(at, pi.astype(np.float32)[:, None], out=buf)
        vmin = buf.min(axis=0)
        np.subtract(vmin[None, :], buf, out=buf)
        np.multiply(buf, np.float32(1.0 / mu), out=buf)
        np.exp(buf, out=buf)
        s = buf.sum(axis=0, dtype=np.float32).astype(np.float64)
        s1 = float(np.sum(vmin.astype(np.float64) - mu * np.log(s)))
        np.multiply(buf, (1.0 / s).astype(np.float32)[None, :], out=buf)
        grad = buf.sum(axis=1, dtype=np.float64)
        w = np.where(data.valid_n, ng * pi[:, None] - h, -np.inf)
        wm = w.max(axis=1, keepdims=True)
        q = np.exp((w - wm) / mu)
        qs = q.sum(axis=1, keepdims=True)
        s2 = float(np.sum(wm[:, 0] + mu * np.log(qs[:, 0])))
        grad -= (q / qs * ng).sum(axis=1)
        return -(s1 - s2), -grad

    pi = np.zeros(nd)
    for mu in TEMPERATURES:
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        res = minimize(
            fun,
            pi,
            args=(mu,),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 80, "gtol": 1e-6, "ftol": 1e-12, "maxcor": 20},
            callback=_stop_at(deadline),
        )
        pi = np.asarray(res.x, dtype=np.float64)
    return pi


def _stop_at(deadline: float) -> object:
    def cb(*_: object) -> None:
        if time.perf_counter() > deadline:
            raise StopIteration

    return cb


def _primal(
    data: _Data, alpha: FloatArray, pi: FloatArray, beta: FloatArray
) -> tuple[IntArray, IntArray]:
    """Round the prices: DC loads as the dual picks them, users by decreasing regret.

    Each DC takes at most its load at the prices, argmax_n n pi_d - beta_d n
    L_d(n) (raised towards its room if those loads cannot hold every user);
    users whose second choice is much worse than their first choose first.
    """
    p = data.p
    red = alpha + pi[None, :]
    k = min(TOP_K, p.n_dcs)
    if k < p.n_dcs:
        cand = np.argpartition(red, k - 1, axis=1)[:, :k]
    else:
        cand = np.broadcast_to(np.arange(p.n_dcs), red.shape).copy()
    rc = np.take_along_axis(red, cand, 1)
    order = np.argsort(rc, axis=1)
    cand = np.take_along_axis(cand, order, 1)
    rc = np.take_along_axis(rc, order, 1)
    w = np.where(
        data.valid_n, data.n_grid[None, :] * pi[:, None] - beta[:, None] * data.padded, -np.inf
    )
    cap = w.argmax(axis=1).astype(np.int64)
    short = p.n_users - int(cap.sum())
    if short > 0:
        spare = data.room - cap
        add = np.floor(spare * short / max(1, int(spare.sum())) + 1).astype(np.int64)
        cap = np.minimum(data.room, cap + add)
    regret = rc[:, 1] - rc[:, 0] if k > 1 else np.zeros(p.n_users)
    choice = np.full(p.n_users, -1, dtype=np.int64)
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
    room_left = data.room - np.bincount(choice[choice >= 0], minlength=p.n_dcs)
    for u in np.flatnonzero(choice < 0).tolist():
        ok = np.isfinite(red[u]) & (room_left > 0)
        if not ok.any():
            raise InfeasibleError(
                "users",
                p.n_users,
                "infeasible: the allowed DCs cannot take every user within capacity",
            )
        d = int(np.flatnonzero(ok)[np.argmin(red[u, ok])])
        choice[u] = d
        room_left[d] -= 1
    return choice, cand


def solve_lagrange(p: AssignProblem, time_limit: float | None = None) -> AssignResult:
    start = time.perf_counter()
    deadline = start + (time_limit if time_limit is not None else 60.0)
    p.check_feasible()
    data = _prepare(p)
    nd = p.n_dcs
    beta = np.full(nd, 1.0 / float(np.median(p.bound)))
    alpha, _ = _dense_alphas(data, beta)
    pi = _smoothed_prices(data, alpha, beta, start + 0.6 * (deadline - start))
    bound = _dual_value(data, alpha, pi, beta)
    # The no-congestion bound (beta = 0, pi = 0) is sometimes better on tiny instances.
    alpha0, _ = _dense_alphas(data, np.zeros(nd))
    bound = max(bound, _dual_value(data, alpha0, np.zeros(nd), np.zeros(nd)))
    t_bound = time.perf_counter() - start
    choice, cand = _primal(data, alpha, pi, beta)
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
