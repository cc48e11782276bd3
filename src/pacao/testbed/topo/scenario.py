"""Scenario timelines: at t seconds set a link's delay/jitter/loss/rate or an xTR priority.

YAML (docs/testbed.md):
    name: stress-telco
    duration: 450
    events:
      - {at: 125, link: inet-telco, delay: 53.5}
      - {at: 135, xtr: user-xtr, prefix: 10.2.0.0/24, rloc: 172.16.0.2, priority: 5}
      - {at: 135, egress: telco-xtr, prefix: 10.1.0.0/24, via: marilyn-xtr}
      - {at: 200, migrate: vm, dc: marilyn-dc}
      - {at: 385, link: inet-telco, delay: 3.5}
`--time-scale 0.1` plays it ten times faster (delays are not scaled).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml

from pacao.errors import InputError
from pacao.io import parse_yaml
from pacao.testbed.topo.schema import Doc, in_range, keys, number
from pacao.testbed.topo.topology import Topology, parse_rate


class _ScenarioDoc(Doc):
    unknown_key: ClassVar[str] = "allowed keys: name, duration, events"
    not_mapping: ClassVar[str] = "a mapping with name, duration, events"

    name: Any = None
    duration: Any = None
    events: Any = None


class _EventDoc(Doc):
    unknown_key: ClassVar[str] = "allowed: {allowed}"

    at: Any


class _LinkEvent(_EventDoc):
    link: Any
    delay: Annotated[float, in_range(0, 60_000)] = 0.0
    jitter: Annotated[float, in_range(0, 60_000)] = 0.0
    loss: Annotated[float, in_range(0, 100)] = 0.0
    rate: Any = None
    direction: Any = None


class _XtrEvent(_EventDoc):
    missing: ClassVar[str] = "required for an xtr event"

    xtr: Any
    prefix: Any
    rloc: Any
    priority: Annotated[float, in_range(0, 255)]
    weight: Annotated[float, in_range(0, 255)] = 100


class _EgressEvent(_EventDoc):
    missing: ClassVar[str] = "required for an egress event"

    egress: Any
    prefix: Any
    via: Any = None


class _MigrateEvent(_EventDoc):
    migrate: Any
    dc: Any = None


@dataclass(frozen=True)
class Event:
    at: float
    kind: str  # "link", "xtr", "egress" or "migrate"
    target: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    duration: float
    events: tuple[Event, ...]


def scenario_from_dict(doc: Any, topo: Topology) -> Scenario:
    """Validate a timeline against the topology it will run on."""
    top = keys(_ScenarioDoc, "scenario", doc)
    duration = number("duration", top.get("duration"), 0, 86_400)
    events: list[Event] = []
    if not isinstance(top.get("events"), list):
        raise InputError("events", top.get("events"), "a list of events")
    for i, ev in enumerate(top["events"]):
        where = f"events[{i}]"
        if not isinstance(ev, dict) or "at" not in ev:
            raise InputError(where, ev, "a mapping with 'at' and 'link' or 'xtr'")
        at = number(f"{where}.at", ev["at"], 0, duration)
        if "link" in ev:
            e = keys(_LinkEvent, where, ev)
            topo.link(str(e["link"]))
            args: dict[str, Any] = {
                name: e[key]
                for key, name in (
                    ("delay", "delay_ms"),
                    ("jitter", "jitter_ms"),
                    ("loss", "loss_pct"),
                )
                if key in e
            }
            if "rate" in e:
                args["rate_bps"] = parse_rate(f"{where}.rate", e["rate"])
            if "direction" in e:
                if e["direction"] not in ("both", "a2b", "b2a"):
                    raise InputError(f"{where}.direction", e["direction"], "both, a2b or b2a")
                args["direction"] = e["direction"]
            if not args:
                raise InputError(where, ev, "set at least one of delay, jitter, loss, rate")
            events.append(Event(at, "link", str(e["link"]), args))
        elif "xtr" in ev:
            e = keys(_XtrEvent, where, ev)
            node = topo.nodes.get(str(e["xtr"]))
            if node is None or node.role != "xtr":
                raise InputError(f"{where}.xtr", e["xtr"], "an xtr node of the topology")
            req: dict[str, Any] = {"op": "priority", "prefix": str(e["prefix"])}
            req["rloc"] = str(e["rloc"])
            req["priority"] = int(e["priority"])
            if "weight" in e:
                req["weight"] = int(e["weight"])
            events.append(Event(at, "xtr", node.name, req))
        elif "egress" in ev:
            e = keys(_EgressEvent, where, ev)
            for key in ("egress", "via"):
                node = topo.nodes.get(str(e.get(key)))
                if node is None or node.role != "xtr":
                    raise InputError(f"{where}.{key}", e.get(key), "an xtr node of the topology")
            args = {"prefix": str(e["prefix"]), "via": str(e["via"])}
            events.append(Event(at, "egress", str(e["egress"]), args))
        elif "migrate" in ev:
            e = keys(_MigrateEvent, where, ev)
            vm = topo.nodes.get(str(e["migrate"]))
            if vm is None or vm.role != "vm":
                raise InputError(f"{where}.migrate", e["migrate"], "a vm node of the topology")
            dc = topo.nodes.get(str(e.get("dc")))
            if dc is None or dc.role != "dc":
                raise InputError(f"{where}.dc", e.get("dc"), "a dc node of the topology")
            events.append(Event(at, "migrate", vm.name, {"dc": dc.name}))
        else:
            raise InputError(where, ev, "an event needs 'link', 'xtr', 'egress' or 'migrate'")
    events.sort(key=lambda e: e.at)
    return Scenario(str(top.get("name", "scenario")), duration, tuple(events))


def load_scenario(path: Path, topo: Topology) -> Scenario:
    try:
        doc = parse_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError("scenario", str(path), f"a readable YAML file ({exc})") from None
    return scenario_from_dict(doc, topo)


def play(
    scenario: Scenario,
    apply: Callable[[Event], None],
    time_scale: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[tuple[float, Event]]:
    """Apply each event at start + at x time_scale; returns (actual offset, event) pairs."""
    if time_scale <= 0:
        raise InputError("time_scale", time_scale, "a positive number")
    start = clock()
    done: list[tuple[float, Event]] = []
    for event in scenario.events:
        wait = start + event.at * time_scale - clock()
        if wait > 0:
            sleep(wait)
        apply(event)
        done.append((clock() - start, event))
    rest = start + scenario.duration * time_scale - clock()
    if rest > 0:
        sleep(rest)
    return done
