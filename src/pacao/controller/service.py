"""The controller service: one asyncio process running monitoring, decisions, plans and the API.

:class:`Controller` wires the parts of one controller (the users' state, the planner,
the plan executor, the monitor, the drivers) and runs the plans the planner stores:
dispatch, recovery after a restart, draining. :class:`Service` runs its loops: probing
every S''', Step 1 every S', Step 2, approvals, storage retention, and the API. Time
comes only from the injected :class:`~pacao.clock.Clock`.

With ``ha.enabled`` (PostgreSQL) several processes run the same config: the one
holding the lease in the database leads (one *term* per epoch: the loops, the plans,
the recovery); the others follow, serve reads and refuse writes
(:mod:`pacao.controller.leadership`, docs/controller.md "High availability").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from pacao.clock import Clock
from pacao.controller import retention
from pacao.controller.ams import Ams
from pacao.controller.config import (
    ControllerConfig,
    Timers,
    load_config,
    restart_only,
    with_listen,
)
from pacao.controller.drivers.base import HypervisorDriver, MappingDriver, set_fence
from pacao.controller.lifecycle import PlanState
from pacao.controller.metrics import Metrics
from pacao.controller.monitoring import Monitor, SamplesIngested, Source, SourceError, handles
from pacao.controller.planner import Planner
from pacao.controller.plans import Context, Executor
from pacao.controller.state import UserStates
from pacao.controller.storage import Fence, NotLeader, Store
from pacao.errors import InputError

if TYPE_CHECKING:
    import uvicorn

    from pacao.controller.leadership import Leadership

log = logging.getLogger("pacao.controller")


class Controller:
    """One controller's parts, wired: the users' state, the planner, the executor, the
    monitor and the drivers; and the plans under way in this process."""

    def __init__(
        self,
        cfg: ControllerConfig,
        store: Store,
        sources: Sequence[Source],
        mapping: MappingDriver,
        hypervisor: HypervisorDriver,
        clock: Clock,
        dry_run: bool = False,
        manual: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg, self.store, self.clock = cfg, store, clock
        self.dry_run, self.manual = dry_run, manual
        self.metrics = metrics or Metrics()
        self.monitor = Monitor(cfg, store, sources, clock=clock)
        self.monitor.register(self)
        self.mapping, self.hypervisor = mapping, hypervisor
        self.executor = Executor(
            store,
            Context(mapping, hypervisor, clock, poll_s=min(1.0, cfg.timers.s3)),
            on_done=self._plan_done,
        )
        self.running: dict[str, asyncio.Task[str]] = {}
        self.ams = Ams(cfg, store, clock)  # application mobility notifications (docs/mec.md)
        self.executor.hooks.append(self.ams.on_action)
        self.state = UserStates()
        self.planner = Planner(
            cfg, store, clock, self.monitor, self.state, self.metrics, self.dispatch,
            dry_run=dry_run, manual=manual,
        )  # fmt: skip
        self._configure(cfg)
        #: plans being resumed after a restart (empty once recovery ended): /readyz is
        #: 503 while it is not empty, and :meth:`recover` runs in the background
        self.recovering: set[str] = set()
        self.in_recovery = False
        #: the config file, for a reload (SIGHUP, POST /config/reload); None: not from a file
        self.config_path: Path | None = None
        #: the API's bearer token (a reload may change it)
        self.api_token: str | None = None
        #: replicas (ha.enabled): this process's lease state; None: a single controller
        self.leadership: Leadership | None = None
        #: `run --listen`: replaces api.listen of the file (several replicas on one host)
        self.listen_override: str | None = None
        #: called with the exception of a plan task that failed outside the drivers (the
        #: store went away): a replica then ends its term and a new one recovers the plan
        self.on_plan_error: Callable[[BaseException], None] | None = None

    def _configure(self, cfg: ControllerConfig) -> None:
        """Everything derived from the parts of the config a reload may change."""
        self.cfg = cfg
        self.monitor.cfg = cfg
        self.executor.ctx.poll_s = min(1.0, cfg.timers.s3)
        self.planner.configure(cfg)

    def reload(self, path: Path | None = None) -> list[str]:
        """Re-read the config file; validated in full before it replaces the running one.
        Returns the top-level keys that changed. Raises InputError (and changes nothing)
        on a bad file or on a change that needs a restart (see RESTART_KEYS)."""
        path = path or self.config_path
        if path is None:
            raise InputError("config", None, "this controller was not started from a file")
        new = with_listen(load_config(path), self.listen_override)
        restart_only(self.cfg, new)
        token = new.api_token() if self.api_token is not None else None
        old = self.cfg.model_dump(mode="json")
        changed = [k for k, v in new.model_dump(mode="json").items() if old.get(k) != v]
        self._configure(new)
        if token is not None:
            self.api_token = token
        log.info("config reloaded", extra={"changed": changed, "file": str(path)})
        return changed

    @handles(SamplesIngested)
    def _count_samples(self, ev: SamplesIngested) -> None:
        self.metrics.samples.labels(xtr=ev.source).inc(ev.count)

    @handles(SourceError)
    def _log_source_problem(self, ev: SourceError) -> None:
        log.warning("measurement source problem", extra={"source": ev.source, "error": ev.error})

    def load_state(self, write: bool = True) -> None:
        """Per-user state from the store; ``write=False`` (a follower's view) does not
        store the initial state of a user the database does not know yet."""
        self.state.load(self.store, self.cfg, write)

    # -- decisions (the planner's; here so the loops and tests reach them the same way)
    async def step1(self, now: float) -> list[str]:
        return await self.planner.step1(now)

    async def step2(self, now: float) -> list[str]:
        return await self.planner.step2(now)

    # -- replicas -------------------------------------------------------------
    def enable_fencing(self, fence: Fence) -> None:
        """Make every store write and every driver action of this process check ``fence``."""
        self.store.fence = fence

        async def check() -> None:
            self.store.check_fence()

        self.executor.ctx.fence = check
        for drv in (self.mapping, self.hypervisor):
            set_fence(drv, check)

    def new_term(self) -> None:
        """Forget what the previous term had in memory: the next leader term starts from
        the database, as a restarted process does."""
        self.running = {}
        self.recovering = set()
        self.in_recovery = False
        self.planner.new_term()

    def _plan_done(self, plan: dict[str, Any], final: PlanState) -> None:
        touched = self.state.apply(
            plan, final, self.clock.now(), self.metrics.migration_seconds.observe
        )
        for user in touched:
            self.state.save(self.store, user)
        self.metrics.set_plans(self.store.plan_counts())

    # -- plans ----------------------------------------------------------------------
    async def dispatch(self, pid: str) -> None:
        if self.dry_run:
            self.store.move_plan(pid, PlanState.RECOMMENDED, PlanState.SKIPPED, "dry-run")
            return
        if self.manual:
            return  # waits for `pacao controller approve` or POST /plans/{id}/approve
        self.store.approve(pid, by="auto")
        self.start(pid)

    def start(self, pid: str) -> None:
        if pid in self.running and not self.running[pid].done():
            return
        task = asyncio.ensure_future(self.executor.run_plan(pid))
        self.running[pid] = task
        if self.on_plan_error is not None:
            task.add_done_callback(self._plan_task_done)

    def _plan_task_done(self, task: asyncio.Task[str]) -> None:
        if task.cancelled() or self.on_plan_error is None:
            return
        exc = task.exception()
        if exc is not None:
            log.warning("plan stopped by a storage error", extra={"error": str(exc)})
            self.on_plan_error(exc)

    async def recover(self) -> list[str]:
        """After a restart: resume ``ongoing`` plans, start ``approved`` ones and, in auto
        mode, approve the ``recommended`` ones the crash interrupted; all at once (they
        were running side by side before the crash) and in the background, so the API
        and the loops answer meanwhile. Returns the plan ids taken up."""
        ids = self.executor.recoverable(auto=not self.manual and not self.dry_run)
        self.recovering.update(ids)
        try:
            for pid in ids:
                self.start(pid)
            tasks = [self.running[pid] for pid in ids]
            if tasks:
                await asyncio.wait(tasks)
        finally:
            self.recovering.clear()
            self.in_recovery = False
        log.info("recovery done", extra={"plans": len(ids)})
        return ids

    def maintain(self, now: float) -> retention.Pruned:
        """One storage retention pass (roll measurements up into history, then prune)."""
        done = retention.maintain(self.store, self.cfg, now)
        self.metrics.history_rows.inc(done.rolled)
        self.metrics.pruned.labels(table="measurements").inc(done.measurements)
        self.metrics.pruned.labels(table="history").inc(done.history)
        if done.measurements or done.history:
            log.info(
                "storage pruned",
                extra={"measurements": done.measurements, "history": done.history},
            )
        return done

    async def run_approved(self) -> None:
        for pid in self.store.expire_plans(self.clock.now()):
            log.info("plan expired", extra={"plan": pid})
        for p in self.store.plans(state=PlanState.APPROVED):
            self.start(p["id"])

    async def drain(self) -> None:
        """Wait for plans this process started (tests, shutdown)."""
        tasks = [t for t in self.running.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks)


class Service:
    """The asyncio process: loops for probing, Step 1, Step 2, approvals and the API."""

    def __init__(
        self, ctl: Controller, api_server: uvicorn.Server | None = None, grace_s: float = 2.0
    ) -> None:
        self.ctl = ctl
        self.api_server = api_server
        #: on stop, plans under way get this long to end (succeeded/failed) before they
        #: are cancelled; a cancelled one stays ``ongoing`` and is resumed at the next start
        self.grace_s = grace_s
        self.stop = asyncio.Event()

    async def _every(
        self, period: Callable[[], float], fn: Callable[[float], Awaitable[None]]
    ) -> None:
        """Run fn every period() seconds (read each time: a reload may change timers)."""
        clock = self.ctl.clock
        nxt = clock.now() + period()
        while not self.stop.is_set():
            await clock.sleep(nxt - clock.now())
            try:
                await fn(nxt)
            except NotLeader:
                return  # the lease is gone: the term ends
            except Exception:
                log.exception("loop iteration failed")
            nxt += period()

    def reload(self) -> list[str] | None:
        """SIGHUP: reload the config file; a bad one is logged and the old one kept."""
        try:
            return self.ctl.reload()
        except InputError as exc:
            log.error(
                "config reload refused, the running config is kept", extra={"error": str(exc)}
            )
            return None

    async def serve(self) -> None:
        ctl = self.ctl
        api = None
        if self.api_server is not None:
            api = asyncio.ensure_future(self.api_server.serve())
        if ctl.cfg.ha.enabled:
            left = await self._replica()
        else:
            left = await self._term(self.stop)
        if self.api_server is not None:
            self.api_server.should_exit = True
        if api is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await api
        log.info("controller stopped", extra={"plans_left_ongoing": left})

    async def _term(self, until: asyncio.Event) -> int:
        """Lead until ``until`` is set: load the state, resume the plans a previous process
        or leader left, run the loops. Returns how many plans were left under way."""
        ctl = self.ctl

        def t() -> Timers:  # read at every tick: a reload may change the timers
            return ctl.cfg.timers

        try:
            ctl.load_state()
            ctl.ams.start()
        except Exception:
            await ctl.ams.stop()
            raise
        # Recovery in the background: a plan under way can be a migration of minutes, and
        # the API, the probes and SIGTERM must not wait for it (/readyz says when it ends).
        ctl.in_recovery = True
        recovery = asyncio.ensure_future(ctl.recover())
        if ctl.on_plan_error is not None:
            recovery.add_done_callback(self._recovery_done)

        async def poll(_: float) -> None:
            await ctl.monitor.poll()

        async def step(now: float) -> None:
            await ctl.step1(now)

        async def step2(now: float) -> None:
            await ctl.step2(now)

        async def approvals(_: float) -> None:
            await ctl.run_approved()

        in_memory = ctl.store.engine.url.database in (None, "", ":memory:")

        async def maintain(now: float) -> None:
            # In a thread: a first pass over a large table must not stall the loops (an
            # in-memory SQLite database exists in its own thread only).
            if in_memory:
                ctl.maintain(now)
            else:
                await asyncio.to_thread(ctl.maintain, now)

        loops: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._every(lambda: t().s3, poll)),
            asyncio.ensure_future(self._every(lambda: t().s1, step)),
            asyncio.ensure_future(self._every(lambda: t().s3, step2)),
            asyncio.ensure_future(self._every(lambda: t().s3, approvals)),
            asyncio.ensure_future(
                self._every(lambda: ctl.cfg.storage.retention.interval_s, maintain)
            ),
            recovery,
        ]
        log.info(
            "controller started",
            extra={"users": len(ctl.cfg.users), "dry_run": ctl.dry_run, "manual": ctl.manual},
        )
        await until.wait()
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        under_way = [t for t in ctl.running.values() if not t.done()]
        if under_way and self.stop.is_set():
            # A clean stop lets plans end; a lost lease cancels them at once (the new
            # leader resumes them, and this process's writes are refused anyway).
            await asyncio.wait(under_way, timeout=self.grace_s)
        left = sum(not t.done() for t in under_way)
        for task in ctl.running.values():
            task.cancel()
        for task in under_way:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await ctl.ams.stop()
        return left

    def _recovery_done(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or self.ctl.on_plan_error is None:
            return
        exc = task.exception()
        if exc is not None:
            log.warning("recovery stopped by a storage error", extra={"error": str(exc)})
            self.ctl.on_plan_error(exc)

    async def _relay(self, ended: asyncio.Event) -> None:
        await self.stop.wait()
        ended.set()

    def _enders(
        self, ended: asyncio.Event, loop: asyncio.AbstractEventLoop
    ) -> tuple[Callable[[str], None], Callable[[BaseException], None]]:
        """How a term ends: the lease lost (from any thread: a fenced write in a worker
        thread), or a plan stopped by a storage error (the next term recovers it)."""
        lead = self.ctl.leadership
        assert lead is not None

        def end(why: str) -> None:
            lead.lose(why)
            loop.call_soon_threadsafe(ended.set)

        def plan_error(exc: BaseException) -> None:
            end(f"a plan stopped: {exc}")

        return end, plan_error

    async def _replica(self) -> int:
        """Follow until the lease is ours, lead one term per epoch, follow again when it
        is lost; until stopped. Returns the plans left under way by the last term."""
        ctl = self.ctl
        lead = ctl.leadership
        assert lead is not None, "ha.enabled needs Controller.leadership (run_forever)"
        loop = asyncio.get_running_loop()
        left = 0
        while not self.stop.is_set():
            if not await lead.campaign():
                await lead.follow()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), ctl.cfg.ha.renew_every())
                continue
            ended = asyncio.Event()

            end, plan_error = self._enders(ended, loop)
            lead.fence.on_lost = end
            ctl.on_plan_error = plan_error
            keeper = asyncio.ensure_future(lead.keep(end))
            relay = asyncio.ensure_future(self._relay(ended))
            ctl.new_term()
            try:
                left = await self._term(ended)
            except (SQLAlchemyError, NotLeader) as exc:
                # The state could not be read at the start of the term: nothing ran yet.
                lead.lose(f"the term could not start: {exc}")
            for task in (keeper, relay):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            ctl.on_plan_error = None
            lead.fence.on_lost = None
            if self.stop.is_set() and lead.leading():
                await lead.release()
            lead.step_down()
            ctl.new_term()
            with contextlib.suppress(TimeoutError):  # others get a chance first
                await asyncio.wait_for(self.stop.wait(), ctl.cfg.ha.renew_every())
        return left
