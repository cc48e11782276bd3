"""Plans and actions (OpenStack Watcher style): validate / execute / revert, crash-safe.

A plan is stored ``recommended`` with its actions ``pending`` before anything
happens. Running it: plan ``approved -> ongoing``; for each action, what
revert needs (``undo``) is stored with ``pending -> ongoing`` *before* the
driver is called, then ``succeeded`` or ``failed``. When an action fails the
plan is ``failed`` and the failed action and the earlier succeeded ones are
reverted, newest first. After a crash, :meth:`Executor.recover` re-runs every
``ongoing`` plan: succeeded actions are skipped, the ongoing one is executed
again, which drivers make idempotent (same priorities, same migration job id; a
migration already done or an entry switch already registered is not redone),
so nothing is lost and nothing runs twice.

Replicas: a new leader takes over through the same recovery, and ``Context.fence``
(set on a replica) is checked right before each action touches the world; the
store refuses the transitions of a replica whose lease ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pacao.clock import Clock
from pacao.controller.drivers.base import DriverError, FenceCheck, HypervisorDriver, MappingDriver
from pacao.controller.lifecycle import ActionState, PlanState
from pacao.controller.storage import Store
from pacao.errors import InputError

log = logging.getLogger("pacao.controller.plans")
P, A = PlanState, ActionState


@dataclass
class Context:
    mapping: MappingDriver
    hypervisor: HypervisorDriver
    clock: Clock
    poll_s: float = 0.5
    migration_timeout_s: float = 3600.0
    #: raises unless this replica still leads (None: a single controller)
    fence: FenceCheck | None = None

    async def check(self) -> None:
        if self.fence is not None:
            await self.fence()


#: Set in an action's parameters (in memory only) when a restart or a new leader resumes
#: it: an entry switch already registered is then not registered again.
RESUMED = "_resumed"


class Action(Protocol):
    kind: str

    async def validate(self, ctx: Context, params: dict[str, Any]) -> None: ...

    async def prepare(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        """What revert will need, read before execute and stored with the action."""
        ...

    async def execute(self, ctx: Context, params: dict[str, Any]) -> None: ...

    async def revert(self, ctx: Context, params: dict[str, Any], undo: dict[str, Any]) -> None: ...


class EntrySwitch:
    """Re-register the VM EID with new RLOC priorities; SMR/CHANGE-PRIORITY the user's xTR."""

    kind = "EntrySwitch"

    async def validate(self, ctx: Context, params: dict[str, Any]) -> None:
        prio = params["priorities"]
        if prio.get(params["rloc"]) != 1:
            raise DriverError(f"chosen RLOC {params['rloc']} does not get priority 1")

    async def prepare(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        return {"priorities": await ctx.mapping.get_priorities(params["vm_eid"])}

    async def execute(self, ctx: Context, params: dict[str, Any]) -> None:
        if params.get(RESUMED) and await ctx.mapping.get_priorities(params["vm_eid"]) == dict(
            params["priorities"]
        ):
            return  # registered before the crash (or by a leader whose lease ended)
        await ctx.check()
        await ctx.mapping.set_priorities(
            params["vm_eid"], dict(params["priorities"]), list(params["notify"])
        )

    async def revert(self, ctx: Context, params: dict[str, Any], undo: dict[str, Any]) -> None:
        if undo.get("priorities"):
            await ctx.check()
            await ctx.mapping.set_priorities(
                params["vm_eid"], dict(undo["priorities"]), list(params["notify"])
            )


class VmMigration:
    """Live-migrate a VM (job id = action id, so a re-run attaches to the same job)."""

    kind = "VmMigration"

    async def validate(self, ctx: Context, params: dict[str, Any]) -> None:
        st = await ctx.hypervisor.status(params["vm"])
        if st.dc not in (params["src"], params["dst"]):
            raise DriverError(f"VM {params['vm']} is at {st.dc}, not at {params['src']}")

    async def prepare(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        st = await ctx.hypervisor.status(params["vm"])
        return {"dc": st.dc, "running": st.running}

    async def execute(self, ctx: Context, params: dict[str, Any]) -> None:
        vm, dst = params["vm"], params["dst"]
        st = await ctx.hypervisor.status(vm)
        if st.dc == dst and st.running:
            return  # done already (a re-run after a crash)
        await ctx.check()
        await ctx.hypervisor.start_migration(
            vm, dst, params["job_id"], params["bandwidth_mbps"], params["max_downtime_ms"]
        )
        deadline = ctx.clock.now() + ctx.migration_timeout_s
        while True:
            job = await ctx.hypervisor.job(vm)
            if job.state == "completed" or (
                job.state == "none" and (await ctx.hypervisor.status(vm)).dc == dst
            ):
                return
            if job.state == "failed":
                raise DriverError(f"migration of {vm} failed: {job.error}")
            if ctx.clock.now() > deadline:
                raise DriverError(f"migration of {vm} timed out")
            await ctx.clock.sleep(ctx.poll_s)

    async def revert(self, ctx: Context, params: dict[str, Any], undo: dict[str, Any]) -> None:
        vm = params["vm"]
        await ctx.check()
        await ctx.hypervisor.abort(vm)
        st = await ctx.hypervisor.status(vm)
        if st.dc == params["dst"] and st.running:
            # The migration completed but a later action failed: the VM works where it is;
            # moving it back would be a second migration, so it stays and the state says so.
            return
        if not st.running:
            await ctx.hypervisor.resume(vm)


ACTIONS: dict[str, Action] = {a.kind: a for a in (EntrySwitch(), VmMigration())}


#: Called with (phase, plan, action): ``starting`` just before an action executes (the
#: hook may wait, e.g. a notified application's grace period), ``succeeded``, ``failed``.
ActionHook = Callable[[str, dict[str, Any], dict[str, Any]], Awaitable[None]]


class Executor:
    def __init__(
        self,
        store: Store,
        ctx: Context,
        on_done: Callable[[dict[str, Any], PlanState], None] | None = None,
    ) -> None:
        self.store, self.ctx = store, ctx
        self.on_done = on_done  # called with (plan, final state)
        self.migration_seconds: list[float] = []
        self.hooks: list[ActionHook] = []

    async def _hook(self, phase: str, plan: dict[str, Any], action: dict[str, Any]) -> None:
        for h in self.hooks:
            try:
                await h(phase, plan, action)
            except Exception:
                log.exception("action hook failed", extra={"plan": plan["id"], "phase": phase})

    async def run_plan(self, pid: str) -> str:
        """Run an approved (or resume an ongoing) plan; returns its final state."""
        plan = self.store.plan(pid)
        if plan is None:
            raise KeyError(pid)
        if plan["state"] == P.APPROVED:
            if not self.store.move_plan(pid, P.APPROVED, P.ONGOING):
                return str((self.store.plan(pid) or {}).get("state"))
        elif plan["state"] != P.ONGOING:
            return str(plan["state"])
        done: list[dict[str, Any]] = []
        for a in plan["actions"]:
            if a["state"] == A.SUCCEEDED:
                done.append(a)
                continue
            impl = ACTIONS[a["kind"]]
            params = dict(a["params"])
            undo = a["undo"] or {}
            started = a["state"] == A.ONGOING  # resumed after a crash
            try:
                if a["state"] == A.PENDING:
                    await impl.validate(self.ctx, params)
                    undo = await impl.prepare(self.ctx, params)
                    self.store.move_action(a["id"], A.PENDING, A.ONGOING, undo=undo)
                    started = True
                    await self._hook("starting", plan, {**a, "undo": undo})
                elif started:
                    self.store.resume_action(a["id"])
                    params[RESUMED] = True
                else:
                    raise DriverError(f"action {a['id']} is {a['state']}")
                t0 = time.monotonic()
                await impl.execute(self.ctx, params)
                if a["kind"] == "VmMigration":
                    self.migration_seconds.append(time.monotonic() - t0)
            except DriverError as exc:
                log.warning("action failed: %s", exc, extra={"plan": pid, "action": a["id"]})
                if not started:
                    # Failed validation: nothing was done to the world.
                    self.store.move_action(a["id"], A.PENDING, A.SKIPPED, error=str(exc))
                else:
                    self.store.move_action(a["id"], A.ONGOING, A.FAILED, error=str(exc))
                    await self._hook(A.FAILED, plan, {**a, "undo": undo, "error": str(exc)})
                    await self._revert(impl, params, undo, a["id"], A.FAILED)
                for d in reversed(done):
                    await self._revert(
                        ACTIONS[d["kind"]], dict(d["params"]), d["undo"] or {}, d["id"], A.SUCCEEDED
                    )
                for rest in plan["actions"][a["seq"] + 1 :]:
                    self.store.move_action(rest["id"], A.PENDING, A.SKIPPED, error="plan failed")
                self.store.move_plan(pid, P.ONGOING, P.FAILED, f"{a['kind']}: {exc}")
                self._finish(pid, P.FAILED)
                return P.FAILED
            self.store.move_action(a["id"], A.ONGOING, A.SUCCEEDED)
            a = {**a, "state": A.SUCCEEDED, "undo": undo}
            done.append(a)
            await self._hook(A.SUCCEEDED, plan, a)
        # What the plan did to the per-user state is stored first: a crash (or a lost
        # lease) between the two leaves the plan ongoing, and its resumption stores both.
        self._finish(pid, P.SUCCEEDED)
        self.store.move_plan(pid, P.ONGOING, P.SUCCEEDED)
        return P.SUCCEEDED

    async def _revert(
        self,
        impl: Action,
        params: dict[str, Any],
        undo: dict[str, Any],
        aid: str,
        frm: ActionState,
    ) -> None:
        try:
            await impl.revert(self.ctx, params, undo)
        except DriverError as exc:
            log.error("revert failed: %s", exc, extra={"action": aid})
            return
        self.store.move_action(aid, frm, A.REVERTED)

    def _finish(self, pid: str, state: PlanState) -> None:
        if self.on_done is not None:
            plan = self.store.plan(pid)
            assert plan is not None
            self.on_done(plan, state)

    def recoverable(self, auto: bool) -> list[str]:
        """The plans a restart takes up, oldest first: ongoing ones, approved ones and, in
        auto mode, recommended ones whose approval the crash interrupted (approved here)."""
        ids = [p["id"] for p in reversed(self.store.plans(state=P.ONGOING, limit=None))]
        ids += [p["id"] for p in reversed(self.store.plans(state=P.APPROVED, limit=None))]
        if auto:
            for p in reversed(self.store.plans(state=P.RECOMMENDED, limit=None)):
                if p["dry_run"]:
                    continue
                try:
                    self.store.approve(p["id"], by="auto")
                except InputError:
                    continue  # superseded or approved by a decision made meanwhile
                ids.append(p["id"])
        return ids

    async def recover(self, auto: bool) -> list[str]:
        """After a restart, run the recoverable plans one after the other."""
        ids = self.recoverable(auto)
        for pid in ids:
            await self.run_plan(pid)
        return ids
