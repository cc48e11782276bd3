"""Read a single-user problem from YAML or JSON (format in docs/input-formats.md): a
pydantic schema (pacao.validate.parse_model) turned into the model's Problem."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from pacao.errors import InputError
from pacao.io import load_document
from pacao.optimize.model import Candidate, Criterion, Mode, Problem
from pacao.validate import parse_model

_CANDIDATE_FIXED = {"name", "available", "residual"}


def _int_name(value: object) -> object:
    """Candidate names may be written as integers (``name: 7``)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class CriterionDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    weight: Annotated[float, Field(description="a number in [0, 1]")]
    max: float | None = None


class CandidateDoc(BaseModel):
    """Besides name, available and residual, one number per criterion (its metric)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    __pydantic_extra__: dict[str, float] = Field(init=False)

    name: Annotated[str, BeforeValidator(_int_name), Field(description="a string")]
    available: bool = True
    residual: dict[str, float] = {}


class ProblemDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    mode: Annotated[Literal["rloc", "vm"], Field(description="'rloc' or 'vm'")]
    criteria: Annotated[
        dict[str, CriterionDoc],
        Field(description="a mapping of criterion name to {weight, max}"),
    ]
    demand: dict[str, float] = {}
    candidates: Annotated[list[CandidateDoc], Field(description="a non-empty list")]


def problem_from_dict(doc: Any) -> Problem:
    d = parse_model(ProblemDoc, doc)
    criteria = [Criterion(name=n, weight=c.weight, bound=c.max) for n, c in d.criteria.items()]
    allowed = sorted(_CANDIDATE_FIXED | set(d.criteria))
    candidates: list[Candidate] = []
    for i, c in enumerate(d.candidates):
        metrics = dict(c.model_extra or {})
        unknown = next((k for k in metrics if k not in d.criteria), None)
        if unknown is not None:
            raise InputError(
                f"candidates[{i}].{unknown}",
                doc["candidates"][i][unknown],
                f"unknown key; allowed: {allowed}",
            )
        candidates.append(
            Candidate(
                name=c.name, metrics=metrics, residual=dict(c.residual), available=c.available
            )
        )
    return Problem(
        mode=Mode(d.mode), criteria=criteria, candidates=candidates, demand=dict(d.demand)
    )


def load_problem(path: Path) -> Problem:
    return problem_from_dict(load_document(path))
