"""The `pacao` command line: thin wrappers around the packages, one line of help each."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pacao.errors import InputError
from pacao.sim.cli import app as traces_app

app = typer.Typer(
    name="pacao",
    help="Link VM mobility to user mobility over LISP (PACAO).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(traces_app, name="traces")


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from pacao import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    typer.echo(f"pacao: error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def solve(
    file: Annotated[Path, typer.Argument(help="Problem in YAML or JSON (docs/input-formats.md).")],
    solver: Annotated[str, typer.Option(help="exact (enumeration) or highs (MILP).")] = "exact",
) -> None:
    """Solve the single-user problem (1)-(3): rank RLOCs or place a VM; JSON on stdout."""
    from pacao.optimize import load_problem
    from pacao.optimize import solve as run

    try:
        decision = run(load_problem(file), solver=solver)
    except InputError as exc:
        raise fail(str(exc)) from None
    json.dump(decision.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")


@app.command()
def demo() -> None:
    """Show the optimizer on the shipped examples: RLOC ranking and VM placement."""
    from importlib.resources import files

    from rich.console import Console

    from pacao.optimize import problem_from_dict
    from pacao.optimize import solve as run
    from pacao.optimize.io import load_document
    from pacao.report.tables import decision_table

    console = Console()
    for name, title in (
        ("solve-rloc.yaml", "Entry-DC (RLOC) ranking for one user"),
        ("solve-vm.yaml", "Host DC for the user's VM"),
    ):
        path = Path(str(files("pacao.data").joinpath(name)))
        problem = problem_from_dict(load_document(path))
        exact, milp = run(problem, "exact"), run(problem, "highs")
        console.print(decision_table(exact, f"{title} ({name})"))
        agree = "agrees" if abs(exact.objective - milp.objective) < 1e-9 else "DISAGREES"
        console.print(f"HiGHS MILP {agree}: objective {milp.objective:.3f}, choice {milp.choice}\n")


from pacao.lisp.cli import app as _lisp_app  # noqa: E402 - sub-app registered after commands

app.add_typer(_lisp_app, name="lisp")


def _controller() -> typer.Typer:
    from pacao.controller.cli import app as controller_app

    return controller_app


app.add_typer(_controller(), name="controller", help="The PACAO controller service.")


def _testbed() -> typer.Typer:
    from pacao.testbed.cli import app as testbed_app

    return testbed_app


app.add_typer(_testbed(), name="testbed", help="Emulated testbed in network namespaces (root).")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
