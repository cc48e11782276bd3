"""The legacy deployment of Sec. V-B: where each user's entry and VM sit all day.

Readings (docs/simulation.md, "Legacy"):

* ``home-entry-random-vm`` (the paper's, default): the entry RLOC is the DC
  nearest to the user's first position; the VM sits at a DC drawn uniformly
  over the deployment's DCs, without regard to the user. The draw is seeded,
  one per (use case, DC count, user) and shared by every policy, bound and
  S'/S'' point: it is a hash of (seed, use case, DC count, user id), so a user
  gets the same DC in every trace variant of a run.
* ``nearest-start``: entry and VM at the DC nearest to the first position.
* ``random-dc``: entry and VM at the drawn DC.

Every run folder holds the placement as ``legacy_placement.parquet``.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pacao.errors import InputError
from pacao.sim.engine import Start, Trajectories
from pacao.sim.network import Network

I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]
#: Use-case codes mixed into the draw (stable: changing them changes every draw).
USE_CASE_CODE = {"france_isp": 1, "europe_ott": 2}


class LegacyReading(StrEnum):
    HOME_ENTRY_RANDOM_VM = "home-entry-random-vm"
    NEAREST_START = "nearest-start"
    RANDOM_DC = "random-dc"


LEGACY_READINGS = tuple(r.value for r in LegacyReading)


def reading(value: str) -> LegacyReading:
    """The reading named ``value``, or an InputError listing the allowed ones."""
    try:
        return LegacyReading(value)
    except ValueError:
        raise InputError("--legacy", value, f"one of {', '.join(LEGACY_READINGS)}") from None


def _splitmix64(x: U64) -> U64:
    """The splitmix64 finaliser: a well-mixed 64-bit hash (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: U64 = z ^ (z >> np.uint64(31))
    return out


def drawn_dc(user_ids: NDArray[np.integer], seed: int, use_case: str, n_dcs: int) -> I64:
    """The uniformly drawn DC index of each user: splitmix64 of (seed, use case, DC count,
    user id), modulo the DC count (bias below 2^-57 for 64 DCs)."""
    if use_case not in USE_CASE_CODE:
        raise InputError("use_case", use_case, f"one of {', '.join(USE_CASE_CODE)}")
    if n_dcs < 1:
        raise InputError("n_dcs", n_dcs, "at least one DC")
    key = _splitmix64(np.array([seed], dtype=np.uint64))
    key = _splitmix64(key ^ np.uint64(USE_CASE_CODE[use_case] << 16 | n_dcs))
    ids = np.asarray(user_ids).astype(np.int64).view(np.uint64)
    h = _splitmix64(_splitmix64(ids ^ key[0]))
    out: I64 = (h % np.uint64(n_dcs)).astype(np.int64)
    return out


def legacy_start(tr: Trajectories, net: Network, legacy: str, seed: int, use_case: str) -> Start:
    """Every user's legacy entry and VM DC for one deployment under a reading."""
    r = reading(legacy)
    nearest = np.argmin(net.user_dc[tr.pos[tr.first]], axis=1).astype(np.int64)
    if r is LegacyReading.NEAREST_START:
        return Start(nearest, nearest.copy())
    drawn = drawn_dc(tr.user_ids, seed, use_case, net.n_dcs)
    if r is LegacyReading.RANDOM_DC:
        return Start(drawn, drawn.copy())
    return Start(nearest, drawn)


def placement_table(
    tr: Trajectories, use_case: str, names: list[str], start: Start
) -> pd.DataFrame:
    """legacy_placement rows of one deployment: use_case, n_dcs, user_id, entry_dc, vm_dc
    (DC names as in dcs.csv)."""
    arr = np.asarray(names, dtype=object)
    return pd.DataFrame(
        {
            "use_case": use_case,
            "n_dcs": len(names),
            "user_id": tr.user_ids.astype(np.int64),
            "entry_dc": arr[start.entry],
            "vm_dc": arr[start.vm],
        }
    )
