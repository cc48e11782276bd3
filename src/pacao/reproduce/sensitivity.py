"""What the headline gains rest on (beyond the paper): the same headline deployments and
S', S'' as the run, with one reading or input changed at a time.

* every legacy reading x Step 1 entry metric;
* every user frozen at its first position all day (the gain left is the part
  that corrects a bad legacy placement; the rest follows mobility);
* the other Europe/OTT site rules (pacao.sim.geography.EUROPE_RULES);
* the traces restricted to active sessions (pacao.sim.activity).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pacao.decision import ENTRY_METRICS
from pacao.reproduce.results import Headline, Inputs
from pacao.sim.engine import Trajectories, legacy, prepare, schedule, simulate
from pacao.sim.legacy import LEGACY_READINGS, legacy_start
from pacao.sim.network import throughput_mbps
from pacao.sim.policy import Policy
from pacao.sim.sweep import Deployment, deployment

if TYPE_CHECKING:
    from pacao.reproduce.pipeline import Options


def _gains(tr: Trajectories, dep: Deployment, head: Headline) -> dict[str, float]:
    """Medians and median-throughput gains of legacy / PACAO-1 / PACAO-2 at the run's
    headline S', S'' on one deployment (strict bound)."""
    dec = dep.decisions["strict"]
    sched = schedule(tr, head.point.timing())
    rtt = {
        "legacy": legacy(tr, dep.net, dep.start).rtt_ms,
        "pacao1": simulate(tr, sched, dep.net, dec, Policy.PACAO1, dep.start).rtt_ms,
        "pacao2": simulate(tr, sched, dep.net, dec, Policy.PACAO2, dep.start).rtt_ms,
    }
    thr = {k: float(np.median(throughput_mbps(v))) for k, v in rtt.items()}
    return {
        "legacy_median_rtt_ms": float(np.median(rtt["legacy"])),
        "pacao2_median_rtt_ms": float(np.median(rtt["pacao2"])),
        "pacao1_gain": thr["pacao1"] / thr["legacy"] - 1.0,
        "pacao2_gain": thr["pacao2"] / thr["legacy"] - 1.0,
    }


def _dep(
    tr: Trajectories, uc: str, lat: np.ndarray, lon: np.ndarray, opts: Options, **kw: Any
) -> Deployment:
    o = replace(opts, **kw)
    return deployment(
        tr, uc, lat, lon, params=o.params, legacy=o.legacy, seed=o.seed, bounds=("strict",)
    )


def run_sensitivity(
    traces: pd.DataFrame,
    tr: Trajectories,
    inputs: Inputs,
    opts: Options,
    heads: dict[str, Headline],
    advance: Callable[[], None] = lambda: None,
) -> pd.DataFrame:
    """One row per (group, variant, use case): medians and gains, ``run`` marking the
    variant the main run used."""
    rows: list[dict[str, Any]] = []

    def add(
        group: str, variant: str, uc: str, n: int, g: dict[str, float], run: bool, **extra: Any
    ) -> None:
        rows.append(
            {
                "group": group,
                "variant": variant,
                "use_case": uc,
                "n_dcs": n,
                "run": run,
                **g,
                **extra,
            }
        )

    sites = {}
    for uc, h in heads.items():
        d = inputs.dcs[(inputs.dcs.use_case == uc) & (inputs.dcs.n_dcs == h.dep.n_dcs)]
        sites[uc] = (d["lat"].to_numpy(np.float64), d["lon"].to_numpy(np.float64))
    # Legacy reading x entry metric: one decision table per metric, one start per reading.
    for uc, h in heads.items():
        for metric in ENTRY_METRICS:
            dep = _dep(tr, uc, *sites[uc], opts, entry_metric=metric)
            for leg in LEGACY_READINGS:
                d2 = replace(dep, start=legacy_start(tr, dep.net, leg, opts.seed, uc))
                add(
                    "readings",
                    f"legacy {leg}, entry metric {metric}",
                    uc,
                    dep.n_dcs,
                    _gains(tr, d2, h),
                    leg == opts.legacy and metric == opts.entry_metric,
                    legacy=leg,
                    entry_metric=metric,
                )
        advance()
    # Users frozen at their first position.
    first = traces.groupby("user_id", sort=False)[["lat", "lon", "lac"]].transform("first")
    frozen = traces.assign(lat=first["lat"], lon=first["lon"], lac=first["lac"])
    ftr = prepare(frozen)
    for uc, h in heads.items():
        dep = _dep(ftr, uc, *sites[uc], opts)
        add("frozen", "frozen at the first position", uc, dep.n_dcs, _gains(ftr, dep, h), False)
    advance()
    # Europe/OTT site rules.
    if "europe_ott" in heads:
        from pacao.sim.geography import EUROPE_RULES, build_lacs, dc_sites

        h = heads["europe_ott"]
        lacs = build_lacs(opts.seed)
        for rule in EUROPE_RULES:
            d = dc_sites("europe_ott", h.dep.n_dcs, lacs, seed=opts.seed, europe=rule)
            dep = _dep(tr, "europe_ott", d["lat"].to_numpy(), d["lon"].to_numpy(), opts)
            add(
                "geography",
                f"rule {rule}: " + ", ".join(d["name"].astype(str)),
                "europe_ott",
                dep.n_dcs,
                _gains(tr, dep, h),
                rule == opts.europe,
            )
    advance()
    # Active sessions only.
    from pacao.sim.activity import active_samples

    act = active_samples(traces, seed=opts.seed)
    if len(act):
        atr = prepare(act)
        for uc, h in heads.items():
            dep = _dep(atr, uc, *sites[uc], opts)
            add(
                "active",
                f"active sessions ({atr.n_users:,} users, {atr.n_samples:,} samples kept)",
                uc,
                dep.n_dcs,
                _gains(atr, dep, h),
                False,
                users=atr.n_users,
                samples=atr.n_samples,
            )
    advance()
    return pd.DataFrame(rows)
