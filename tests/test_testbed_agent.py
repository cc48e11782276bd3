"""The testbed agent's push hook: the data plane is touched only when what it forwards
with changes (a steady flow must not see the control plane's periodic refreshes).

No root needed: the data plane is stood in for by its control channel (a UNIX socket
served by a thread that records every request).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pacao.lisp.address import EidPrefix
from pacao.lisp.messages import Locator
from pacao.lisp.xtr import (
    LocatorDown,
    LocatorState,
    MappingAdded,
    MappingRemoved,
    PrioritiesChanged,
)
from pacao.testbed.daemons import control
from pacao.testbed.daemons.agent import Hook


@dataclass
class _Entry:
    locators: list[LocatorState]


@dataclass
class _Cache:
    table: dict[EidPrefix, _Entry] = field(default_factory=dict)


@dataclass
class _Xtr:
    cache: _Cache = field(default_factory=_Cache)
    stats: Counter[str] = field(default_factory=Counter)


@pytest.fixture
def dataplane(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    path = tmp_path / "dp.sock"
    ctl = control.listen(path)
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def command(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        return {"ok": True}

    def serve() -> None:
        import select

        while not stop.is_set():
            if select.select([ctl], [], [], 0.05)[0]:
                control.answer(ctl, command)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield path, seen
    stop.set()
    th.join(timeout=5)
    ctl.close()


PREFIX = EidPrefix.parse("10.2.0.0/24")


def _locs(prio: dict[str, int]) -> tuple[Locator, ...]:
    return tuple(Locator(IPv4Address(a), priority=p, weight=100) for a, p in prio.items())


def test_unchanged_map_cache_events_do_not_touch_the_data_plane(
    dataplane: tuple[Path, list[dict[str, Any]]],
) -> None:
    path, seen = dataplane
    xtr = _Xtr()
    hook = Hook(xtr, "user-xtr", path, None, None)  # type: ignore[arg-type]
    first = _locs({"172.16.0.2": 1, "172.16.0.3": 2})
    xtr.cache.table[PREFIX] = _Entry([LocatorState(x) for x in first])
    hook.on_event(MappingAdded(PREFIX, first, 10))
    assert [r["op"] for r in seen] == ["set"]
    # what the controller's re-registrations, SMR-invoked replies and repeated
    # CHANGE-PRIORITY messages produce when the priority set did not change
    for _ in range(5):
        hook.on_event(PrioritiesChanged(PREFIX, first))
        hook.on_event(MappingAdded(PREFIX, first, 10))
    assert len(seen) == 1
    assert xtr.stats["dataplane_push_unchanged"] == 10
    assert xtr.stats["dataplane_push"] == 1
    # a real switch is pushed once
    switched = _locs({"172.16.0.2": 2, "172.16.0.3": 1})
    xtr.cache.table[PREFIX] = _Entry([LocatorState(x) for x in switched])
    hook.on_event(PrioritiesChanged(PREFIX, switched))
    hook.on_event(PrioritiesChanged(PREFIX, switched))
    assert len(seen) == 2
    assert [x["priority"] for x in seen[1]["locators"]] == [2, 1]
    assert hook.best["10.2.0.0/24"] == "172.16.0.3"
    # a locator going down changes what is forwarded: pushed
    xtr.cache.table[PREFIX].locators[1].up = False
    hook.on_event(LocatorDown(PREFIX, "172.16.0.3", 3))
    assert len(seen) == 3 and seen[2]["locators"][1]["up"] is False
    # after a removal the same mapping must be pushed again (the data plane forgot it)
    hook.on_event(MappingRemoved(PREFIX, "expired"))
    assert seen[3] == {"op": "remove", "prefix": "10.2.0.0/24"}
    xtr.cache.table[PREFIX] = _Entry([LocatorState(x) for x in switched])
    hook.on_event(MappingAdded(PREFIX, switched, 10))
    assert [r["op"] for r in seen] == ["set", "set", "set", "remove", "set"]


def test_a_refused_push_is_retried_on_the_next_event(tmp_path: Path) -> None:
    """No data plane listening: the push fails and is not remembered as done."""
    xtr = _Xtr()
    hook = Hook(xtr, "user-xtr", tmp_path / "absent.sock", None, None)  # type: ignore[arg-type]
    locs = _locs({"172.16.0.2": 1})
    xtr.cache.table[PREFIX] = _Entry([LocatorState(x) for x in locs])
    hook.on_event(MappingAdded(PREFIX, locs, 10))
    hook.on_event(MappingAdded(PREFIX, locs, 10))
    assert hook.errors == 2
    assert xtr.stats["dataplane_push_unchanged"] == 0
