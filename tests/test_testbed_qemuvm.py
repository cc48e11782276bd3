"""QemuGuest on real namespaces (root, iproute2, QEMU): the guest's EID answers ICMP and
TCP before and after a live migration between two namespaces joined by a veth.

Two throwaway namespaces ``pq-<pid>-a`` and ``pq-<pid>-b`` are created and deleted here:
each has a bridge with the guest's gateway 10.2.0.1/24 (same MAC at both sites: an
anycast gateway), QemuGuest's TAP on it, and a veth 172.31.0.1/30 - 172.31.0.2/30 between
them carries the migration stream and the routed traffic to the EID. Fails without root.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacao.controller.drivers.base import DriverError
from pacao.controller.drivers.qmp import QmpClient
from pacao.testbed.vm.qemuvm import DIRTY_WORD_BYTES, QemuGuest, ram_size_arg
from qemu_support import need_qemu

PID = os.getpid()
NS_A, NS_B = f"pq-{PID}-a", f"pq-{PID}-b"
EID, GW, GW_MAC = "10.2.0.10", "10.2.0.1", "02:00:0a:02:00:01"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {r.returncode} {r.stdout} {r.stderr}")
    return r


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args, check=check)


@pytest.fixture
def sites() -> Iterator[None]:
    assert os.geteuid() == 0, "the QemuGuest namespace test needs root (it must not skip)"
    try:
        for ns in (NS_A, NS_B):
            sh("ip", "netns", "add", ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
            in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            in_ns(ns, "ip", "link", "add", "br0", "type", "bridge")
            in_ns(ns, "ip", "link", "set", "br0", "address", GW_MAC)
            in_ns(ns, "ip", "addr", "add", f"{GW}/24", "dev", "br0")
            in_ns(ns, "ip", "link", "set", "br0", "up")
        va, vb = f"pq{PID}a", f"pq{PID}b"
        sh("ip", "link", "add", va, "netns", NS_A, "type", "veth", "peer", "name", vb,
           "netns", NS_B)  # fmt: skip
        for ns, dev, addr in ((NS_A, va, "172.31.0.1/30"), (NS_B, vb, "172.31.0.2/30")):
            in_ns(ns, "ip", "addr", "add", addr, "dev", dev)
            in_ns(ns, "ip", "link", "set", dev, "up")
        # The EID lives at site a: b reaches it through a.
        in_ns(NS_B, "ip", "route", "add", f"{EID}/32", "via", "172.31.0.1")
        yield
    finally:
        for ns in (NS_A, NS_B):
            sh("ip", "netns", "del", ns, check=False)
        left = sh("ip", "netns", "list").stdout
        assert NS_A not in left and NS_B not in left


FETCH = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
if sys.argv[3] == "echo":
    s.sendall(b"pacao-echo\\n")
    got = b""
    while not got.endswith(b"\\n"):
        got += s.recv(100)
else:
    s.sendall(b"GET " + sys.argv[3].encode() + b" HTTP/1.0\\r\\n\\r\\n")
    got = b""
    while chunk := s.recv(1 << 16):
        got += chunk
    got = got.split(b"\\r\\n\\r\\n", 1)[1]
sys.stdout.buffer.write(got)
"""


# One TCP connection to the echo port, a line every 20 ms until STOP exists: it must
# survive the migration (the guest's TCP state moves with it); prints the longest gap.
# The echo count so far is written to PROGRESS, for the test to wait on.
FLOW = """
import json, os, socket, sys, time
s = socket.create_connection((sys.argv[1], 7), timeout=10)
n, last, gap = 0, time.monotonic(), 0.0
while not os.path.exists(sys.argv[2]):
    s.sendall(b"%d\\n" % n)
    got = b""
    while not got.endswith(b"\\n"):
        chunk = s.recv(100)
        if not chunk:
            raise SystemExit("connection closed")
        got += chunk
    assert int(got) == n, (got, n)
    now = time.monotonic()
    gap, last, n = max(gap, now - last), now, n + 1
    with open(sys.argv[3] + ".tmp", "w") as f:
        f.write(str(n))
    os.replace(sys.argv[3] + ".tmp", sys.argv[3])
    time.sleep(0.02)
print(json.dumps({"echoes": n, "max_gap_ms": gap * 1000}))
"""


def tcp(ns: str, port: int, what: str) -> bytes:
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", FETCH, EID, str(port),
                        what], capture_output=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def reach(ns: str) -> None:
    """ICMP and TCP (HTTP and echo) from ``ns`` to the guest's EID."""
    in_ns(ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", EID)
    assert tcp(ns, 80, "/index.html").strip() == b"pacao guest"
    assert len(tcp(ns, 80, "/blob")) == 4 << 20
    assert tcp(ns, 7, "echo") == b"pacao-echo\n"


def echoes_after(progress: Path, count: int, flow: subprocess.Popen[bytes]) -> int:
    """Until the echo flow has done more than ``count`` echoes (a state, not a fixed sleep);
    the timeout is a failure message."""
    deadline = time.monotonic() + 60
    while True:
        n = int(progress.read_text() or 0) if progress.exists() else 0
        if n > count:
            return n
        assert flow.poll() is None, flow.communicate()[1].decode()
        assert time.monotonic() < deadline, f"the echo flow stalled at {n}"
        time.sleep(0.05)


def ram_block_bytes(qmp: Path, block: str = "pc.ram") -> int:
    """The used size of a running QEMU's RAM block, from its own ``info ramblock``."""

    async def ask() -> str:
        c = await QmpClient(f"unix:{qmp}", timeout=10).connect()
        try:
            return str(await c.execute("human-monitor-command",
                                       {"command-line": "info ramblock"}))  # fmt: skip
        finally:
            await c.close()

    text = asyncio.run(ask())
    m = re.search(rf"^\s*{re.escape(block)}\s+\S+ \S+\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)", text, re.M)
    assert m, text
    return int(m.group(1), 16)


def test_tcg_guest_ram_is_no_whole_number_of_dirty_bitmap_words() -> None:
    # QEMU 7.2's word-at-a-time dirty-bitmap sync loses TCG stores during a migration
    # (ram_size_arg): a TCG guest's RAM must take the page-by-page path, a KVM one need not
    for mib in (64, 128, 1024):
        kib = int(ram_size_arg(mib, "tcg").removesuffix("K"))
        assert mib * 1024 < kib < mib * 1024 + DIRTY_WORD_BYTES // 1024
        assert kib % 8 == 0 and (kib * 1024) % DIRTY_WORD_BYTES != 0
        assert ram_size_arg(mib, "tcg,thread=single") == f"{kib}K"
        assert ram_size_arg(mib, "kvm") == str(mib)


def test_qemu_guest_migrates_between_namespaces(sites: None, tmp_path: Path) -> None:
    guest = need_qemu()
    g = QemuGuest("pqvm", NS_A, f"pqt{PID}a", f"{EID}/24", GW, bridge="br0", blob_mib=4,
                  guest=guest)  # fmt: skip
    try:
        g.start()
        assert g.alive()
        # the RAM block QEMU really made is not whole dirty-bitmap words (ram_size_arg), at
        # both ends of the migration (checked at the destination below)
        ram = ram_block_bytes(g.qmp_path)
        assert ram >= 128 << 20 and (ram % DIRTY_WORD_BYTES != 0 or g.accel != "tcg"), hex(ram)
        reach(NS_A)
        reach(NS_B)
        # a destination that cannot listen: an error, the guest stays at a, nothing left
        with pytest.raises(DriverError, match="exited"):
            g.migrate_to(NS_B, f"pqt{PID}x", "172.31.0.9", 4444, dest_bridge="br0")
        assert g.ns == NS_A and g.alive()
        assert in_ns(NS_B, "ip", "link", "show", f"pqt{PID}x", check=False).returncode != 0
        stop, progress = tmp_path / "stop", tmp_path / "echoes"
        flow = subprocess.Popen(
            ["ip", "netns", "exec", NS_B, sys.executable, "-c", FLOW, EID, str(stop),
             str(progress)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        before = echoes_after(progress, 9, flow)  # the flow runs before the migration
        r = g.migrate_to(NS_B, f"pqt{PID}b", "172.31.0.2", 4444, bandwidth_mbps=1000,
                         max_downtime_ms=300, dest_bridge="br0")  # fmt: skip
        print(f"\nQemuGuest migration {r.src_ns} -> {r.dst_ns} (128 MiB guest, 4 MiB blob, "
              f"1 Gbit/s cap): total {r.total_time_ms:.0f} ms, downtime {r.downtime_ms:.0f} ms,"
              f" {r.transferred_bytes / 2**20:.1f} MiB, wall {r.wall_s:.2f} s")  # fmt: skip
        assert (g.ns, g.tap) == (NS_B, f"pqt{PID}b")
        assert r.transferred_bytes > 4 << 20 and 0 < r.downtime_ms < r.total_time_ms, r
        # the source TAP is gone with its QEMU; the guest runs at b
        assert in_ns(NS_A, "ip", "link", "show", f"pqt{PID}a", check=False).returncode != 0
        assert g.alive()
        assert ram_block_bytes(g.qmp_path) == ram
        # the EID moves: a routes it to b, b reaches it on its own bridge
        in_ns(NS_B, "ip", "route", "del", f"{EID}/32")
        in_ns(NS_A, "ip", "route", "add", f"{EID}/32", "via", "172.31.0.2")
        moved = echoes_after(progress, 0, flow)
        echoes_after(progress, moved + 10, flow)  # ten echoes after the move: it survived
        stop.touch()
        out, err = flow.communicate(timeout=30)
        assert flow.returncode == 0, err.decode()
        seen = json.loads(out)
        print(f"TCP echo flow across the migration: {seen['echoes']} echoes, longest gap "
              f"{seen['max_gap_ms']:.0f} ms (downtime + EID route move)")  # fmt: skip
        assert seen["echoes"] >= max(before, moved) + 10
        reach(NS_B)
        reach(NS_A)
        pid = g.proc.pid if g.proc else -1
    finally:
        g.stop()
    assert not os.path.exists(f"/proc/{pid}")  # killed by PID and reaped
    assert in_ns(NS_B, "ip", "link", "show", f"pqt{PID}b", check=False).returncode != 0
