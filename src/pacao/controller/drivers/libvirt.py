"""libvirt hypervisor driver: live migration between the DCs' libvirt daemons.

Each DC has a libvirt URI (``uris``); a VM is the libvirt domain of the same
name. A migration is a live peer-to-peer ``virDomainMigrateToURI3`` (the source
daemon connects to the destination's URI, so each daemon must reach the
others' URIs), with the bandwidth
(``VIR_MIGRATE_PARAM_BANDWIDTH``, MiB/s) and the maximum downtime
(``virDomainMigrateSetMaxDowntime``) the plan carries, and optionally the
destination's migration address (``migrate_uris``, e.g. ``tcp://10.0.0.2``).
libvirt calls block, so they run in threads; the migration call is awaited
by :meth:`job`. Progress is the source job's data processed / data total.

Idempotent like every driver: the same ``job_id`` attaches to the job under
way (or finished); a VM already running at the destination is done. A
peer-to-peer migration is driven by the source daemon, so it goes on when the
controller dies; after a restart, a migration under way for the VM (the source
domain's libvirt job is an outgoing migration) is attached to and awaited,
never started a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from pacao.clock import Clock
from pacao.controller.config import ControllerConfig
from pacao.controller.drivers.base import DriverError, MigrationJob, VmStatus, fenced

log = logging.getLogger("pacao.controller.drivers.libvirt")


def _libvirt() -> Any:
    try:
        import libvirt  # type: ignore[import-untyped]
    except ImportError as exc:  # the package is an optional dependency
        raise TypeError(f"the libvirt driver needs libvirt-python ({exc})") from None
    # Errors come back as exceptions; libvirt's default handler would also print them.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


class LibvirtHypervisor:
    """Options: ``uris`` {dc: libvirt URI} (required, every DC), ``migrate_uris``
    {dc: "tcp://host[:port]"} (where the destination QEMU listens; default: libvirt's
    choice), ``persist`` (persistent domains stay defined at the destination only)."""

    def __init__(
        self,
        config: ControllerConfig | None = None,
        clock: Clock | None = None,
        uris: dict[str, str] | None = None,
        migrate_uris: dict[str, str] | None = None,
        persist: bool = True,
    ) -> None:
        self.lv = _libvirt()
        if not isinstance(uris, dict) or not uris:
            raise TypeError("uris {dc: libvirt URI} is required")
        dcs = [d.name for d in config.dcs] if config is not None else list(uris)
        unknown = sorted(set(uris) - set(dcs))
        missing = sorted(set(dcs) - set(uris))
        if unknown or missing:
            raise TypeError(f"uris: unknown DCs {unknown}, DCs without a URI {missing}")
        if migrate_uris is not None and (
            not isinstance(migrate_uris, dict) or set(migrate_uris) - set(dcs)
        ):
            raise TypeError(f"migrate_uris must map configured DCs to URIs: {migrate_uris!r}")
        self.uris = {k: str(v) for k, v in uris.items()}
        self.migrate_uris = {k: str(v) for k, v in (migrate_uris or {}).items()}
        self.persist = bool(persist)
        self._conns: dict[str, Any] = {}
        self.jobs: dict[str, dict[str, Any]] = {}

    # -- connections and lookups (in threads: libvirt calls block) -----------------
    def _conn(self, dc: str) -> Any:
        c = self._conns.get(dc)
        if c is None or not c.isAlive():
            try:
                c = self.lv.open(self.uris[dc])
            except self.lv.libvirtError as exc:
                raise DriverError(f"libvirt of {dc} ({self.uris[dc]}): {exc}") from None
            self._conns[dc] = c
        return c

    def _find(self, vm: str) -> list[tuple[str, Any, int]]:
        """(dc, domain, state) for every DC where the domain is active."""
        out = []
        for dc in self.uris:
            try:
                dom = self._conn(dc).lookupByName(vm)
                state = int(dom.state()[0])
            except self.lv.libvirtError:
                continue
            if dom.isActive():
                out.append((dc, dom, state))
        return out

    def _status(self, vm: str) -> VmStatus:
        found = self._find(vm)
        if not found:
            raise DriverError(f"no active libvirt domain {vm!r} in any DC")
        running = [f for f in found if f[2] == self.lv.VIR_DOMAIN_RUNNING]
        if running:
            return VmStatus(dc=running[0][0], running=True)
        job = self.jobs.get(vm)
        # Both paused (a failed or stopped migration): the source is where it lives.
        src = [f for f in found if job is not None and f[0] == job["src"]]
        dc = (src or found)[0][0]
        return VmStatus(dc=dc, running=False)

    async def status(self, vm: str) -> VmStatus:
        return await asyncio.to_thread(self._status, vm)

    # -- migration ---------------------------------------------------------------
    def _migrate(
        self, vm: str, src: str, dst: str, bandwidth_mbps: float, max_downtime_ms: float
    ) -> None:
        lv = self.lv
        # Its own connection: a call blocks its connection for other threads (no libvirt
        # event loop here), and status/progress/abort must work while this one waits.
        try:
            conn = lv.open(self.uris[src])
        except lv.libvirtError as exc:
            raise DriverError(f"libvirt of {src} ({self.uris[src]}): {exc}") from None
        try:
            self._migrate_on(conn, vm, src, dst, bandwidth_mbps, max_downtime_ms)
        finally:
            with contextlib.suppress(lv.libvirtError):
                conn.close()

    def _migrate_on(
        self, conn: Any, vm: str, src: str, dst: str, bandwidth_mbps: float, max_downtime_ms: float
    ) -> None:
        lv = self.lv
        try:
            dom = conn.lookupByName(vm)
        except lv.libvirtError as exc:
            raise DriverError(f"{vm} is not at {src}: {exc}") from None
        with contextlib.suppress(lv.libvirtError):  # not every hypervisor supports it
            dom.migrateSetMaxDowntime(max(1, int(max_downtime_ms)), 0)
        params: dict[str, Any] = {
            lv.VIR_MIGRATE_PARAM_BANDWIDTH: max(1, int(bandwidth_mbps / 8.388608)),  # MiB/s
        }
        if dst in self.migrate_uris:
            params[lv.VIR_MIGRATE_PARAM_URI] = self.migrate_uris[dst]
        # Peer to peer: the source daemon drives the migration and talks to the destination
        # daemon itself (the client only waits), so queries and aborts are not queued
        # behind a client-managed phase.
        flags = lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER
        if self.persist and dom.isPersistent():
            flags |= lv.VIR_MIGRATE_PERSIST_DEST | lv.VIR_MIGRATE_UNDEFINE_SOURCE
        try:
            dom.migrateToURI3(self.uris[dst], params, flags)
        except lv.libvirtError as exc:
            raise DriverError(f"migration of {vm} from {src} to {dst}: {exc}") from None

    async def start_migration(
        self, vm: str, dst: str, job_id: str, bandwidth_mbps: float, max_downtime_ms: float
    ) -> None:
        if dst not in self.uris:
            raise DriverError(f"no libvirt URI for DC {dst!r}")
        job = self.jobs.get(vm)
        if job is not None and job["job_id"] == job_id:
            return  # idempotent: this job exists (running or finished)
        if job is not None and not job["future"].done():
            raise DriverError(f"VM {vm!r} already has a migration running")
        st = await self.status(vm)
        if st.dc == dst:
            return
        if job is None and await asyncio.to_thread(self._migrating_out, vm, st.dc):
            # A migration this process did not start (it ran before a restart): wait for it.
            log.info("attached to the migration under way", extra={"vm": vm, "dst": dst})
            fut = asyncio.ensure_future(asyncio.to_thread(self._await_running, vm, st.dc, dst))
            self.jobs[vm] = {
                "job_id": job_id,
                "src": st.dc,
                "dst": dst,
                "future": fut,
                "attached": True,
            }
            return
        await fenced(self)  # a replica that no longer leads starts no migration
        fut = asyncio.ensure_future(
            asyncio.to_thread(self._migrate, vm, st.dc, dst, bandwidth_mbps, max_downtime_ms)
        )
        self.jobs[vm] = {"job_id": job_id, "src": st.dc, "dst": dst, "future": fut}

    def _migrating_out(self, vm: str, src: str) -> bool:
        """Whether the source domain's current libvirt job is an outgoing migration."""
        try:
            stats = self._conn(src).lookupByName(vm).jobStats()
        except self.lv.libvirtError:
            return False
        return bool(
            stats.get("type", self.lv.VIR_DOMAIN_JOB_NONE) != self.lv.VIR_DOMAIN_JOB_NONE
            and stats.get("operation") == self.lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT
        )

    def _await_running(self, vm: str, src: str, dst: str, poll_s: float = 0.2) -> None:
        """Block until the attached migration ends; fail unless the VM runs at ``dst``."""
        while self._migrating_out(vm, src):
            time.sleep(poll_s)
        deadline = time.monotonic() + 10.0  # the destination resumes as the source job ends
        while True:
            st = self._status(vm)
            if (st.dc == dst and st.running) or time.monotonic() > deadline:
                break
            time.sleep(poll_s)
        if not (st.dc == dst and st.running):
            raise DriverError(
                f"the migration of {vm} under way at restart ended with the VM at {st.dc}"
            )

    def _progress(self, vm: str, src: str) -> float:
        try:
            stats = self._conn(src).lookupByName(vm).jobStats()
        except self.lv.libvirtError:
            return 0.0
        total = float(stats.get("data_total") or stats.get("memory_total") or 0)
        done = float(stats.get("data_processed") or stats.get("memory_processed") or 0)
        return min(1.0, done / total) if total > 0 else 0.0

    async def job(self, vm: str) -> MigrationJob:
        job = self.jobs.get(vm)
        if job is None:
            return MigrationJob(state="none")
        fut: asyncio.Future[None] = job["future"]
        if not fut.done():
            progress = await asyncio.to_thread(self._progress, vm, job["src"])
            return MigrationJob("running", job["dst"], progress, None, job["job_id"])
        exc = fut.exception()
        if exc is not None:
            return MigrationJob("failed", job["dst"], 0.0, str(exc), job["job_id"])
        return MigrationJob("completed", job["dst"], 1.0, None, job["job_id"])

    async def abort(self, vm: str) -> None:
        job = self.jobs.get(vm)
        if job is None or job["future"].done():
            return

        def _abort() -> None:
            with contextlib.suppress(self.lv.libvirtError):  # finished meanwhile
                self._conn(job["src"]).lookupByName(vm).abortJob()

        await asyncio.to_thread(_abort)
        with contextlib.suppress(DriverError):
            await job["future"]

    async def resume(self, vm: str) -> None:
        def _resume() -> None:
            where = self._status(vm).dc
            for dc, dom, state in self._find(vm):
                if dc == where and state == self.lv.VIR_DOMAIN_PAUSED:
                    try:
                        dom.resume()
                    except self.lv.libvirtError as exc:
                        raise DriverError(f"cannot resume {vm}: {exc}") from None
                    return

        await asyncio.to_thread(_resume)

    async def close(self) -> None:
        for job in self.jobs.values():
            if not job["future"].done():
                with contextlib.suppress(DriverError):
                    await job["future"]
        for c in self._conns.values():
            with contextlib.suppress(Exception):
                c.close()
        self._conns.clear()
