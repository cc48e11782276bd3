"""What a reproduce run hands its report: the inputs it simulated and the per-sample
results of each use case's headline configuration.

They live with the report so that the pipeline (pacao.reproduce) depends on the
report and never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

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
    ideal: np.ndarray
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
