"""The decision functions called with flat argument lists, as the policy tests build them:
one place that packs them into the typed inputs."""

from __future__ import annotations

from pacao.decision import (
    DcLoad,
    EntryDecisions,
    EntryInputs,
    MigrationDecisions,
    MigrationInputs,
    Params,
    Sla,
    decide_entry,
    decide_migration,
)
from pacao.decision.params import BoolArray, FloatArray, IntArray


def entry_step(
    now: float,
    values: FloatArray,
    usable: BoolArray,
    current: IntArray,
    sla: Sla,
    last_switch: FloatArray,
    params: Params,
    *,
    known: BoolArray | None = None,
    sublink: FloatArray | None = None,
) -> EntryDecisions:
    """:func:`decide_entry` on these arrays."""
    users = EntryInputs(
        values=values,
        usable=usable,
        current=current,
        sla=sla,
        last_switch=last_switch,
        known=known,
        sublink=sublink,
    )
    return decide_entry(now, users, params)


def migration_step(
    *,
    now: float,
    params: Params,
    residual: FloatArray,
    ongoing_per_dc: IntArray,
    ongoing_total: int,
    **users: object,
) -> MigrationDecisions:
    """:func:`decide_migration` on these arrays (the per-user ones named as in
    :class:`MigrationInputs`)."""
    inputs = MigrationInputs(**users)  # type: ignore[arg-type]
    return decide_migration(
        now,
        inputs,
        DcLoad(residual=residual, ongoing_per_dc=ongoing_per_dc, ongoing_total=ongoing_total),
        params,
    )
