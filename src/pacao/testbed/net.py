"""The running testbed: bring a topology up in network namespaces, start and wait for
its processes, change it at run time, take it down.

Every object is named with a per-run prefix `pc<runid>-` and recorded in a JSON
state file under /run/pacao *before* it is created, so `cleanup` can remove
exactly what a crashed run left (and nothing else). Processes are started by us,
recorded with their PID and kernel start time, and killed by PID only after the
start time still matches (a recycled PID is left alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacao.errors import InputError
from pacao.testbed.daemons.control import request as impair_control
from pacao.testbed.topo.tcpprofile import SYSCTLS, check_profile, host_sysctls, parse_ss
from pacao.testbed.topo.topology import Link, Topology, dc_of_xtr, vtep


def state_dir() -> Path:
    """Where run states live: /run/pacao, or $PACAO_TESTBED_STATE (tests isolate runs)."""
    return Path(os.environ.get("PACAO_TESTBED_STATE", "/run/pacao"))


INNER_MTU = 1400
TOOLS = ("ip", "tc", "iptables")


class TestbedError(RuntimeError):
    """A system command failed or the testbed is not in the expected state."""


def check_system() -> None:
    """Fail loudly (not skip) without root or the tools we need."""
    if os.geteuid() != 0:
        raise TestbedError("the testbed needs root (network namespaces, tc, iptables)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise TestbedError(f"missing tools: {', '.join(missing)} (make debs installs them)")


def sh(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = list(args)
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise TestbedError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")
    return done


def proc_start_time(pid: int) -> int | None:
    """Kernel start time (clock ticks since boot) of a PID, None if it is gone.

    A zombie is gone: it has exited and only waits for its parent to reap it. The
    daemons of a killed run are orphans, reaped by PID 1 whenever it gets to it (every
    2 s here): counting them alive made stopping each one wait that long."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


class Interrupted(Exception):
    """The run was stopped (Ctrl-C, SIGTERM or another trial failed)."""


@dataclass
class Testbed:
    """One running testbed: what it created (saved after each change) and the
    processes it started, which it spawns, waits for and takes down."""

    __test__ = False  # not a pytest class, despite the name

    runid: str
    path: Path
    topology: dict[str, Any] = field(default_factory=dict)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    procs: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    ready: bool = False

    @property
    def prefix(self) -> str:
        return f"pc{self.runid}-"

    @property
    def rundir(self) -> Path:
        return self.path.parent / self.runid

    def save(self) -> None:
        doc = {
            "runid": self.runid,
            "topology": self.topology,
            "netns": self.netns,
            "links": self.links,
            "procs": self.procs,
            "files": self.files,
            "ready": self.ready,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> Testbed:
        doc = json.loads(path.read_text())
        return cls(
            doc["runid"],
            path,
            doc.get("topology", {}),
            doc.get("netns", []),
            doc.get("links", []),
            doc.get("procs", []),
            doc.get("files", []),
            doc.get("ready", False),
        )

    @classmethod
    def new(cls, topology_file: Path) -> Testbed:
        """A new run id and its recorded (still empty) state and run directory."""
        base = state_dir()
        base.mkdir(parents=True, exist_ok=True)
        while True:
            runid = secrets.token_hex(2)
            path = base / f"testbed-{runid}.json"
            if not path.exists() and not leftovers(runid):
                break
        tb = cls(runid, path, {"file": str(topology_file.resolve())})
        tb.rundir.mkdir(parents=True, exist_ok=True)
        tb.files.append(str(tb.rundir))
        tb.save()
        return tb

    def ns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def ifname(self, link_index: int, side: str) -> str:
        return f"{self.prefix}{link_index}{side}"

    def proc(self, name: str) -> dict[str, Any]:
        for p in self.procs:
            if p["name"] == name:
                return p
        raise TestbedError(f"run {self.runid} has no process {name}")

    # ------------------------------------------------------------------ processes
    def spawn(self, name: str, cmd: list[str], ns: str | None = None) -> subprocess.Popen[bytes]:
        """Start a background process, record PID + start time, log to the run directory."""
        if ns is not None:
            cmd = ["ip", "netns", "exec", ns, *cmd]
        log = open(self.rundir / f"{name}.log", "wb")  # noqa: SIM115 -- handed to the child
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(
            {"name": name, "pid": proc.pid, "start": proc_start_time(proc.pid), "cmd": cmd}
        )
        self.save()
        return proc

    def wait_logs(
        self, waits: list[tuple[str, subprocess.Popen[bytes], bytes]], timeout: float
    ) -> None:
        """Until each (name, process, marker) printed its marker in its log; an exit is an
        error naming the process, with the end of its log."""
        deadline = time.monotonic() + timeout
        pending = list(waits)
        while pending and time.monotonic() < deadline:
            for item in list(pending):
                name, proc, marker = item
                log = self.rundir / f"{name}.log"
                if log.exists() and marker in log.read_bytes():
                    pending.remove(item)
                elif proc.poll() is not None:
                    text = log.read_text(errors="replace").strip()[-800:]
                    raise TestbedError(f"{name} exited: {text}")
            time.sleep(0.02)
        if pending:
            names = [p[0] for p in pending]
            what = names[0] if len(names) == 1 else str(names)
            raise TestbedError(f"{what} not ready after {timeout} s")

    def wait_ready(self, proc: subprocess.Popen[bytes], name: str, timeout: float = 10.0) -> None:
        """Wait until a daemon prints 'ready' in its log (or dies)."""
        self.wait_logs([(name, proc, b"ready")], timeout)

    def wait_listen(
        self, node: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0
    ) -> None:
        """Wait until a TCP server listens on ``port`` in the node's namespace."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = sh("ss", "-Hltn", f"sport = :{port}", ns=self.ns(node), check=False)
            if done.stdout.strip():
                return
            if proc.poll() is not None:
                raise TestbedError(f"server on port {port} exited")
            time.sleep(0.05)
        raise TestbedError(f"no server on port {port} after {timeout} s")

    @staticmethod
    def wait_exit(
        proc: subprocess.Popen[bytes], timeout: float, stop: threading.Event, what: str
    ) -> None:
        """Wait for a process to end by itself; Interrupted once ``stop`` is set."""
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if stop.is_set():
                raise Interrupted("stopped")
            if time.monotonic() > deadline:
                raise TestbedError(f"{what} still running after {timeout:.0f} s")
            time.sleep(0.05)

    def kill(self, name: str) -> None:
        """Stop the processes recorded under ``name`` and forget them."""
        for p in [p for p in self.procs if p["name"] == name]:
            _kill(p)
            self.procs.remove(p)
        self.save()

    # ------------------------------------------------------------------ network
    def up(self, topo: Topology) -> Testbed:
        """Create namespaces, links, addresses, routes, rate limits, delay line and xTRs."""
        check_system()
        self.topology["name"] = topo.name
        self.save()
        for node in topo.nodes:
            ns = self.ns(node)
            self.netns.append(ns)
            self.save()
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                        "net.ipv4.conf.default.rp_filter=0"):  # fmt: skip
                sh("sysctl", "-qw", key, ns=ns)
        for link in topo.links:
            ia, ib = self.ifname(link.index, "a"), self.ifname(link.index, "b")
            self.links += [ia, ib]
            self.save()
            sh("ip", "link", "add", ia, "netns", self.ns(link.a), "type", "veth",
               "peer", "name", ib, "netns", self.ns(link.b))  # fmt: skip
            mtu = _link_mtu(topo, link)
            for node, dev in ((link.a, ia), (link.b, ib)):
                ns = self.ns(node)
                role, peer_role = topo.nodes[node].role, topo.nodes[link.peer(node)].role
                if topo.fabric == "vxlan" and role == "vm":
                    sh("ip", "link", "set", dev, "address", vm_mac(self, node), ns=ns)
                if not (topo.fabric == "vxlan" and role == "dc" and peer_role == "vm"):
                    sh(
                        "ip", "addr", "add", str(link.addr(node)), "dev", dev, ns=ns
                    )  # else: bridged
                if mtu:
                    sh("ip", "link", "set", dev, "mtu", str(mtu), ns=ns)
                sh("ip", "link", "set", dev, "up", ns=ns)
                if link.rate_bps:
                    _tbf(self, ns, dev, link.rate_bps)
        for xtr in topo.xtrs():
            ns = self.ns(xtr.name)
            sh("ip", "addr", "add", f"{xtr.rloc}/32", "dev", "lo", ns=ns)
            sh("ip", "tuntap", "add", "dev", f"{self.prefix}t", "mode", "tun", ns=ns)
            sh("ip", "link", "set", f"{self.prefix}t", "mtu", str(INNER_MTU), "up", ns=ns)
        if topo.fabric == "vxlan":
            _vxlan_fabric(self, topo)
        for name, routes in topo.routes.items():
            ns = self.ns(name)
            for r in routes:
                if r.tun:
                    sh("ip", "route", "replace", str(r.prefix), "dev", f"{self.prefix}t", ns=ns)
                else:
                    assert r.dev_link is not None
                    link = topo.links[r.dev_link]
                    dev = self.ifname(link.index, link.end(name))
                    sh(
                        "ip",
                        "route",
                        "replace",
                        str(r.prefix),
                        "via",
                        str(r.via),
                        "dev",
                        dev,
                        ns=ns,
                    )
        _start_delay_line(self, topo)
        _start_xtrs(self, topo)
        self.ready = True
        self.save()
        return self

    def xtr_control(self, node: str, request: dict[str, Any]) -> dict[str, Any]:
        """Send a map-cache request to one xTR's data plane."""
        path = self.rundir / f"xtr-{node}.sock"
        if not path.exists():
            raise InputError("xtr", node, "an xtr node of the running testbed")
        return impair_control(path, request)

    def set_link(
        self,
        topo: Topology,
        name: str,
        *,
        delay_ms: float | None = None,
        jitter_ms: float | None = None,
        loss_pct: float | None = None,
        rate_bps: int | None = None,
        direction: str = "both",
    ) -> None:
        """Change a link's impairment (user-space delay line) and/or rate (kernel tbf)."""
        link = topo.link(name)
        if direction not in ("both", "a2b", "b2a"):
            raise InputError("direction", direction, "both, a2b or b2a")
        sides = {"both": ("a", "b"), "a2b": ("a",), "b2a": ("b",)}[direction]
        req: dict[str, Any] = {"op": "set"}
        for key, value in (
            ("delay_ms", delay_ms),
            ("jitter_ms", jitter_ms),
            ("loss_pct", loss_pct),
        ):
            if value is not None:
                req[key] = value
        for side in sides:
            node = link.a if side == "a" else link.b
            if len(req) > 1:
                reply = impair_control(
                    self.rundir / "impair.sock", {**req, "queue": 2 * link.index + (side == "b")}
                )
                if not reply.get("ok"):
                    raise TestbedError(f"delay line refused {req}: {reply.get('error')}")
            if rate_bps is not None:
                _tbf(self, self.ns(node), self.ifname(link.index, side), rate_bps)

    def down(self) -> list[str]:
        """Remove everything the run recorded; returns what was actually removed."""
        removed: list[str] = []
        extra: list[dict[str, Any]] = []  # processes our daemons started (procs-*.json)
        for listed in sorted(self.rundir.glob("procs-*.json")) if self.rundir.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                extra += [p for p in json.loads(listed.read_text()) if isinstance(p, dict)]
        for proc in [*reversed(self.procs), *extra]:
            if proc_start_time(int(proc["pid"])) == proc.get("start"):
                _kill(proc)
                removed.append(f"pid {proc['pid']} ({proc['name']})")
        existing = set(sh("ip", "netns", "list").stdout.split())
        for ns in reversed(self.netns):
            if ns in existing:
                sh("ip", "netns", "del", ns)
                removed.append(f"netns {ns}")
        for dev in self.links:  # a veth left in the root namespace by a crash mid-creation
            if sh("ip", "link", "show", dev, check=False).returncode == 0:
                sh("ip", "link", "del", dev)
                removed.append(f"link {dev}")
        for f in self.files:
            p = Path(f)
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        self.path.unlink(missing_ok=True)
        return removed

    def set_egress(self, topo: Topology, xtr: str, prefix: str, via: str) -> None:
        """Send `xtr`'s traffic for a remote EID prefix out through another DC's xTR.

        via == xtr: encapsulate locally (route into the TUN, the default). Otherwise the
        packets cross the direct inter-DC link to `via`, which encapsulates them: the
        return path (VM -> user) then follows the entry DC chosen for the user.
        """
        for name in (xtr, via):
            if name not in topo.nodes or topo.nodes[name].role != "xtr":
                raise InputError("xtr", name, "an xtr node of the topology")
        ns = self.ns(xtr)
        if via == xtr:
            sh("ip", "route", "replace", prefix, "dev", f"{self.prefix}t", ns=ns)
            return
        direct = [x for x in topo.links_of(xtr) if x.peer(xtr) == via]
        if not direct:
            raise InputError("via", via, f"an xtr with a direct link to {xtr}")
        link = direct[0]
        dev = self.ifname(link.index, link.end(xtr))
        sh("ip", "route", "replace", prefix, "via", str(link.addr(via).ip), "dev", dev, ns=ns)

    # ------------------------------------------------------------------ TCP hosts
    def apply_tcp_profile(self, nodes: list[str], profile: str) -> dict[str, dict[str, str]]:
        """Set a TCP host profile's sysctls (pacao.testbed.topo.tcpprofile) in each node's
        namespace; returns what the kernel reads back per node (a namespace starts with the
        host's defaults)."""
        check_profile("tcp_profile", profile)
        values = SYSCTLS[profile] or host_sysctls()
        seen: dict[str, dict[str, str]] = {}
        for node in nodes:
            ns = self.ns(node)
            for key, value in values.items():
                sh("sysctl", "-qw", f"{key}={value}", ns=ns)
            seen[node] = {
                key: " ".join(sh("sysctl", "-n", key, ns=ns).stdout.split())
                for key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
                            "net.ipv4.tcp_congestion_control")
            }  # fmt: skip
        return seen

    def ss_tcp(self, node: str, port: int | None = None) -> list[dict[str, Any]]:
        """The established TCP connections of a node's namespace as the kernel reports
        them (optionally only those with local or remote ``port``)."""
        args = ["ss", "-Htin", "state", "established"]
        done = sh(*args, ns=self.ns(node), check=False)
        # -H drops the header; ss prints the state column only without a state filter
        text = "\n".join(
            ("ESTAB " + ln) if ln and not ln[0].isspace() else ln for ln in done.stdout.splitlines()
        )
        conns = parse_ss(text)
        if port is not None:
            tail = f":{port}"
            conns = [c for c in conns if c["local"].endswith(tail) or c["peer"].endswith(tail)]
        return conns


def _link_mtu(topo: Topology, link: Link) -> int | None:
    roles = {topo.nodes[link.a].role, topo.nodes[link.b].role}
    if topo.fabric == "vxlan" and roles == {"xtr", "dc"}:
        return None  # carries VXLAN: 1400-byte frames + 50 bytes of headers
    return INNER_MTU if roles & {"user", "vm", "dc"} else None


VXLAN_VNI = 4242
VXLAN_PORT = 4789


def vm_mac(state: Testbed, vm: str) -> str:
    """The VM's stable locally administered MAC (kept across migrations, as a VM's is)."""
    h = hashlib.sha256(f"{state.runid}/{vm}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:4]) + ":01"


def gateway_mac(state: Testbed, vm: str | None = None) -> str:
    """The VM's gateway MAC: per VM in the routed fabric (the gateway moves with it), one
    anycast MAC on every dc bridge in the VXLAN fabric (vm=None)."""
    h = hashlib.sha256(f"{state.runid}/{vm or '*gateway*'}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:4]) + ":02"


def _vm_port(topo: Topology, vm: str) -> tuple[Link, str]:
    link = topo.links_of(vm)[0]
    return link, link.peer(vm)


def _vxlan_fabric(state: Testbed, topo: Topology) -> None:
    """One bridge per dc node with a VXLAN port (VNI 4242, head-end replication to every
    dc whose xTR has a direct link to ours), the VMs' gateway addresses on every bridge
    (anycast: same IP and MAC everywhere) and static neighbour/FDB entries, so the VM
    keeps its EID and subnet wherever it runs and no ARP crosses the fabric."""
    dcs = {dc: x for x, (dc, _fab) in dc_of_xtr(topo).items()}
    br, vx, gmac = f"{state.prefix}br", f"{state.prefix}vx", gateway_mac(state)
    vms = [n for n in topo.nodes.values() if n.role == "vm"]
    for dc, x in dcs.items():
        ns = state.ns(dc)
        sh("ip", "link", "add", br, "type", "bridge", ns=ns)
        sh("ip", "link", "set", br, "address", gmac, "mtu", str(INNER_MTU), "up", ns=ns)
        sh("ip", "link", "add", vx, "type", "vxlan", "id", str(VXLAN_VNI), "dstport",
           str(VXLAN_PORT), "local", str(vtep(topo, dc)), ns=ns)  # fmt: skip
        sh("ip", "link", "set", vx, "master", br, "mtu", str(INNER_MTU), "up", ns=ns)
        peers = [d for d, y in dcs.items() if d != dc and any(
            k.peer(x) == y for k in topo.links_of(x))]  # fmt: skip
        for d in peers:
            sh("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", vx, "dst",
               str(vtep(topo, d)), ns=ns)  # fmt: skip
        for vm in vms:
            assert vm.eid is not None
            link, home = _vm_port(topo, vm.name)
            gw = link.addr(home)
            if sh("ip", "-o", "addr", "show", "dev", br, ns=ns).stdout.find(f" {gw} ") < 0:
                sh("ip", "addr", "add", str(gw), "dev", br, ns=ns)
            mac = vm_mac(state, vm.name)
            sh("ip", "neigh", "replace", str(vm.eid.ip), "lladdr", mac, "dev", br,
               "nud", "permanent", ns=ns)  # fmt: skip
            if home == dc:
                port = state.ifname(link.index, link.end(dc))
                sh("ip", "link", "set", port, "master", br, ns=ns)
                sh("bridge", "fdb", "replace", mac, "dev", port, "master", "static", ns=ns)
            else:
                sh("bridge", "fdb", "replace", mac, "dev", vx, "dst", str(vtep(topo, home)),
                   "self", "static", ns=ns)  # fmt: skip
    for vm in vms:
        link, home = _vm_port(topo, vm.name)
        dev = state.ifname(link.index, link.end(vm.name))
        ns = state.ns(vm.name)
        sh("ip", "neigh", "replace", str(link.addr(home).ip), "lladdr", gmac, "dev", dev,
           "nud", "permanent", ns=ns)  # fmt: skip


def _tbf(state: Testbed, ns: str, dev: str, rate: int) -> None:
    burst = max(32_000, rate // 8 // 250)  # at least 4 ms of traffic
    sh("tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate}bit",
       "burst", str(burst), "latency", "50ms", ns=ns)  # fmt: skip


def _start_delay_line(state: Testbed, topo: Topology) -> None:
    ends = []
    for link in topo.links:
        for side, node in (("a", link.a), ("b", link.b)):
            imp = link.impairment
            ends.append({
                "queue": 2 * link.index + (0 if side == "a" else 1),
                "ns": state.ns(node),
                "iface": state.ifname(link.index, side),
                "delay_ms": imp.delay_ms,
                "jitter_ms": imp.jitter_ms,
                "loss_pct": imp.loss_pct,
            })  # fmt: skip
    cfg = state.rundir / "impair.json"
    cfg.write_text(json.dumps(ends))
    sock = state.rundir / "impair.sock"
    proc = state.spawn("impair", [sys.executable, "-m", "pacao.testbed.daemons.impair",
                                   "--config", str(cfg), "--control", str(sock)])  # fmt: skip
    state.wait_ready(proc, "impair")


def _start_xtrs(state: Testbed, topo: Topology) -> None:
    rlocs = {n.name: str(n.rloc) for n in topo.xtrs()}
    for node in topo.xtrs():
        cache = [
            {
                "prefix": str(m.prefix),
                "locators": [
                    {"rloc": rlocs[lo.node], "priority": lo.priority, "weight": lo.weight}
                    for lo in m.locators
                ],
            }
            for m in topo.mappings
            if all(lo.node != node.name for lo in m.locators)
        ]
        cfg = state.rundir / f"xtr-{node.name}.json"
        cfg.write_text(json.dumps(cache))
        sock = state.rundir / f"xtr-{node.name}.sock"
        cmd = [sys.executable, "-m", "pacao.testbed.daemons.dataplane", "--tun", f"{state.prefix}t",
               "--rloc", str(node.rloc), "--control", str(sock),
               "--map-cache", str(cfg)]  # fmt: skip
        proc = state.spawn(f"xtr-{node.name}", cmd, ns=state.ns(node.name))
        state.wait_ready(proc, f"xtr-{node.name}")


def _kill(proc: dict[str, Any], timeout: float = 3.0) -> None:
    pid, start = int(proc["pid"]), proc.get("start")
    if proc_start_time(pid) is None or proc_start_time(pid) != start:
        return  # gone, or the PID now belongs to someone else
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc_start_time(pid) != start:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    if proc_start_time(pid) == start:
        os.kill(pid, signal.SIGKILL)


def runs() -> list[Testbed]:
    """States of all runs recorded on this machine (running or crashed)."""
    base = state_dir()
    if not base.is_dir():
        return []
    return [Testbed.load(p) for p in sorted(base.glob("testbed-*.json"))]


def find_run(runid: str | None) -> Testbed:
    found = [s for s in runs() if runid is None or s.runid == runid]
    if not found:
        raise InputError("run", runid, "an existing testbed run (pacao testbed status lists them)")
    if len(found) > 1:
        raise InputError("run", runid, f"one of {[s.runid for s in found]} (--run)")
    return found[0]


def cleanup() -> list[str]:
    """Tear down every recorded run (after a crash, or to be sure)."""
    check_system()
    removed: list[str] = []
    for state in runs():
        removed += state.down()
    return removed


def leftovers(runid: str) -> list[str]:
    """Objects with this run's prefix still on the machine (for tests and `status`)."""
    prefix = f"pc{runid}-"
    out = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith(prefix)]
    out += [
        line.split(":")[1].strip().split("@")[0]
        for line in sh("ip", "-o", "link", "show").stdout.splitlines()
        if line.split(":")[1].strip().startswith(prefix)
    ]
    return out
