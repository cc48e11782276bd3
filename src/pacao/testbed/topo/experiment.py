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
from typing import Annotated, Any, ClassVar

import yaml

from pacao.errors import InputError
from pacao.io import parse_yaml
from pacao.testbed.topo.scenario import Scenario, scenario_from_dict
from pacao.testbed.topo.schema import Doc, in_range, number
from pacao.testbed.topo.tcpprofile import DEFAULT_PROFILE, check_profile
from pacao.testbed.topo.topology import (
    Topology,
    default_topology_path,
    load_topology,
    parse_rate,
    topology_from_dict,
)
from pacao.validate import parse_model

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


class _ExperimentDoc(Doc):
    unknown_key: ClassVar[str] = "allowed keys: {allowed}"

    name: Any = None
    title: Any = None
    topology: Any = None
    duration: Any = None
    arms: Any = None
    timers: Any = None
    traffic: Any = None
    udp: Any = None
    download_mb: Any = None
    windows: Any = None
    variants: Any = None
    paper: Any = None
    controller: Any = None
    migration: Any = None
    mappings: Any = None
    tcp_profile: Any = None


class _TimersDoc(Doc):
    whole: ClassVar[bool] = True
    not_mapping: ClassVar[str] = "a mapping with s1 (S') and s2 (S'') in seconds"

    s1: Annotated[float, in_range(0.1, 86_400)] = 10.0
    s2: Annotated[float, in_range(0.1, 86_400)] = 5.0


class _UdpDoc(Doc):
    whole: ClassVar[bool] = True
    not_mapping: ClassVar[str] = "a mapping with rate (e.g. 1mbit) and length (bytes)"

    rate: Any = "1mbit"
    length: Annotated[float, in_range(16, 1300)] = 1000


class _VariantDoc(Doc):
    whole: ClassVar[bool] = True
    not_mapping: ClassVar[str] = "a mapping with name, label, events"

    name: Any
    label: Any = None
    events: Any = None


class _ControllerDoc(Doc):
    whole: ClassVar[bool] = True
    not_mapping: ClassVar[str] = "a mapping of {allowed}"

    rtt_max_ms: Annotated[float, in_range(0.1, 100_000)] = 60.0
    switch_method: Any = None
    policy_overrides: Any = None


class _MigrationDoc(Doc):
    whole: ClassVar[bool] = True
    not_mapping: ClassVar[str] = "a mapping of {allowed}"

    memory_mib: Annotated[float, in_range(0, 1e9)] = 0
    dirty_rate_mbps: Annotated[float, in_range(0, 1e9)] = 0
    max_downtime_ms: Annotated[float, in_range(0, 1e9)] = 0
    max_rounds: Annotated[float, in_range(0, 1e9)] = 0
    switchover_ms: Annotated[float, in_range(0, 1e9)] = 0
    default_bandwidth_mbps: Annotated[float, in_range(0, 1e9)] = 0
    bandwidth_mbps: Annotated[float, in_range(0, 1e9)] = 0
    path_bandwidth_mbps: Any = None


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
    #: TCP host profile of the user and the VM (pacao.testbed.topo.tcpprofile)
    tcp_profile: str = "paper"
    #: the topology document when the experiment overrides its mappings (written to a
    #: file in the run folder: the testbed and the migration code read topology files)
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
            add = number(f"{where}.add_rtt", ev.pop("add_rtt"), 0, 120_000)
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
    parse_model(_ExperimentDoc, doc, "scenario")
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
    duration = number("duration", doc.get("duration"), 1, 86_400)
    arms = doc.get("arms", list(ARMS))
    if not isinstance(arms, list) or not arms or any(a not in ARMS for a in arms):
        raise InputError("arms", arms, f"a list of {', '.join(ARMS)}")
    timers = parse_model(_TimersDoc, doc.get("timers", {}), "timers")
    traffic = doc.get("traffic", ["download"])
    if not isinstance(traffic, list) or not traffic or any(t not in TRAFFIC for t in traffic):
        raise InputError("traffic", traffic, f"a list of {', '.join(TRAFFIC)}")
    udp = parse_model(_UdpDoc, doc.get("udp", {}), "udp")
    udp_rate = parse_rate("udp.rate", udp.rate) or 1_000_000
    udp_length = int(udp.length)
    download_mb = number("download_mb", doc.get("download_mb", 300), 0.001, 100_000)
    windows: dict[str, tuple[float, float]] = {}
    wdoc = doc.get("windows", {})
    if not isinstance(wdoc, dict):
        raise InputError("windows", wdoc, "a mapping name: [from, to] in seconds")
    for wname, span in wdoc.items():
        if not (isinstance(span, list) and len(span) == 2):
            raise InputError(f"windows.{wname}", span, "[from, to] in seconds")
        lo = number(f"windows.{wname}[0]", span[0], 0, duration)
        hi = number(f"windows.{wname}[1]", span[1], lo, duration)
        windows[str(wname)] = (lo, hi)
    vdoc = doc.get("variants")
    if not isinstance(vdoc, list) or not vdoc:
        raise InputError("variants", vdoc, "a non-empty list of {name, label, events}")
    variants = []
    seen: set[str] = set()
    for i, v in enumerate(vdoc):
        where = f"variants[{i}]"
        parse_model(_VariantDoc, v, where)
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
    parse_model(_ControllerDoc, controller, "controller")  # the values given are kept as given
    if "policy_overrides" in controller:
        po = controller["policy_overrides"]
        if not isinstance(po, dict):
            raise InputError("controller.policy_overrides", po, "a mapping (docs/controller.md)")
        controller = {**controller, "policy_overrides": tuple(sorted(po.items()))}
    migration = doc.get("migration", {})
    paths = parse_model(_MigrationDoc, migration, "migration").path_bandwidth_mbps  # values kept
    if paths is not None:
        key = "path_bandwidth_mbps"
        if not isinstance(paths, dict):
            raise InputError(f"migration.{key}", paths, "a mapping 'dcA,dcB': Mbit/s")
        for pair, mbps in paths.items():
            ends = str(pair).split(",")
            if len(ends) != 2 or any(
                e not in topo.nodes or topo.nodes[e].role != "dc" for e in ends
            ):
                raise InputError(f"migration.{key}", pair, "'dcA,dcB': two dc nodes")
            number(f"migration.{key}.{pair}", mbps, 0.001, 1e9)
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
        s1=timers.s1,
        s2=timers.s2,
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
