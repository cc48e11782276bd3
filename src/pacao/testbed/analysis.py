"""Results of `pacao testbed run` as data: the raw trial records under ``raw/``, read
back and summarised (summary.json, per-interval CSVs, the paper's claims checked).

Every scenario run into the same --out folder keeps its raw records under
``raw/<experiment>/``; the summary covers all of them, so `run --scenario table1`
then `--scenario table2` gives one summary (and one report: pacao.report.testbed).
All numbers are computed from the records (nothing is copied from the paper
except the reference figures the experiment files state under ``paper``).
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

import numpy as np


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


def trial_key(variant: str, traffic: str, arm: str, rep: int) -> str:
    """A trial's name in summaries and logs (trials.Trial.key, and stored records here)."""
    return f"{variant}/{traffic}-{arm}-r{rep}"


def _trial_key(rec: dict[str, Any]) -> str:
    return trial_key(rec["variant"], rec["traffic"], rec["arm"], rec["rep"])


def rebuild(out: Path) -> dict[str, Any]:
    """summary.json and the intervals CSVs from out/raw/ (also on stored records alone)."""
    everything = load_all(out)
    summary: dict[str, Any] = {}
    for name, (meta, all_recs) in everything.items():
        recs = [r for r in all_recs if "error" not in r]
        failed = [{"trial": _trial_key(r), "error": r["error"]} for r in all_recs if "error" in r]
        if not recs:
            summary[name] = {"failed_trials": failed}
            continue
        summary[name] = summarize(meta, recs)
        summary[name]["claims"] = claims(meta, recs, summary[name])
        summary[name]["failed_trials"] = failed
        # measured to their end, but their iperf3 was stopped after it (trials.run_trial)
        summary[name]["stopped_clients"] = [_trial_key(r) for r in recs if "client_stopped" in r]
        write_csv(out / f"{name}_intervals.csv", recs)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def fmt(x: Any, kind: str = "") -> str:
    """A number as the summary's claims and the report show it (n/a for None/NaN; other
    values HTML-escaped)."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if kind == "pct":
        return f"{100 * x:+.0f} %"
    if kind == "list":
        return ", ".join(f"{v:.1f}" for v in x)
    return f"{x:.2f}" if isinstance(x, float) else html.escape(str(x))


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
                    f"switch at the user's xTR {fmt(sw_med)} s after the stress, rate back to "
                    f"{RECOVERED_SHARE:.0%} of its pre-stress mean after {fmt(rec_med)} s "
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
                f"{wname} window: PACAO-1 {fmt(p1)}, PACAO-2 {fmt(p2)}, legacy {fmt(lg)} "
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
                    f"back to {LAPSE_SHARE:.0%} of the pre-stress rate at {fmt(rec['pacao1'])}"
                    f" s (PACAO-1) and {fmt(rec['pacao2'])} s (PACAO-2): lapse {fmt(lapse)} s;"
                    f" first migration {fmt(mig)} s",
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
                f"PACAO-2: {fmt(loss_in)} % inside migrations, {fmt(loss_all)} % over the "
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
                + ", ".join(f"{a} {fmt(x)} ms" for a, x in iqr.items()),
                _less(iqr["pacao1"], iqr["legacy"]) and _less(iqr["pacao2"], iqr["legacy"]),
            )
    return out
