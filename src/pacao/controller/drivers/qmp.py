"""QEMU hypervisor driver over QMP, with our own asyncio QMP client.

:class:`QmpClient` speaks the QEMU Machine Protocol (JSON lines over a UNIX or
TCP socket): it reads the greeting, negotiates ``qmp_capabilities``, runs
commands with an ``id`` (several may be in flight) and keeps the asynchronous
events (``MIGRATION``, ``STOP``, ``RESUME``, ...) it receives. Anything that is
not QMP (garbage, a closed socket, a line too long, no greeting) is a
:class:`QmpError`, a :class:`~pacao.controller.drivers.base.DriverError`: the
plan fails, the controller goes on.

:class:`QemuQmpDriver` (entry point ``qemu``) migrates a VM between QEMU
processes, one per DC, each reached through its QMP socket; the destination
QEMU waits with ``-incoming defer`` (the driver sends ``migrate-incoming``) or
``-incoming tcp:HOST:PORT``, and may be started by the driver itself from a
``launch`` command when its socket does not answer. Options (docs/controller.md)::

    vms:
      web:                      # a VM of the config
        dc1: {qmp: unix:/run/pacao/web-dc1.qmp, migrate_uri: tcp:10.0.0.1:4444}
        dc2: {qmp: unix:/run/pacao/web-dc2.qmp, migrate_uri: tcp:10.0.0.2:4444,
              launch: [qemu-system-x86_64, ..., -incoming, defer, -qmp, ...]}
    connect_timeout_s: 5        # QMP connect + greeting
    launch_timeout_s: 30        # a launched destination's QMP socket must answer by then

Bandwidth and max downtime go to ``migrate-set-parameters`` (``max-bandwidth``
in bytes/s, ``downtime-limit`` in ms); progress and figures come from
``query-migrate`` (transferred / remaining / total RAM, downtime, total time);
abort is ``migrate_cancel`` (the source keeps running); resume is ``cont``.
Idempotent like every driver: the same ``job_id`` is the same job, a VM already
running at the destination is done, a migration found under way is attached to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from pacao.clock import Clock
from pacao.controller.config import ControllerConfig
from pacao.controller.drivers.base import DriverError, MigrationJob, VmStatus, fenced

log = logging.getLogger("pacao.controller.drivers.qmp")

MAX_LINE = 16 << 20  # a QMP reply longer than this is not QMP we understand
MAX_EVENTS = 1000  # events kept per connection (the newest)
RUNNING_STATES = {"setup", "active", "device", "pre-switchover", "wait-unplug", "cancelling"}
RUNNING_STATES |= {"postcopy-active", "postcopy-paused", "postcopy-recover"}
# query-status values where the VM is not at home: a waiting destination, a migrated source.
AWAY = {"inmigrate", "postmigrate"}


class QmpError(DriverError):
    """The peer is not a working QMP server (or the connection broke)."""


class QmpCommandError(QmpError):
    """A command's ``error`` reply: ``cls`` is QEMU's error class, ``desc`` its text."""

    def __init__(self, command: str, cls: str, desc: str) -> None:
        super().__init__(f"QMP {command}: {cls}: {desc}")
        self.command, self.cls, self.desc = command, cls, desc


def parse_address(address: str) -> tuple[str, str, int]:
    """``unix:/path`` or ``/path`` -> ("unix", path, 0); ``tcp:h:p`` -> ("tcp", h, p)."""
    if address.startswith("tcp:"):
        host, _, port = address[4:].rpartition(":")
        if not host or not port.isdigit():
            raise QmpError(f"bad QMP address {address!r} (tcp:HOST:PORT)")
        return "tcp", host.strip("[]"), int(port)
    path = address.removeprefix("unix:")
    if not path:
        raise QmpError(f"bad QMP address {address!r} (unix:PATH or tcp:HOST:PORT)")
    return "unix", path, 0


class QmpClient:
    """One QMP connection. ``await connect()``, ``await execute(cmd, args)``, ``await close()``.

    A QEMU monitor serves one client at a time: keep one client per socket and share it.
    """

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self.greeting: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._next = 0
        self._broken: QmpError | None = None
        self._event_cond: asyncio.Condition | None = None

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done() and self._broken is None

    async def _readmsg(self) -> dict[str, Any]:
        assert self._reader is not None
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            raise QmpError(f"{self.address}: connection closed by QEMU") from exc
        except asyncio.LimitOverrunError as exc:
            raise QmpError(f"{self.address}: line longer than {MAX_LINE} bytes") from exc
        except OSError as exc:
            raise QmpError(f"{self.address}: {exc}") from exc
        try:
            msg = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise QmpError(f"{self.address}: not QMP (not JSON): {line[:80]!r}") from None
        if not isinstance(msg, dict):
            raise QmpError(f"{self.address}: not QMP (not a JSON object): {line[:80]!r}")
        return msg

    async def connect(self) -> QmpClient:
        """Open, read the greeting, leave capabilities negotiation mode."""
        kind, host, port = parse_address(self.address)
        try:
            async with asyncio.timeout(self.timeout):
                if kind == "unix":
                    self._reader, self._writer = await asyncio.open_unix_connection(
                        host, limit=MAX_LINE
                    )
                else:
                    self._reader, self._writer = await asyncio.open_connection(
                        host, port, limit=MAX_LINE
                    )
                greeting = await self._readmsg()
                if not isinstance(greeting.get("QMP"), dict):
                    raise QmpError(f"{self.address}: no QMP greeting: {str(greeting)[:80]}")
                self.greeting = greeting["QMP"]
                self._writer.write(b'{"execute": "qmp_capabilities"}\n')
                await self._writer.drain()
                while True:  # events may come before the reply
                    msg = await self._readmsg()
                    if "event" in msg:
                        self.events.append(msg)
                        continue
                    if "error" in msg:
                        err = msg["error"] if isinstance(msg["error"], dict) else {}
                        raise QmpCommandError(
                            "qmp_capabilities", str(err.get("class")), str(err.get("desc"))
                        )
                    if "return" not in msg:
                        raise QmpError(f"{self.address}: unexpected reply {str(msg)[:80]}")
                    break
        except TimeoutError:
            await self._drop()
            raise QmpError(f"{self.address}: no QMP answer within {self.timeout} s") from None
        except OSError as exc:
            await self._drop()
            raise QmpError(f"{self.address}: {exc}") from None
        except QmpError:
            await self._drop()
            raise
        self._event_cond = asyncio.Condition()
        self._task = asyncio.create_task(self._read_loop())
        return self

    async def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._writer = None

    async def _read_loop(self) -> None:
        try:
            while True:
                msg = await self._readmsg()
                if "event" in msg:
                    self.events.append(msg)
                    if len(self.events) > MAX_EVENTS:  # a long-lived connection
                        del self.events[: len(self.events) - MAX_EVENTS]
                    assert self._event_cond is not None
                    async with self._event_cond:
                        self._event_cond.notify_all()
                    continue
                fut = self._pending.pop(str(msg.get("id")), None)
                if fut is None:
                    log.warning("%s: reply to no command: %.80s", self.address, msg)
                elif not fut.done():
                    fut.set_result(msg)
        except QmpError as exc:
            self._broken = exc
        except asyncio.CancelledError:
            self._broken = QmpError(f"{self.address}: connection closed")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(self._broken)
        self._pending.clear()
        if self._event_cond is not None:
            async with self._event_cond:
                self._event_cond.notify_all()

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Run a command; returns its ``return`` value, raises QmpCommandError on ``error``."""
        if self._broken is not None:
            raise self._broken
        if self._writer is None or self._task is None:
            raise QmpError(f"{self.address}: not connected")
        self._next += 1
        cid = f"pacao-{self._next}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        req: dict[str, Any] = {"execute": command, "id": cid}
        if arguments:
            req["arguments"] = arguments
        try:
            self._writer.write(json.dumps(req).encode() + b"\n")
            await self._writer.drain()
            async with asyncio.timeout(timeout or self.timeout):
                msg = await fut
        except TimeoutError:
            self._pending.pop(cid, None)
            raise QmpError(f"{self.address}: no reply to {command} within timeout") from None
        except OSError as exc:
            self._pending.pop(cid, None)
            raise QmpError(f"{self.address}: {exc}") from None
        if "error" in msg:
            err = msg["error"] if isinstance(msg["error"], dict) else {}
            raise QmpCommandError(command, str(err.get("class")), str(err.get("desc")))
        if "return" not in msg:
            raise QmpError(f"{self.address}: reply to {command} without return: {str(msg)[:80]}")
        return msg["return"]

    async def wait_event(
        self,
        name: str,
        timeout: float,
        match: Callable[[dict[str, Any]], bool] | None = None,
        since: int = 0,
    ) -> dict[str, Any]:
        """The first event ``name`` (from index ``since`` of :attr:`events`) that matches."""
        assert self._event_cond is not None, "not connected"

        def found() -> dict[str, Any] | None:
            for ev in self.events[since:]:
                if ev.get("event") == name and (match is None or match(ev)):
                    return ev
            return None

        try:
            async with asyncio.timeout(timeout), self._event_cond:
                while (ev := found()) is None:
                    if self._broken is not None:
                        raise self._broken
                    await self._event_cond.wait()
                return ev
        except TimeoutError:
            raise QmpError(f"{self.address}: no {name} event within {timeout} s") from None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, QmpError):
                await self._task
            self._task = None
        await self._drop()


# -- migration steps, shared by the driver and pacao.testbed.vm.qemuvm ------------------


@dataclass(frozen=True)
class MigrationStats:
    """What ``query-migrate`` says; times in ms, sizes in bytes."""

    status: str
    transferred: int = 0
    remaining: int = 0
    total: int = 0
    total_time_ms: float | None = None
    downtime_ms: float | None = None
    expected_downtime_ms: float | None = None
    setup_time_ms: float | None = None
    mbps: float | None = None
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def final(self) -> bool:
        """QEMU marks a migration completed a moment before it fills in its times:
        until then ``query-migrate`` reports a total time of 0."""
        return self.status != "completed" or bool(self.total_time_ms)

    @property
    def progress(self) -> float:
        if self.status == "completed":
            return 1.0
        if self.total <= 0:
            return 0.0
        return max(0.0, min(1.0, 1.0 - self.remaining / self.total))

    @classmethod
    def parse(cls, info: Any) -> MigrationStats:
        if not isinstance(info, dict):
            raise QmpError(f"query-migrate returned {str(info)[:80]}")
        ram: dict[str, Any] = info["ram"] if isinstance(info.get("ram"), dict) else {}

        def num(d: dict[str, Any], key: str) -> float | None:
            v = d.get(key)
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        return cls(
            status=str(info.get("status", "none")),
            transferred=int(num(ram, "transferred") or 0),
            remaining=int(num(ram, "remaining") or 0),
            total=int(num(ram, "total") or 0),
            total_time_ms=num(info, "total-time"),
            downtime_ms=num(info, "downtime"),
            expected_downtime_ms=num(info, "expected-downtime"),
            setup_time_ms=num(info, "setup-time"),
            mbps=num(ram, "mbps"),
            error=str(info["error-desc"]) if "error-desc" in info else None,
            raw=info,
        )


async def query_status(client: QmpClient) -> str:
    st = await client.execute("query-status")
    if not isinstance(st, dict) or not isinstance(st.get("status"), str):
        raise QmpError(f"{client.address}: query-status returned {str(st)[:80]}")
    return str(st["status"])


async def query_migrate(client: QmpClient) -> MigrationStats:
    return MigrationStats.parse(await client.execute("query-migrate"))


async def start_incoming(dst: QmpClient, uri: str) -> None:
    """Make a waiting destination listen on ``uri`` (a QEMU started with ``-incoming defer``);
    one started with ``-incoming URI`` already listens, which is fine."""
    try:
        await dst.execute("migrate-incoming", {"uri": uri})
    except QmpCommandError as exc:
        if "-incoming defer" in exc.desc or "already" in exc.desc:
            return
        raise


async def start_outgoing(
    src: QmpClient, uri: str, bandwidth_mbps: float, max_downtime_ms: float
) -> None:
    """Set the bandwidth cap (Mbit/s) and max downtime (ms), then ``migrate`` to ``uri``."""
    if bandwidth_mbps <= 0 or max_downtime_ms <= 0:
        raise DriverError(f"bad migration limits {bandwidth_mbps} Mbit/s, {max_downtime_ms} ms")
    await src.execute(
        "migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}
    )
    await src.execute(
        "migrate-set-parameters",
        {
            "max-bandwidth": max(1, int(bandwidth_mbps * 1e6 / 8)),  # bytes/s
            "downtime-limit": max(1, int(max_downtime_ms)),
        },
    )
    await src.execute("migrate", {"uri": uri})


async def wait_migration(src: QmpClient, timeout: float, poll_s: float = 0.1) -> MigrationStats:
    """Poll ``query-migrate`` until completed, failed or cancelled."""
    deadline = time.monotonic() + timeout
    while True:
        st = await query_migrate(src)
        if st.status in ("failed", "cancelled") or (st.status == "completed" and st.final):
            return st
        if time.monotonic() > deadline:
            raise DriverError(f"migration still {st.status} after {timeout} s")
        await asyncio.sleep(poll_s)


# -- the driver ----------------------------------------------------------------------


@dataclass
class _Site:
    qmp: str
    migrate_uri: str | None
    launch: list[str] | None


def _sites(vm: str, spec: Any, dcs: list[str] | None) -> dict[str, _Site]:
    if not isinstance(spec, dict) or not spec:
        raise TypeError(f"vms.{vm} must map DCs to {{qmp, migrate_uri, launch}}")
    out = {}
    for dc, s in spec.items():
        if dcs is not None and dc not in dcs:
            raise TypeError(f"vms.{vm}: unknown DC {dc!r} (configured: {dcs})")
        if not isinstance(s, dict) or not isinstance(s.get("qmp"), str):
            raise TypeError(f"vms.{vm}.{dc}.qmp (unix:PATH or tcp:HOST:PORT) is required")
        unknown = sorted(set(s) - {"qmp", "migrate_uri", "launch"})
        if unknown:
            raise TypeError(f"vms.{vm}.{dc}: unknown keys {unknown}")
        try:
            parse_address(s["qmp"])
        except QmpError as exc:
            raise TypeError(f"vms.{vm}.{dc}.qmp: {exc}") from None
        uri = s.get("migrate_uri")
        if uri is not None and not (isinstance(uri, str) and uri.startswith(("tcp:", "unix:"))):
            raise TypeError(f"vms.{vm}.{dc}.migrate_uri must be tcp:HOST:PORT, not {uri!r}")
        launch = s.get("launch")
        if launch is not None and (
            not isinstance(launch, list)
            or not launch
            or not all(isinstance(a, str) for a in launch)
        ):
            raise TypeError(f"vms.{vm}.{dc}.launch must be a command as a list of strings")
        out[dc] = _Site(s["qmp"], uri, list(launch) if launch else None)
    return out


class QemuQmpDriver:
    """Options: ``vms`` {vm: {dc: {qmp, migrate_uri, launch}}} (required),
    ``connect_timeout_s`` (5), ``launch_timeout_s`` (30). See the module docstring."""

    def __init__(
        self,
        config: ControllerConfig | None = None,
        clock: Clock | None = None,
        vms: dict[str, Any] | None = None,
        connect_timeout_s: float = 5.0,
        launch_timeout_s: float = 30.0,
    ) -> None:
        if not isinstance(vms, dict) or not vms:
            raise TypeError("vms {vm: {dc: {qmp, migrate_uri, launch}}} is required")
        dcs = [d.name for d in config.dcs] if config is not None else None
        if config is not None:
            known = {v.name for v in config.vms}
            unknown = sorted(set(vms) - known)
            if unknown:
                raise TypeError(f"vms: unknown VMs {unknown} (configured: {sorted(known)})")
        for name, val in (
            ("connect_timeout_s", connect_timeout_s),
            ("launch_timeout_s", launch_timeout_s),
        ):
            if isinstance(val, bool) or not isinstance(val, int | float) or val <= 0:
                raise TypeError(f"{name} must be a positive number, not {val!r}")
        self.vms = {vm: _sites(vm, spec, dcs) for vm, spec in vms.items()}
        self.connect_timeout_s = float(connect_timeout_s)
        self.launch_timeout_s = float(launch_timeout_s)
        self._clients: dict[str, QmpClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.launched: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self._stderr: dict[tuple[str, str], tuple[subprocess.Popen[bytes], IO[bytes]]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}

    def _site(self, vm: str, dc: str) -> _Site:
        try:
            sites = self.vms[vm]
        except KeyError:
            raise DriverError(
                f"unknown VM {vm!r} (the qemu driver knows {sorted(self.vms)})"
            ) from None
        if dc not in sites:
            raise DriverError(f"no QEMU configured for VM {vm!r} in DC {dc!r}")
        return sites[dc]

    async def client(self, address: str) -> QmpClient:
        """The shared connection to ``address`` (reconnects when it broke)."""
        lock = self._locks.setdefault(address, asyncio.Lock())
        async with lock:
            c = self._clients.get(address)
            if c is not None and c.connected:
                return c
            if c is not None:
                await c.close()
            c = await QmpClient(address, self.connect_timeout_s).connect()
            self._clients[address] = c
            return c

    async def _statuses(self, vm: str) -> dict[str, str | None]:
        """dc -> query-status of the VM's QEMU there (None: no QEMU answers)."""
        sites = self.vms.get(vm)
        if sites is None:
            raise DriverError(f"unknown VM {vm!r} (the qemu driver knows {sorted(self.vms)})")

        async def one(site: _Site) -> str | None:
            try:
                return await query_status(await self.client(site.qmp))
            except QmpError as exc:  # not a QEMU we can use: the VM is not there
                log.debug("%s: %s", site.qmp, exc)
                await self._forget(site.qmp)
                return None

        res = await asyncio.gather(*(one(s) for s in sites.values()))
        return dict(zip(sites, res, strict=True))

    async def status(self, vm: str) -> VmStatus:
        sts = await self._statuses(vm)
        running = [dc for dc, s in sts.items() if s == "running"]
        if running:
            return VmStatus(dc=running[0], running=True)
        home = [dc for dc, s in sts.items() if s is not None and s not in AWAY]
        job = self.jobs.get(vm)
        if job is not None and job["src"] in home:
            return VmStatus(dc=job["src"], running=False)
        if home:
            return VmStatus(dc=home[0], running=False)
        raise DriverError(f"no QEMU runs VM {vm!r} (status per DC: {sts})")

    async def _forget(self, address: str) -> None:
        c = self._clients.pop(address, None)
        if c is not None:
            await c.close()

    async def _retire(self, vm: str, dc: str, site: _Site, client: QmpClient) -> None:
        """Quit a QEMU left ``postmigrate`` by an earlier migration away from ``dc``, so
        that a new destination can take its place (libvirt does the same)."""
        log.info("quitting the migrated-away QEMU of %s in %s", vm, dc)
        with contextlib.suppress(QmpError):  # the reply may be lost as QEMU exits
            await client.execute("quit", timeout=5)
        await self._forget(site.qmp)
        old = self.launched.get((vm, dc))
        if old is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(old.wait, 10)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe = await QmpClient(site.qmp, 0.5).connect()
            except QmpError:
                return  # gone
            await probe.close()
            if time.monotonic() > deadline:
                raise DriverError(f"the old QEMU of {vm} in {dc} did not quit")
            await asyncio.sleep(0.05)

    async def _ensure_destination(self, vm: str, dc: str) -> QmpClient:
        """A QEMU waiting for the VM in ``dc``: the one answering there, else one launched."""
        site = self._site(vm, dc)
        try:
            c = await self.client(site.qmp)
            if site.launch is None or await query_status(c) != "postmigrate":
                return c
            await self._retire(vm, dc, site, c)
        except QmpCommandError:
            raise
        except QmpError as exc:
            if site.launch is None:
                raise DriverError(f"destination QEMU of {vm} in {dc}: {exc}") from None
        proc = self.launched.get((vm, dc))
        if proc is None or proc.poll() is not None:
            log.info("starting the destination QEMU of %s in %s: %s", vm, dc, site.launch)
            try:
                # A file, not a pipe that nobody reads and that could block QEMU.
                err = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
                proc = subprocess.Popen(
                    site.launch,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as exc:
                raise DriverError(f"cannot start the QEMU of {vm} in {dc}: {exc}") from None
            self.launched[(vm, dc)] = proc
            self._stderr[(vm, dc)] = (proc, err)
        deadline = time.monotonic() + self.launch_timeout_s
        while True:
            if proc.poll() is not None:
                raise DriverError(
                    f"the QEMU of {vm} in {dc} exited ({proc.returncode}): {self._err(vm, dc)}"
                )
            try:
                return await self.client(site.qmp)
            except QmpError:
                if time.monotonic() > deadline:
                    raise DriverError(
                        f"the QEMU of {vm} in {dc} did not answer on {site.qmp} "
                        f"within {self.launch_timeout_s} s"
                    ) from None
                await asyncio.sleep(0.05)

    async def start_migration(
        self, vm: str, dst: str, job_id: str, bandwidth_mbps: float, max_downtime_ms: float
    ) -> None:
        dsite = self._site(vm, dst)
        job = self.jobs.get(vm)
        if job is not None and job["job_id"] == job_id:
            return  # idempotent: this job exists (running or finished)
        if job is not None and (await self.job(vm)).state == "running":
            raise DriverError(f"VM {vm!r} already has a migration running")
        st = await self.status(vm)
        if st.dc == dst:
            return
        src = await self.client(self._site(vm, st.dc).qmp)
        under_way = await query_migrate(src)
        if under_way.status in RUNNING_STATES:  # started before a controller restart
            log.info("attaching to the migration of %s under way from %s", vm, st.dc)
            self.jobs[vm] = {"job_id": job_id, "src": st.dc, "dst": dst, "stats": under_way}
            return
        if dsite.migrate_uri is None:
            raise DriverError(f"vms.{vm}.{dst}.migrate_uri is not configured")
        dclient = await self._ensure_destination(vm, dst)
        dstatus = await query_status(dclient)
        if dstatus != "inmigrate":
            raise DriverError(
                f"the QEMU of {vm} in {dst} is {dstatus!r}, not waiting for a migration"
                " (start it with -incoming defer or -incoming tcp:HOST:PORT)"
            )
        await fenced(self)  # a replica that no longer leads starts no migration
        await start_incoming(dclient, dsite.migrate_uri)
        await start_outgoing(src, dsite.migrate_uri, bandwidth_mbps, max_downtime_ms)
        self.jobs[vm] = {"job_id": job_id, "src": st.dc, "dst": dst, "stats": None}

    async def stats(self, vm: str) -> MigrationStats | None:
        """The last ``query-migrate`` figures of the VM's job (None: no job yet)."""
        await self.job(vm)
        job = self.jobs.get(vm)
        return None if job is None else job["stats"]

    async def job(self, vm: str) -> MigrationJob:
        job = self.jobs.get(vm)
        if job is None:
            return MigrationJob(state="none")
        if job.get("final") is not None:
            return job["final"]  # type: ignore[no-any-return]
        dst, jid = job["dst"], job["job_id"]
        try:
            st = await query_migrate(await self.client(self._site(vm, job["src"]).qmp))
        except QmpCommandError:
            raise
        except QmpError as exc:
            st = MigrationStats(status="unknown", error=str(exc))
        job["stats"] = st if st.status != "unknown" else job["stats"]
        if st.status in RUNNING_STATES or not st.final:
            return MigrationJob("running", dst, st.progress, None, jid)
        if st.status in ("failed", "cancelled"):
            final = MigrationJob("failed", dst, st.progress, st.error or st.status, jid)
            job["final"] = final
            return final
        # completed at the source (or the source is gone): done when the destination runs
        try:
            dstatus: str | None = await query_status(await self.client(self._site(vm, dst).qmp))
        except QmpError:
            dstatus = None
        if dstatus == "running":
            job["final"] = MigrationJob("completed", dst, 1.0, None, jid)
            return job["final"]  # type: ignore[no-any-return]
        if st.status == "completed" and dstatus is not None:
            return MigrationJob("running", dst, 1.0, None, jid)  # the destination starts
        final = MigrationJob("failed", dst, st.progress, f"migration {st.status}: {st.error}", jid)
        job["final"] = final
        return final

    async def abort(self, vm: str) -> None:
        job = self.jobs.get(vm)
        if job is None or (await self.job(vm)).state != "running":
            return
        src = await self.client(self._site(vm, job["src"]).qmp)
        with contextlib.suppress(QmpCommandError):  # finished meanwhile
            await src.execute("migrate_cancel")
        deadline = time.monotonic() + 30
        while (await self.job(vm)).state == "running":
            if time.monotonic() > deadline:
                raise DriverError(f"the migration of {vm} did not stop after migrate_cancel")
            await asyncio.sleep(0.05)
        await self._reap(vm, job["dst"])

    def _err(self, vm: str, dc: str) -> str:
        """The end of a launched QEMU's stderr."""
        entry = self._stderr.get((vm, dc))
        if entry is None:
            return ""
        try:
            entry[1].seek(0)
            return entry[1].read().decode(errors="replace").strip()[-300:]
        except ValueError:  # closed by close()
            return ""

    async def _reap(self, vm: str, dc: str) -> None:
        """A launched destination exits by itself when its incoming migration fails."""
        proc = self.launched.get((vm, dc))
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, 5)

    async def resume(self, vm: str) -> None:
        st = await self.status(vm)
        if st.running:
            return
        c = await self.client(self._site(vm, st.dc).qmp)
        try:
            await c.execute("cont")
        except QmpCommandError as exc:
            raise DriverError(f"cannot resume {vm} in {st.dc}: {exc.desc}") from None

    async def close(self) -> None:
        for c in self._clients.values():
            await c.close()
        self._clients.clear()
        # Launched QEMUs are the VMs: they outlive the controller (not killed here).
        for key, (proc, err) in list(self._stderr.items()):
            if proc.poll() is not None:
                err.close()
                del self._stderr[key]
