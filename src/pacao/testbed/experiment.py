"""Experiment files for `pacao testbed run` (format in docs/testbed.md).

An experiment is a timeline of link impairments (the same events `play` takes,
plus `add_rtt`/`reset` relative to the topology), a set of arms (legacy,
PACAO-1, PACAO-2), the controller timers, the traffic to run, and variants
(one sub-run each, e.g. Table I's four injected delays). The controller's
actions are *not* in the file: the PACAO arms get them from the controller. A
``migrate`` event is a scripted migration (e.g. to check the `--vm qemu` guest under
traffic); the shipped Table I/II files have none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from pacao.errors import InputError
from pacao.io import parse_yaml
from pacao.testbed.scenario import Scenario, scenario_from_dict
from pacao.testbed.tcpprofile import DEFAULT_PROFILE, check_profile
from pacao.testbed.topology import (
    Topology,
    default_topology_path,
    load_topology,
    parse_rate,
    topology_from_dict,
)
from pacao.validate import in_range

ARMS = ("legacy", "pacao1", "pacao2")
ARM_LABELS = {
    "legacy": "legacy (fixed RLOC)",
    "pacao1": "PACAO-1 (RLOC switching)",
    "pacao2": "PACAO-2 (switching + VM migration)",
}
TRAFFIC = ("download", "tcp", "udp")
SHIPPED = {
    "table1": "testbed-run-table1.yaml",
    "table2": "testbed-run-table2.yaml",
    "table2-overload": "testbed-run-table2-overload.yaml",
    "parallel": "testbed-run-parallel.yaml",
}
TOP_KEYS = {
    "name", "title", "topology", "duration", "arms", "timers", "traffic", "udp",
    "download_mb", "windows", "variants", "paper", "controller", "migration", "mappings",
    "tcp_profile",
}  # fmt: skip
CONTROLLER_KEYS = {"rtt_max_ms", "switch_method", "policy_overrides"}
MIGRATION_KEYS = {
    "memory_mib", "dirty_rate_mbps", "max_downtime_ms", "max_rounds", "switchover_ms",
    "default_bandwidth_mbps", "bandwidth_mbps", "path_bandwidth_mbps",
}  # fmt: skip


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    scenario: Scenario


@dataclass(frozen=True)
class Experiment:
    """One experiment file, validated against its topology."""

    name: str
    title: str
    path: Path
    topology_path: Path
    topology: Topology
    duration: float
    arms: tuple[str, ...]
    s1: float
    s2: float
    traffic: tuple[str, ...]
    udp_rate_bps: int
    udp_length: int
    download_bytes: int
    windows: dict[str, tuple[float, float]]
    variants: tuple[Variant, ...]
    paper: dict[str, Any] = field(default_factory=dict)
    controller: dict[str, Any] = field(default_factory=dict)
    migration: dict[str, Any] = field(default_factory=dict)
    #: TCP host profile of the user and the VM (pacao.testbed.tcpprofile)
    tcp_profile: str = "paper"
    #: the topology document when the experiment overrides its mappings (written to a
    #: file in the run folder: the runner and the migration code read topology files)
    topology_doc: dict[str, Any] | None = None


def shipped_path(name: str) -> Path:
    return Path(str(files("pacao.data").joinpath(SHIPPED[name])))


def resolve(name_or_file: str) -> Path:
    """`table1`/`table2` are the shipped files; anything else is a path."""
    if name_or_file in SHIPPED:
        return shipped_path(name_or_file)
    path = Path(name_or_file)
    if not path.is_file():
        raise InputError(
            "--scenario", name_or_file, f"{', '.join(SHIPPED)} or an experiment YAML file"
        )
    return path


def _num(where: str, value: Any, low: float, high: float) -> float:
    return in_range(where, value, f"a number in [{low}, {high}]", low=low, high=high)


def _expand(ev: Any, where: str, topo: Topology) -> Any:
    """`add_rtt: X` -> one-way delay = base + X/2; `reset: true` -> the topology's values."""
    if not isinstance(ev, dict) or "link" not in ev:
        return ev
    ev = dict(ev)
    if "add_rtt" in ev or "reset" in ev:
        link = topo.link(str(ev["link"]))
        base = link.impairment
        if ev.pop("reset", False) is True:
            ev.setdefault("delay", base.delay_ms)
            ev.setdefault("jitter", base.jitter_ms)
            ev.setdefault("loss", base.loss_pct)
            if link.rate_bps:
                ev.setdefault("rate", f"{link.rate_bps}bit")
        if "add_rtt" in ev:
            add = _num(f"{where}.add_rtt", ev.pop("add_rtt"), 0, 120_000)
            ev["delay"] = base.delay_ms + add / 2.0
    return ev


def load_experiment(path: Path, topology: Path | None = None) -> Experiment:
    """Read and validate an experiment file (and the topology it names or is given)."""
    try:
        doc = parse_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError("scenario", str(path), f"a readable YAML file ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError("scenario", str(path), "a mapping (docs/testbed.md)")
    for key in doc:
        if key not in TOP_KEYS:
            raise InputError(f"scenario.{key}", doc[key], f"allowed keys: {sorted(TOP_KEYS)}")
    if topology is None:
        named = doc.get("topology")
        if named is None:
            topology = default_topology_path()
        else:
            topology = path.parent / str(named)
            if not topology.is_file():
                topology = Path(str(files("pacao.data").joinpath(str(named))))
    topo = load_topology(topology)
    topology_doc = None
    if "mappings" in doc:
        # e.g. Table I used only the TelcoCenter and Marilyn DCs (Sec. IV-A)
        topology_doc = parse_yaml(topology.read_text())
        topology_doc["mappings"] = doc["mappings"]
        topo = topology_from_dict(topology_doc, source=f"{path.name} mappings")
    duration = _num("duration", doc.get("duration"), 1, 86_400)
    arms = doc.get("arms", list(ARMS))
    if not isinstance(arms, list) or not arms or any(a not in ARMS for a in arms):
        raise InputError("arms", arms, f"a list of {', '.join(ARMS)}")
    timers = doc.get("timers", {})
    if not isinstance(timers, dict) or set(timers) - {"s1", "s2"}:
        raise InputError("timers", timers, "a mapping with s1 (S') and s2 (S'') in seconds")
    s1 = _num("timers.s1", timers.get("s1", 10), 0.1, 86_400)
    s2 = _num("timers.s2", timers.get("s2", 5), 0.1, 86_400)
    traffic = doc.get("traffic", ["download"])
    if not isinstance(traffic, list) or not traffic or any(t not in TRAFFIC for t in traffic):
        raise InputError("traffic", traffic, f"a list of {', '.join(TRAFFIC)}")
    udp = doc.get("udp", {})
    if not isinstance(udp, dict) or set(udp) - {"rate", "length"}:
        raise InputError("udp", udp, "a mapping with rate (e.g. 1mbit) and length (bytes)")
    udp_rate = parse_rate("udp.rate", udp.get("rate", "1mbit")) or 1_000_000
    udp_length = int(_num("udp.length", udp.get("length", 1000), 16, 1300))
    download_mb = _num("download_mb", doc.get("download_mb", 300), 0.001, 100_000)
    windows: dict[str, tuple[float, float]] = {}
    wdoc = doc.get("windows", {})
    if not isinstance(wdoc, dict):
        raise InputError("windows", wdoc, "a mapping name: [from, to] in seconds")
    for wname, span in wdoc.items():
        if not (isinstance(span, list) and len(span) == 2):
            raise InputError(f"windows.{wname}", span, "[from, to] in seconds")
        lo = _num(f"windows.{wname}[0]", span[0], 0, duration)
        hi = _num(f"windows.{wname}[1]", span[1], lo, duration)
        windows[str(wname)] = (lo, hi)
    vdoc = doc.get("variants")
    if not isinstance(vdoc, list) or not vdoc:
        raise InputError("variants", vdoc, "a non-empty list of {name, label, events}")
    variants = []
    seen: set[str] = set()
    for i, v in enumerate(vdoc):
        where = f"variants[{i}]"
        if not isinstance(v, dict) or set(v) - {"name", "label", "events"} or "name" not in v:
            raise InputError(where, v, "a mapping with name, label, events")
        vname = str(v["name"])
        if vname in seen or not vname.replace("-", "").replace("+", "").isalnum():
            raise InputError(f"{where}.name", vname, "a unique name of letters, digits, '-', '+'")
        seen.add(vname)
        events = v.get("events", [])
        if not isinstance(events, list):
            raise InputError(f"{where}.events", events, "a list of link events")
        expanded = [_expand(ev, f"{where}.events[{j}]", topo) for j, ev in enumerate(events)]
        for j, ev in enumerate(expanded):
            if not (isinstance(ev, dict) and ("link" in ev or "migrate" in ev)):
                raise InputError(
                    f"{where}.events[{j}]", ev,
                    "a link event or a scripted migrate event (the controller does the rest)",
                )  # fmt: skip
        sc = scenario_from_dict(
            {"name": f"{doc.get('name', path.stem)}-{vname}", "duration": duration,
             "events": expanded},
            topo,
        )  # fmt: skip
        variants.append(Variant(vname, str(v.get("label", vname)), sc))
    controller = doc.get("controller", {})
    if not isinstance(controller, dict) or set(controller) - CONTROLLER_KEYS:
        raise InputError("controller", controller, f"a mapping of {sorted(CONTROLLER_KEYS)}")
    if "rtt_max_ms" in controller:
        _num("controller.rtt_max_ms", controller["rtt_max_ms"], 0.1, 100_000)
    if "policy_overrides" in controller:
        po = controller["policy_overrides"]
        if not isinstance(po, dict):
            raise InputError("controller.policy_overrides", po, "a mapping (docs/controller.md)")
        controller = {**controller, "policy_overrides": tuple(sorted(po.items()))}
    migration = doc.get("migration", {})
    if not isinstance(migration, dict) or set(migration) - MIGRATION_KEYS:
        raise InputError("migration", migration, f"a mapping of {sorted(MIGRATION_KEYS)}")
    for key, value in migration.items():
        if key == "path_bandwidth_mbps":
            if not isinstance(value, dict):
                raise InputError(f"migration.{key}", value, "a mapping 'dcA,dcB': Mbit/s")
            for pair, mbps in value.items():
                ends = str(pair).split(",")
                if len(ends) != 2 or any(
                    e not in topo.nodes or topo.nodes[e].role != "dc" for e in ends
                ):
                    raise InputError(f"migration.{key}", pair, "'dcA,dcB': two dc nodes")
                _num(f"migration.{key}.{pair}", mbps, 0.001, 1e9)
            continue
        _num(f"migration.{key}", value, 0, 1e9)
    paper = doc.get("paper", {})
    if not isinstance(paper, dict):
        raise InputError("paper", paper, "a mapping of reference figures")
    tcp_profile = check_profile("tcp_profile", doc.get("tcp_profile", DEFAULT_PROFILE))
    return Experiment(
        name=str(doc.get("name", path.stem)),
        title=str(doc.get("title", doc.get("name", path.stem))),
        path=path,
        topology_path=topology,
        topology=topo,
        duration=duration,
        arms=tuple(arms),
        s1=s1,
        s2=s2,
        traffic=tuple(traffic),
        udp_rate_bps=udp_rate,
        udp_length=udp_length,
        download_bytes=int(download_mb * 1_000_000),
        windows=windows,
        variants=tuple(variants),
        paper=paper,
        controller=controller,
        migration=migration,
        topology_doc=topology_doc,
        tcp_profile=tcp_profile,
    )
