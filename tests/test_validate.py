"""pacao.validate: the shared range checks and the pydantic config-file errors."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from pacao.errors import InputError
from pacao.validate import (
    Schema,
    in_range,
    integer_in,
    non_negative,
    parse_model,
    positive,
    rule,
)


@pytest.mark.parametrize("value", [True, "1", None, math.nan, math.inf, -math.inf, 10**400])
def test_in_range_rejects_what_is_not_a_finite_real(value: object) -> None:
    with pytest.raises(InputError) as err:
        in_range("x", value, "a number")
    assert (err.value.field, err.value.allowed) == ("x", "a number")


def test_in_range_bounds_and_open_ends() -> None:
    assert in_range("x", 1, "a", low=1, high=2) == 1.0
    assert in_range("x", np.float32(2.0), "a", low=1, high=2) == 2.0
    for v, kw in ((1, {"low_open": True}), (2, {"high_open": True}), (0.5, {}), (2.5, {})):
        with pytest.raises(InputError):
            in_range("x", v, "a", low=1, high=2, **kw)


def test_positive_and_non_negative_say_what_is_allowed() -> None:
    assert non_negative("x", 0) == 0.0
    with pytest.raises(InputError, match=r"x: 0 is invalid; a finite number > 0"):
        positive("x", 0)
    with pytest.raises(InputError, match=r"seconds >= 0"):
        non_negative("x", -1, "seconds >= 0")


def test_integer_in() -> None:
    assert integer_in("n", np.int64(3), 1) == 3
    for v in (0, 3.0, True, 11):
        with pytest.raises(InputError):
            integer_in("n", v, 1, 10)
    with pytest.raises(InputError, match=r"an integer in 1\.\.10"):
        integer_in("n", 11, 1, 10)


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    size: Annotated[int, Field(ge=1, description="an integer >= 1")]


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[_Inner]


def test_parse_model_names_the_key_path_value_and_allowed() -> None:
    assert parse_model(_Outer, {"items": [{"size": 2}]}).items[0].size == 2
    with pytest.raises(InputError) as err:
        parse_model(_Outer, {"items": [{"size": 2}, {"size": 0}]})
    assert err.value.field == "items[1].size" and err.value.value == 0
    assert err.value.allowed.endswith("; allowed: an integer >= 1")
    with pytest.raises(InputError) as err:
        parse_model(_Outer, {"items": [{"size": 1, "colour": "red"}]})
    assert err.value.field == "items[0].colour"
    assert err.value.allowed == "unknown key; allowed: ['size']"
    with pytest.raises(InputError) as err:
        parse_model(_Outer, [1])
    assert err.value.field == "<document>"


class _Pair(Schema):
    model_config = ConfigDict(extra="forbid", strict=True)
    whole: ClassVar[bool] = True
    not_mapping: ClassVar[str | None] = "a mapping of {allowed}"
    a: int = 0
    b: int = 0


class _Words(Schema):
    model_config = ConfigDict(extra="forbid", strict=True)
    keys_first: ClassVar[bool] = True
    missing: ClassVar[str | None] = "required here"
    size: Annotated[int, rule(lambda v: integer_in("", v, 1, 9, "one digit"))] = 1
    name: str
    pair: _Pair | None = None


def test_parse_model_where_and_the_schemas_own_words() -> None:
    assert parse_model(_Words, {"name": "x", "size": 3}, "top").size == 3
    cases: list[tuple[object, str, object, str]] = [
        ({"name": "x", "size": 0}, "top.size", 0, "one digit"),  # a rule's words
        ({"size": 0, "zz": 1}, "top.zz", 1, "unknown key; allowed: ['name', 'pair', 'size']"),
        ({"size": 0}, "top.name", None, "required here"),  # missing before a wrong value
        ({"name": "x", "pair": 5}, "top.pair", 5, "a mapping of ['a', 'b']"),
        ({"name": "x", "pair": {"c": 1}}, "top.pair", {"c": 1}, "a mapping of ['a', 'b']"),
        ([], "top", [], "expected a mapping at the top level"),
    ]
    for doc, field, value, allowed in cases:
        with pytest.raises(InputError) as err:
            parse_model(_Words, doc, "top")
        assert (err.value.field, err.value.value, err.value.allowed) == (field, value, allowed)
    with pytest.raises(InputError) as err:
        parse_model(_Pair, "no", "pair")
    assert (err.value.field, err.value.allowed) == ("pair", "a mapping of ['a', 'b']")
