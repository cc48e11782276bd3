"""The replay's own HTTP app: the web view's routes over a :class:`ReplayView`, behind
the same bearer token check as the controller API.

(No ``from __future__ import annotations``: FastAPI evaluates the annotations.)
"""

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pacao.controller.web import _json, web_routes


def add_replay_routes(r: APIRouter, view: Any, guarded: list[Any]) -> None:
    @r.get("/ui/api/replay/frames/{k}", dependencies=guarded, summary="One replay frame")
    def frame(k: int, since: Annotated[int | None, Query(ge=0)] = None) -> Response:
        n = view.r.frames
        if not 0 <= k < n or (since is not None and since >= n):
            raise HTTPException(404, f"frames are 0..{n - 1}")
        return Response(_json(view.frame(k, since)), media_type="application/json")


def replay_app(view: Any, token: str) -> FastAPI:
    app = FastAPI(title="pacao replay", version="1")
    bearer = HTTPBearer(auto_error=False)

    def auth(
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if cred is None or not secrets.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.include_router(web_routes(view, [Depends(auth)]))
    return app
