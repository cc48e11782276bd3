"""`pacao testbed ...`: bring the emulated testbed up and down, impair links, steer xTRs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pacao.cliutil import fail as _fail
from pacao.cliutil import sub_app
from pacao.errors import InputError

app = sub_app(None, "Emulated testbed in network namespaces (root).")

RunOpt = Annotated[str | None, typer.Option("--run", help="Run id (needed if several are up).")]


def _topology(path: Path | None) -> tuple[Path, object]:
    from pacao.testbed.topology import default_topology_path, load_topology

    file = path or default_topology_path()
    return file, load_topology(file)


@app.command()
def validate(
    topology: Annotated[Path | None, typer.Option(help="Topology YAML (default: Fig. 5).")] = None,
) -> None:
    """Check a topology file and print its links with derived delays."""
    from pacao.testbed.topology import Topology

    try:
        _, topo = _topology(topology)
    except InputError as exc:
        raise _fail(str(exc)) from None
    assert isinstance(topo, Topology)
    for link in topo.links:
        imp = link.impairment
        rate = f"{link.rate_bps / 1e6:g} Mbit/s" if link.rate_bps else "unlimited"
        typer.echo(
            f"{link.name:16} {link.a:>12} <-> {link.b:<12} {rate:>16}"
            f"  RTT {2 * imp.delay_ms:7.2f} ms"
            f"  jitter {imp.jitter_ms:g} ms  loss {imp.loss_pct:g} %"
        )


@app.command()
def up(
    topology: Annotated[Path | None, typer.Option(help="Topology YAML (default: Fig. 5).")] = None,
) -> None:
    """Create namespaces, links, rate limits, delay line and xTR data planes; print the run id."""
    from pacao.testbed import runner
    from pacao.testbed.topology import Topology

    try:
        file, topo = _topology(topology)
        assert isinstance(topo, Topology)
        runner.check_system()
        state = runner.new_state(file)
        try:
            runner.up(topo, file, state)
        except BaseException:
            runner.down(state)
            raise
    except (InputError, runner.TestbedError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(state.runid)


@app.command()
def down(run: RunOpt = None) -> None:
    """Stop a run's processes and remove its namespaces and links."""
    from pacao.testbed import runner

    try:
        runner.check_system()
        removed = runner.down(runner.find_run(run))
    except (InputError, runner.TestbedError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"removed {len(removed)} objects")


@app.command()
def cleanup() -> None:
    """Remove everything any recorded run left behind (after a crash)."""
    from pacao.testbed import runner

    try:
        removed = runner.cleanup()
    except runner.TestbedError as exc:
        raise _fail(str(exc)) from None
    for item in removed:
        typer.echo(f"removed {item}")
    typer.echo(f"removed {len(removed)} objects")


@app.command()
def status() -> None:
    """List recorded runs, their processes and whether they are alive."""
    from pacao.testbed import runner

    for state in runner.runs():
        alive = [p for p in state.procs if runner.proc_start_time(p["pid"]) == p.get("start")]
        typer.echo(
            f"{state.runid}  {state.topology.get('name', '?')}  ready={state.ready}  "
            f"namespaces={len(state.netns)}  processes={len(alive)}/{len(state.procs)} alive"
        )


@app.command("set-link")
def set_link(
    link: Annotated[str, typer.Argument(help="Link name from the topology.")],
    delay: Annotated[float | None, typer.Option(help="One-way delay, ms.")] = None,
    jitter: Annotated[float | None, typer.Option(help="Jitter (std dev), ms.")] = None,
    loss: Annotated[float | None, typer.Option(help="Loss, percent.")] = None,
    rate: Annotated[str | None, typer.Option(help="Rate limit, e.g. 8mbit.")] = None,
    direction: Annotated[str, typer.Option(help="both, a2b or b2a.")] = "both",
    run: RunOpt = None,
) -> None:
    """Change a link's delay/jitter/loss (user space) or rate (tbf) while the testbed runs."""
    from pacao.testbed import runner
    from pacao.testbed.topology import load_topology, parse_rate

    try:
        state = runner.find_run(run)
        topo = load_topology(Path(state.topology["file"]))
        runner.set_link(
            state,
            topo,
            link,
            delay_ms=delay,
            jitter_ms=jitter,
            loss_pct=loss,
            rate_bps=parse_rate("rate", rate),
            direction=direction,
        )
    except (InputError, runner.TestbedError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def xtr(
    node: Annotated[str, typer.Argument(help="xtr node name.")],
    request: Annotated[str, typer.Argument(help='JSON request, e.g. \'{"op": "show"}\'.')],
    run: RunOpt = None,
) -> None:
    """Send one JSON request to an xTR data plane: show, stats, set, priority, up, down, remove."""
    from pacao.testbed import runner

    try:
        req = json.loads(request)
    except ValueError:
        raise _fail(f"request: {request!r} is not JSON") from None
    try:
        reply = runner.xtr_control(runner.find_run(run), node, req)
    except (InputError, runner.TestbedError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(reply, indent=1))
    if not reply.get("ok"):
        raise typer.Exit(1)


@app.command()
def play(
    scenario: Annotated[Path, typer.Argument(help="Scenario timeline YAML (docs/testbed.md).")],
    time_scale: Annotated[
        float, typer.Option(help="Multiply event times (0.1 = 10x faster).")
    ] = 1.0,
    run: RunOpt = None,
) -> None:
    """Play a timeline of link impairments and xTR priority changes on a running testbed."""
    from pacao.testbed import runner
    from pacao.testbed.scenario import Event, load_scenario
    from pacao.testbed.scenario import play as play_events
    from pacao.testbed.topology import load_topology

    try:
        state = runner.find_run(run)
        topo = load_topology(Path(state.topology["file"]))
        plan = load_scenario(scenario, topo)

        def apply(event: Event) -> None:
            if event.kind == "link":
                runner.set_link(state, topo, event.target, **event.args)
            elif event.kind == "egress":
                runner.set_egress(state, topo, event.target, **event.args)
            else:
                reply = runner.xtr_control(state, event.target, event.args)
                if not reply.get("ok"):
                    raise runner.TestbedError(f"{event.target}: {reply.get('error')}")

        for offset, event in play_events(plan, apply, time_scale):
            typer.echo(f"{offset:8.3f} s  {event.kind} {event.target} {json.dumps(event.args)}")
    except (InputError, runner.TestbedError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def run(
    scenario: Annotated[
        str, typer.Option(help="table1, table2 or an experiment YAML (docs/testbed.md).")
    ],
    repeat: Annotated[int, typer.Option(help="Repetitions of every trial.")] = 1,
    time_scale: Annotated[
        float, typer.Option(help="Compress the timeline and controller timers (0.05 = 20x).")
    ] = 1.0,
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("runs/testbed"),
    topology: Annotated[
        Path | None, typer.Option(help="Topology YAML (default: the experiment's).")
    ] = None,
    vm: Annotated[str, typer.Option(help="namespace or qemu.")] = "namespace",
    arms: Annotated[
        str | None, typer.Option(help="Comma-separated arms (legacy,pacao1,pacao2).")
    ] = None,
    variants: Annotated[
        str | None, typer.Option(help="Comma-separated variants (default: all).")
    ] = None,
    parallel: Annotated[int, typer.Option(help="Trials (testbeds) run side by side.")] = 1,
) -> None:
    """Run an experiment: per repetition, variant, traffic and arm, up -> traffic -> down."""
    import signal
    import threading

    from pacao.testbed import runner
    from pacao.testbed.run import Interrupted, RunOptions, run_experiment

    opts = RunOptions(
        scenario=scenario,
        out=out,
        repeat=repeat,
        time_scale=time_scale,
        topology=topology,
        vm=vm,
        arms=tuple(a.strip() for a in arms.split(",")) if arms else None,
        variants=tuple(v.strip() for v in variants.split(",")) if variants else None,
        parallel=parallel,
    )
    stop = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        summary = run_experiment(opts, log=typer.echo, stop=stop)
    except (InputError, runner.TestbedError) as exc:
        raise _fail(str(exc), 2 if isinstance(exc, InputError) else 1) from None
    except (KeyboardInterrupt, Interrupted):
        raise _fail("interrupted; every testbed of the run was taken down", 130) from None
    typer.echo(json.dumps(summary, indent=1))
    typer.echo(f"report: {(out / 'report.html').resolve()}")
