"""The run folder as the report reads it (docs/simulation.md lists the files).

Every figure and report.html are drawn from these files, never from a pipeline's memory:
a partitioned run writes reduced versions of some of them (histograms instead of
per-sample tables, a folder instead of one file) and goes through the same code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pacao.sim.network import Network, build_network, throughput_mbps
from pacao.sim.scale import BINS_PER_OCTAVE, bin_counts, bin_edges, merge_counts

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
POLICIES = ("legacy", "pacao1", "pacao2")
#: Quantile levels of a CDF drawn from per-sample values.
LEVELS = np.linspace(0.0, 1.0, 401)


class RunSettings(Protocol):
    """The run options the report states (pacao.reproduce's Options has them all)."""

    @property
    def quick(self) -> bool: ...
    @property
    def seed(self) -> int: ...
    @property
    def scheduler(self) -> str | None: ...
    @property
    def migration_s(self) -> float: ...
    @property
    def legacy(self) -> str: ...
    @property
    def entry_metric(self) -> str: ...
    @property
    def europe(self) -> str: ...
    @property
    def grid_values(self) -> tuple[float, ...]: ...


def results(out: Path) -> Path:
    return out / "results"


def read_dcs(out: Path) -> pd.DataFrame:
    """dcs.csv with the coordinates exactly as the run used them."""
    return pd.read_csv(out / "dcs.csv")


def read_positions(out: Path) -> pd.DataFrame:
    """results/positions.parquet: lat, lon, samples, in the simulation's position order."""
    return pd.read_parquet(results(out) / "positions.parquet")


def read_lacs(out: Path) -> pd.DataFrame:
    return pd.read_parquet(results(out) / "lacs.parquet")


def read_inputs(out: Path) -> dict[str, Any]:
    """results/inputs.json: where the traces came from, users, samples, trace statistics."""
    doc: dict[str, Any] = json.loads((results(out) / "inputs.json").read_text())
    return doc


def deployments(dcs: pd.DataFrame) -> Iterator[tuple[str, int, pd.DataFrame]]:
    """(use case, DC count, its rows of dcs.csv) in the file's order."""
    for (uc, n), g in dcs.groupby(["use_case", "n_dcs"], sort=False):
        yield str(uc), int(n), g


def network(positions: pd.DataFrame, dc_rows: pd.DataFrame) -> Network:
    """The RTT tables of one deployment, as the run built them."""
    return build_network(
        positions["lat"].to_numpy(np.float64),
        positions["lon"].to_numpy(np.float64),
        dc_rows["lat"].to_numpy(np.float64),
        dc_rows["lon"].to_numpy(np.float64),
    )


def weighted_median(values: F64, weights: I64) -> tuple[float, float]:
    """The two middle order statistics of ``values`` repeated ``weights`` times (equal
    when the count is odd): np.median is their mean."""
    order = np.argsort(values, kind="stable")
    v, c = values[order], np.cumsum(weights[order])
    n = int(c[-1])
    lo = float(v[np.searchsorted(c, (n - 1) // 2, side="right")])
    hi = float(v[np.searchsorted(c, n // 2, side="right")])
    return lo, hi


def ideal_medians(positions: pd.DataFrame, dc_rows: pd.DataFrame) -> tuple[float, float]:
    """Median RTT and median throughput over samples with entry and VM at the DC nearest
    to the user at every instant: exact from the positions' sample counts, equal to
    np.median over the per-sample values."""
    best = network(positions, dc_rows).user_dc.min(axis=1)
    lo, hi = weighted_median(best, positions["samples"].to_numpy(np.int64))
    rtt = float(np.mean(np.array([lo, hi])))
    thr = float(np.mean(throughput_mbps(np.array([hi, lo]))))
    return rtt, thr


@dataclass(frozen=True)
class Curve:
    """A CDF to draw: ``x`` ascending, ``y`` the share at or below it; ``binned`` when it
    comes from a histogram (then exact at the bin edges only)."""

    x: F64
    y: F64
    median: float
    binned: bool


def sample_curve(values: F64) -> Curve:
    v = np.sort(values)
    return Curve(v, np.arange(1, len(v) + 1) / len(v), float(np.median(v)), False)


def binned_curve(lo: F64, hi: F64, counts: I64, median: float) -> Curve:
    """CDF at the bin edges of a histogram sorted by value."""
    c = np.cumsum(counts)
    x = np.r_[lo[:1], hi]
    y = np.r_[0.0, c / c[-1]]
    return Curve(x, y, median, True)


@dataclass(frozen=True)
class HeadlineRun:
    """One use case's headline configuration: results/headline.json, and either the
    per-sample table (results/headline_<uc>.parquet) or, from a partitioned run, the
    binned RTT counts (results/rtt_hist_<uc>.parquet)."""

    use_case: str
    n_dcs: int
    s1: float
    s2: float
    bound_ms: float
    switches: dict[str, int]
    migrations: dict[str, int]
    rtt: dict[str, F64] | None
    hist: pd.DataFrame | None
    paper_setting: dict[str, float] | None

    def throughput(self, sweep: pd.DataFrame) -> dict[str, Curve]:
        """CDF of the per-sample throughput per policy."""
        if self.rtt is not None:
            out = {}
            for pol, r in self.rtt.items():
                q = np.quantile(throughput_mbps(r), LEVELS)
                out[pol] = Curve(q, LEVELS, float(np.median(q)), False)
            return out
        assert self.hist is not None
        med = self.median_throughput(sweep)
        out = {}
        for pol in POLICIES:
            h = self.hist[self.hist.policy == pol].sort_values("lo_ms", ascending=False)
            lo = throughput_mbps(h["hi_ms"].to_numpy(np.float64))
            hi = throughput_mbps(h["lo_ms"].to_numpy(np.float64))
            out[pol] = binned_curve(lo, hi, h["samples"].to_numpy(np.int64), med[pol])
        return out

    def median_throughput(self, sweep: pd.DataFrame) -> dict[str, float]:
        """Exact median throughput per policy: the sweep rows of this configuration."""
        s = sweep[
            (sweep.use_case == self.use_case)
            & (sweep.n_dcs == self.n_dcs)
            & (sweep.bound == "strict")
        ]
        rows = {
            "legacy": s[s.policy == "legacy"],
            "pacao1": s[(s.policy == "pacao1") & (s.s1 == self.s1)],
            "pacao2": s[(s.policy == "pacao2") & (s.s1 == self.s1) & (s.s2 == self.s2)],
        }
        return {p: float(r.median_throughput_mbps.iloc[0]) for p, r in rows.items()}


def read_headlines(out: Path, partitioned: bool) -> dict[str, HeadlineRun]:
    """Per use case; a partitioned run (summary.json ``partitioned``) has binned counts."""
    res = results(out)
    settings = json.loads((res / "headline.json").read_text())
    paper_path = res / "paper_setting.json"
    paper = json.loads(paper_path.read_text()) if paper_path.is_file() else {}
    heads = {}
    for uc, s in settings.items():
        rtt = hist = None
        if not partitioned:
            cols = [f"{p}_rtt_ms" for p in POLICIES]
            df = pd.read_parquet(res / f"headline_{uc}.parquet", columns=cols)
            rtt = {p: df[f"{p}_rtt_ms"].to_numpy(np.float64) for p in POLICIES}
        else:
            hist = pd.read_parquet(res / f"rtt_hist_{uc}.parquet")
        heads[uc] = HeadlineRun(
            use_case=uc,
            n_dcs=int(s["n_dcs"]),
            s1=float(s["s1_fraction_of_residence"]),
            s2=float(s["s2_fraction_of_s1"]),
            bound_ms=float(s["bound_ms"]),
            switches={str(k): int(v) for k, v in s["switches"].items()},
            migrations={str(k): int(v) for k, v in s["migrations"].items()},
            rtt=rtt,
            hist=hist,
            paper_setting=paper.get(uc),
        )
    return heads


#: Columns of the per-user Sec. V-C table that the report reads.
CONGESTION_COLUMNS = ["use_case", "n_dcs", "rtt_aware_ms", "congestion_aware_ms"]


def congestion_users_files(out: Path, partitioned: bool) -> list[Path]:
    """results/congestion_users.parquet, or from a partitioned run the part files of
    results/congestion_users/; [] when the run has none."""
    if partitioned:
        return sorted((results(out) / "congestion_users").glob("part-*.parquet"))
    single = results(out) / "congestion_users.parquet"
    return [single] if single.is_file() else []


@dataclass(frozen=True)
class CongestionUsers:
    """Per deployment: the CDF of the aware RTT over users and the largest congestion
    latency a user gets."""

    curves: dict[tuple[str, int], Curve]
    max_congestion_ms: dict[tuple[str, int], float]


def read_congestion_users(out: Path, partitioned: bool) -> CongestionUsers | None:
    """Exact CDFs from one file; from a folder of parts, one part at a time, binned
    (pacao.sim.scale's bins), so no step holds every user."""
    files = congestion_users_files(out, partitioned)
    if not files:
        return None
    if not partitioned:
        df = pd.read_parquet(files[0], columns=CONGESTION_COLUMNS)
        curves, top = {}, {}
        for (uc, n), g in df.groupby(["use_case", "n_dcs"], sort=False):
            key = (str(uc), int(n))
            curves[key] = sample_curve(g["rtt_aware_ms"].to_numpy(np.float64))
            top[key] = float(np.max(g["congestion_aware_ms"].to_numpy(np.float64)))
        return CongestionUsers(curves, top)
    hist: dict[tuple[str, int], tuple[I64, I64]] = {}
    peak: dict[tuple[str, int], float] = {}
    for f in files:
        part = pd.read_parquet(f, columns=CONGESTION_COLUMNS)
        for (uc, n), g in part.groupby(["use_case", "n_dcs"], sort=False):
            key = (str(uc), int(n))
            kc = bin_counts(g["rtt_aware_ms"].to_numpy(np.float64))
            hist[key] = merge_counts([hist[key], kc]) if key in hist else kc
            c = float(np.max(g["congestion_aware_ms"].to_numpy(np.float64)))
            peak[key] = max(peak.get(key, c), c)
    curves = {}
    for key, (keys, counts) in hist.items():
        lo, hi = bin_edges(keys)
        cum = np.cumsum(counts)
        b = int(np.searchsorted(cum, (int(cum[-1]) - 1) // 2, side="right"))
        curves[key] = binned_curve(lo, hi, counts, float((lo[b] + hi[b]) / 2))
    return CongestionUsers(curves, peak)


BINNED_NOTE = (
    f"binned: {BINS_PER_OCTAVE} bins per octave of the float64 bit pattern "
    f"(at most {1 / BINS_PER_OCTAVE:.1%} wide), exact at the bin edges"
)
