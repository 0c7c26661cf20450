"""Admin authentication for HTTP: ``Authorization: Bearer TOKEN`` against ``[[admins]]``.

Used by the admin API and the dashboard. Failures are JSON errors naming the
problem: 401 without a valid token, 403 when a ``viewer`` asks to change
something. Browsers cannot set headers on a WebSocket, so a WebSocket may pass
the token as ``?token=`` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from .config import AdminSpec

if TYPE_CHECKING:
    from .app import Gateway


def json_error(status: int, code: str, message: str, **extra: object) -> web.HTTPException:
    """An aiohttp HTTP exception with a JSON body ``{"error": code, "message": ...}``."""
    cls = web.HTTPException
    for c in (web.HTTPBadRequest, web.HTTPUnauthorized, web.HTTPForbidden, web.HTTPNotFound,
              web.HTTPMethodNotAllowed, web.HTTPConflict, web.HTTPUnprocessableEntity,
              web.HTTPServiceUnavailable, web.HTTPInternalServerError):  # fmt: skip
        if c.status_code == status:
            cls = c
            break
    body = orjson.dumps({"error": code, "message": message, **extra})
    exc = cls(text=body.decode(), content_type="application/json")  # body= is deprecated for exceptions
    if status == 401:
        exc.headers["WWW-Authenticate"] = 'Bearer realm="telacd"'
    return exc


def admin(gw: Gateway, request: web.Request, *, write: bool = False, allow_query: bool = False) -> AdminSpec:
    """The admin making this request; raises 401/403 as JSON errors."""
    header = request.headers.get("Authorization", "")
    token = ""
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    elif allow_query:
        token = request.query.get("token", "")
    if not token:
        raise json_error(401, "unauthorized", "send Authorization: Bearer <token> (an [[admins]] token)")
    spec = gw.admins.get(token)
    if spec is None:
        raise json_error(401, "unauthorized", "unknown token")
    if write and spec.role != "admin":
        raise json_error(403, "forbidden", f"{spec.id} is a viewer and cannot change anything")
    return spec
