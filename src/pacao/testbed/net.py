"""Bring a topology up in network namespaces, change it at run time, take it down.

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacao.errors import InputError
from pacao.testbed.daemons.control import request as impair_control
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
    """Kernel start time (clock ticks since boot) of a PID, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass
class State:
    """What one run created; saved after each change."""

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
    def load(cls, path: Path) -> State:
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

    def ns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def ifname(self, link_index: int, side: str) -> str:
        return f"{self.prefix}{link_index}{side}"

    def proc(self, name: str) -> dict[str, Any]:
        for p in self.procs:
            if p["name"] == name:
                return p
        raise TestbedError(f"run {self.runid} has no process {name}")


def new_state(topology_file: Path) -> State:
    base = state_dir()
    base.mkdir(parents=True, exist_ok=True)
    while True:
        runid = secrets.token_hex(2)
        path = base / f"testbed-{runid}.json"
        if not path.exists() and not leftovers(runid):
            break
    state = State(runid, path, {"file": str(topology_file.resolve())})
    state.rundir.mkdir(parents=True, exist_ok=True)
    state.files.append(str(state.rundir))
    state.save()
    return state


def runs() -> list[State]:
    """States of all runs recorded on this machine (running or crashed)."""
    base = state_dir()
    if not base.is_dir():
        return []
    return [State.load(p) for p in sorted(base.glob("testbed-*.json"))]


def find_run(runid: str | None) -> State:
    found = [s for s in runs() if runid is None or s.runid == runid]
    if not found:
        raise InputError("run", runid, "an existing testbed run (pacao testbed status lists them)")
    if len(found) > 1:
        raise InputError("run", runid, f"one of {[s.runid for s in found]} (--run)")
    return found[0]


def spawn(
    state: State, name: str, cmd: list[str], ns: str | None = None
) -> subprocess.Popen[bytes]:
    """Start a background process, record PID + start time, log to the run directory."""
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    log = open(state.rundir / f"{name}.log", "wb")  # noqa: SIM115 -- handed to the child
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    state.procs.append(
        {"name": name, "pid": proc.pid, "start": proc_start_time(proc.pid), "cmd": cmd}
    )
    state.save()
    return proc


def wait_ready(
    state: State, proc: subprocess.Popen[bytes], name: str, timeout: float = 10.0
) -> None:
    """Wait until a daemon prints 'ready' in its log (or dies)."""
    log = state.rundir / f"{name}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and b"ready" in log.read_bytes():
            return
        if proc.poll() is not None:
            raise TestbedError(f"{name} exited: {log.read_text(errors='replace').strip()[-500:]}")
        time.sleep(0.02)
    raise TestbedError(f"{name} not ready after {timeout} s")


def _link_mtu(topo: Topology, link: Link) -> int | None:
    roles = {topo.nodes[link.a].role, topo.nodes[link.b].role}
    if topo.fabric == "vxlan" and roles == {"xtr", "dc"}:
        return None  # carries VXLAN: 1400-byte frames + 50 bytes of headers
    return INNER_MTU if roles & {"user", "vm", "dc"} else None


VXLAN_VNI = 4242
VXLAN_PORT = 4789


def vm_mac(state: State, vm: str) -> str:
    """The VM's stable locally administered MAC (kept across migrations, as a VM's is)."""
    h = hashlib.sha256(f"{state.runid}/{vm}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:4]) + ":01"


def gateway_mac(state: State, vm: str | None = None) -> str:
    """The VM's gateway MAC: per VM in the routed fabric (the gateway moves with it), one
    anycast MAC on every dc bridge in the VXLAN fabric (vm=None)."""
    h = hashlib.sha256(f"{state.runid}/{vm or '*gateway*'}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:4]) + ":02"


def _vm_port(topo: Topology, vm: str) -> tuple[Link, str]:
    link = topo.links_of(vm)[0]
    return link, link.peer(vm)


def _vxlan_fabric(state: State, topo: Topology) -> None:
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


def _tbf(state: State, ns: str, dev: str, rate: int) -> None:
    burst = max(32_000, rate // 8 // 250)  # at least 4 ms of traffic
    sh("tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate}bit",
       "burst", str(burst), "latency", "50ms", ns=ns)  # fmt: skip


def up(topo: Topology, topology_file: Path, state: State | None = None) -> State:
    """Create namespaces, links, addresses, routes, rate limits, delay line and xTRs."""
    check_system()
    state = state or new_state(topology_file)
    state.topology["name"] = topo.name
    state.save()
    for node in topo.nodes:
        ns = state.ns(node)
        state.netns.append(ns)
        state.save()
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0"):  # fmt: skip
            sh("sysctl", "-qw", key, ns=ns)
    for link in topo.links:
        ia, ib = state.ifname(link.index, "a"), state.ifname(link.index, "b")
        state.links += [ia, ib]
        state.save()
        sh("ip", "link", "add", ia, "netns", state.ns(link.a), "type", "veth",
           "peer", "name", ib, "netns", state.ns(link.b))  # fmt: skip
        mtu = _link_mtu(topo, link)
        for node, dev in ((link.a, ia), (link.b, ib)):
            ns = state.ns(node)
            role, peer_role = topo.nodes[node].role, topo.nodes[link.peer(node)].role
            if topo.fabric == "vxlan" and role == "vm":
                sh("ip", "link", "set", dev, "address", vm_mac(state, node), ns=ns)
            if not (topo.fabric == "vxlan" and role == "dc" and peer_role == "vm"):
                sh("ip", "addr", "add", str(link.addr(node)), "dev", dev, ns=ns)  # else: bridged
            if mtu:
                sh("ip", "link", "set", dev, "mtu", str(mtu), ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
            if link.rate_bps:
                _tbf(state, ns, dev, link.rate_bps)
    for xtr in topo.xtrs():
        ns = state.ns(xtr.name)
        sh("ip", "addr", "add", f"{xtr.rloc}/32", "dev", "lo", ns=ns)
        sh("ip", "tuntap", "add", "dev", f"{state.prefix}t", "mode", "tun", ns=ns)
        sh("ip", "link", "set", f"{state.prefix}t", "mtu", str(INNER_MTU), "up", ns=ns)
    if topo.fabric == "vxlan":
        _vxlan_fabric(state, topo)
    for name, routes in topo.routes.items():
        ns = state.ns(name)
        for r in routes:
            if r.tun:
                sh("ip", "route", "replace", str(r.prefix), "dev", f"{state.prefix}t", ns=ns)
            else:
                assert r.dev_link is not None
                link = topo.links[r.dev_link]
                dev = state.ifname(link.index, link.end(name))
                sh("ip", "route", "replace", str(r.prefix), "via", str(r.via), "dev", dev, ns=ns)
    _start_delay_line(state, topo)
    _start_xtrs(state, topo)
    state.ready = True
    state.save()
    return state


def _start_delay_line(state: State, topo: Topology) -> None:
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
    proc = spawn(state, "impair", [sys.executable, "-m", "pacao.testbed.daemons.impair",
                                   "--config", str(cfg), "--control", str(sock)])  # fmt: skip
    wait_ready(state, proc, "impair")


def _start_xtrs(state: State, topo: Topology) -> None:
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
        proc = spawn(state, f"xtr-{node.name}", cmd, ns=state.ns(node.name))
        wait_ready(state, proc, f"xtr-{node.name}")


def xtr_control(state: State, node: str, request: dict[str, Any]) -> dict[str, Any]:
    """Send a map-cache request to one xTR's data plane."""
    path = state.rundir / f"xtr-{node}.sock"
    if not path.exists():
        raise InputError("xtr", node, "an xtr node of the running testbed")
    return impair_control(path, request)


def set_link(
    state: State,
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
    for key, value in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms), ("loss_pct", loss_pct)):
        if value is not None:
            req[key] = value
    for side in sides:
        node = link.a if side == "a" else link.b
        if len(req) > 1:
            reply = impair_control(
                state.rundir / "impair.sock", {**req, "queue": 2 * link.index + (side == "b")}
            )
            if not reply.get("ok"):
                raise TestbedError(f"delay line refused {req}: {reply.get('error')}")
        if rate_bps is not None:
            _tbf(state, state.ns(node), state.ifname(link.index, side), rate_bps)


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


def down(state: State) -> list[str]:
    """Remove everything the run recorded; returns what was actually removed."""
    removed: list[str] = []
    extra: list[dict[str, Any]] = []  # processes our daemons started (procs-*.json)
    for listed in sorted(state.rundir.glob("procs-*.json")) if state.rundir.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            extra += [p for p in json.loads(listed.read_text()) if isinstance(p, dict)]
    for proc in [*reversed(state.procs), *extra]:
        if proc_start_time(int(proc["pid"])) == proc.get("start"):
            _kill(proc)
            removed.append(f"pid {proc['pid']} ({proc['name']})")
    existing = set(sh("ip", "netns", "list").stdout.split())
    for ns in reversed(state.netns):
        if ns in existing:
            sh("ip", "netns", "del", ns)
            removed.append(f"netns {ns}")
    for dev in state.links:  # a veth left in the root namespace by a crash mid-creation
        if sh("ip", "link", "show", dev, check=False).returncode == 0:
            sh("ip", "link", "del", dev)
            removed.append(f"link {dev}")
    for f in state.files:
        p = Path(f)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    state.path.unlink(missing_ok=True)
    return removed


def cleanup() -> list[str]:
    """Tear down every recorded run (after a crash, or to be sure)."""
    check_system()
    removed: list[str] = []
    for state in runs():
        removed += down(state)
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


def set_egress(state: State, topo: Topology, xtr: str, prefix: str, via: str) -> None:
    """Send `xtr`'s traffic for a remote EID prefix out through another DC's xTR.

    via == xtr: encapsulate locally (route into the TUN, the default). Otherwise the
    packets cross the direct inter-DC link to `via`, which encapsulates them: the
    return path (VM -> user) then follows the entry DC chosen for the user.
    """
    for name in (xtr, via):
        if name not in topo.nodes or topo.nodes[name].role != "xtr":
            raise InputError("xtr", name, "an xtr node of the topology")
    ns = state.ns(xtr)
    if via == xtr:
        sh("ip", "route", "replace", prefix, "dev", f"{state.prefix}t", ns=ns)
        return
    direct = [x for x in topo.links_of(xtr) if x.peer(xtr) == via]
    if not direct:
        raise InputError("via", via, f"an xtr with a direct link to {xtr}")
    link = direct[0]
    dev = state.ifname(link.index, link.end(xtr))
    sh("ip", "route", "replace", prefix, "via", str(link.addr(via).ip), "dev", dev, ns=ns)
