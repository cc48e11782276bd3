"""The testbed's real VM (``--vm qemu``): a daemon that owns one QEMU guest and migrates it.

``python -m pacao.testbed.daemons.vmd --state STATE --vm VM --socket SOCK`` replaces the
namespace VM of a running testbed (VXLAN fabric only) by a small KVM/TCG guest
(:class:`pacao.testbed.vm.qemuvm.QemuGuest`, branch ``qemu``: Debian's kernel and a
busybox initramfs serving ``httpd`` on port 80 with ``/blob`` and a TCP echo on 7)
with the same EID and gateway, its TAP a port of the hosting dc's bridge. The VM
namespace loses its link (nothing answers there any more).

Because the scenario process and the controller's ``testbed`` hypervisor driver (in
another process) both migrate the VM, one process owns the guest and serves a JSON-
lines control socket (``pacao.testbed.daemons.control``): ``{"op": "migrate", "dc": DC,
"bandwidth_mbps": B, "max_downtime_ms": D}`` live-migrates it with QMP to a new QEMU
in the destination dc's namespace listening on that dc's VTEP address, so the
migration stream crosses the emulated inter-DC links (their delay, rate and the
delay line); the reply carries QEMU's measured total time, downtime and bytes.
After the switch-over QEMU announces the guest's MAC (RARP) and the VXLAN fabric
learns its new place. ``{"op": "status"}`` tells where it runs.

QEMU PIDs (with their start time) are written to ``<rundir>/procs-vmd.json`` so
``pacao testbed cleanup`` kills them by PID even if this daemon was killed first.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import sys
from pathlib import Path
from typing import Any

from pacao.testbed.daemons import control, drain, stop_on_signals
from pacao.testbed.net import Testbed, proc_start_time, sh
from pacao.testbed.topo.topology import Topology, vtep
from pacao.testbed.vm.migration import _locked, _read, _write, run_topology, vm_location

MIGRATION_PORT = 4444


class Vmd:
    """One guest, where it runs, and the migrations asked through the socket."""

    def __init__(self, state: Testbed, topo: Topology, vm: str, memory_mib: int, blob_mib: int,
                 accel: str | None) -> None:  # fmt: skip
        # pacao.testbed.vm.qemuvm comes from the `qemu` branch (imported at run time)
        qemu_guest = importlib.import_module("pacao.testbed.vm.qemuvm").QemuGuest
        self.state, self.topo, self.vm = state, topo, vm
        node = topo.nodes[vm]
        assert node.eid is not None
        link = topo.links_of(vm)[0]
        self.gw = link.addr(link.peer(vm))
        self.dc = vm_location(state, vm, topo)
        self.br = f"{state.prefix}br"
        self.count = 0
        self.running = True
        self.guest: Any = qemu_guest(
            vm, ns=state.ns(self.dc), tap=self._tap(), eid=str(node.eid), gateway=str(self.gw.ip),
            bridge=self.br, memory_mib=memory_mib, blob_mib=blob_mib,
            workdir=state.rundir / "qemu", accel=accel,
        )  # fmt: skip
        self.guest.on_spawn = self._record  # the destination QEMU is recorded as it starts

    def _tap(self) -> str:
        return f"{self.state.prefix}q{self.count}"

    def _record(self) -> None:
        procs = []
        for what, proc in (("", self.guest.proc), ("-incoming", self.guest.incoming)):
            if proc is not None:
                procs.append({"name": f"qemu-{self.vm}{what}", "pid": proc.pid,
                              "start": proc_start_time(proc.pid)})  # fmt: skip
        path = self.state.rundir / "procs-vmd.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(procs))
        os.replace(tmp, path)

    def _neighbours(self) -> None:
        """Every dc bridge knows the guest's MAC for the EID (no ARP across the fabric)."""
        eid = self.topo.nodes[self.vm].eid
        for n in self.topo.nodes.values():
            if n.role == "dc":
                sh("ip", "neigh", "replace", str(eid.ip if eid else ""), "lladdr",
                   self.guest.mac, "dev", self.br, "nud", "permanent", ns=self.state.ns(n.name),
                   check=False)  # fmt: skip

    def start(self) -> None:
        st, topo, vm = self.state, self.topo, self.vm
        with _locked(st):
            doc = _read(st)
            info = doc["vms"].get(vm, {})
            link = topo.links_of(vm)[0]
            dev = info.get("dev") or st.ifname(link.index, link.end(vm))
            sh("ip", "link", "del", str(dev), ns=st.ns(vm), check=False)
            doc["vms"][vm] = {"dc": self.dc, "dev": None, "backend": "qemu",
                              "socket": str(st.rundir / f"vmd-{vm}.sock")}  # fmt: skip
            _write(st, doc)
        self.guest.start()
        self._record()
        self._neighbours()

    def migrate(self, req: dict[str, Any]) -> dict[str, Any]:
        dst = str(req["dc"])
        node = self.topo.nodes.get(dst)
        if node is None or node.role != "dc":
            return {"ok": False, "error": f"{dst} is not a dc node"}
        if dst == self.dc:
            return {"ok": True, "src": dst, "dst": dst, "total_time_ms": 0.0, "downtime_ms": 0.0,
                    "transferred_bytes": 0, "wall_s": 0.0}  # fmt: skip
        self.count += 1
        src = self.dc
        # its log says how far a migration got when a trial fails around it
        print(f"migrating {self.vm}: {src} -> {dst}", flush=True)
        res = self.guest.migrate_to(
            self.state.ns(dst), self._tap(), str(vtep(self.topo, dst)),
            MIGRATION_PORT + self.count,
            bandwidth_mbps=float(req.get("bandwidth_mbps", 1000.0)),
            max_downtime_ms=float(req.get("max_downtime_ms", 300.0)),
            dest_bridge=self.br,
        )  # fmt: skip
        self.dc = dst
        print(f"migrated {self.vm} to {dst}: {res.total_time_ms:.0f} ms, downtime "
              f"{res.downtime_ms:.0f} ms, {res.transferred_bytes} bytes", flush=True)  # fmt: skip
        self._record()
        with _locked(self.state):
            doc = _read(self.state)
            doc["vms"][self.vm]["dc"] = dst
            _write(self.state, doc)
        return {"ok": True, "src": src, "dst": dst, "total_time_ms": res.total_time_ms,
                "downtime_ms": res.downtime_ms, "transferred_bytes": res.transferred_bytes,
                "wall_s": res.wall_s, "setup_time_ms": res.setup_time_ms}  # fmt: skip

    def command(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "status":
            return {"ok": True, "dc": self.dc, "alive": self.guest.alive(5.0)}
        if op == "migrate":
            try:
                return self.migrate(req)
            except Exception as exc:  # a failed migration is an answer, not a crash
                print(f"migration failed: {type(exc).__name__}: {exc}", flush=True)
                return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if op == "stop":
            self.running = False
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pacao testbed QEMU VM daemon")
    parser.add_argument("--state", required=True, help="the run's testbed-<id>.json")
    parser.add_argument("--vm", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--memory", type=int, default=128, help="guest memory, MiB")
    parser.add_argument("--blob", type=int, default=8, help="/blob size (guest memory), MiB")
    parser.add_argument("--accel", default=None, help="kvm or tcg (default $PACAO_QEMU_ACCEL)")
    args = parser.parse_args(argv)
    state = Testbed.load(Path(args.state))
    topo = run_topology(state)
    if topo.fabric != "vxlan":
        print("the qemu VM needs a topology with fabric: vxlan", file=sys.stderr)
        return 2
    vmd = Vmd(state, topo, args.vm, args.memory, args.blob, args.accel)

    wake = stop_on_signals(vmd)
    ctl = control.listen(Path(args.socket))
    try:
        vmd.start()
        print(f"ready: {args.vm} at {vmd.dc}", flush=True)
        while vmd.running:
            ready, _, _ = select.select([ctl.fileno(), wake], [], [], 0.5)
            if ctl.fileno() in ready:
                control.answer(ctl, vmd.command)
            if wake in ready:
                drain(wake)
    finally:
        vmd.guest.stop()
        ctl.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
