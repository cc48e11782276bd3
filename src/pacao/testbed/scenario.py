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
from typing import Any

import yaml

from pacao.errors import InputError
from pacao.io import parse_yaml
from pacao.testbed.topology import Topology, parse_rate
from pacao.validate import in_range

LINK_KEYS = {"at", "link", "delay", "jitter", "loss", "rate", "direction"}
XTR_KEYS = {"at", "xtr", "prefix", "rloc", "priority", "weight"}
EGRESS_KEYS = {"at", "egress", "prefix", "via"}
MIGRATE_KEYS = {"at", "migrate", "dc"}


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


def _num(where: str, value: Any, low: float, high: float) -> float:
    return in_range(where, value, f"a number in [{low}, {high}]", low=low, high=high)


def scenario_from_dict(doc: Any, topo: Topology) -> Scenario:
    """Validate a timeline against the topology it will run on."""
    if not isinstance(doc, dict):
        raise InputError("scenario", doc, "a mapping with name, duration, events")
    for key in doc:
        if key not in ("name", "duration", "events"):
            raise InputError(f"scenario.{key}", doc[key], "allowed keys: name, duration, events")
    duration = _num("duration", doc.get("duration"), 0, 86_400)
    events: list[Event] = []
    if not isinstance(doc.get("events"), list):
        raise InputError("events", doc.get("events"), "a list of events")
    for i, ev in enumerate(doc["events"]):
        where = f"events[{i}]"
        if not isinstance(ev, dict) or "at" not in ev:
            raise InputError(where, ev, "a mapping with 'at' and 'link' or 'xtr'")
        at = _num(f"{where}.at", ev["at"], 0, duration)
        if "link" in ev:
            for key in ev:
                if key not in LINK_KEYS:
                    raise InputError(f"{where}.{key}", ev[key], f"allowed: {sorted(LINK_KEYS)}")
            topo.link(str(ev["link"]))
            args: dict[str, Any] = {}
            for key, name, high in (
                ("delay", "delay_ms", 60_000),
                ("jitter", "jitter_ms", 60_000),
                ("loss", "loss_pct", 100),
            ):
                if key in ev:
                    args[name] = _num(f"{where}.{key}", ev[key], 0, high)
            if "rate" in ev:
                args["rate_bps"] = parse_rate(f"{where}.rate", ev["rate"])
            if "direction" in ev:
                if ev["direction"] not in ("both", "a2b", "b2a"):
                    raise InputError(f"{where}.direction", ev["direction"], "both, a2b or b2a")
                args["direction"] = ev["direction"]
            if not args:
                raise InputError(where, ev, "set at least one of delay, jitter, loss, rate")
            events.append(Event(at, "link", str(ev["link"]), args))
        elif "xtr" in ev:
            for key in ev:
                if key not in XTR_KEYS:
                    raise InputError(f"{where}.{key}", ev[key], f"allowed: {sorted(XTR_KEYS)}")
            node = topo.nodes.get(str(ev["xtr"]))
            if node is None or node.role != "xtr":
                raise InputError(f"{where}.xtr", ev["xtr"], "an xtr node of the topology")
            for key in ("prefix", "rloc", "priority"):
                if key not in ev:
                    raise InputError(f"{where}.{key}", None, "required for an xtr event")
            req: dict[str, Any] = {"op": "priority", "prefix": str(ev["prefix"])}
            req["rloc"] = str(ev["rloc"])
            req["priority"] = int(_num(f"{where}.priority", ev["priority"], 0, 255))
            if "weight" in ev:
                req["weight"] = int(_num(f"{where}.weight", ev["weight"], 0, 255))
            events.append(Event(at, "xtr", node.name, req))
        elif "egress" in ev:
            for key in ev:
                if key not in EGRESS_KEYS:
                    raise InputError(f"{where}.{key}", ev[key], f"allowed: {sorted(EGRESS_KEYS)}")
            for key in ("egress", "via"):
                node = topo.nodes.get(str(ev.get(key)))
                if node is None or node.role != "xtr":
                    raise InputError(f"{where}.{key}", ev.get(key), "an xtr node of the topology")
            if "prefix" not in ev:
                raise InputError(f"{where}.prefix", None, "required for an egress event")
            args = {"prefix": str(ev["prefix"]), "via": str(ev["via"])}
            events.append(Event(at, "egress", str(ev["egress"]), args))
        elif "migrate" in ev:
            for key in ev:
                if key not in MIGRATE_KEYS:
                    raise InputError(f"{where}.{key}", ev[key], f"allowed: {sorted(MIGRATE_KEYS)}")
            vm = topo.nodes.get(str(ev["migrate"]))
            if vm is None or vm.role != "vm":
                raise InputError(f"{where}.migrate", ev["migrate"], "a vm node of the topology")
            dc = topo.nodes.get(str(ev.get("dc")))
            if dc is None or dc.role != "dc":
                raise InputError(f"{where}.dc", ev.get("dc"), "a dc node of the topology")
            events.append(Event(at, "migrate", vm.name, {"dc": dc.name}))
        else:
            raise InputError(where, ev, "an event needs 'link', 'xtr', 'egress' or 'migrate'")
    events.sort(key=lambda e: e.at)
    return Scenario(str(doc.get("name", "scenario")), duration, tuple(events))


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
