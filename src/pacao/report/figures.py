"""The paper's Figs. 12-19 from a reproduce run folder, as PNG files (matplotlib, Agg).

Every figure reads the run's files (pacao.report.results), so a partitioned run's reduced
files (positions with sample counts, binned RTT counts) give the same figures, binned
where they say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from numpy.typing import NDArray

from pacao.report.results import (
    BINNED_NOTE,
    CongestionUsers,
    HeadlineRun,
    deployments,
    network,
    read_congestion_users,
    read_dcs,
    read_headlines,
    read_lacs,
    read_positions,
    results,
)
from pacao.sim.network import BOUND_QUANTILES

TITLES = {"france_isp": "France/ISP", "europe_ott": "Europe/OTT"}
POLICY_STYLE = {
    "legacy": ("legacy", "tab:gray", "-"),
    "pacao1": ("PACAO-1 (entry switching)", "tab:blue", "--"),
    "pacao2": ("PACAO-2 (switching + VM migration)", "tab:red", "-"),
}
MAP_USERS = 250


def _save(fig: Any, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


def _weighted_cdf(
    values: NDArray[np.float64], weights: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order].astype(np.float64)
    c = np.cumsum(w)
    return v, c / c[-1]


def fig12_map(
    path: Path,
    lacs: pd.DataFrame,
    dcs: pd.DataFrame,
    traces: pd.DataFrame | None,
    positions: pd.DataFrame,
    seed: int = 0,
) -> str:
    """DC sites of both use cases over the LAC centres and a sample of trajectories, or,
    without per-sample traces (a partitioned run), the visited positions sized by their
    sample counts."""
    segs: list[NDArray[np.float64]] = []
    if traces is not None:
        users = traces["user_id"].to_numpy()
        uniq = np.unique(users)
        rng = np.random.default_rng(seed)
        pick = rng.choice(uniq, size=min(MAP_USERS, len(uniq)), replace=False)
        sub = traces[np.isin(users, pick)]
        segs = [g[["lon", "lat"]].to_numpy() for _, g in sub.groupby("user_id", sort=False)]
    fig, axes = plt.subplots(1, 2, figsize=(15, 7))
    for ax, uc in zip(axes, ("france_isp", "europe_ott"), strict=True):
        n = int(dcs[dcs.use_case == uc].n_dcs.max())
        d = dcs[(dcs.use_case == uc) & (dcs.n_dcs == n)]
        ax.scatter(lacs["lon"], lacs["lat"], s=2, c="0.8", label="LAC centres", zorder=1)
        if traces is not None:
            ax.add_collection(
                LineCollection(segs, colors="tab:blue", linewidths=0.5, alpha=0.35, zorder=2)
            )
            ax.plot([], [], color="tab:blue", lw=0.8, label=f"trajectories ({len(segs)} users)")
        else:
            w = positions["samples"].to_numpy(np.float64)
            ax.scatter(
                positions["lon"],
                positions["lat"],
                s=2 + 60 * np.sqrt(w / w.max()),
                c="tab:blue",
                alpha=0.4,
                zorder=2,
                label=f"positions ({len(w):,}; area ~ samples, {int(w.sum()):,} in all)",
            )
        ax.scatter(
            d["lon"],
            d["lat"],
            marker="^",
            s=40,
            c="tab:red",
            edgecolors="k",
            zorder=3,
            label=f"{n} DCs",
        )
        lat0 = float(np.mean(np.r_[lacs["lat"].to_numpy(), d["lat"].to_numpy()]))
        ax.set_aspect(1.0 / np.cos(np.radians(lat0)))
        what = "user trajectories" if traces is not None else "visited positions"
        ax.set_title(f"{TITLES[uc]}: {n} DCs and {what}")
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.legend(loc="lower left", fontsize=8)
        ax.autoscale()
    fig.suptitle("Fig. 12: trajectories and data-centre distribution")
    return _save(fig, path)


def fig13_rtt_cdfs(
    path: Path, positions: pd.DataFrame, dcs: pd.DataFrame, sweep: pd.DataFrame
) -> str:
    """User<->DC RTT over all (sample, DC) pairs and DC<->DC RTT, per use case: exact from
    the positions' sample counts; bounds from the sweep rows."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    cmap = plt.get_cmap("viridis")
    weight = positions["samples"].to_numpy(np.int64)
    for col, uc in enumerate(("france_isp", "europe_ott")):
        mine = sorted(((n, g) for u, n, g in deployments(dcs) if u == uc), key=lambda x: x[0])
        for i, (n, g) in enumerate(mine):
            color = cmap(i / max(1, len(mine) - 1))
            net = network(positions, g)
            v, c = _weighted_cdf(net.user_dc.ravel(), np.repeat(weight, n))
            axes[0, col].plot(v, c, color=color, label=f"{n} DCs")
            if n > 1:
                iu = np.triu_indices(n, k=1)
                dd = np.sort(net.dc_dc[iu])
                axes[1, col].plot(
                    dd, np.arange(1, len(dd) + 1) / len(dd), color=color, label=f"{n} DCs"
                )
        if mine:
            top = mine[-1][0]
            rows = sweep[(sweep.use_case == uc) & (sweep.n_dcs == top)]
            for name in BOUND_QUANTILES:
                ms = float(rows[rows.bound == name].bound_ms.iloc[0])
                axes[0, col].axvline(ms, color="k", ls=":", lw=0.8)
                axes[0, col].text(
                    ms,
                    0.02 + 0.1 * list(BOUND_QUANTILES).index(name),
                    f" {name}\n ({top} DCs)",
                    fontsize=7,
                )
        axes[0, col].set_title(f"{TITLES[uc]}: user-DC RTT (all sample x DC pairs)")
        axes[1, col].set_title(f"{TITLES[uc]}: DC-DC RTT (all DC pairs)")
        for r in (0, 1):
            axes[r, col].set_xlabel("RTT (ms)")
            axes[r, col].set_ylabel("CDF")
            axes[r, col].grid(alpha=0.3)
            axes[r, col].legend(fontsize=7, loc="lower right")
    fig.suptitle("Fig. 13: emulated round-trip times between network nodes")
    fig.tight_layout()
    return _save(fig, path)


def fig_heatmaps(path: Path, sweep: pd.DataFrame, use_case: str, number: int) -> str:
    """Median RTT of PACAO-2 over (S', S''), one panel per DC count and bound.

    One colour scale for the whole use case (dark = lower RTT), so panels compare
    with each other; each panel marks its best point and states its range and the
    legacy median, since the S', S'' effect inside a panel can be small next to the
    differences between DC counts.
    """
    df = sweep[(sweep.use_case == use_case) & (sweep.policy == "pacao2")]
    legacy = sweep[(sweep.use_case == use_case) & (sweep.policy == "legacy")]
    counts = sorted(df.n_dcs.unique())
    bounds = list(BOUND_QUANTILES)
    vmin, vmax = float(df.median_rtt_ms.min()), float(df.median_rtt_ms.max())
    if vmax - vmin < 1e-6:
        vmax = vmin + 1.0
    fig, axes = plt.subplots(
        len(bounds),
        len(counts),
        figsize=(2.5 * len(counts) + 1.4, 2.5 * len(bounds) + 1.0),
        squeeze=False,
    )
    image = None
    for r, b in enumerate(bounds):
        for c, n in enumerate(counts):
            ax = axes[r, c]
            cell = df[(df.n_dcs == n) & (df.bound == b)]
            piv = cell.pivot_table(index="s2", columns="s1", values="median_rtt_ms")
            s1 = piv.columns.to_numpy(float) * 100
            s2 = piv.index.to_numpy(float) * 100
            z = piv.to_numpy()
            lo, hi = float(np.nanmin(z)), float(np.nanmax(z))
            half1 = (s1[1] - s1[0]) / 2 if len(s1) > 1 else 5.0
            half2 = (s2[1] - s2[0]) / 2 if len(s2) > 1 else 5.0
            image = ax.imshow(
                z,
                origin="lower",
                aspect="auto",
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
                extent=(s1[0] - half1, s1[-1] + half1, s2[0] - half2, s2[-1] + half2),
            )
            best = cell.sort_values(["median_rtt_ms", "s1", "s2"]).iloc[0]
            ax.plot(best.s1 * 100, best.s2 * 100, "*", color="w", ms=11, mec="k")
            leg = legacy[(legacy.n_dcs == n) & (legacy.bound == b)].median_rtt_ms
            lg = f"legacy {leg.iloc[0]:.1f}, " if len(leg) else ""
            ax.set_title(f"{n} DCs, {b} bound\n{lg}PACAO-2 {lo:.1f}-{hi:.1f}", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == len(bounds) - 1:
                ax.set_xlabel("S' (% of residence)", fontsize=8)
            if c == 0:
                ax.set_ylabel("S'' (% of S')", fontsize=8)
    fig.subplots_adjust(left=0.05, right=0.91, top=0.87, bottom=0.08, hspace=0.6, wspace=0.3)
    if image is not None:
        cax = fig.add_axes((0.93, 0.1, 0.012, 0.74))
        fig.colorbar(image, cax=cax).set_label("PACAO-2 median RTT (ms)")
    fig.suptitle(
        f"Fig. {number}: {TITLES[use_case]}: PACAO-2 median RTT (ms) over S' and S''; "
        "one colour scale, dark = lower, star = best point of each panel"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _short(label: str, width: int = 44) -> str:
    """A bar label on at most two lines of ``width`` characters."""
    if len(label) <= width:
        return label
    cut = label.rfind(" ", 0, width)
    cut = width if cut <= 0 else cut
    rest = label[cut:].strip()
    return label[:cut] + "\n" + (rest if len(rest) <= width else rest[: width - 3] + "...")


def fig_sensitivity(path: Path, sens: pd.DataFrame) -> str:
    """Headline PACAO-1 / PACAO-2 gains under each variant, per use case (bars)."""
    ucs = [uc for uc in TITLES if (sens.use_case == uc).any()]
    n_rows = max(int((sens.use_case == uc).sum()) for uc in ucs)
    fig, axes = plt.subplots(
        1, len(ucs), figsize=(8 * len(ucs), 0.55 * n_rows + 1.8), squeeze=False
    )
    paper = {"france_isp": 0.40, "europe_ott": 0.30}
    for ax, uc in zip(axes[0], ucs, strict=True):
        d = sens[sens.use_case == uc].reset_index(drop=True)
        y = np.arange(len(d))[::-1]
        ax.barh(y + 0.2, 100 * d.pacao2_gain, 0.4, color="tab:red", label="PACAO-2")
        ax.barh(y - 0.2, 100 * d.pacao1_gain, 0.4, color="tab:blue", label="PACAO-1")
        ax.axvline(100 * paper[uc], color="k", ls="--", lw=1, label=f"paper ~{paper[uc]:.0%}")
        ax.axvline(0, color="0.4", lw=0.6)
        labels = [("* " if bool(r.run) else "") + _short(str(r.variant)) for r in d.itertuples()]
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_xlabel("median throughput gain over legacy (%)")
        ax.set_title(f"{TITLES[uc]}, {int(d.n_dcs.iloc[0])} DCs (* = this run's setting)")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Sensitivity: headline gains under other readings and inputs")
    fig.tight_layout()
    return _save(fig, path)


def fig16_throughput(path: Path, heads: dict[str, HeadlineRun], sweep: pd.DataFrame) -> str:
    """CDF of the per-sample maximum TCP throughput, legacy / PACAO-1 / PACAO-2."""
    fig, axes = plt.subplots(1, len(heads), figsize=(7 * len(heads), 5), squeeze=False)
    binned = False
    for ax, (uc, h) in zip(axes[0], heads.items(), strict=True):
        for pol, c in h.throughput(sweep).items():
            label, color, ls = POLICY_STYLE[pol]
            ax.plot(c.x, c.y, color=color, ls=ls, label=f"{label}, median {c.median:.1f}")
            binned |= c.binned
        ax.set_title(
            f"{TITLES[uc]}, {h.n_dcs} DCs, strict bound, S'={h.s1:.0%}, S''={h.s2:.0%} of S'"
        )
        ax.set_xlabel("maximum TCP throughput (Mbit/s), 163,840 B window / RTT")
        ax.set_ylabel("CDF over user samples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Fig. 16: maximum estimated throughput" + (f" ({BINNED_NOTE})" if binned else ""))
    fig.tight_layout()
    return _save(fig, path)


#: Fig. 19's deployments: the paper's headline DC count per use case.
FIG19 = (("france_isp", 64), ("europe_ott", 4))


def fig18_congestion_cdf(path: Path, users: CongestionUsers) -> str:
    """CDF of user RTT (l_ud + f_d at the DC's load) under congestion-aware assignment."""
    ucs = [uc for uc in TITLES if any(k[0] == uc for k in users.curves)]
    fig, axes = plt.subplots(1, len(ucs), figsize=(7 * len(ucs), 5), squeeze=False)
    cmap = plt.get_cmap("viridis")
    binned = False
    for ax, uc in zip(axes[0], ucs, strict=True):
        mine = sorted(k[1] for k in users.curves if k[0] == uc)
        for i, n in enumerate(mine):
            c = users.curves[(uc, n)]
            binned |= c.binned
            ax.plot(
                c.x,
                c.y,
                color=cmap(i / max(1, len(mine) - 1)),
                label=f"{n} DCs, median {c.median:.1f} ms",
            )
        ax.axvline(75.0, color="k", ls=":", lw=0.8)
        ax.set_title(f"{TITLES[uc]}: congestion-aware assignment (lagrange)")
        ax.set_xlabel("RTT user-DC + congestion latency (ms)")
        ax.set_ylabel("CDF over users (snapshot 12 h after the first sample)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "Fig. 18: RTT with congestion-aware assignment, per DC count"
        + (f" ({BINNED_NOTE})" if binned else "")
    )
    fig.tight_layout()
    return _save(fig, path)


def fig19_users_per_dc(path: Path, per_dc: pd.DataFrame) -> str:
    """Users per DC with and without congestion awareness (results/congestion_dcs.parquet);
    DCs west to east."""
    pick = [
        per_dc[(per_dc.use_case == uc) & (per_dc.n_dcs == n)].sort_values("dc")
        for uc, n in FIG19
        if ((per_dc.use_case == uc) & (per_dc.n_dcs == n)).any()
    ]
    fig, axes = plt.subplots(len(pick), 1, figsize=(13, 4.2 * len(pick)), squeeze=False)
    for ax, d in zip(axes[:, 0], pick, strict=True):
        n = len(d)
        capacity = float(d["capacity"].iloc[0])
        order = np.argsort(d["lon"].to_numpy(), kind="stable")
        x = np.arange(n)
        aware, unaware = d["users_aware"].to_numpy(), d["users_unaware"].to_numpy()
        ax.bar(x - 0.2, unaware[order], 0.4, color="tab:gray", label="nearest DC (unaware)")
        ax.bar(x + 0.2, aware[order], 0.4, color="tab:red", label="congestion-aware")
        ax.axhline(capacity, color="k", ls="--", lw=0.8, label=f"capacity {capacity:.0f}")
        names = d["name"].astype(str).to_numpy()[order]
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=90, fontsize=6 if n > 16 else 9)
        ax.set_ylabel("users")
        ax.set_title(f"{TITLES[str(d.use_case.iloc[0])]}, {n} DCs (west to east)")
        ax.legend(fontsize=8)
    fig.suptitle("Fig. 19: users per DC with and without congestion awareness")
    fig.tight_layout()
    return _save(fig, path)


def figure_plan(out: Path) -> list[tuple[str, Callable[[], str]]]:
    """The figures the run folder's files allow, in report order, each as (key, draw);
    a pipeline counts them for its progress line."""
    res = results(out)
    summary = json.loads((out / "summary.json").read_text())
    partitioned = "partitioned" in summary
    sweep = pd.read_parquet(res / "sweep.parquet")
    dcs = read_dcs(out)
    positions = read_positions(out)

    def fig12() -> str:
        traces = None if partitioned else pd.read_parquet(out / "traces.parquet")
        return fig12_map(out / "fig12_map.png", read_lacs(out), dcs, traces, positions)

    plan: list[tuple[str, Callable[[], str]]] = [
        ("fig12", fig12),
        ("fig13", lambda: fig13_rtt_cdfs(out / "fig13_rtt_cdf.png", positions, dcs, sweep)),
        (
            "fig14",
            lambda: fig_heatmaps(out / "fig14_france_isp_heatmaps.png", sweep, "france_isp", 14),
        ),
        (
            "fig15",
            lambda: fig_heatmaps(out / "fig15_europe_ott_heatmaps.png", sweep, "europe_ott", 15),
        ),
        (
            "fig16",
            lambda: fig16_throughput(
                out / "fig16_throughput_cdf.png", read_headlines(out, partitioned), sweep
            ),
        ),
    ]
    per_dc = res / "congestion_dcs.parquet"
    if per_dc.is_file():
        users = read_congestion_users(out, partitioned)
        if users is not None:
            plan.append(
                ("fig18", lambda: fig18_congestion_cdf(out / "fig18_congestion_rtt_cdf.png", users))
            )
        plan.append(
            (
                "fig19",
                lambda: fig19_users_per_dc(out / "fig19_users_per_dc.png", pd.read_parquet(per_dc)),
            )
        )
    if summary.get("sensitivity") is not None:
        plan.append(
            (
                "sensitivity",
                lambda: fig_sensitivity(
                    out / "fig_sensitivity.png", pd.read_parquet(res / "sensitivity.parquet")
                ),
            )
        )
    return plan


def draw_all(
    plan: list[tuple[str, Callable[[], str]]], advance: Callable[[], None] = lambda: None
) -> dict[str, str]:
    """Draw every figure of ``plan``; returns {figure: file name}."""
    figs = {}
    for key, draw in plan:
        figs[key] = draw()
        advance()
    return figs
