"""The testbed on real namespaces (root, iproute2, iptables, tshark): these FAIL without them.

One small topology is brought up once per module: ping and TCP across the LISP data
plane, a delay change and an RLOC priority change seen in real traffic, tshark
decoding the encapsulation, then down with nothing left. A separate test kills
`pacao testbed up` mid-run and checks `cleanup` removes exactly what it left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pacao.testbed import net
from pacao.testbed.topo.topology import Topology, load_topology
from testbed_support import SMALL


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("tbstate")
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
    path = state_dir / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return path


@pytest.fixture(scope="module")
def bed(topo_file: Path) -> Iterator[tuple[net.Testbed, Topology]]:
    net.check_system()  # fails (not skips) without root or tools
    topo = load_topology(topo_file)
    state = net.Testbed.new(topo_file)
    try:
        state.up(topo)
        yield state, topo
    finally:
        state.down()
        assert net.leftovers(state.runid) == []
        assert not state.path.exists()


CLIENT = """
import socket, time
for _ in range(100):  # the server may still be starting on a loaded host
    try:
        s = socket.create_connection(("10.2.0.10", 7000))
        break
    except OSError:
        time.sleep(0.1)
s.sendall(bytes(range(256)) * 2000)
s.close()
"""


def in_ns(state: net.Testbed, node: str, *cmd: str, timeout: float = 30) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", state.ns(node), *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{cmd}: {done.stderr}{done.stdout}"
    return done.stdout


def avg_rtt(state: net.Testbed, count: int = 7) -> float:
    """Median ping RTT user -> VM (the median ignores a first ping slowed by ARP)."""
    out = in_ns(state, "user", "ping", "-c", str(count), "-i", "0.05", "10.2.0.10")
    times = sorted(float(x) for x in re.findall(r"time=([\d.]+) ms", out))
    assert len(times) == count, out
    return times[count // 2]


def locator_packets(state: net.Testbed) -> dict[str, int]:
    reply = state.xtr_control("ux", {"op": "show"})
    entry = next(e for e in reply["map_cache"] if e["prefix"] == "10.2.0.0/24")
    return {lo["rloc"]: lo["packets"] for lo in entry["locators"]}


def test_ping_tcp_delay_and_priority_switch(bed: tuple[net.Testbed, Topology]) -> None:
    state, topo = bed
    # path user -> ux -(ua 5 ms)-> ax -> adc -> vm, back the same way: RTT about 10 ms
    base = avg_rtt(state)
    assert 9.9 < base < 25, base  # + user-space overhead, noisy on a loaded host
    # TCP across the LISP data plane (a few hundred KB, checked byte for byte)
    server = subprocess.Popen(
        ["ip", "netns", "exec", state.ns("vm"), sys.executable, "-c",
         "import socket,hashlib;s=socket.create_server(('10.2.0.10',7000));c,_=s.accept();"
         "h=hashlib.sha256()\nwhile (b:=c.recv(65536)): h.update(b)\nprint(h.hexdigest())"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        in_ns(state, "user", sys.executable, "-c", CLIENT)
        out, _ = server.communicate(timeout=20)
    finally:
        server.kill()
    import hashlib

    assert out.strip() == hashlib.sha256(bytes(range(256)) * 2000).hexdigest()

    # +40 ms one-way on the user<->ax link, both directions: RTT +80 ms
    state.set_link(topo, "ua", delay_ms=45)
    slow = avg_rtt(state)
    assert 76 < slow - base < 92, (base, slow)
    state.set_link(topo, "ua", delay_ms=5)

    # priority change at the user's xTR: traffic enters at bx (ub 10 ms), VM still behind ax
    before = locator_packets(state)
    reply = state.xtr_control(
        "ux",
        {"op": "priority", "prefix": "10.2.0.0/24", "rloc": "172.16.0.2", "priority": 9},
    )
    assert reply["ok"], reply
    switched = avg_rtt(state, 10)
    after = locator_packets(state)
    assert after["172.16.0.3"] - before["172.16.0.3"] >= 10
    assert after["172.16.0.2"] == before["172.16.0.2"]
    # forward ux->bx 10 ms + bx->ax fabric (Paris-Lyon, ~5.9 ms), back via ua 5 ms: +10.9 ms
    assert 8 < switched - base < 20, (base, switched)
    # the VM's replies leave through bx too: RTT = 2 x (10 + 5.9) ms over kernel speed
    state.set_egress(topo, "ax", "10.1.0.0/24", "bx")
    both = avg_rtt(state)
    assert 8 < both - switched < 20, (switched, both)
    state.set_egress(topo, "ax", "10.1.0.0/24", "ax")
    bad = state.xtr_control(
        "ux", {"op": "priority", "prefix": "10.2.0.0/24", "rloc": "1.2.3.4", "priority": 1}
    )
    assert not bad["ok"]


def test_tshark_decodes_lisp_data(bed: tuple[net.Testbed, Topology]) -> None:
    state, topo = bed
    link = topo.link("ua")
    dev = state.ifname(link.index, "b")
    pcap = state.rundir / "ua.pcap"
    cap = subprocess.Popen(
        ["ip", "netns", "exec", state.ns("ax"), "tshark", "-q", "-i", dev, "-c", "6",
         "-f", "udp port 4341", "-w", str(pcap)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while cap.poll() is None and time.monotonic() < deadline:
            in_ns(state, "user", "ping", "-c", "3", "-i", "0.05", "-q", "10.2.0.10")
        cap.wait(timeout=5)
    finally:
        if cap.poll() is None:
            cap.kill()
    text = subprocess.run(
        ["tshark", "-V", "-r", str(pcap)], capture_output=True, text=True, check=True
    ).stdout
    assert text.count("Locator/ID Separation Protocol (Data)") >= 6
    assert "Malformed" not in text
    assert "Internet Control Message Protocol" in text  # the inner ICMP echo is decoded
    assert re.search(r"N bit \(Nonce present\): Set", text)
    assert re.search(r"Nonce: \d+ \(0x[0-9a-f]{6}\)", text)
    assert "Locator-Status-Bits: 0x00000001" in text


def test_killed_up_then_cleanup_leaves_nothing(state_dir: Path, topo_file: Path) -> None:
    net.check_system()
    own = state_dir / "crash"
    own.mkdir()
    env = {**os.environ, "PACAO_TESTBED_STATE": str(own)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pacao.cli", "testbed", "up", "--topology", str(topo_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    runid = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # kill once namespaces, links and a daemon exist
            states = list(own.glob("testbed-*.json"))
            if states:
                try:
                    doc = json.loads(states[0].read_text())
                except ValueError:
                    continue
                runid = doc["runid"]
                if doc["procs"]:
                    break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        assert runid is not None
        doc = json.loads((own / f"testbed-{runid}.json").read_text())
        assert not doc["ready"]
        assert net.leftovers(runid), "the kill should have left namespaces behind"
        pids = [(p["pid"], p["start"]) for p in doc["procs"]]
        assert any(net.proc_start_time(pid) == start for pid, start in pids)
    finally:
        done = subprocess.run(
            [sys.executable, "-m", "pacao.cli", "testbed", "cleanup"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert runid is not None
    assert net.leftovers(runid) == []
    assert all(net.proc_start_time(pid) != start for pid, start in pids)
    assert list(own.iterdir()) == []


def test_cli_play_changes_a_link_on_time(bed: tuple[net.Testbed, Topology], tmp_path: Path) -> None:
    state, topo = bed
    req = {"op": "priority", "prefix": "10.2.0.0/24", "rloc": "172.16.0.2", "priority": 9}
    assert state.xtr_control("ux", req)["ok"]  # enter at bx; the scenario switches back
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: p\nduration: 1\nevents:\n"
        "  - {at: 0, link: ua, delay: 25}\n"
        "  - {at: 0.5, xtr: ux, prefix: 10.2.0.0/24, rloc: 172.16.0.2, priority: 1}\n"
    )
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pacao.cli", "testbed", "play", str(plan), "--time-scale", "2",
         "--run", state.runid],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 >= 2.0  # duration 1 s x time-scale 2 (a floor)
    offsets = [float(line.split()[0]) for line in done.stdout.splitlines()]
    # The second event at 0.5 x 2 s: never early (a floor); late only by the host's
    # scheduling, so the ceiling is the scenario's end (2 s), where a time scale applied
    # twice would put it; the first (at 0) well before the second's time.
    assert offsets[0] < 0.5 and 0.95 < offsets[1] < 2.0, offsets
    slow = avg_rtt(state)
    state.set_link(topo, "ua", delay_ms=5)
    base = avg_rtt(state)
    # ua carries both directions again (priority back to 1 for ax): +40 ms RTT
    assert 36 < slow - base < 52, (base, slow)
    bad = subprocess.run(
        [sys.executable, "-m", "pacao.cli", "testbed", "set-link", "nope", "--delay", "1",
         "--run", state.runid],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.startswith("pacao: error: link:") and bad.stderr.count("\n") == 1
