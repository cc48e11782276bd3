"""`pacao traces ...`: generate synthetic traces and summarise trace files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pacao.cliutil import fail as _fail
from pacao.cliutil import sub_app
from pacao.errors import InputError

app = sub_app("traces", "Generate synthetic mobility traces and print trace statistics.")


@app.command()
def stats(
    file: Annotated[Path, typer.Argument(help="Traces: CSV or Parquet (docs/traces.md).")],
    lac_table: Annotated[
        Path | None, typer.Option(help="LAC table CSV (lac, lat, lon) for traces given by lac.")
    ] = None,
    lac_seed: Annotated[int, typer.Option(help="Seed of the built-in LAC partition.")] = 0,
) -> None:
    """Print statistics of a trace file as JSON (users, LACs, gyration, trips)."""
    from pacao.sim.geography import build_lacs
    from pacao.sim.traces import load_traces, trace_stats

    try:
        lacs = build_lacs(lac_seed)
        traces = load_traces(file, lacs, lac_table)
    except InputError as exc:
        raise _fail(str(exc)) from None
    json.dump(trace_stats(traces), sys.stdout, indent=2)
    sys.stdout.write("\n")


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv).")],
    users: Annotated[int, typer.Option(help="Users to keep (crossing more than 3 LACs).")] = 36450,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same traces).")] = 0,
    step: Annotated[int, typer.Option(help="Sampling step in seconds.")] = 360,
    lac_seed: Annotated[int, typer.Option(help="Seed of the built-in LAC partition.")] = 0,
    partition_users: Annotated[
        int, typer.Option(help="Dataset folder: users per Parquet partition.")
    ] = 10_000,
    scheduler: Annotated[
        str | None, typer.Option(help="Dataset folder: Dask scheduler (default LocalCluster).")
    ] = None,
) -> None:
    """Generate one day of synthetic LAC-level traces (docs/traces.md): one .parquet or
    .csv file, or with a folder as --out a user-partitioned dataset folder written by Dask
    tasks, one partition each (any number of users streams to disk)."""
    from pacao.sim.geography import build_lacs
    from pacao.sim.mobility import generate_traces

    suffix = out.suffix.lower()
    if suffix == "" or out.is_dir():
        _generate_dataset(out, users, seed, step, lac_seed, partition_users, scheduler)
        return
    if suffix not in (".parquet", ".csv"):
        raise _fail(f"out: {str(out)!r} is invalid; a .parquet or .csv file, or a folder")
    try:
        lacs = build_lacs(lac_seed)
        traces = generate_traces(lacs, n_users=users, seed=seed, step_s=step)
    except InputError as exc:
        raise _fail(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        traces.to_parquet(out, index=False)
    else:
        traces.to_csv(out, index=False)
    typer.echo(f"wrote {len(traces)} samples of {users} users to {out}", err=True)


def _generate_dataset(
    out: Path,
    users: int,
    seed: int,
    step: int,
    lac_seed: int,
    partition_users: int,
    scheduler: str | None,
) -> None:
    from rich.progress import Progress

    from pacao.sim.scale import generate_dataset
    from pacao.sim.sweep import dask_client

    try:
        with dask_client(scheduler) as client, Progress(transient=True) as bar:
            n = -(-users // partition_users) if partition_users > 0 else 0
            task = bar.add_task("partitions written", total=n)
            ds = generate_dataset(
                client,
                out,
                users,
                seed,
                partition_users=partition_users,
                step_s=step,
                lac_seed=lac_seed,
                advance=lambda: bar.advance(task),
            )
    except InputError as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"wrote {ds.meta['samples']} samples of {users} users in {len(ds.files)} "
        f"partitions to {out}",
        err=True,
    )
