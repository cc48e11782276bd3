"""`pacao controller ...`: check a config, run the service, approve or list plans, status."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pacao.cliutil import fail as _fail
from pacao.cliutil import sub_app
from pacao.errors import InputError
from pacao.validate import in_range

app = sub_app(None, "The PACAO controller service.")


class ApproveMode(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


ConfigOpt = Annotated[Path, typer.Option("--config", help="Controller config (YAML).")]


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="Controller config (YAML).")],
) -> None:
    """Run every check `run` makes before it starts (keys, drivers' options, storage,
    API token) without starting anything."""
    from pacao.controller.app import check_runtime
    from pacao.controller.config import load_config

    try:
        cfg = load_config(file)
        check_runtime(cfg)
    except InputError as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"ok: {len(cfg.dcs)} DCs, {len(cfg.vms)} VMs, {len(cfg.users)} users, "
        f"S'={cfg.timers.s1:g}s S''={cfg.timers.s2:g}s S'''={cfg.timers.s3:g}s"
    )


@app.command()
def run(
    config: ConfigOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Record plans, never act.")] = False,
    approve: Annotated[
        ApproveMode, typer.Option(help="auto: execute plans; manual: wait for approval.")
    ] = ApproveMode.AUTO,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", help="Least severe log level written.")
    ] = LogLevel.INFO,
    listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of the API instead of api.listen (replicas on one host)."),
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            help="The API URL followers name to clients (ha.enabled; default http://HOST:PORT)."
        ),
    ] = None,
) -> None:
    """Run the controller: monitor, decide every S', act through the drivers, serve the API.

    With ha.enabled, run the same config as several replicas: one leads, the others
    serve reads and take over when its lease ends. SIGHUP (or POST /config/reload)
    re-reads the config file; SIGTERM/SIGINT stop."""
    from pacao.controller.app import run_forever

    try:
        run_forever(
            config,
            dry_run=dry_run,
            manual=approve is ApproveMode.MANUAL,
            log_level=log_level.value,
            listen=listen,
            advertise=advertise,
        )
    except InputError as exc:
        raise _fail(str(exc)) from None


@app.command("approve")
def approve_plan(
    plan: Annotated[str, typer.Argument(help="Plan id (from `plans` or the API).")],
    config: ConfigOpt,
) -> None:
    """Approve a recommended plan (manual mode); the running service executes it."""
    from pacao.controller.config import load_config
    from pacao.controller.storage import Store

    try:
        store = Store(load_config(config).storage.url, create=False)
        store.approve(plan, by="cli")
    except InputError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"approved {plan}")


@app.command("plans")
def list_plans(
    config: ConfigOpt,
    state: Annotated[str | None, typer.Option(help="Only plans in this state.")] = None,
) -> None:
    """List stored plans as JSON lines (newest first)."""
    from pacao.controller.config import load_config
    from pacao.controller.storage import Store

    try:
        store = Store(load_config(config).storage.url, create=False)
        rows = store.plans(state=state)
    except InputError as exc:
        raise _fail(str(exc)) from None
    for p in rows:
        sys.stdout.write(json.dumps(p, sort_keys=True) + "\n")


@app.command("status")
def status(
    config: ConfigOpt,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    url: Annotated[
        str | None, typer.Option(help="The controller API (default: api.listen of the config).")
    ] = None,
) -> None:
    """Users (entry, VM location, SLA) and pending plans, from the API or the database."""
    from rich.console import Console

    from pacao.controller.config import load_config
    from pacao.controller.status import gather, render

    try:
        doc = gather(load_config(config), url=url)
    except InputError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        sys.stdout.write(json.dumps(doc, sort_keys=True, default=str) + "\n")
    else:
        render(doc, Console())


@app.command("replay")
def replay(
    run_dir: Annotated[Path, typer.Argument(help="A `pacao reproduce --out` folder.")],
    use_case: Annotated[str | None, typer.Option(help="Default: the first headline.")] = None,
    users: Annotated[int, typer.Option(help="Users replayed (a random subset).")] = 2000,
    frames: Annotated[int, typer.Option(help="Frames over the traces' span.")] = 240,
    n_dcs: Annotated[int | None, typer.Option(help="Another deployment of the run.")] = None,
    s1: Annotated[float | None, typer.Option(help="S' as a fraction of residence.")] = None,
    s2: Annotated[float | None, typer.Option(help="S'' as a fraction of S'.")] = None,
    bound_ms: Annotated[float | None, typer.Option(help="SLA bound (ms).")] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT of the web view.")] = "127.0.0.1:8090",
    token_env: Annotated[
        str, typer.Option(help="Environment variable holding the bearer token.")
    ] = "PACAO_API_TOKEN",
) -> None:
    """Serve the web view replaying a simulator run (PACAO-2 on the run's traces)."""
    import os

    from pacao.controller.web.replay import Replay, ReplayOptions, serve_replay

    try:
        token = os.environ.get(token_env, "")
        if not token:
            raise InputError("--token-env", token_env, "that environment variable is not set")
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError("--listen", listen, "HOST:PORT")
        opts = ReplayOptions(use_case, users, frames, n_dcs, s1, s2, bound_ms)
        rep = Replay(run_dir, opts)
    except InputError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{rep.title}: http://{host}:{port}/ui/", err=True)
    serve_replay(rep, token, host, int(port))


@app.command("relay")
def relay(
    pair: Annotated[
        list[str], typer.Option("--pair", help="LISTEN_HOST:PORT=TARGET_HOST:PORT, repeatable.")
    ],
    delay_ms: Annotated[float, typer.Option(help="Added one-way delay, each direction.")] = 0.0,
    loss: Annotated[float, typer.Option(help="Drop probability per datagram, 0..1.")] = 0.0,
) -> None:
    """Run a UDP impairment relay (delay, loss) in front of an xTR, for lab tests."""
    import asyncio

    from pacao.controller.relay import parse_pair, serve_relay

    try:
        in_range("--delay-ms", delay_ms, "0..60000", low=0, high=60_000)
        in_range("--loss", loss, "0..1", low=0, high=1)
        pairs = [parse_pair(p) for p in pair]
    except InputError as exc:
        raise _fail(str(exc)) from None
    try:
        asyncio.run(serve_relay(pairs, delay_ms / 1000, loss))
    except OSError as exc:
        raise _fail(f"cannot bind: {exc.strerror}") from None
