"""The testbed's report: figures (Figs. 6-11) and report.html of a `pacao testbed run`
folder, drawn from its result files (raw trial records, summary.json).

pacao.testbed writes the data (pacao.testbed.analysis); this module only reads it, so a
stored run folder can be re-drawn without the testbed.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from pacao import __version__
from pacao.report.html import CSS
from pacao.testbed.analysis import (
    entry_switches,
    fmt,
    load_all,
    mbps_series,
    migration_spans,
    migrations,
    udp_loss,
)
from pacao.testbed.topo.experiment import ARM_LABELS

Records = dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]

ARM_STYLE = {"legacy": ("tab:gray", "-"), "pacao1": ("tab:blue", "--"), "pacao2": ("tab:red", "-")}
PAPER_FIGS = {
    "table1": {"bandwidth": 6, "volume": 7},
    "table2": {"bandwidth": 8, "volume": 9, "loss": 10, "jitter": 11},
}


def _save(fig: Any, path: Path) -> str:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path.name


def _fig_title(exp: str, kind: str, text: str) -> str:
    n = PAPER_FIGS.get(exp, {}).get(kind)
    return f"Fig. {n}: {text}" if n else text


def _mean_series(recs: list[dict[str, Any]], duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Average Mbit/s over repetitions on a common grid (the first record's intervals)."""
    step = max(recs[0]["measure"]["intervals"][0]["seconds"] / recs[0]["time_scale"], 1e-3)
    grid = np.arange(0.0, duration, step)
    ys = []
    for r in recs:
        t, m = mbps_series(r)
        ys.append(np.interp(grid, t + step / 2, m, left=np.nan, right=np.nan))
    stack = np.vstack(ys)
    counts = np.sum(~np.isnan(stack), axis=0)
    sums = np.nansum(stack, axis=0)
    mean = np.divide(sums, counts, out=np.full(len(grid), np.nan), where=counts > 0)
    return grid + step / 2, mean


def fig_bandwidth(path: Path, meta: dict[str, Any], recs: list[dict[str, Any]]) -> str:
    bulk = [r for r in recs if r["traffic"] in ("download", "tcp")]
    variants = list(dict.fromkeys(r["variant"] for r in bulk))
    n = len(variants)
    cols = 2 if n > 1 else 1
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(7 * cols, 3.6 * rows_n), squeeze=False)
    for k, v in enumerate(variants):
        ax = axes[k // cols, k % cols]
        vr = [r for r in bulk if r["variant"] == v]
        for arm in dict.fromkeys(r["arm"] for r in vr):
            mine = [r for r in vr if r["arm"] == arm]
            t, y = _mean_series(mine, meta["duration_s"])
            color, ls = ARM_STYLE.get(arm, ("k", "-"))
            ax.plot(t, y, color=color, ls=ls, label=ARM_LABELS.get(arm, arm))
            for r in mine:
                for e in entry_switches(r):
                    ax.axvline(e["t_scenario"], color=color, ls=":", lw=0.8)
                for lo, hi in migration_spans(r):
                    ax.axvspan(lo, hi, color=color, alpha=0.08)
        for ev in vr[0].get("events_applied", []):
            if ev["at"] > 0:
                ax.axvline(ev["at"], color="k", lw=0.6, alpha=0.5)
        ax.set_title(vr[0]["variant_label"])
        ax.set_xlabel("time (s, scenario)")
        ax.set_ylabel("Mbit/s (mean over runs)")
        ax.set_xlim(0, meta["duration_s"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for k in range(n, rows_n * cols):
        axes[k // cols, k % cols].set_visible(False)
    fig.suptitle(
        _fig_title(meta["name"], "bandwidth", f"{meta['title']}: bandwidth over time")
        + f" (time scale {meta['time_scale']:g}; dotted: entry switches, shaded: migrations)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def fig_volume(path: Path, meta: dict[str, Any], recs: list[dict[str, Any]]) -> str:
    bulk = [r for r in recs if r["traffic"] in ("download", "tcp")]
    variants = list(dict.fromkeys(r["variant"] for r in bulk))
    arms = list(dict.fromkeys(r["arm"] for r in bulk))
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * len(variants) * len(arms) / 2), 4))
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        data = [
            [r["measure"]["volume_bytes"] / 1e6 for r in bulk if (r["variant"], r["arm"]) == va]
            for va in ((v, arm) for v in variants)
        ]
        pos = [i + (j - (len(arms) - 1) / 2) * width for i in range(len(variants))]
        keep = [(p, d) for p, d in zip(pos, data, strict=True) if d]
        bp = ax.boxplot([d for _, d in keep], positions=[p for p, _ in keep], widths=width * 0.9,
                        patch_artist=True)  # fmt: skip
        for box in bp["boxes"]:
            box.set_facecolor(ARM_STYLE.get(arm, ("w", "-"))[0])
            box.set_alpha(0.6)
        ax.plot([], [], color=ARM_STYLE.get(arm, ("k", "-"))[0], lw=6, label=ARM_LABELS.get(arm))
    labels = [next(r["variant_label"] for r in bulk if r["variant"] == v) for v in variants]
    ax.set_xticks(range(len(variants)), labels, fontsize=8)
    ax.set_ylabel("MB received in the run")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    real = meta["duration_s"] * meta["time_scale"]
    ax.set_title(
        _fig_title(meta["name"], "volume", f"data downloaded in {meta['duration_s']:g} s")
        + f"\n(scenario time; {real:g} s of real traffic at time scale {meta['time_scale']:g})",
        fontsize=9,
    )
    return _save(fig, path)


def fig_loss(path: Path, meta: dict[str, Any], recs: list[dict[str, Any]]) -> str:
    udp = [r for r in recs if r["traffic"] == "udp"]
    arms = list(dict.fromkeys(r["arm"] for r in udp))
    fig, ax = plt.subplots(figsize=(6, 4))
    data = [[udp_loss(r) or 0.0 for r in udp if r["arm"] == a] for a in arms]
    short = {"legacy": "legacy", "pacao1": "PACAO-1", "pacao2": "PACAO-2"}
    ax.boxplot(data, tick_labels=[short.get(a, a) for a in arms])
    for i, a in enumerate(arms):
        during = [udp_loss(r, migration_spans(r)) for r in udp if r["arm"] == a and migrations(r)]
        d = [x for x in during if x is not None]
        if d:
            ax.scatter([i + 1] * len(d), d, marker="x", color="tab:red",
                       label="during migration" if i == len(arms) - 1 else None)  # fmt: skip
    ax.set_ylabel("lost packets (%)")
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(alpha=0.3, axis="y")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.set_title(_fig_title(meta["name"], "loss", "UDP packet loss (iperf3)"), fontsize=10)
    return _save(fig, path)


def fig_jitter(path: Path, meta: dict[str, Any], recs: list[dict[str, Any]]) -> str:
    udp = [r for r in recs if r["traffic"] == "udp"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in dict.fromkeys(r["arm"] for r in udp):
        mine = [r for r in udp if r["arm"] == arm]
        j = np.sort([i["jitter_ms"] for r in mine for i in r["measure"]["intervals"]])
        if len(j):
            color, ls = ARM_STYLE.get(arm, ("k", "-"))
            ax.plot(j, np.arange(1, len(j) + 1) / len(j), color=color, ls=ls,
                    label=ARM_LABELS.get(arm, arm))  # fmt: skip
    ax.set_xlabel("jitter per interval (ms, iperf3 RFC 1889 estimate)")
    ax.set_ylabel("CDF")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(_fig_title(meta["name"], "jitter", "CDF of the jitter (UDP)"), fontsize=10)
    return _save(fig, path)


def figures(out: Path, meta: dict[str, Any], recs: list[dict[str, Any]]) -> dict[str, str]:
    name = meta["name"]
    figs: dict[str, str] = {}
    if any(r["traffic"] in ("download", "tcp") for r in recs):
        figs["bandwidth"] = fig_bandwidth(out / f"{name}_bandwidth.png", meta, recs)
        figs["volume"] = fig_volume(out / f"{name}_volume.png", meta, recs)
    if any(r["traffic"] == "udp" for r in recs):
        figs["loss"] = fig_loss(out / f"{name}_udp_loss.png", meta, recs)
        figs["jitter"] = fig_jitter(out / f"{name}_jitter_cdf.png", meta, recs)
    return figs


def write(out: Path) -> Path:
    """Figures and report.html of a run folder, from its raw records and summary.json."""
    everything = load_all(out)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    figs: dict[str, dict[str, str]] = {}
    for name, (meta, all_recs) in everything.items():
        recs = [r for r in all_recs if "error" not in r]
        if recs:
            figs[name] = figures(out, meta, recs)
    return write_report(out, everything, summary, figs)


def _e(x: object) -> str:
    return html.escape(str(x))


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def write_report(
    out: Path,
    everything: Records,
    summary: dict[str, Any],
    figs: dict[str, dict[str, str]],
) -> Path:
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        f"<h1>PACAO, Section IV testbed reproduced</h1><p class=note>pacao {__version__}, "
        f"{now}. Emulated Fig. 5 testbed in network namespaces, real packets through the "
        "user-space LISP data plane; the PACAO arms' switches and migrations come from the "
        "controller running in the testbed (docs/testbed.md).</p>"
    ]
    for name, (meta, recs) in everything.items():
        recs = [r for r in recs if "error" not in r]
        if name not in summary or not recs:
            continue
        s = summary[name]
        parts.append(f"<h2>{_e(meta['title'])}</h2>")
        parts.append(
            f"<p class=note>{len(recs)} trials, {meta['repeat']} repetition(s), time scale "
            f"{meta['time_scale']:g} ({meta['duration_s'] * meta['time_scale']:g} s of traffic "
            f"per {meta['duration_s']:g}-s trial; controller timers scaled, link delays not), "
            f"S' = {meta['s1']:g} s, S'' = {meta['s2']:g} s, probes every {meta['probe_s']:g} s "
            f"(scenario time), VM backend {_e(meta['vm'])}, TCP host profile "
            f"{_e(meta.get('tcp_profile', 'linux'))}, {_e(meta.get('parallel', '?'))} trial(s) "
            f"side by side, load average at the end {_e(meta.get('loadavg_end', '?'))} "
            f"(measurements under load are not comparable), wall time {meta['wall_s']:.0f} s."
            "</p>"
        )
        comparable = meta["time_scale"] == 1
        if not comparable:
            parts.append(
                "<p class=note><b>Compressed run: not comparable with the paper.</b> The "
                "controller's timers are scaled, the link delays are not, so TCP and the "
                "controller see a different experiment; the paper's figures are not shown "
                "beside these.</p>"
            )
        arms = list(dict.fromkeys(r["arm"] for r in recs))
        paper = meta.get("paper", {})
        rows = []
        for v, row in s["variants"].items():
            cells = [_e(v)]
            for arm in arms:
                cells.append(fmt(row.get(f"{arm}_median_volume_mb")))
            for arm in arms[1:]:
                cells.append(fmt(row.get(f"{arm}_volume_gain"), "pct"))
            ref = paper.get("volume_gain", paper.get("volume_gain_max"))
            if comparable:
                cells.append(fmt(ref, "pct") if ref is not None else "")
            rows.append(cells)
        head = ["variant", *[f"{a} median MB" for a in arms], *[f"{a} gain" for a in arms[1:]],
                *(["paper gain"] if comparable else [])]  # fmt: skip
        parts.append(_table(head, rows))
        trows = []
        for v, row in s["variants"].items():
            for arm in arms:
                w = [fmt(row.get(f"{arm}_mbps_{k}")) for k in meta.get("windows", {})]
                sw = row.get(f"{arm}_entry_switch_times_s")
                mig = row.get(f"{arm}_migrations", [])
                mtxt = "; ".join(
                    f"{m['t_s']:.1f} s to {_e(m['dst'])} ({m['duration_s']:.1f} s, "
                    f"down {m['downtime_s']:.3f} s"
                    f"{', QEMU, real s' if m.get('measured_by') == 'qemu' else ''})"
                    for m in mig
                )
                done = row.get(f"{arm}_median_completion_s")
                rate = row.get(f"{arm}_download_rate_gain")
                dtxt = (
                    "-"
                    if done is None
                    else f"{done:.0f} s"
                    + (f" ({fmt(rate, 'pct')} rate)" if rate is not None else "")
                )
                trows.append(
                    [_e(v), _e(arm), *w, dtxt, fmt(sw, "list") if sw else "-", mtxt or "-"]
                )
        whead = ["variant", "arm", *[f"Mbit/s {k} {tuple(x)}" for k, x in
                                     meta.get("windows", {}).items()],
                 "download complete at", "entry switches (s)", "migrations"]  # fmt: skip
        parts.append(_table(whead, trows))
        if paper.get("timeline"):
            parts.append(
                "<p>Paper's timeline: "
                + "; ".join(f"{t['at']} s: {_e(t['what'])}" for t in paper["timeline"])
                + ".</p>"
            )
        udp_rows = []
        for v, row in s["variants"].items():
            for arm in arms:
                if f"{arm}_udp_loss_pct_median" in row:
                    udp_rows.append([
                        _e(v), _e(arm), fmt(row.get(f"{arm}_udp_loss_pct_median")),
                        fmt(row.get(f"{arm}_udp_loss_during_migration_pct_median")),
                        fmt(row.get(f"{arm}_udp_jitter_ms_median")),
                    ])  # fmt: skip
        if udp_rows:
            uhead = ["variant", "arm", "UDP loss % (median)", "loss % during migration",
                     "jitter ms (median)"]  # fmt: skip
            parts.append(_table(uhead, udp_rows))
            if "udp_loss_median_pct" in paper and comparable:
                parts.append(
                    f"<p class=note>Paper: median {paper['udp_loss_median_pct']} % loss "
                    "during migration (Fig. 10).</p>"
                )
        if s.get("claims"):
            parts.append("<h3>The paper's claims, checked on this run</h3>")
            parts.append(_table(
                ["claim", "paper", "ours", "holds"],
                [[_e(c["claim"]), _e(c["paper"]), _e(c["ours"]),
                  "holds" if c["holds"] else "<b>fails</b>"] for c in s["claims"]],
            ))  # fmt: skip
        for fail in s.get("failed_trials", []):
            parts.append(f"<p><b>failed trial</b> {_e(fail['trial'])}: {_e(fail['error'])}</p>")
        for key in s.get("stopped_clients", []):
            parts.append(f"<p>trial {_e(key)}: measured to its end; its iperf3 hung after it "
                         "and was stopped (SIGTERM)</p>")  # fmt: skip
        for f in figs.get(name, {}).values():
            parts.append(f'<p><img src="{_e(f)}" alt="{_e(f)}"></p>')
        parts.append(
            f'<p class=note>Raw: <a href="raw/{_e(name)}/">raw/{_e(name)}/</a> (one JSON per '
            f"trial with intervals, applied events, controller plans and events), "
            f'<a href="{_e(name)}_intervals.csv">{_e(name)}_intervals.csv</a>.</p>'
        )
    path = out / "report.html"
    path.write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>PACAO testbed</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    return path
