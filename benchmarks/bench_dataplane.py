"""Testbed data-plane figures (root): delay-line accuracy/throughput, LISP xTR forwarding rate.

Brings a 5-namespace topology up (user - ux = ax - adc - vm), measures with ping and
iperf3, and always takes it down. Numbers are noisy on a shared 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from pacao.testbed import net
from pacao.testbed.topo.topology import load_topology

TOPO = {
    "name": "bench",
    "nodes": {
        "user": {"role": "user", "eid": "10.1.0.10/24"},
        "ux": {"role": "xtr", "rloc": "172.16.0.1"},
        "ax": {"role": "xtr", "rloc": "172.16.0.2"},
        "adc": {"role": "dc"},
        "vm": {"role": "vm", "eid": "10.2.0.10/24"},
    },
    "links": [
        {"name": "lan", "a": "user", "b": "ux", "a_addr": "10.1.0.10/24", "b_addr": "10.1.0.1/24"},
        {"name": "wan", "a": "ux", "b": "ax"},
        {"name": "fab", "a": "ax", "b": "adc"},
        {"name": "vmnet", "a": "vm", "b": "adc", "a_addr": "10.2.0.10/24", "b_addr": "10.2.0.1/24"},
    ],
    "mappings": [
        {"prefix": "10.1.0.0/24", "locators": [{"node": "ux"}]},
        {"prefix": "10.2.0.0/24", "locators": [{"node": "ax"}]},
    ],
}


def ns_run(state: net.Testbed, node: str, *cmd: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", state.ns(node), *cmd], capture_output=True, text=True, check=True
    ).stdout


def rtts(state: net.Testbed, src: str, dst: str, count: int = 30, *extra: str) -> list[float]:
    out = ns_run(state, src, "ping", "-c", str(count), "-i", "0.02", *extra, dst)
    return sorted(float(x) for x in re.findall(r"time=([\d.]+) ms", out))


def iperf(state: net.Testbed, *args: str) -> dict[str, float]:
    server = subprocess.Popen(
        ["ip", "netns", "exec", state.ns("vm"), "iperf3", "-s", "-1", "-p", "5301"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time

        time.sleep(0.3)
        out = ns_run(state, "user", "iperf3", "-c", "10.2.0.10", "-p", "5301", "-J", *args)
    finally:
        server.wait(timeout=20)
    end = json.loads(out)["end"]
    if "lost_percent" not in end.get("sum", {}):
        return {"mbps": end["sum_received"]["bits_per_second"] / 1e6}
    s = end["sum"]
    return {
        "mbps": s["bits_per_second"] / 1e6 * (1 - s["lost_percent"] / 100),
        "lost_pct": s["lost_percent"],
        "pps": (s["packets"] - s["lost_packets"]) / s["seconds"],
    }


def main() -> int:
    net.check_system()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PACAO_TESTBED_STATE"] = tmp
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(TOPO))
        topo = load_topology(path)
        state = net.Testbed.new(path)
        try:
            state.up(topo)
            rtts(state, "user", "10.2.0.10", 5)  # warm ARP
            base = rtts(state, "user", "10.2.0.10")
            print(f"user->vm RTT through 2 user-space xTRs, no delay: median {base[15]:.3f} ms")
            kernel = rtts(state, "ux", "172.16.0.2", 30, "-I", "172.16.0.1")
            for delay in (5.0, 20.0):
                state.set_link(topo, "wan", delay_ms=delay)
                got = rtts(state, "ux", "172.16.0.2", 30, "-I", "172.16.0.1")
                err = [g - k - 2 * delay for g, k in zip(got, kernel, strict=True)]
                print(
                    f"delay line, {delay:g} ms each way: RTT median {got[15]:.3f} ms for "
                    f"{2 * delay:g} ms asked (+{got[15] - kernel[15] - 2 * delay:.3f} ms over "
                    f"kernel RTT), p90 error {sorted(err)[26]:.3f} ms"
                )
            state.set_link(topo, "wan", delay_ms=0)
            tcp = iperf(state, "-t", "4")
            print(f"LISP data plane, TCP user->vm (iperf3, 4 s): {tcp['mbps']:.1f} Mbit/s")
            state.set_link(topo, "wan", delay_ms=0.5)
            tcpd = iperf(state, "-t", "4")
            print(f"  + delay line on the WAN (0.5 ms each way): {tcpd['mbps']:.1f} Mbit/s")
            state.set_link(topo, "wan", delay_ms=0)
            udp = iperf(state, "-u", "-b", "200M", "-l", "64", "-t", "3")
            print(
                f"LISP data plane, UDP 64-byte payloads offered at 200 Mbit/s: "
                f"{udp['pps']:.0f} packets/s delivered ({udp['lost_pct']:.1f} % lost)"
            )
            stats = state.xtr_control("ux", {"op": "stats"})
            print(f"ux counters: {json.dumps(stats)}")
        finally:
            state.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
