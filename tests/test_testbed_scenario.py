"""Scenario timelines: validation against a topology and event timing (no root needed)."""

from __future__ import annotations

from typing import Any

import pytest

from pacao.errors import InputError
from pacao.testbed.topo.scenario import Event, load_scenario, play, scenario_from_dict
from pacao.testbed.topo.topology import default_topology_path, load_topology, topology_from_dict
from testbed_support import SMALL


def doc(*events: dict[str, Any], duration: float = 10) -> dict[str, Any]:
    return {"name": "t", "duration": duration, "events": list(events)}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"at": 1, "link": "nope", "delay": 5}, "link"),
        ({"at": 11, "link": "ua", "delay": 5}, "events[0].at"),
        ({"at": 1, "link": "ua", "loss": 101}, "events[0].loss"),
        ({"at": 1, "link": "ua"}, "events[0]"),
        ({"at": 1, "link": "ua", "rate": "quick"}, "events[0].rate"),
        (
            {"at": 1, "xtr": "user", "prefix": "10.2.0.0/24", "rloc": "1.1.1.1", "priority": 1},
            "events[0].xtr",
        ),
        ({"at": 1, "xtr": "ux", "prefix": "10.2.0.0/24", "priority": 1}, "events[0].rloc"),
        ({"at": 1, "delay": 3}, "events[0]"),
        ({"at": 1, "egress": "ax", "prefix": "10.1.0.0/24", "via": "vm"}, "events[0].via"),
    ],
)
def test_bad_events(event: dict[str, Any], field: str) -> None:
    topo = topology_from_dict(SMALL)
    with pytest.raises(InputError) as err:
        scenario_from_dict(doc(event), topo)
    assert err.value.field == field


def test_events_sorted_and_played_at_scaled_times() -> None:
    topo = topology_from_dict(SMALL)
    sc = scenario_from_dict(
        doc(
            {"at": 8, "link": "ua", "delay": 5},
            {"at": 2, "link": "ua", "delay": 50, "jitter": 3, "rate": "1mbit"},
            {"at": 4, "xtr": "ux", "prefix": "10.2.0.0/24", "rloc": "172.16.0.2", "priority": 9},
        ),
        topo,
    )
    assert [e.at for e in sc.events] == [2, 4, 8]
    assert sc.events[0].args == {"delay_ms": 50, "jitter_ms": 3, "rate_bps": 1_000_000}
    now = [0.0]
    applied: list[tuple[float, Event]] = []

    def sleep(dt: float) -> None:
        now[0] += dt

    out = play(sc, lambda e: applied.append((now[0], e)), 0.5, clock=lambda: now[0], sleep=sleep)
    assert [t for t, _ in applied] == [1.0, 2.0, 4.0]
    assert [t for t, _ in out] == [1.0, 2.0, 4.0]
    assert now[0] == 5.0  # waits to the scaled end of the scenario


def test_shipped_table1_scenario_fits_fig5() -> None:
    from importlib.resources import files
    from pathlib import Path

    topo = load_topology(default_topology_path())
    sc = load_scenario(Path(str(files("pacao.data").joinpath("testbed-table1.yaml"))), topo)
    stress = [e for e in sc.events if e.kind == "link"]
    # +400 ms RTT on the user-TelcoCenter path from 125 s to 385 s (Table I)
    base = topo.link("inet-telco").impairment.delay_ms
    assert (stress[0].at, 2 * (stress[0].args["delay_ms"] - base)) == (125, 400)
    assert (stress[-1].at, stress[-1].args["delay_ms"]) == (385, base)
    assert sc.duration == 450
