"""Simulations larger than one process: traces as a user-partitioned Parquet dataset and the
sweep as (user partition x S' row) Dask tasks, reduced exactly (docs/simulation.md).

Controller steps 1-2 act on one user at a time, so a partition of users can be simulated
alone once the few things that depend on every user are fixed first: the positions and
their sample counts (they give the latency bounds, hence the decision tables), the
sampling step and the earliest time. A scan pass computes those from small per-partition
summaries; each sweep task then reads its partition from disk, simulates every deployment,
bound and policy at the grid points of one S' row through :func:`pacao.sim.engine.simulate`
and returns per configuration only counts, an exact sum and a histogram. Order statistics
are exact by two-pass selection: pass 1 merges histograms over monotone bins of the
float bit pattern and finds the bin and in-bin rank of every needed order statistic; pass
2 returns only the distinct values inside those bins, read from what pass 1 kept on disk
(a grid point is simulated again only where that missed). Partitions are
fed through a window, so a worker never holds more than a few partitions.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import pickle
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pacao.decision import Params
from pacao.errors import InputError
from pacao.sim.engine import Outcome, Trajectories, legacy, prepare, schedule, simulate
from pacao.sim.legacy import legacy_start
from pacao.sim.network import BOUND_QUANTILES, Network
from pacao.sim.policy import PAPER_PARAMS, Decisions, Policy
from pacao.sim.sweep import (
    QUANTILES,
    WINDOW_MBIT_MS,
    Deployment,
    GridPoint,
    deployment_tables,
    result_row,
)
from pacao.validate import positive

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
K = TypeVar("K", np.int64, np.float64)

#: The dataset's description file, next to the part-NNNNN.parquet files.
META = "_dataset.json"
FORMAT = "pacao-traces-dataset"
#: Users per partition by default: about 2.4 M samples, ~0.5 GB while simulated.
PARTITION_USERS = 10_000
#: Histogram bins are the top 20 bits of the (order-preserving) float64 bit pattern:
#: sign, exponent and 8 mantissa bits, i.e. 256 bins per octave (0.4 % wide).
BIN_SHIFT = 44
#: Pass-2 results per (configuration, bin) the client keeps before merging them into one
#: array of distinct values: bounded duplication, at little sorting.
COMPACT_EVERY = 16


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Dataset:
    """A folder of Parquet files, each holding whole users (user-id ranges do not overlap)."""

    root: Path
    files: tuple[str, ...]
    meta: dict[str, Any]

    def path(self, i: int) -> Path:
        return self.root / self.files[i]

    @property
    def lac_level(self) -> bool:
        """Synthetic datasets hold lat/lon at LAC centres already; users' own files are read
        by pacao.sim.traces.load_traces and put at LAC centres, as for single files."""
        return bool(self.meta.get("synthetic", False))


def open_dataset(root: Path) -> Dataset:
    """The dataset at ``root``: its _dataset.json, or else every *.parquet file in it."""
    root = Path(root).resolve()  # workers open the files themselves
    if not root.is_dir():
        raise InputError("traces", str(root), "a dataset folder of Parquet files")
    meta_path = root / META
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(str(meta_path), "unreadable", f"JSON ({exc})") from None
        if meta.get("format") != FORMAT or not isinstance(meta.get("partitions"), list):
            raise InputError(str(meta_path), meta.get("format"), f'"format": "{FORMAT}"')
        files = tuple(str(p["file"]) for p in meta["partitions"])
        missing = [f for f in files if not (root / f).is_file()]
        if missing:
            raise InputError("traces", str(root / missing[0]), "a partition listed in " + META)
    else:
        meta = {}
        files = tuple(sorted(p.name for p in root.glob("*.parquet")))
    if not files:
        raise InputError("traces", str(root), "at least one .parquet partition")
    return Dataset(root, files, meta)


def partition_seed(seed: int, part: int) -> int:
    """Independent generator seed per partition, fixed by (seed, partition index)."""
    state = np.random.SeedSequence([seed, part]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


@lru_cache(maxsize=2)
def _lacs(lac_seed: int) -> pd.DataFrame:
    from pacao.sim.geography import build_lacs

    return build_lacs(lac_seed)


def _generate_part(
    root: str, part: int, users: int, first_id: int, seed: int, step_s: int, lac_seed: int
) -> dict[str, Any]:
    """One partition of synthetic users (a Dask task; memory bounded by ``users``)."""
    from pacao.sim.mobility import generate_traces

    traces = generate_traces(
        _lacs(lac_seed), n_users=users, seed=partition_seed(seed, part), step_s=step_s
    )
    traces["user_id"] += first_id
    name = f"part-{part:05d}.parquet"
    traces.to_parquet(Path(root) / name, index=False)
    return {
        "file": name,
        "users": users,
        "samples": len(traces),
        "first_user": first_id,
        "last_user": first_id + users - 1,
    }


def generate_dataset(
    client: Any,
    out: Path,
    users: int,
    seed: int = 0,
    *,
    partition_users: int = PARTITION_USERS,
    step_s: int = 360,
    lac_seed: int = 0,
    advance: Callable[[], None] = lambda: None,
) -> Dataset:
    """Synthetic traces of ``users`` users as one Parquet file per partition, each made by
    one Dask task that writes its file itself: nothing passes through this process but
    the partition summaries, so any number of users streams to disk."""
    from distributed import as_completed

    for name, v in (("--users", users), ("--partition-users", partition_users)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(name, v, "a positive integer")
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("--out", str(out), "a new or empty folder for the dataset")
    out.mkdir(parents=True, exist_ok=True)
    sizes = [min(partition_users, users - s) for s in range(0, users, partition_users)]
    futures = [
        client.submit(
            _generate_part,
            str(out.resolve()),
            i,
            n,
            i * partition_users,
            seed,
            step_s,
            lac_seed,
            pure=False,
        )
        for i, n in enumerate(sizes)
    ]
    parts: list[dict[str, Any]] = []
    for fut in as_completed(futures):  # type: ignore[no-untyped-call]
        parts.append(fut.result())
        fut.release()
        advance()
    parts.sort(key=lambda p: str(p["file"]))
    meta = {
        "format": FORMAT,
        "version": 1,
        "synthetic": True,
        "users": users,
        "samples": sum(int(p["samples"]) for p in parts),
        "seed": seed,
        "lac_seed": lac_seed,
        "step_s": step_s,
        "partition_users": partition_users,
        "partitions": parts,
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return Dataset(out, tuple(str(p["file"]) for p in parts), meta)


def read_partition(ds: Dataset, i: int, lac_seed: int) -> pd.DataFrame:
    """Traces of one partition in the simulator's table (user_id, t, lat, lon, lac)."""
    path = ds.path(i)
    if ds.lac_level:
        try:
            df = pd.read_parquet(path, columns=["user_id", "t", "lat", "lon", "lac"])
        except (ValueError, OSError) as exc:
            raise InputError("traces", str(path), f"a readable partition ({exc})") from None
        return df
    from pacao.sim.traces import load_traces

    lacs = _lacs(lac_seed)
    tr = load_traces(path, lacs)
    centre = lacs.set_index("lac")[["lat", "lon"]]
    return tr.assign(
        lat=centre["lat"].reindex(tr["lac"]).to_numpy(),
        lon=centre["lon"].reindex(tr["lac"]).to_numpy(),
    )


# --------------------------------------------------------------------------- scan


@dataclass(frozen=True)
class Scan:
    """What depends on every user: positions and sample counts, the step, the first time."""

    pos_lat: F64
    pos_lon: F64
    pos_weight: I64
    step_s: int
    t0_s: int
    users: int
    samples: int
    parts: tuple[tuple[int, int], ...]  # (first, last user id) per partition


def _scan_part(ds: Dataset, i: int, lac_seed: int) -> dict[str, Any]:
    df = read_partition(ds, i, lac_seed)
    if len(df) == 0:
        raise InputError("traces", str(ds.path(i)), "at least one sample per partition")
    uid = df["user_id"].to_numpy(np.int64)
    t = df["t"].to_numpy(np.int64)
    pos = df.groupby(["lat", "lon"], sort=True).size()
    same = uid[1:] == uid[:-1]
    gaps = pd.Series(np.diff(t)[same]).value_counts()
    return {
        "lat": pos.index.get_level_values(0).to_numpy(np.float64),
        "lon": pos.index.get_level_values(1).to_numpy(np.float64),
        "n": pos.to_numpy(np.int64),
        "gap": gaps.index.to_numpy(np.int64),
        "gap_n": gaps.to_numpy(np.int64),
        "t0": int(t.min()),
        "users": int(np.count_nonzero(~same) + 1),
        "samples": len(df),
        "first": int(uid.min()),
        "last": int(uid.max()),
    }


def _median_int(values: I64, counts: I64) -> int:
    """int(np.median(np.repeat(values, counts))) from counts: the step prepare() derives."""
    order = np.argsort(values)
    v, c = values[order], np.cumsum(counts[order])
    n = int(c[-1])
    lo = v[np.searchsorted(c, (n - 1) // 2, side="right")]
    hi = v[np.searchsorted(c, n // 2, side="right")]
    return int(np.median(np.array([lo, hi])))


def scan(client: Any, ds: Dataset, lac_seed: int) -> Scan:
    """The global position table and counts, merged from one small summary per partition."""
    futs = client.map(lambda i: _scan_part(ds, i, lac_seed), range(len(ds.files)), pure=False)
    res = client.gather(futs)
    ranges = sorted((r["first"], r["last"], ds.files[i]) for i, r in enumerate(res))
    for (_, last, f1), (first, _, f2) in itertools.pairwise(ranges):
        if first <= last:
            raise InputError("traces", f"{f1} and {f2}", "partitions with disjoint user-id ranges")
    pos = pd.DataFrame(
        {
            "lat": np.concatenate([r["lat"] for r in res]),
            "lon": np.concatenate([r["lon"] for r in res]),
            "n": np.concatenate([r["n"] for r in res]),
        }
    )
    pos = pos.groupby(["lat", "lon"], sort=True)["n"].sum()
    gaps = (
        pd.DataFrame(
            {
                "g": np.concatenate([r["gap"] for r in res]),
                "n": np.concatenate([r["gap_n"] for r in res]),
            }
        )
        .groupby("g")["n"]
        .sum()
    )
    step = _median_int(gaps.index.to_numpy(np.int64), gaps.to_numpy(np.int64)) if len(gaps) else 360
    positive("step_s", step, "a sampling step > 0 s")
    return Scan(
        pos_lat=pos.index.get_level_values(0).to_numpy(np.float64),
        pos_lon=pos.index.get_level_values(1).to_numpy(np.float64),
        pos_weight=pos.to_numpy(np.int64),
        step_s=step,
        t0_s=min(int(r["t0"]) for r in res),
        users=sum(int(r["users"]) for r in res),
        samples=sum(int(r["samples"]) for r in res),
        parts=tuple((int(r["first"]), int(r["last"])) for r in res),
    )


@dataclass(frozen=True)
class SharedDeployment:
    """A deployment's tables for every partition: network, bounds, decisions."""

    use_case: str
    n_dcs: int
    net: Network
    bounds: dict[str, float]
    decisions: dict[str, Decisions] = field(repr=False)


def shared_deployment(
    sc: Scan,
    use_case: str,
    dc_lat: F64,
    dc_lon: F64,
    params: Params = PAPER_PARAMS,
    bounds: Sequence[str] = tuple(BOUND_QUANTILES),
) -> SharedDeployment:
    """As pacao.sim.sweep.deployment, on the global position table."""
    net, all_bounds, decisions = deployment_tables(
        sc.pos_lat, sc.pos_lon, sc.pos_weight, dc_lat, dc_lon, params, bounds
    )
    return SharedDeployment(
        use_case=use_case, n_dcs=net.n_dcs, net=net, bounds=all_bounds, decisions=decisions
    )


@dataclass(frozen=True)
class Shared:
    """Scattered once to every worker."""

    ds: Dataset
    scan: Scan
    deployments: tuple[SharedDeployment, ...]
    legacy: str
    seed: int
    lac_seed: int


def part_trajectories(ds: Dataset, sc: Scan, i: int, lac_seed: int) -> Trajectories:
    """One partition's trajectories on the global position index."""
    df = read_partition(ds, i, lac_seed)
    tr = prepare(df, step_s=sc.step_s)
    key = pd.MultiIndex.from_arrays([sc.pos_lat, sc.pos_lon])
    gidx = key.get_indexer(pd.MultiIndex.from_arrays([tr.pos_lat, tr.pos_lon]))
    if np.any(gidx < 0):
        raise InputError("traces", str(ds.path(i)), "the same partition as when scanned")
    return replace(
        tr,
        pos=gidx[tr.pos].astype(np.int32),
        pos_lat=sc.pos_lat,
        pos_lon=sc.pos_lon,
        pos_weight=sc.pos_weight,
    )


def load_part(sh: Shared, i: int) -> tuple[Trajectories, list[Deployment]]:
    """One partition's trajectories on the global position index, and its users' starts."""
    tr = part_trajectories(sh.ds, sh.scan, i, sh.lac_seed)
    deps = [
        Deployment(
            d.use_case,
            d.n_dcs,
            d.net,
            d.bounds,
            d.decisions,
            legacy_start(tr, d.net, sh.legacy, sh.seed, d.use_case),
        )
        for d in sh.deployments
    ]
    return tr, deps


# --------------------------------------------------------------------------- exact reduction


def order_key(values: F64) -> I64:
    """An int64 per float64 in the same order (negative floats: non-sign bits flipped)."""
    bits = values.view(np.int64)
    out: I64 = np.where(bits < 0, bits ^ np.int64(0x7FFF_FFFF_FFFF_FFFF), bits)
    return out


@dataclass(frozen=True)
class ExactSum:
    """sum(values x counts) exactly, as the integer ``num`` x 2^``exp``: merging is exact,
    so the mean does not depend on how the users were partitioned."""

    num: int
    exp: int

    @staticmethod
    def of(values: F64, counts: I64) -> ExactSum:
        mant, ex = np.frexp(values)  # values = mant x 2^ex, mant in [0.5, 1)
        m = np.ldexp(mant, 53).astype(np.int64)  # exact 53-bit integers
        e = ex.astype(np.int64) - 53
        if len(m) == 0:
            return ExactSum(0, 0)
        cmax = int(counts.max())
        if cmax >= 1 << 30:
            raise InputError("counts", cmax, "fewer than 2^30 samples in one segment")
        base = int(e.min())
        total = 0
        hi, lo = m >> 26, m & ((1 << 26) - 1)  # < 2^27 and < 2^26: x count < 2^57
        for ee in np.unique(e).tolist():
            sel = e == ee
            h, lw, c = hi[sel], lo[sel], counts[sel]
            # chunks of 32 products: each < 2^57, a chunk sum < 2^62
            n = len(c)
            pad = (-n) % 32
            hh = np.r_[h * c, np.zeros(pad, np.int64)].reshape(-1, 32).sum(axis=1)
            ll = np.r_[lw * c, np.zeros(pad, np.int64)].reshape(-1, 32).sum(axis=1)
            s_hi = sum(int(x) for x in hh.tolist())
            s_lo = sum(int(x) for x in ll.tolist())
            total += ((s_hi << 26) + s_lo) << (ee - base)
        return ExactSum(total, base)

    def __add__(self, other: ExactSum) -> ExactSum:
        if other.num == 0:
            return self
        if self.num == 0:
            return other
        base = min(self.exp, other.exp)
        return ExactSum((self.num << (self.exp - base)) + (other.num << (other.exp - base)), base)

    def mean(self, n: int) -> float:
        """The correctly rounded sum / n."""
        f = Fraction(self.num) * (Fraction(2) ** self.exp)
        return float(f / n)


#: Histogram bins per octave of the float64 values (mantissa bits kept: 52 - BIN_SHIFT).
BINS_PER_OCTAVE = 1 << (52 - BIN_SHIFT)


def bin_counts(values: F64, weights: I64 | None = None) -> tuple[I64, I64]:
    """A histogram over the monotone bit-pattern bins: (bin keys ascending, counts)."""
    uk, inv = np.unique(order_key(values) >> BIN_SHIFT, return_inverse=True)
    cnt = np.bincount(inv, weights=weights, minlength=len(uk)).astype(np.int64)
    return uk, cnt


def bin_edges(keys: I64) -> tuple[F64, F64]:
    """The value range [lo, hi) of each bin key."""

    def value(k: I64) -> F64:  # order_key is its own inverse on the bit pattern
        out: F64 = order_key((k << BIN_SHIFT).view(np.float64)).view(np.float64)
        return out

    return value(keys), value(keys + 1)


def distinct(values: F64, counts: I64) -> tuple[F64, I64]:
    """(sorted distinct values, summed counts): one sort, from which the histogram, the
    exact sum and a task's kept values all follow (each on far fewer values than segments)."""
    order = np.argsort(values)
    sv = values[order]
    if len(sv) == 0:
        return sv, counts[:0]
    start = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]])
    out: I64 = np.add.reduceat(counts[order], start)
    return sv[start], out


@dataclass
class Partial:
    """One configuration's statistics over some users (mergeable)."""

    n: int
    total: ExactSum
    keys: I64
    counts: I64
    switches: int
    migrations: int

    @staticmethod
    def of(out: Outcome) -> Partial:
        return Partial.of_distinct(*distinct(out.values, out.counts), out)

    @staticmethod
    def of_distinct(values: F64, counts: I64, out: Outcome) -> Partial:
        """From ``distinct(out.values, out.counts)``: bins of sorted values are sorted."""
        keys = order_key(values) >> BIN_SHIFT
        start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else keys[:0]
        cnt: I64 = np.add.reduceat(counts, start) if len(keys) else counts[:0]
        return Partial(
            int(counts.sum()),
            ExactSum.of(values, counts),
            keys[start],
            cnt,
            out.switches,
            out.migrations,
        )

    def merge(self, o: Partial) -> None:
        self.keys, self.counts = merge_counts([(self.keys, self.counts), (o.keys, o.counts)])
        self.n += o.n
        self.total = self.total + o.total
        self.switches += o.switches
        self.migrations += o.migrations


def merge_counts(parts: Sequence[tuple[NDArray[K], I64]]) -> tuple[NDArray[K], I64]:
    """(distinct sorted values, summed counts) of several (values, counts) pairs."""
    uv, inv = np.unique(np.concatenate([v for v, _ in parts]), return_inverse=True)
    weights = np.concatenate([c for _, c in parts])
    return uv, np.bincount(inv, weights=weights, minlength=len(uv)).astype(np.int64)


def hold(held: list[tuple[F64, I64]], part: tuple[F64, I64]) -> None:
    """Add one partition's (values, counts) of a bin to ``held``, merged into one array of
    distinct values every COMPACT_EVERY partitions: a value seen in many partitions (a
    tabulated RTT) is then held once, not once per partition."""
    held.append(part)
    if len(held) >= COMPACT_EVERY:
        held[:] = [merge_counts(held)]


def needed_ranks(n: int) -> list[int]:
    """Ranks of every order statistic the row needs: the RTT quantiles and the median
    throughput (whose order statistics are the RTT's mirrored ranks)."""
    h = np.asarray(QUANTILES, np.float64) * (n - 1)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    ranks = set(lo.tolist()) | set(hi.tolist())
    ranks |= {n - 1 - r for r in ranks}
    return sorted(int(r) for r in ranks)


def bins_for(p: Partial) -> dict[int, tuple[int, int]]:
    """rank -> (bin key, rank inside the bin)."""
    cum = np.cumsum(p.counts)
    out = {}
    for r in needed_ranks(p.n):
        b = int(np.searchsorted(cum, r, side="right"))
        below = 0 if b == 0 else int(cum[b - 1])
        out[r] = (int(p.keys[b]), r - below)
    return out


def in_bins(values: F64, counts: I64, bins: Iterable[int]) -> dict[int, tuple[F64, I64]]:
    """Of sorted distinct values and their counts: those inside each requested bin."""
    keys = order_key(values) >> BIN_SHIFT
    at = {b: keys == b for b in set(bins)}
    return {b: (values[sel], counts[sel]) for b, sel in at.items()}


# --------------------------------------------------------------------------- tasks

#: A configuration: (deployment index, bound, policy, grid-point index; -1 = legacy).
Config = tuple[int, str, str, int]
#: A task's jobs: grid-point indices (-1: legacy) simulated on one loaded partition.
Group = tuple[int, ...]
#: Pass 1 keeps, per needed rank, the bins within this fraction of the partition's samples
#: of its own rank. Where the partition's CDF is within this much of the whole run's at the
#: run's order statistic (standard deviation at most 0.5 / sqrt(users) for a partition of
#: random users), that statistic's bin is kept (docs/simulation.md); elsewhere pass 2
#: simulates that grid point again, so this sets the time, not the result.
KEEP_MASS = 0.02


def job_groups(points: Sequence[GridPoint]) -> list[Group]:
    """One task per S' row (its S'' points; PACAO-1 once) and one legacy task: a task
    loads and indexes its partition once for all the points of its row."""
    rows: dict[float, list[int]] = {}
    for k, p in enumerate(points):
        rows.setdefault(p.s1, []).append(k)
    return [tuple(ks) for ks in rows.values()] + [(-1,)]


def sweep_tasks(n_parts: int, points: Sequence[GridPoint]) -> int:
    """Tasks of run_scaled: 2 passes x partitions x job groups."""
    return 2 * n_parts * len(job_groups(points))


def _outcomes(
    sh: Shared, i: int, points: Sequence[GridPoint], group: Group
) -> Iterable[tuple[Config, Outcome]]:
    """Every configuration of one partition at the grid points of ``group`` (-1: legacy),
    each point in the order of pacao.sim.sweep.run_point."""
    tr, deps = load_part(sh, i)
    for k in group:
        if k < 0:
            for d, dep in enumerate(deps):
                out = legacy(tr, dep.net, dep.start)
                for b in BOUND_QUANTILES:
                    yield (d, b, Policy.LEGACY.value, -1), out
            continue
        point = points[k]
        sched = schedule(tr, point.timing())
        pols = [Policy.PACAO1, Policy.PACAO2] if point.with_pacao1 else [Policy.PACAO2]
        for d, dep in enumerate(deps):
            for bound, dec in dep.decisions.items():
                for pol in pols:
                    out = simulate(tr, sched, dep.net, dec, pol, dep.start)
                    yield (d, bound, pol.value, k), out


@dataclass(frozen=True)
class Kept:
    """What pass 1 keeps of one configuration for pass 2: the partition's non-empty bins,
    and the distinct values (with counts) of the bins near its own needed ranks."""

    bins: I64
    kept_bins: I64
    values: F64
    counts: I64


def kept_bins(p: Partial, keep: float) -> I64:
    """The non-empty bins whose ranks [first, last] meet [r - w, r + w] for a needed rank
    r, w = keep x samples. If the run's order statistic x has L(x-) <= q + keep and
    L(x) >= q - keep for this partition's CDF L (true when |L - G| <= keep for the run's
    G), its bin's ranks meet that window, so the bin is kept."""
    cum = np.cumsum(p.counts)
    first, last = cum - p.counts, cum - 1
    w = keep * p.n
    hit = np.zeros(len(cum), bool)
    for r in needed_ranks(p.n):
        hit |= (first <= r + w) & (last >= r - w)
    out: I64 = p.keys[hit]
    return out


def spill_path(spill: Path, i: int, g: int) -> Path:
    return Path(spill) / f"part-{i:05d}-group-{g:03d}.pkl"


def pass1(
    sh: Shared, i: int, points: Sequence[GridPoint], group: Group, spill: Path, g: int, keep: float
) -> dict[Config, Partial]:
    """Statistics of every configuration; the values pass 2 will likely ask for are
    written to ``spill`` (a folder every worker can read) instead of being re-simulated."""
    res: dict[Config, Partial] = {}
    kept: dict[Config, Kept] = {}
    last: tuple[Outcome, F64, I64] | None = None
    for c, o in _outcomes(sh, i, points, group):
        if last is None or last[0] is not o:  # legacy: one outcome for the 3 bounds
            last = (o, *distinct(o.values, o.counts))
        _, v, n = last
        p = res[c] = Partial.of_distinct(v, n, o)
        near = kept_bins(p, keep)
        sel = np.isin(order_key(v) >> BIN_SHIFT, near)
        kept[c] = Kept(p.keys, near, v[sel], n[sel])
    tmp = spill_path(spill, i, g).with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(kept, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(spill_path(spill, i, g))  # a retried task never reads a half-written file
    return res


def pass2(
    sh: Shared,
    i: int,
    points: Sequence[GridPoint],
    group: Group,
    spill: Path,
    g: int,
    want: dict[Config, list[int]],
) -> tuple[dict[Config, dict[int, tuple[F64, I64]]], int]:
    """The distinct values of every wanted bin, from pass 1's kept values; a grid point
    is simulated again only if one of its configurations has samples in a wanted bin that
    was not kept (or the file is gone). Returns the values and how many of the group's
    points (or legacy) it simulated again."""
    path = spill_path(spill, i, g)
    try:
        with path.open("rb") as f:
            kept: dict[Config, Kept] = pickle.load(f)
    except FileNotFoundError:
        kept = {}
    again = set() if kept else set(group)
    out: dict[Config, dict[int, tuple[F64, I64]]] = {}
    for c, k in kept.items():
        bins = np.asarray(want[c], np.int64)
        wanted = bins[np.isin(bins, k.bins)]  # the bins it has samples in
        if np.isin(wanted, k.kept_bins).all():
            out[c] = in_bins(k.values, k.counts, wanted.tolist())
        else:
            again.add(c[3])
    if again:
        redo = tuple(k for k in group if k in again)
        for c, o in _outcomes(sh, i, points, redo):
            out[c] = in_bins(*distinct(o.values, o.counts), want[c])
    path.unlink(missing_ok=True)
    return out, len(again)


def _windowed(
    client: Any,
    n_parts: int,
    n_jobs: int,
    submit: Callable[[int, int], Any],
    take: Callable[[Any], None],
    advance: Callable[[], None],
    window: int,
) -> None:
    """Run submit(partition, job) for every pair, at most ``window`` partitions in flight,
    partition after partition; ``take`` gets every result as it arrives."""
    from distributed import as_completed

    pending = {p: n_jobs for p in range(n_parts)}
    nxt = 0
    ac = as_completed()  # type: ignore[no-untyped-call]
    part_of: dict[str, int] = {}

    def start(p: int) -> None:
        for j in range(n_jobs):
            fut = submit(p, j)
            part_of[fut.key] = p
            ac.add(fut)  # type: ignore[no-untyped-call]

    while nxt < min(window, n_parts):
        start(nxt)
        nxt += 1
    for fut in ac:
        take(fut.result())
        p = part_of.pop(fut.key)
        fut.release()
        advance()
        pending[p] -= 1
        if pending[p] == 0 and nxt < n_parts:
            start(nxt)
            nxt += 1


def run_scaled(
    client: Any,
    sh: Shared,
    points: Sequence[GridPoint],
    advance: Callable[[], None] = lambda: None,
    window: int = 2,
    histograms: dict[Config, tuple[I64, I64]] | None = None,
    *,
    spill: Path | None = None,
    keep: float = KEEP_MASS,
    stats: dict[str, int] | None = None,
) -> pd.DataFrame:
    """The sweep of pacao.sim.sweep.run_sweep over every partition, rows identical in
    form; ``advance`` is called once per finished task (sweep_tasks). ``spill``: a folder
    every worker can write and read for pass 1's kept values (default: a temporary folder
    on this machine, enough for a LocalCluster); it is emptied by pass 2. ``histograms``,
    when given, receives every configuration's merged pass-1 histogram (bin_counts
    form), which the client holds anyway; ``stats`` the number of pass-2 tasks, of
    (partition, grid point or legacy) jobs, and of jobs simulated again."""
    with contextlib.ExitStack() as stack:
        if spill is None:
            spill = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pacao-spill-")))
        Path(spill).mkdir(parents=True, exist_ok=True)
        return _run_scaled(
            client, sh, points, advance, window, histograms, Path(spill), keep, stats
        )


def _run_scaled(
    client: Any,
    sh: Shared,
    points: Sequence[GridPoint],
    advance: Callable[[], None],
    window: int,
    histograms: dict[Config, tuple[I64, I64]] | None,
    spill: Path,
    keep: float,
    stats: dict[str, int] | None,
) -> pd.DataFrame:
    # Fresh keys (hash=False): the same tables scattered again by a second sweep would
    # reuse the first one's key while it is being released ("lost dependencies").
    shared = client.scatter(sh, broadcast=True, hash=False)
    n_parts = len(sh.ds.files)
    groups = job_groups(points)
    acc: dict[Config, Partial] = {}

    def take1(res: dict[Config, Partial]) -> None:
        for c, p in res.items():
            if c in acc:
                acc[c].merge(p)
            else:
                acc[c] = p

    _windowed(
        client,
        n_parts,
        len(groups),
        lambda p, j: client.submit(pass1, shared, p, points, groups[j], spill, j, keep, pure=False),
        take1,
        advance,
        window,
    )
    if histograms is not None:
        histograms.update({c: (p.keys, p.counts) for c, p in acc.items()})
    where = {c: bins_for(p) for c, p in acc.items()}
    want_all = {c: sorted({b for b, _ in w.values()}) for c, w in where.items()}
    want = client.scatter(want_all, broadcast=True, hash=False)
    found: dict[Config, dict[int, list[tuple[F64, I64]]]] = {c: {} for c in acc}
    again = [0]

    def take2(res: tuple[dict[Config, dict[int, tuple[F64, I64]]], int]) -> None:
        values, missed = res
        again[0] += missed
        for c, per_bin in values.items():
            for b, vc in per_bin.items():
                hold(found[c].setdefault(b, []), vc)

    _windowed(
        client,
        n_parts,
        len(groups),
        lambda p, j: client.submit(pass2, shared, p, points, groups[j], spill, j, want, pure=False),
        take2,
        advance,
        window,
    )
    if stats is not None:
        jobs = n_parts * sum(len(g) for g in groups)
        stats.update(pass2_tasks=n_parts * len(groups), pass2_jobs=jobs, pass2_simulated=again[0])
    rows = []
    for c, p in acc.items():
        value = {}
        for r, (b, inner) in where[c].items():
            v, n = merge_counts(found[c][b])
            value[r] = float(v[np.searchsorted(np.cumsum(n), inner, side="right")])
        rows.append(_row(sh, points, c, p, value))
    df = pd.DataFrame(rows)
    return df.sort_values(["use_case", "n_dcs", "bound", "policy", "s1", "s2"]).reset_index(
        drop=True
    )


def _quantile(value: dict[int, float], n: int, qs: Sequence[float], mirror: bool) -> F64:
    """The engine's interpolation (weighted_quantiles_exact) from the order statistics;
    ``mirror``: of WINDOW/RTT, whose rank r is the RTT's rank n - 1 - r."""
    q = np.asarray(qs, np.float64)
    h = q * (n - 1)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)

    def at(r: int) -> float:
        return WINDOW_MBIT_MS / value[n - 1 - r] if mirror else value[r]

    vlo = np.array([at(int(x)) for x in lo])
    vhi = np.array([at(int(x)) for x in hi])
    out: F64 = vlo + (h - lo) * (vhi - vlo)
    return out


def _row(
    sh: Shared, points: Sequence[GridPoint], c: Config, p: Partial, value: dict[int, float]
) -> dict[str, object]:
    d, bound, pol, k = c
    dep = sh.deployments[d]
    point = None if k < 0 else points[k]
    policy = Policy(pol)
    q = _quantile(value, p.n, QUANTILES, False)
    thr = _quantile(value, p.n, [0.5], True)[0]
    return result_row(
        dep,
        bound,
        policy,
        point,
        quantiles=q,
        mean_rtt_ms=p.total.mean(p.n),
        median_throughput_mbps=float(thr),
        switches=p.switches,
        migrations=p.migrations,
    )


def headline_histogram(
    sh: Shared,
    points: Sequence[GridPoint],
    histograms: dict[Config, tuple[I64, I64]],
    use_case: str,
    n_dcs: int,
    s1: float,
    s2: float,
) -> pd.DataFrame:
    """The strict-bound RTT histograms of legacy, PACAO-1 at S' and PACAO-2 at (S', S'')
    on one deployment: policy, bin, lo_ms, hi_ms (the bin's range [lo, hi)), samples."""
    d = next(i for i, x in enumerate(sh.deployments) if (x.use_case, x.n_dcs) == (use_case, n_dcs))
    k1 = next(k for k, p in enumerate(points) if p.s1 == s1 and p.with_pacao1)
    k2 = next(k for k, p in enumerate(points) if p.s1 == s1 and p.s2 == s2)
    frames = []
    for pol, k in ((Policy.LEGACY, -1), (Policy.PACAO1, k1), (Policy.PACAO2, k2)):
        keys, counts = histograms[(d, "strict", pol.value, k)]
        lo, hi = bin_edges(keys)
        frames.append(
            pd.DataFrame(
                {"policy": pol.value, "bin": keys, "lo_ms": lo, "hi_ms": hi, "samples": counts}
            )
        )
    return pd.concat(frames, ignore_index=True)


def positions_table(sc: Scan) -> pd.DataFrame:
    """results/positions.parquet of a partitioned run: the scan's distinct positions and
    their sample counts, in the order of the shared RTT tables."""
    return pd.DataFrame({"lat": sc.pos_lat, "lon": sc.pos_lon, "samples": sc.pos_weight})


def build_shared(
    client: Any,
    ds: Dataset,
    dcs: pd.DataFrame,
    *,
    params: Params = PAPER_PARAMS,
    legacy: str = "home-entry-random-vm",
    seed: int = 0,
    lac_seed: int = 0,
) -> Shared:
    """Scan the dataset, then the tables of every deployment of ``dcs`` (use_case, n_dcs,
    lat, lon; in the order of pacao.reproduce.pipeline)."""
    sc = scan(client, ds, lac_seed)
    deps = []
    for (uc, n), g in dcs.groupby(["use_case", "n_dcs"], sort=False):
        d = shared_deployment(
            sc, str(uc), g["lat"].to_numpy(np.float64), g["lon"].to_numpy(np.float64), params
        )
        if d.n_dcs != int(n):
            raise InputError("dcs", f"{uc}/{n}", f"{n} rows for n_dcs={n} (found {d.n_dcs})")
        deps.append(d)
    return Shared(ds, sc, tuple(deps), legacy, seed, lac_seed)


def synthetic_dcs(
    seed: int, dc_counts: Sequence[int], europe: str = "abutting", lac_seed: int = 0
) -> pd.DataFrame:
    """DC sites of every deployment as pacao.reproduce.pipeline draws them (use_case, n_dcs,
    name, lat, lon), without generating traces."""
    from pacao.sim.geography import dc_sites

    lacs = _lacs(lac_seed)
    frames = [
        dc_sites(uc, n, lacs, seed=seed, europe=europe).assign(use_case=uc, n_dcs=n)[
            ["use_case", "n_dcs", "name", "lat", "lon"]
        ]
        for uc in ("france_isp", "europe_ott")
        for n in dc_counts
    ]
    return pd.concat(frames, ignore_index=True)


def worker_peak_mb(client: Any) -> dict[str, float]:
    """Peak resident memory (ru_maxrss) of every worker process so far, in MB."""

    def peak() -> float:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    res: dict[str, float] = client.run(peak)
    return res
