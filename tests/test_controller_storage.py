"""Storage on SQLite and on a real PostgreSQL server started by the test itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller_pg import postgres_server
from pacao.controller.storage import Store
from pacao.errors import InputError


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'c.db'}")
    else:
        url = request.getfixturevalue("pg_url")
        s = Store(url)
        from pacao.controller.storage import metadata

        metadata.drop_all(s.engine)
        metadata.create_all(s.engine)
    assert s.engine.dialect.name == request.param
    yield s
    s.close()


def sample(i: int, subject: str = "alice") -> dict[str, object]:
    return {
        "ts": 1000.0 + i,
        "kind": "sample",
        "path": "user-xtr",
        "xtr": "dc1",
        "subject": subject,
        "rloc": "192.0.2.1",
        "rtt_ms": 30.0 + i,
        "count": 1,
    }


def test_measurements_round_trip(store: Store) -> None:
    assert store.add_measurements([sample(i) for i in range(50)] + [sample(0, "bob")]) == 51
    got = store.measurements(subject="alice", limit=10)
    assert len(got) == 10 and got[0]["rtt_ms"] == 79.0  # newest first
    assert got[0]["jitter_ms"] is None
    assert store.count_measurements() == 51


def test_plan_lifecycle_supersede_and_compare_and_set(store: Store) -> None:
    steps = [("EntrySwitch", {"vm": "vm1", "to": "192.0.2.2"})]
    p1 = store.create_plan("alice", "entry_switch", "r", {"a": 1}, {"s": 2.5}, steps)
    p2 = store.create_plan("alice", "entry_switch", "r", {}, {}, steps)
    assert store.plan(p1)["state"] == "superseded"  # type: ignore[index]
    store.approve(p2, by="test")
    with pytest.raises(InputError, match="only a recommended plan"):
        store.approve(p2, by="test")
    with pytest.raises(InputError, match="no such plan"):
        store.approve("nope", by="test")
    assert store.move_plan(p2, "approved", "ongoing")
    assert not store.move_plan(p2, "approved", "ongoing")  # lost the race: no double start
    a = store.plan(p2)["actions"][0]  # type: ignore[index]
    assert a["state"] == "pending" and a["params"] == {"vm": "vm1", "to": "192.0.2.2"}
    assert store.move_action(a["id"], "pending", "ongoing", undo={"prio": {"x": 1}})
    assert store.move_action(a["id"], "ongoing", "succeeded")
    with pytest.raises(InputError):
        store.move_action(a["id"], "succeeded", "ongoing")
    assert store.move_plan(p2, "ongoing", "succeeded")
    p = store.plan(p2)
    assert p is not None and p["approved_by"] == "test" and p["scores"] == {}
    assert p["actions"][0]["attempts"] == 1 and p["actions"][0]["undo"] == {"prio": {"x": 1}}
    hist = [(t["from_state"], t["to_state"]) for t in store.transitions(p2)]
    assert hist[0] == (None, "recommended") and hist[-1] == ("ongoing", "succeeded")
    assert ("pending", "ongoing") in hist
    counts = store.plan_counts()
    assert counts["succeeded"] == 1 and counts["superseded"] == 1 and counts["failed"] == 0
    assert [x["id"] for x in store.plans(state="succeeded")] == [p2]


def test_state_upsert(store: Store) -> None:
    assert store.get_state("user/alice") is None
    store.put_state("user/alice", {"entry": "192.0.2.1", "last_switch": 5.0})
    store.put_state("user/alice", {"entry": "192.0.2.2", "last_switch": 9.0})
    assert store.get_state("user/alice") == {"entry": "192.0.2.2", "last_switch": 9.0}


def test_many_states_in_one_read_and_one_upsert(store: Store) -> None:
    store.put_state("user/u3", {"entry": "old"})
    values = {f"user/u{i}": {"entry": f"192.0.2.{i % 250}", "i": i} for i in range(1200)}
    store.put_states(values)  # inserts 1,199 keys and updates user/u3
    keys = [*values, "user/nobody"]  # more than one query's 500 keys, one absent
    assert store.get_states(keys) == values
    assert store.get_state("user/u3") == {"entry": "192.0.2.3", "i": 3}
    store.put_states({"user/u3": {"entry": "new"}})
    assert store.get_states(["user/u3", "user/u4"]) == {
        "user/u3": {"entry": "new"}, "user/u4": values["user/u4"],
    }  # fmt: skip
    store.put_states({})
    assert store.get_states([]) == {}


def test_bad_url_is_one_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"storage\.url"):
        Store("nosuchdb://x")
    with pytest.raises(InputError, match=r"storage\.url"):
        Store(f"sqlite:///{tmp_path}/missing/dir/x.db")


def test_a_database_of_an_older_version_gets_the_new_plan_columns(store: Store) -> None:
    with store.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE plans DROP COLUMN expires")
        c.exec_driver_sql("ALTER TABLE plans DROP COLUMN refreshed")
    store.engine.dispose()
    again = Store(store.url)
    pid, refreshed = again.propose_plan("alice", "entry_switch", "r", {}, {}, [], expires=5e9)
    got = again.plan(pid)
    assert got is not None and (got["expires"], got["refreshed"], refreshed) == (5e9, 0, False)
    again.close()


def retention_cfg(max_age_s: float | None, max_rows: int | None) -> Any:
    from types import SimpleNamespace as NS

    return NS(
        timers=NS(s1=10.0),
        storage=NS(
            retention=NS(max_age_s=max_age_s, max_rows=max_rows, interval_s=60.0),
            history=NS(bucket_s=60.0, max_age_s=3600.0),
        ),
    )


def test_retention_rolls_samples_into_history_then_prunes(store: Store) -> None:
    from pacao.controller import retention

    rng = np.random.default_rng(7)
    rows = []
    for who in ("alice", "bob"):
        for i in range(1200):  # 20 min, one probe per second, ~10 % lost
            rtt = None if rng.random() < 0.1 else float(rng.uniform(20, 80))
            rows.append({**sample(0, who), "ts": 6000.0 + i, "rtt_ms": rtt})
    store.add_measurements(rows)
    cfg = retention_cfg(max_age_s=300.0, max_rows=None)
    now = 6000.0 + 1200
    done = retention.maintain(store, cfg, now)
    # Buckets that ended by now - 2 S' = 7180: 6000..7140, 19 per subject.
    assert done.rolled == 38
    got = retention.query(store, subject="alice")
    assert [h["ts"] for h in got] == [6000.0 + 60 * k for k in range(19)]
    for h in got:
        mine = [r for r in rows if r["subject"] == "alice" and h["ts"] <= r["ts"] < h["ts"] + 60]
        rtts = np.array([r["rtt_ms"] for r in mine if r["rtt_ms"] is not None])
        assert h["count"] == 60 and h["availability"] == pytest.approx(rtts.size / 60)
        assert h["rtt_ms"] == pytest.approx(rtts.mean())
        assert (h["rtt_min_ms"], h["rtt_max_ms"]) == (rtts.min(), rtts.max())
        assert h["jitter_ms"] == pytest.approx(np.abs(np.diff(rtts)).mean())
    # Samples older than 300 s are gone, the newer ones kept.
    assert done.measurements == 2 * 900
    left = store.measurements(limit=10000)
    assert len(left) == 600 and min(r["ts"] for r in left) == now - 300
    # Again: nothing is rolled twice; the next bucket only once it ended.
    assert retention.maintain(store, cfg, now).rolled == 0
    assert retention.maintain(store, cfg, now + 60).rolled == 2
    assert len(retention.query(store)) == 40
    # Coarser steps for a report: weighted by answered probes.
    five = retention.query(store, subject="bob", step_s=300.0)
    assert [h["ts"] for h in five] == [6000.0, 6300.0, 6600.0, 6900.0]
    bob = [r for r in rows if r["subject"] == "bob" and 6000 <= r["ts"] < 6300]
    ans = np.array([r["rtt_ms"] for r in bob if r["rtt_ms"] is not None])
    assert five[0]["rtt_ms"] == pytest.approx(ans.mean())
    assert five[0]["count"] == 300 and five[0]["availability"] == pytest.approx(ans.size / 300)
    # History has its own age bound.
    assert retention.prune(store, 6000.0 + 3600 + 601, None, None, 3600.0) == (0, 22)


def test_retention_bounds_the_row_count(store: Store) -> None:
    from pacao.controller import retention

    store.add_measurements([sample(i) for i in range(5000)])
    done = retention.maintain(store, retention_cfg(None, 1200), 1000.0 + 5000)
    assert done.measurements == 3800
    left = store.measurements(limit=10000)
    assert len(left) == 1200 and min(r["ts"] for r in left) == 1000.0 + 3800
    assert store.count_measurements() == 1200
