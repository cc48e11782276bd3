"""Input checks shared by every front end, each failing with one InputError that names
the field, the value and what is allowed.

The numeric range check (a finite real number, not a bool, within bounds; every call
site states ``allowed`` in its own words) and the pydantic config-file validation
(`parse_model`) that every config schema goes through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import TypeVar, get_args

from pydantic import BaseModel, ValidationError

from pacao.errors import InputError

M = TypeVar("M", bound=BaseModel)


def in_range(
    field: str,
    value: object,
    allowed: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float when finite and within [low, high] (open ends when asked)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(field, value, allowed)
    try:
        v = float(value)
    except OverflowError:  # an integer beyond float range
        raise InputError(field, value, allowed) from None
    if (
        not math.isfinite(v)
        or v < low
        or v > high
        or (low_open and v == low)
        or (high_open and v == high)
    ):
        raise InputError(field, value, allowed)
    return v


def positive(field: str, value: object, allowed: str = "a finite number > 0") -> float:
    """A finite number > 0."""
    return in_range(field, value, allowed, low=0.0, low_open=True)


def non_negative(field: str, value: object, allowed: str = "a finite number >= 0") -> float:
    """A finite number >= 0."""
    return in_range(field, value, allowed, low=0.0)


def integer_in(
    field: str, value: object, low: int, high: int | None = None, allowed: str | None = None
) -> int:
    """An integer (Python or numpy, not a bool) in low..high (no upper end when ``high``
    is None)."""
    if allowed is None:
        allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(field, value, allowed)
    v = int(value)
    if v < low or (high is not None and v > high):
        raise InputError(field, value, allowed)
    return v


def parse_model(model: type[M], doc: object) -> M:
    """Validate a parsed config document with its pydantic schema; the first error
    becomes one InputError naming the key path (``sites[0].key``), the value and what
    is allowed (pydantic's words, then the field's ``description`` when it has one), so
    every config file fails alike (one line, exit status 2)."""
    if not isinstance(doc, dict):
        raise InputError("<document>", doc, "expected a mapping at the top level")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    if loc and loc[-1] == "[key]":  # a bad key of a Literal-keyed mapping: name the key itself
        loc = loc[:-1]
    value = err.get("input") if err["type"] != "missing" else None
    if err["type"] == "extra_forbidden":
        msg = f"unknown key; allowed: {sorted(_model_at(model, loc[:-1]).model_fields)}"
    else:
        field = _model_at(model, loc[:-1]).model_fields.get(str(loc[-1])) if loc else None
        allowed = field.description if field is not None else None
        msg = f"{err['msg']}; allowed: {allowed}" if allowed else err["msg"]
    raise InputError(key_path(loc), value, msg)


def key_path(loc: Sequence[int | str]) -> str:
    """``("sites", 0, "key")`` -> ``sites[0].key``; the empty path is ``<document>``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<document>"


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel]:
    """The (sub)schema that ``loc`` points into, for its keys and their descriptions."""
    cur = model
    for part in loc:
        if isinstance(part, str) and part in cur.model_fields:
            cur = _inner_model(cur.model_fields[part].annotation) or cur
    return cur


def _inner_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
