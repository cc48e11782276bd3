"""Testbed control-plane figures (root): start time, ITR switch latency, migration downtime.

A two-DC topology (user site ux; DC a: ax + adc hosting the VM; DC b: bx + bdc; VXLAN
fabric) with the map-server and one xTR agent per xTR driving the data planes:

* time for `TestbedControlPlane.start()` (daemons up, map-caches resolved);
* for each switch method (SMR, CHANGE-PRIORITY, both): from the POSTs to
  /set-priority on both owner agents to the user's data plane forwarding to the new
  locator, over 12 flips (the agents are 5 and 10 ms one-way from the user);
* a namespace VM migration: measured vs modelled downtime.

Numbers are noisy on a shared 2-core machine.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pacao.testbed import net
from pacao.testbed.controlplane import (
    ControllerSettings,
    MigrationModel,
    TestbedControlPlane,
    migrate_vm,
)
from pacao.testbed.topo.topology import load_topology

TOPO = yaml.safe_load(
    """
name: benchcp
fabric: vxlan
sites:
  a: {location: [48.85, 2.35]}
  b: {location: [45.76, 4.84]}
nodes:
  user: {role: user, eid: 10.1.0.10/24}
  ux: {role: xtr, rloc: 172.16.0.1}
  ax: {role: xtr, site: a, rloc: 172.16.0.2}
  bx: {role: xtr, site: b, rloc: 172.16.0.3}
  adc: {role: dc, site: a}
  bdc: {role: dc, site: b}
  vm: {role: vm, eid: 10.2.0.10/24}
links:
  - {name: lan, a: user, b: ux, a_addr: 10.1.0.10/24, b_addr: 10.1.0.1/24}
  - {name: ua, a: ux, b: ax, delay: 5}
  - {name: ub, a: ux, b: bx, delay: 10}
  - {name: ab, a: ax, b: bx, delay: distance}
  - {name: afab, a: ax, b: adc}
  - {name: bfab, a: bx, b: bdc}
  - {name: vmnet, a: vm, b: adc, a_addr: 10.2.0.10/24, b_addr: 10.2.0.1/24}
mappings:
  - {prefix: 10.1.0.0/24, locators: [{node: ux}]}
  - {prefix: 10.2.0.0/24, locators: [{node: ax, priority: 1}, {node: bx, priority: 2}]}
"""
)

FLIPS = r"""
import json, sys, time, http.client
from pacao.testbed.daemons.control import request
urls, sock, n = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def best():
    e = next(e for e in request(sock, {"op": "show"})["map_cache"] if e["prefix"] == "10.2.0.0/24")
    return min(e["locators"], key=lambda l: l["priority"])["rloc"]
out = []
for i in range(n):
    target, other = ("172.16.0.3", "172.16.0.2") if i % 2 == 0 else ("172.16.0.2", "172.16.0.3")
    body = json.dumps({"prefix": "10.2.0.0/24", "priorities": {target: 1, other: 2}})
    t0 = time.monotonic()
    for u in urls:
        h, p = u.split(":")
        c = http.client.HTTPConnection(h, int(p))
        c.request("POST", "/set-priority", body, {"Content-Type": "application/json"})
        c.getresponse().read()
    while best() != target:
        time.sleep(0.0005)
    out.append((time.monotonic() - t0) * 1000)
    time.sleep(0.5)
print(json.dumps(out))
"""


def main() -> int:
    net.check_system()
    tmp = Path(tempfile.mkdtemp(prefix="pacao-bench-cp-"))
    os.environ["PACAO_TESTBED_STATE"] = str(tmp / "state")
    f = tmp / "topo.yaml"
    f.write_text(yaml.safe_dump(TOPO))
    topo = load_topology(f)
    state = net.Testbed.new(f)
    try:
        state.up(topo)
        for method in ("both", "smr", "change-priority"):
            settings = ControllerSettings("legacy", 2, 1, 0.5, switch_method=method)  # type: ignore[arg-type]
            cp = TestbedControlPlane(state, topo, settings, tmp / f"cp-{method}")
            t0 = time.monotonic()
            cp.start()
            started = time.monotonic() - t0
            time.sleep(2)  # the agents learn who caches their prefix (probes)
            urls = [cp.agent_url(x).removeprefix("http://") for x in ("ax", "bx")]
            sock = str(state.rundir / "xtr-ux.sock")
            done = net.sh(sys.executable, "-c", FLIPS, json.dumps(urls), sock, "12", ns=cp.ns)
            ms = sorted(json.loads(done.stdout))
            print(
                f"switch method {method:16} start {started:5.1f} s  user ITR switched after "
                f"median {statistics.median(ms):6.1f} ms (min {ms[0]:.1f}, max {ms[-1]:.1f})"
            )
            cp.stop()
        for down_ms in (50, 500):
            model = MigrationModel(memory_mib=64, switchover_ms=down_ms)
            res = migrate_vm(state, "vm", "bdc" if down_ms == 50 else "adc", model)
            print(
                f"namespace migration 64 MiB @1 Gbit/s: model {res.model_duration_s:.3f} s "
                f"/ downtime {res.model_downtime_s:.3f} s; measured {res.duration_s:.3f} s "
                f"/ {res.downtime_s:.3f} s"
            )
    finally:
        state.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
