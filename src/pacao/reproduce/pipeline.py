"""`pacao reproduce`: the paper's Section V from traces to report.

Stages: traces and DC sites (pacao.sim.geography / mobility, or given
inputs), RTT tables and bounds per deployment, the S'/S'' sweep on Dask, the
headline configurations per sample, figures, report.html and summary.json.
Everything goes to one run folder (docs/simulation.md lists the files).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from pacao.decision import ENTRY_METRICS, Params
from pacao.errors import InputError
from pacao.report.figures import draw_all, figure_plan
from pacao.report.html import write_report
from pacao.reproduce.claims import compute_claims, not_computed
from pacao.reproduce.results import Headline, Inputs
from pacao.reproduce.sensitivity import run_sensitivity
from pacao.reproduce.testbed_stage import link_testbed, testbed_stage
from pacao.sim.congestion import CongestionRun, dcs_table, users_table
from pacao.sim.congestion import run_all as run_congestion
from pacao.sim.engine import Outcome, Trajectories, legacy, prepare, schedule, simulate
from pacao.sim.geography import EUROPE_RULES
from pacao.sim.legacy import placement_table, reading
from pacao.sim.network import throughput_mbps
from pacao.sim.policy import PAPER_PARAMS, Policy, Timing
from pacao.sim.scale import PARTITION_USERS, Config, Shared
from pacao.sim.sweep import (
    Deployment,
    GridPoint,
    SweepData,
    dask_client,
    deployment,
    grid,
    run_sweep,
)
from pacao.testbed.net import TestbedError
from pacao.validate import integer_in, non_negative, positive

USE_CASES = ("france_isp", "europe_ott")
USE_CASE_TITLES = {"france_isp": "France/ISP", "europe_ott": "Europe/OTT"}
DC_COUNTS = (1, 2, 4, 8, 16, 32, 64)
#: The paper's best deployment per use case (Sec. V-B) and its headline gain.
HEADLINE_DCS = {"france_isp": 64, "europe_ott": 4}
PAPER_GAIN = {"france_isp": 0.40, "europe_ott": 0.30}
FULL_GRID = tuple(round(0.1 * k, 1) for k in range(1, 10))
QUICK_GRID = (0.1, 0.5, 0.9)
QUICK_USERS = 10000
FULL_USERS = 36450
#: The paper's best setting as written, "6', 36''", read as absolute S' = 6 min, S'' = 36 s.
PAPER_SETTING = (360.0, 36.0)
SUMMARY_KEYS = (
    "n_dcs",
    "legacy_median_rtt_ms",
    "pacao1_median_rtt_ms",
    "pacao2_median_rtt_ms",
    "pacao1_median_throughput_gain",
    "pacao2_median_throughput_gain",
)


def synthetic_inputs(
    n_users: int, seed: int, dc_counts: tuple[int, ...] = DC_COUNTS, europe: str = "abutting"
) -> Inputs:
    """Built-in LAC cells, synthetic traces and population-drawn DC sites (docs/traces.md);
    ``europe`` is the Europe/OTT site rule (pacao.sim.geography.EUROPE_RULES)."""
    from pacao.sim.geography import build_lacs, dc_sites
    from pacao.sim.mobility import DEFAULT_PARAMS, generate_traces
    from pacao.sim.traces import trace_stats

    lacs = build_lacs(seed)
    traces = generate_traces(lacs, n_users=n_users, seed=seed)
    frames = []
    for uc in USE_CASES:
        for n in dc_counts:
            d = dc_sites(uc, n, lacs, seed=seed, europe=europe)
            frames.append(
                d.assign(use_case=uc, n_dcs=n)[["use_case", "n_dcs", "name", "lat", "lon"]]
            )
    return Inputs(
        traces=traces,
        lacs=lacs,
        dcs=unique_names(pd.concat(frames, ignore_index=True)),
        source=(
            f"synthetic traces (pacao.sim.mobility, seed {seed}, {n_users} users, "
            f"long-trip probability {DEFAULT_PARAMS.p_long_trip:g})"
        ),
        stats=trace_stats(traces),
    )


def trace_inputs(
    path: Path,
    lac_table: Path | None,
    seed: int,
    dc_counts: tuple[int, ...] = DC_COUNTS,
    europe: str = "abutting",
) -> Inputs:
    """A user's own traces (format in docs/traces.md), read at LAC level like the paper.

    Every sample is placed at its LAC's centre (the simulator tabulates decisions
    per LAC); DC sites are drawn from the shipped geography as for synthetic runs.
    """
    from pacao.sim.geography import build_lacs, dc_sites
    from pacao.sim.traces import load_lac_table, load_traces, trace_stats

    lacs = build_lacs(seed)
    traces = load_traces(path, lacs, lac_table)
    cells = lacs if lac_table is None else load_lac_table(lac_table)
    centre = cells.set_index("lac")[["lat", "lon"]]
    traces = traces.assign(
        lat=centre["lat"].reindex(traces["lac"]).to_numpy(),
        lon=centre["lon"].reindex(traces["lac"]).to_numpy(),
    )
    frames = [
        dc_sites(uc, n, lacs, seed=seed, europe=europe).assign(use_case=uc, n_dcs=n)[
            ["use_case", "n_dcs", "name", "lat", "lon"]
        ]
        for uc in USE_CASES
        for n in dc_counts
    ]
    return Inputs(
        traces=traces,
        lacs=cells,
        dcs=unique_names(pd.concat(frames, ignore_index=True)),
        source=f"traces from {path} ({traces['user_id'].nunique()} users, at LAC centres)",
        stats=trace_stats(traces),
    )


def unique_names(dcs: pd.DataFrame) -> pd.DataFrame:
    """DC names unique within each deployment (two LACs may share a town name): later
    duplicates get " #2", " #3", ... so that legacy_placement.parquet's names are keys."""
    k = dcs.groupby(["use_case", "n_dcs", "name"], sort=False).cumcount().to_numpy()
    if not k.any():
        return dcs
    names = dcs["name"].astype(str).to_numpy(dtype=object)
    names[k > 0] = [f"{n} #{i + 1}" for n, i in zip(names[k > 0], k[k > 0], strict=True)]
    return dcs.assign(name=names)


@dataclass(frozen=True)
class Options:
    out: Path
    quick: bool = False
    users: int | None = None
    seed: int = 0
    scheduler: str | None = None
    migration_s: float = 0.0
    workers: int | None = None
    legacy: str = "home-entry-random-vm"
    entry_metric: str = "user-rloc"
    europe: str = "abutting"
    sensitivity: bool = True
    dc_counts: tuple[int, ...] = DC_COUNTS

    def settings(self) -> dict[str, str]:
        """The readings of this run, recorded in summary.json and the report."""
        return {"legacy": self.legacy, "entry_metric": self.entry_metric, "europe": self.europe}

    @property
    def params(self) -> Params:
        """The controller's decision settings of this run (the paper's, entry metric set)."""
        return replace(PAPER_PARAMS, entry_metric=self.entry_metric)

    @property
    def n_users(self) -> int:
        if self.users is not None:
            return self.users
        return QUICK_USERS if self.quick else FULL_USERS

    @property
    def grid_values(self) -> tuple[float, ...]:
        return QUICK_GRID if self.quick else FULL_GRID

    def validate(self) -> None:
        if self.users is not None:
            integer_in("--users", self.users, 1, allowed="a number of users >= 1")
        if self.workers is not None:
            integer_in("--workers", self.workers, 1, allowed="a number of worker processes >= 1")
            if self.scheduler:
                raise InputError(
                    "--workers", self.workers, "only without --scheduler (a LocalCluster's size)"
                )
        non_negative("migration time", self.migration_s, "seconds >= 0")
        if self.out.exists() and not self.out.is_dir():
            raise InputError("--out", str(self.out), "a directory (it is a file)")
        reading(self.legacy)
        if self.entry_metric not in ENTRY_METRICS:
            raise InputError(
                "--entry-metric", self.entry_metric, f"one of {', '.join(ENTRY_METRICS)}"
            )
        if self.europe not in EUROPE_RULES:
            raise InputError("--europe", self.europe, f"one of {', '.join(EUROPE_RULES)}")
        check_dc_counts(self.dc_counts)


def check_dc_counts(counts: tuple[int, ...]) -> None:
    """The paper's DC counts, at least the headline deployments (their summary keys)."""
    allowed = (
        f"a comma-separated subset of {','.join(map(str, DC_COUNTS))} with "
        f"{HEADLINE_DCS['europe_ott']} and {HEADLINE_DCS['france_isp']} (the headline "
        "deployments: Europe/OTT 4 DCs, France/ISP 64 DCs)"
    )
    for n in counts:
        if n not in DC_COUNTS:
            raise InputError("--dc-counts", n, allowed)
    if not set(HEADLINE_DCS.values()) <= set(counts):
        raise InputError("--dc-counts", ",".join(map(str, counts)), allowed)


def parse_dc_counts(text: str) -> tuple[int, ...]:
    """``--dc-counts 1,4,64``: the DC counts, in the paper's order, without repeats."""
    counts = set()
    for word in text.split(","):
        try:
            counts.add(int(word.strip()))
        except ValueError:
            raise InputError(
                "--dc-counts", word.strip() or text, "comma-separated integers, e.g. 4,64"
            ) from None
    out = tuple(sorted(counts))
    check_dc_counts(out)
    return out


class Stages:
    """Rich progress: one line per stage, a bar for the sweep; wall time per stage."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, total: int = 1) -> Iterator[Callable[[], None]]:
        task = self.progress.add_task(name, total=total)
        start = time.perf_counter()

        def advance() -> None:
            self.progress.advance(task)

        yield advance
        self.progress.update(task, completed=total)
        self.seconds[name] = time.perf_counter() - start
        if not self.progress.console.is_terminal:  # logs get one line per stage
            self.progress.console.print(f"{name}: {self.seconds[name]:.1f} s")


def _deployments(tr: Trajectories, dcs: pd.DataFrame, opts: Options) -> list[Deployment]:
    out = []
    for (uc, n), g in dcs.groupby(["use_case", "n_dcs"], sort=False):
        dep = deployment(
            tr,
            str(uc),
            g["lat"].to_numpy(np.float64),
            g["lon"].to_numpy(np.float64),
            params=opts.params,
            legacy=opts.legacy,
            seed=opts.seed,
        )
        if dep.n_dcs != int(n):
            raise InputError("dcs", f"{uc}/{n}", f"{n} rows for n_dcs={n} (found {dep.n_dcs})")
        out.append(dep)
    return out


def best_point(sweep: pd.DataFrame, use_case: str, n_dcs: int) -> tuple[float, float]:
    """The (S', S'') with the lowest PACAO-2 median RTT, strict bound (ties: smallest)."""
    rows = sweep[
        (sweep.use_case == use_case)
        & (sweep.n_dcs == n_dcs)
        & (sweep.bound == "strict")
        & (sweep.policy == "pacao2")
    ].sort_values(["median_rtt_ms", "s1", "s2"], kind="stable")
    if rows.empty:
        raise InputError("dcs", f"{use_case}/{n_dcs}", "the headline deployment is missing")
    return float(rows.iloc[0].s1), float(rows.iloc[0].s2)


def _headline(
    tr: Trajectories, dep: Deployment, s1: float, s2: float, migration_s: float
) -> Headline:
    dec = dep.decisions["strict"]
    point = GridPoint(s1, s2, True, migration_s)
    sched = schedule(tr, point.timing())
    outs: dict[str, Outcome] = {"legacy": legacy(tr, dep.net, dep.start)}
    outs["pacao1"] = simulate(tr, sched, dep.net, dec, Policy.PACAO1, dep.start)
    outs["pacao2"] = simulate(tr, sched, dep.net, dec, Policy.PACAO2, dep.start)
    paper = Timing(*PAPER_SETTING, relative=False, migration_s=migration_s)
    psched = schedule(tr, paper)
    paper_setting = {
        p.value: float(simulate(tr, psched, dep.net, dec, p, dep.start).quantiles([0.5])[0])
        for p in (Policy.PACAO1, Policy.PACAO2)
    }
    return Headline(
        use_case=dep.use_case,
        dep=dep,
        point=point,
        rtt={k: o.rtt_ms for k, o in outs.items()},
        paper_setting=paper_setting,
        switches={k: o.switches for k, o in outs.items()},
        migrations={k: o.migrations for k, o in outs.items()},
    )


def _write_headline(path: Path, traces: pd.DataFrame, h: Headline) -> None:
    df = pd.DataFrame(
        {
            "user_id": traces["user_id"].to_numpy(np.int64),
            "t": traces["t"].to_numpy(np.int64),
            "lac": traces["lac"].to_numpy(np.int64),
        }
    )
    for p, r in h.rtt.items():
        df[f"{p}_rtt_ms"] = r
    for p, r in h.rtt.items():
        df[f"{p}_mbps"] = throughput_mbps(r)
    df.to_parquet(path, index=False)


def reproduce(inputs: Inputs | None, opts: Options, console: Console | None = None) -> Path:
    """Run everything; returns the path of report.html."""
    opts.validate()
    console = console or Console(stderr=True)
    out = opts.out
    (out / "results").mkdir(parents=True, exist_ok=True)
    stages = Stages(console)
    points = grid(opts.grid_values, opts.grid_values, True, opts.migration_s)
    t_start = time.perf_counter()
    with stages.progress, contextlib.ExitStack() as stack:
        with stages.stage("Dask: " + (opts.scheduler or "starting a LocalCluster")):
            client = stack.enter_context(dask_client(opts.scheduler, opts.workers))
        with stages.stage("traces and DC sites"):
            if inputs is None:
                inputs = synthetic_inputs(
                    opts.n_users, opts.seed, opts.dc_counts, europe=opts.europe
                )
            traces = inputs.traces[["user_id", "t", "lat", "lon", "lac"]]
            traces.to_parquet(out / "traces.parquet", index=False)
            inputs.dcs[["use_case", "n_dcs", "name", "lat", "lon"]].to_csv(
                out / "dcs.csv", index=False
            )
            for uc in USE_CASES:
                if not ((inputs.dcs.use_case == uc) & (inputs.dcs.n_dcs == HEADLINE_DCS[uc])).any():
                    raise InputError("dcs", uc, f"needs the {HEADLINE_DCS[uc]}-DC deployment")
        with stages.stage("RTT tables, bounds, decisions"):
            tr = prepare(traces)
            deps = _deployments(tr, inputs.dcs, opts)
            write_placement(out / "legacy_placement.parquet", tr, deps, inputs.dcs)
            write_inputs(out, inputs.lacs, inputs.source, tr.n_users, tr.n_samples, inputs.stats)
            pd.DataFrame(
                {"lat": tr.pos_lat, "lon": tr.pos_lon, "samples": tr.pos_weight}
            ).to_parquet(out / "results" / "positions.parquet", index=False)
        data = SweepData(tr, deps)
        with stages.stage(
            f"sweep: {len(points)} (S', S'') points x {len(deps)} deployments x 3 bounds",
            len(points),
        ) as adv:
            sweep = run_sweep(client, data, points, adv)
            sweep.to_parquet(out / "results" / "sweep.parquet", index=False)
        heads: dict[str, Headline] = {}
        with stages.stage("headline configurations", len(USE_CASES)) as adv:
            for uc in USE_CASES:
                dep = next(d for d in deps if d.use_case == uc and d.n_dcs == HEADLINE_DCS[uc])
                s1, s2 = best_point(sweep, uc, dep.n_dcs)
                heads[uc] = _headline(tr, dep, s1, s2, opts.migration_s)
                _write_headline(out / "results" / f"headline_{uc}.parquet", traces, heads[uc])
                adv()
            settings = {
                uc: {
                    "n_dcs": h.dep.n_dcs,
                    "bound": "strict",
                    "bound_ms": h.dep.bounds["strict"],
                    "s1_fraction_of_residence": h.point.s1,
                    "s2_fraction_of_s1": h.point.s2,
                    "migration_s": opts.migration_s,
                    "switches": h.switches,
                    "migrations": h.migrations,
                    **opts.settings(),
                }
                for uc, h in heads.items()
            }
            (out / "results" / "headline.json").write_text(json.dumps(settings, indent=2) + "\n")
            paper = {uc: h.paper_setting for uc, h in heads.items()}
            (out / "results" / "paper_setting.json").write_text(json.dumps(paper, indent=2) + "\n")
        with stages.stage("congestion-aware assignment (Sec. V-C)", len(deps)) as adv:
            runs = run_congestion(tr, deps, adv)
            users_table(tr, runs).to_parquet(out / "results" / "congestion_users.parquet")
            dcs_table(runs, inputs.dcs).to_parquet(out / "results" / "congestion_dcs.parquet")
        sens: pd.DataFrame | None = None
        if opts.sensitivity:
            with stages.stage(
                "sensitivity (legacy readings, frozen users, sites, sessions)", 4
            ) as adv:
                sens = run_sensitivity(traces, tr, inputs, opts, heads, adv)
                sens.to_parquet(out / "results" / "sensitivity.parquet", index=False)
        summary = {uc: heads[uc].summary() for uc in USE_CASES}
        full_summary: dict[str, Any] = dict(summary)
        full_summary["settings"] = opts.settings()
        full_summary["congestion"] = congestion_summary(runs)
        claims = compute_claims(
            out,
            summary,
            full_summary["congestion"],
            f"{tr.n_users:,} users" + (", --quick" if opts.quick else ""),
        )
        full_summary["claims"] = claims
        full_summary["sensitivity"] = (
            None if sens is None else json.loads(sens.to_json(orient="records"))
        )
        (out / "summary.json").write_text(json.dumps(full_summary, indent=2) + "\n")
        report = _figures_and_report(out, opts, stages, t_start)
    return report


def _figures_and_report(out: Path, opts: Options, stages: Stages, t_start: float) -> Path:
    """Every figure the run folder's files allow, then report.html: drawn from the files
    alone, so a single-file and a partitioned run share this step; one task per figure."""
    plan = figure_plan(out)
    with stages.stage("figures and report", len(plan) + 1) as adv:
        figs = draw_all(plan, adv)
        report = write_report(
            out,
            opts=opts,
            figures=figs,
            stage_seconds=stages.seconds,
            total_seconds=time.perf_counter() - t_start,
        )
        adv()
    return report


def write_inputs(
    out: Path,
    lacs: pd.DataFrame,
    source: str,
    users: int,
    samples: int,
    stats: dict[str, Any],
) -> None:
    """results/lacs.parquet (the LAC centres: lac, lat, lon) and results/inputs.json
    (where the traces came from, users, samples, trace statistics) for the report."""
    lacs[["lac", "lat", "lon"]].to_parquet(out / "results" / "lacs.parquet", index=False)
    doc = {"source": source, "users": users, "samples": samples, "trace_stats": stats}
    (out / "results" / "inputs.json").write_text(json.dumps(doc, indent=2) + "\n")


def write_placement(
    path: Path, tr: Trajectories, deps: list[Deployment], dcs: pd.DataFrame
) -> None:
    """legacy_placement.parquet: use_case, n_dcs, user_id, entry_dc, vm_dc for every
    deployment (names as in dcs.csv), in deployment then user order."""
    frames = []
    for dep in deps:
        d = dcs[(dcs.use_case == dep.use_case) & (dcs.n_dcs == dep.n_dcs)]
        frames.append(placement_table(tr, dep.use_case, d["name"].astype(str).tolist(), dep.start))
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)


def congestion_summary(runs: list[CongestionRun]) -> dict[str, dict[str, Any]]:
    """summary.json["congestion"]: {use_case: {n_dcs: median RTT, solve figures, ...}}."""
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        out.setdefault(r.use_case, {})[str(r.n_dcs)] = r.summary()
    return out


def headline_table(summary: dict[str, dict[str, float | int]]) -> Table:
    """The numbers next to the paper's, for the terminal."""
    t = Table(title="PACAO vs legacy (medians over all user samples, strict bound)")
    for col in ("use case", "DCs", "legacy RTT", "PACAO-1 RTT", "PACAO-2 RTT"):
        t.add_column(col, justify="right" if col != "use case" else "left")
    t.add_column("PACAO-2 thr. gain", justify="right")
    t.add_column("paper", justify="right")
    for uc, s in summary.items():
        if uc not in USE_CASES:
            continue
        t.add_row(
            USE_CASE_TITLES[uc],
            str(s["n_dcs"]),
            f"{s['legacy_median_rtt_ms']:.2f} ms",
            f"{s['pacao1_median_rtt_ms']:.2f} ms",
            f"{s['pacao2_median_rtt_ms']:.2f} ms",
            f"{s['pacao2_median_throughput_gain']:+.1%}",
            f"~{PAPER_GAIN[uc]:+.0%}",
        )
    return t


def migration_seconds(vm_memory_gb: float, dc_gbps: float) -> float:
    """Time to copy the VM's memory between DCs: GB x 8 / (Gbit/s); 0 GB = the paper."""
    non_negative("--vm-memory-gb", vm_memory_gb, "a memory size in GB >= 0")
    positive("--dc-gbps", dc_gbps, "an inter-DC bandwidth in Gbit/s > 0")
    return vm_memory_gb * 8.0 / dc_gbps


def run_cli(
    quick: bool,
    users: int | None,
    out: Path | None,
    scheduler: str | None,
    seed: int,
    vm_memory_gb: float,
    dc_gbps: float,
    traces: Path | None = None,
    lac_table: Path | None = None,
    testbed: bool = True,
    legacy: str = "home-entry-random-vm",
    entry_metric: str = "user-rloc",
    europe: str = "abutting",
    sensitivity: bool = True,
    partition_users: int | None = None,
    dc_counts: tuple[int, ...] = DC_COUNTS,
    workers: int | None = None,
) -> None:
    """`pacao reproduce`: run, then print the headline table and the report's path.

    A dataset folder as ``traces``, or ``partition_users``, runs the partitioned sweep
    (:func:`reproduce_partitioned`) instead.

    Then (unless ``testbed`` is False) the Sec. IV testbed stage; a testbed failure is
    written into the report and summary, then raised (exit status 1)."""
    if traces is None and lac_table is not None:
        raise InputError("--lac-table", str(lac_table), "only meaningful with --traces")
    if traces is not None and users is not None:
        raise InputError("--users", users, "cannot be combined with --traces (the file sets them)")
    opts = Options(
        out=out or Path("runs") / ("reproduce-quick" if quick else "reproduce"),
        quick=quick,
        users=users,
        seed=seed,
        scheduler=scheduler,
        migration_s=migration_seconds(vm_memory_gb, dc_gbps),
        legacy=legacy,
        entry_metric=entry_metric,
        europe=europe,
        sensitivity=sensitivity,
        dc_counts=dc_counts,
        workers=workers,
    )
    opts.validate()
    if partition_users is not None or (traces is not None and traces.is_dir()):
        if lac_table is not None:
            raise InputError("--lac-table", str(lac_table), "not supported with a dataset")
        report = reproduce_partitioned(
            traces, opts, partition_users or PARTITION_USERS, Console(stderr=True)
        )
        summary = json.loads((opts.out / "summary.json").read_text())
        Console().print(headline_table(summary))
        Console().print(f"report: {report.resolve()}")
        return
    inputs = (
        None
        if traces is None
        else trace_inputs(traces, lac_table, seed, opts.dc_counts, europe=europe)
    )
    report = reproduce(inputs, opts, Console(stderr=True))
    summary = json.loads((opts.out / "summary.json").read_text())
    console = Console()
    console.print(headline_table(summary))
    if testbed:
        try:
            tb = testbed_stage(opts.out, quick, Console(stderr=True))
        except TestbedError as exc:
            link_testbed(opts.out, {"error": str(exc)})
            raise
        link_testbed(opts.out, tb)
        if "skipped" not in tb:
            console.print(f"testbed report: {(opts.out / 'testbed' / 'report.html').resolve()}")
    console.print(f"report: {report.resolve()}")


def partitioned_summary(
    sweep: pd.DataFrame, n_dcs: dict[str, int]
) -> dict[str, dict[str, float | int]]:
    """The headline keys of summary.json from the reduced sweep rows alone (strict bound,
    the best (S', S'') of PACAO-2; PACAO-1 at its S'): no per-sample arrays needed."""
    out: dict[str, dict[str, float | int]] = {}
    for uc, n in n_dcs.items():
        s1, s2 = best_point(sweep, uc, n)
        rows = sweep[(sweep.use_case == uc) & (sweep.n_dcs == n) & (sweep.bound == "strict")]
        leg = rows[rows.policy == "legacy"].iloc[0]
        p1 = rows[(rows.policy == "pacao1") & (rows.s1 == s1)].iloc[0]
        p2 = rows[(rows.policy == "pacao2") & (rows.s1 == s1) & (rows.s2 == s2)].iloc[0]
        thr = float(leg.median_throughput_mbps)
        out[uc] = {
            "n_dcs": n,
            "s1_fraction_of_residence": s1,
            "s2_fraction_of_s1": s2,
            "legacy_median_rtt_ms": float(leg.median_rtt_ms),
            "pacao1_median_rtt_ms": float(p1.median_rtt_ms),
            "pacao2_median_rtt_ms": float(p2.median_rtt_ms),
            "pacao1_median_throughput_gain": float(p1.median_throughput_mbps) / thr - 1.0,
            "pacao2_median_throughput_gain": float(p2.median_throughput_mbps) / thr - 1.0,
        }
    return out


def reproduce_partitioned(
    dataset: Path | None, opts: Options, partition_users: int, console: Console | None = None
) -> Path:
    """Section V on a user-partitioned dataset (pacao.sim.scale): the given one, or
    synthetic users generated into ``out/traces/`` by Dask tasks. Writes the reduced
    result files (sweep rows, positions, headline histograms), the claims that need only
    them, the congestion-aware stage's results (pacao.sim.congestion_scale),
    summary.json (``partitioned.not_run``: what needs every sample in one process,
    and why), the figures and report.html through the single-file run's report code;
    returns the path of report.html. No step gathers per-sample arrays in this process."""
    from pacao.sim.congestion_scale import run_congestion_scaled, stage_tasks
    from pacao.sim.geography import build_lacs
    from pacao.sim.scale import (
        build_shared,
        generate_dataset,
        job_groups,
        open_dataset,
        positions_table,
        run_scaled,
        sweep_tasks,
        synthetic_dcs,
    )

    opts.validate()
    integer_in("--partition-users", partition_users, 1, allowed="a number of users >= 1")
    console = console or Console(stderr=True)
    out = opts.out
    (out / "results").mkdir(parents=True, exist_ok=True)
    stages = Stages(console)
    points = grid(opts.grid_values, opts.grid_values, True, opts.migration_s)
    n_parts = -(-opts.n_users // partition_users)
    t_start = time.perf_counter()
    with stages.progress, contextlib.ExitStack() as stack:
        with stages.stage("Dask: " + (opts.scheduler or "starting a LocalCluster")):
            client = stack.enter_context(dask_client(opts.scheduler, opts.workers))
        if dataset is None:
            with stages.stage(f"traces dataset: {n_parts} partitions", n_parts) as adv:
                ds = generate_dataset(
                    client,
                    out / "traces",
                    opts.n_users,
                    opts.seed,
                    partition_users=partition_users,
                    advance=adv,
                )
        else:
            ds = open_dataset(dataset)
        dcs = synthetic_dcs(opts.seed, opts.dc_counts, opts.europe)
        dcs.to_csv(out / "dcs.csv", index=False)
        with stages.stage("scan, RTT tables, bounds, decisions"):
            sh = build_shared(
                client, ds, dcs, params=opts.params, legacy=opts.legacy, seed=opts.seed
            )
        # Report inputs from the scan (small): positions with their sample counts, LACs.
        positions_table(sh.scan).to_parquet(out / "results" / "positions.parquet", index=False)
        source = (
            f"dataset {ds.root} ({sh.scan.users:,} users in {len(ds.files):,} partitions"
            + (", synthetic: pacao.sim.mobility" if ds.lac_level else ", at LAC centres")
            + ")"
        )
        write_inputs(out, build_lacs(sh.lac_seed), source, sh.scan.users, sh.scan.samples, {})
        hists: dict[Config, tuple[np.ndarray, np.ndarray]] = {}
        shutil.rmtree(out / "sweep-spill", ignore_errors=True)  # a crashed run's leftovers
        with stages.stage(
            f"sweep: {len(ds.files)} partitions x {len(job_groups(points))} S' rows and "
            "legacy x 2 passes",
            sweep_tasks(len(ds.files), points),
        ) as adv:
            sweep = run_scaled(
                client,
                sh,
                points,
                adv,
                window=max(2, opts.workers or 2),
                histograms=hists,
                spill=out / "sweep-spill",  # beside the results: workers read the run folder
            )
            shutil.rmtree(out / "sweep-spill", ignore_errors=True)
            sweep.to_parquet(out / "results" / "sweep.parquet", index=False)
        # --- congestion-aware stage (Sec. V-C), partitioned: pacao.sim.congestion_scale ---
        n_deps = len(sh.deployments)
        with stages.stage(
            f"congestion-aware assignment (Sec. V-C): {len(ds.files)} partitions x "
            f"{n_deps} deployments (tasks)",
            stage_tasks(len(ds.files), n_deps),
        ) as adv:
            congestion = run_congestion_scaled(client, sh, dcs, out / "results", adv)
        # --- end of the congestion-aware stage ---
        summary: dict[str, Any] = dict(partitioned_summary(sweep, HEADLINE_DCS))
        with stages.stage("headline histograms (Fig. 16)", len(USE_CASES)) as adv:
            write_headline_histograms(out, sh, points, hists, summary, opts, adv)
        summary["congestion"] = congestion
        # Claims and summary.json, from the reduced files and the Sec. V-C summary.
        with stages.stage("claims from the reduced results"):
            claims = compute_claims(
                out,
                summary,
                congestion,
                f"{sh.scan.users:,} users, partitioned",
                per_sample=False,
            )
        summary["settings"] = opts.settings()
        summary["claims"] = [c for c in claims if c["id"] not in not_computed(claims)]
        summary["sensitivity"] = None
        summary["partitioned"] = {
            "users": sh.scan.users,
            "samples": sh.scan.samples,
            "partitions": len(ds.files),
            "not_run": {
                **PARTITIONED_NOT_RUN,
                **{f"claim {k}": v for k, v in not_computed(claims).items()},
            },
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        report = _figures_and_report(out, opts, stages, t_start)
    return report


#: What a partitioned run does not run, and why (summary.json ``partitioned.not_run``).
PARTITIONED_NOT_RUN = {
    "per-sample headline files (results/headline_<use case>.parquet), traces.parquet, "
    "legacy_placement.parquet": "one row per sample or user in one file; the dataset folder "
    "holds the traces, results/rtt_hist_<use case>.parquet the headline RTTs (binned)",
    "the paper's absolute setting (S' = 6 min, S'' = 36 s)": "not a point of the partitioned "
    "sweep's grid",
    "sensitivity": "re-simulates the headline deployments under other readings and inputs "
    "with every sample in one process; not partitioned",
    "trace statistics": "need each user's samples in one process; per-partition statistics "
    "are not merged",
}


def write_headline_histograms(
    out: Path,
    sh: Shared,
    points: list[GridPoint],
    hists: dict[Config, tuple[np.ndarray, np.ndarray]],
    summary: dict[str, dict[str, Any]],
    opts: Options,
    advance: Callable[[], None],
) -> None:
    """results/rtt_hist_<uc>.parquet (the merged pass-1 histograms of the headline
    configurations, which the client holds anyway) and results/headline.json (from the
    reduced rows)."""
    from pacao.sim.scale import headline_histogram

    settings = {}
    sweep = pd.read_parquet(out / "results" / "sweep.parquet")
    for uc, s in summary.items():
        n, s1, s2 = (
            int(s["n_dcs"]),
            float(s["s1_fraction_of_residence"]),
            float(s["s2_fraction_of_s1"]),
        )
        headline_histogram(sh, points, hists, uc, n, s1, s2).to_parquet(
            out / "results" / f"rtt_hist_{uc}.parquet", index=False
        )
        rows = sweep[(sweep.use_case == uc) & (sweep.n_dcs == n) & (sweep.bound == "strict")]
        pick = {
            "legacy": rows[rows.policy == "legacy"],
            "pacao1": rows[(rows.policy == "pacao1") & (rows.s1 == s1)],
            "pacao2": rows[(rows.policy == "pacao2") & (rows.s1 == s1) & (rows.s2 == s2)],
        }
        settings[uc] = {
            "n_dcs": n,
            "bound": "strict",
            "bound_ms": float(rows.bound_ms.iloc[0]),
            "s1_fraction_of_residence": s1,
            "s2_fraction_of_s1": s2,
            "migration_s": opts.migration_s,
            "switches": {p: int(r.switches.iloc[0]) for p, r in pick.items()},
            "migrations": {p: int(r.migrations.iloc[0]) for p, r in pick.items()},
            **opts.settings(),
        }
        advance()
    (out / "results" / "headline.json").write_text(json.dumps(settings, indent=2) + "\n")
