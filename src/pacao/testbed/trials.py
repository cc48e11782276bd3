"""The trials of `pacao testbed run`: the Section IV experiments end to end, with real packets.

For each repetition, variant (e.g. Table I's injected delay), traffic kind and
arm, one *trial*: bring the topology up (pacao.testbed.net), start the LISP control plane
and, for the PACAO arms, the controller (pacao.testbed.controlplane), start the
servers in the VM's namespace (``--vm qemu``: the guest's own httpd and iperf3
serve, nothing runs in the namespace) and the client in the user's, play the variant's
impairment timeline, collect the client's measurements and the controller's
plans and events, tear everything down (always: errors, Ctrl-C, SIGTERM).

The PACAO arms' decisions come only from the controller running in the
testbed; without it those arms fail with a clear error (never scripted).
TCP, UDP and the download are separate trials (as in the paper): they would
otherwise share the 8 Mbit/s access bottleneck and disturb each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacao.errors import InputError
from pacao.io import dump_yaml
from pacao.testbed import analysis, net
from pacao.testbed.controlplane import ControllerSettings, MigrationModel, TestbedControlPlane
from pacao.testbed.daemons import traffic
from pacao.testbed.net import Interrupted, Testbed, TestbedError
from pacao.testbed.topo import tcpprofile
from pacao.testbed.topo.experiment import ARMS, Experiment, Variant, load_experiment, resolve
from pacao.testbed.topo.scenario import Event, play
from pacao.testbed.topo.tcpprofile import check_profile
from pacao.testbed.topo.topology import site_xtr
from pacao.testbed.vm.guest import STREAM_PATH
from pacao.testbed.vm.migration import migrate_vm
from pacao.validate import in_range, integer_in

#: The one place of the quick (compressed) settings: `make test`, `reproduce --quick`.
#: 0.05 = 20x: Table I's 450 s take 22.5 s of traffic, Table II's 300 s take 15 s.
QUICK_TIME_SCALE = 0.05
QUICK_REPEAT = 1
#: trials side by side (separate testbeds): Table I's 8 trials in 2 rounds, Table II's 6 in 2
QUICK_PARALLEL = {"table1": 4, "table2": 3}
#: Real seconds the traffic runs before the timeline starts (connection set-up).
LEAD_S = 0.5
#: S''' (agents' probe interval, controller poll) in scenario seconds.
PROBE_S = 1.0
IPERF_MIN_INTERVAL = 0.1
#: `--vm qemu`: the guest's busybox httpd (pacao.testbed.vm.guest) serves the download
GUEST_HTTP_PORT = 80


@dataclass(frozen=True)
class RunOptions:
    scenario: str
    out: Path
    repeat: int = 1
    time_scale: float = 1.0
    topology: Path | None = None
    vm: str = "namespace"
    arms: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    parallel: int = 1
    probe_s: float = PROBE_S
    #: overrides the experiment's tcp_profile (pacao.testbed.topo.tcpprofile)
    tcp_profile: str | None = None

    def validate(self) -> None:
        integer_in("--repeat", self.repeat, 1, allowed="a number of repetitions >= 1")
        in_range(
            "--time-scale", self.time_scale, "a factor in (0, 10]", low=0, high=10, low_open=True
        )
        if self.vm not in ("namespace", "qemu"):
            raise InputError("--vm", self.vm, "namespace or qemu")
        if self.arms is not None and (not self.arms or any(a not in ARMS for a in self.arms)):
            raise InputError("--arms", ",".join(self.arms), f"a list of {', '.join(ARMS)}")
        integer_in("--parallel", self.parallel, 1, allowed="a number of concurrent trials >= 1")
        if self.tcp_profile is not None:
            check_profile("--tcp-profile", self.tcp_profile)
        if self.out.exists() and not self.out.is_dir():
            raise InputError("--out", str(self.out), "a directory (it is a file)")


@dataclass(frozen=True)
class Trial:
    rep: int
    variant: Variant
    traffic: str
    arm: str

    @property
    def key(self) -> str:
        return analysis.trial_key(self.variant.name, self.traffic, self.arm, self.rep)


def quick_options(scenario: str, out: Path) -> RunOptions:
    """The compressed run of `make test` and `pacao reproduce --quick`."""
    return RunOptions(
        scenario=scenario,
        out=out,
        repeat=QUICK_REPEAT,
        time_scale=QUICK_TIME_SCALE,
        parallel=QUICK_PARALLEL.get(scenario, 2),
    )


#: `pacao reproduce` without --quick: real time, one repetition (the paper's 50-100 runs are
#: `pacao testbed run --repeat N`), the arms of a trial group side by side.
FULL_PARALLEL = {"table1": 2, "table2": 3}


def full_options(scenario: str, out: Path) -> RunOptions:
    return RunOptions(
        scenario=scenario, out=out, repeat=1, time_scale=1.0, parallel=FULL_PARALLEL[scenario]
    )


def interval_s(time_scale: float) -> float:
    """Real seconds per measurement interval: 1 scenario second, at least iperf3's 0.1 s."""
    return max(IPERF_MIN_INTERVAL, round(time_scale, 3))


def start_control_plane(
    exp: Experiment, state: Testbed, arm: str, opts: RunOptions, workdir: Path
) -> TestbedControlPlane:
    """Map-server and xTR agents for every arm, plus the controller for the PACAO arms."""
    settings = ControllerSettings(
        policy=arm,  # type: ignore[arg-type]  # checked against ARMS by the experiment
        s1=exp.s1 * opts.time_scale,
        s2=exp.s2 * opts.time_scale,
        s3=opts.probe_s * opts.time_scale,
        vm_backend=opts.vm,  # type: ignore[arg-type]  # checked by the CLI
        **exp.controller,
    )
    model = MigrationModel(time_scale=opts.time_scale, **exp.migration)
    plane = TestbedControlPlane(state, exp.topology, settings, workdir, model)
    plane.start()
    return plane


def _sleeper(stop: threading.Event) -> Callable[[float], None]:
    def sleep(dt: float) -> None:
        if stop.wait(dt):
            raise Interrupted("stopped")

    return sleep


def _vm_node(exp: Experiment) -> str:
    return next(n.name for n in exp.topology.nodes.values() if n.role == "vm")


def _user_node(exp: Experiment) -> str:
    return next(n.name for n in exp.topology.nodes.values() if n.role == "user")


def run_trial(
    exp: Experiment,
    trial: Trial,
    opts: RunOptions,
    stop: threading.Event,
    logs: Path | None = None,
) -> dict[str, Any]:
    """One trial; the testbed is always taken down, the record says what happened."""
    topo = exp.topology
    vm, user = _vm_node(exp), _user_node(exp)
    vm_eid = topo.nodes[vm].eid
    assert vm_eid is not None
    host = str(vm_eid.ip)
    scale = opts.time_scale
    ival = interval_s(scale)
    real_duration = exp.duration * scale
    record: dict[str, Any] = {
        "experiment": exp.name,
        "variant": trial.variant.name,
        "variant_label": trial.variant.label,
        "traffic": trial.traffic,
        "arm": trial.arm,
        "rep": trial.rep,
        "time_scale": scale,
        "duration_s": exp.duration,
        "s1": exp.s1,
        "s2": exp.s2,
        "probe_s": opts.probe_s,
        "interval_s": ival,
        "vm_backend": opts.vm,
        "tcp_profile": exp.tcp_profile,
        "user_xtr": site_xtr(topo, user),
        "vm_prefix": next(
            (str(m.prefix) for m in topo.mappings if vm_eid.ip in m.prefix), str(vm_eid.network)
        ),
    }
    net.check_system()
    record["loadavg_start"] = loadavg()
    state = Testbed.new(exp.topology_path)
    record["run_id"] = state.runid
    plane: TestbedControlPlane | None = None
    phases: dict[str, float] = {}
    record["phases_s"] = phases
    mark = time.monotonic()
    try:
        state.up(topo)
        # the guest of --vm qemu keeps its own kernel's defaults: only the user's side then
        hosts = [user] if opts.vm == "qemu" else [user, vm]
        record["tcp_sysctls"] = state.apply_tcp_profile(hosts, exp.tcp_profile)
        phases["up"] = time.monotonic() - mark
        if stop.is_set():
            raise Interrupted("stopped")
        mark = time.monotonic()
        plane = start_control_plane(exp, state, trial.arm, opts, state.rundir / "cp")
        phases["control_plane"] = time.monotonic() - mark
        mark = time.monotonic()
        cc = tcpprofile.CONGESTION[exp.tcp_profile]
        record["tcp_congestion"] = cc or "host default"
        if trial.traffic == "download":
            out = state.rundir / "fetch.json"
            client_cmd = [
                *traffic.python_cmd(), "fetch", "--host", host,
                "--duration", f"{real_duration + LEAD_S:.3f}",
                "--interval", f"{ival:.3f}", "--out", str(out),
            ]  # fmt: skip
            if cc:
                client_cmd += ["--congestion", cc]
            if opts.vm == "qemu":  # the guest's busybox httpd generates the file (CGI)
                client_cmd += ["--port", str(GUEST_HTTP_PORT),
                               "--path", f"{STREAM_PATH}?{exp.download_bytes}"]  # fmt: skip
                record["server"] = f"guest httpd :{GUEST_HTTP_PORT}{STREAM_PATH}"
            else:
                srv = state.spawn(
                    "srv-download",
                    [
                        *traffic.python_cmd(),
                        "serve",
                        "--size",
                        str(exp.download_bytes),
                        *(["--congestion", cc] if cc else []),
                    ],
                    ns=state.ns(vm),
                )
                state.wait_ready(srv, "srv-download")
                record["server"] = f"VM namespace :{traffic.DOWNLOAD_PORT}"
        else:
            if opts.vm == "qemu":  # the guest's iperf3 -s (-i 0.1) runs from its /init
                record["server"] = f"guest iperf3 :{traffic.IPERF_PORT}"
            else:
                srv = state.spawn(
                    "srv-iperf3", traffic.iperf3_server_cmd(interval=ival), ns=state.ns(vm)
                )
                state.wait_listen(vm, traffic.IPERF_PORT, srv)
                record["server"] = f"VM namespace iperf3 :{traffic.IPERF_PORT}"
            client_cmd = traffic.iperf3_cmd(
                host,
                udp=trial.traffic == "udp",
                duration=real_duration + LEAD_S,
                interval=ival,
                udp_rate=f"{exp.udp_rate_bps}",
                udp_length=exp.udp_length,
                congestion=cc,
            )
        launched = time.time()
        client = state.spawn("client", client_cmd, ns=state.ns(user))
        sleep = _sleeper(stop)
        sleep(LEAD_S)
        t0 = time.time()
        record["timeline_start_wall"] = t0
        record["client_start_wall"] = launched
        applied: list[dict[str, Any]] = []
        scripted: list[threading.Thread] = []
        failures: list[str] = []

        def migrate(event: Event) -> None:
            try:
                res = migrate_vm(state, event.target, str(event.args["dc"]))
                applied.append({"t": (res.started - t0) / scale, "at": event.at,
                                "migrate": event.target, "dc": event.args["dc"],
                                "scripted": True, "modelled": res.modelled})  # fmt: skip
            except (TestbedError, InputError) as exc:
                failures.append(f"scripted migration at {event.at:g} s: {exc}")

        def apply(event: Event) -> None:
            if event.kind == "migrate":  # a scripted migration runs beside the timeline
                th = threading.Thread(target=migrate, args=(event,), daemon=True)
                th.start()
                scripted.append(th)
                return
            if event.kind != "link":
                raise TestbedError(f"unexpected {event.kind} event in an experiment")
            state.set_link(topo, event.target, **event.args)
            applied.append({"t": (time.time() - t0) / scale, "at": event.at,
                            "link": event.target, **event.args})  # fmt: skip

        sampler = _TcpSampler(state, user, vm if opts.vm == "namespace" else None, trial.traffic)
        sampler.start()
        try:
            play(trial.variant.scenario, apply, scale, sleep=sleep)
        finally:
            sampler.stop.set()
            sampler.join(timeout=10.0)
        record["tcp_kernel"] = sampler.summary()
        grace = 30.0 + 3 * LEAD_S
        try:
            state.wait_exit(client, grace, stop, "traffic client")
        except TestbedError:
            if trial.traffic != "tcp":
                raise
            # iperf3 -R hung after its test (traffic.stopped_tcp_measure says when that
            # still measured the whole test); SIGTERM makes it write what it received
            state.kill("client")
            record["client_stopped"] = (
                f"iperf3 still running {grace:.0f} s after its test's end: stopped by SIGTERM"
            )
        for th in scripted:
            th.join(timeout=900.0)
        if failures:
            raise TestbedError("; ".join(failures))
        record["events_applied"] = applied
        log = (state.rundir / "client.log").read_text(errors="replace")
        if trial.traffic == "download":
            doc = json.loads(out.read_text())
            rows = [
                {"t": (launched + i * ival - t0) / scale, "seconds": ival, "bytes": b}
                for i, b in enumerate(doc["bytes_per_interval"])
            ]
            meas: dict[str, Any] = {
                "kind": "download",
                "intervals": rows,
                "bytes": doc["bytes"],
                "expected_bytes": doc["expected_bytes"],
                "complete": doc["complete"],
                "error": doc["error"],
            }
        else:
            try:
                doc = json.loads(log)
                if "client_stopped" in record:
                    meas = traffic.stopped_tcp_measure(
                        doc, test_s=real_duration + LEAD_S, interval=ival
                    )
                else:
                    meas = traffic.parse_iperf3(doc, interval=ival)
            except ValueError as exc:
                raise TestbedError(f"iperf3 client: {exc}: {log[-300:]}") from None
            for row in meas["intervals"]:
                row["t"] = (launched + row.pop("start") - t0) / scale
        # volume inside the scenario's [0, duration] only (the lead is set-up time)
        meas["volume_bytes"] = int(
            sum(r["bytes"] for r in meas["intervals"] if 0 <= r["t"] < exp.duration)
        )
        if meas.get("error"):
            raise TestbedError(f"{trial.traffic} client: {meas['error']}")
        record["measure"] = meas
        record["loadavg_end"] = loadavg()
        record["agent_counters"] = _agent_counters(plane)
        record["plans"] = plane.plans()
        record["cp_events"] = [
            {**e, "t_scenario": (float(e["t"]) - t0) / scale} for e in plane.events()
        ]
        phases["traffic"] = time.monotonic() - mark
    except TestbedError:
        if logs is not None and state.rundir.is_dir():
            with contextlib.suppress(OSError):  # the trial's own error is the one to report
                _keep_diagnostics(state, record, logs)
        raise
    finally:
        mark = time.monotonic()
        if plane is not None:
            with contextlib.suppress(Exception):
                plane.stop()
        state.down()
        phases["down"] = time.monotonic() - mark
    return record


def _keep_diagnostics(state: Testbed, record: dict[str, Any], logs: Path) -> None:
    """What a failed trial leaves to diagnose it: the daemons' logs, the migration events,
    the QEMU guest's console and errors, and the record so far (phases, timeline start).

    The traffic client is stopped first: iperf3 writes its JSON (the intervals it saw)
    only when it ends, and on SIGTERM it still does, so a client that hung shows how far
    its data got."""
    state.kill("client")
    record["loadavg_failed"] = loadavg()
    logs.mkdir(parents=True, exist_ok=True)
    kept = [*state.rundir.glob("*.log"), *state.rundir.glob("events.jsonl")]
    for f in kept:
        shutil.copy(f, logs / f.name)
    for f in [*state.rundir.glob("qemu/serial-*.log"), *state.rundir.glob("qemu/qemu-*.err")]:
        shutil.copy(f, logs / f"qemu-{f.name}")
    (logs / "record.json").write_text(json.dumps(record, indent=1, default=str))


#: agent counters kept per trial: what touched each data plane and why
AGENT_COUNTERS = (
    "dataplane_push", "dataplane_push_unchanged", "change_priority_received", "smr_received",
    "map_reply", "map_register_sent", "set_priorities",
)  # fmt: skip


def _agent_counters(plane: TestbedControlPlane) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for node in plane.xtrs:
        with contextlib.suppress(OSError, ValueError, KeyError, InputError):
            counters = plane.agent(node).get("counters", {})
            out[node] = {k: int(counters.get(k, 0)) for k in AGENT_COUNTERS}
    return out


class _TcpSampler(threading.Thread):
    """Reads ``ss -tin`` in the user's and the VM's namespaces every second during a
    TCP trial: the windows the kernel actually used (the profile's check)."""

    def __init__(self, state: Testbed, user: str, vm: str | None, kind: str) -> None:
        super().__init__(daemon=True)
        self.state, self.user, self.vm, self.kind = state, user, vm, kind
        self.stop = threading.Event()
        self.samples = 0
        self.peak: dict[str, int] = {}
        self.cc: dict[str, str] = {}

    def run(self) -> None:
        if self.kind == "udp":
            return
        port = traffic.DOWNLOAD_PORT if self.kind == "download" else traffic.IPERF_PORT
        while not self.stop.wait(1.0):
            for role, node in (("user", self.user), ("vm", self.vm)):
                if node is None:
                    continue
                with contextlib.suppress(TestbedError, OSError):
                    for c in self.state.ss_tcp(node, port):
                        if c.get("bytes_acked", 0) + c.get("bytes_received", 0) < 1_000_000:
                            continue  # iperf3's control connection
                        if "cc" in c:
                            self.cc[role] = str(c["cc"])
                        for k in ("snd_wnd", "rcv_space", "cwnd", "mss"):
                            if k in c:
                                key = f"{role}_{k}_max"
                                self.peak[key] = max(self.peak.get(key, 0), int(c[k]))
                        self.samples += 1

    def summary(self) -> dict[str, Any]:
        return {"samples": self.samples, "cc": self.cc, **dict(sorted(self.peak.items()))}


def check_vm_backend(exp: Experiment, opts: RunOptions) -> None:
    """`--vm qemu` needs the VXLAN fabric (the guest's TAP is a port of the dc bridges)."""
    if opts.vm == "qemu" and exp.topology.fabric != "vxlan":
        raise InputError("--vm", "qemu", "a topology with fabric: vxlan (the guest's TAP "
                         "is a port of the dc bridges)")  # fmt: skip


def trials(exp: Experiment, opts: RunOptions) -> list[Trial]:
    arms = opts.arms or exp.arms
    variants = exp.variants
    if opts.variants:
        names = {v.name for v in exp.variants}
        for v in opts.variants:
            if v not in names:
                raise InputError("--variants", v, f"one of {sorted(names)}")
        variants = tuple(v for v in exp.variants if v.name in opts.variants)
    return [
        Trial(rep, v, t, arm)
        for rep in range(opts.repeat)
        for v in variants
        for t in exp.traffic
        for arm in arms
    ]


@contextlib.contextmanager
def _pool(n: int) -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="trial")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_experiment(
    opts: RunOptions, log: Callable[[str], None] = print, stop: threading.Event | None = None
) -> dict[str, Any]:
    """Run every trial (``parallel`` at a time), write the raw records and summary.json
    (the CLI then draws the report: pacao.report.testbed)."""
    opts.validate()
    exp = load_experiment(resolve(opts.scenario), opts.topology)
    if opts.tcp_profile is not None:
        exp = dataclasses.replace(exp, tcp_profile=opts.tcp_profile)
    check_vm_backend(exp, opts)
    todo = trials(exp, opts)
    net.check_system()
    stop = stop or threading.Event()
    raw = opts.out / "raw" / exp.name
    if raw.is_dir():  # a new run of this experiment replaces its previous results
        for old in raw.glob("*.json"):
            old.unlink()
        shutil.rmtree(raw / "logs", ignore_errors=True)
    raw.mkdir(parents=True, exist_ok=True)
    if exp.topology_doc is not None:
        topo_file = (raw / "topology.yaml").resolve()
        topo_file.write_text(dump_yaml(exp.topology_doc, sort_keys=False))
        exp = dataclasses.replace(exp, topology_path=topo_file)
    records: list[dict[str, Any]] = []
    started = time.monotonic()

    def one(trial: Trial) -> dict[str, Any]:
        t = time.monotonic()
        name = f"{trial.variant.name}-{trial.traffic}-{trial.arm}-r{trial.rep}"
        try:
            rec = run_trial(exp, trial, opts, stop, logs=raw / "logs" / name)
        except TestbedError as exc:
            # one failed trial (e.g. a traffic tool aborting) is reported, not fatal
            rec = {"experiment": exp.name, "variant": trial.variant.name,
                   "traffic": trial.traffic, "arm": trial.arm, "rep": trial.rep,
                   "error": str(exc)}  # fmt: skip
            log(f"{exp.name} {trial.key}: FAILED: {exc} (logs in {raw / 'logs' / name})")
        rec["wall_s"] = time.monotonic() - t
        (raw / f"{name}.json").write_text(json.dumps(rec))
        if "error" not in rec:
            vol = rec["measure"]["volume_bytes"] / 1e6
            log(f"{exp.name} {trial.key}: {vol:.2f} MB in {rec['wall_s']:.1f} s")
        return rec

    with _pool(opts.parallel) as pool:
        futures: list[Future[dict[str, Any]]] = []
        try:
            # trials are ordered rep, variant, traffic, arm: a batch runs the arms side by side
            for i in range(0, len(todo), opts.parallel):
                futures = [pool.submit(one, tr) for tr in todo[i : i + opts.parallel]]
                _collect(futures, records, stop)
        except BaseException:
            stop.set()
            wait(futures)
            raise
    return write_results(exp, opts, records, time.monotonic() - started)


def _collect(
    futures: list[Future[dict[str, Any]]], records: list[dict[str, Any]], stop: threading.Event
) -> None:
    done, _ = wait(futures, return_when=FIRST_EXCEPTION)
    for f in done:
        if f.exception() is not None:
            stop.set()
            wait(futures)
            raise f.exception()  # type: ignore[misc]
    wait(futures)
    records.extend(f.result() for f in futures)


def loadavg() -> str:
    """The machine's load average (1, 5, 15 min): measurements under load differ."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def experiment_meta(exp: Experiment, opts: RunOptions, wall_s: float) -> dict[str, Any]:
    """What the summary needs to know about the run (raw/<experiment>/experiment.json)."""
    return {
        "name": exp.name,
        "title": exp.title,
        "file": str(exp.path),
        "topology": str(exp.topology_path),
        "duration_s": exp.duration,
        "s1": exp.s1,
        "s2": exp.s2,
        "probe_s": opts.probe_s,
        "time_scale": opts.time_scale,
        "repeat": opts.repeat,
        "vm": opts.vm,
        "tcp_profile": exp.tcp_profile,
        "parallel": opts.parallel,
        "loadavg_end": loadavg(),
        "windows": {k: list(v) for k, v in exp.windows.items()},
        "variant_order": [v.name for v in exp.variants],
        "paper": exp.paper,
        "wall_s": wall_s,
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def write_results(
    exp: Experiment, opts: RunOptions, records: list[dict[str, Any]], wall_s: float
) -> dict[str, Any]:
    """Store this experiment's metadata, then re-summarise every experiment of the folder
    (summary.json, intervals CSVs; the report is pacao.report.testbed's)."""
    raw = opts.out / "raw" / exp.name
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "experiment.json").write_text(json.dumps(experiment_meta(exp, opts, wall_s), indent=1))
    return analysis.rebuild(opts.out)
