"""Read a single-user problem from YAML or JSON (format in docs/input-formats.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pacao.errors import InputError
from pacao.io import load_document
from pacao.optimize.model import Candidate, Criterion, Mode, Problem

_TOP_KEYS = {"mode", "criteria", "candidates", "demand"}
_CRITERION_KEYS = {"weight", "max"}
_CANDIDATE_FIXED = {"name", "available", "residual"}


def _mapping(field: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(field, value, "expected a mapping")
    for key in value:
        if not isinstance(key, str):
            raise InputError(field, key, "keys must be strings")
    return value


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(field, value, "expected a number")
    return float(value)


def problem_from_dict(doc: Any) -> Problem:
    doc = _mapping("<document>", doc)
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise InputError(unknown[0], doc[unknown[0]], f"unknown key; allowed: {sorted(_TOP_KEYS)}")
    if "mode" not in doc:
        raise InputError("mode", None, "required: 'rloc' or 'vm'")
    try:
        mode = Mode(doc["mode"])
    except ValueError:
        raise InputError("mode", doc["mode"], "allowed: 'rloc' or 'vm'") from None
    if "criteria" not in doc:
        raise InputError("criteria", None, "required: a mapping of criterion name to {weight, max}")
    criteria: list[Criterion] = []
    for name, spec in _mapping("criteria", doc["criteria"]).items():
        spec = _mapping(f"criteria.{name}", spec)
        bad = sorted(set(spec) - _CRITERION_KEYS)
        if bad:
            raise InputError(
                f"criteria.{name}.{bad[0]}", spec[bad[0]], "unknown key; allowed: weight, max"
            )
        if "weight" not in spec:
            raise InputError(f"criteria.{name}.weight", None, "required: a number in [0, 1]")
        bound = spec.get("max")
        criteria.append(
            Criterion(
                name=name,
                weight=_number(f"criteria.{name}.weight", spec["weight"]),
                bound=None if bound is None else _number(f"criteria.{name}.max", bound),
            )
        )
    demand: dict[str, float] = {}
    if "demand" in doc:
        for k, v in _mapping("demand", doc["demand"]).items():
            demand[k] = _number(f"demand.{k}", v)
    if "candidates" not in doc:
        raise InputError("candidates", None, "required: a non-empty list")
    raw = doc["candidates"]
    if not isinstance(raw, list):
        raise InputError("candidates", raw, "expected a list")
    crit_names = {c.name for c in criteria}
    candidates: list[Candidate] = []
    for i, item in enumerate(raw):
        where = f"candidates[{i}]"
        item = _mapping(where, item)
        if "name" not in item:
            raise InputError(f"{where}.name", None, "required")
        name = item["name"]
        if not isinstance(name, str | int) or isinstance(name, bool):
            raise InputError(f"{where}.name", name, "expected a string")
        available = item.get("available", True)
        if not isinstance(available, bool):
            raise InputError(f"{where}.available", available, "expected true or false")
        metrics: dict[str, float] = {}
        for key, value in item.items():
            if key in _CANDIDATE_FIXED:
                continue
            if key not in crit_names:
                allowed = sorted(_CANDIDATE_FIXED | crit_names)
                raise InputError(f"{where}.{key}", value, f"unknown key; allowed: {allowed}")
            metrics[key] = _number(f"{where}.{key}", value)
        residual: dict[str, float] = {}
        if "residual" in item:
            for k, v in _mapping(f"{where}.residual", item["residual"]).items():
                residual[k] = _number(f"{where}.residual.{k}", v)
        candidates.append(
            Candidate(name=str(name), metrics=metrics, residual=residual, available=available)
        )
    return Problem(mode=mode, criteria=criteria, candidates=candidates, demand=demand)


def load_problem(path: Path) -> Problem:
    return problem_from_dict(load_document(path))
