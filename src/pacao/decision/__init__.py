"""The decision policy: Step 1 (entry switching) and Step 2 (VM migration), pure and vectorised.

Nothing here reads a clock, a database or a driver: the caller passes ``now``,
the measurements and the per-user state as arrays over users, and gets arrays
of decisions and reasons back. The controller service calls it once per S'
for all its users; the simulator calls the very same functions over its
simulated users in simulated time (docs/controller.md, "Policy").

Ranking is :func:`pacao.optimize.bulk.choose_parallel` (the kernel of problem
(1)-(3)); the penalties of the current path are
:func:`pacao.optimize.penalty.penalties_from_ratios`; ties follow
:mod:`pacao.optimize.ties`; the LISP priorities of a switching user
(:func:`rank_entries`) put Step 1's choice first and order the rest by the
same kernel and ties. One ranking: nothing derives the choice a second time.

Modules: :mod:`~pacao.decision.params` (settings, SLAs, reason codes),
:mod:`~pacao.decision.entry` (Step 1), :mod:`~pacao.decision.migration` (Step 2),
:mod:`~pacao.decision.placement` (the candidates from the measured sublinks),
:mod:`~pacao.decision.multi_user` (problem (4)-(9)),
:mod:`~pacao.decision.kernel` (the ranking they share).

Beyond the paper (Sec. III-D), a move must also pass:

* a minimum gain margin: objective(current) - objective(best) >= min_gain;
* a relative margin for switches (min_gain_ratio r): the best entry must still
  rank strictly before the current one with each of its metrics worsened by the
  fraction r (two entries measured within noise of each other are a tie);
* a minimum dwell time on an entry before switching away (min_dwell_s);
* a cooldown per user after a migration (cooldown_s);
* migration economics: the gain only accrues after the migration time t
  (memory / inter-DC bandwidth x dirty factor) and lasts the rest of the
  user's expected stay T; migrate when gain x (T - t) > cost_weight x t;
* caps on concurrent migrations per DC (source and destination) and in total;
* pinned VMs never migrate.

Step 1 ranks the entries by ``Params.entry_metric``: ``path`` (the default, a
product choice) by the whole user->entry->VM metric, ``user-rloc`` (the paper's
eq. 3: "the measured RTT or jitter between RLOC d and the user") by the
user<->RLOC sublink alone. Either way the SLA check that triggers Step 1 and
Step 2 is on the user<->VM path (Sec. IV-B), and Step 2 is unchanged.

An unavailable current entry (probes lost) overrides the margins and the dwell
time: a user never waits on a dead locator. An *unmeasured* current entry (no
sample at all, ``known`` False) is not a dead one: the user keeps it unless
another entry is measured meeting the SLA (Reason.NO_DATA).
"""

from pacao.decision.entry import EntryDecisions, EntryInputs, decide_entry, rank_entries
from pacao.decision.migration import (
    DcLoad,
    MigrationDecisions,
    MigrationInputs,
    MigrationTime,
    decide_migration,
    migration_seconds,
)
from pacao.decision.multi_user import (
    DcCapacity,
    MultiUserDecisions,
    MultiUserInputs,
    decide_multi_user,
)
from pacao.decision.params import ENTRY_METRICS, REASON_TEXT, Params, Reason, Sla
from pacao.decision.placement import combine_paths, placement

__all__ = [
    "ENTRY_METRICS",
    "REASON_TEXT",
    "DcCapacity",
    "DcLoad",
    "EntryDecisions",
    "EntryInputs",
    "MigrationDecisions",
    "MigrationInputs",
    "MigrationTime",
    "MultiUserDecisions",
    "MultiUserInputs",
    "Params",
    "Reason",
    "Sla",
    "combine_paths",
    "decide_entry",
    "decide_migration",
    "decide_multi_user",
    "migration_seconds",
    "placement",
    "rank_entries",
]
