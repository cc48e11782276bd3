"""`pacao testbed ...`: bring the emulated testbed up and down, impair links, steer xTRs."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from pacao.cliutil import fail as _fail
from pacao.cliutil import sub_app
from pacao.errors import InputError

app = sub_app(None, "Emulated testbed in network namespaces (root).")

RunOpt = Annotated[str | None, typer.Option("--run", help="Run id (needed if several are up).")]


def _topology(path: Path | None) -> tuple[Path, object]:
    from pacao.testbed.topo.topology import default_topology_path, load_topology

    file = path or default_topology_path()
    return file, load_topology(file)


@app.command()
def validate(
    topology: Annotated[Path | None, typer.Option(help="Topology YAML (default: Fig. 5).")] = None,
) -> None:
    """Check a topology file and print its links with derived delays."""
    from pacao.testbed.topo.topology import Topology

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
    control_plane: Annotated[
        str | None,
        typer.Option(help="Also start the LISP control plane: legacy, pacao1 or pacao2."),
    ] = None,
    s1: Annotated[float, typer.Option(help="S1 = S' (s): controller decision period.")] = 10.0,
    s2: Annotated[float, typer.Option(help="S2 = S'' (s): wait before Step 2.")] = 5.0,
    s3: Annotated[float, typer.Option(help="S3 (s): probe interval of the agents.")] = 1.0,
    rtt_max: Annotated[float, typer.Option(help="The user's RTT SLA bound, ms.")] = 60.0,
    vm_memory: Annotated[int, typer.Option(help="VM memory (MiB) for migrations.")] = 1024,
) -> None:
    """Create namespaces, links, rate limits, delay line and xTR data planes; print the run id.

    With --control-plane: map-server, xTR agents driving the data planes and (pacao1,
    pacao2) the controller, in the run's namespaces (docs/testbed.md)."""
    from pacao.testbed import net
    from pacao.testbed.topo.topology import Topology

    try:
        file, topo = _topology(topology)
        assert isinstance(topo, Topology)
        if control_plane is not None and control_plane not in ("legacy", "pacao1", "pacao2"):
            raise InputError("--control-plane", control_plane, "legacy, pacao1 or pacao2")
        net.check_system()
        state = net.Testbed.new(file)
        try:
            state.up(topo)
            if control_plane is not None:
                from pacao.testbed.controlplane import (
                    ControllerSettings,
                    MigrationModel,
                    TestbedControlPlane,
                )

                settings = ControllerSettings(
                    control_plane,  # type: ignore[arg-type]
                    s1=s1,
                    s2=s2,
                    s3=s3,
                    rtt_max_ms=rtt_max,
                )
                model = MigrationModel(memory_mib=vm_memory)
                TestbedControlPlane(state, topo, settings, state.rundir / "cp", model).start()
        except BaseException:
            state.down()
            raise
    except (InputError, net.TestbedError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(state.runid)


@app.command()
def down(run: RunOpt = None) -> None:
    """Stop a run's processes and remove its namespaces and links."""
    from pacao.testbed import net

    try:
        net.check_system()
        removed = net.find_run(run).down()
    except (InputError, net.TestbedError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"removed {len(removed)} objects")


@app.command()
def cleanup() -> None:
    """Remove everything any recorded run left behind (after a crash)."""
    from pacao.testbed import net

    try:
        removed = net.cleanup()
    except net.TestbedError as exc:
        raise _fail(str(exc)) from None
    for item in removed:
        typer.echo(f"removed {item}")
    typer.echo(f"removed {len(removed)} objects")


@app.command()
def status() -> None:
    """List recorded runs, their processes and whether they are alive."""
    from pacao.testbed import net

    for state in net.runs():
        alive = [p for p in state.procs if net.proc_start_time(p["pid"]) == p.get("start")]
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
    from pacao.testbed import net
    from pacao.testbed.topo.topology import load_topology, parse_rate

    try:
        state = net.find_run(run)
        topo = load_topology(Path(state.topology["file"]))
        state.set_link(
            topo,
            link,
            delay_ms=delay,
            jitter_ms=jitter,
            loss_pct=loss,
            rate_bps=parse_rate("rate", rate),
            direction=direction,
        )
    except (InputError, net.TestbedError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def xtr(
    node: Annotated[str, typer.Argument(help="xtr node name.")],
    request: Annotated[str, typer.Argument(help='JSON request, e.g. \'{"op": "show"}\'.')],
    run: RunOpt = None,
) -> None:
    """Send one JSON request to an xTR data plane: show, stats, set, priority, up, down, remove."""
    from pacao.testbed import net

    try:
        req = json.loads(request)
    except ValueError:
        raise _fail(f"request: {request!r} is not JSON") from None
    try:
        reply = net.find_run(run).xtr_control(node, req)
    except (InputError, net.TestbedError, OSError) as exc:
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
    from pacao.testbed import net
    from pacao.testbed.topo.scenario import Event, load_scenario
    from pacao.testbed.topo.scenario import play as play_events
    from pacao.testbed.topo.topology import load_topology

    try:
        state = net.find_run(run)
        topo = load_topology(Path(state.topology["file"]))
        plan = load_scenario(scenario, topo)

        moves: list[threading.Thread] = []
        failures: list[str] = []

        def move(vm: str, dc: str) -> None:
            from pacao.testbed.vm.migration import migrate_vm

            try:
                res = migrate_vm(state, vm, dc)
                typer.echo(f"migrated {vm} to {dc}: {res.duration_s:.3f} s, "
                           f"downtime {res.downtime_s:.3f} s")  # fmt: skip
            except (InputError, net.TestbedError) as exc:
                failures.append(str(exc))

        def apply(event: Event) -> None:
            if event.kind == "link":
                state.set_link(topo, event.target, **event.args)
            elif event.kind == "migrate":  # runs while the timeline goes on
                t = threading.Thread(target=move, args=(event.target, event.args["dc"]))
                t.start()
                moves.append(t)
            elif event.kind == "egress":
                state.set_egress(topo, event.target, **event.args)
            else:
                reply = state.xtr_control(event.target, event.args)
                if not reply.get("ok"):
                    raise net.TestbedError(f"{event.target}: {reply.get('error')}")

        for offset, event in play_events(plan, apply, time_scale):
            typer.echo(f"{offset:8.3f} s  {event.kind} {event.target} {json.dumps(event.args)}")
        for t in moves:
            t.join()
        if failures:
            raise net.TestbedError("; ".join(failures))
    except (InputError, net.TestbedError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def migrate(
    vm: Annotated[str, typer.Argument(help="vm node of the topology.")],
    dc: Annotated[str, typer.Argument(help="Destination dc node.")],
    memory: Annotated[int | None, typer.Option(help="VM memory, MiB.")] = None,
    dirty_rate: Annotated[
        float | None, typer.Option(help="Memory the guest dirties, Mbit/s.")
    ] = None,
    max_downtime: Annotated[float | None, typer.Option(help="Downtime budget, ms.")] = None,
    switchover: Annotated[float | None, typer.Option(help="Fixed pause/resume cost, ms.")] = None,
    bandwidth: Annotated[
        float | None, typer.Option(help="Inter-DC Mbit/s when the link has no rate.")
    ] = None,
    run: RunOpt = None,
) -> None:
    """Migrate the namespace VM to another DC site (pre-copy model, real downtime); JSON out."""
    from dataclasses import asdict, replace

    from pacao.testbed import net
    from pacao.testbed.vm.migration import migrate_vm, stored_model

    try:
        net.check_system()
        state = net.find_run(run)
        model = stored_model(state)
        changes: dict[str, Any] = {
            k: v
            for k, v in (
                ("memory_mib", memory),
                ("dirty_rate_mbps", dirty_rate),
                ("max_downtime_ms", max_downtime),
                ("switchover_ms", switchover),
                ("default_bandwidth_mbps", bandwidth),
            )
            if v is not None
        }
        res = migrate_vm(state, vm, dc, replace(model, **changes))
    except (InputError, net.TestbedError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(asdict(res), indent=1))


@app.command("set-priority")
def set_priority(
    prefix: Annotated[str, typer.Argument(help="Mapped EID prefix, e.g. 10.2.0.0/24.")],
    priorities: Annotated[
        list[str], typer.Argument(help="NODE=PRIORITY (xtr node or RLOC), one per locator.")
    ],
    run: RunOpt = None,
) -> None:
    """Re-register a prefix with new priorities through its xTR agents (needs the control
    plane: `up --control-plane`); the user's ITR switches at once."""
    from pacao.testbed import net
    from pacao.testbed.controlplane import ControllerSettings, TestbedControlPlane
    from pacao.testbed.topo.topology import load_topology

    try:
        state = net.find_run(run)
        topo = load_topology(Path(state.topology["file"]))
        cp = TestbedControlPlane(
            state, topo, ControllerSettings("legacy", 1, 0.5, 0.1), state.rundir / "cp"
        )
        if cp.ns not in state.netns:
            raise InputError("run", state.runid, "a run started with --control-plane")
        prio: dict[str, int] = {}
        for item in priorities:
            node, _, value = item.partition("=")
            if not node or not value.isdigit():
                raise InputError("PRIORITIES", item, "NODE=PRIORITY")
            prio[node] = int(value)
        replies = cp.set_priority(prefix, prio)
    except (InputError, net.TestbedError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(replies, indent=1))


@app.command()
def run(
    scenario: Annotated[
        str,
        typer.Option(
            help="table1, table2, table2-overload, parallel or an experiment YAML "
            "(docs/testbed.md)."
        ),
    ],
    repeat: Annotated[int, typer.Option(help="Repetitions of every trial.")] = 1,
    time_scale: Annotated[
        float, typer.Option(help="Compress the timeline and controller timers (0.05 = 20x).")
    ] = 1.0,
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("runs/testbed"),
    topology: Annotated[
        Path | None, typer.Option(help="Topology YAML (default: the experiment's).")
    ] = None,
    vm: Annotated[
        str,
        typer.Option(
            help="namespace (servers in the VM's netns, modelled migration) or qemu (a real "
            "guest serves the traffic; QEMU live migration; VXLAN fabric)."
        ),
    ] = "namespace",
    arms: Annotated[
        str | None, typer.Option(help="Comma-separated arms (legacy,pacao1,pacao2).")
    ] = None,
    variants: Annotated[
        str | None, typer.Option(help="Comma-separated variants (default: all).")
    ] = None,
    parallel: Annotated[int, typer.Option(help="Trials (testbeds) run side by side.")] = 1,
    tcp_profile: Annotated[
        str | None,
        typer.Option(
            help="TCP host profile of the user and the VM: paper (163,840 B buffers) or "
            "linux (autotuning); default: the experiment's tcp_profile key."
        ),
    ] = None,
) -> None:
    """Run an experiment: per repetition, variant, traffic and arm, up -> traffic -> down."""
    import signal
    import threading

    from pacao.report.testbed import write as write_report
    from pacao.testbed import net
    from pacao.testbed.trials import RunOptions, run_experiment

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
        tcp_profile=tcp_profile,
    )
    stop = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        summary = run_experiment(opts, log=typer.echo, stop=stop)
    except (InputError, net.TestbedError) as exc:
        raise _fail(str(exc), 2 if isinstance(exc, InputError) else 1) from None
    except (KeyboardInterrupt, net.Interrupted):
        raise _fail("interrupted; every testbed of the run was taken down", 130) from None
    report = write_report(out)
    typer.echo(json.dumps(summary, indent=1))
    typer.echo(f"report: {report.resolve()}")
