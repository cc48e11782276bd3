"""PACAO policies in the simulator: timing settings and a memo of the controller's decisions.

The decisions are the controller's own: :func:`pacao.decision.decide_entry`
(step 1, RLOC switching) and :func:`pacao.decision.decide_migration`
(step 2, VM placement), the functions the deployed service calls every S', with
one criterion (rtt, weight 1) bounded by the SLA and the simulated time as
``now``:

* step 1: candidates are the DC entry points a; the SLA check is on the RTT
  user -> a -> VM with the VM where it is, and the entries are ranked by
  ``Params.entry_metric``: the user<->a RTT (``user-rloc``, the paper's eq. 3,
  :data:`PAPER_PARAMS`) or the whole path (``path``);
* step 2: candidates are the DCs d, the metric the RTT the user would get
  with the VM at d through d's best entry (step 1's choice for a VM at d).

Users sit at about a thousand distinct positions (LAC centres), and with the
paper's settings (:data:`PAPER_PARAMS`: no dwell time, cooldown or caps, which
depend on a user's history or on the other users) a decision depends only on
(position, current entry, current VM). So :func:`decision_tables` calls the
controller's functions once on every such state and the engine looks the
answers up: a memo of the deployed code, not a second implementation. A tie
keeps the current path (the controller moves only to a candidate that ranks
strictly before it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from pacao import decision
from pacao.decision import (
    DcLoad,
    EntryInputs,
    MigrationInputs,
    Params,
    Sla,
)
from pacao.errors import InputError
from pacao.sim.network import Network
from pacao.validate import in_range, non_negative, positive

IntArray = NDArray[np.int64]
#: Largest (position, entry, VM) table: 2^26 states, 256 MiB for both int16 tables.
MAX_TABLE = 1 << 26
#: Candidate metrics per controller call: 2^20 x 8 B = 8 MiB.
CHUNK_VALUES = 1 << 20
#: The simulated time passed as ``now``: no rule the simulator accepts reads it (the
#: history-dependent ones are refused by check_tabulable), and every history is "never".
NOW = 0.0
#: No cap binds in a table: every state is one hypothetical user, alone in its cycle.
UNCAPPED = 1 << 62
#: The paper's procedure (Sec. III-D) without the controller's extra rules: no dwell
#: time, no gain margin, no cooldown, no caps; migrations take no time in the
#: decision (the engine models their duration, see :class:`Timing`), so the
#: migration-cost rule passes every strictly better placement.
PAPER_PARAMS = Params(
    min_dwell_s=0.0,
    min_gain=0.0,
    min_gain_ratio=0.0,
    cooldown_s=0.0,
    migration_cost_weight=0.0,
    max_migrations_per_dc=UNCAPPED,
    max_migrations_total=UNCAPPED,
    entry_metric="user-rloc",
)


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
            in_range(name, getattr(self, name), "expected a finite number")
        non_negative("migration_s", self.migration_s, "expected seconds >= 0")
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


#: Marks a state of the memo whose decision has not been asked yet.
UNKNOWN = -2


@dataclass(frozen=True)
class Decisions:
    """A memo of the controller's decisions for one deployment, SLA bound and ``Params``.

    Indexed by the flat state key ``(position * D + entry) * D + vm``:

    * :meth:`step1` -> -1 when the SLA holds on that path (step 1.1, nothing to
      do), else the entry after step 1.2 (the current one when decide_entry
      keeps it);
    * :meth:`step2` -> the DC decide_migration moves the VM to, -1 when it
      does not; the entry then is ``entry[position, step2]``.

    A state is decided the first time the engine asks for it, by calling the
    controller's function on it, and remembered (states never asked cost
    nothing: a few percent of the 4 M states of 64 DCs are ever visited).
    ``entry[p, v]`` is decide_entry's choice for a VM at v and ``best_rtt[p, v]``
    the RTT through it; ``nearest[p]`` the DC nearest to p (legacy placement at
    the first position, not a PACAO decision).
    """

    bound_ms: float
    n_dcs: int
    params: Params
    user_dc: NDArray[np.float64] = field(repr=False)
    dc_dc: NDArray[np.float64] = field(repr=False)
    entry: IntArray = field(repr=False)
    best_rtt: NDArray[np.float64] = field(repr=False)
    nearest: IntArray = field(repr=False)
    memo1: NDArray[np.int16] = field(repr=False)
    memo2: NDArray[np.int16] = field(repr=False)

    def key(
        self, pos: NDArray[np.integer], entry: NDArray[np.integer], vm: NDArray[np.integer]
    ) -> IntArray:
        d = self.n_dcs
        out: IntArray = (pos.astype(np.int64) * d + entry) * d + vm
        return out

    def _split(self, keys: IntArray) -> tuple[IntArray, IntArray, IntArray]:
        d = self.n_dcs
        return keys // (d * d), (keys // d) % d, keys % d

    def step1(self, keys: IntArray) -> IntArray:
        """Step 1 of the states ``keys``: -1 (SLA met) or the entry after RLOC switching."""
        return self._lookup(self.memo1, keys, self._decide1)

    def step2(self, keys: IntArray) -> IntArray:
        """Step 2 of the states ``keys``: the VM's new DC, -1 when it stays."""
        return self._lookup(self.memo2, keys, self._decide2)

    def fill(self) -> None:
        """Decide every state now (tests and small deployments)."""
        every = np.arange(self.memo1.size, dtype=np.int64)
        self.step1(every)
        self.step2(every)

    def _lookup(
        self,
        memo: NDArray[np.int16],
        keys: IntArray,
        decide: Callable[[IntArray, IntArray, IntArray], IntArray],
    ) -> IntArray:
        out = memo[keys].astype(np.int64)
        miss = out == UNKNOWN
        if miss.any():
            new = np.unique(keys[miss])
            for s in range(0, new.size, self._chunk()):
                part = new[s : s + self._chunk()]
                memo[part] = decide(*self._split(part))
            out[miss] = memo[keys[miss]]
        return out

    def _chunk(self) -> int:
        return max(1, CHUNK_VALUES // self.n_dcs)

    def _decide1(self, p: IntArray, a: IntArray, v: IntArray) -> IntArray:
        """decide_entry on states (p, a, v): candidates a' at RTT(p, a') + RTT(a', v),
        ranked by that or by RTT(p, a') (the setting's entry metric)."""
        n = p.size
        ud = self.user_dc[p]
        values = (ud + self.dc_dc.T[v])[..., None]
        dec = decision.decide_entry(
            NOW,
            EntryInputs(
                values=values,
                usable=np.ones((n, self.n_dcs), dtype=bool),
                current=a,
                sla=_sla(n, self.bound_ms),
                last_switch=np.full(n, -np.inf),
                sublink=ud[..., None],
            ),
            self.params,
        )
        out: IntArray = np.where(dec.sla_met, -1, np.where(dec.switch, dec.best, a))
        return out

    def _decide2(self, p: IntArray, a: IntArray, v: IntArray) -> IntArray:
        """decide_migration on states (p, a, v): the path through a to the VM at v against
        each DC d reached through its best entry."""
        n, d = p.size, self.n_dcs
        current = (self.user_dc[p, a] + self.dc_dc[a, v])[:, None]
        mig = decision.decide_migration(
            NOW,
            MigrationInputs(
                current_values=current,
                current_usable=np.ones(n, dtype=bool),
                place_values=self.best_rtt[p][..., None],
                place_usable=np.ones((n, d), dtype=bool),
                host=v,
                sla=_sla(n, self.bound_ms),
                demand=np.zeros((n, 0)),
                pinned=np.zeros(n, dtype=bool),
                last_migration=np.full(n, -np.inf),
                expected_stay_s=np.full(n, np.inf),
                migration_s=np.zeros((n, d)),
            ),
            DcLoad(
                residual=np.zeros((d, 0)),
                ongoing_per_dc=np.zeros(d, dtype=np.int64),
                ongoing_total=0,
            ),
            self.params,
        )
        out: IntArray = np.where(mig.migrate, mig.best, -1)
        return out


def check_tabulable(params: Params) -> None:
    """Refuse the rules a table over (position, entry, VM) cannot hold: the dwell time and
    the cooldown depend on each user's history, the caps on the other users of the cycle."""
    for name in ("min_dwell_s", "cooldown_s"):
        if getattr(params, name) != 0:
            raise InputError(
                f"policy.{name}", getattr(params, name), "0 in the simulator (history-dependent)"
            )
    for name in ("max_migrations_per_dc", "max_migrations_total"):
        if getattr(params, name) < UNCAPPED:
            raise InputError(
                f"policy.{name}", getattr(params, name), f">= {UNCAPPED} (no cap) in the simulator"
            )
    non_negative("policy.min_gain", params.min_gain)


def _sla(n: int, bound_ms: float) -> Sla:
    return Sla(np.ones((n, 1)), np.full((n, 1), bound_ms))


def decision_tables(net: Network, bound_ms: float, params: Params = PAPER_PARAMS) -> Decisions:
    """The controller's decisions for one deployment and bound, decided on first use.

    ``entry`` (decide_entry's choice for every position and VM DC) is decided
    now: step 2 compares the placements through these entries.
    """
    positive("bound_ms", bound_ms, "a latency bound > 0 ms")
    check_tabulable(params)
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
    chunk = max(1, CHUNK_VALUES // (n_dc * n_dc))
    for s in range(0, n_pos, chunk):
        ud = net.user_dc[s : s + chunk]
        c = len(ud)
        # path[p, v, a] = RTT(p, a) + RTT(a, v): the candidates a of a user with its VM at v.
        path = ud[:, None, :] + net.dc_dc.T[None, :, :]
        sub = np.broadcast_to(ud[:, None, :], path.shape)
        dec = decision.decide_entry(
            NOW,
            EntryInputs(
                values=path.reshape(c * n_dc, n_dc, 1),
                usable=np.ones((c * n_dc, n_dc), dtype=bool),
                current=np.full(c * n_dc, -1, dtype=np.int64),
                sla=_sla(c * n_dc, bound_ms),
                last_switch=np.full(c * n_dc, -np.inf),
                sublink=sub.reshape(c * n_dc, n_dc, 1),
            ),
            params,
        )
        best = dec.best.reshape(c, n_dc)
        entry[s : s + c] = best
        best_rtt[s : s + c] = np.take_along_axis(path, best[..., None], -1)[..., 0]
    size = n_pos * n_dc * n_dc
    memo = Decisions(
        bound_ms=float(bound_ms),
        n_dcs=n_dc,
        params=params,
        user_dc=net.user_dc,
        dc_dc=net.dc_dc,
        entry=entry,
        best_rtt=best_rtt,
        nearest=np.argmin(net.user_dc, axis=1).astype(np.int64),
        memo1=np.full(size, UNKNOWN, dtype=np.int16),
        memo2=np.full(size, UNKNOWN, dtype=np.int16),
    )
    # Most visited states have the entry at the VM's DC (after a migration; under the
    # path metric the best entry for a VM is its own DC) or at the DC nearest the user
    # (the legacy entry at the first position; Step 1's choice under the user-rloc
    # metric): decide those in bulk now, so that the engine's first runs make few
    # small controller calls. The memo is a cache: this changes no decision.
    p = np.repeat(np.arange(n_pos, dtype=np.int64), n_dc)
    v = np.tile(np.arange(n_dc, dtype=np.int64), n_pos)
    warm = np.r_[memo.key(p, v, v), memo.key(p, memo.nearest[p], v)]
    memo.step1(warm)
    memo.step2(warm)
    return memo
