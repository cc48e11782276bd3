"""One error type for bad user input, so every front end can print one line and exit 2."""

from __future__ import annotations

from typing import Any


class InputError(ValueError):
    """Bad input: names the field, the offending value and what is allowed.

    The CLI turns it into a single line on stderr and exit status 2; nothing
    else about a malformed input file should ever reach the user as a traceback.
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}: {_show(value)} is invalid; {allowed}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
