"""Data model of the congestion-aware multi-user assignment (paper eq. 4-9, corrected).

Users u are assigned to DCs d. DC d has capacity C_d and e_d existing users;
its congestion latency is f_d(x_d), a convex piecewise-linear function of the
load fraction x_d = (n_d + e_d) / C_d. User u on d sees l_ud + f_d(x_d) and pays

    T_u = max(1, (l_ud + f_d(x_d)) / LT_u)           (continuous, the default)
    T_u = max(1, ceil((l_ud + f_d(x_d)) / LT_u))     (integer_penalty, the paper's)

The objective is sum_u T_u. :func:`evaluate` computes it from that definition
alone: every solver's reported objective is this function of its assignment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pacao.errors import InputError
from pacao.optimize.penalty import FloatArray, IntArray, penalties_from_ratios

#: Slopes may decrease by this much (relative) and still count as convex: float input noise.
CONVEXITY_TOL = 1e-9


class InfeasibleError(InputError):
    """The instance has no feasible assignment (capacity, or a user with no allowed DC)."""


@dataclass(frozen=True)
class LatencyFunction:
    """Convex, nondecreasing piecewise-linear f(x) of the load fraction x in [0, 1].

    ``loads`` start at 0, increase strictly and reach at least 1 (a DC can be
    filled to capacity, so f must be defined there); ``ms`` are the latencies.
    """

    loads: tuple[float, ...]
    ms: tuple[float, ...]

    @staticmethod
    def from_breakpoints(points: object, field_name: str) -> LatencyFunction:
        """Validate ``[[load, ms], ...]`` with an error naming the field and value."""
        if not isinstance(points, Sequence) or isinstance(points, str) or len(points) < 2:
            raise InputError(field_name, points, "expected a list of at least 2 [load, ms] pairs")
        loads: list[float] = []
        ms: list[float] = []
        for i, p in enumerate(points):
            where = f"{field_name}[{i}]"
            if not isinstance(p, Sequence) or isinstance(p, str) or len(p) != 2:
                raise InputError(where, p, "expected a [load, ms] pair")
            for j, v in enumerate(p):
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise InputError(f"{where}[{j}]", v, "expected a finite number")
            loads.append(float(p[0]))
            ms.append(float(p[1]))
        if loads[0] != 0.0:
            raise InputError(f"{field_name}[0][0]", loads[0], "the first load must be 0")
        if loads[-1] < 1.0:
            raise InputError(
                f"{field_name}[{len(loads) - 1}][0]",
                loads[-1],
                "the last load must be >= 1 (f must cover a DC filled to capacity)",
            )
        if ms[0] < 0:
            raise InputError(f"{field_name}[0][1]", ms[0], "latency must be >= 0 ms")
        slopes: list[float] = []
        for i in range(1, len(loads)):
            if loads[i] <= loads[i - 1]:
                raise InputError(f"{field_name}[{i}][0]", loads[i], "loads must increase strictly")
            if ms[i] < ms[i - 1]:
                raise InputError(
                    f"{field_name}[{i}][1]",
                    ms[i],
                    f"latency must not decrease with load (previous point has {ms[i - 1]:g} ms)",
                )
            slopes.append((ms[i] - ms[i - 1]) / (loads[i] - loads[i - 1]))
        for i in range(1, len(slopes)):
            if slopes[i] < slopes[i - 1] * (1 - CONVEXITY_TOL) - CONVEXITY_TOL:
                raise InputError(
                    f"{field_name}[{i + 1}]",
                    [loads[i + 1], ms[i + 1]],
                    f"f must be convex: slope {slopes[i]:g} ms/load after {slopes[i - 1]:g}",
                )
        return LatencyFunction(tuple(loads), tuple(ms))

    def __call__(self, x: FloatArray | float) -> FloatArray:
        return np.asarray(np.interp(x, self.loads, self.ms), dtype=np.float64)

    def pieces(self) -> list[tuple[float, float]]:
        """(slope a_i, intercept b_i) per segment: f(x) = max_i (a_i x + b_i) on [0, x_max]."""
        out: list[tuple[float, float]] = []
        for i in range(1, len(self.loads)):
            a = (self.ms[i] - self.ms[i - 1]) / (self.loads[i] - self.loads[i - 1])
            out.append((a, self.ms[i - 1] - a * self.loads[i - 1]))
        return out


@dataclass(frozen=True)
class AssignProblem:
    """An instance: arrays indexed [user, dc]; NaN latency = DC not allowed for that user."""

    dc_names: tuple[str, ...]
    capacity: FloatArray  # C_d > 0
    existing: FloatArray  # e_d >= 0
    functions: tuple[LatencyFunction, ...]  # f_d
    user_ids: tuple[str, ...]
    bound: FloatArray  # LT_u > 0
    latency: FloatArray  # l_ud >= 0 or NaN
    integer_penalty: bool = False
    _cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_dcs(self) -> int:
        return len(self.dc_names)

    @property
    def allowed(self) -> np.ndarray:
        return np.isfinite(self.latency)

    @property
    def room(self) -> IntArray:
        """How many new users each DC can take here: min(floor(C_d - e_d), |U|) (1e-9 slack).

        No assignment puts more than |U| users on one DC, so the cap at |U| changes
        no feasible set and keeps every per-DC table (levels, the dual's n grid)
        at |U| + 1 entries whatever the capacity: 1e12, 1e300 or unlimited.
        It is taken in floating point before the cast, so no capacity overflows int64.
        """
        return dc_room(self.capacity, self.existing, self.n_users)

    def level(self, d: int, n: IntArray | int) -> FloatArray:
        """Congestion latency f_d((n + e_d) / C_d) of DC d with n new users."""
        x = (np.asarray(n, dtype=np.float64) + self.existing[d]) / self.capacity[d]
        return self.functions[d](x)

    def levels(self) -> list[FloatArray]:
        """Per DC, the congestion latency for n = 0 .. room_d new users (cached)."""
        cached = self._cache.get("levels")
        if cached is None:
            cached = dc_levels(self.functions, self.capacity, self.existing, self.room)
            self._cache["levels"] = cached
        assert isinstance(cached, list)
        return cached

    def check_feasible(self) -> None:
        """Raise InfeasibleError for the obvious infeasibilities (the solvers find the rest)."""
        room = self.room
        usable = self.allowed & (room >= 1)[None, :]
        none = np.flatnonzero(~usable.any(axis=1))
        if none.size:
            u = int(none[0])
            raise InfeasibleError(
                f"users[{u}].latency_ms",
                self.user_ids[u],
                "infeasible: none of this user's DCs has room left",
            )
        total = int(room.sum())
        if total < self.n_users:
            raise InfeasibleError(
                "dcs",
                f"room for {total} users",
                f"infeasible: {self.n_users} users need capacity - existing >= {self.n_users}",
            )
        # Per DC subset check would be Hall's condition; per single user it is above, and
        # users restricted to a few DCs are checked by flow feasibility in the solvers.

    def cost(
        self,
        lat: FloatArray | float,
        user_idx: IntArray | slice | int,
        congestion: FloatArray | float,
    ) -> FloatArray:
        """T_u for users ``user_idx`` with total latency l_ud + congestion (arrays broadcast)."""
        ratio = np.asarray((lat + congestion) / self.bound[user_idx], dtype=np.float64)
        return penalty(ratio, self.integer_penalty)


def dc_room(capacity: FloatArray, existing: FloatArray, n_users: int) -> IntArray:
    """min(floor(C_d - e_d), |U|) per DC, in floating point before the cast (1e-9 slack)."""
    free = np.floor(capacity - existing + 1e-9)
    out: IntArray = np.minimum(free, float(n_users)).astype(np.int64)
    return out


def dc_levels(
    functions: Sequence[LatencyFunction],
    capacity: FloatArray,
    existing: FloatArray,
    room: IntArray,
) -> list[FloatArray]:
    """Per DC, f_d((n + e_d) / C_d) for n = 0 .. room_d new users."""
    return [
        functions[d]((np.arange(int(room[d]) + 1, dtype=np.float64) + existing[d]) / capacity[d])
        for d in range(len(functions))
    ]


def penalty(ratio: FloatArray, integer: bool) -> FloatArray:
    """max(1, ratio), or max(1, ceil(ratio)) with the single-user optimizer's tolerances."""
    if integer:
        ratio = np.asarray(penalties_from_ratios(ratio), dtype=np.float64)
    out: FloatArray = np.maximum(ratio, 1.0)
    return out


@dataclass(frozen=True)
class Evaluation:
    """An assignment scored from the definition."""

    objective: float
    penalties: FloatArray  # T_u
    load: IntArray  # n_d (new users)
    congestion_ms: FloatArray  # f_d(x_d)


def evaluate(problem: AssignProblem, choice: IntArray) -> Evaluation:
    """Objective sum_u T_u of ``choice`` (DC index per user); checks it is feasible."""
    choice = np.asarray(choice, dtype=np.int64)
    if choice.shape != (problem.n_users,):
        raise ValueError("one DC index per user expected")
    users = np.arange(problem.n_users)
    lat = problem.latency[users, choice]
    if not np.all(np.isfinite(lat)):
        raise ValueError("assignment uses a DC not allowed for a user")
    load = np.bincount(choice, minlength=problem.n_dcs).astype(np.int64)
    if np.any(load > problem.room):
        raise ValueError("assignment exceeds a DC's capacity")
    congestion = np.array([float(problem.level(d, int(load[d]))) for d in range(problem.n_dcs)])
    t = problem.cost(lat, users, congestion[choice])
    return Evaluation(math.fsum(t.tolist()), t, load, congestion)


@dataclass(frozen=True)
class AssignResult:
    """What every solver returns. ``lower_bound`` is None when the solver proves none."""

    solver: str
    choice: IntArray
    evaluation: Evaluation
    lower_bound: float | None
    seconds: float
    optimal: bool = False
    notes: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def objective(self) -> float:
        return self.evaluation.objective

    @property
    def gap(self) -> float | None:
        """(objective - lower_bound) / objective, the relative gap the output claims."""
        if self.lower_bound is None:
            return None
        return max(0.0, (self.objective - self.lower_bound) / self.objective)

    def to_dict(self, problem: AssignProblem) -> dict[str, object]:
        ev = self.evaluation
        return {
            "solver": self.solver,
            "objective": self.objective,
            "lower_bound": self.lower_bound,
            "gap": self.gap,
            "optimal": self.optimal,
            "seconds": round(self.seconds, 4),
            "integer_penalty": problem.integer_penalty,
            "assignment": {
                problem.user_ids[u]: problem.dc_names[int(d)] for u, d in enumerate(self.choice)
            },
            "dc_load": {name: int(ev.load[d]) for d, name in enumerate(problem.dc_names)},
            "dc_load_fraction": {
                name: float((ev.load[d] + problem.existing[d]) / problem.capacity[d])
                for d, name in enumerate(problem.dc_names)
            },
            "dc_latency_ms": {
                name: float(ev.congestion_ms[d]) for d, name in enumerate(problem.dc_names)
            },
            **({"notes": dict(self.notes)} if self.notes else {}),
        }
