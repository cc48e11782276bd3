"""Northbound REST API (FastAPI): topology, measurements, plans, approvals, /metrics.

Every route but /healthz and the OpenAPI document needs ``Authorization:
Bearer <token>``; without it the answer is 401. (No ``from __future__ import
annotations`` here: FastAPI must evaluate the dependency annotations, which
name local objects.)
"""

import secrets
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pacao.controller.storage import PLAN_STATES
from pacao.errors import InputError


def create_app(ctl: Any, token: str) -> FastAPI:
    app = FastAPI(
        title="pacao controller",
        version="1",
        description="PACAO controller: topology, measurements, plans and approvals.",
    )
    bearer = HTTPBearer(auto_error=False)

    def auth(
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if cred is None or not secrets.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    guarded = [Depends(auth)]

    @app.get("/healthz", summary="Liveness (no token needed)")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/topology", dependencies=guarded, summary="DCs, VMs and users with current state")
    def topology() -> dict[str, Any]:
        cfg = ctl.cfg
        return {
            "dcs": [d.model_dump(mode="json") for d in cfg.dcs],
            "vms": [v.model_dump(mode="json") for v in cfg.vms],
            "users": [
                {**u.model_dump(mode="json"), "state": ctl.state.get(u.name)} for u in cfg.users
            ],
            "timers": cfg.timers.model_dump(),
        }

    @app.get("/measurements", dependencies=guarded, summary="Newest probe samples and windows")
    def measurements(
        subject: str | None = None,
        kind: Annotated[str | None, Query(pattern="^(sample|window)$")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = ctl.store.measurements(subject=subject, kind=kind, limit=limit)
        return rows

    @app.get("/plans", dependencies=guarded, summary="Stored plans, newest first")
    def plans(
        state: str | None = None,
        user: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]]:
        if state is not None and state not in PLAN_STATES:
            raise HTTPException(422, f"state must be one of {list(PLAN_STATES)}")
        rows: list[dict[str, Any]] = ctl.store.plans(state=state, user=user, limit=limit)
        return rows

    @app.get("/plans/{pid}", dependencies=guarded, summary="One plan with its transitions")
    def plan(pid: str) -> dict[str, Any]:
        p: dict[str, Any] | None = ctl.store.plan(pid)
        if p is None:
            raise HTTPException(404, "no such plan")
        p["transitions"] = ctl.store.transitions(pid)
        return p

    @app.post("/plans/{pid}/approve", dependencies=guarded, summary="Approve a recommended plan")
    async def approve(pid: str) -> dict[str, Any]:
        try:
            ctl.store.approve(pid, by="api")
        except InputError as exc:
            code = 404 if "no such plan" in str(exc) else 409
            raise HTTPException(code, str(exc)) from None
        if not ctl.dry_run:
            ctl.start(pid)
        return {"id": pid, "state": "approved"}

    @app.post("/plans/{pid}/reject", dependencies=guarded, summary="Skip a recommended plan")
    def reject(pid: str) -> dict[str, Any]:
        if ctl.store.plan(pid) is None:
            raise HTTPException(404, "no such plan")
        if not ctl.store.move_plan(pid, "recommended", "skipped", "rejected through the API"):
            raise HTTPException(409, "only a recommended plan can be rejected")
        return {"id": pid, "state": "skipped"}

    @app.get("/metrics", dependencies=guarded, summary="Prometheus metrics")
    def metrics() -> Response:
        ctl.metrics.set_plans(ctl.store.plan_counts())
        return Response(ctl.metrics.render(), media_type="text/plain; version=0.0.4")

    from pacao.controller.ams_api import ams_router
    from pacao.controller.web import web_router

    app.include_router(ams_router(ctl, guarded))
    app.include_router(web_router(ctl, guarded))
    return app
