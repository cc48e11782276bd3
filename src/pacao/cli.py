"""The `pacao` command line: thin wrappers around the packages, one line of help each."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pacao.cliutil import EXTRA_MODULES, EXTRA_OF_MODULE, fail, missing_extra_message, require_extra
from pacao.errors import InputError
from pacao.sim.cli import app as traces_app

app = typer.Typer(
    name="pacao",
    help="Link VM mobility to user mobility over LISP (PACAO).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from pacao import __version__

        typer.echo(f"pacao {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    pass


def _needs_extra(sub: typer.Typer, group: str, extra: str, only: str | None = None) -> None:
    """Make ``group``'s commands (or just ``only``) check ``extra`` before they start."""
    for info in sub.registered_commands:
        original = info.callback
        if original is None:
            continue
        name = info.name or original.__name__.replace("_", "-")
        if only is not None and name != only:
            continue
        label = f"pacao {group} {name}"

        @functools.wraps(original)
        def checked(
            *args: Any, _f: Callable[..., Any] = original, _l: str = label, **kwargs: Any
        ) -> Any:
            require_extra(_l, extra)
            return _f(*args, **kwargs)

        info.callback = checked


_needs_extra(traces_app, "traces", "sim")
app.add_typer(traces_app, name="traces")


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

    from pacao.io import load_document
    from pacao.optimize import problem_from_dict
    from pacao.optimize import solve as run
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
    partition_users: Annotated[
        int | None,
        typer.Option(help="Partitioned run: users per partition of the generated dataset."),
    ] = None,
    dc_counts: Annotated[
        str | None,
        typer.Option(
            help="DC counts to run, e.g. 4,64 (default all of 1,2,4,8,16,32,64; 4 and 64 needed)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="LocalCluster worker processes (default: one per core)."),
    ] = None,
) -> None:
    """Reproduce the paper's Sections IV (testbed, as root) and V: figures, report, summary."""
    require_extra("pacao reproduce", "sim")
    from pacao.reproduce.pipeline import DC_COUNTS, parse_dc_counts, run_cli
    from pacao.testbed.net import TestbedError

    try:
        counts = DC_COUNTS if dc_counts is None else parse_dc_counts(dc_counts)
        run_cli(
            quick, users, out, scheduler, seed, vm_memory_gb, dc_gbps, traces, lac_table,
            testbed=not no_testbed, legacy=legacy, entry_metric=entry_metric,
            europe=europe, sensitivity=not no_sensitivity, partition_users=partition_users,
            dc_counts=counts, workers=workers,
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

    _needs_extra(testbed_app, "testbed", "testbed", only="run")
    return testbed_app


app.add_typer(_testbed(), name="testbed", help="Emulated testbed in network namespaces (root).")


def main() -> None:
    """The console script: a missing optional module becomes one line naming its extra."""
    try:
        app()
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top not in EXTRA_OF_MODULE:
            raise
        words = [a for a in sys.argv[1:3] if not a.startswith("-")]
        testbed = words[:1] == ["testbed"] and top in EXTRA_MODULES["testbed"]
        extra = "testbed" if testbed else EXTRA_OF_MODULE[top]
        typer.echo(
            "pacao: error: " + missing_extra_message(" ".join(["pacao", *words]), extra, [top]),
            err=True,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
