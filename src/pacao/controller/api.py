"""Northbound REST API (FastAPI): topology, measurements, plans, approvals, /metrics.

Every route but the probes (/healthz, /livez, /readyz) and the OpenAPI document
needs ``Authorization: Bearer <token>``; without it the answer is 401. (No ``from
__future__ import annotations`` here: FastAPI must evaluate the dependency annotations, which
name local objects.)
"""

import secrets
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from pacao.controller.lifecycle import PlanState, state_names
from pacao.errors import InputError

if TYPE_CHECKING:
    from pacao.controller.service import Controller

#: where /docs takes Swagger UI's files from (shipped by the swagger-ui-bundle package)
DOCS_STATIC = "/docs/static"


def _local_docs(app: FastAPI) -> None:
    """Swagger UI at /docs with its JavaScript and CSS served by this process, so the
    page works on a management network without Internet access."""
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    app.mount(DOCS_STATIC, StaticFiles(directory=str(swagger_ui_path)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon-32x32.png",
        )


def _state(ctl: "Controller", user: str) -> dict[str, Any] | None:
    st = ctl.state.get(user)
    return None if st is None else st.to_json()


def create_app(ctl: "Controller", token: str) -> FastAPI:
    app = FastAPI(
        title="pacao controller",
        version="1",
        description="PACAO controller: topology, measurements, plans and approvals.",
        docs_url=None,  # served below from local files: FastAPI's default loads a CDN
        redoc_url=None,
    )
    _local_docs(app)
    bearer = HTTPBearer(auto_error=False)

    def auth(
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        # The controller's current token (a config reload may change it).
        want = ctl.api_token or token
        if cred is None or not secrets.compare_digest(cred.credentials.encode(), want.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    guarded = [Depends(auth)]
    #: what a follower still does itself: re-read its own config file
    local_writes = frozenset({"/config/reload"})

    @app.middleware("http")
    async def followers_refuse_writes(request: Request, call_next: Any) -> Any:
        """A replica that does not lead answers reads; a write gets 503 naming the leader
        (header X-Pacao-Leader: its API), never a half-done change."""
        lead = ctl.leadership
        if (
            lead is not None
            and request.method not in ("GET", "HEAD", "OPTIONS")
            and request.url.path not in local_writes
            and not lead.leading()
        ):
            info = lead.info()
            where = (
                f"the leader {info['leader']} at {info['leader_api']}"
                if info["leader"]
                else "no replica leads right now; retry in a few seconds"
            )
            return JSONResponse(
                status_code=503,
                content={"detail": f"this replica follows: send writes to {where}", **info},
                headers={"X-Pacao-Leader": info["leader_api"] or "", "Retry-After": "1"},
            )
        return await call_next(request)

    def health() -> dict[str, Any]:
        recovering = ctl.in_recovery
        doc: dict[str, Any] = {
            "status": "recovering" if recovering else "ok",
            "recovering_plans": sorted(ctl.recovering),
        }
        lead = ctl.leadership
        if lead is not None:
            doc.update(lead.info())
        return doc

    @app.get("/healthz", summary="Process answers; says 'recovering' while plans resume")
    def healthz() -> dict[str, Any]:
        return health()

    @app.get("/livez", summary="Liveness probe: 200 whenever the event loop answers")
    def livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", summary="Readiness probe: 503 while plans under way are resumed")
    def readyz(response: Response) -> dict[str, Any]:
        doc = health()
        if doc["status"] != "ok":
            response.status_code = 503
        return doc

    @app.get("/topology", dependencies=guarded, summary="DCs, VMs and users with current state")
    def topology() -> dict[str, Any]:
        cfg = ctl.cfg
        return {
            "dcs": [d.model_dump(mode="json") for d in cfg.dcs],
            "vms": [v.model_dump(mode="json") for v in cfg.vms],
            "users": [
                {**u.model_dump(mode="json"), "state": _state(ctl, u.name)} for u in cfg.users
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

    @app.get("/history", dependencies=guarded, summary="Down-sampled measurements, oldest first")
    def history(
        subject: str | None = None,
        path: Annotated[str | None, Query(pattern="^(user-xtr|xtr-vm)$")] = None,
        since: float | None = None,
        until: float | None = None,
        step_s: Annotated[float | None, Query(gt=0)] = None,
        limit: Annotated[int, Query(ge=1, le=100000)] = 10000,
    ) -> list[dict[str, Any]]:
        from pacao.controller.retention import query

        return query(ctl.store, subject, path, since, until, step_s, limit)

    @app.get("/plans", dependencies=guarded, summary="Stored plans, newest first")
    def plans(
        state: str | None = None,
        user: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]]:
        if state is not None and state not in state_names(PlanState):
            raise HTTPException(422, f"state must be one of {state_names(PlanState)}")
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
        return {"id": pid, "state": PlanState.APPROVED.value}

    @app.post("/plans/{pid}/reject", dependencies=guarded, summary="Skip a recommended plan")
    def reject(pid: str) -> dict[str, Any]:
        if ctl.store.plan(pid) is None:
            raise HTTPException(404, "no such plan")
        if not ctl.store.move_plan(
            pid, PlanState.RECOMMENDED, PlanState.SKIPPED, "rejected through the API"
        ):
            raise HTTPException(409, "only a recommended plan can be rejected")
        return {"id": pid, "state": PlanState.SKIPPED.value}

    @app.post(
        "/config/reload",
        dependencies=guarded,
        summary="Re-read the config file (as SIGHUP); a bad one is refused, the old one kept",
    )
    def reload_config() -> dict[str, Any]:
        try:
            changed: list[str] = ctl.reload()
        except InputError as exc:
            raise HTTPException(422, f"refused, the running config is kept: {exc}") from None
        return {"status": "reloaded", "changed": changed}

    @app.get("/metrics", dependencies=guarded, summary="Prometheus metrics")
    def metrics() -> Response:
        ctl.metrics.set_plans(ctl.store.plan_counts())
        return Response(ctl.metrics.render(), media_type="text/plain; version=0.0.4")

    from pacao.controller.ams_api import ams_router
    from pacao.controller.web import web_router

    app.include_router(ams_router(ctl, guarded))
    app.include_router(web_router(ctl, guarded))
    return app
