"""What the pipeline holds in memory between its stages: the inputs it simulates and the
per-sample results of each use case's headline configuration. The report never sees
them: it reads the files the stages write (pacao.report.results)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pacao.sim.network import throughput_mbps
from pacao.sim.sweep import Deployment, GridPoint


@dataclass(frozen=True)
class Inputs:
    """Traces (user_id, t, lat, lon, lac), the LAC table and DC sites per deployment.

    ``dcs`` has columns use_case, n_dcs, name, lat, lon.
    """

    traces: pd.DataFrame
    lacs: pd.DataFrame
    dcs: pd.DataFrame
    source: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Headline:
    """The per-sample results of one use case's headline configuration."""

    use_case: str
    dep: Deployment
    point: GridPoint
    rtt: dict[str, np.ndarray]
    paper_setting: dict[str, float]
    switches: dict[str, int]
    migrations: dict[str, int]

    def summary(self) -> dict[str, float | int]:
        med = {p: float(np.median(r)) for p, r in self.rtt.items()}
        thr = {p: float(np.median(throughput_mbps(r))) for p, r in self.rtt.items()}
        return {
            "n_dcs": self.dep.n_dcs,
            "legacy_median_rtt_ms": med["legacy"],
            "pacao1_median_rtt_ms": med["pacao1"],
            "pacao2_median_rtt_ms": med["pacao2"],
            "pacao1_median_throughput_gain": thr["pacao1"] / thr["legacy"] - 1.0,
            "pacao2_median_throughput_gain": thr["pacao2"] / thr["legacy"] - 1.0,
        }
