"""The decision's settings, SLAs and reason codes, shared by both steps and their callers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


class Reason(IntEnum):
    """Why a user got the decision it got (stored with every plan)."""

    SLA_MET = 0
    SWITCH = 1
    MIGRATE = 2
    CURRENT_IS_BEST = 3
    GAIN_BELOW_MARGIN = 4
    DWELL = 5
    COOLDOWN = 6
    PINNED = 7
    NOT_WORTH = 8
    CAP_DC = 9
    CAP_TOTAL = 10
    CAPACITY = 11
    NO_CANDIDATE = 12
    NO_DATA = 13


REASON_TEXT: dict[Reason, str] = {
    Reason.SLA_MET: "SLA met on the current path: store and wait (step 1.1)",
    Reason.SWITCH: "SLA violated: switch entry RLOC (step 1.2)",
    Reason.MIGRATE: "SLA still violated after S'': migrate the VM (step 2)",
    Reason.CURRENT_IS_BEST: "no candidate ranks strictly before the current one",
    Reason.GAIN_BELOW_MARGIN: "gain below the minimum gain margin",
    Reason.DWELL: "current entry held for less than the minimum dwell time",
    Reason.COOLDOWN: "user's last migration is within the cooldown",
    Reason.PINNED: "the VM is pinned",
    Reason.NOT_WORTH: "gain over the expected stay does not pay the migration time",
    Reason.CAP_DC: "concurrent-migration cap of a DC reached",
    Reason.CAP_TOTAL: "total concurrent-migration cap reached",
    Reason.CAPACITY: "destination filled by another migration of this cycle",
    Reason.NO_CANDIDATE: "no available candidate",
    Reason.NO_DATA: "current entry not measured and no candidate measured meeting the SLA",
}


#: What Step 1 ranks entries by (config key ``policy.entry_metric``).
ENTRY_METRICS = ("path", "user-rloc")


@dataclass(frozen=True)
class Params:
    """Anti-flapping and migration settings, and Step 1's ranking metric (config key
    ``policy``); ``entry_metric`` is one of :data:`ENTRY_METRICS`."""

    min_dwell_s: float = 30.0
    min_gain: float = 0.0
    min_gain_ratio: float = 0.2
    cooldown_s: float = 300.0
    migration_cost_weight: float = 1.0
    max_migrations_per_dc: int = 1
    max_migrations_total: int = 4
    entry_metric: str = "path"

    def __post_init__(self) -> None:
        if self.entry_metric not in ENTRY_METRICS:
            raise ValueError(
                f"policy.entry_metric: {self.entry_metric!r} is invalid; one of "
                + ", ".join(ENTRY_METRICS)
            )


@dataclass(frozen=True)
class Sla:
    """Per-user weights alpha_k and bounds M_k, shape (users, criteria)."""

    weights: FloatArray
    bounds: FloatArray
