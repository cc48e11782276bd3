"""Rich tables for decisions, shared by the CLI commands."""

from __future__ import annotations

from rich.table import Table

from pacao.optimize.model import Decision


def decision_table(decision: Decision, title: str) -> Table:
    """One row per candidate, best first, with the LISP priority it would get."""
    crit = list(decision.ranking[0].penalties)
    table = Table(title=title, title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("candidate")
    table.add_column("objective", justify="right")
    for k in crit:
        table.add_column(f"T({k})", justify="right")
    table.add_column("LISP priority", justify="right")
    table.add_column("note")
    for rank, r in enumerate(decision.ranking, start=1):
        obj = "-" if r.objective is None else f"{r.objective:.3f}"
        pens = [str(r.penalties.get(k, "-")) for k in crit]
        note = r.reason or ("chosen" if r.name == decision.choice else "")
        table.add_row(str(rank), r.name, obj, *pens, str(r.priority), note)
    table.caption = (
        f"solver={decision.solver}  choice={decision.choice}  "
        f"objective={decision.objective:.3f}  SLA {'met' if decision.sla_met else 'violated'}"
    )
    return table
