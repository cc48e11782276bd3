"""Shared test topology for the testbed tests (a user site and two DCs)."""

from __future__ import annotations

from typing import Any

import yaml

SMALL: dict[str, Any] = yaml.safe_load(
    """
name: small
sites:
  a: {location: [48.85, 2.35]}
  b: {location: [45.76, 4.84]}
nodes:
  user: {role: user, eid: 10.1.0.10/24}
  ux: {role: xtr, rloc: 172.16.0.1}
  ax: {role: xtr, site: a, rloc: 172.16.0.2}
  bx: {role: xtr, site: b, rloc: 172.16.0.3}
  adc: {role: dc, site: a}
  vm: {role: vm, eid: 10.2.0.10/24}
links:
  - {name: lan, a: user, b: ux, a_addr: 10.1.0.10/24, b_addr: 10.1.0.1/24}
  - {name: ua, a: ux, b: ax, delay: 5}
  - {name: ub, a: ux, b: bx, delay: 10}
  - {name: ab, a: ax, b: bx, delay: distance}
  - {name: afab, a: ax, b: adc}
  - {name: vmnet, a: vm, b: adc, a_addr: 10.2.0.10/24, b_addr: 10.2.0.1/24}
mappings:
  - {prefix: 10.1.0.0/24, locators: [{node: ux}]}
  - {prefix: 10.2.0.0/24, locators: [{node: ax, priority: 1}, {node: bx, priority: 2}]}
"""
)

#: SMALL plus a second DC hypervisor (bdc behind bx): room for a VM migration.
TWO_DC: dict[str, Any] = yaml.safe_load(yaml.safe_dump(SMALL))
TWO_DC["name"] = "twodc"
TWO_DC["nodes"]["bdc"] = {"role": "dc", "site": "b"}
TWO_DC["links"].append({"name": "bfab", "a": "bx", "b": "bdc"})
