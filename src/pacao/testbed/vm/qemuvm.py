"""A real small VM for the testbed: one QEMU guest in a network namespace, live-migrated.

API (all a caller needs)::

    from pacao.testbed.vm.qemuvm import QemuGuest

    g = QemuGuest("vm1", ns="dc-a", tap="vm1-a", eid="10.2.0.10/24", gateway="10.2.0.1",
                  bridge="br-a")              # optional: enslave the TAP to this bridge
    g.start()                                 # TAP created in ns, QEMU started, guest ready
    r = g.migrate_to("dc-b", "vm1-b", dest_address="172.16.9.2", port=4444,
                     bandwidth_mbps=1000, max_downtime_ms=300, dest_bridge="br-b")
    r.total_time_ms, r.downtime_ms, r.transferred_bytes  # as QEMU measured them
    g.ns, g.tap                               # now "dc-b", "vm1-b"
    g.alive()                                 # the guest's console counter still moves
    g.stop()                                  # QEMU killed by PID, TAPs it created deleted

``migrate_to`` starts the destination QEMU in ``dest_ns`` with
``-incoming tcp:DEST_ADDRESS:PORT`` (so the migration stream leaves the source
namespace and crosses whatever links join the two, e.g. the emulated inter-DC
link), runs the migration through the QMP client of
:mod:`pacao.controller.drivers.qmp` with the bandwidth cap and max downtime, then
quits the source QEMU and deletes its TAP (if ``QemuGuest`` created it).
``amigrate_to`` is the same for callers already in an event loop. Moving the EID's
routes between sites is the caller's job; QEMU announces the guest's MAC
(RARP) on the destination TAP right after the switch-over.

The guest is :mod:`pacao.testbed.vm.guest` (Debian's cloud kernel and a busybox
initramfs): ``httpd`` on port 80 (``/blob`` of ``blob_mib`` MiB random bytes,
which is also guest memory the migration must copy), a TCP echo on port 7, and
a ``pacao-tick N`` counter on the serial console (``serial_log``).

Accelerator: ``accel`` (default ``$PACAO_QEMU_ACCEL``, else ``tcg``). This
machine's /dev/kvm is ``kvm_pvm`` (pagetable-based nested KVM): it runs only
PVM-enabled guest kernels at speed, and Debian's kernel crawls under it (over a
minute to boot), so the default is TCG, which boots the guest in about 3 s and
migrates it the same way. On a host with hardware KVM use ``accel="kvm"``.

Every process started here is killed by its PID; nothing is killed by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacao.controller.drivers.base import DriverError
from pacao.controller.drivers.qmp import (
    MigrationStats,
    QmpClient,
    QmpError,
    query_status,
    start_outgoing,
    wait_migration,
)
from pacao.testbed.vm.guest import READY, TICK, Guest, artefacts


def default_accel() -> str:
    return os.environ.get("PACAO_QEMU_ACCEL", "tcg")


def qemu_binary() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise DriverError("qemu-system-x86_64 is missing: `make debs` installs qemu-system-x86")
    return path


def mac_for(name: str) -> str:
    """A stable locally administered MAC per VM name (both QEMUs must use the same)."""
    h = hashlib.sha256(name.encode()).digest()
    return "52:54:" + ":".join(f"{b:02x}" for b in h[:4])


#: Extra guest RAM under TCG so that the RAM block is not a whole number of 64 pages.
TCG_RAM_PAD_KIB = 8
#: QEMU syncs a RAM block's migration dirty bitmap 64 pages (one bitmap word) at a time
#: when the block's size is a multiple of this; otherwise page by page.
DIRTY_WORD_BYTES = 64 * 4096


def ram_size_arg(memory_mib: int, accel: str) -> str:
    """QEMU's ``-m`` for a guest of ``memory_mib`` MiB.

    Why not just ``-m MIB`` under TCG: QEMU 7.2 (Debian 12) syncs the dirty bitmap of a RAM
    block whose size is a multiple of 64 pages with a word-at-a-time fast path that clears
    the dirty bits but, unlike the page-by-page path, does not re-arm the TCG TLB's
    not-dirty traps (upstream patch "system/physmem: Fix migration dirty bitmap coherency
    with TCG memory access", N. Piggin, qemu-devel 2024-02-19; not in Debian 12's 7.2.x).
    Stores through a TLB entry filled before the sync are then not recorded: a page the
    guest writes after it was last sent reaches the destination stale. The testbed's busy
    guests died right after the switch-over (an hrtimer on a task stack with a garbage or
    NULL function in the destination's per-CPU timer tree: a kernel oops in
    ``__hrtimer_run_queues`` on the new serial console, or a silent hang), so the iperf3
    trial's data stopped at the migration. 8 KiB more RAM (QEMU rounds ``-m`` to 8 KiB)
    makes the block's size no
    multiple of 64 pages, so every sync takes the page-by-page path, which re-arms the
    traps. KVM tracks dirty pages itself and keeps the plain size.
    """
    if accel.split(",", 1)[0] != "tcg":
        return str(int(memory_mib))
    kib = int(memory_mib) * 1024 + TCG_RAM_PAD_KIB
    assert (kib * 1024) % DIRTY_WORD_BYTES != 0
    return f"{kib}K"


def qemu_argv(
    guest: Guest,
    *,
    qmp: Path | str,
    serial: Path | str,
    memory_mib: int = 128,
    append: str = "",
    tap: str | None = None,
    mac: str = "52:54:00:12:34:56",
    incoming: str | None = None,
    accel: str | None = None,
    extra_qmp: list[Path | str] | None = None,
) -> list[str]:
    """The QEMU command line of the guest (the same on both ends of a migration, except
    ``incoming``, the QMP sockets and the serial file)."""
    accel = accel or default_accel()
    argv = [qemu_binary(), "-accel", accel, "-M", "pc", "-m", ram_size_arg(memory_mib, accel)]
    argv += ["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]
    argv += ["-kernel", str(guest.kernel), "-initrd", str(guest.initrd)]
    argv += ["-append", f"console=ttyS0 quiet panic=-1 {append}".strip()]
    argv += ["-serial", f"file:{serial}", "-qmp", f"unix:{qmp},server=on,wait=off"]
    for q in extra_qmp or []:
        argv += ["-qmp", f"unix:{q},server=on,wait=off"]
    if tap is None:
        argv += ["-nic", "none"]
    else:
        argv += ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
        argv += ["-device", f"virtio-net-pci,netdev=n0,mac={mac}"]
    if incoming is not None:
        argv += ["-incoming", incoming]
    return argv


def kill_pid(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the process we started (by its PID), and reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def wait_serial(path: Path, marker: str, timeout: float, offset: int = 0) -> str:
    """Wait until ``marker`` appears in the serial log after byte ``offset``; the line."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError):
            text = path.read_bytes()[offset:].decode(errors="replace")
            i = text.find(marker)
            if i >= 0 and "\n" in text[i:]:
                return text[i:].split("\n", 1)[0]
        if time.monotonic() > deadline:
            raise DriverError(f"no {marker!r} on the guest console {path} within {timeout} s")
        time.sleep(0.05)


async def wait_qmp(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> QmpClient:
    """Connect to a starting QEMU's QMP socket (fails early if QEMU exits)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DriverError(f"QEMU exited with {proc.returncode} before its QMP socket answered")
        if path.exists():
            with contextlib.suppress(QmpError):
                return await QmpClient(f"unix:{path}", timeout=5).connect()
        if time.monotonic() > deadline:
            raise DriverError(f"QEMU's QMP socket {path} did not answer within {timeout} s")
        await asyncio.sleep(0.05)


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise DriverError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _link_exists(ns: str, dev: str) -> bool:
    r = subprocess.run(["ip", "-n", ns, "link", "show", dev], capture_output=True)
    return r.returncode == 0


@dataclass(frozen=True)
class MigrationResult:
    """Figures of one live migration; ``*_ms`` and bytes as QEMU reports them."""

    src_ns: str
    dst_ns: str
    total_time_ms: float
    downtime_ms: float
    transferred_bytes: int
    setup_time_ms: float | None
    wall_s: float  # from `migrate` to the destination running, measured here
    bandwidth_mbps: float
    max_downtime_ms: float


class QemuGuest:
    """One guest VM: started in ``ns`` on TAP ``tap``; see the module docstring."""

    def __init__(
        self,
        name: str,
        ns: str,
        tap: str,
        eid: str = "10.2.0.10/24",
        gateway: str | None = "10.2.0.1",
        *,
        bridge: str | None = None,
        memory_mib: int = 128,
        blob_mib: int = 8,
        workdir: Path | None = None,
        accel: str | None = None,
        guest: Guest | None = None,
    ) -> None:
        if memory_mib < 64 or blob_mib < 0 or blob_mib > memory_mib // 2:
            raise ValueError(f"memory_mib {memory_mib} >= 64, 0 <= blob_mib <= memory_mib / 2")
        self.name, self.ns, self.tap, self.bridge = name, ns, tap, bridge
        self.eid, self.gateway = eid, gateway
        self.memory_mib, self.blob_mib = memory_mib, blob_mib
        self.accel = accel or default_accel()
        self.guest = guest
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"pacao-vm-{name}-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mac = mac_for(name)
        self.proc: subprocess.Popen[bytes] | None = None
        #: the destination QEMU while a migration runs (killed by stop() too)
        self.incoming: subprocess.Popen[bytes] | None = None
        #: called when a QEMU process starts, so an owner can record its PID at once
        #: (pacao.testbed.daemons.vmd: a teardown mid-migration must find the destination too)
        self.on_spawn: Callable[[], None] | None = None
        self.serial_log = self.workdir / "serial-0.log"
        self.qmp_path = self.workdir / "qmp-0.sock"
        self._gen = 0
        self._own_taps: list[tuple[str, str]] = []  # (ns, tap) created here
        self.migrations: list[MigrationResult] = []

    # -- pieces ---------------------------------------------------------------------
    def _append(self) -> str:
        args = [f"pacao.ip={self.eid}", f"pacao.blob={self.blob_mib}"]
        if self.gateway:
            args.append(f"pacao.gw={self.gateway}")
        return " ".join(args)

    def _make_tap(self, ns: str, tap: str, bridge: str | None) -> None:
        if not _link_exists(ns, tap):
            _ip("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
            self._own_taps.append((ns, tap))
        if bridge is not None:
            _ip("-n", ns, "link", "set", tap, "master", bridge)
        _ip("-n", ns, "link", "set", tap, "up")

    def _del_tap(self, ns: str, tap: str) -> None:
        if (ns, tap) in self._own_taps:
            subprocess.run(["ip", "-n", ns, "link", "del", tap], capture_output=True)
            self._own_taps.remove((ns, tap))

    def _spawn(
        self, ns: str, tap: str, incoming: str | None
    ) -> tuple[subprocess.Popen[bytes], Path, Path]:
        if self.guest is None:
            self.guest = artefacts()
        gen = self._gen
        self._gen += 1
        qmp = self.workdir / f"qmp-{gen}.sock"
        serial = self.workdir / f"serial-{gen}.log"
        argv = qemu_argv(
            self.guest,
            qmp=qmp,
            serial=serial,
            memory_mib=self.memory_mib,
            append=self._append(),
            tap=tap,
            mac=self.mac,
            incoming=incoming,
            accel=self.accel,
        )
        err = open(self.workdir / f"qemu-{gen}.err", "wb")  # noqa: SIM115 (kept by the child)
        try:
            # `ip netns exec` execs QEMU: the PID we get is QEMU's.
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        finally:
            err.close()
        return proc, qmp, serial

    def _stderr(self, gen: int) -> str:
        p = self.workdir / f"qemu-{gen}.err"
        return p.read_text(errors="replace").strip()[-400:] if p.exists() else ""

    # -- API -----------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        """Create the TAP (unless it exists), start QEMU in ``ns``, wait for the guest."""
        if self.proc is not None:
            raise DriverError(f"{self.name} is already started")
        self._make_tap(self.ns, self.tap, self.bridge)
        self.proc, self.qmp_path, self.serial_log = self._spawn(self.ns, self.tap, None)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    raise DriverError(f"QEMU of {self.name} exited: {self._stderr(self._gen - 1)}")
                with contextlib.suppress(DriverError):
                    wait_serial(self.serial_log, READY, 0.2)
                    return
                if time.monotonic() > deadline:
                    raise DriverError(f"{self.name}: guest not ready within {timeout} s")
        except BaseException:
            self.stop()
            raise

    def alive(self, timeout: float = 10.0) -> bool:
        """True when a new console tick appears within ``timeout`` (the guest runs)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            size = self.serial_log.stat().st_size
        except FileNotFoundError:
            size = 0
        try:
            wait_serial(self.serial_log, TICK, timeout, offset=size)
        except DriverError:
            return False
        return True

    async def amigrate_to(
        self,
        dest_ns: str,
        dest_tap: str,
        dest_address: str,
        port: int = 4444,
        *,
        bandwidth_mbps: float = 1000.0,
        max_downtime_ms: float = 300.0,
        dest_bridge: str | None = None,
        timeout: float = 300.0,
    ) -> MigrationResult:
        """Live-migrate to a new QEMU in ``dest_ns`` listening on ``dest_address:port``."""
        if self.proc is None:
            raise DriverError(f"{self.name} is not started")
        self._make_tap(dest_ns, dest_tap, dest_bridge)
        gen = self._gen
        dproc, dqmp, dserial = self._spawn(dest_ns, dest_tap, f"tcp:{dest_address}:{port}")
        self.incoming = dproc
        if self.on_spawn is not None:
            self.on_spawn()
        src = dst = None
        ok = False
        try:
            dst = await wait_qmp(dqmp, dproc, 30)
            if (s := await query_status(dst)) != "inmigrate":
                raise DriverError(f"destination QEMU is {s!r}, not inmigrate")
            src = await QmpClient(f"unix:{self.qmp_path}", timeout=10).connect()
            t0 = time.monotonic()
            await start_outgoing(src, f"tcp:{dest_address}:{port}", bandwidth_mbps, max_downtime_ms)
            st: MigrationStats = await wait_migration(src, timeout, poll_s=0.05)
            if st.status != "completed":
                raise DriverError(f"migration of {self.name} {st.status}: {st.error}")
            while (s := await query_status(dst)) != "running":
                if time.monotonic() - t0 > timeout:
                    raise DriverError(f"destination of {self.name} is {s!r} after migration")
                await asyncio.sleep(0.02)
            wall = time.monotonic() - t0
            ok = True
        except DriverError as exc:  # QmpError included
            kill_pid(dproc)
            err = self._stderr(gen)
            raise DriverError(
                f"migration of {self.name}: {exc}" + (f" (destination QEMU: {err})" if err else "")
            ) from None
        finally:
            for c in (src, dst):
                if c is not None:
                    await c.close()
            if not ok:
                kill_pid(dproc)
                self.incoming = None
                self._del_tap(dest_ns, dest_tap)
        # The source is postmigrate: stop it, the guest lives at the destination now.
        kill_pid(self.proc)
        self._del_tap(self.ns, self.tap)
        res = MigrationResult(
            src_ns=self.ns,
            dst_ns=dest_ns,
            total_time_ms=st.total_time_ms or 0.0,
            downtime_ms=st.downtime_ms or 0.0,
            transferred_bytes=st.transferred,
            setup_time_ms=st.setup_time_ms,
            wall_s=wall,
            bandwidth_mbps=bandwidth_mbps,
            max_downtime_ms=max_downtime_ms,
        )
        self.proc, self.qmp_path, self.serial_log = dproc, dqmp, dserial
        self.incoming = None
        self.ns, self.tap, self.bridge = dest_ns, dest_tap, dest_bridge
        self.migrations.append(res)
        return res

    def migrate_to(self, dest_ns: str, dest_tap: str, dest_address: str, port: int = 4444,
                   **kw: Any) -> MigrationResult:  # fmt: skip
        """:meth:`amigrate_to` for callers without an event loop."""
        return asyncio.run(self.amigrate_to(dest_ns, dest_tap, dest_address, port, **kw))

    def stop(self) -> None:
        """Kill QEMU (by PID) and delete the TAPs created here; safe to call twice."""
        if self.proc is not None:
            kill_pid(self.proc)
            self.proc = None
        if self.incoming is not None:
            kill_pid(self.incoming)
            self.incoming = None
        for ns, tap in list(self._own_taps):
            self._del_tap(ns, tap)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> QemuGuest:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
