"""The paper's qualitative claims of Sec. V, checked against a reproduce run.

Every value is computed from the run folder's files (the sweep rows, the headline
settings and per-sample results, the Sec. V-C summary and per-DC table); nothing
here is a number to match. "Roughly x" holds when ours lies within x +/- x/3 (the
rule is stated in each claim). A claim whose inputs the run does not have (a
deployment left out, or per-sample results a partitioned run does not collect) is
reported as not computed, with ``holds`` False (:func:`not_computed` lists them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacao.sim.network import throughput_mbps

TITLES = {"france_isp": "France/ISP", "europe_ott": "Europe/OTT"}
#: CDFs "overlap": medians of the DC counts other than 64 within this relative spread.
OVERLAP = 0.10
#: A user "improves" when its mean throughput rises by more than this fraction.
IMPROVES = 1e-6


def roughly(x: float, paper: float) -> bool:
    """Within paper +/- paper/3."""
    return bool(abs(x - paper) <= abs(paper) / 3.0)


def _claim(cid: str, claim: str, paper: str, ours: str, holds: bool) -> dict[str, Any]:
    return {"id": cid, "claim": claim, "paper": paper, "ours": ours, "holds": bool(holds)}


NOT_COMPUTED = "not computed: "
#: Why a partitioned run computes no per-sample claim.
PER_SAMPLE = (
    "needs the per-sample headline results (results/headline_<use case>.parquet), which a "
    "partitioned run does not collect in one process"
)


def _missing(cid: str, claim: str, paper: str, what: str) -> dict[str, Any]:
    return _claim(cid, claim, paper, NOT_COMPUTED + what, False)


def not_computed(claims: list[dict[str, Any]]) -> dict[str, str]:
    """{claim id: why} of the claims the run could not compute."""
    return {
        c["id"]: c["ours"].removeprefix(NOT_COMPUTED)
        for c in claims
        if c["ours"].startswith(NOT_COMPUTED)
    }


def per_dc_gains(sweep: pd.DataFrame, use_case: str, bound: str) -> pd.DataFrame:
    """Per DC count: legacy and best PACAO-2 median RTT and throughput, their gains."""
    rows = []
    sw = sweep[(sweep.use_case == use_case) & (sweep.bound == bound)]
    for n, g in sw.groupby("n_dcs"):
        leg = g[g.policy == "legacy"]
        p2 = g[g.policy == "pacao2"]
        if leg.empty or p2.empty:
            continue
        best = p2.sort_values(["median_rtt_ms", "s1", "s2"], kind="stable").iloc[0]
        lg = leg.iloc[0]
        rows.append(
            {
                "n_dcs": int(n),
                "legacy_rtt": float(lg.median_rtt_ms),
                "pacao2_rtt": float(best.median_rtt_ms),
                "gain": float(best.median_throughput_mbps / lg.median_throughput_mbps - 1.0),
                "latency_gain": float(1.0 - best.median_rtt_ms / lg.median_rtt_ms),
            }
        )
    return pd.DataFrame(rows)


def user_improvement(user: np.ndarray, base: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """(share of users whose mean throughput improves, their median relative improvement);
    ``user`` is each sample's user index (0, 1, ... in user-id order)."""
    n_users = int(user.max()) + 1
    w = np.bincount(user, minlength=n_users).astype(np.float64)
    mb = np.bincount(user, weights=throughput_mbps(base), minlength=n_users) / w
    mn = np.bincount(user, weights=throughput_mbps(new), minlength=n_users) / w
    rel = mn / mb - 1.0
    up = rel > IMPROVES
    return float(up.mean()), float(np.median(rel[up])) if up.any() else 0.0


@dataclass(frozen=True)
class _Head:
    """A headline configuration's settings and, when the run has them, per-sample RTTs."""

    n_dcs: int
    bound_ms: float
    user: np.ndarray | None
    rtt: dict[str, np.ndarray] | None


def _heads(out: Path, per_sample: bool) -> dict[str, _Head]:
    res = out / "results"
    settings = json.loads((res / "headline.json").read_text())
    heads = {}
    for uc, s in settings.items():
        user = rtt = None
        if per_sample:
            df = pd.read_parquet(
                res / f"headline_{uc}.parquet",
                columns=["user_id", "legacy_rtt_ms", "pacao1_rtt_ms"],
            )
            user = np.unique(df["user_id"].to_numpy(np.int64), return_inverse=True)[1]
            rtt = {p: df[f"{p}_rtt_ms"].to_numpy(np.float64) for p in ("legacy", "pacao1")}
        heads[uc] = _Head(int(s["n_dcs"]), float(s["bound_ms"]), user, rtt)
    return heads


def compute_claims(
    run: Path,
    summary: dict[str, dict[str, Any]],
    congestion: dict[str, dict[str, dict[str, Any]]] | None,
    n_users_note: str,
    per_sample: bool = True,
) -> list[dict[str, Any]]:
    """The claims table from the run folder: list of {"id", "claim", "paper", "ours",
    "holds"}. ``summary`` is summary.json's headline part, ``congestion`` its Sec. V-C
    part (None: the stage did not run); ``per_sample`` False for a run without the
    per-sample headline files (partitioned): the claims that need them are not computed."""
    sweep = pd.read_parquet(run / "results" / "sweep.parquet")
    heads = _heads(run, per_sample)
    per_dc = (
        None if congestion is None else pd.read_parquet(run / "results" / "congestion_dcs.parquet")
    )
    out: list[dict[str, Any]] = []
    paper_gain = {"france_isp": 0.40, "europe_ott": 0.30}
    head_dcs = {"france_isp": 64, "europe_ott": 4}
    for uc, pg in paper_gain.items():
        cid = f"gain_{uc}"
        claim = (
            f"PACAO-2 median throughput gain over legacy, {TITLES[uc]} {head_dcs[uc]} DCs, "
            f"is roughly {pg:.0%} (holds within {pg:.0%} +/- {pg / 3:.0%})"
        )
        words = f"a median gain of roughly {pg:.0%} for the {TITLES[uc]} case"
        if uc not in summary:
            out.append(_missing(cid, claim, words, "headline deployment not in this run"))
            continue
        g = float(summary[uc]["pacao2_median_throughput_gain"])
        out.append(_claim(cid, claim, words, f"{g:+.1%}", roughly(g, pg)))
    for uc in paper_gain:
        cid = f"pacao1_limited_{uc}"
        claim = (
            f"PACAO-1 grants limited bandwidth gain to some users, {TITLES[uc]} (holds when "
            "1-50 % of users improve their mean throughput and PACAO-1's median gain is less "
            "than half of PACAO-2's)"
        )
        words = "PACAO1, which grants limited bandwidth gain to some users"
        if uc not in heads:
            out.append(_missing(cid, claim, words, "headline deployment not in this run"))
            continue
        h, s = heads[uc], summary[uc]
        if h.rtt is None or h.user is None:
            out.append(_missing(cid, claim, words, PER_SAMPLE))
            continue
        share, by = user_improvement(h.user, h.rtt["legacy"], h.rtt["pacao1"])
        worse, _ = user_improvement(h.user, h.rtt["pacao1"], h.rtt["legacy"])
        g1 = float(s["pacao1_median_throughput_gain"])
        g2 = float(s["pacao2_median_throughput_gain"])
        holds = 0.01 <= share <= 0.5 and g1 < g2 / 2
        out.append(
            _claim(
                cid,
                claim,
                words,
                f"{share:.1%} of users improve (median +{by:.1%} among them), {worse:.1%} "
                f"lose; median gain PACAO-1 {g1:+.1%} vs PACAO-2 {g2:+.1%}",
                holds,
            )
        )
    for uc, n in head_dcs.items():
        cid = f"largest_gain_dcs_{uc}"
        claim = f"The largest PACAO-2 gain ({TITLES[uc]}, strict bound) is with {n} DCs"
        words = f"the largest gain can be granted with {n} DCs for the {TITLES[uc]} use-case"
        g = per_dc_gains(sweep, uc, "strict")
        g = g[g.n_dcs > 1]
        if g.empty:
            out.append(_missing(cid, claim, words, "no multi-DC deployment in the sweep"))
            continue
        top = g.sort_values(["gain", "n_dcs"], ascending=[False, True]).iloc[0]
        gains = ", ".join(f"{int(r.n_dcs)}: {r.gain:+.1%}" for r in g.itertuples())
        out.append(
            _claim(
                cid,
                claim,
                words,
                f"largest with {int(top.n_dcs)} DCs (gain per DC count {gains})",
                int(top.n_dcs) == n,
            )
        )
    cid = "strict_bound_90pct"
    claim = (
        "90 % of the customers (legacy, France/ISP 64 DCs) have a user-VM latency above the "
        "strict bound (holds within 90 % +/- 30 %)"
    )
    words = "90% of the customers (Fig. 13b) have a user-DC latency greater than the strict bound"
    fr = heads.get("france_isp")
    if fr is None or fr.n_dcs != 64:
        out.append(_missing(cid, claim, words, "France/ISP 64 DCs not in this run"))
    elif fr.rtt is None:
        out.append(_missing(cid, claim, words, PER_SAMPLE))
    else:
        share = float(np.mean(fr.rtt["legacy"] > fr.bound_ms))
        other = ""
        eu = heads.get("europe_ott")
        if eu is not None and eu.rtt is not None:
            other = (
                f"; Europe/OTT {eu.n_dcs} DCs: {float(np.mean(eu.rtt['legacy'] > eu.bound_ms)):.1%}"
            )
        out.append(
            _claim(
                cid,
                claim,
                words,
                f"{share:.1%} of legacy samples above {fr.bound_ms:.1f} ms{other}",
                roughly(share, 0.9),
            )
        )
    cid = "strict_vs_median_5_10pct"
    claim = (
        "France/ISP with many DCs: the strict bound gives a 5-10 % lower PACAO-2 median RTT "
        "than the median bound (holds when the 64-DC decrease is within 5-10 %)"
    )
    words = (
        "Passing from the median to the strict latency bound, a decrease from 5% to 10% in "
        "the median RTT ... in the France/ISP case especially with a high number of DC sites"
    )
    st, md = (
        per_dc_gains(sweep, "france_isp", "strict"),
        per_dc_gains(sweep, "france_isp", "median"),
    )
    if st.empty or md.empty:
        out.append(_missing(cid, claim, words, "France/ISP sweep rows missing"))
    else:
        j = st.merge(md, on="n_dcs", suffixes=("_s", "_m"))
        j["dec"] = 1.0 - j.pacao2_rtt_s / j.pacao2_rtt_m
        many = j[j.n_dcs >= 16]
        txt = ", ".join(f"{int(r.n_dcs)} DCs: {r.dec:+.1%}" for r in many.itertuples())
        at64 = j[j.n_dcs == 64]
        holds = bool(len(at64)) and 0.05 <= float(at64.dec.iloc[0]) <= 0.10
        out.append(_claim(cid, claim, words, f"decrease {txt}", holds))
    cid = "latency_gain_france_isp"
    claim = (
        "France/ISP, 16-64 DCs: about 30 % gain in cloud access latency (PACAO-2 vs legacy "
        "median RTT, strict bound; holds when the 64-DC gain is within 30 % +/- 10 %)"
    )
    words = "providing higher availability as well as 30% gain in the cloud access latency"
    if st.empty:
        out.append(_missing(cid, claim, words, "France/ISP sweep rows missing"))
    else:
        many = st[st.n_dcs >= 16]
        txt = ", ".join(f"{int(r.n_dcs)} DCs: {r.latency_gain:.1%}" for r in many.itertuples())
        at64 = st[st.n_dcs == 64]
        holds = bool(len(at64)) and roughly(float(at64.latency_gain.iloc[0]), 0.30)
        out.append(_claim(cid, claim, words, txt, holds))
    cid = "latency_gain_europe_ott"
    claim = (
        "Europe/OTT, 4 and 8 DCs: about 15 % latency gain under the strict and the median bound "
        "(holds when all four are within 15 % +/- 5 %)"
    )
    words = (
        "a 15% of latency gain (strict and median latency bound) for a DC distribution of 4 and 8"
    )
    vals = []
    for b in ("strict", "median"):
        g = per_dc_gains(sweep, "europe_ott", b)
        for n in (4, 8):
            r = g[g.n_dcs == n]
            if len(r):
                vals.append((b, n, float(r.latency_gain.iloc[0])))
    if len(vals) < 4:
        out.append(_missing(cid, claim, words, "Europe/OTT 4- and 8-DC sweep rows missing"))
    else:
        txt = ", ".join(f"{n} DCs {b}: {x:.1%}" for b, n, x in vals)
        out.append(_claim(cid, claim, words, txt, all(roughly(x, 0.15) for _, _, x in vals)))
    cid = "loose_bound_flat"
    claim = (
        "Under the loose bound the results do not depend on S', S'' (holds when the PACAO-2 "
        "median RTT moves by less than 1 % over the grid in every deployment)"
    )
    words = (
        "under the loose bound, the results are uncorrelated from the values assigned to S' and S''"
    )
    lo = sweep[(sweep.bound == "loose") & (sweep.policy == "pacao2")]
    if lo.empty:
        out.append(_missing(cid, claim, words, "no loose-bound rows"))
    else:
        spread = lo.groupby(["use_case", "n_dcs"]).median_rtt_ms.agg(
            lambda x: x.max() / x.min() - 1
        )
        worst = spread.idxmax()
        out.append(
            _claim(
                cid,
                claim,
                words,
                f"largest spread {float(spread.max()):.2%} ({TITLES[str(worst[0])]}, "
                f"{int(worst[1])} DCs)",
                float(spread.max()) < 0.01,
            )
        )
    out += _vc_claims(congestion, per_dc, n_users_note)
    return out


def _loads(per_dc: pd.DataFrame | None, uc: str, n: int) -> pd.DataFrame | None:
    """One deployment's rows of results/congestion_dcs.parquet in DC order, or None."""
    if per_dc is None:
        return None
    d = per_dc[(per_dc.use_case == uc) & (per_dc.n_dcs == n)]
    return None if d.empty else d.sort_values("dc").reset_index(drop=True)


def _vc_claims(
    congestion: dict[str, dict[str, dict[str, Any]]] | None,
    per_dc: pd.DataFrame | None,
    n_users_note: str,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    absent = "" if congestion is not None else "the congestion-aware stage (Sec. V-C) did not run"
    for uc in TITLES:
        mine = sorted((int(n), s) for n, s in (congestion or {}).get(uc, {}).items())
        cid = f"vc_overlap_{uc}"
        claim = (
            f"Sec. V-C, {TITLES[uc]}: with congestion awareness the RTT CDFs of the DC counts "
            f"other than 64 overlap (holds when their medians lie within {OVERLAP:.0%} of each "
            "other)"
        )
        words = "the CDFs overlap for almost all the cases except with 64 DCs"
        rest = [(n, s) for n, s in mine if n != 64]
        if len(rest) < 2:
            out.append(
                _missing(cid, claim, words, absent or "the V-C stage has fewer than 2 such counts")
            )
        else:
            meds = [float(s["median_rtt_ms"]) for _, s in rest]
            spread = max(meds) / min(meds) - 1.0
            txt = ", ".join(f"{n}: {m:.1f}" for (n, _), m in zip(rest, meds, strict=True))
            out.append(
                _claim(
                    cid,
                    claim,
                    words,
                    f"medians (ms) {txt}: spread {spread:.1%} ({n_users_note})",
                    spread <= OVERLAP,
                )
            )
        cid = f"vc_64dcs_half_over_75ms_{uc}"
        claim = (
            f"Sec. V-C, {TITLES[uc]} 64 DCs: 50 % of users have an RTT above 75 ms (holds within "
            "50 % +/- 17 %)"
        )
        words = "with 64 DCs, where 50% of the users have a RTT that is greater than 75 ms"
        r64 = next((s for n, s in mine if n == 64), None)
        if r64 is None:
            out.append(
                _missing(cid, claim, words, absent or "no 64-DC deployment in the V-C stage")
            )
        else:
            share = float(r64["share_over_75ms"])
            out.append(
                _claim(cid, claim, words, f"{share:.1%} ({n_users_note})", roughly(share, 0.5))
            )
    for uc, n in (("france_isp", 64), ("europe_ott", 4)):
        cid = f"vc_balanced_{uc}"
        claim = (
            f"Sec. V-C, {TITLES[uc]} {n} DCs: load better balanced with congestion awareness "
            "(holds when the coefficient of variation of users per DC is lower)"
        )
        words = "The load is better balanced over all the available DCs under congestion awareness"
        d = _loads(per_dc, uc, n)
        if d is None:
            out.append(
                _missing(cid, claim, words, absent or f"{n}-DC deployment not in the V-C stage")
            )
            continue
        aware, unaware = d["users_aware"].to_numpy(), d["users_unaware"].to_numpy()
        cv_a = float(np.std(aware) / np.mean(aware))
        cv_u = float(np.std(unaware) / np.mean(unaware))
        out.append(
            _claim(
                cid,
                claim,
                words,
                f"coefficient of variation {cv_u:.2f} unaware, {cv_a:.2f} aware ({n_users_note})",
                cv_a < cv_u,
            )
        )
    cid = "vc_east_europe_ott"
    claim = (
        "Sec. V-C, Europe/OTT 4 DCs: congestion awareness moves load to the eastern DCs (holds "
        "when the eastern half's share of users is higher aware than unaware)"
    )
    words = "In the Europe/OTT case, this leads to higher load on the eastern DCs"
    d = _loads(per_dc, "europe_ott", 4)
    if d is None:
        out.append(_missing(cid, claim, words, absent or "4-DC Europe/OTT not in the V-C stage"))
    else:
        aware, unaware = d["users_aware"].to_numpy(), d["users_unaware"].to_numpy()
        order = np.argsort(d["lon"].to_numpy(), kind="stable")
        east = order[2:]
        sh_u = float(unaware[east].sum() / unaware.sum())
        sh_a = float(aware[east].sum() / aware.sum())
        names = ", ".join(str(d["name"][i]) for i in east)
        out.append(
            _claim(
                cid,
                claim,
                words,
                f"eastern DCs ({names}) hold {sh_u:.1%} unaware, {sh_a:.1%} aware ({n_users_note})",
                sh_a > sh_u,
            )
        )
    return out
