"""Storage through SQLAlchemy 2 Core: SQLite by default, PostgreSQL by URL.

Tables: ``measurements`` (every probe sample and every S' window aggregate, pruned
by age and rows), ``history`` (the samples down-sampled, kept longer),
``plans`` and ``actions`` (decisions and what was done), ``transitions`` (every
state change of a plan or an action, the audit trail restart recovery reads)
and ``state`` (per-user controller state: entry in use, last switch, ...).
The service writes measurements and plans here *before* acting on them.
State changes are compare-and-set (``UPDATE ... WHERE state = old``), so two
processes (the service and ``pacao controller approve``) never both win.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from pacao.errors import InputError

PLAN_STATES = (
    "recommended",
    "approved",
    "ongoing",
    "succeeded",
    "failed",
    "skipped",
    "superseded",
    "expired",
)
#: Allowed plan transitions (from -> to).
PLAN_MOVES: dict[str, tuple[str, ...]] = {
    "recommended": ("approved", "skipped", "superseded", "expired"),
    "approved": ("ongoing", "skipped", "superseded"),
    "ongoing": ("succeeded", "failed"),
}
ACTION_STATES = ("pending", "ongoing", "succeeded", "failed", "reverted", "skipped")
ACTION_MOVES: dict[str, tuple[str, ...]] = {
    "pending": ("ongoing", "skipped"),
    "ongoing": ("succeeded", "failed"),
    "succeeded": ("reverted",),
    "failed": ("reverted",),
}
OPEN_STATES = ("recommended", "approved")

metadata = MetaData()

measurements = Table(
    "measurements",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("ts", Float, nullable=False),
    Column("kind", String(8), nullable=False),  # sample | window
    Column("path", String(8), nullable=False),  # user-xtr | xtr-vm
    Column("xtr", String(64), nullable=False),  # DC whose xTR measured
    Column("subject", String(64), nullable=False),  # user (user-xtr) or VM (xtr-vm)
    Column("rloc", String(64), nullable=False),  # the measuring xTR's RLOC
    Column("peer", String(64)),  # the probed locator ("": a direct probe of the EID)
    Column("rtt_ms", Float),
    Column("jitter_ms", Float),
    Column("availability", Float),
    Column("count", Integer, nullable=False),
    Column("window_s", Float),
    # Time only: appends at the right edge of the B-tree. A (subject, ts) index cost
    # two thirds of the insert rate (random inserts into a string-keyed tree); the API's
    # per-subject query reads newest first by id and stops after `limit` rows.
    Index("ix_measurements_ts", "ts"),
)

# Down-sampled measurements (pacao.controller.retention): one row per bucket of
# `storage.history.bucket_s` seconds and measured path, kept longer than the samples.
history = Table(
    "history",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("ts", Float, nullable=False),  # bucket start
    Column("bucket_s", Float, nullable=False),
    Column("path", String(8), nullable=False),
    Column("xtr", String(64), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("rloc", String(64), nullable=False),
    Column("peer", String(64)),
    Column("rtt_ms", Float),  # mean of the answered probes
    Column("rtt_min_ms", Float),
    Column("rtt_max_ms", Float),
    Column("jitter_ms", Float),
    Column("availability", Float),  # answered / sent
    Column("count", Integer, nullable=False),  # probes sent
    Index("ix_history_subject_ts", "subject", "ts"),
    Index("ix_history_ts", "ts"),
)

plans = Table(
    "plans",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("user", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # entry_switch | vm_migration
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("scores", JSON, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("approved_by", String(64)),
    # A recommended plan not approved by then becomes expired (manual approval);
    # `refreshed` counts the decisions that confirmed it after it was stored.
    Column("expires", Float),
    Column("refreshed", Integer, nullable=False, default=0),
    Index("ix_plans_state", "state"),
)

#: Columns added after the first release: (table, column, SQL type and default), added
#: to an existing database when it is opened.
ADDED_COLUMNS = (
    ("plans", "expires", "FLOAT"),
    ("plans", "refreshed", "INTEGER NOT NULL DEFAULT 0"),
)
#: Action parameters that do not change what a plan does: a new decision that differs
#: only in them is the same decision (the migration job id holds the decision time; the
#: priorities of the entries after the chosen one follow measurement noise).
VOLATILE_PARAMS = frozenset({"job_id", "priorities"})


def decision_key(steps: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Any]:
    """What a plan does, for telling a new decision from a repeat of a pending one."""
    return [
        (kind, sorted((k, repr(v)) for k, v in params.items() if k not in VOLATILE_PARAMS))
        for kind, params in steps
    ]


actions = Table(
    "actions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("plan_id", String(36), ForeignKey("plans.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # EntrySwitch | VmMigration
    Column("params", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("error", Text),
    Column("started", Float),
    Column("finished", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("undo", JSON),  # what revert needs, recorded before execute
)

transitions = Table(
    "transitions",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("ts", Float, nullable=False),
    Column("plan_id", String(36), nullable=False),
    Column("action_id", String(36)),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("note", Text),
)

state = Table(
    "state",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated", Float, nullable=False),
)

MEASUREMENT_KEYS = (
    "ts",
    "kind",
    "path",
    "xtr",
    "subject",
    "rloc",
    "peer",
    "rtt_ms",
    "jitter_ms",
    "availability",
    "count",
    "window_s",
)


def engine_for(url: str) -> Engine:
    """An engine for a storage URL; ``postgresql://`` uses psycopg 3."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    try:
        engine = create_engine(url, future=True)
    except (ArgumentError, ValueError) as exc:
        raise InputError("storage.url", url, f"not a usable database URL ({exc})") from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///FILE`` URL (None: not SQLite, or in memory)."""
    try:
        u = make_url(url)
    except ArgumentError:
        return None
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    return Path(u.database)


def check_storage(url: str) -> None:
    """What the controller needs of its storage, checked without creating anything:
    an SQLite file that opens as a database (or can be created: its folder exists and
    is writable), a PostgreSQL server that accepts the connection."""
    f = sqlite_file(url)
    if f is not None and not f.exists():
        d = f.parent
        if not d.is_dir():
            raise InputError("storage.url", url, f"folder {str(d)!r} does not exist")
        if not os.access(d, os.W_OK | os.X_OK):
            raise InputError("storage.url", url, f"folder {str(d)!r} is not writable")
        return
    engine = engine_for(url)
    try:
        with engine.connect() as c:
            c.exec_driver_sql("SELECT count(*) FROM sqlite_master" if f else "SELECT 1")
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        raise InputError("storage.url", url, f"cannot open the database ({orig})") from None
    finally:
        engine.dispose()
    if f is not None and not os.access(f, os.R_OK | os.W_OK):
        raise InputError("storage.url", url, "the database file is not writable")


class Store:
    """All the controller's persistence; every method is one transaction.

    ``create=False`` (the CLI's ``plans``, ``approve``): the database must exist
    already and hold the controller's tables; a wrong path is an error instead of
    a new empty database somewhere."""

    def __init__(self, url: str, clock: Any = None, create: bool = True) -> None:
        self.url = url
        f = sqlite_file(url)
        if not create and f is not None and not f.exists():
            raise InputError(
                "storage.url",
                url,
                f"no database at {str(f.resolve())!r} (the controller creates it when it "
                "first runs; relative paths are relative to the config file's folder)",
            )
        self.engine = engine_for(url)
        self._now = clock.now if clock is not None else time.time
        try:
            if create:
                metadata.create_all(self.engine)
                self._add_columns()
            else:
                missing = set(metadata.tables) - set(inspect(self.engine).get_table_names())
                if missing:
                    raise InputError(
                        "storage.url", url, f"not a controller database (no {sorted(missing)})"
                    )
        except OperationalError as exc:
            raise InputError("storage.url", url, f"cannot open the database ({exc.orig})") from None

    def _add_columns(self) -> None:
        """Bring a database made by an older version up to the current columns."""
        insp = inspect(self.engine)
        have = {
            t: {c["name"] for c in insp.get_columns(t)} for t in {t for t, _, _ in ADDED_COLUMNS}
        }
        with self.engine.begin() as c:
            for table, col, sql in ADDED_COLUMNS:
                if col not in have[table]:
                    c.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {col} {sql}")

    def close(self) -> None:
        self.engine.dispose()

    # -- measurements -------------------------------------------------------
    def add_measurements(self, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        # The driver's own bulk path: SQLAlchemy's per-row parameter handling would cost
        # more than the insert (docs/controller.md, "Storage").
        keys = MEASUREMENT_KEYS
        tuples = [tuple(map(r.get, keys)) for r in rows]
        cols = ", ".join(MEASUREMENT_KEYS)
        with self.engine.begin() as c:
            if self.engine.dialect.name == "postgresql":
                raw: Any = c.connection.driver_connection
                with raw.cursor() as cur, cur.copy(f"COPY measurements ({cols}) FROM STDIN") as cp:
                    for t in tuples:
                        cp.write_row(t)
            else:
                marks = ", ".join("?" for _ in MEASUREMENT_KEYS)
                c.exec_driver_sql(f"INSERT INTO measurements ({cols}) VALUES ({marks})", tuples)
        return len(tuples)

    def measurements(
        self, subject: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        q = select(measurements).order_by(measurements.c.id.desc()).limit(limit)
        if subject is not None:
            q = q.where(measurements.c.subject == subject)
        if kind is not None:
            q = q.where(measurements.c.kind == kind)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def count_measurements(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(measurements)).scalar_one())

    # -- plans ----------------------------------------------------------------
    def create_plan(
        self,
        user: str,
        kind: str,
        reason: str,
        inputs: Mapping[str, Any],
        scores: Mapping[str, Any],
        steps: Iterable[tuple[str, Mapping[str, Any]]],
        dry_run: bool = False,
    ) -> str:
        """Store a recommended plan and its pending actions; older open plans of the user
        and kind become superseded in the same transaction."""
        return self.propose_plan(user, kind, reason, inputs, scores, steps, dry_run)[0]

    def propose_plan(
        self,
        user: str,
        kind: str,
        reason: str,
        inputs: Mapping[str, Any],
        scores: Mapping[str, Any],
        steps: Iterable[tuple[str, Mapping[str, Any]]],
        dry_run: bool = False,
        expires: float | None = None,
        refresh: bool = False,
    ) -> tuple[str, bool]:
        """Store a decision as a plan; returns (plan id, refreshed).

        With ``refresh``, a ``recommended`` plan of the user and kind that makes the same
        decision (:func:`decision_key`) and has not expired stays the plan: its inputs,
        scores, action parameters (but the migration job id) and expiry are updated and
        ``refreshed`` counts one more. Otherwise older open plans of the user and kind
        are superseded by a new plan, in the same transaction."""
        now = self._now()
        steps = [(k, dict(p)) for k, p in steps]
        with self.engine.begin() as c:
            old = c.execute(
                select(plans.c.id, plans.c.state, plans.c.expires, plans.c.dry_run).where(
                    plans.c.user == user, plans.c.kind == kind, plans.c.state.in_(OPEN_STATES)
                )
            ).all()
            if refresh:
                for oid, ostate, oexp, odry in old:
                    if ostate != "recommended" or odry != dry_run:
                        continue
                    if oexp is not None and oexp < now:
                        continue
                    acts = c.execute(
                        select(actions.c.id, actions.c.kind, actions.c.params)
                        .where(actions.c.plan_id == oid)
                        .order_by(actions.c.seq)
                    ).all()
                    if decision_key((a.kind, a.params) for a in acts) != decision_key(steps):
                        continue
                    c.execute(
                        update(plans)
                        .where(plans.c.id == oid, plans.c.state == "recommended")
                        .values(
                            updated=now,
                            inputs=dict(inputs),
                            scores=dict(scores),
                            expires=expires,
                            refreshed=plans.c.refreshed + 1,
                        )
                    )
                    for a, (_, params) in zip(acts, steps, strict=True):
                        keep = {k: a.params[k] for k in ("job_id",) if k in a.params}
                        c.execute(
                            update(actions)
                            .where(actions.c.id == a.id)
                            .values(params={**params, **keep})
                        )
                    return str(oid), True
            pid = str(uuid.uuid4())
            for oid, ostate, _, _ in old:
                self._move_plan(c, oid, ostate, "superseded", f"superseded by {pid}")
            c.execute(
                insert(plans).values(
                    id=pid,
                    created=now,
                    updated=now,
                    user=user,
                    kind=kind,
                    state="recommended",
                    reason=reason,
                    inputs=dict(inputs),
                    scores=dict(scores),
                    dry_run=dry_run,
                    expires=expires,
                    refreshed=0,
                )
            )
            c.execute(
                insert(transitions).values(
                    ts=now, plan_id=pid, from_state=None, to_state="recommended", note=reason
                )
            )
            for seq, (akind, params) in enumerate(steps):
                c.execute(
                    insert(actions).values(
                        id=str(uuid.uuid4()),
                        plan_id=pid,
                        seq=seq,
                        kind=akind,
                        params=dict(params),
                        state="pending",
                        attempts=0,
                    )
                )
        return pid, False

    def expire_plans(self, now: float | None = None) -> list[str]:
        """Recommended plans whose approval window ended become ``expired``."""
        t = self._now() if now is None else now
        with self.engine.begin() as c:
            rows = c.execute(
                select(plans.c.id).where(
                    plans.c.state == "recommended",
                    plans.c.expires.is_not(None),
                    plans.c.expires < t,
                )
            ).all()
            return [
                str(r.id)
                for r in rows
                if self._move_plan(c, r.id, "recommended", "expired", "not approved in time")
            ]

    def _move_plan(self, c: Any, pid: str, frm: str, to: str, note: str | None) -> bool:
        if to not in PLAN_MOVES.get(frm, ()):
            raise InputError(
                "plan.state",
                f"{frm} -> {to}",
                f"allowed from {frm}: {list(PLAN_MOVES.get(frm, ()))}",
            )
        now = self._now()
        res = c.execute(
            update(plans)
            .where(plans.c.id == pid, plans.c.state == frm)
            .values(state=to, updated=now)
        )
        if res.rowcount != 1:
            return False
        c.execute(
            insert(transitions).values(ts=now, plan_id=pid, from_state=frm, to_state=to, note=note)
        )
        return True

    def move_plan(self, pid: str, frm: str, to: str, note: str | None = None) -> bool:
        """Compare-and-set a plan's state; False when it was not in ``frm`` any more."""
        with self.engine.begin() as c:
            return self._move_plan(c, pid, frm, to, note)

    def approve(self, pid: str, by: str) -> None:
        expired: float | None = None
        with self.engine.begin() as c:
            row = c.execute(select(plans.c.state, plans.c.expires).where(plans.c.id == pid)).first()
            if row is None:
                raise InputError("PLAN", pid, "no such plan")
            if row.state == "recommended" and row.expires is not None and row.expires < self._now():
                self._move_plan(c, pid, "recommended", "expired", "not approved in time")
                expired = float(row.expires)  # committed, then refused below
            elif row.state != "recommended":
                raise InputError(
                    "PLAN", pid, f"is {row.state}; only a recommended plan is approved"
                )
            elif not self._move_plan(c, pid, "recommended", "approved", f"approved by {by}"):
                raise InputError("PLAN", pid, "changed state meanwhile; try again")
            else:
                c.execute(update(plans).where(plans.c.id == pid).values(approved_by=by))
        if expired is not None:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expired))
            raise InputError("PLAN", pid, f"expired at {when} without approval")

    def move_action(
        self,
        aid: str,
        frm: str,
        to: str,
        error: str | None = None,
        undo: Mapping[str, Any] | None = None,
    ) -> bool:
        if to not in ACTION_MOVES.get(frm, ()):
            raise InputError("action.state", f"{frm} -> {to}", "not an allowed transition")
        now = self._now()
        values: dict[str, Any] = {"state": to}
        if to == "ongoing":
            values["started"] = now
            values["attempts"] = actions.c.attempts + 1
        if to in ("succeeded", "failed", "reverted", "skipped"):
            values["finished"] = now
        if error is not None:
            values["error"] = error
        if undo is not None:
            values["undo"] = dict(undo)
        with self.engine.begin() as c:
            res = c.execute(
                update(actions).where(actions.c.id == aid, actions.c.state == frm).values(**values)
            )
            if res.rowcount != 1:
                return False
            pid = c.execute(select(actions.c.plan_id).where(actions.c.id == aid)).scalar_one()
            c.execute(
                insert(transitions).values(
                    ts=now, plan_id=pid, action_id=aid, from_state=frm, to_state=to, note=error
                )
            )
        return True

    def resume_action(self, aid: str) -> bool:
        """Count one more attempt of an ongoing action being resumed after a restart."""
        now = self._now()
        with self.engine.begin() as c:
            res = c.execute(
                update(actions)
                .where(actions.c.id == aid, actions.c.state == "ongoing")
                .values(attempts=actions.c.attempts + 1)
            )
            if res.rowcount != 1:
                return False
            pid = c.execute(select(actions.c.plan_id).where(actions.c.id == aid)).scalar_one()
            c.execute(
                insert(transitions).values(
                    ts=now,
                    plan_id=pid,
                    action_id=aid,
                    from_state="ongoing",
                    to_state="ongoing",
                    note="resumed after a restart",
                )
            )
        return True

    def plan(self, pid: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(plans).where(plans.c.id == pid)).first()
            if row is None:
                return None
            return self._with_actions(c, [dict(row._mapping)])[0]

    def plans(
        self,
        state: str | Sequence[str] | None = None,
        user: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        q = select(plans).order_by(plans.c.created.desc(), plans.c.id).limit(limit)
        if isinstance(state, str):
            if state not in PLAN_STATES:
                raise InputError("state", state, f"one of {list(PLAN_STATES)}")
            q = q.where(plans.c.state == state)
        elif state is not None:
            q = q.where(plans.c.state.in_(list(state)))
        if user is not None:
            q = q.where(plans.c.user == user)
        with self.engine.connect() as c:
            return self._with_actions(c, [dict(r._mapping) for r in c.execute(q)])

    def _with_actions(self, c: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not rows:
            return rows
        ids = [r["id"] for r in rows]
        acts: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        q = select(actions).where(actions.c.plan_id.in_(ids)).order_by(actions.c.seq)
        for a in c.execute(q):
            acts[a.plan_id].append(dict(a._mapping))
        for r in rows:
            r["actions"] = acts[r["id"]]
        return rows

    def transitions(self, pid: str) -> list[dict[str, Any]]:
        q = select(transitions).where(transitions.c.plan_id == pid).order_by(transitions.c.id)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def plan_counts(self) -> dict[str, int]:
        q = select(plans.c.state, func.count()).group_by(plans.c.state)
        with self.engine.connect() as c:
            got = {s: int(n) for s, n in c.execute(q)}
        return {s: got.get(s, 0) for s in PLAN_STATES}

    # -- controller state -----------------------------------------------------
    def get_state(self, key: str) -> Any:
        with self.engine.connect() as c:
            return c.execute(select(state.c.value).where(state.c.key == key)).scalar_one_or_none()

    def put_state(self, key: str, value: Any) -> None:
        now = self._now()
        with self.engine.begin() as c:
            res = c.execute(
                update(state).where(state.c.key == key).values(value=value, updated=now)
            )
            if res.rowcount == 0:
                c.execute(insert(state).values(key=key, value=value, updated=now))
