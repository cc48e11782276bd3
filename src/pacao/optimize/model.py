"""Data model of the single-user problem (1)-(3): criteria, candidates, decisions.

Both meanings of the paper's model share these types: in RLOC mode a candidate
is a locator (DC entry point), in VM mode a DC that could host the VM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from pacao.errors import InputError
from pacao.validate import non_negative

WEIGHT_SUM_TOLERANCE = 1e-9
#: LISP priority meaning "do not use this locator" (RFC 9300 section 5.4).
PRIORITY_UNUSABLE = 255
#: Highest priority value a usable locator can carry.
PRIORITY_MAX_USABLE = 254


class Mode(StrEnum):
    RLOC = "rloc"
    VM = "vm"


@dataclass(frozen=True)
class Criterion:
    """A criterion k with weight alpha_k.

    ``bound`` is the SLA bound M_k for metric criteria; it is None for a capacity
    criterion, whose bound is each candidate's residual capacity (VM mode).
    """

    name: str
    weight: float
    bound: float | None = None

    @property
    def is_capacity(self) -> bool:
        return self.bound is None


@dataclass(frozen=True)
class Candidate:
    """A locator (RLOC mode) or a host DC (VM mode) with its measured metrics."""

    name: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    residual: Mapping[str, float] = field(default_factory=dict)
    available: bool = True


@dataclass(frozen=True)
class Problem:
    mode: Mode
    criteria: Sequence[Criterion]
    candidates: Sequence[Candidate]
    demand: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_problem(self)


@dataclass(frozen=True)
class RankedCandidate:
    name: str
    objective: float | None
    penalties: Mapping[str, int]
    priority: int
    usable: bool
    reason: str | None = None


@dataclass(frozen=True)
class Decision:
    mode: Mode
    solver: str
    choice: str
    objective: float
    sla_met: bool
    ranking: Sequence[RankedCandidate]

    def to_dict(self) -> dict[str, object]:
        ranking: list[dict[str, object]] = []
        for r in self.ranking:
            row: dict[str, object] = {
                "name": r.name,
                "objective": None if r.objective is None else round(r.objective, 12),
                "penalties": dict(r.penalties),
                "priority": r.priority,
            }
            if r.reason is not None:
                row["reason"] = r.reason
            ranking.append(row)
        return {
            "mode": self.mode.value,
            "solver": self.solver,
            "choice": self.choice,
            "objective": round(self.objective, 12),
            "sla_met": self.sla_met,
            "ranking": ranking,
        }


_NONNEG = "expected a finite number >= 0"


def validate_problem(p: Problem) -> None:
    """Reject anything the model cannot mean; the message names the field."""
    if not p.criteria:
        raise InputError("criteria", [], "at least one criterion is required")
    names = [c.name for c in p.criteria]
    if len(set(names)) != len(names):
        raise InputError("criteria", names, "criterion names must be unique")
    for c in p.criteria:
        w = non_negative(f"criteria.{c.name}.weight", c.weight, _NONNEG)
        if w > 1:
            raise InputError(f"criteria.{c.name}.weight", c.weight, "weights lie in [0, 1]")
        if c.bound is not None:
            b = non_negative(f"criteria.{c.name}.max", c.bound, _NONNEG)
            if b <= 0:
                raise InputError(f"criteria.{c.name}.max", c.bound, "a bound must be > 0")
    total = math.fsum(c.weight for c in p.criteria)
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise InputError(
            "criteria.*.weight", round(total, 12), "the weights must sum to 1 (within 1e-9)"
        )
    capacity = {c.name for c in p.criteria if c.is_capacity}
    if p.mode is Mode.RLOC and capacity:
        k = sorted(capacity)[0]
        raise InputError(f"criteria.{k}.max", None, "every criterion needs a bound in rloc mode")
    if p.mode is Mode.RLOC and p.demand:
        raise InputError("demand", dict(p.demand), "demand is only allowed in vm mode")
    if p.mode is Mode.VM:
        for k in sorted(capacity):
            if k not in p.demand:
                raise InputError(
                    f"criteria.{k}",
                    None,
                    "needs a 'max' bound, or a demand entry making it a capacity criterion",
                )
        for k, v in p.demand.items():
            if k not in capacity:
                allowed = sorted(capacity) or "none (give capacity criteria without 'max')"
                raise InputError(f"demand.{k}", v, f"must name a capacity criterion: {allowed}")
            non_negative(f"demand.{k}", v, _NONNEG)
    if not p.candidates:
        raise InputError("candidates", [], "at least one candidate is required")
    seen: set[str] = set()
    metric_names = [c.name for c in p.criteria if not c.is_capacity]
    for i, cand in enumerate(p.candidates):
        where = f"candidates[{i}]"
        if not cand.name:
            raise InputError(f"{where}.name", cand.name, "a non-empty name is required")
        if cand.name in seen:
            raise InputError(f"{where}.name", cand.name, "candidate names must be unique")
        seen.add(cand.name)
        for k in metric_names:
            if k not in cand.metrics:
                if cand.available:
                    raise InputError(
                        f"{where}.{k}", None, f"candidate {cand.name!r} needs a value for {k!r}"
                    )
                continue
            non_negative(f"{where}.{k}", cand.metrics[k], _NONNEG)
        for k in cand.metrics:
            if k not in metric_names:
                raise InputError(
                    f"{where}.{k}", cand.metrics[k], f"not a metric criterion: {metric_names}"
                )
        for k, v in cand.residual.items():
            if k not in capacity:
                raise InputError(
                    f"{where}.residual.{k}", v, f"not a capacity criterion: {sorted(capacity)}"
                )
            non_negative(f"{where}.residual.{k}", v, _NONNEG)
        if p.mode is Mode.VM and cand.available:
            for k in sorted(capacity):
                if k not in cand.residual:
                    raise InputError(
                        f"{where}.residual.{k}",
                        None,
                        f"candidate {cand.name!r} needs residual {k!r}",
                    )
        if p.mode is Mode.RLOC and cand.residual:
            raise InputError(f"{where}.residual", dict(cand.residual), "only allowed in vm mode")
    if not any(c.available for c in p.candidates):
        raise InputError(
            "candidates", [c.name for c in p.candidates], "at least one must be available"
        )
