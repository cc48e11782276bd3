"""Results of `pacao testbed run`: raw records -> CSV, figures, summary.json, report.html.

Every scenario run into the same --out folder keeps its raw records under
``raw/<experiment>/``; the summary and the report cover all of them, so
`run --scenario table1` then `--scenario table2` gives one report (Figs. 6-11).
All numbers are computed from the records (nothing is copied from the paper
except the reference figures the experiment files state under ``paper``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from pacao import __version__
from pacao.report.html import CSS
from pacao.testbed.topo.experiment import ARM_LABELS

if TYPE_CHECKING:
    from pacao.testbed.topo.experiment import Experiment
    from pacao.testbed.trials import RunOptions

ARM_STYLE = {"legacy": ("tab:gray", "-"), "pacao1": ("tab:blue", "--"), "pacao2": ("tab:red", "-")}
PAPER_FIGS = {
    "table1": {"bandwidth": 6, "volume": 7},
    "table2": {"bandwidth": 8, "volume": 9, "loss": 10, "jitter": 11},
}


def _median(xs: list[float]) -> float | None:
    return float(np.median(xs)) if xs else None


def mbps_series(rec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(scenario time, Mbit/s) of one record's intervals."""
    rows = rec["measure"]["intervals"]
    t = np.array([r["t"] for r in rows], dtype=np.float64)
    mbps = np.array([r["bytes"] * 8 / max(r["seconds"], 1e-9) / 1e6 for r in rows])
    return t, mbps


def completion_s(rec: dict[str, Any]) -> float | None:
    """Scenario time the whole download ended (None: still running at the end)."""
    m = rec["measure"]
    if rec["traffic"] != "download" or not m.get("complete"):
        return None
    done = [i["t"] + i["seconds"] / rec["time_scale"] for i in m["intervals"] if i["bytes"] > 0]
    return max(done) if done else None


def window_mbps(rec: dict[str, Any], lo: float, hi: float) -> float:
    """Mean Mbit/s of the intervals that start inside [lo, hi) (scenario seconds)."""
    t, mbps = mbps_series(rec)
    sel = (t >= lo) & (t < hi)
    return float(mbps[sel].mean()) if sel.any() else float("nan")


def entry_switches(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Entry changes the user's xTR data plane saw (from the control plane's events)."""
    return [
        e
        for e in rec.get("cp_events", [])
        if e.get("kind") == "entry"
        and 0 <= e.get("t_scenario", -1) <= rec["duration_s"]
        and e.get("node") == rec.get("user_xtr")
        and e.get("prefix") == rec.get("vm_prefix")
    ]


def migrations(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in rec.get("cp_events", []) if e.get("kind") == "migration"]


def unfinished_migrations(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Migrations started (``migration-start``) but not done when the trial ended."""
    done = {(m.get("src"), m.get("dst")) for m in migrations(rec)}
    return [
        {"t_s": (float(e["t"]) - float(rec["timeline_start_wall"])) / float(rec["time_scale"]),
         "src": e.get("src"), "dst": e.get("dst"), "backend": e.get("backend", "namespace")}
        for e in rec.get("cp_events", [])
        if e.get("kind") == "migration-start" and (e.get("src"), e.get("dst")) not in done
        and "timeline_start_wall" in rec
    ]  # fmt: skip


def udp_loss(rec: dict[str, Any], spans: list[tuple[float, float]] | None = None) -> float | None:
    """Lost packets in % (all intervals, or those overlapping the given scenario spans)."""
    rows = rec["measure"]["intervals"]
    if spans is not None:
        rows = [
            r
            for r in rows
            if any(
                r["t"] < hi and r["t"] + r["seconds"] / rec["time_scale"] > lo for lo, hi in spans
            )
        ]
    pk = sum(r.get("packets", 0) for r in rows)
    lost = sum(r.get("lost", 0) for r in rows)
    return 100.0 * lost / (pk + lost) if pk + lost else None


def migration_start(rec: dict[str, Any], m: dict[str, Any]) -> float:
    """Scenario time a migration started (its event is written when it ends)."""
    if "started" in m and "timeline_start_wall" in rec:
        return (float(m["started"]) - float(rec["timeline_start_wall"])) / float(rec["time_scale"])
    return float(m["t_scenario"]) - float(m["duration_s"]) / float(rec["time_scale"])


def migration_spans(rec: dict[str, Any]) -> list[tuple[float, float]]:
    """[start, end] of each migration in scenario seconds (the downtime is at the end).

    The end is extended by one measurement interval: a receiver counts the packets
    lost in the downtime when the next one arrives, i.e. after the switch-over (and a
    QEMU guest's interval clock stands still while it is paused).
    """
    scale = rec["time_scale"]
    grace = float(rec.get("interval_s", 0.0)) / scale
    out = []
    for m in migrations(rec):
        start = migration_start(rec, m)
        out.append((start, start + float(m["duration_s"]) / scale + grace))
    return out


def migration_summary(rec: dict[str, Any], m: dict[str, Any], scale: float) -> dict[str, Any]:
    """One migration for summary.json.

    Namespace VM: the model's times, scaled back to scenario seconds. QEMU guest
    (``modelled`` false): QEMU's own figures in real seconds, not rescaled (a real
    migration does not compress with the timeline), with its total time and bytes.
    """
    out: dict[str, Any] = {"t_s": migration_start(rec, m), "dst": m.get("dst")}
    if m.get("modelled", True) is False:
        out.update({
            "measured_by": "qemu",
            "duration_s": float(m.get("duration_s", 0)),
            "downtime_s": float(m.get("downtime_s", 0)),
            "qemu_total_time_ms": m.get("total_time_ms"),
            "qemu_downtime_ms": float(m.get("downtime_s", 0)) * 1000.0,
            "transferred_bytes": m.get("bytes"),
        })  # fmt: skip
    else:
        out.update({"measured_by": "model",
                    "duration_s": float(m.get("duration_s", 0)) / scale,
                    "downtime_s": float(m.get("downtime_s", 0)) / scale})  # fmt: skip
    return out


def _gain(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b - 1.0


def summarize(meta: dict[str, Any], recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One experiment's summary: median volumes and gains per variant, next to the paper's."""
    paper = meta.get("paper", {})
    out: dict[str, Any] = {
        "title": meta["title"],
        "time_scale": meta["time_scale"],
        "comparable_with_paper": meta["time_scale"] == 1,
        "tcp_profile": meta.get("tcp_profile", "linux"),
        "parallel": meta.get("parallel"),
        "loadavg_end": meta.get("loadavg_end"),
        "repeat": meta["repeat"],
        "duration_s": meta["duration_s"],
        "real_seconds_per_trial": meta["duration_s"] * meta["time_scale"],
        "paper": paper,
        "variants": {},
    }
    variants = list(dict.fromkeys(r["variant"] for r in recs))
    windows = meta.get("windows", {})
    for v in variants:
        vr = [r for r in recs if r["variant"] == v]
        row: dict[str, Any] = {}
        bulk = [r for r in vr if r["traffic"] in ("download", "tcp")]
        arms = list(dict.fromkeys(r["arm"] for r in vr))
        for arm in arms:
            mine = [r for r in bulk if r["arm"] == arm]
            vols = [r["measure"]["volume_bytes"] / 1e6 for r in mine]
            if vols:
                row[f"{arm}_median_volume_mb"] = _median(vols)
                row[f"{arm}_volumes_mb"] = vols
            ends = [c for c in (completion_s(r) for r in mine) if c is not None]
            if ends and len(ends) == len(mine):  # every download finished inside the run
                row[f"{arm}_median_completion_s"] = _median(ends)
            for wname, (lo, hi) in windows.items():
                ws = [window_mbps(r, lo, hi) for r in mine]
                ws = [w for w in ws if np.isfinite(w)]
                if ws:
                    row[f"{arm}_mbps_{wname}"] = _median(ws)
            sw = [
                e["t_scenario"]
                for r in mine
                for e in entry_switches(r)
                if e.get("t_scenario", -1) >= 0
            ]
            if sw:
                row[f"{arm}_entry_switch_times_s"] = sorted(sw)
            mig = [migration_summary(r, m, meta["time_scale"]) for r in mine
                   for m in migrations(r)]  # fmt: skip
            if mig:
                row[f"{arm}_migrations"] = mig
            cut = [m for r in mine for m in unfinished_migrations(r)]
            if cut:  # e.g. a QEMU migration over a slow inter-DC link outlasting the run
                row[f"{arm}_migrations_unfinished"] = cut
            udp = [r for r in vr if r["traffic"] == "udp" and r["arm"] == arm]
            if udp:
                losses = [x for x in (udp_loss(r) for r in udp) if x is not None]
                row[f"{arm}_udp_loss_pct_median"] = _median(losses)
                during = [
                    x
                    for x in (udp_loss(r, migration_spans(r)) for r in udp if migrations(r))
                    if x is not None
                ]
                if during:
                    row[f"{arm}_udp_loss_during_migration_pct_median"] = _median(during)
                jit = [i["jitter_ms"] for r in udp for i in r["measure"]["intervals"]]
                row[f"{arm}_udp_jitter_ms_median"] = _median(jit)
        for arm in arms:
            if arm != "legacy" and f"{arm}_median_volume_mb" in row:
                row[f"{arm}_volume_gain"] = _gain(
                    row[f"{arm}_median_volume_mb"], row.get("legacy_median_volume_mb")
                )
            done, ref = row.get(f"{arm}_median_completion_s"), row.get("legacy_median_completion_s")
            if arm != "legacy" and done and ref:
                # the whole file arrived in both arms: mean download rate gain instead
                row[f"{arm}_download_rate_gain"] = ref / done - 1.0
        out["variants"][v] = row
    return out


def write_csv(path: Path, recs: list[dict[str, Any]]) -> None:
    """Every interval of every record, one row each."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["experiment", "variant", "traffic", "arm", "rep", "t_s", "seconds_real",
                    "bytes", "mbps", "jitter_ms", "lost", "packets"])  # fmt: skip
        for r in recs:
            for i in r["measure"]["intervals"]:
                w.writerow([
                    r["experiment"], r["variant"], r["traffic"], r["arm"], r["rep"],
                    f"{i['t']:.3f}", f"{i['seconds']:.3f}", i["bytes"],
                    f"{i['bytes'] * 8 / max(i['seconds'], 1e-9) / 1e6:.4f}",
                    i.get("jitter_ms", ""), i.get("lost", ""), i.get("packets", ""),
                ])  # fmt: skip


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


def load_all(out: Path) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every experiment's metadata and records under out/raw/."""
    found: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for d in sorted((out / "raw").glob("*")):
        meta_path = d / "experiment.json"
        if not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text())
        recs = [json.loads(p.read_text()) for p in sorted(d.glob("*-r*.json"))]
        order = {v: i for i, v in enumerate(meta.get("variant_order", []))}
        recs.sort(key=lambda r: (r["rep"], order.get(r["variant"], 99), r["traffic"], r["arm"]))
        found[meta["name"]] = (meta, recs)
    return found


def loadavg() -> str:
    """The machine's load average (1, 5, 15 min): measurements under load differ."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def experiment_meta(exp: Experiment, opts: RunOptions, wall_s: float) -> dict[str, Any]:
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
    """Store this experiment's metadata, then rebuild CSV, figures, summary and report."""
    raw = opts.out / "raw" / exp.name
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "experiment.json").write_text(json.dumps(experiment_meta(exp, opts, wall_s), indent=1))
    return rebuild(opts.out)


def rebuild(out: Path) -> dict[str, Any]:
    """summary.json, intervals CSVs, figures and report.html from out/raw/."""
    everything = load_all(out)
    summary: dict[str, Any] = {}
    figs: dict[str, dict[str, str]] = {}
    for name, (meta, all_recs) in everything.items():
        recs = [r for r in all_recs if "error" not in r]
        failed = [
            {"trial": f"{r['variant']}/{r['traffic']}-{r['arm']}-r{r['rep']}", "error": r["error"]}
            for r in all_recs
            if "error" in r
        ]
        if not recs:
            summary[name] = {"failed_trials": failed}
            continue
        summary[name] = summarize(meta, recs)
        summary[name]["claims"] = claims(meta, recs, summary[name])
        summary[name]["failed_trials"] = failed
        write_csv(out / f"{name}_intervals.csv", recs)
        figs[name] = figures(out, meta, recs)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(out, everything, summary, figs)
    return summary


def _e(x: object) -> str:
    return html.escape(str(x))


def _fmt(x: Any, kind: str = "") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if kind == "pct":
        return f"{100 * x:+.0f} %"
    if kind == "list":
        return ", ".join(f"{v:.1f}" for v in x)
    return f"{x:.2f}" if isinstance(x, float) else _e(x)


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def write_report(
    out: Path,
    everything: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]],
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
                cells.append(_fmt(row.get(f"{arm}_median_volume_mb")))
            for arm in arms[1:]:
                cells.append(_fmt(row.get(f"{arm}_volume_gain"), "pct"))
            ref = paper.get("volume_gain", paper.get("volume_gain_max"))
            if comparable:
                cells.append(_fmt(ref, "pct") if ref is not None else "")
            rows.append(cells)
        head = ["variant", *[f"{a} median MB" for a in arms], *[f"{a} gain" for a in arms[1:]],
                *(["paper gain"] if comparable else [])]  # fmt: skip
        parts.append(_table(head, rows))
        trows = []
        for v, row in s["variants"].items():
            for arm in arms:
                w = [_fmt(row.get(f"{arm}_mbps_{k}")) for k in meta.get("windows", {})]
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
                    + (f" ({_fmt(rate, 'pct')} rate)" if rate is not None else "")
                )
                trows.append(
                    [_e(v), _e(arm), *w, dtxt, _fmt(sw, "list") if sw else "-", mtxt or "-"]
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
                        _e(v), _e(arm), _fmt(row.get(f"{arm}_udp_loss_pct_median")),
                        _fmt(row.get(f"{arm}_udp_loss_during_migration_pct_median")),
                        _fmt(row.get(f"{arm}_udp_jitter_ms_median")),
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


# ---------------------------------------------------------------------------------------
# The paper's Section IV claims, checked on a run's raw records (docs/testbed.md, "Claims")

#: a gain "holds" when it reaches at least this share of the paper's
GAIN_SHARE = 0.5
#: PACAO-1 is "heavily affected" when its Mbit/s after the first stress is at most this
#: share of PACAO-2's
AFFECTED_SHARE = 0.8
#: an arm has "recovered" once a 3-interval mean reaches this share of its own rate
#: before the stress
RECOVERED_SHARE = 0.5
#: the PACAO-1/PACAO-2 lapse compares the times each arm is back to this share
LAPSE_SHARE = 0.8
#: the paper's "median of 4 %" UDP loss holds within a factor of 2
LOSS_RANGE = (2.0, 8.0)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f} %"


def recovery_s(
    rec: dict[str, Any], stress: float, before: tuple[float, float], share: float | None = None
) -> float | None:
    """Scenario time the rate came back after ``stress``: the end of the first 3-interval
    window whose mean Mbit/s is at ``share`` (default RECOVERED_SHARE) of the trial's own
    mean in ``before``, after it first fell below it (None: never back; ``stress``:
    never fell)."""
    share = RECOVERED_SHARE if share is None else share
    t, mbps = mbps_series(rec)
    ref = window_mbps(rec, *before)
    if not np.isfinite(ref) or ref <= 0:
        return None
    sel = t >= stress
    ts, ms = t[sel], mbps[sel]
    fell = False
    for i in range(len(ms) - 2):
        low = ms[i : i + 3].mean() < share * ref
        if low:
            fell = True
        elif fell:
            return float(ts[i + 2])  # when the third interval of the window is in
    return None if fell else stress


def _stress_times(recs: list[dict[str, Any]]) -> list[float]:
    """Times of the user-side stresses (link events adding delay on an inet-* link)."""
    for r in recs:
        ts = sorted({
            float(e["at"]) for e in r.get("events_applied", [])
            if str(e.get("link", "")).startswith("inet-") and float(e["at"]) > 0
        })  # fmt: skip
        if ts:
            return ts
    return []


def _less(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a < b


def _iqr(xs: list[float]) -> float | None:
    if len(xs) < 4:
        return None
    q1, q3 = np.percentile(xs, [25, 75])
    return float(q3 - q1)


def claims(
    meta: dict[str, Any], recs: list[dict[str, Any]], s: dict[str, Any]
) -> list[dict[str, Any]]:
    """Rows {id, claim, paper, ours, holds} for Table I (``paper.volume_gain``) or Table II
    (``paper.volume_gain_max``) experiments; every value from the records."""
    paper = meta.get("paper", {})
    scale = float(meta["time_scale"])
    tag = (
        ""
        if scale == 1
        else (
            f"[compressed x{scale:g}: timers scaled, link delays not; NOT comparable with the "
            "paper] "
        )
    )
    out: list[dict[str, Any]] = []

    def add(cid: str, claim: str, ref: str, ours: str, holds: bool) -> None:
        out.append({"id": cid, "claim": claim, "paper": ref, "ours": tag + ours,
                    "holds": bool(holds)})  # fmt: skip

    windows = {k: tuple(v) for k, v in meta.get("windows", {}).items()}
    ok = [r for r in recs if "error" not in r]
    if "volume_gain" in paper:  # Table I
        ref_gain = float(paper["volume_gain"])
        s1 = float(meta["s1"])
        sds: list[tuple[str, float, float]] = []
        for v, row in s["variants"].items():
            gain = row.get("pacao1_volume_gain")
            n_l = len(row.get("legacy_volumes_mb", []))
            n_p = len(row.get("pacao1_volumes_mb", []))
            rate = row.get("pacao1_download_rate_gain")
            used = rate if rate is not None else gain
            what = (
                "mean download-rate gain (both arms finished)"
                if rate is not None
                else ("median volume gain")
            )
            add(
                f"table1_gain_{v}",
                f"PACAO-1 improves the download ({v})",
                f"{ref_gain:+.0%} download rate (Fig. 7)",
                f"{_pct(used)} {what}; {n_l} legacy / {n_p} PACAO-1 trials",
                used is not None and used >= GAIN_SHARE * ref_gain,
            )
            vr = [r for r in ok if r["variant"] == v]
            stress = _stress_times(vr)
            p1 = [r for r in vr if r["arm"] == "pacao1"]
            if stress and p1 and "before" in windows:
                t0 = stress[0]
                # one-way delay of the stressed link = half the stressed path's RTT
                extra = [float(e.get("delay_ms", 0)) for r in p1[:1]
                         for e in r.get("events_applied", []) if float(e["at"]) == t0]  # fmt: skip
                rtt_half = (max(extra) if extra else 0.0) / 1000.0
                firsts = []
                for r in p1:
                    es = [e["t_scenario"] - t0 for e in entry_switches(r) if e["t_scenario"] >= t0]
                    if es:
                        firsts.append(min(es))
                recs_t = [recovery_s(r, t0, windows["before"]) for r in p1]
                rec_ok = [x - t0 for x in recs_t if x is not None]
                sw_med, rec_med = _median(firsts), _median(rec_ok)
                add(
                    f"table1_restore_{v}",
                    "the bandwidth is quickly restored: the switch takes S' plus half an RTT",
                    f"switch {s1 + rtt_half:.1f} s after the stress (S' = {s1:g} s + RTT/2)",
                    f"switch at the user's xTR {_fmt(sw_med)} s after the stress, rate back to "
                    f"{RECOVERED_SHARE:.0%} of its pre-stress mean after {_fmt(rec_med)} s "
                    f"(medians of {len(firsts)}/{len(rec_ok)} of {len(p1)} trials)",
                    sw_med is not None
                    and rec_med is not None
                    and sw_med <= 2 * s1 + rtt_half
                    and len(firsts) == len(p1),
                )
            vl = row.get("legacy_volumes_mb", [])
            vp = row.get("pacao1_volumes_mb", [])
            if len(vl) >= 2 and len(vp) >= 2:
                sds.append((v, float(np.std(vl, ddof=1)), float(np.std(vp, ddof=1))))
        add(
            "table1_variance",
            "the variance is lower with PACAO-1",
            "lower spread of the volume with PACAO-1 (Fig. 7)",
            "; ".join(f"{v}: sd legacy {a:.1f} MB, PACAO-1 {b:.1f} MB" for v, a, b in sds)
            or "not measurable: fewer than 2 trials per arm",
            bool(sds) and all(b < a for _, a, b in sds),
        )
    if "volume_gain_max" in paper:  # Table II
        ref = float(paper["volume_gain_max"])
        for v, row in s["variants"].items():
            gain = row.get("pacao2_volume_gain")
            n = len(row.get("pacao2_volumes_mb", []))
            add(
                f"table2_gain_{v}",
                "PACAO-2 (switching + migration) improves the TCP volume",
                f"up to {ref:+.0%} (Fig. 9)",
                f"{_pct(gain)} median volume gain over legacy ({n} PACAO-2 trials)",
                gain is not None and gain >= GAIN_SHARE * ref,
            )
            wname = "first-stress"
            p1 = row.get(f"pacao1_mbps_{wname}")
            p2 = row.get(f"pacao2_mbps_{wname}")
            lg = row.get(f"legacy_mbps_{wname}")
            add(
                f"table2_pacao1_affected_{v}",
                "PACAO-1 is heavily affected by the overloaded inter-DC links",
                "PACAO-1 well below PACAO-2 after the switch (Fig. 8)",
                f"{wname} window: PACAO-1 {_fmt(p1)}, PACAO-2 {_fmt(p2)}, legacy {_fmt(lg)} "
                "Mbit/s (medians)",
                p1 is not None and p2 is not None and p1 <= AFFECTED_SHARE * p2,
            )
            vr = [r for r in ok if r["variant"] == v and r["traffic"] == "tcp"]
            stress = _stress_times(vr)
            if stress and "before" in windows:
                t0 = stress[0]
                end = stress[1] if len(stress) > 1 else float(meta["duration_s"])
                rec = {}
                for arm in ("pacao1", "pacao2"):
                    ts = [recovery_s(r, t0, windows["before"], LAPSE_SHARE)
                          for r in vr if r["arm"] == arm]  # fmt: skip
                    rec[arm] = _median([x for x in ts if x is not None and x < end])
                migs = [m["duration_s"] for m in row.get("pacao2_migrations", [])
                        if t0 <= m["t_s"] < end]  # fmt: skip
                mig = _median(migs)
                lapse = (
                    rec["pacao2"] - rec["pacao1"]
                    if rec["pacao1"] is not None and rec["pacao2"] is not None
                    else None
                )
                add(
                    f"table2_lapse_{v}",
                    "the lapse between the PACAO-1 and PACAO-2 recoveries is the migration time",
                    "a few seconds: the migration's duration (16 s to LIP6, Table II)",
                    f"back to {LAPSE_SHARE:.0%} of the pre-stress rate at {_fmt(rec['pacao1'])}"
                    f" s (PACAO-1) and {_fmt(rec['pacao2'])} s (PACAO-2): lapse {_fmt(lapse)} s;"
                    f" first migration {_fmt(mig)} s",
                    lapse is not None
                    and mig is not None
                    and abs(lapse - mig) <= max(5.0, 0.3 * mig),
                )
            loss_in = row.get("pacao2_udp_loss_during_migration_pct_median")
            loss_all = row.get("pacao2_udp_loss_pct_median")
            add(
                f"table2_udp_loss_{v}",
                "median UDP loss of about 4 % with PACAO-2",
                f"median {paper.get('udp_loss_median_pct', 4)} % (Fig. 10; our reading: "
                "inside the migrations)",
                f"PACAO-2: {_fmt(loss_in)} % inside migrations, {_fmt(loss_all)} % over the "
                "whole trial (medians)",
                loss_in is not None and LOSS_RANGE[0] <= loss_in <= LOSS_RANGE[1],
            )
            iqr: dict[str, float | None] = {}
            for arm in ("legacy", "pacao1", "pacao2"):
                jit = [i["jitter_ms"] for r in ok if r["variant"] == v and r["arm"] == arm
                       and r["traffic"] == "udp" for i in r["measure"]["intervals"]]  # fmt: skip
                iqr[arm] = _iqr(jit)
            add(
                f"table2_jitter_{v}",
                "PACAO arms are less dispersed in jitter than legacy",
                "lower dispersion around the median for PACAO-1 and PACAO-2 (Fig. 11)",
                "IQR of the per-interval jitter: "
                + ", ".join(f"{a} {_fmt(x)} ms" for a, x in iqr.items()),
                _less(iqr["pacao1"], iqr["legacy"]) and _less(iqr["pacao2"], iqr["legacy"]),
            )
    return out
