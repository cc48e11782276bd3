"""pacao.validate: the shared range checks and the pydantic config-file errors."""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from pacao.errors import InputError
from pacao.validate import in_range, integer_in, non_negative, parse_model, positive


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
