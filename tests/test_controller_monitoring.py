"""Monitoring: both stats formats, de-duplication, window aggregates, persistence, events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pacao.controller.config import ControllerConfig, load_config
from pacao.controller.monitoring import (
    FileSource,
    Monitor,
    PathDown,
    SamplesIngested,
    SourceError,
    WindowClosed,
)
from pacao.controller.storage import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg(monkeypatch: pytest.MonkeyPatch) -> ControllerConfig:
    monkeypatch.setenv("PACAO_API_TOKEN", "t")
    return load_config(ROOT / "examples/controller.yaml")


def doc(samples: list[dict[str, Any]], rloc: str = "192.0.2.1") -> dict[str, Any]:
    return {"format": "pacao-xtr-stats/1", "rloc": rloc, "samples": samples}


def probe(ts: float, rtt: float | None, **kw: Any) -> dict[str, Any]:
    return {
        "kind": "rloc-probe",
        "ts": ts,
        "eid": "10.9.0.0/24",
        "rloc": "203.0.113.50",
        "rtt_ms": rtt,
        **kw,
    }


def test_samples_windows_and_events(cfg: ControllerConfig, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    mon = Monitor(cfg, store, [])
    events: list[Any] = []
    mon.subscribers.append(events.append)
    d = doc(
        [
            probe(1.0, 30.0),
            probe(2.0, 34.0),
            probe(3.0, None),
            probe(4.0, 32.0),
            {"kind": "eid-probe", "ts": 2.5, "eid": "10.1.0.10/32", "rtt_ms": 0.5},
            probe(5.0, 1.0, rloc="203.0.113.77", eid="10.200.0.0/16"),  # not a user of ours
            {"kind": "bogus", "ts": 1.0},
            probe(float("nan"), 3.0),
        ]
    )
    assert mon.ingest("telcocenter", d) == 5
    errors = [e for e in events if isinstance(e, SourceError)]
    assert len(errors) == 2 and isinstance(events[-1], SamplesIngested)
    assert mon.ingest("telcocenter", d) == 0  # re-reading the same file adds nothing
    assert store.count_measurements() == 5
    stats = mon.window(0.0, 10.0)
    by_path = {s.path: s for s in stats}
    u = by_path["user-xtr"]
    assert (u.subject, u.xtr, u.rloc, u.count) == ("nss-user", "telcocenter", "192.0.2.1", 4)
    assert u.rtt_ms == pytest.approx(32.0) and u.availability == 0.75
    assert u.jitter_ms == pytest.approx((4 + 2) / 2)  # |34-30|, |32-34|
    assert by_path["xtr-vm"].subject == "ftp-server" and by_path["xtr-vm"].rtt_ms == 0.5
    assert store.count_measurements() == 7  # the two window rows, stored before use
    assert isinstance(events[-1], WindowClosed)
    mon.ingest("telcocenter", doc([probe(11.0, None), probe(12.0, None)]))
    mon.window(10.0, 20.0)
    assert any(isinstance(e, PathDown) and e.stat.availability == 0.0 for e in events)


def test_lisp_xtr_snapshot_counters_become_samples(cfg: ControllerConfig, tmp_path: Path) -> None:
    mon = Monitor(cfg, Store(f"sqlite:///{tmp_path / 'm.db'}"), [])

    def snap(t: float, replies: int, lost: int, rtt: float) -> dict[str, Any]:
        loc = {
            "address": "203.0.113.50",
            "priority": 1,
            "weight": 50,
            "up": lost < 3,
            "rtt_ms": rtt,
            "jitter_ms": 1.5,
            "lost": lost,
            "probes": replies + lost,
            "replies": replies,
        }
        vm_loc = {
            "address": "192.0.2.1",
            "rtt_ms": 0.4,
            "jitter_ms": 0.1,
            "lost": 0,
            "probes": replies,
            "replies": replies,
        }
        return {
            "time": t,
            "listen": "192.0.2.2:4342",
            "database": [],
            "counters": {},
            "map_cache": [
                {"prefix": "10.9.0.0/24", "locators": [loc]},
                {"prefix": "10.1.0.10/32", "locators": [vm_loc]},
            ],
        }

    assert mon.ingest("marilyn", snap(1.0, 3, 0, 40.0)) == 6
    assert mon.ingest("marilyn", snap(2.0, 5, 0, 42.0)) == 4
    assert mon.ingest("marilyn", snap(3.0, 5, 2, 42.0)) == 2  # two timeouts
    assert mon.ingest("marilyn", snap(3.0, 5, 2, 42.0)) == 0  # unchanged snapshot
    stats = {s.path: s for s in mon.window(0.0, 10.0)}
    u = stats["user-xtr"]
    assert (u.xtr, u.rloc, u.peer, u.count) == ("marilyn", "192.0.2.2", "203.0.113.50", 7)
    assert u.availability == pytest.approx(5 / 7) and u.jitter_ms == 1.5
    assert stats["xtr-vm"].peer == "192.0.2.1" and stats["xtr-vm"].subject == "ftp-server"


def test_file_source_and_unreadable_sources(cfg: ControllerConfig, tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps(doc([probe(1.0, 30.0)], rloc="198.51.100.1")))
    mon = Monitor(
        cfg,
        Store(f"sqlite:///{tmp_path / 'm.db'}"),
        [FileSource("lip6", f), FileSource("rezopole", tmp_path / "missing.json")],
    )
    events: list[Any] = []
    mon.subscribers.append(events.append)
    assert asyncio.run(mon.poll()) == 1
    assert [e.source for e in events if isinstance(e, SourceError)] == ["rezopole"]


def test_sources_are_polled_at_once_and_the_last_aggregate_is_carried(
    cfg: ControllerConfig, tmp_path: Path
) -> None:
    """A slow agent must not hold the others' samples back (they would miss their S'
    window); a path without samples in a window keeps its last aggregate for
    ``carry_windows`` S' (lost probes included: a dead path stays dead), then is gone."""
    from pacao.controller.monitoring import LastKnown

    started: list[str] = []

    class Slow:
        """Answers only once every source's fetch has started: a poll that waits for one
        source before asking the next never gets an answer (an event, not a stopwatch)."""

        def __init__(self, name: str, rloc: str) -> None:
            self.name, self.rloc = name, rloc

        async def fetch(self) -> Any:
            started.append(self.name)
            if len(started) == len(srcs):
                all_started[0].set()
            await asyncio.wait_for(all_started[0].wait(), 10)
            return doc([probe(5.0, 30.0)], rloc=self.rloc)

    srcs = [Slow("telcocenter", "192.0.2.1"), Slow("marilyn", "192.0.2.2")]
    mon = Monitor(cfg, Store(f"sqlite:///{tmp_path / 'p.db'}"), srcs)
    all_started: list[asyncio.Event] = []

    async def go() -> int:
        all_started.append(asyncio.Event())
        return await mon.poll()

    assert asyncio.run(go()) == 2  # both answered: polled concurrently
    assert started == ["telcocenter", "marilyn"]
    w1 = mon.window(0, 10)
    assert {w.rloc for w in w1} == {"192.0.2.1", "192.0.2.2"}
    carry = LastKnown(max_age_s=2 * 10)
    assert carry.fill(w1, 10) == w1
    assert carry.fill([], 20) == w1 and carry.fill([], 30) == w1  # carried 2 windows
    assert carry.fill([], 40) == []  # then unknown
