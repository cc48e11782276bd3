"""Storage on SQLite and on a real PostgreSQL server started by the test itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
