"""One validation style for the testbed's files (topology, scenario, experiment): pydantic
models of each document's shape, every error turned into one
:class:`pacao.errors.InputError` naming the field, the value and what is allowed.

The models check what a document holds on its own (known keys, required keys, numbers in a
fixed range); what needs context (a node of the topology, a time within the duration) is
checked by the loaders after parsing, with the same kind of error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from pacao import validate
from pacao.errors import InputError


def number(field_name: str, value: Any, low: float, high: float) -> float:
    """The one range check of the testbed's files: a number (not a bool) in [low, high]."""
    return validate.in_range(field_name, value, f"a number in [{low}, {high}]", low=low, high=high)


def _rule(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A value check as a pydantic validator: its InputError's 'allowed' becomes the error."""

    def validate(value: Any) -> Any:
        try:
            return check(value)
        except InputError as exc:
            raise PydanticCustomError("pacao", "{allowed}", {"allowed": exc.allowed}) from None

    return validate


def in_range(low: float, high: float) -> BeforeValidator:
    """``Annotated[float, in_range(low, high)]``: a number in [low, high], as :func:`number`
    says it."""
    return BeforeValidator(_rule(lambda v: number("", v, low, high)))


class Doc(BaseModel):
    """One mapping of a document: known keys only, values as checked by their types."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    #: what an unknown key's error says ({allowed}: the sorted known keys)
    unknown_key: ClassVar[str] = "unknown key; allowed: {allowed}"
    #: what a document that is not a mapping is told ({allowed}: the sorted known keys)
    not_mapping: ClassVar[str] = "a mapping"
    #: what a missing key's error says
    missing: ClassVar[str] = "required"
    #: report a wrong, unknown or missing key as the whole mapping being wrong (not_mapping)
    whole: ClassVar[bool] = False


D = TypeVar("D", bound=Doc)


def keys(model: type[Doc], where: str, doc: Any) -> dict[str, Any]:
    """:func:`parse`, as the keys the document gave (checked values; defaults left out)."""
    return parse(model, where, doc).model_dump(exclude_unset=True)


def _order(err: Any) -> tuple[int, str]:
    """Unknown keys first (in document order), then missing keys (sorted), then values."""
    kind = {"extra_forbidden": 0, "missing": 1}.get(err["type"], 2)
    return kind, str(err["loc"][-1]) if kind == 1 else ""


def parse(model: type[D], where: str, doc: Any) -> D:
    """Validate one mapping of a document; the first problem as one InputError."""
    whole = model.not_mapping.format(allowed=sorted(model.model_fields))
    if not isinstance(doc, dict):
        raise InputError(where, doc, whole)
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        err = sorted(exc.errors(), key=_order)[0]
        path = ".".join([where, *(str(p) for p in err["loc"])])
        if model.whole and err["type"] in ("extra_forbidden", "missing"):
            raise InputError(where, doc, whole) from None
        if err["type"] == "extra_forbidden":
            known = sorted(model.model_fields)
            raise InputError(path, err["input"], model.unknown_key.format(allowed=known)) from None
        if err["type"] == "missing":
            raise InputError(path, None, model.missing) from None
        raise InputError(path, err["input"], err["msg"]) from None
