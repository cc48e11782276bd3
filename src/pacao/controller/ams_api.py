"""REST routes of the application mobility service under /amsi/v1 (docs/mec.md).

(No ``from __future__ import annotations``: FastAPI evaluates the annotations.)
"""

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request, Response

from pacao.controller.ams import BASE, AmsError

if TYPE_CHECKING:
    from pacao.controller.service import Controller


def ams_router(ctl: "Controller", guarded: list[Any]) -> APIRouter:
    r = APIRouter(prefix=BASE, dependencies=guarded, tags=["application mobility (MEC 021)"])

    def _base(request: Request) -> None:
        if not ctl.ams.base_url:
            ctl.ams.base_url = str(request.base_url).rstrip("/")

    @r.get("/app_mobility_services", summary="Registered application instances")
    def list_registrations() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = ctl.ams.registrations()
        return out

    @r.post("/app_mobility_services", status_code=201, summary="Register an app instance of a VM")
    def register(
        request: Request, response: Response, body: Annotated[Any, Body()]
    ) -> dict[str, Any]:
        _base(request)
        try:
            doc: dict[str, Any] = ctl.ams.register(body)
        except AmsError as exc:
            raise HTTPException(400, str(exc)) from None
        response.headers["Location"] = (
            f"{ctl.ams.base_url}{BASE}/app_mobility_services/{doc['appMobilityServiceId']}"
        )
        return doc

    @r.get("/app_mobility_services/{rid}", summary="One registration")
    def registration(rid: str) -> dict[str, Any]:
        doc: dict[str, Any] | None = ctl.ams.registration(rid)
        if doc is None:
            raise HTTPException(404, "no such registration")
        return doc

    @r.delete("/app_mobility_services/{rid}", status_code=204, summary="Deregister")
    def deregister(rid: str) -> Response:
        if not ctl.ams.deregister(rid):
            raise HTTPException(404, "no such registration")
        return Response(status_code=204)

    @r.get("/subscriptions", summary="Active subscriptions")
    def list_subscriptions() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = ctl.ams.subscriptions()
        return out

    @r.post("/subscriptions", status_code=201, summary="Subscribe a callback URI")
    def subscribe(
        request: Request, response: Response, body: Annotated[Any, Body()]
    ) -> dict[str, Any]:
        _base(request)
        try:
            doc: dict[str, Any] = ctl.ams.subscribe(body)
        except AmsError as exc:
            raise HTTPException(400, str(exc)) from None
        response.headers["Location"] = doc["_links"]["self"]["href"]
        return doc

    @r.get("/subscriptions/{sid}", summary="One subscription")
    def subscription(sid: str) -> dict[str, Any]:
        doc: dict[str, Any] | None = ctl.ams.subscription(sid)
        if doc is None:
            raise HTTPException(404, "no such subscription")
        return doc

    @r.delete("/subscriptions/{sid}", status_code=204, summary="Unsubscribe")
    def unsubscribe(sid: str) -> Response:
        if not ctl.ams.unsubscribe(sid):
            raise HTTPException(404, "no such subscription")
        return Response(status_code=204)

    @r.get("/subscriptions/{sid}/deliveries", summary="Stored notifications (pacao extension)")
    def deliveries(sid: str) -> list[dict[str, Any]]:
        if ctl.ams.subscription(sid) is None:
            raise HTTPException(404, "no such subscription")
        out: list[dict[str, Any]] = ctl.ams.deliveries(sid)
        return out

    return r
