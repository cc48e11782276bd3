"""Topology validation and derived addressing/routing (no root needed)."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest

from pacao.errors import InputError
from pacao.testbed.topo.topology import (
    default_topology_path,
    great_circle_km,
    load_topology,
    rtt_ms_from_km,
    topology_from_dict,
)
from testbed_support import SMALL


def mutate(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SMALL)
    target: Any = doc
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if value is None:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("nodes.ux.role", "switch", "nodes.ux.role"),
        ("nodes.ax.rloc", "172.16.0.1", "nodes.ax.rloc"),
        ("nodes.ax.rloc", "not-an-ip", "nodes.ax.rloc"),
        ("nodes.vm.eid", None, "nodes.vm.eid"),
        ("links.1.b", "nowhere", "links[1].b"),
        ("links.1.rate", "fast", "links[1].rate"),
        ("links.1.delay", -1, "links[1].delay"),
        ("links.1.loss", 150, "links[1].loss"),
        ("links.1.colour", "red", "links[1].colour"),
        ("links.2.delay", "distance", "links[2].delay"),  # ux has no site/location
        ("links.2.name", "ua", "links[2].name"),
        ("links.0.b_addr", "10.9.0.1/24", "links[0].b_addr"),
        ("mappings.1.locators", [{"node": "user"}], "mappings[1].locators[0].node"),
    ],
)
def test_bad_input_names_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(InputError) as err:
        topology_from_dict(mutate(path, value))
    assert err.value.field == field
    assert "\n" not in str(err.value)


def test_vm_needs_direct_fabric_link() -> None:
    doc = copy.deepcopy(SMALL)
    doc["links"] = [x for x in doc["links"] if x["name"] != "ab"]
    with pytest.raises(InputError, match="direct link"):
        topology_from_dict(doc)


def test_distance_delay_follows_paper_model() -> None:
    topo = topology_from_dict(SMALL)
    link = topo.link("ab")
    km = great_circle_km((48.85, 2.35), (45.76, 4.84))
    assert link.distance_km == pytest.approx(km)
    assert 2 * link.impairment.delay_ms == pytest.approx(3 * km / 100)
    assert 380 < km < 400  # Paris-Lyon


def test_routes_small() -> None:
    topo = topology_from_dict(SMALL)
    ux = {str(r.prefix): r for r in topo.routes["ux"]}
    assert ux["10.2.0.0/24"].tun
    assert ux["172.16.0.3/32"].via == topo.link("ub").addr("bx").ip
    bx = {str(r.prefix): r for r in topo.routes["bx"]}
    # the non-hosting DC xTR reaches the VM over the direct inter-DC link (DC fabric)
    assert bx["10.2.0.10/32"].via == topo.link("ab").addr("ax").ip
    assert bx["10.1.0.0/24"].tun
    vm = topo.routes["vm"]
    assert [str(r.prefix) for r in vm] == ["0.0.0.0/0"]
    assert vm[0].via == ipaddress.IPv4Address("10.2.0.1")


def test_routes_vxlan_fabric() -> None:
    doc = copy.deepcopy(SMALL)
    doc["fabric"] = "vxlan"
    doc["nodes"]["bdc"] = {"role": "dc", "site": "b"}
    doc["links"].append({"name": "bfab", "a": "bx", "b": "bdc"})
    topo = topology_from_dict(doc)
    bx = {str(r.prefix): r for r in topo.routes["bx"]}
    ax = {str(r.prefix): r for r in topo.routes["ax"]}
    # each locator xTR hands the VM to its own dc; the dcs bridge it over VXLAN
    assert bx["10.2.0.10/32"].via == topo.link("bfab").addr("bdc").ip
    assert ax["10.2.0.10/32"].via == topo.link("afab").addr("adc").ip
    # VTEP to VTEP over the direct inter-DC link
    assert ax[f"{topo.link('bfab').addr('bdc').ip}/32"].via == topo.link("ab").addr("bx").ip
    assert bx[f"{topo.link('afab').addr('adc').ip}/32"].via == topo.link("ab").addr("ax").ip
    assert topo.fabric == "vxlan"
    doc["links"] = [x for x in doc["links"] if x["name"] != "ab"]
    with pytest.raises(InputError, match="direct link"):
        topology_from_dict(doc)
    doc["fabric"] = "mpls"
    with pytest.raises(InputError, match="fabric"):
        topology_from_dict(doc)


def path_rtt(topo: Any, src: str, dst: str) -> float:
    """RTT along the kernel routes from src's RLOC path to dst's RLOC (2 x one-way sum)."""
    rloc = ipaddress.IPv4Network(f"{topo.nodes[dst].rloc}/32")
    node, total = src, 0.0
    for _ in range(10):
        if node == dst:
            return 2 * total
        route = next(r for r in topo.routes[node] if r.prefix == rloc)
        link = topo.links[route.dev_link]
        total += link.impairment.delay_ms
        node = link.peer(node)
    raise AssertionError("no path")


def test_fig5_matches_paper_section_iv() -> None:
    topo = load_topology(default_topology_path())
    assert {"user", "telco-xtr", "marilyn-xtr", "lip6-xtr", "rezo-xtr", "vm"} <= set(topo.nodes)
    assert topo.fabric == "vxlan"  # the paper's DC fabric
    assert topo.link("access").rate_bps == 8_000_000
    assert topo.link("marilyn-telco").rate_bps == 10_000_000_000
    assert path_rtt(topo, "user-xtr", "marilyn-xtr") == pytest.approx(35.0)
    assert path_rtt(topo, "user-xtr", "telco-xtr") == pytest.approx(37.0)
    # Lyon is ~390 km from Paris: about 12 ms more RTT than the Paris DCs by the model
    assert 11 < 2 * topo.link("telco-rezo").impairment.delay_ms < 13
    # Table I: TelcoCenter priority 1, Marilyn 2
    service = next(m for m in topo.mappings if str(m.prefix) == "10.2.0.0/24")
    prio = {lo.node: lo.priority for lo in service.locators}
    assert prio["telco-xtr"] < prio["marilyn-xtr"]
    assert rtt_ms_from_km(100) == pytest.approx(3.0)
