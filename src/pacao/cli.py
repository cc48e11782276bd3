"""The `pacao` command line: thin wrappers around the packages, one line of help each."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pacao.cliutil import fail
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
def assign(
    file: Annotated[Path, typer.Argument(help="Instance in YAML or JSON (docs/assign.md).")],
    solver: Annotated[str, typer.Option(help="milp (exact), batched or lagrange.")] = "lagrange",
    batch_size: Annotated[int, typer.Option(help="Users per MILP batch (batched).")] = 10,
    integer_penalty: Annotated[
        bool, typer.Option("--integer-penalty", help="The paper's step penalty ceil(.).")
    ] = False,
    time_limit: Annotated[
        float | None, typer.Option(help="Seconds; best assignment found so far.")
    ] = None,
) -> None:
    """Assign many users to DCs under congestion (paper eq. 4-9, corrected); JSON on stdout."""
    from pacao.optimize.assign.cli import run_assign

    code, message = run_assign(file, solver, batch_size, integer_penalty, time_limit)
    if code:
        raise fail(message, code)


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


@app.command()
def reproduce(
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer users and a 3x3 S'/S'' grid (minutes).")
    ] = False,
    users: Annotated[
        int | None, typer.Option(help="Users to simulate (default 36,450; 10,000 with --quick).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default runs/reproduce[-quick]).")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address, e.g. tcp://host:8786 (default: LocalCluster)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of LACs, traces and DC sites.")] = 0,
    vm_memory_gb: Annotated[
        float, typer.Option(help="VM memory copied per migration, GB (0: instant, the paper).")
    ] = 0.0,
    dc_gbps: Annotated[
        float, typer.Option(help="Inter-DC bandwidth for migrations, Gbit/s.")
    ] = 10.0,
    traces: Annotated[
        Path | None,
        typer.Option(help="Your own traces, CSV or Parquet (docs/traces.md) instead of synthetic."),
    ] = None,
    lac_table: Annotated[
        Path | None,
        typer.Option(help="LAC table CSV (lac, lat, lon) for traces with a lac column."),
    ] = None,
    no_testbed: Annotated[
        bool, typer.Option("--no-testbed", help="Skip the Sec. IV testbed stage (root only).")
    ] = False,
    legacy: Annotated[
        str,
        typer.Option(
            help="Legacy placement: home-entry-random-vm (paper), nearest-start, random-dc."
        ),
    ] = "home-entry-random-vm",
    entry_metric: Annotated[
        str, typer.Option(help="Step 1 ranks entries by: user-rloc (paper, eq. 3) or path.")
    ] = "user-rloc",
    europe: Annotated[
        str,
        typer.Option(help="Europe/OTT DC sites: abutting (paper), europe, europe-no-france."),
    ] = "abutting",
    no_sensitivity: Annotated[
        bool, typer.Option("--no-sensitivity", help="Skip the sensitivity stage.")
    ] = False,
) -> None:
    """Reproduce the paper's Sections IV (testbed, as root) and V: figures, report, summary."""
    from pacao.sim.reproduce import run_cli
    from pacao.testbed.runner import TestbedError

    try:
        run_cli(
            quick, users, out, scheduler, seed, vm_memory_gb, dc_gbps, traces, lac_table,
            testbed=not no_testbed, legacy=legacy, entry_metric=entry_metric,
            europe=europe, sensitivity=not no_sensitivity,
        )  # fmt: skip
    except InputError as exc:
        raise fail(str(exc)) from None
    except TestbedError as exc:
        raise fail(f"testbed stage: {exc}", 1) from None


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
