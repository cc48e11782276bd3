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
) -> None:
    """Generate one day of synthetic LAC-level traces (docs/traces.md)."""
    from pacao.sim.geography import build_lacs
    from pacao.sim.mobility import generate_traces

    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise _fail(f"out: {str(out)!r} is invalid; a .parquet or .csv file name")
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
