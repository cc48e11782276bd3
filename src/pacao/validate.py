"""Input checks shared by every front end, each failing with one InputError that names
the field, the value and what is allowed.

The numeric range check (a finite real number, not a bool, within bounds; every call
site states ``allowed`` in its own words) and the pydantic config-file validation
(`parse_model`) that every config schema goes through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import ClassVar, TypeVar, get_args

from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

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


class Schema(BaseModel):
    """A config mapping that words some of its errors itself (the testbed's files, the
    xTR's sub-mappings); a plain BaseModel gets the defaults below. A ``{allowed}`` in a
    message is replaced by the sorted keys of the mapping."""

    #: what an unknown key is told
    unknown_key: ClassVar[str] = "unknown key; allowed: {allowed}"
    #: what a missing key is told (None: pydantic's words and the field's description)
    missing: ClassVar[str | None] = None
    #: what a value that is not a mapping is told (None: "expected a mapping at the top
    #: level" for the document, pydantic's words below it)
    not_mapping: ClassVar[str | None] = None
    #: report an unknown or missing key as the whole mapping being wrong (``not_mapping``)
    whole: ClassVar[bool] = False
    #: report unknown keys (in document order), then missing keys (sorted), then values,
    #: instead of pydantic's field order; read from the document's schema only
    keys_first: ClassVar[bool] = False


def rule(check: Callable[[object], object]) -> BeforeValidator:
    """``Annotated[T, rule(check)]``: a field checked (and converted) by one of the hand
    checks that raise InputError; its ``allowed`` becomes the error's words, the field and
    value come from where pydantic found it (so the check's own field name is not used)."""

    def run(value: object) -> object:
        try:
            return check(value)
        except InputError as exc:
            raise PydanticCustomError("pacao", "{allowed}", {"allowed": exc.allowed}) from None

    return BeforeValidator(run)


def parse_model(model: type[M], doc: object, where: str = "") -> M:
    """Validate a parsed config document with its pydantic schema; the first error
    becomes one InputError naming the key path (``sites[0].key``, after ``where.`` when
    the document is part of a file), the value and what is allowed (pydantic's words,
    then the field's ``description`` when it has one, or the :class:`Schema`'s own), so
    every config file fails alike (one line, exit status 2)."""
    words = _words(model)
    if not isinstance(doc, dict):
        top = words.not_mapping or "expected a mapping at the top level"
        raise InputError(where or "<document>", doc, _say(top, model))
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors()
    err = sorted(errors, key=_keys_first)[0] if words.keys_first else errors[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    if loc and loc[-1] == "[key]":  # a bad key of a Literal-keyed mapping: name the key itself
        loc = loc[:-1]
    kind = err["type"]
    value = err.get("input") if kind != "missing" else None
    owner, inner = _model_at(model, loc[:-1]), _model_at(model, loc)
    owner_words, inner_words = _words(owner), _words(inner)
    if kind in ("extra_forbidden", "missing") and owner_words.whole:
        whole = owner_words.not_mapping or "expected a mapping of {allowed}"
        raise InputError(_path(where, loc[:-1]), _value_at(doc, loc[:-1]), _say(whole, owner))
    if kind == "extra_forbidden":
        msg = _say(owner_words.unknown_key, owner)
    elif kind == "missing" and owner_words.missing is not None:
        msg = owner_words.missing
    elif kind == "model_type" and inner_words.not_mapping is not None:
        msg = _say(inner_words.not_mapping, inner)
    else:
        field = owner.model_fields.get(str(loc[-1])) if loc else None
        allowed = field.description if field is not None else None
        msg = f"{err['msg']}; allowed: {allowed}" if allowed else err["msg"]
    raise InputError(_path(where, loc), value, msg)


def _words(model: type[BaseModel]) -> type[Schema]:
    return model if issubclass(model, Schema) else Schema


def _say(message: str, model: type[BaseModel]) -> str:
    """``message`` with ``{allowed}`` replaced (other braces are kept: ``{key: SECRET}``)."""
    return message.replace("{allowed}", str(sorted(model.model_fields)))


def _keys_first(err: ErrorDetails) -> tuple[int, str]:
    kind = {"extra_forbidden": 0, "missing": 1}.get(err["type"], 2)
    return kind, str(err["loc"][-1]) if kind == 1 else ""


def _path(where: str, loc: Sequence[int | str]) -> str:
    if not where:
        return key_path(loc)
    return f"{where}.{key_path(loc)}" if loc else where


def _value_at(doc: object, loc: Sequence[int | str]) -> object:
    """The part of the document at ``loc`` (the mapping a whole-mapping error shows)."""
    for part in loc:
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and isinstance(part, int) and 0 <= part < len(doc):
            doc = doc[part]
        else:
            return None
    return doc


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
