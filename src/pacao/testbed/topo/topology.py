"""Testbed topology as data: load, validate and derive addresses/routes, never run anything.

A topology file (YAML, docs/testbed.md) lists sites, nodes (one network namespace each,
with a role), point-to-point links with rate/delay/jitter/loss, and the EID-to-RLOC
mappings the xTRs start with. Keeping it data lets the same description drive the
running testbed (pacao.testbed.net), the scenario player and tests, as Mininet does.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from pacao.errors import InputError
from pacao.io import parse_yaml
from pacao.testbed.topo.schema import Doc, in_range, keys, number

ROLES = ("user", "xtr", "dc", "vm", "router")
FABRICS = ("routed", "vxlan")
UNDERLAY_ROLES = ("xtr", "router")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(bit|kbit|mbit|gbit)\s*$", re.IGNORECASE)
_RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}
EARTH_RADIUS_KM = 6371.0


def rtt_ms_from_km(km: float) -> float:
    """The paper's distance model (Sec. V): 1 ms of RTT per 100 km of fibre, times 3."""
    return 3.0 * km / 100.0


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance between two (lat, lon) points in degrees."""
    la1, lo1, la2, lo2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def parse_rate(field_name: str, value: Any) -> int | None:
    """'8mbit' -> 8_000_000 bit/s; None/absent means no rate limit."""
    if value is None:
        return None
    match = _RATE.match(str(value))
    if not match:
        raise InputError(field_name, value, "use a rate like 8mbit, 10gbit, 512kbit")
    bits = float(match.group(1)) * _RATE_UNITS[match.group(2).lower()]
    if bits < 8_000:
        raise InputError(field_name, value, "rate must be at least 8kbit")
    return int(bits)


@dataclass(frozen=True)
class Impairment:
    """One direction's user-space impairment: one-way delay/jitter in ms, loss in percent."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    @property
    def active(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss_pct > 0


@dataclass(frozen=True)
class Site:
    name: str
    label: str
    location: tuple[float, float] | None


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    site: str | None
    rloc: ipaddress.IPv4Address | None = None
    eid: ipaddress.IPv4Interface | None = None


@dataclass(frozen=True)
class Link:
    """A point-to-point link a <-> b; addresses are interfaces on each end."""

    index: int
    name: str
    a: str
    b: str
    a_addr: ipaddress.IPv4Interface
    b_addr: ipaddress.IPv4Interface
    rate_bps: int | None
    impairment: Impairment
    distance_km: float | None = None

    def end(self, node: str) -> str:
        """Which side ('a' or 'b') node is on."""
        return "a" if node == self.a else "b"

    def peer(self, node: str) -> str:
        return self.b if node == self.a else self.a

    def addr(self, node: str) -> ipaddress.IPv4Interface:
        return self.a_addr if node == self.a else self.b_addr


@dataclass(frozen=True)
class LocatorSpec:
    node: str
    priority: int
    weight: int


@dataclass(frozen=True)
class MappingSpec:
    prefix: ipaddress.IPv4Network
    locators: tuple[LocatorSpec, ...]


@dataclass(frozen=True)
class Route:
    """A kernel route in one node: prefix via gateway (or dev only for the xTR's TUN)."""

    prefix: ipaddress.IPv4Network
    via: ipaddress.IPv4Address | None
    dev_link: int | None  # link index, None for the TUN device
    tun: bool = False


@dataclass(frozen=True)
class Topology:
    name: str
    sites: dict[str, Site]
    nodes: dict[str, Node]
    links: tuple[Link, ...]
    mappings: tuple[MappingSpec, ...]
    description: str = ""
    routes: dict[str, tuple[Route, ...]] = field(default_factory=dict)
    fabric: str = "routed"  # or "vxlan": the VM's L2 segment bridged between dc nodes

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        raise InputError("link", name, f"one of {[x.name for x in self.links]}")

    def links_of(self, node: str) -> list[Link]:
        return [x for x in self.links if node in (x.a, x.b)]

    def xtrs(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.role == "xtr"]


def _impairment(
    where: str, doc: dict[str, Any], a_site: Site | None, b_site: Site | None
) -> tuple[Impairment, float | None]:
    delay = doc.get("delay", 0)
    km: float | None = None
    if delay == "distance":
        if a_site is None or b_site is None or a_site.location is None or b_site.location is None:
            raise InputError(
                f"{where}.delay", delay, "'distance' needs both ends in sites with a location"
            )
        km = great_circle_km(a_site.location, b_site.location)
        delay_ms = rtt_ms_from_km(km) / 2.0
    else:
        delay_ms = number(f"{where}.delay", delay, 0, 10_000)
    return (
        Impairment(
            delay_ms=delay_ms,
            jitter_ms=number(f"{where}.jitter", doc.get("jitter", 0), 0, 10_000),
            loss_pct=number(f"{where}.loss", doc.get("loss", 0), 0, 100),
        ),
        km,
    )


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InputError(where, value, "lowercase letters, digits and '-', at most 16 chars")
    return value


class _TopologyDoc(Doc):
    name: Any
    description: Any = None
    sites: Any = None
    nodes: Any
    links: Any
    mappings: Any = None
    transit: Any = None
    fabric: Any = None


class _SiteDoc(Doc):
    label: Any = None
    location: Any = None


class _NodeDoc(Doc):
    role: Any
    site: Any = None
    rloc: Any = None
    eid: Any = None


class _LinkDoc(Doc):
    name: Any = None
    a: Any
    b: Any
    rate: Any = None
    delay: Any = None
    jitter: Any = None
    loss: Any = None
    a_addr: Any = None
    b_addr: Any = None


class _MappingDoc(Doc):
    prefix: Any
    locators: Any


class _LocatorDoc(Doc):
    node: Any
    priority: Annotated[float, in_range(0, 255)] = 1
    weight: Annotated[float, in_range(0, 255)] = 100


def topology_from_dict(doc: Any, source: str = "topology") -> Topology:
    """Validate a parsed topology document; every problem is one InputError line."""
    top = keys(_TopologyDoc, source, doc)
    name = _name(f"{source}.name", top["name"])
    sites: dict[str, Site] = {}
    for sname, sdoc in (top.get("sites") or {}).items():
        where = f"sites.{sname}"
        _name(where, sname)
        s = keys(_SiteDoc, where, sdoc or {})
        loc = s.get("location")
        location: tuple[float, float] | None = None
        if loc is not None:
            if not isinstance(loc, list) or len(loc) != 2:
                raise InputError(f"{where}.location", loc, "[latitude, longitude] in degrees")
            location = (
                number(f"{where}.location[0]", loc[0], -90, 90),
                number(f"{where}.location[1]", loc[1], -180, 180),
            )
        sites[sname] = Site(sname, str(s.get("label", sname)), location)

    nodes: dict[str, Node] = {}
    if not isinstance(top["nodes"], dict) or not top["nodes"]:
        raise InputError("nodes", top["nodes"], "a non-empty mapping name -> node")
    rlocs: set[ipaddress.IPv4Address] = set()
    for nname, ndoc in top["nodes"].items():
        where = f"nodes.{nname}"
        _name(where, nname)
        n = keys(_NodeDoc, where, ndoc)
        role = n["role"]
        if role not in ROLES:
            raise InputError(f"{where}.role", role, f"one of {list(ROLES)}")
        site = n.get("site")
        if site is not None and site not in sites:
            raise InputError(f"{where}.site", site, f"one of {sorted(sites)}")
        rloc = None
        if role == "xtr":
            if "rloc" not in n:
                raise InputError(f"{where}.rloc", None, "an xtr needs an IPv4 RLOC address")
            rloc = _ipv4(f"{where}.rloc", n["rloc"])
            if rloc in rlocs:
                raise InputError(f"{where}.rloc", str(rloc), "RLOCs must be unique")
            rlocs.add(rloc)
        elif "rloc" in n:
            raise InputError(f"{where}.rloc", n["rloc"], "only xtr nodes have an RLOC")
        eid = None
        if role in ("user", "vm"):
            if "eid" not in n:
                raise InputError(f"{where}.eid", None, f"a {role} needs an EID like 10.1.0.10/24")
            eid = _iface(f"{where}.eid", n["eid"])
        elif "eid" in n:
            raise InputError(f"{where}.eid", n["eid"], "only user and vm nodes have an EID")
        nodes[nname] = Node(nname, role, site, rloc, eid)

    pool = _net("transit", top.get("transit", "10.255.0.0/16"))
    subnets = pool.subnets(new_prefix=30)
    links: list[Link] = []
    if not isinstance(top["links"], list):
        raise InputError("links", top["links"], "a list of links")
    seen: set[str] = set()
    for i, ldoc in enumerate(top["links"]):
        where = f"links[{i}]"
        ld = keys(_LinkDoc, where, ldoc)
        for side in ("a", "b"):
            if ld[side] not in nodes:
                raise InputError(f"{where}.{side}", ld[side], f"one of {sorted(nodes)}")
        if ld["a"] == ld["b"]:
            raise InputError(f"{where}.b", ld["b"], "a link joins two different nodes")
        lname = _name(f"{where}.name", ld.get("name", f"{ld['a']}--{ld['b']}"[:16]))
        if lname in seen:
            raise InputError(f"{where}.name", lname, "link names must be unique")
        seen.add(lname)
        a_node, b_node = nodes[ld["a"]], nodes[ld["b"]]
        imp, km = _impairment(
            where,
            ld,
            sites.get(a_node.site) if a_node.site else None,
            sites.get(b_node.site) if b_node.site else None,
        )
        if ("a_addr" in ld) != ("b_addr" in ld):
            raise InputError(
                f"{where}.a_addr", ld.get("a_addr"), "give both a_addr and b_addr or neither"
            )
        if "a_addr" in ld:
            a_addr = _iface(f"{where}.a_addr", ld["a_addr"])
            b_addr = _iface(f"{where}.b_addr", ld["b_addr"])
            if a_addr.network != b_addr.network or a_addr.ip == b_addr.ip:
                raise InputError(
                    f"{where}.b_addr", ld["b_addr"], f"another address in {a_addr.network}"
                )
        else:
            net = next(subnets, None)
            if net is None:
                raise InputError("transit", str(pool), "too small for the number of links")
            hosts = list(net.hosts())
            a_addr = ipaddress.IPv4Interface(f"{hosts[0]}/30")
            b_addr = ipaddress.IPv4Interface(f"{hosts[1]}/30")
        rate = parse_rate(f"{where}.rate", ld.get("rate"))
        links.append(Link(i, lname, ld["a"], ld["b"], a_addr, b_addr, rate, imp, km))

    for node in nodes.values():
        deg = sum(1 for x in links if node.name in (x.a, x.b))
        if deg == 0:
            raise InputError(f"nodes.{node.name}", node.role, "every node needs at least one link")
        if node.role in ("user", "vm") and deg != 1:
            raise InputError(f"nodes.{node.name}", deg, f"a {node.role} has exactly one link")

    mappings: list[MappingSpec] = []
    for i, mdoc in enumerate(top.get("mappings") or []):
        where = f"mappings[{i}]"
        md = keys(_MappingDoc, where, mdoc)
        prefix = _net(f"{where}.prefix", md["prefix"])
        locs: list[LocatorSpec] = []
        if not isinstance(md["locators"], list) or not md["locators"]:
            raise InputError(f"{where}.locators", md["locators"], "a non-empty list")
        for j, lo in enumerate(md["locators"]):
            lw = f"{where}.locators[{j}]"
            lod = keys(_LocatorDoc, lw, lo)
            if lod["node"] not in nodes or nodes[lod["node"]].role != "xtr":
                raise InputError(
                    f"{lw}.node",
                    lod["node"],
                    f"one of {[x.name for x in nodes.values() if x.role == 'xtr']}",
                )
            locs.append(
                LocatorSpec(
                    lod["node"],
                    int(lod.get("priority", 1)),
                    int(lod.get("weight", 100)),
                )
            )
        mappings.append(MappingSpec(prefix, tuple(locs)))

    fabric = top.get("fabric", "routed")
    if fabric not in FABRICS:
        raise InputError("fabric", fabric, f"one of {list(FABRICS)}")
    topo = Topology(
        name, sites, nodes, tuple(links), tuple(mappings), str(top.get("description", "")),
        fabric=fabric,
    )  # fmt: skip
    if fabric == "vxlan":
        check_vxlan(topo)
    return Topology(
        topo.name,
        topo.sites,
        topo.nodes,
        topo.links,
        topo.mappings,
        topo.description,
        compute_routes(topo),
        fabric,
    )


def _ipv4(where: str, value: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        raise InputError(where, value, "an IPv4 address like 172.16.0.1") from None


def _iface(where: str, value: Any) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(str(value))
    except ValueError:
        raise InputError(
            where, value, "an IPv4 address with prefix length like 10.1.0.10/24"
        ) from None
    if "/" not in str(value):
        raise InputError(where, value, "give the prefix length, like 10.1.0.10/24")
    return iface


def _net(where: str, value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value))
    except ValueError:
        raise InputError(where, value, "an IPv4 prefix like 10.2.0.0/24 (host bits zero)") from None


def _shortest(topo: Topology, src: str, allowed: set[str]) -> dict[str, Link]:
    """Dijkstra from src over nodes in `allowed`, weight = one-way delay + 1 us per hop.

    Only `router` nodes forward for others: an xTR is an edge router, so a path never
    transits another site (the user->TelcoCenter path stays on the link named so).
    Returns, for each reachable node, the first link on the best path from src.
    """
    best: dict[str, float] = {src: 0.0}
    first: dict[str, Link] = {}
    heap: list[tuple[float, str, int]] = [(0.0, src, -1)]
    while heap:
        cost, node, _via = heapq.heappop(heap)
        if cost > best.get(node, math.inf):
            continue
        if node != src and topo.nodes[node].role != "router":
            continue
        for link in topo.links_of(node):
            peer = link.peer(node)
            if peer not in allowed:
                continue
            c = cost + link.impairment.delay_ms + 0.001
            if c < best.get(peer, math.inf):
                best[peer] = c
                first[peer] = link if node == src else first[node]
                heapq.heappush(heap, (c, peer, link.index))
    return first


def compute_routes(topo: Topology) -> dict[str, tuple[Route, ...]]:
    """Kernel routes per node: RLOC /32s over the underlay, EIDs to TUN/fabric, defaults.

    * underlay (xtr, router): each RLOC /32 via the shortest-delay path;
    * xtr: every mapped prefix it is not a locator of goes into its TUN (encapsulate);
      a VM EID /32 it is a locator for goes to the local dc, or over the direct
      inter-DC link to the xTR of the VM's site (the DC fabric);
    * user, vm: default route via their only link; dc: default via its xtr.
    """
    routes: dict[str, list[Route]] = {n: [] for n in topo.nodes}
    underlay = {n.name for n in topo.nodes.values() if n.role in UNDERLAY_ROLES}
    for src in sorted(underlay):
        first = _shortest(topo, src, underlay)
        for dst in sorted(first):
            rloc = topo.nodes[dst].rloc
            if rloc is None:
                continue
            link = first[dst]
            routes[src].append(
                Route(ipaddress.IPv4Network(f"{rloc}/32"), link.addr(link.peer(src)).ip, link.index)
            )
    for node in topo.nodes.values():
        if node.role in ("user", "vm"):
            link = topo.links_of(node.name)[0]
            routes[node.name].append(
                Route(
                    ipaddress.IPv4Network("0.0.0.0/0"),
                    link.addr(link.peer(node.name)).ip,
                    link.index,
                )
            )
        elif node.role == "dc":
            for link in topo.links_of(node.name):
                if topo.nodes[link.peer(node.name)].role == "xtr":
                    routes[node.name].append(
                        Route(
                            ipaddress.IPv4Network("0.0.0.0/0"),
                            link.addr(link.peer(node.name)).ip,
                            link.index,
                        )
                    )
                    break
    for xtr in topo.xtrs():
        for m in topo.mappings:
            if all(lo.node != xtr.name for lo in m.locators):
                routes[xtr.name].append(Route(m.prefix, None, None, tun=True))
    for vm in (n for n in topo.nodes.values() if n.role == "vm"):
        assert vm.eid is not None
        for r in vm_routes(topo, vm.name, vm_dc(topo, vm.name)).items():
            routes[r[0]].extend(r[1])
    if topo.fabric == "vxlan":
        for x, extra in vxlan_routes(topo).items():
            routes[x].extend(extra)
    return {k: tuple(v) for k, v in routes.items()}


def vm_dc(topo: Topology, vm: str) -> str:
    """The dc node a VM is attached to (its only link's peer)."""
    link = topo.links_of(vm)[0]
    return link.peer(vm)


def site_xtr(topo: Topology, node: str) -> str | None:
    """The xtr directly linked to a node (a dc's or user's gateway)."""
    for link in topo.links_of(node):
        if topo.nodes[link.peer(node)].role == "xtr":
            return link.peer(node)
    return None


def vm_routes(topo: Topology, vm: str, dc: str) -> dict[str, list[Route]]:
    """Routes to the VM's EID /32 in every xtr that is a locator of its prefix, VM on `dc`.

    The dc's own xtr reaches it via the dc; the other locator xtrs via the direct
    inter-DC link to that xtr (the DC fabric). Used at `up` and after a migration.
    """
    node = topo.nodes[vm]
    assert node.eid is not None
    host = ipaddress.IPv4Network(f"{node.eid.ip}/32")
    home = site_xtr(topo, dc)
    if home is None:
        raise InputError(f"nodes.{dc}", dc, "a dc hosting a VM needs a link to an xtr")
    out: dict[str, list[Route]] = {}
    dc_link = next(x for x in topo.links_of(home) if x.peer(home) == dc)
    out[home] = [Route(host, dc_link.addr(dc).ip, dc_link.index)]
    if topo.fabric == "vxlan":  # every locator xTR with a dc of its own sends to that dc
        for x, (own, fab) in dc_of_xtr(topo).items():
            if x != home and any(
                lo.node == x for m in topo.mappings if node.eid.ip in m.prefix for lo in m.locators
            ):
                out[x] = [Route(host, fab.addr(own).ip, fab.index)]
    for m in topo.mappings:
        if node.eid.ip not in m.prefix:
            continue
        for lo in m.locators:
            if lo.node == home or lo.node in out:
                continue
            direct = [x for x in topo.links_of(lo.node) if x.peer(lo.node) == home]
            if not direct:
                raise InputError(
                    f"mappings {m.prefix}", lo.node, f"needs a direct link to {home} (DC fabric)"
                )
            out[lo.node] = [Route(host, direct[0].addr(home).ip, direct[0].index)]
    return out


def dc_of_xtr(topo: Topology) -> dict[str, tuple[str, Link]]:
    """xtr -> (its dc node, their link), for xTRs with a hypervisor behind them."""
    out: dict[str, tuple[str, Link]] = {}
    for n in topo.nodes.values():
        if n.role != "dc":
            continue
        x = site_xtr(topo, n.name)
        if x is not None and x not in out:
            out[x] = (n.name, next(k for k in topo.links_of(x) if k.peer(x) == n.name))
    return out


def vtep(topo: Topology, dc: str) -> ipaddress.IPv4Address:
    """A dc node's VXLAN tunnel endpoint: its address on the link to its xtr."""
    x = site_xtr(topo, dc)
    link = next(k for k in topo.links_of(dc) if k.peer(dc) == x)
    return link.addr(dc).ip


def check_vxlan(topo: Topology) -> None:
    """The VXLAN fabric joins every pair of dc nodes whose xTRs share a direct link."""
    for n in topo.nodes.values():
        if n.role == "dc" and site_xtr(topo, n.name) is None:
            raise InputError(f"nodes.{n.name}", n.name, "a dc needs a link to an xtr (VTEP)")
    dcs = dc_of_xtr(topo)
    for m in topo.mappings:
        xs = sorted({lo.node for lo in m.locators} & set(dcs))
        for i, x in enumerate(xs):
            for y in xs[i + 1 :]:
                if not any(k.peer(x) == y for k in topo.links_of(x)):
                    raise InputError(
                        f"mappings {m.prefix}", y, f"needs a direct link to {x} (VXLAN fabric)"
                    )
    for vm in (n for n in topo.nodes.values() if n.role == "vm"):
        peer = topo.nodes[vm_dc(topo, vm.name)]
        if peer.role != "dc":
            raise InputError(f"nodes.{vm.name}", peer.name, "vxlan fabric: a vm hangs from a dc")


def vxlan_routes(topo: Topology) -> dict[str, list[Route]]:
    """In each xtr with a dc: the other dc nodes' VTEP /32s over the direct inter-DC link."""
    dcs = dc_of_xtr(topo)
    out: dict[str, list[Route]] = {}
    for x in dcs:
        for y, (other, _fab) in dcs.items():
            direct = [k for k in topo.links_of(x) if k.peer(x) == y]
            if x != y and direct:
                net = ipaddress.IPv4Network(f"{vtep(topo, other)}/32")
                out.setdefault(x, []).append(Route(net, direct[0].addr(y).ip, direct[0].index))
    return out


def load_topology(path: Path) -> Topology:
    """Read and validate a topology YAML file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError("topology", str(path), f"a readable file ({exc.strerror})") from None
    try:
        doc = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise InputError(
            "topology", str(path), f"valid YAML ({str(exc).splitlines()[0]})"
        ) from None
    return topology_from_dict(doc)


def default_topology_path() -> Path:
    """The shipped Fig. 5 topology."""
    from importlib.resources import files

    return Path(str(files("pacao.data").joinpath("testbed-fig5.yaml")))
