"""Replicas (``ha.enabled``): this process's side of the lease in the database.

The replica holding the lease leads (one *term* per epoch: the loops, the plans, the
recovery); the others follow, serve reads and refuse writes (docs/controller.md,
"High availability"). The :class:`~pacao.controller.storage.Fence` makes every store
write and driver action of a replica whose lease ended fail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from pacao.controller.storage import Fence

if TYPE_CHECKING:
    from pacao.controller.service import Controller

log = logging.getLogger("pacao.controller")


class Leadership:
    """This replica's side of the lease (docs/controller.md "High availability"): take it
    when free, renew it, notice losing it; what /healthz and the metrics show."""

    def __init__(self, ctl: Controller, holder: str, address: str) -> None:
        self.ctl, self.holder, self.address = ctl, holder, address
        self.fence = Fence()
        ctl.leadership = self
        ctl.enable_fencing(self.fence)
        self.epoch: int | None = None
        self.since: float | None = None  # database clock, when this replica took the lease
        self.valid_until = 0.0  # monotonic: when this replica must stop assuming it leads
        self.last_wake = 0.0  # monotonic: the keeper's last wake-up (to report stalls)
        self.lease: dict[str, Any] | None = None  # the lease row as last read
        self.why: str | None = None  # why the last term ended
        self.db_error: str | None = None
        ctl.metrics.leader.set(0)

    def leading(self) -> bool:
        return self.fence.epoch is not None

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A lease call in a thread, bounded by the lease time (a hung server must not
        hold the loop); raises on errors."""
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.ctl.cfg.ha.lease_s)

    async def campaign(self) -> bool:
        ha = self.ctl.cfg.ha
        t0 = time.monotonic()
        try:
            got = await self._db(
                self.ctl.store.acquire_lease, self.holder, self.address, ha.lease_s
            )
        except (SQLAlchemyError, TimeoutError) as exc:
            self._db_down(exc)
            return False
        self.db_error = None
        if got is None:
            return False
        self.epoch, self.since = got
        self.valid_until = t0 + ha.lease_s
        self.last_wake = time.monotonic()
        self.fence.epoch = self.epoch
        self.lease = {"holder": self.holder, "epoch": self.epoch, "since": self.since,
                      "address": self.address, "valid": True}  # fmt: skip
        m = self.ctl.metrics
        m.leader.set(1)
        m.leader_epoch.set(self.epoch)
        m.leader_since.set(self.since)
        m.leader_terms.inc()
        log.info("leading", extra={"epoch": self.epoch, "holder": self.holder})
        return True

    async def keep(self, end: Callable[[str], None]) -> None:
        """Renew every ha.renew_s; end the term when another replica holds the lease or
        when the last renewal that succeeded is a lease time old (database unreachable,
        or this process was stopped that long)."""
        ha = self.ctl.cfg.ha
        while True:
            nap = max(0.0, min(ha.renew_every(), self.valid_until - time.monotonic()))
            await asyncio.sleep(nap)
            t0 = time.monotonic()
            late = t0 - self.last_wake - nap
            self.last_wake = t0
            if t0 >= self.valid_until:
                end(f"the lease was not renewed within ha.lease_s (woke {late:.2f} s late)")
                return
            assert self.epoch is not None
            try:
                got = await asyncio.wait_for(
                    asyncio.to_thread(
                        self.ctl.store.renew_lease, self.holder, self.epoch, ha.lease_s
                    ),
                    max(0.05, self.valid_until - t0),
                )
            except (SQLAlchemyError, TimeoutError) as exc:
                self._db_down(exc)
                continue
            self.db_error = None
            if got is None:
                end("another replica holds the lease")
                return
            took = time.monotonic() - t0
            if took > ha.renew_every() or late > ha.renew_every():
                log.warning(
                    "lease renewal slow",
                    extra={"renewal_s": round(took, 3), "woke_late_s": round(late, 3)},
                )
            self.valid_until = t0 + ha.lease_s

    def lose(self, why: str) -> None:
        """Stop acting now (any thread): the fence refuses this process's writes."""
        if self.fence.epoch is None:
            return
        self.fence.epoch = None
        self.why = why
        self.lease = None  # who leads now is read again by the next follow()
        self.ctl.metrics.leader.set(0)
        log.warning("lease lost: following", extra={"epoch": self.epoch, "why": why})

    def step_down(self) -> None:
        self.lose("stopped")
        self.epoch = self.since = None

    async def release(self) -> None:
        """A clean stop hands the lease over at once instead of after ha.lease_s."""
        if self.epoch is None:
            return
        try:
            await self._db(self.ctl.store.release_lease, self.holder, self.epoch)
        except (SQLAlchemyError, TimeoutError) as exc:
            self._db_down(exc)

    async def follow(self) -> None:
        """A follower's view: who leads, and the users' state for the read-only API."""
        try:
            self.lease = await self._db(self.ctl.store.lease)
            self.ctl.load_state(write=False)
        except (SQLAlchemyError, TimeoutError) as exc:
            self._db_down(exc)
            return
        self.db_error = None
        m = self.ctl.metrics
        m.leader.set(0)
        if self.lease is not None:
            m.leader_epoch.set(self.lease["epoch"])
            m.leader_since.set(self.lease["since"])

    def _db_down(self, exc: BaseException) -> None:
        msg = (
            str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if str(exc)
            else type(exc).__name__
        )
        if msg != self.db_error:
            log.warning("lease storage unreachable", extra={"error": msg})
        self.db_error = msg

    def info(self) -> dict[str, Any]:
        """Who leads and since when (database clock), for /healthz."""
        lease = self.lease or {}
        return {
            "role": "leader" if self.leading() else "follower",
            "replica": self.holder,
            "epoch": lease.get("epoch"),
            "leader": lease.get("holder") if lease.get("valid") else None,
            "leader_api": lease.get("address") if lease.get("valid") else None,
            "leader_since": lease.get("since") if lease.get("valid") else None,
            "storage_error": self.db_error,
        }
