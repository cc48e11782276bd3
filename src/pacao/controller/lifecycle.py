"""Plan and action states and the moves between them: the one definition the store, the
executor, the decision loop, the API and the web view share.

``StrEnum`` members are their strings, so the database rows and the JSON the API
returns carry the same values as the literals did.
"""

from __future__ import annotations

from enum import StrEnum


class PlanState(StrEnum):
    RECOMMENDED = "recommended"
    APPROVED = "approved"
    ONGOING = "ongoing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"


class ActionState(StrEnum):
    PENDING = "pending"
    ONGOING = "ongoing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVERTED = "reverted"
    SKIPPED = "skipped"


P, A = PlanState, ActionState

#: Allowed plan transitions (from -> to).
PLAN_MOVES: dict[PlanState, tuple[PlanState, ...]] = {
    P.RECOMMENDED: (P.APPROVED, P.SKIPPED, P.SUPERSEDED, P.EXPIRED),
    P.APPROVED: (P.ONGOING, P.SKIPPED, P.SUPERSEDED),
    P.ONGOING: (P.SUCCEEDED, P.FAILED),
}
#: Allowed action transitions (from -> to).
ACTION_MOVES: dict[ActionState, tuple[ActionState, ...]] = {
    A.PENDING: (A.ONGOING, A.SKIPPED),
    A.ONGOING: (A.SUCCEEDED, A.FAILED),
    A.SUCCEEDED: (A.REVERTED,),
    A.FAILED: (A.REVERTED,),
}
#: Waiting for a decision: a newer plan of the same user and kind supersedes them.
OPEN_STATES = (P.RECOMMENDED, P.APPROVED)
#: Approved or under way: the user's entry/host is about to change.
IN_FLIGHT = (P.APPROVED, P.ONGOING)
#: Not ended yet (`pacao controller status` lists them).
UNFINISHED = (P.RECOMMENDED, P.APPROVED, P.ONGOING)


def state_names(states: type[PlanState] | type[ActionState]) -> list[str]:
    """The states as plain strings, for messages (an enum's repr is not what users typed)."""
    return [s.value for s in states]
