"""The ``lagrange`` solve with its users split into partitions (docs/assign.md).

The dual separates: D(pi, beta) = sum over partitions of sum_u min_d (alpha_ud + pi_d)
minus a term of the DCs alone. A coordinator holds the DCs (:class:`Instance`) and
the prices; each partition holds its users' rows (:class:`Part`) where they were
built, and returns per call only sums over its users (a value, a gradient, loads).
How a call reaches the partitions is the caller's :class:`Partitions`: in memory
(:class:`LocalPartitions`) or as tasks on a cluster, so this module knows no executor.

Every step has a fixed budget (iterations, rounds), never a deadline: the same
partitioning gives the same numbers on any machine and any cluster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Protocol, TypeVar

import numpy as np

from pacao.optimize.assign.lagrange import (
    DcTables,
    SoftUsers,
    _dense_alphas,
    _Moves,
    _prepare,
    fill_room,
    maximise,
    round_prices,
    user_terms,
)
from pacao.optimize.assign.model import (
    AssignProblem,
    InfeasibleError,
    LatencyFunction,
    dc_levels,
    dc_room,
)
from pacao.optimize.penalty import FloatArray, IntArray

M = TypeVar("M")
R = TypeVar("R")

#: Net load change per DC and improvement round, shared by the partitions by size.
WINDOW = 1024
#: Improvement rounds (each: propose per partition, check the union, commit).
ROUNDS = 20
#: Evaluations of the smoothed dual per temperature (each one task per partition).
EVALUATIONS = 120
#: Move passes a partition makes per round.
LOCAL_PASSES = 20


@dataclass(frozen=True)
class Instance:
    """The DCs of an instance and its total number of users (what the coordinator holds)."""

    dc_names: tuple[str, ...]
    capacity: FloatArray
    existing: FloatArray
    functions: tuple[LatencyFunction, ...]
    n_users: int
    integer_penalty: bool = False

    @property
    def n_dcs(self) -> int:
        return len(self.dc_names)

    @cached_property
    def tables(self) -> DcTables:
        room = dc_room(self.capacity, self.existing, self.n_users)
        return DcTables(room, dc_levels(self.functions, self.capacity, self.existing, room))


@dataclass(frozen=True)
class Part:
    """One partition's users and their state in the solve (built where it is kept)."""

    inst: Instance
    problem: AssignProblem  # this partition's users against the instance's DCs
    lat: FloatArray  # (users, DCs), +inf where not allowed
    alpha: FloatArray | None = None
    soft: SoftUsers | None = field(default=None, repr=False)
    choice: IntArray | None = None
    cand: IntArray | None = None
    own: FloatArray | None = None  # own users' cost per DC over the load window
    proposal: IntArray | None = None

    @property
    def n_users(self) -> int:
        return self.problem.n_users

    def assigned(self) -> IntArray:
        if self.choice is None:
            raise ValueError("the partition has no assignment yet")
        return self.choice


def make_part(
    inst: Instance, user_ids: Sequence[str], bound: FloatArray, latency: FloatArray
) -> Part:
    """A partition of ``inst``: its users' ids, bounds LT_u and latencies l_ud (NaN: not
    allowed). Raises InfeasibleError for a user with no allowed DC that has room."""
    problem = AssignProblem(
        dc_names=inst.dc_names,
        capacity=inst.capacity,
        existing=inst.existing,
        functions=inst.functions,
        user_ids=tuple(user_ids),
        bound=np.asarray(bound, dtype=np.float64),
        latency=np.asarray(latency, dtype=np.float64),
        integer_penalty=inst.integer_penalty,
    )
    lat = _prepare(problem, inst.tables).lat
    # One users x DCs array: the problem's latencies are the solve's (+inf = not allowed).
    return Part(inst, replace(problem, latency=lat), lat)


class Partitions(Protocol):
    """Runs a function on some partitions where they are kept; results in key order.

    ``update`` replaces each partition by the first item its function returns.
    """

    def __len__(self) -> int: ...

    def map(self, fn: Callable[[Part, M], R], msgs: Mapping[int, M]) -> list[R]: ...

    def update(self, fn: Callable[[Part, M], tuple[Part, R]], msgs: Mapping[int, M]) -> list[R]: ...


class LocalPartitions:
    """Partitions in this process (tests, and instances that fit in memory)."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts = list(parts)

    def __len__(self) -> int:
        return len(self.parts)

    def map(self, fn: Callable[[Part, M], R], msgs: Mapping[int, M]) -> list[R]:
        return [fn(self.parts[i], m) for i, m in msgs.items()]

    def update(self, fn: Callable[[Part, M], tuple[Part, R]], msgs: Mapping[int, M]) -> list[R]:
        out = []
        for i, m in msgs.items():
            self.parts[i], r = fn(self.parts[i], m)
            out.append(r)
        return out


def every(parts: Partitions, msg: M) -> dict[int, M]:
    """The same message for every partition."""
    return dict.fromkeys(range(len(parts)), msg)


# --------------------------------------------------------------------------- partition steps
# Module-level functions, so a cluster can ship them to the partitions.


def part_bounds(part: Part, _: None) -> tuple[FloatArray, IntArray]:
    """The distinct LT_u of the partition and how many users have each."""
    v, c = np.unique(part.problem.bound, return_counts=True)
    return v, c.astype(np.int64)


def part_alphas(part: Part, beta: FloatArray) -> tuple[Part, None]:
    alpha, _ = _dense_alphas(_prepare(part.problem, part.inst.tables), beta)
    return replace(part, alpha=alpha, soft=SoftUsers(alpha)), None


def part_soft(part: Part, msg: tuple[FloatArray, float]) -> tuple[float, FloatArray]:
    """The smoothed users' term and its gradient at the broadcast prices."""
    assert part.soft is not None
    return part.soft(msg[0], msg[1])


def part_dual(part: Part, pi: FloatArray) -> tuple[float, float]:
    """The exact users' terms: at (pi, beta), and at (0, 0) (the congestion-free bound)."""
    assert part.alpha is not None
    alpha0, _ = _dense_alphas(_prepare(part.problem, part.inst.tables), np.zeros(part.inst.n_dcs))
    return user_terms(part.alpha, pi), user_terms(alpha0, np.zeros(part.inst.n_dcs))


def part_round(
    part: Part, msg: tuple[FloatArray, IntArray, IntArray]
) -> tuple[Part, tuple[IntArray, int]]:
    """Round the prices within this partition's shares of each DC's load and room."""
    pi, cap, room = msg
    assert part.alpha is not None
    choice, cand = round_prices(part.alpha + pi[None, :], cap, room, strict=False)
    load = np.bincount(choice[choice >= 0], minlength=part.inst.n_dcs)
    return replace(part, choice=choice, cand=cand), (load, int(np.sum(choice < 0)))


def part_fill(part: Part, msg: tuple[FloatArray, IntArray]) -> tuple[Part, tuple[IntArray, int]]:
    """Users left out by the shares take their cheapest DC with global room left."""
    pi, room_left = msg
    assert part.alpha is not None and part.choice is not None
    choice = part.choice.copy()
    left = room_left.copy()
    fill_room(part.alpha + pi[None, :], choice, left, strict=False)
    return replace(part, choice=choice), (room_left - left, int(np.sum(choice < 0)))


def _window_levels(part: Part, load: IntArray, width: int) -> tuple[IntArray, np.ndarray]:
    """Loads N_d - width .. N_d + width per DC, and which of them exist (0 .. room_d)."""
    n = load[:, None] + np.arange(-width, width + 1)[None, :]
    ok = (n >= 0) & (n <= part.inst.tables.room[:, None])
    return np.where(ok, n, 0), ok


def part_window(part: Part, msg: tuple[IntArray, int, bool]) -> tuple[Part, FloatArray]:
    """Per DC, the cost of this partition's users on it at every load of the window
    (zeros when it is the only partition: nobody else's cost to tell apart)."""
    load, width, alone = msg
    choice = part.assigned()
    n, ok = _window_levels(part, load, width)
    own = np.zeros(n.shape)
    if alone:
        return replace(part, own=own), own
    levels = part.inst.tables.levels
    for j in range(part.inst.n_dcs):
        members = np.flatnonzero(choice == j)
        if members.size == 0:
            continue
        lv = levels[j][n[j]]
        cost = part.problem.cost(part.lat[members, j][:, None], members[:, None], lv[None, :])
        own[j] = np.where(ok[j], cost.sum(axis=0), 0.0)
    return replace(part, own=own), own


@dataclass(frozen=True)
class Proposal:
    """What a partition's moves would change: loads per DC, users moved, claimed gain."""

    load_change: IntArray
    moved: int
    gain: float


def part_propose(
    part: Part, msg: tuple[IntArray, IntArray, IntArray, FloatArray, int]
) -> tuple[Part, Proposal]:
    """Exact single-user moves of this partition's users, the others' assignment fixed:
    ``total`` (every partition's cost per DC over the window) minus this partition's
    own gives the others' cost at each load this partition may reach (``lo`` .. ``hi``)."""
    load, lo, hi, total, width = msg
    assert part.own is not None and part.cand is not None
    choice = part.assigned()
    others_all = total - part.own  # indexed n - (N_d - width)
    span = int(np.max(hi - lo)) + 1
    others = np.zeros((part.inst.n_dcs, span))
    for j in range(part.inst.n_dcs):
        a = int(lo[j] - (load[j] - width))
        k = int(hi[j] - lo[j]) + 1
        others[j, :k] = others_all[j, a : a + k]
    data = _prepare(part.problem, part.inst.tables)
    moves = _Moves(data, choice, part.cand, load=load, lo=lo, hi=hi, others=others)
    for _ in range(LOCAL_PASSES):
        if moves.round() == 0:
            break
    new = moves.choice
    change = np.bincount(new, minlength=part.inst.n_dcs) - np.bincount(
        choice, minlength=part.inst.n_dcs
    )
    return replace(part, proposal=new), Proposal(
        change.astype(np.int64), int(np.sum(new != choice)), moves.gain
    )


def part_cost(part: Part, msg: tuple[FloatArray, bool]) -> float:
    """sum of T_u over this partition's users at the congestion levels ``msg[0]``, with
    its proposal (``msg[1]``) or its current assignment."""
    level, proposed = msg
    choice = part.proposal if proposed and part.proposal is not None else part.assigned()
    users = np.arange(part.n_users)
    t = part.problem.cost(part.lat[users, choice], users, level[choice])
    return math.fsum(t.tolist())


def part_commit(part: Part, accept: bool) -> tuple[Part, None]:
    choice = part.proposal if accept and part.proposal is not None else part.choice
    return replace(part, choice=choice, proposal=None, own=None), None


def part_choice(part: Part, _: None) -> IntArray:
    return part.assigned()


# --------------------------------------------------------------------------- coordinator


def split(total: IntArray, sizes: Sequence[int]) -> IntArray:
    """Shares (partitions x DCs) of ``total`` proportional to ``sizes``: floors, then the
    largest remainders (ties to the lower partition); each column sums to ``total``."""
    s = np.asarray(sizes, dtype=np.int64)[:, None]
    whole = int(s.sum())
    t = np.asarray(total, dtype=np.int64)[None, :]
    share = t * s // whole
    rem = t * s % whole
    left = total - share.sum(axis=0)
    rank = np.argsort(np.argsort(-rem, axis=0, kind="stable"), axis=0, kind="stable")
    out: IntArray = share + (rank < left[None, :])
    return out


def median_of_counts(values: Sequence[FloatArray], counts: Sequence[IntArray]) -> float:
    """np.median of the values repeated by their counts, from the counts."""
    v = np.concatenate(list(values))
    c = np.concatenate(list(counts))
    order = np.argsort(v, kind="stable")
    v, cum = v[order], np.cumsum(c[order])
    n = int(cum[-1])
    lo = v[np.searchsorted(cum, (n - 1) // 2, side="right")]
    hi = v[np.searchsorted(cum, n // 2, side="right")]
    return float(np.median(np.array([lo, hi])))


@dataclass(frozen=True)
class PartitionedResult:
    """The solve's figures; each partition keeps its users' DCs (:func:`part_choice`)."""

    objective: float
    lower_bound: float
    load: IntArray  # new users per DC
    congestion_ms: FloatArray  # f_d at that load
    sizes: tuple[int, ...]
    notes: dict[str, float | int] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return max(0.0, (self.objective - self.lower_bound) / self.objective)


def _levels_at(inst: Instance, load: IntArray) -> FloatArray:
    return np.array([float(inst.tables.levels[d][int(load[d])]) for d in range(inst.n_dcs)])


def solve_partitioned(
    inst: Instance,
    parts: Partitions,
    *,
    rounds: int = ROUNDS,
    window: int = WINDOW,
    advance: Callable[[int], None] = lambda n: None,
) -> PartitionedResult:
    """The lagrange solve of ``inst`` over ``parts`` (docs/assign.md). ``advance(k)`` is
    told after every call that ran k partition tasks."""
    tables = inst.tables
    nd, n_parts = inst.n_dcs, len(parts)
    tasks = [0]

    def did(k: int) -> None:
        tasks[0] += k
        advance(k)

    if int(tables.room.sum()) < inst.n_users:
        raise InfeasibleError(
            "dcs",
            f"room for {int(tables.room.sum())} users",
            f"infeasible: {inst.n_users} users need capacity - existing >= {inst.n_users}",
        )
    counted = parts.map(part_bounds, every(parts, None))
    did(n_parts)
    sizes = [int(c.sum()) for _, c in counted]
    if sum(sizes) != inst.n_users:
        raise ValueError(f"the partitions hold {sum(sizes)} users, the instance {inst.n_users}")
    beta = np.full(nd, 1.0 / median_of_counts([v for v, _ in counted], [c for _, c in counted]))
    parts.update(part_alphas, every(parts, beta))
    did(n_parts)

    evaluations = [0]

    def fun(pi: FloatArray, mu: float) -> tuple[float, FloatArray]:
        evaluations[0] += 1
        res = parts.map(part_soft, every(parts, (pi, mu)))
        did(n_parts)
        v1, g1 = 0.0, np.zeros(nd)
        for v, g in res:
            v1 += v
            g1 = g1 + g
        v2, g2 = tables.soft_terms(pi, beta, mu)
        return v1 - v2, g1 - g2

    pi = maximise(fun, nd, max_evaluations=EVALUATIONS)
    duals = parts.map(part_dual, every(parts, pi))
    did(n_parts)
    bound = max(
        math.fsum(u for u, _ in duals) - math.fsum(tables.terms(pi, beta).tolist()),
        math.fsum(u0 for _, u0 in duals),
    )

    # Primal: the prices rounded within each partition's shares, then global room.
    cap = tables.caps(pi, beta, inst.n_users)
    room_share = split(tables.room, sizes)
    cap_share = np.minimum(split(cap, sizes), room_share)
    res = parts.update(part_round, {i: (pi, cap_share[i], room_share[i]) for i in range(n_parts)})
    did(n_parts)
    load = np.sum([r[0] for r in res], axis=0).astype(np.int64)
    for i, (_, unplaced) in enumerate(res):
        if unplaced:
            ((added, still),) = parts.update(part_fill, {i: (pi, tables.room - load)})
            did(1)
            load = load + added
            if still:
                raise InfeasibleError(
                    "users",
                    inst.n_users,
                    "infeasible: the allowed DCs cannot take every user within capacity",
                )

    def objective(at: IntArray, proposed: Mapping[int, bool]) -> float:
        level = _levels_at(inst, at)
        costs = parts.map(part_cost, {i: (level, proposed.get(i, False)) for i in range(n_parts)})
        did(n_parts)
        return math.fsum(costs)

    obj = objective(load, {})
    first = obj
    widths = [max(1, -(-window * s // inst.n_users)) for s in sizes]
    width = max(widths)
    accepted = 0
    for _ in range(rounds):
        own = parts.update(part_window, every(parts, (load, width, n_parts == 1)))
        did(n_parts)
        total = np.sum(own, axis=0)
        quota = split(tables.room - load, sizes)
        msgs = {
            i: (
                load,
                np.maximum(load - widths[i], 0),
                np.minimum(load + np.minimum(widths[i], quota[i]), tables.room),
                total,
                width,
            )
            for i in range(n_parts)
        }
        props = parts.update(part_propose, msgs)
        did(n_parts)
        movers = sorted(
            (i for i, p in enumerate(props) if p.moved), key=lambda i: (props[i].gain, i)
        )
        take: list[int] = []
        new_obj, new_load = obj, load
        k = len(movers)
        while k:
            cand = movers[:k]
            cand_load = load + np.sum([props[i].load_change for i in cand], axis=0)
            cand_obj = objective(cand_load, dict.fromkeys(cand, True))
            if cand_obj < obj:
                take, new_obj, new_load = cand, cand_obj, cand_load
                break
            k //= 2
        parts.update(part_commit, {i: i in take for i in range(n_parts)})
        did(n_parts)
        if not take:
            break
        accepted += 1
        obj, load = new_obj, new_load.astype(np.int64)
    if bound > obj * (1 + 1e-9) + 1e-9:
        raise AssertionError(f"lower bound {bound} above objective {obj}")
    return PartitionedResult(
        objective=obj,
        lower_bound=min(bound, obj),
        load=load,
        congestion_ms=_levels_at(inst, load),
        sizes=tuple(sizes),
        notes={
            "dual_evaluations": evaluations[0],
            "price_assignment_objective": round(first, 6),
            "improvement_rounds": accepted,
            "tasks": tasks[0],
        },
    )
