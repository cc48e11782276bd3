"""Read an assignment instance from YAML or JSON (format in docs/assign.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pacao.errors import InputError
from pacao.io import load_document
from pacao.optimize.assign.model import AssignProblem, LatencyFunction

_TOP = {"dcs", "users", "latency_function", "integer_penalty"}
_DC = {"name", "capacity", "existing", "latency_function"}
_USER = {"id", "bound_ms", "latency_ms"}
_FUNC = {"breakpoints"}


def _mapping(where: str, value: Any, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(where, value, "expected a mapping")
    for k in value:
        if not isinstance(k, str):
            raise InputError(where, k, "keys must be strings")
        if k not in keys:
            raise InputError(f"{where}.{k}", value[k], f"unknown key; allowed: {sorted(keys)}")
    return value


def _number(where: str, value: Any, *, positive: bool = False, unlimited: bool = False) -> float:
    """A number >= 0 (> 0 if ``positive``); +inf (or beyond float range) only if ``unlimited``."""
    allowed = "expected a finite number" + (" or .inf (no limit)" if unlimited else "")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(where, value, allowed)
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number) or (math.isinf(number) and not (unlimited and number > 0)):
        raise InputError(where, value, allowed)
    if positive and number <= 0:
        raise InputError(where, value, "expected a number > 0")
    if number < 0:
        raise InputError(where, value, "expected a number >= 0")
    return number


def _name(where: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise InputError(where, value, "expected a non-empty string")
    return str(value)


def _function(where: str, value: Any) -> LatencyFunction:
    spec = _mapping(where, value, _FUNC)
    if "breakpoints" not in spec:
        raise InputError(f"{where}.breakpoints", None, "required: [[load, ms], ...]")
    return LatencyFunction.from_breakpoints(spec["breakpoints"], f"{where}.breakpoints")


def _list(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise InputError(where, value, "expected a non-empty list")
    return value


def problem_from_dict(doc: Any, *, integer_penalty: bool | None = None) -> AssignProblem:
    """Build and validate an instance; ``integer_penalty`` overrides the document's key."""
    doc = _mapping("<document>", doc, _TOP)
    default = (
        _function("latency_function", doc["latency_function"])
        if "latency_function" in doc
        else None
    )
    if "dcs" not in doc:
        raise InputError("dcs", None, "required: a list of {name, capacity, existing}")
    names: list[str] = []
    cap: list[float] = []
    existing: list[float] = []
    funcs: list[LatencyFunction] = []
    for i, item in enumerate(_list("dcs", doc["dcs"])):
        where = f"dcs[{i}]"
        item = _mapping(where, item, _DC)
        for key in ("name", "capacity"):
            if key not in item:
                raise InputError(f"{where}.{key}", None, "required")
        name = _name(f"{where}.name", item["name"])
        if name in names:
            raise InputError(f"{where}.name", name, "DC names must be unique")
        c = _number(f"{where}.capacity", item["capacity"], positive=True, unlimited=True)
        e = _number(f"{where}.existing", item.get("existing", 0))
        if e > c:
            raise InputError(f"{where}.existing", e, f"must not exceed capacity {c:g}")
        if "latency_function" in item:
            f = _function(f"{where}.latency_function", item["latency_function"])
        elif default is not None:
            f = default
        else:
            raise InputError(
                f"{where}.latency_function", None, "required here or as top-level latency_function"
            )
        names.append(name)
        cap.append(c)
        existing.append(e)
        funcs.append(f)
    index = {n: d for d, n in enumerate(names)}
    if "users" not in doc:
        raise InputError("users", None, "required: a list of {id, bound_ms, latency_ms}")
    raw_users = _list("users", doc["users"])
    ids: list[str] = []
    seen: set[str] = set()
    bounds = np.empty(len(raw_users))
    lat = np.full((len(raw_users), len(names)), np.nan)
    for u, item in enumerate(raw_users):
        where = f"users[{u}]"
        item = _mapping(where, item, _USER)
        for key in ("id", "bound_ms", "latency_ms"):
            if key not in item:
                raise InputError(f"{where}.{key}", None, "required")
        uid = _name(f"{where}.id", item["id"])
        if uid in seen:
            raise InputError(f"{where}.id", uid, "user ids must be unique")
        seen.add(uid)
        ids.append(uid)
        bounds[u] = _number(f"{where}.bound_ms", item["bound_ms"], positive=True)
        lats = item["latency_ms"]
        if not isinstance(lats, Mapping) or not lats:
            raise InputError(f"{where}.latency_ms", lats, "expected a non-empty mapping dc: ms")
        for dc, ms in lats.items():
            if dc not in index:
                raise InputError(f"{where}.latency_ms", dc, f"unknown DC; known: {names}")
            lat[u, index[dc]] = _number(f"{where}.latency_ms.{dc}", ms)
    if integer_penalty is None:
        flag = doc.get("integer_penalty", False)
        if not isinstance(flag, bool):
            raise InputError("integer_penalty", flag, "expected true or false")
        integer_penalty = flag
    return AssignProblem(
        dc_names=tuple(names),
        capacity=np.array(cap),
        existing=np.array(existing),
        functions=tuple(funcs),
        user_ids=tuple(ids),
        bound=bounds,
        latency=lat,
        integer_penalty=integer_penalty,
    )


def load_assign_problem(path: Path, *, integer_penalty: bool | None = None) -> AssignProblem:
    return problem_from_dict(load_document(path), integer_penalty=integer_penalty)
