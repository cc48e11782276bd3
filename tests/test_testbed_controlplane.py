"""The LISP control plane, the controller and VM migration on real namespaces (root).

These FAIL (never skip) without root or the tools. A two-DC topology (user site ux;
DC a: ax + adc hosting the VM; DC b: bx + bdc) runs the map-server, one xTR agent
per xTR driving its data plane, and for the PACAO test the controller.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pacao.controller.storage import Store
from pacao.testbed import net
from pacao.testbed.controlplane import (
    ControllerSettings,
    MigrationModel,
    TestbedControlPlane,
    migrate_vm,
    vm_location,
)
from pacao.testbed.daemons.impair import EARLY
from pacao.testbed.topo.topology import Topology, load_topology
from testbed_support import TWO_DC

PREFIX = "10.2.0.0/24"
AX, BX = "172.16.0.2", "172.16.0.3"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("tbcp")
    old = os.environ.get("PACAO_TESTBED_STATE")
    os.environ["PACAO_TESTBED_STATE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            del os.environ["PACAO_TESTBED_STATE"]
        else:
            os.environ["PACAO_TESTBED_STATE"] = old


@pytest.fixture(scope="module")
def topo_file(state_dir: Path) -> Path:
    path = state_dir / "twodc.yaml"
    path.write_text(yaml.safe_dump(TWO_DC))
    return path


@pytest.fixture(scope="module")
def legacy(topo_file: Path) -> Iterator[tuple[net.Testbed, Topology, TestbedControlPlane]]:
    """The legacy arm: map-server and agents, no controller."""
    net.check_system()
    topo = load_topology(topo_file)
    state = net.Testbed.new(topo_file)
    try:
        state.up(topo)
        cp = TestbedControlPlane(
            state, topo, ControllerSettings("legacy", s1=2, s2=1, s3=0.1), state.rundir / "cp"
        )
        cp.start()
        yield state, topo, cp
        cp.stop()
    finally:
        state.down()
        assert net.leftovers(state.runid) == []


def in_ns(state: net.Testbed, node: str, *cmd: str, timeout: float = 60) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", state.ns(node), *cmd], capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{cmd}: {done.stderr}{done.stdout}"
    return done.stdout


def median_rtt(state: net.Testbed, count: int = 7) -> float:
    out = in_ns(state, "user", "ping", "-c", str(count), "-i", "0.05", "10.2.0.10")
    times = sorted(float(x) for x in re.findall(r"time=([\d.]+) ms", out))
    assert len(times) == count, out
    return times[count // 2]


def sent_per_locator(cp: TestbedControlPlane) -> dict[str, int]:
    entry = next(e for e in cp.dataplane("ux")["map_cache"] if e["prefix"] == PREFIX)
    return {lo["rloc"]: lo["packets"] for lo in entry["locators"]}


def fresh_snapshot(cp: TestbedControlPlane, node: str) -> dict[str, Any]:
    """The agent's stats file once it was rewritten after now (every second)."""
    now = time.time()
    deadline = time.monotonic() + 30  # a timeout, not the behaviour
    while time.monotonic() < deadline:
        snap = cp.agent(node)
        if snap["time"] > now:
            return snap
        time.sleep(0.1)
    raise AssertionError("the agent's stats file was not refreshed")


def wait_until(what: str, pred: Any, timeout: float = 30) -> Any:
    """Until pred() returns something true (a state, not a fixed sleep); the timeout is
    a failure message, generous for a loaded host."""
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return got


class PingLog:
    """``ping -D`` from the user to the VM, its replies (wall time, icmp_seq) read as they
    come, so that a test waits for replies rather than for a fixed time."""

    def __init__(self, state: net.Testbed, interval: float) -> None:
        self.replies: list[tuple[float, int]] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", state.ns("user"), "ping", "-D", "-n", "-i", str(interval),
             "10.2.0.10"], stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.match(r"^\[([\d.]+)\] \d+ bytes from .* icmp_seq=(\d+)", line)
            if m:
                self.replies.append((float(m.group(1)), int(m.group(2))))

    def after(self, t: float) -> int:
        return sum(1 for ts, _ in list(self.replies) if ts > t)

    def stop(self) -> list[tuple[float, int]]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        return list(self.replies)


def windows_decided(cp: TestbedControlPlane, s1: float) -> int:
    """S' windows the controller has closed and stored (its Step 1 runs on each)."""
    if not cp.db.exists():
        return 0
    store = Store(f"sqlite:///{cp.db}")
    try:
        rows = store.measurements(kind="window", limit=10000)
    finally:
        store.close()
    return len({r["ts"] for r in rows if abs(float(r["window_s"]) - s1) < 1e-6})


def priorities(cp: TestbedControlPlane, node: str) -> dict[str, int]:
    entry = next(e for e in cp.dataplane(node)["map_cache"] if e["prefix"] == PREFIX)
    return {lo["rloc"]: lo["priority"] for lo in entry["locators"]}


def test_data_plane_map_cache_comes_from_the_map_server(
    legacy: tuple[net.Testbed, Topology, TestbedControlPlane],
) -> None:
    state, _topo, cp = legacy
    # start() emptied the seeded caches; the agents resolved them through the map-server
    assert priorities(cp, "ux") == {AX: 1, BX: 2}
    snap = fresh_snapshot(cp, "ux")
    assert snap["counters"]["map_reply"] >= 1
    assert [e["prefix"] for e in snap["map_cache"]] == [PREFIX]
    ms_log = (state.rundir / "map-server.log").read_text()
    assert "listening on 198.18.255.1:4342" in ms_log
    before = sent_per_locator(cp)
    # the pings cross the emulated 2 x 5 ms (a floor no load lowers) through ax, not bx
    assert median_rtt(state) > 9.9
    after = sent_per_locator(cp)
    assert after[AX] - before[AX] >= 7 and after[BX] == before[BX], (before, after)


def test_set_priority_moves_real_traffic(
    legacy: tuple[net.Testbed, Topology, TestbedControlPlane],
) -> None:
    state, _topo, cp = legacy
    before = sent_per_locator(cp)
    base = median_rtt(state)  # ux -(5 ms)- ax -> adc -> vm: RTT about 10 ms
    mid = sent_per_locator(cp)
    assert mid[AX] - before[AX] >= 7 and mid[BX] == before[BX]
    replies = cp.set_priority(PREFIX, {"ax": 5})  # `pacao lisp set-priority` on ax and bx
    assert all(r["method"] == "both" for r in replies)
    assert any(r["itrs"] for r in replies)  # the user's ITR was told (SMR + CHANGE-PRIORITY)
    wait_until("the user's data plane to switch", lambda: priorities(cp, "ux")[AX] == 5)
    try:
        after = median_rtt(state)
        end = sent_per_locator(cp)
        # ux -(10 ms)- bx -(fabric 5.9 ms)- ax -> adc -> vm, and the reply back through bx
        assert end[BX] - mid[BX] >= 7, (mid, end)
        assert end[AX] - mid[AX] <= 1, (mid, end)
        assert after > base + 15, (base, after)
        assert [e for e in cp.events() if e["kind"] == "egress" and e["node"] == "ax"][-1][
            "via"
        ] == BX  # the VM's replies leave through the new entry
    finally:
        cp.set_priority(PREFIX, {"ax": 1})
        wait_until("the user's data plane to switch back", lambda: priorities(cp, "ux")[AX] == 1)


def probed_rtt(cp: TestbedControlPlane, rloc: str) -> float:
    snap = fresh_snapshot(cp, "ux")
    entry = next(e for e in snap["map_cache"] if e["prefix"] == PREFIX)
    lo = next(x for x in entry["locators"] if x["address"] == rloc)
    return float(lo["rtt_ms"])


def test_probed_rtt_follows_an_impairment(
    legacy: tuple[net.Testbed, Topology, TestbedControlPlane],
) -> None:
    state, topo, cp = legacy
    base = probed_rtt(cp, AX)
    assert base > 9.9, base  # 2 x 5 ms emulated: a floor no load lowers
    state.set_link(topo, "ua", delay_ms=40)
    try:
        # until the probes see the new 2 x 40 ms (S''' = 0.1 s; the wait is the state)
        raised = wait_until("the probed RTT to follow", lambda: (r := probed_rtt(cp, AX)) > 79.9
                            and r)  # fmt: skip
        # the other path (ux-bx, 2 x 10 ms) did not get the +80 ms: it is now the faster one
        assert probed_rtt(cp, BX) < raised, raised
    finally:
        state.set_link(topo, "ua", delay_ms=5)


def test_namespace_migration_downtime_matches_the_model(
    legacy: tuple[net.Testbed, Topology, TestbedControlPlane],
) -> None:
    state, _topo, cp = legacy
    # 64 MiB over the 1 Gbit/s default: 0.54 s pre-copy; 0.5 s stop-and-copy
    model = MigrationModel(memory_mib=64, switchover_ms=500)
    ping = PingLog(state, 0.01)
    try:
        wait_until("replies before the migration", lambda: len(ping.replies) >= 10)
        res = migrate_vm(state, "vm", "bdc", model)
        end = res.started + res.duration_s
        wait_until("replies from the destination", lambda: ping.after(end) >= 10)
    finally:
        replies = ping.stop()
    assert vm_location(state, "vm") == "bdc"
    assert res.modelled and res.src == "adc" and res.dst == "bdc"
    assert res.model_downtime_s == pytest.approx(0.5)
    # At least the model's times (it waits them: no load shortens them). How much the
    # plumbing adds (0.01-0.1 s idle, above 1 s at a load average of 48) is printed here
    # and by benchmarks/bench_testbed_controlplane.py, not asserted.
    assert res.downtime_s >= 0.5 and res.duration_s >= res.model_duration_s, res
    assert res.downtime_s < res.duration_s, res  # the outage is part of the migration
    # The user's view (ping -D): one outage, the lost echoes one run of icmp_seq (a
    # loaded host delays echoes, it does not drop them), and its silence the model's.
    seqs = sorted(seq for _, seq in replies)
    lost = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
    assert lost and lost == list(range(lost[0], lost[-1] + 1)), lost  # no other outage
    times = sorted(t for t, _ in replies)
    unreachable = max(b - a for a, b in itertools.pairwise(times))
    assert unreachable > 0.8 * 0.5, (unreachable, res)  # a floor, as for res.downtime_s
    print(f"downtime {res.downtime_s:.3f} s (model 0.5 s), the user's silence "
          f"{unreachable:.3f} s, {len(lost)} echoes lost")  # fmt: skip
    # the VM answers from DC b with the same EID; the fabric now carries ax -> bx
    assert median_rtt(state) > 9.9
    migrations = [e for e in cp.events() if e["kind"] == "migration"]
    assert migrations[-1]["dst"] == "bdc"
    back = migrate_vm(state, "vm", "adc", MigrationModel(memory_mib=8, switchover_ms=0))
    assert back.dst == "adc" and vm_location(state, "vm") == "adc"
    assert migrate_vm(state, "vm", "adc").duration_s == 0  # already there: nothing to do


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pacao.cli", "testbed", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli_set_priority_and_migrate(
    legacy: tuple[net.Testbed, Topology, TestbedControlPlane],
) -> None:
    state, _topo, cp = legacy
    run = ("--run", state.runid)
    replies = json.loads(cli("set-priority", PREFIX, "ax=7", *run))
    assert [r["locators"][0]["priority"] for r in replies] == [7, 7]
    wait_until("the user's data plane to switch", lambda: priorities(cp, "ux")[AX] == 7)
    cli("set-priority", PREFIX, "ax=1", *run)
    here = vm_location(state, "vm")
    there = "bdc" if here == "adc" else "adc"
    res = json.loads(cli("migrate", "vm", there, "--memory", "8", "--switchover", "10", *run))
    assert res["dst"] == there and res["modelled"] and res["bytes"] == 8 << 20
    json.loads(cli("migrate", "vm", here, "--memory", "8", *run))
    assert vm_location(state, "vm") == here
    bad = subprocess.run(
        [sys.executable, "-m", "pacao.cli", "testbed", "migrate", "vm", "ux", *run],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("pacao: error: dc: ")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_controller_switches_the_entry_then_migrates_the_vm(topo_file: Path) -> None:
    """PACAO-2 under an injected delay, time-compressed: S' = 1 s, S'' = 0.5 s."""
    net.check_system()
    topo = load_topology(topo_file)
    state = net.Testbed.new(topo_file)
    try:
        state.up(topo)
        settings = ControllerSettings("pacao2", s1=1.0, s2=0.5, s3=0.1, rtt_max_ms=30)
        model = MigrationModel(memory_mib=128, switchover_ms=300)
        cp = TestbedControlPlane(state, topo, settings, state.rundir / "cp", model)
        cp.start()
        # SLA met (via ax the user sees about 10 ms): two S' windows decided, no plan
        wait_until("two S' windows decided", lambda: windows_decided(cp, 1.0) >= 3, 60)
        assert cp.plans() == []
        stressed = time.time()
        state.set_link(topo, "ua", delay_ms=50)  # user<->ax RTT about 100 ms
        deadline = time.monotonic() + 60  # a timeout: the asserts below fail without plans
        while time.monotonic() < deadline:
            plans = cp.plans()
            if any(p["kind"] == "vm_migration" and p["state"] == "succeeded" for p in plans):
                break
            time.sleep(0.2)
        plans = cp.plans()
        summary = [(p["created"] - stressed, p["kind"], p["reason"], p["state"]) for p in plans]
        # Step 1 switches the entry to bx; Step 2 (S'' after the violation) migrates the VM
        # to bdc with its own EntrySwitch. Which plan is stored first depends on the windows;
        # when the first violated window does not show bx better by the switch margin, the
        # migration's EntrySwitch is the switch (no second plan while one is in flight).
        switches = [p for p in plans if p["kind"] == "entry_switch"]
        migration = next((p for p in plans if p["kind"] == "vm_migration"), None)
        assert migration is not None and len(switches) <= 1, summary
        assert all(p["state"] == "succeeded" for p in plans), summary
        assert all(p["actions"][0]["params"]["rloc"] == BX for p in switches)
        assert [a["kind"] for a in migration["actions"]] == ["VmMigration", "EntrySwitch"]
        assert migration["actions"][0]["params"]["dst"] == "bdc"
        # decided after the stress; how soon (expected within two S' windows plus the
        # probe and poll periods) is printed, not asserted: a loaded host stretches it
        assert plans[0]["created"] >= stressed, summary
        print(f"first plan {plans[0]['created'] - stressed:.2f} s after the stress")
        events = cp.events()
        user_switch = next(
            e for e in events if e["kind"] == "entry" and e["node"] == "ux" and e["rloc"] == BX
        )
        # the user's data plane moved while a plan's EntrySwitch executed (SMR/CHANGE-PRIORITY)
        done = min(p["updated"] for p in [*switches, migration])
        # event order (the slack is the agents' 1 s stats period, not a speed target)
        assert plans[0]["created"] <= user_switch["t"] <= done + 5, summary
        moved = next(e for e in events if e["kind"] == "migration")
        assert moved["dst"] == "bdc" and moved["t"] >= migration["created"]
        assert moved["model_downtime_s"] == pytest.approx(0.3)
        assert moved["downtime_s"] >= 0.3  # the model's + the plumbing (see above)
        assert vm_location(state, "vm") == "bdc"
        sent = sent_per_locator(cp)
        assert median_rtt(state) > 19.9  # ux -(10 ms)- bx -> bdc -> vm
        now = sent_per_locator(cp)
        assert now[BX] - sent[BX] >= 7 and now[AX] == sent[AX], (sent, now)
    finally:
        state.down()
        assert net.leftovers(state.runid) == []


DAEMON = """
import sys, time
from pathlib import Path
from typing import Any
from pacao.controller.storage import Store
from pacao.testbed import net
from pacao.testbed.controlplane import ControllerSettings, TestbedControlPlane
from pacao.testbed.topo.topology import load_topology
f = Path(sys.argv[1])
topo = load_topology(f)
state = net.Testbed.new(f)
state.up(topo)
s = ControllerSettings("pacao1", s1=2, s2=1, s3=0.5)
TestbedControlPlane(state, topo, s, state.rundir / "cp").start()
print(state.runid, flush=True)
time.sleep(600)
"""


def test_cleanup_after_a_killed_run_removes_agents_controller_namespaces(
    topo_file: Path, state_dir: Path
) -> None:
    net.check_system()
    proc = subprocess.Popen(
        [sys.executable, "-c", DAEMON, str(topo_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        runid = (proc.stdout.readline() if proc.stdout else "").strip()
        assert runid, "the run did not start"
    finally:
        proc.kill()
        proc.wait()
    doc = json.loads((state_dir / f"testbed-{runid}.json").read_text())
    names = {p["name"] for p in doc["procs"]}
    assert {"map-server", "controller", "agent-ux", "agent-ax", "agent-bx"} <= names
    assert f"pc{runid}-ctl" in doc["netns"]
    alive = [p for p in doc["procs"] if net.proc_start_time(p["pid"]) == p["start"]]
    assert len(alive) == len(doc["procs"])  # the daemons outlive their parent
    done = subprocess.run(
        [sys.executable, "-m", "pacao.cli", "testbed", "cleanup"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert net.leftovers(runid) == []
    assert all(net.proc_start_time(p["pid"]) != p["start"] for p in doc["procs"])
    assert not (state_dir / f"testbed-{runid}.json").exists()


def vxlan_packets(state: net.Testbed, node: str) -> tuple[int, int]:
    """(tx, rx) packets of a dc node's VXLAN port."""
    out = in_ns(state, node, "ip", "-s", "-j", "link", "show", f"{state.prefix}vx")
    stats = json.loads(out)[0]["stats64"]
    return int(stats["tx"]["packets"]), int(stats["rx"]["packets"])


def test_vxlan_fabric_carries_the_vm_across_a_migration(state_dir: Path) -> None:
    """fabric: vxlan. The VM keeps its EID and subnet at DC b; the entry stays ax, whose
    dc reaches the VM over VXLAN across the ax-bx link (real encapsulated packets)."""
    net.check_system()
    doc = yaml.safe_load(yaml.safe_dump(TWO_DC))
    doc["fabric"] = "vxlan"
    f = state_dir / "twodc-vxlan.yaml"
    f.write_text(yaml.safe_dump(doc))
    topo = load_topology(f)
    state = net.Testbed.new(f)
    try:
        state.up(topo)
        first = vxlan_packets(state, "adc")
        assert median_rtt(state) > 9.9  # ux - ax - adc - vm, no tunnel yet:
        before = vxlan_packets(state, "adc"), vxlan_packets(state, "bdc")
        assert before[0][0] - first[0] < 7  # adc did not encapsulate the 7 pings
        res = migrate_vm(state, "vm", "bdc", MigrationModel(memory_mib=16, switchover_ms=300))
        # the model's 0.3 s at least (see the namespace migration test above)
        assert res.downtime_s >= 0.3 and vm_location(state, "vm") == "bdc"
        # the VM's address and gateway did not change; only its port and the FDBs moved
        assert "10.2.0.10/24" in in_ns(state, "vm", "ip", "-o", "addr")
        assert "default via 10.2.0.1" in in_ns(state, "vm", "ip", "route")
        # + the ax-bx fabric link both ways ('distance': 5.87 ms each way); the delay line
        # releases a packet up to EARLY before it is due, on each of the 4 delayed crossings
        ab_ms = topo.link("ab").impairment.delay_ms
        assert median_rtt(state) > 2 * (5 + ab_ms) - 4 * EARLY * 1000
        after = vxlan_packets(state, "adc"), vxlan_packets(state, "bdc")
        assert after[0][0] - before[0][0] >= 7  # adc encapsulated the user's pings
        assert after[1][1] - before[1][1] >= 7  # bdc decapsulated them for the VM
        ab = topo.link("ab")
        dev = state.ifname(ab.index, ab.end("bx"))
        pcap = state.rundir / "ab.pcap"
        cap = subprocess.Popen(
            ["ip", "netns", "exec", state.ns("bx"), "tshark", "-q", "-i", dev, "-c", "4",
             "-f", "udp port 4789", "-w", str(pcap)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while cap.poll() is None and time.monotonic() < deadline:
                in_ns(state, "user", "ping", "-c", "3", "-i", "0.05", "-q", "10.2.0.10")
            cap.wait(timeout=5)
        finally:
            if cap.poll() is None:
                cap.kill()
        out = subprocess.run(
            ["tshark", "-r", str(pcap), "-Y", "vxlan.vni == 4242 && icmp", "-T", "fields",
             "-e", "ip.dst"], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "10.2.0.10" in out  # inner destination of a VXLAN packet on the link
    finally:
        state.down()
        assert net.leftovers(state.runid) == []
