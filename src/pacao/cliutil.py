"""What every `pacao` sub-command group shares: its Typer app and its one-line errors."""

from __future__ import annotations

import typer


def sub_app(name: str | None, help: str) -> typer.Typer:
    """A command group that shows help when called bare and never prints tracebacks."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise (status 2: bad input)."""
    typer.echo(f"pacao: error: {message}", err=True)
    return typer.Exit(code)
