"""Bounded storage: measurements pruned by age and row count, after being down-sampled
into the ``history`` table that reports and the web view read.

The measurements table grows by every probe sample (about 12 rows/s for one user
and three DCs); nothing reads samples older than a few S' windows except reports.
So every ``storage.retention.interval_s`` the service (1) rolls the samples of
closed buckets into ``history`` (one row per bucket and measured path: mean, min
and max RTT of the answered probes, jitter, availability, probes sent), keeping
a watermark in the ``state`` table so nothing is rolled twice, then (2) deletes
samples and window aggregates older than ``max_age_s`` and the oldest rows
beyond ``max_rows``, and history rows older than ``history.max_age_s``. Deletes
run in chunks (short transactions: the service keeps writing meanwhile).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select

from pacao.controller.storage import Store, history, measurements

#: state-table key of the end of the last bucket rolled into history
WATERMARK = "history/rolled_until"
#: rows deleted per transaction
CHUNK = 20_000


@dataclass(frozen=True)
class Pruned:
    rolled: int  # history rows written
    measurements: int  # measurement rows deleted
    history: int  # history rows deleted


def _aggregate(rows: Iterable[Mapping[str, Any]], bucket_s: float) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        start = math.floor(r["ts"] / bucket_s) * bucket_s
        groups[(start, r["path"], r["xtr"], r["subject"], r["rloc"], r["peer"])].append(r)
    out = []
    for (start, path, xtr, subject, rloc, peer), rs in groups.items():
        rs.sort(key=lambda r: r["ts"])
        rtts = [float(r["rtt_ms"]) for r in rs if r["rtt_ms"] is not None]
        agent = [float(r["jitter_ms"]) for r in rs if r["jitter_ms"] is not None]
        if agent:
            jitter: float | None = sum(agent) / len(agent)
        elif len(rtts) > 1:  # mean |RTT difference| of consecutive answered probes
            jitter = sum(abs(b - a) for a, b in itertools.pairwise(rtts)) / (len(rtts) - 1)
        else:
            jitter = None
        sent = sum(int(r["count"] or 1) for r in rs)
        out.append(
            {
                "ts": start,
                "bucket_s": bucket_s,
                "path": path,
                "xtr": xtr,
                "subject": subject,
                "rloc": rloc,
                "peer": peer,
                "rtt_ms": sum(rtts) / len(rtts) if rtts else None,
                "rtt_min_ms": min(rtts) if rtts else None,
                "rtt_max_ms": max(rtts) if rtts else None,
                "jitter_ms": jitter,
                "availability": len(rtts) / sent if sent else None,
                "count": sent,
            }
        )
    return out


def roll_up(store: Store, bucket_s: float, until: float) -> int:
    """Down-sample the samples of every bucket that ended by ``until`` and was not rolled
    yet; returns the history rows written."""
    end = math.floor(until / bucket_s) * bucket_s
    mark = store.get_state(WATERMARK)
    start = float(mark) if mark is not None else None
    with store.engine.connect() as c:
        if start is None:
            first = c.execute(
                select(func.min(measurements.c.ts)).where(measurements.c.kind == "sample")
            ).scalar_one_or_none()
            if first is None:
                return 0
            start = math.floor(float(first) / bucket_s) * bucket_s
    step = bucket_s * max(1, math.floor(3600 / bucket_s))  # about an hour per transaction
    written = 0
    cols = [measurements.c[k] for k in ("ts", "path", "xtr", "subject", "rloc", "peer")]
    cols += [measurements.c[k] for k in ("rtt_ms", "jitter_ms", "count")]
    while start < end:
        stop = min(end, start + step)
        with store.write() as c:
            rows = c.execute(
                select(*cols).where(
                    measurements.c.ts >= start,
                    measurements.c.ts < stop,
                    measurements.c.kind == "sample",
                )
            ).all()
            agg = _aggregate([dict(r._mapping) for r in rows], bucket_s)
            if agg:
                c.execute(insert(history), agg)
            written += len(agg)
        store.put_state(WATERMARK, stop)
        start = stop
    return written


def _delete_chunks(store: Store, table: Any, where: Any) -> int:
    total = 0
    while True:
        with store.write() as c:
            ids = select(table.c.id).where(where).limit(CHUNK).scalar_subquery()
            n = c.execute(delete(table).where(table.c.id.in_(ids))).rowcount
        total += int(n)
        if n < CHUNK:
            return total


def prune(
    store: Store,
    now: float,
    max_age_s: float | None,
    max_rows: int | None,
    history_max_age_s: float | None,
) -> tuple[int, int]:
    """Delete old measurements (age, then rows) and old history; returns the counts."""
    gone = 0
    if max_age_s is not None:
        gone += _delete_chunks(store, measurements, measurements.c.ts < now - max_age_s)
    if max_rows is not None:
        with store.engine.connect() as c:
            top = c.execute(select(func.max(measurements.c.id))).scalar_one_or_none()
        if top is not None and top > max_rows:
            # ids grow with inserts, so the newest max_rows rows are id > top - max_rows
            # (gaps only make fewer rows survive the bound, never more)
            gone += _delete_chunks(store, measurements, measurements.c.id <= top - max_rows)
    old = 0
    if history_max_age_s is not None:
        old = _delete_chunks(store, history, history.c.ts < now - history_max_age_s)
    return gone, old


def maintain(store: Store, cfg: Any, now: float) -> Pruned:
    """One retention pass: roll up, then prune (what is pruned was rolled first)."""
    st = cfg.storage
    lag = 2 * cfg.timers.s1  # samples of a bucket arrive up to a poll after their time
    rolled = roll_up(store, st.history.bucket_s, now - lag)
    m, h = prune(store, now, st.retention.max_age_s, st.retention.max_rows, st.history.max_age_s)
    return Pruned(rolled, m, h)


def query(
    store: Store,
    subject: str | None = None,
    path: str | None = None,
    since: float | None = None,
    until: float | None = None,
    step_s: float | None = None,
    limit: int = 10000,
) -> list[dict[str, Any]]:
    """History rows oldest first; with ``step_s``, buckets merged into steps of that
    length (means weighted by answered probes, min of mins, max of maxes)."""
    q = select(history).order_by(history.c.ts, history.c.id)
    if subject is not None:
        q = q.where(history.c.subject == subject)
    if path is not None:
        q = q.where(history.c.path == path)
    if since is not None:
        q = q.where(history.c.ts >= since)
    if until is not None:
        q = q.where(history.c.ts < until)
    if step_s is None:
        with store.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q.limit(limit))]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    with store.engine.connect() as c:
        for r in c.execute(q):
            d = dict(r._mapping)
            start = math.floor(d["ts"] / step_s) * step_s
            groups[(start, d["path"], d["xtr"], d["subject"], d["rloc"], d["peer"])].append(d)
    out = []
    for (start, path_, xtr, subj, rloc, peer), rs in sorted(groups.items(), key=lambda g: g[0][0]):
        answered = [(r["availability"] or 0.0) * r["count"] for r in rs]
        n_ans = sum(answered)
        sent = sum(r["count"] for r in rs)

        def wmean(key: str, rs: list[dict[str, Any]] = rs, w: list[float] = answered) -> Any:
            pairs = [(r[key], x) for r, x in zip(rs, w, strict=True) if r[key] is not None]
            tot = sum(x for _, x in pairs)
            return sum(v * x for v, x in pairs) / tot if tot > 0 else None

        mins = [r["rtt_min_ms"] for r in rs if r["rtt_min_ms"] is not None]
        maxs = [r["rtt_max_ms"] for r in rs if r["rtt_max_ms"] is not None]
        out.append(
            {
                "ts": start,
                "bucket_s": step_s,
                "path": path_,
                "xtr": xtr,
                "subject": subj,
                "rloc": rloc,
                "peer": peer,
                "rtt_ms": wmean("rtt_ms"),
                "rtt_min_ms": min(mins) if mins else None,
                "rtt_max_ms": max(maxs) if maxs else None,
                "jitter_ms": wmean("jitter_ms"),
                "availability": n_ans / sent if sent else None,
                "count": sent,
            }
        )
    return out[:limit]
