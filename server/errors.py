"""aiohttp's own error answers in Loom's JSON error shape.

Owns: `json_errors_middleware`. aiohttp answers some requests itself with a plain-text body
before or instead of a Loom handler: 404 for a URL no route or static file serves, 405 for a
method a route does not take, 413 for a body over `--max-upload-size`, and the like (the static
file handler's 403/404 too). Each becomes `{"error": {"type", "message"}}` with the same status,
as Loom's own errors are, keeping headers such as `Allow`; the message is Loom's own and never
holds a server path. Errors a Loom handler already gave a JSON body keep it (returned rather than
raised, so the security middleware adds its headers to them too).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from server.http import json_response, scrub_paths

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def _kind(reason: str) -> str:
    """`Request Entity Too Large` -> `request_entity_too_large`."""
    return re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "http_error"


def _message(request: web.Request, exc: web.HTTPException) -> tuple[str, str]:
    """(type, message) for one of aiohttp's answers."""
    status = exc.status
    if status == 404:
        return "not_found", f"nothing is served at this URL for {request.method} (no such route or file)"
    if status == 405:
        allowed = exc.headers.get("Allow", "")
        return "method_not_allowed", (f"method {request.method} is not allowed on this URL"
                                      + (f"; allowed: {allowed}" if allowed else ""))
    detail = scrub_paths(re.sub(r"^\d{3}: ", "", exc.text or "").strip()[:500])
    if status == 413:
        return "too_large", ("the request body is too large for this server (start Loom with a larger "
                             f"--max-upload-size, in MB, to allow it){': ' + detail if detail else ''}")
    return _kind(exc.reason or "error"), detail or exc.reason or "error"


def _is_json(response: web.StreamResponse) -> bool:
    return response.content_type == "application/json"


def json_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """The JSON answer in place of aiohttp's plain-text `exc`."""
    kind, message = _message(request, exc)
    headers = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
    return json_response({"error": {"type": kind, "message": message}}, status=exc.status, headers=headers)


@web.middleware
async def json_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give aiohttp's plain-text 4xx/5xx answers (raised or returned) Loom's JSON error body."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if _is_json(exc):  # Loom's own (BadRequest...): returned, so the outer middleware adds its headers
            return web.Response(body=exc.body, status=exc.status, reason=exc.reason, headers=exc.headers)
        return json_error(request, exc)
    if isinstance(response, web.HTTPException) and response.status >= 400 and not _is_json(response):
        return json_error(request, response)
    if isinstance(response, web.FileResponse) and not _serves_a_file(response):
        # aiohttp's static handler answers a missing file with an empty 404 only when it sends it
        return json_error(request, web.HTTPNotFound())
    return response


def _serves_a_file(response: web.FileResponse) -> bool:
    path = getattr(response, "_path", None)
    try:
        return path is None or Path(path).is_file()
    except OSError:
        return False
