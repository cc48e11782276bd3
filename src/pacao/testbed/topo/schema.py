"""The testbed's files (topology, scenario, experiment) as pydantic models of each
document's shape, read through :func:`pacao.validate.parse_model` like every config file.

The models check what a document holds on its own (known keys, required keys, numbers in a
fixed range); what needs context (a node of the topology, a time within the duration) is
checked by the loaders after parsing, with the same kind of error.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BeforeValidator, ConfigDict

from pacao import validate


def number(field_name: str, value: Any, low: float, high: float) -> float:
    """The one range check of the testbed's files: a number (not a bool) in [low, high]."""
    return validate.in_range(field_name, value, f"a number in [{low}, {high}]", low=low, high=high)


def in_range(low: float, high: float) -> BeforeValidator:
    """``Annotated[float, in_range(low, high)]``: a number in [low, high], as :func:`number`
    says it."""
    return validate.rule(lambda v: number("", v, low, high))


class Doc(validate.Schema):
    """One mapping of a testbed file: known keys only; unknown keys are reported first,
    then missing ones, then values, in the testbed's words."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    missing: ClassVar[str | None] = "required"
    not_mapping: ClassVar[str | None] = "a mapping"
    keys_first: ClassVar[bool] = True


def keys(model: type[Doc], where: str, doc: Any) -> dict[str, Any]:
    """The keys the document gave (checked values; defaults left out)."""
    return validate.parse_model(model, doc, where).model_dump(exclude_unset=True)
