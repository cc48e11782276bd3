"""PACAO policies in the simulator: timing settings and decision tables.

Every decision is made by :func:`pacao.optimize.penalty.choose`, the kernel the
controller uses, with one criterion (rtt, weight 1) bounded by the SLA:

* RLOC switching (step 1): candidates are the DC entry points a, the metric
  the RTT user -> a -> VM with the VM where it is.
* VM placement (step 2): candidates are the DCs d, the metric the RTT the user
  would see with the VM at d, reached through d's best entry (step 1 on d).

The current path is kept unless the decision ranks strictly before it
(:meth:`Decisions.improves`): ties never move anything.

Users sit at about a thousand distinct positions (LAC centres), so each
decision is tabulated once per (position, current entry, current VM) and the
engine only looks it up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from pacao.errors import InputError
from pacao.optimize.penalty import choose, penalties_from_ratios
from pacao.sim.network import Network

IntArray = NDArray[np.int64]
WEIGHTS = np.array([1.0])
#: Largest (position, entry, VM) table: 2^26 states, 192 MiB for both tables.
MAX_TABLE = 1 << 26
#: Relative RTT difference below which two paths are equal (float noise of the sums).
TIE_TOLERANCE = 1e-9
#: Positions per chunk of the (position, entry, VM) tables: 64 x 64 x 64 x 8 B = 2 MiB.
CHUNK_POSITIONS = 64


class Policy(StrEnum):
    LEGACY = "legacy"
    PACAO1 = "pacao1"
    PACAO2 = "pacao2"


@dataclass(frozen=True)
class Timing:
    """When the controller acts.

    relative=True: ``s1`` is S' as a fraction of the user's residence time in
    the current LAC and ``s2`` is S'' as a fraction of S' (the paper's grids).
    relative=False: both in seconds, 0 < S'' < S'. ``migration_s`` is how long a
    VM migration takes (0: instantaneous, the paper's default); meanwhile the
    user keeps the old path.
    """

    s1: float
    s2: float
    relative: bool = True
    migration_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("s1", "s2", "migration_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise InputError(name, v, "expected a finite number")
        if self.migration_s < 0:
            raise InputError("migration_s", self.migration_s, "expected seconds >= 0")
        if self.relative:
            if not 0 < self.s1 < 1:
                raise InputError("s1", self.s1, "relative S' is a fraction in (0, 1)")
            if not 0 < self.s2 < 1:
                raise InputError("s2", self.s2, "relative S'' is a fraction of S' in (0, 1)")
        else:
            if self.s1 <= 0:
                raise InputError("s1", self.s1, "absolute S' is a number of seconds > 0")
            if not 0 < self.s2 < self.s1:
                raise InputError("s2", self.s2, f"absolute S'' must lie in (0, S'={self.s1:g})")

    def label(self) -> str:
        if self.relative:
            return f"S'={self.s1:.0%} of residence, S''={self.s2:.0%} of S'"
        return f"S'={self.s1:g} s, S''={self.s2:g} s"


@dataclass(frozen=True)
class Decisions:
    """Tabulated decisions for one deployment and one SLA bound.

    Indexed by the flat state key ``(position * D + entry) * D + vm``:

    * ``step1[key]``: -1 when the SLA holds on that path (nothing to do), else the
      entry after RLOC switching (the current one when no entry ranks strictly
      before it);
    * ``step2[key]``: whether VM placement acts (SLA violated and the placement
      ranks strictly before the current path), moving to ``place_entry[p]``,
      ``place_vm[p]``.

    ``entry[p, v]`` is the best entry for a VM at v, ``nearest[p]`` the DC
    nearest to p (legacy placement at the first position).
    """

    bound_ms: float
    n_dcs: int
    entry: IntArray
    place_vm: IntArray
    place_entry: IntArray
    nearest: IntArray
    step1: NDArray[np.int16]
    step2: NDArray[np.bool_]

    def violated(self, rtt_ms: NDArray[np.float64]) -> NDArray[np.bool_]:
        """SLA violated: the penalty T = ceil(rtt / bound) of (3) exceeds 1."""
        out: NDArray[np.bool_] = penalties_from_ratios(rtt_ms / self.bound_ms) > 1.0
        return out

    def improves(
        self, current_rtt: NDArray[np.float64], proposed_rtt: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        """Whether the proposed path ranks strictly before the current one.

        Both go through the same ranking with the current path listed first,
        so a tie keeps it: a user standing in a DC's LAC sees the same RTT through
        that DC or straight to its VM, and switching on such ties would only flap.
        Gains below a relative ``TIE_TOLERANCE`` are float noise and count as ties.
        """
        cur = current_rtt * (1.0 - TIE_TOLERANCE)
        cur, new = np.broadcast_arrays(cur, proposed_rtt)
        ratios = np.stack([cur, new], axis=-1)[..., None] / self.bound_ms
        idx, _ = choose(ratios, WEIGHTS, np.ones(ratios.shape[:-1], dtype=bool))
        out: NDArray[np.bool_] = idx == 1
        return out

    def key(
        self, pos: NDArray[np.integer], entry: NDArray[np.integer], vm: NDArray[np.integer]
    ) -> IntArray:
        d = self.n_dcs
        out: IntArray = (pos.astype(np.int64) * d + entry) * d + vm
        return out


def decision_tables(net: Network, bound_ms: float) -> Decisions:
    """Solve (1)-(3) for every position and path with the shared kernel."""
    if not math.isfinite(bound_ms) or bound_ms <= 0:
        raise InputError("bound_ms", bound_ms, "a latency bound > 0 ms")
    n_pos, n_dc = net.user_dc.shape
    if n_pos * n_dc * n_dc > MAX_TABLE:
        raise InputError(
            "positions",
            n_pos,
            f"at most {MAX_TABLE // (n_dc * n_dc):,} distinct positions with {n_dc} DCs: "
            "give LAC-level positions (LAC centres), as the paper's traces",
        )
    entry = np.empty((n_pos, n_dc), dtype=np.int64)
    best_rtt = np.empty((n_pos, n_dc), dtype=np.float64)
    usable = np.ones((1, 1, n_dc), dtype=bool)
    for s in range(0, n_pos, CHUNK_POSITIONS):
        ud = net.user_dc[s : s + CHUNK_POSITIONS]
        # path[p, v, a] = RTT(p, a) + RTT(a, v): candidates a on the last axis.
        path = ud[:, None, :] + net.dc_dc.T[None, :, :]
        idx, _ = choose((path / bound_ms)[..., None], WEIGHTS, np.broadcast_to(usable, path.shape))
        entry[s : s + CHUNK_POSITIONS] = idx
        best_rtt[s : s + CHUNK_POSITIONS] = np.take_along_axis(path, idx[..., None], -1)[..., 0]
    vm, _ = choose((best_rtt / bound_ms)[..., None], WEIGHTS, np.ones((n_pos, n_dc), dtype=bool))
    place_entry = np.take_along_axis(entry, vm[:, None], -1)[:, 0]
    dec = Decisions(
        bound_ms=float(bound_ms),
        n_dcs=n_dc,
        entry=entry,
        place_vm=vm,
        place_entry=place_entry,
        nearest=np.argmin(net.user_dc, axis=1).astype(np.int64),
        step1=np.empty(n_pos * n_dc * n_dc, dtype=np.int16),
        step2=np.empty(n_pos * n_dc * n_dc, dtype=bool),
    )
    place_rtt = np.take_along_axis(best_rtt, vm[:, None], -1)  # (P, 1)
    cur_entry = np.arange(n_dc)[None, :, None]
    for s in range(0, n_pos, CHUNK_POSITIONS):
        ud = net.user_dc[s : s + CHUNK_POSITIONS]
        # rtt[p, a, v] = RTT(p, a) + RTT(a, v) for every current path (a, v).
        rtt = ud[:, :, None] + net.dc_dc[None, :, :]
        switch_to = entry[s : s + CHUNK_POSITIONS][:, None, :]  # best entry for v
        switch_rtt = best_rtt[s : s + CHUNK_POSITIONS][:, None, :]
        viol = dec.violated(rtt)
        moved = dec.improves(rtt, switch_rtt)
        step1 = np.where(viol, np.where(moved, switch_to, cur_entry), -1)
        act = viol & dec.improves(rtt, place_rtt[s : s + CHUNK_POSITIONS][:, :, None])
        lo, hi = s * n_dc * n_dc, (s + len(ud)) * n_dc * n_dc
        dec.step1[lo:hi] = step1.ravel()
        dec.step2[lo:hi] = act.ravel()
    return dec
