"""The live web view (docs/webview.md): a static page under /ui and its data routes.

The page itself (HTML, JS, CSS, shipped as package data; nothing from the
internet) holds no data; every data route needs the API's bearer token, which
the page asks for and sends with each request. Updates stream as server-sent
events over one ``fetch`` (EventSource cannot send an Authorization header).
(No ``from __future__ import annotations``: FastAPI evaluates the annotations.)
"""

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from pacao.controller.web.view import LiveView, View, diff

if TYPE_CHECKING:
    from pacao.controller.service import Controller

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
TICK_S = 0.5
#: The page loads nothing but its own assets and talks to nothing but this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def asset(name: str) -> bytes:
    return resources.files("pacao.controller.web").joinpath("static", name).read_bytes()


def _json(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str, allow_nan=False)


async def event_stream(
    view: View, request: Request | None, tick_s: float = TICK_S
) -> AsyncIterator[bytes]:
    """``snapshot`` once, then ``update`` with what changed; a comment as keep-alive."""
    snap = view.snapshot()
    yield f"event: snapshot\ndata: {_json(snap)}\n\n".encode()
    prev = {k: snap[k] for k in view.tick()}
    quiet = 0
    while True:
        await asyncio.sleep(tick_s)
        if request is not None and await request.is_disconnected():
            return
        cur = view.tick()
        d = diff(prev, cur)
        prev = cur
        if d is not None:
            quiet = 0
            yield f"event: update\ndata: {_json(d)}\n\n".encode()
        else:
            quiet += 1
            if quiet * tick_s >= 10:
                quiet = 0
                yield b": keep-alive\n\n"


def web_routes(view: View, guarded: list[Any], approvals: Any = None) -> APIRouter:
    """The page, its assets and its data routes over any :class:`View`."""
    r = APIRouter(tags=["web view"])

    @r.get("/ui", include_in_schema=False)
    def ui_redirect() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @r.get("/ui/", include_in_schema=False)
    def ui_index() -> Response:
        return Response(
            asset("index.html"), media_type=ASSETS["index.html"], headers=SECURITY_HEADERS
        )

    @r.get("/ui/static/{name}", include_in_schema=False)
    def ui_asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, "no such asset")
        return Response(asset(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})

    @r.get("/ui/api/snapshot", dependencies=guarded, summary="Everything the web view shows")
    def ui_snapshot() -> Response:
        return Response(_json(view.snapshot()), media_type="application/json")

    @r.get("/ui/api/events", dependencies=guarded, summary="Server-sent events of the web view")
    def ui_events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            event_stream(view, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @r.get("/ui/api/users/{name}", dependencies=guarded, summary="One user's detail")
    def ui_user(name: str, frame: Annotated[int | None, Query(ge=0)] = None) -> Response:
        doc = view.user_detail(name, frame)
        if doc is None:
            raise HTTPException(404, "no such user")
        return Response(_json(doc), media_type="application/json")

    extra = getattr(view, "routes", None)
    if extra is not None:
        extra(r, guarded)
    return r


def web_router(ctl: "Controller", guarded: list[Any]) -> APIRouter:
    """The web view of a running controller (approvals go through /plans/{id}/approve)."""
    return web_routes(LiveView(ctl), guarded)
