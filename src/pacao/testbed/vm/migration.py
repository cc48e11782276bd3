"""VM migration in the testbed: the namespace VM moved between DC sites with a modelled
pre-copy time and a stop-and-copy downtime during which it is really unreachable.

The VM is a network namespace (its EID address, the server processes a scenario
starts in it) attached by a veth to the dc (hypervisor) node that hosts it. A
migration keeps the namespace and its processes (TCP connections survive, as with
a live migration) and only moves its attachment:

1. pre-copy (VM running, reachable): the model's pre-copy seconds are waited;
2. stop-and-copy: the VM's link is deleted (unreachable both ways), a new veth to the
   destination dc is created with the same addresses (VM EID, the gateway on the dc
   side), the fabric routes of every locator xTR are moved (`topology.vm_routes`); the
   VM's side is brought up when the model's downtime has elapsed (or when the
   plumbing is done, if that took longer: the measured downtime is reported);
3. the VM runs at the destination with the same EID.

Location, model and counters live in ``<rundir>/vms.json`` (one migration at a time
per run, under a file lock), so the scenario process and the controller's
``testbed`` hypervisor driver (another process) see the same VM.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pacao.errors import InputError
from pacao.testbed.daemons import control
from pacao.testbed.net import INNER_MTU, Testbed, TestbedError, gateway_mac, vm_mac
from pacao.testbed.topo.topology import (
    Topology,
    dc_of_xtr,
    load_topology,
    site_xtr,
    vm_dc,
    vm_routes,
    vtep,
)
from pacao.validate import integer_in, non_negative, positive

MIB = 1 << 20


@dataclass(frozen=True)
class MigrationModel:
    """Pre-copy live migration of a VM of ``memory_mib`` over a link of bandwidth B.

    Round 0 copies the whole memory (M / B); each next round copies what the guest
    dirtied meanwhile (V_i = V_{i-1} x D / B with D = ``dirty_rate_mbps``) until the
    remaining volume fits ``max_downtime_ms`` at B or ``max_rounds`` were made; then
    stop-and-copy: the VM is paused (unreachable) for V_last / B + ``switchover_ms``.
    B is ``bandwidth_mbps`` if given (every migration, whatever the links), else the
    pair's entry in ``path_bandwidth_mbps`` (keys ``"dcA,dcB"``, either order: the
    migration network between two sites, e.g. fitted to the paper's Table II
    durations), else the inter-DC link's tbf rate from the topology, else
    ``default_bandwidth_mbps``.
    ``time_scale`` multiplies every waited duration (compressed scenario runs).
    """

    memory_mib: int = 1024
    dirty_rate_mbps: float = 0.0
    max_downtime_ms: float = 300.0
    max_rounds: int = 30
    switchover_ms: float = 50.0
    default_bandwidth_mbps: float = 1000.0
    time_scale: float = 1.0
    bandwidth_mbps: float | None = None
    path_bandwidth_mbps: dict[str, float] = field(default_factory=dict)

    def bandwidth_bps(self, topo: Topology, src_dc: str, dst_dc: str) -> float:
        """B for a migration between two dc nodes (see the class docstring)."""
        if self.bandwidth_mbps is not None:
            return self.bandwidth_mbps * 1e6
        for key in (f"{src_dc},{dst_dc}", f"{dst_dc},{src_dc}"):
            if key in self.path_bandwidth_mbps:
                return float(self.path_bandwidth_mbps[key]) * 1e6
        return link_bandwidth_bps(topo, src_dc, dst_dc, self.default_bandwidth_mbps * 1e6)

    def check(self) -> None:
        """One InputError line for a bad field."""
        for name, low in (("memory_mib", 1), ("max_rounds", 1)):
            integer_in(name, getattr(self, name), low)
        for name in ("dirty_rate_mbps", "max_downtime_ms", "switchover_ms"):
            non_negative(name, getattr(self, name))
        for name in ("default_bandwidth_mbps", "time_scale", "bandwidth_mbps"):
            v = getattr(self, name)
            if v is None and name == "bandwidth_mbps":
                continue
            positive(name, v)
        if not isinstance(self.path_bandwidth_mbps, dict):
            raise InputError("path_bandwidth_mbps", self.path_bandwidth_mbps,
                             "a mapping 'dcA,dcB': Mbit/s")  # fmt: skip
        for key, v in self.path_bandwidth_mbps.items():
            if not isinstance(key, str) or len(key.split(",")) != 2:
                raise InputError("path_bandwidth_mbps", key, "keys 'dcA,dcB' (two dc nodes)")
            positive(f"path_bandwidth_mbps.{key}", v)


@dataclass(frozen=True)
class MigrationResult:
    """One migration: wall seconds actually spent (scaled), the model's bytes copied."""

    vm: str
    src: str
    dst: str
    started: float  # wall clock (time.time())
    duration_s: float  # from start to the VM running at dst
    downtime_s: float  # VM unreachable: link deleted .. link up at dst (measured)
    bytes: int  # memory copied over all pre-copy rounds + the final round
    rounds: int
    modelled: bool  # True: namespace VM (times from the model); False: real QEMU migration
    model_duration_s: float = 0.0  # what the model asked for (scaled)
    model_downtime_s: float = 0.0


def migration_estimate(
    model: MigrationModel, bandwidth_bps: float
) -> tuple[float, float, int, int]:
    """(total seconds, downtime seconds, bytes, rounds) of the model, unscaled.

    Rounds counts the pre-copy rounds plus the final stop-and-copy round.
    """
    if bandwidth_bps <= 0:
        raise InputError("bandwidth", bandwidth_bps, "a positive bit rate")
    b = bandwidth_bps / 8.0  # bytes/s
    d = model.dirty_rate_mbps * 1e6 / 8.0
    budget = model.max_downtime_ms / 1000.0 * b  # bytes we may copy while paused
    volume = float(model.memory_mib * MIB)
    copied, precopy_s, rounds = 0.0, 0.0, 0
    while rounds < model.max_rounds:
        t = volume / b
        copied += volume
        precopy_s += t
        rounds += 1
        volume = min(d * t, float(model.memory_mib * MIB))  # dirtied while copying
        if volume <= budget or d >= b:  # fits the downtime, or pre-copy cannot converge
            break
    downtime = volume / b + model.switchover_ms / 1000.0
    copied += volume
    return precopy_s + downtime, downtime, int(copied), rounds + 1


# ------------------------------------------------------------------------ run-wide VM file


def _vms_path(state: Testbed) -> Path:
    return state.rundir / "vms.json"


@contextlib.contextmanager
def _locked(state: Testbed) -> Iterator[None]:
    lock = state.rundir / "vms.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read(state: Testbed) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(_vms_path(state).read_text())
        return doc
    except (OSError, ValueError):
        return {"vms": {}, "model": None, "count": 0}


def _write(state: Testbed, doc: dict[str, Any]) -> None:
    tmp = _vms_path(state).with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, _vms_path(state))


def _names(topo: Topology, role: str) -> list[str]:
    return [n.name for n in topo.nodes.values() if n.role == role]


def run_topology(state: Testbed) -> Topology:
    return load_topology(Path(state.topology["file"]))


def set_vm_model(state: Testbed, model: MigrationModel) -> None:
    """Store the migration model every later migration of this run uses by default."""
    model.check()
    with _locked(state):
        doc = _read(state)
        doc["model"] = asdict(model)
        _write(state, doc)


def stored_model(state: Testbed) -> MigrationModel:
    doc = _read(state)
    return MigrationModel(**doc["model"]) if doc.get("model") else MigrationModel()


def vm_location(state: Testbed, vm: str, topo: Topology | None = None) -> str:
    """The dc node the VM currently runs on."""
    topo = topo or run_topology(state)
    node = topo.nodes.get(vm)
    if node is None or node.role != "vm":
        raise InputError("vm", vm, f"one of {_names(topo, 'vm')}")
    loc = _read(state)["vms"].get(vm, {}).get("dc")
    return str(loc) if loc else vm_dc(topo, vm)


def link_bandwidth_bps(topo: Topology, src_dc: str, dst_dc: str, default_bps: float) -> float:
    """Rate of the inter-DC link between the two dc nodes' xTRs (tbf), else the default."""
    xa, xb = site_xtr(topo, src_dc), site_xtr(topo, dst_dc)
    for link in topo.links:
        if {link.a, link.b} == {xa, xb} and link.rate_bps:
            return float(link.rate_bps)
    return default_bps


def append_event(state: Testbed, event: dict[str, Any]) -> None:
    control.append_event(state.rundir / "events.jsonl", event)


# ------------------------------------------------------------------------ the move


def _ip_batch(ns: str, lines: list[str]) -> None:
    """Several `ip` commands in one namespace, one process (fast: this is downtime)."""
    done = subprocess.run(
        ["ip", "-n", ns, "-batch", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise TestbedError(f"ip -n {ns} -batch: {done.stderr.strip()}")


def _macs(state: Testbed, vm: str) -> tuple[str, str]:
    """Stable locally administered MACs of the VM's interface and of its gateway."""
    h = hashlib.sha256(f"{state.runid}/{vm}".encode()).digest()
    base = "02:" + ":".join(f"{b:02x}" for b in h[:4])
    return f"{base}:01", f"{base}:02"


def _ip_batches(
    per_ns: dict[str, list[str]], bridge: dict[str, list[str]] | None = None, check: bool = True
) -> None:
    """`ip -batch` (and `bridge -batch`) in several namespaces at once, in parallel: this
    is downtime."""
    jobs = [("ip", ns, lines) for ns, lines in per_ns.items()]
    jobs += [("bridge", ns, lines) for ns, lines in (bridge or {}).items()]
    procs = [
        (tool, ns, lines, subprocess.Popen([tool, "-n", ns, "-batch", "-"], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True))
        for tool, ns, lines in jobs
    ]  # fmt: skip
    errors = []
    for tool, ns, lines, proc in procs:
        _out, err = proc.communicate("\n".join(lines) + "\n")
        if proc.returncode != 0:
            errors.append(f"{tool} -n {ns} -batch: {err.strip()}")
    if errors and check:
        raise TestbedError("; ".join(errors))


def _current_vm_dev(state: Testbed, topo: Topology, vm: str, doc: dict[str, Any]) -> str:
    info = doc["vms"].get(vm)
    if info and info.get("dev"):
        return str(info["dev"])
    link = topo.links_of(vm)[0]
    return state.ifname(link.index, link.end(vm))


def migrate_vm(
    state: Testbed,
    vm: str,
    dst_dc: str,
    model: MigrationModel | None = None,
    abort: threading.Event | None = None,
) -> MigrationResult:
    """Move VM (a vm node of the topology) to the dc node ``dst_dc`` and return the result.

    Blocking. The VM keeps running (reachable) during the pre-copy, is unreachable for
    the downtime, then runs at ``dst_dc`` with the same EID: its link is re-created on the
    destination dc and the fabric routes of every locator xTR are updated. ``model``
    defaults to the one stored for the run (``set_vm_model``). ``abort`` set during the
    pre-copy cancels the migration (TestbedError) with the VM untouched at its source.
    A VM already at ``dst_dc`` is not moved (idempotent). Each migration is appended to
    the run's ``events.jsonl``.
    """
    topo = run_topology(state)
    dst = topo.nodes.get(dst_dc)
    if dst is None or dst.role != "dc":
        raise InputError("dc", dst_dc, f"one of {_names(topo, 'dc')}")
    if site_xtr(topo, dst_dc) is None:
        raise InputError("dc", dst_dc, "a dc node with a link to an xtr")
    model = model or stored_model(state)
    model.check()
    info = _read(state)["vms"].get(vm, {})
    if info.get("backend") == "qemu":
        return _migrate_qemu(state, topo, vm, dst_dc, model, str(info["socket"]))
    started = time.time()
    t0 = time.monotonic()
    with _locked(state):
        src = vm_location(state, vm, topo)
        if src == dst_dc:
            return MigrationResult(vm, src, dst_dc, started, 0.0, 0.0, 0, 0, True)
        bw = model.bandwidth_bps(topo, src, dst_dc)
        total, down, nbytes, rounds = migration_estimate(model, bw)
        scale = model.time_scale
        append_event(state, {"t": started, "kind": "migration-start", "vm": vm, "src": src,
                             "dst": dst_dc, "model_duration_s": total * scale,
                             "model_downtime_s": down * scale})  # fmt: skip
        doc = _read(state)
        old_dev = _current_vm_dev(state, topo, vm, doc)
        vm_node = topo.nodes[vm]
        assert vm_node.eid is not None
        vm_link = topo.links_of(vm)[0]
        gw = vm_link.addr(vm_link.peer(vm))  # the gateway, moved with the VM
        count = int(doc.get("count", 0)) + 1
        va, vb = f"{state.prefix}v{count}a", f"{state.prefix}v{count}b"
        # The destination's port is prepared during the pre-copy (the VM's side stays down
        # and without address). Fixed MACs (the VM's and the gateway's) and neighbour
        # entries on both sides play the hypervisor's post-migration announcement.
        vxlan = topo.fabric == "vxlan"
        mac = vm_mac(state, vm)
        gw_mac = gateway_mac(state, None if vxlan else vm)
        peer_mac = _macs(state, vm)[1] if vxlan else gw_mac  # the dc side's own MAC
        subprocess.run(
            ["ip", "link", "add", va, "address", mac, "netns", state.ns(vm), "type", "veth",
             "peer", "name", vb, "address", peer_mac, "netns", state.ns(dst_dc)],
            check=True, capture_output=True,
        )  # fmt: skip
        if vxlan:
            _ip_batch(state.ns(dst_dc), [f"link set {vb} master {state.prefix}br",
                                         f"link set {vb} mtu {INNER_MTU} up"])  # fmt: skip
        else:
            _ip_batch(state.ns(dst_dc), [f"addr add {gw} dev {vb}",
                                         f"link set {vb} mtu {INNER_MTU} up"])  # fmt: skip
        precopy = (total - down) * scale - (time.monotonic() - t0)
        aborted = abort.wait(max(0.0, precopy)) if abort is not None else False
        if abort is None:
            time.sleep(max(0.0, precopy))
        if aborted:
            _ip_batch(state.ns(vm), [f"link del {va}"])
            raise TestbedError(f"migration of {vm} to {dst_dc} aborted during pre-copy")
        new_routes = vm_routes(topo, vm, dst_dc)
        host = f"{vm_node.eid.ip}/32"
        batches: dict[str, list[str]] = {}
        for node, routes in new_routes.items():
            for r in routes:
                assert r.dev_link is not None
                link = topo.links[r.dev_link]
                batches.setdefault(node, []).append(
                    f"route replace {r.prefix} via {r.via} dev "
                    f"{state.ifname(link.index, link.end(node))}"
                )
        old_home = site_xtr(topo, src)
        if old_home is not None and old_home not in new_routes:
            batches[old_home] = [f"route del {host}"]
        bridge: dict[str, list[str]] = {}
        if vxlan:  # the fabric's FDBs: the VM's MAC is now behind the destination's VTEP
            batches = {}  # the xTRs' routes do not change: each sends to its own dc
            vx = f"{state.prefix}vx"
            for dc, _fab in dc_of_xtr(topo).values():
                if dc == dst_dc:
                    bridge[state.ns(dc)] = [f"fdb replace {mac} dev {vb} master static"]
                else:
                    bridge[state.ns(dc)] = [f"fdb replace {mac} dev {vx} dst "
                                            f"{vtep(topo, dst_dc)} self static"]  # fmt: skip
        # --- stop-and-copy: the VM is unreachable from here
        t_down = time.monotonic()
        _ip_batches({state.ns(vm): [f"link del {old_dev}"],
                     **{state.ns(node): lines for node, lines in batches.items()}},
                    bridge)  # fmt: skip
        if vxlan:  # the destination no longer sends the VM's frames into the tunnel
            _ip_batches({}, {state.ns(dst_dc): [f"fdb del {mac} dev {vx} self"]}, check=False)
        remaining = t_down + down * scale - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        final = {
            state.ns(vm): [f"addr add {vm_node.eid} dev {va}",
                           f"link set {va} mtu {INNER_MTU} up",
                           f"neigh replace {gw.ip} lladdr {gw_mac} dev {va} nud permanent",
                           f"route replace default via {gw.ip} dev {va}"],
        }  # fmt: skip
        if not vxlan:
            final[state.ns(dst_dc)] = [
                f"neigh replace {vm_node.eid.ip} lladdr {mac} dev {vb} nud reachable"
            ]
        _ip_batches(final)
        t_up = time.monotonic()
        doc["vms"][vm] = {"dc": dst_dc, "dev": va}
        doc["count"] = count
        _write(state, doc)
    result = MigrationResult(
        vm, src, dst_dc, started, t_up - t0, t_up - t_down, nbytes, rounds, True,
        total * scale, down * scale,
    )  # fmt: skip
    append_event(state, {"t": time.time(), "kind": "migration", **asdict(result)})
    return result


def _migrate_qemu(
    state: Testbed, topo: Topology, vm: str, dst_dc: str, model: MigrationModel, sock: str
) -> MigrationResult:
    """A real live migration by the VM daemon (``pacao.testbed.daemons.vmd``): QEMU's figures."""
    src = vm_location(state, vm, topo)
    bw = model.bandwidth_bps(topo, src, dst_dc)
    started = time.time()
    if src != dst_dc:
        append_event(state, {"t": started, "kind": "migration-start", "vm": vm, "src": src,
                             "dst": dst_dc, "backend": "qemu"})  # fmt: skip
    reply = control.request(
        Path(sock),
        {"op": "migrate", "dc": dst_dc, "bandwidth_mbps": bw / 1e6,
         "max_downtime_ms": model.max_downtime_ms},
        timeout=900.0,
    )  # fmt: skip
    if not reply.get("ok"):
        raise TestbedError(f"QEMU migration of {vm} to {dst_dc}: {reply.get('error')}")
    result = MigrationResult(
        vm, src, dst_dc, started, float(reply["wall_s"]), float(reply["downtime_ms"]) / 1000.0,
        int(reply["transferred_bytes"]), 0, False,
    )  # fmt: skip
    if src != dst_dc:
        append_event(state, {"t": time.time(), "kind": "migration", **asdict(result),
                             "total_time_ms": reply["total_time_ms"]})  # fmt: skip
    return result
