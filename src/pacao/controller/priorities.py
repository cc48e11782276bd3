"""The LISP priority table of a VM EID's locator set (RLOC -> priority, 1 preferred):
the one builder behind every EntrySwitch the controller plans and the in-memory
mapping's initial registration."""

from __future__ import annotations

from collections.abc import Sequence

from pacao.optimize.model import Decision


def in_order(rlocs: Sequence[str]) -> dict[str, int]:
    """Priorities 1, 2, ... in the order given."""
    return {r: i + 1 for i, r in enumerate(rlocs)}


def priority_table(
    chosen: str, rlocs: Sequence[str], ranking: Decision | None = None
) -> dict[str, int]:
    """The table that makes ``chosen`` the entry. With the optimizer's ranking of the
    user's entries (Step 1), the ranking's priorities (an unusable entry gets 255);
    without one (an entry picked by placement with a migration), the chosen RLOC 1 and
    the others 2, 3, ... in name order."""
    if ranking is not None:
        assert ranking.choice == chosen, (ranking.choice, chosen)
        return {r.name: r.priority for r in ranking.ranking}
    return in_order([chosen, *sorted(r for r in rlocs if r != chosen)])
