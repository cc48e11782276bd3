"""Storage through SQLAlchemy 2 Core: SQLite by default, PostgreSQL by URL.

Tables: ``measurements`` (every probe sample and every S' window aggregate, pruned
by age and rows), ``history`` (the samples down-sampled, kept longer),
``plans`` and ``actions`` (decisions and what was done), ``transitions`` (every
state change of a plan or an action, the audit trail restart recovery reads)
and ``state`` (per-user controller state: entry in use, last switch, ...).
The service writes measurements and plans here *before* acting on them.
State changes are compare-and-set (``UPDATE ... WHERE state = old``), so two
processes (the service and ``pacao controller approve``) never both win.

Replicas (PostgreSQL only, docs/controller.md "High availability"): ``leases`` holds
one row per lease (holder, epoch, expiry in the database's clock). The leader's
store carries a :class:`Fence`: every write transaction first reads the lease row
``FOR SHARE`` and refuses to commit unless it still holds that epoch unexpired, so
a paused leader that wakes after a takeover writes nothing.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError

from pacao.controller.lifecycle import (
    ACTION_MOVES,
    OPEN_STATES,
    PLAN_MOVES,
    ActionState,
    PlanState,
    state_names,
)
from pacao.errors import InputError

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

#: The controller's leadership lease (one row per lease name; docs/controller.md "High
#: availability"): times are seconds in the database server's clock, so replicas'
#: clocks never have to agree.
leases = Table(
    "leases",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("since", Float, nullable=False),
    Column("expires", Float, nullable=False),
    Column("address", String(256)),
)
LEASE = "controller"
#: Tables a database made before a release may lack (created when the controller runs).
OPTIONAL_TABLES = frozenset({"leases"})


class NotLeader(RuntimeError):
    """A write of a replica that does not lead (a follower, or a leader whose lease ended):
    refused before anything was written."""


class Fence:
    """The epoch this process leads under (None: it follows). A store with a fence checks
    it inside every write transaction; ``on_lost`` is called (from any thread) when a
    write or a check finds the lease gone, so the service ends its term at once."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.on_lost: Callable[[str], None] | None = None

    def lost(self, why: str) -> None:
        if self.on_lost is not None:
            self.on_lost(why)


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


def engine_for(url: str, idle_tx_timeout_s: float | None = None) -> Engine:
    """An engine for a storage URL; ``postgresql://`` uses psycopg 3.

    ``idle_tx_timeout_s`` (PostgreSQL): the server ends a session left idle inside a
    transaction that long, so a stopped replica cannot hold the lease row's lock."""
    given = url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    kw: dict[str, Any] = {}
    if idle_tx_timeout_s is not None and url.startswith("postgresql"):
        ms = max(1, int(idle_tx_timeout_s * 1000))
        kw["connect_args"] = {
            "options": f"-c idle_in_transaction_session_timeout={ms}",
            "connect_timeout": 5,
        }
    try:
        engine = create_engine(url, future=True, **kw)
    except (ArgumentError, ValueError) as exc:
        raise InputError("storage.url", given, f"not a usable database URL ({exc})") from None
    except ImportError as exc:  # psycopg is an extra: a plain `pip install pacao` lacks it
        hint = "pip install 'pacao[postgres]'" if url.startswith("postgresql") else str(exc)
        raise InputError(
            "storage.url", given, f"its database driver {exc.name or ''} is not installed: {hint}"
        ) from None
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

    def __init__(
        self,
        url: str,
        clock: Any = None,
        create: bool = True,
        idle_tx_timeout_s: float | None = None,
    ) -> None:
        self.url = url
        #: set on a replica's store: every write checks the lease (None: single node)
        self.fence: Fence | None = None
        f = sqlite_file(url)
        if not create and f is not None and not f.exists():
            raise InputError(
                "storage.url",
                url,
                f"no database at {str(f.resolve())!r} (the controller creates it when it "
                "first runs; relative paths are relative to the config file's folder)",
            )
        self.engine = engine_for(url, idle_tx_timeout_s)
        self._now = clock.now if clock is not None else time.time
        try:
            if create:
                with self.engine.begin() as c:
                    if self.engine.dialect.name == "postgresql":
                        # Replicas starting together on an empty database: one creates.
                        c.exec_driver_sql("SELECT pg_advisory_xact_lock(7283540)")
                    metadata.create_all(c)
                self._add_columns()
            else:
                have = set(inspect(self.engine).get_table_names())
                missing = set(metadata.tables) - OPTIONAL_TABLES - have
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

    # -- leadership and fencing -------------------------------------------------
    def _db_now(self) -> Any:
        """The database server's clock (seconds) as an SQL expression."""
        if self.engine.dialect.name == "postgresql":
            return func.extract("epoch", func.clock_timestamp())
        return literal(time.time())

    def _check_fence(self, c: Connection) -> None:
        f = self.fence
        if f is None:
            return
        if f.epoch is None:
            raise NotLeader("this replica is not the leader")
        row = c.execute(
            select(leases.c.epoch, leases.c.expires, self._db_now())
            .where(leases.c.name == LEASE)
            .with_for_update(read=True)
        ).first()
        if row is None or int(row[0]) != f.epoch or float(row[1]) <= float(row[2]):
            held = "no lease" if row is None else f"lease epoch {row[0]}"
            why = f"epoch {f.epoch} is stale ({held}, expired: {row is None or row[1] <= row[2]})"
            f.lost(why)
            raise NotLeader(why)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction, refused unless this store's fence (if any) holds."""
        with self.engine.begin() as c:
            self._check_fence(c)
            yield c

    def check_fence(self) -> None:
        """Raise NotLeader unless this store's epoch still holds the lease: what a driver
        calls just before it acts on the world."""
        with self.write():
            pass

    def acquire_lease(self, holder: str, address: str, lease_s: float) -> tuple[int, float] | None:
        """Take the lease if it is free, expired or ours: a new epoch, (epoch, since in the
        database's clock). None: another replica holds it (or a race was lost)."""
        held = self.lease()
        if held is not None and held["valid"] and held["holder"] != holder:
            return None  # the common case for a follower: no row lock taken
        try:
            with self.engine.begin() as c:
                if self.engine.dialect.name == "postgresql":
                    # A lock held by a stalled writer must not stall the election.
                    c.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
                row = c.execute(
                    select(leases).where(leases.c.name == LEASE).with_for_update()
                ).first()
                now = float(c.execute(select(self._db_now())).scalar_one())
                values = {"holder": holder, "since": now, "expires": now + lease_s}
                if row is None:
                    c.execute(insert(leases).values(name=LEASE, epoch=1, address=address, **values))
                    return 1, now
                if row.holder != holder and row.expires > now:
                    return None
                epoch = int(row.epoch) + 1
                c.execute(
                    update(leases)
                    .where(leases.c.name == LEASE, leases.c.epoch == row.epoch)
                    .values(epoch=epoch, address=address, **values)
                )
                return epoch, now
        except (IntegrityError, OperationalError):
            return None  # another replica inserted first, or the lock wait timed out

    def renew_lease(self, holder: str, epoch: int, lease_s: float) -> float | None:
        """Extend our lease; the new expiry, or None when another epoch holds it now."""
        with self.engine.begin() as c:
            now = float(c.execute(select(self._db_now())).scalar_one())
            res = c.execute(
                update(leases)
                .where(leases.c.name == LEASE, leases.c.holder == holder, leases.c.epoch == epoch)
                .values(expires=now + lease_s)
            )
            return now + lease_s if res.rowcount == 1 else None

    def release_lease(self, holder: str, epoch: int) -> bool:
        """End our lease now (a clean stop): a follower takes over without waiting."""
        with self.engine.begin() as c:
            res = c.execute(
                update(leases)
                .where(leases.c.name == LEASE, leases.c.holder == holder, leases.c.epoch == epoch)
                .values(expires=0.0)
            )
            return res.rowcount == 1

    def lease(self) -> dict[str, Any] | None:
        """The lease row and ``valid`` (unexpired in the database's clock)."""
        with self.engine.connect() as c:
            row = c.execute(
                select(leases, self._db_now().label("db_now")).where(leases.c.name == LEASE)
            ).first()
        if row is None:
            return None
        doc = dict(row._mapping)
        doc["valid"] = float(doc["expires"]) > float(doc.pop("db_now"))
        return doc

    # -- measurements -------------------------------------------------------
    def add_measurements(self, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        # The driver's own bulk path: SQLAlchemy's per-row parameter handling would cost
        # more than the insert (docs/controller.md, "Storage").
        keys = MEASUREMENT_KEYS
        tuples = [tuple(map(r.get, keys)) for r in rows]
        cols = ", ".join(MEASUREMENT_KEYS)
        with self.write() as c:
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
        with self.write() as c:
            old = c.execute(
                select(plans.c.id, plans.c.state, plans.c.expires, plans.c.dry_run).where(
                    plans.c.user == user, plans.c.kind == kind, plans.c.state.in_(OPEN_STATES)
                )
            ).all()
            if refresh:
                for oid, ostate, oexp, odry in old:
                    if ostate != PlanState.RECOMMENDED or odry != dry_run:
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
                        .where(plans.c.id == oid, plans.c.state == PlanState.RECOMMENDED)
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
                self._move_plan(c, oid, ostate, PlanState.SUPERSEDED, f"superseded by {pid}")
            c.execute(
                insert(plans).values(
                    id=pid,
                    created=now,
                    updated=now,
                    user=user,
                    kind=kind,
                    state=PlanState.RECOMMENDED,
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
                    ts=now,
                    plan_id=pid,
                    from_state=None,
                    to_state=PlanState.RECOMMENDED,
                    note=reason,
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
                        state=ActionState.PENDING,
                        attempts=0,
                    )
                )
        return pid, False

    def expire_plans(self, now: float | None = None) -> list[str]:
        """Recommended plans whose approval window ended become ``expired``."""
        t = self._now() if now is None else now
        with self.write() as c:
            rows = c.execute(
                select(plans.c.id).where(
                    plans.c.state == PlanState.RECOMMENDED,
                    plans.c.expires.is_not(None),
                    plans.c.expires < t,
                )
            ).all()
            return [
                str(r.id)
                for r in rows
                if self._move_plan(
                    c, r.id, PlanState.RECOMMENDED, PlanState.EXPIRED, "not approved in time"
                )
            ]

    def _move_plan(self, c: Any, pid: str, frm: PlanState, to: PlanState, note: str | None) -> bool:
        if to not in PLAN_MOVES.get(frm, ()):
            raise InputError(
                "plan.state",
                f"{frm} -> {to}",
                f"allowed from {frm}: {[s.value for s in PLAN_MOVES.get(frm, ())]}",
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

    def move_plan(self, pid: str, frm: PlanState, to: PlanState, note: str | None = None) -> bool:
        """Compare-and-set a plan's state; False when it was not in ``frm`` any more."""
        with self.write() as c:
            return self._move_plan(c, pid, frm, to, note)

    def approve(self, pid: str, by: str) -> None:
        expired: float | None = None
        with self.write() as c:
            row = c.execute(select(plans.c.state, plans.c.expires).where(plans.c.id == pid)).first()
            if row is None:
                raise InputError("PLAN", pid, "no such plan")
            recommended = row.state == PlanState.RECOMMENDED
            if recommended and row.expires is not None and row.expires < self._now():
                self._move_plan(
                    c, pid, PlanState.RECOMMENDED, PlanState.EXPIRED, "not approved in time"
                )
                expired = float(row.expires)  # committed, then refused below
            elif row.state != PlanState.RECOMMENDED:
                raise InputError(
                    "PLAN", pid, f"is {row.state}; only a recommended plan is approved"
                )
            elif not self._move_plan(
                c, pid, PlanState.RECOMMENDED, PlanState.APPROVED, f"approved by {by}"
            ):
                raise InputError("PLAN", pid, "changed state meanwhile; try again")
            else:
                c.execute(update(plans).where(plans.c.id == pid).values(approved_by=by))
        if expired is not None:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expired))
            raise InputError("PLAN", pid, f"expired at {when} without approval")

    def move_action(
        self,
        aid: str,
        frm: ActionState,
        to: ActionState,
        error: str | None = None,
        undo: Mapping[str, Any] | None = None,
    ) -> bool:
        if to not in ACTION_MOVES.get(frm, ()):
            raise InputError("action.state", f"{frm} -> {to}", "not an allowed transition")
        now = self._now()
        values: dict[str, Any] = {"state": to}
        if to == ActionState.ONGOING:
            values["started"] = now
            values["attempts"] = actions.c.attempts + 1
        if to in (
            ActionState.SUCCEEDED,
            ActionState.FAILED,
            ActionState.REVERTED,
            ActionState.SKIPPED,
        ):
            values["finished"] = now
        if error is not None:
            values["error"] = error
        if undo is not None:
            values["undo"] = dict(undo)
        with self.write() as c:
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
        with self.write() as c:
            res = c.execute(
                update(actions)
                .where(actions.c.id == aid, actions.c.state == ActionState.ONGOING)
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
                    from_state=ActionState.ONGOING,
                    to_state=ActionState.ONGOING,
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
        limit: int | None = 1000,
    ) -> list[dict[str, Any]]:
        """Newest first; ``limit=None`` returns every matching plan (a restart must see
        them all)."""
        q = select(plans).order_by(plans.c.created.desc(), plans.c.id).limit(limit)
        if isinstance(state, str):
            if state not in state_names(PlanState):
                raise InputError("state", state, f"one of {state_names(PlanState)}")
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
        return {s.value: got.get(s, 0) for s in PlanState}

    # -- controller state -----------------------------------------------------
    def get_state(self, key: str) -> Any:
        with self.engine.connect() as c:
            return c.execute(select(state.c.value).where(state.c.key == key)).scalar_one_or_none()

    def get_states(self, keys: Sequence[str]) -> dict[str, Any]:
        """The stored values of those ``keys`` that exist: one query per 500 keys, so a
        controller with 10,000 users starts from 20 reads, not 10,000."""
        out: dict[str, Any] = {}
        with self.engine.connect() as c:
            for i in range(0, len(keys), 500):
                q = select(state.c.key, state.c.value).where(state.c.key.in_(keys[i : i + 500]))
                out.update({str(k): v for k, v in c.execute(q)})
        return out

    def put_states(self, values: Mapping[str, Any]) -> None:
        """Insert or replace many keys in one transaction and one statement."""
        if not values:
            return
        now = self._now()
        ins = (pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert)(state)
        upsert = ins.on_conflict_do_update(
            index_elements=[state.c.key],
            set_={"value": ins.excluded.value, "updated": ins.excluded.updated},
        )
        with self.write() as c:
            c.execute(upsert, [{"key": k, "value": v, "updated": now} for k, v in values.items()])

    def put_state(self, key: str, value: Any) -> None:
        self.put_states({key: value})
