"""Small HTTP helpers shared by the route modules: bounded JSON bodies, error responses, and
`add_api_routes` (every route both bare and under `/api/`).

A malformed body (not JSON, not the expected type, larger than the limit) is the client's
error: 400 with a message saying what was wrong, never a 500 and never a traceback.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from aiohttp import web

from server.keys import SETTINGS


def error_response(status: int, kind: str, message: str, **extra: Any) -> web.Response:
    """`{"error": {"type", "message", ...}}` with the given status."""
    return web.json_response({"error": {"type": kind, "message": message, **extra}}, status=status)


class BadRequest(web.HTTPBadRequest):
    """400 with a JSON error body."""

    def __init__(self, message: str, kind: str = "bad_request") -> None:
        super().__init__(text=json.dumps({"error": {"type": kind, "message": message}}),
                         content_type="application/json")


async def read_json(request: web.Request, *, expect: type | tuple[type, ...] = dict,
                    allow_empty: bool = False) -> Any:
    """The request body parsed as JSON, bounded by the server's JSON size limit.
    Raises BadRequest (400) when it is too large, not JSON, or not of type `expect`."""
    limit = request.app[SETTINGS].max_json_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest(f"request body of {request.content_length} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is empty; expected JSON")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, expect):
        names = expect.__name__ if isinstance(expect, type) else "/".join(t.__name__ for t in expect)
        raise BadRequest(f"request body must be a JSON {'object' if expect is dict else names}, "
                         f"got {type(value).__name__}")
    return value


def int_query(request: web.Request, name: str, default: int | None, *, minimum: int | None = None) -> int | None:
    """An integer query parameter (400 when it is not one)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise BadRequest(f"query parameter {name!r} must be at least {minimum}, got {value}")
    return value


def add_api_routes(app: web.Application, routes: Iterable[Any]) -> None:
    """Add routes both bare and under `/api/`. Items are `(method, path, handler)` tuples or
    aiohttp `RouteDef`s (a `web.RouteTableDef`); static routes are added once, as given."""
    for route in routes:
        if isinstance(route, tuple):
            method, path, handler = route
            kwargs: dict[str, Any] = {}
        elif isinstance(route, web.RouteDef):
            method, path, handler, kwargs = route.method, route.path, route.handler, dict(route.kwargs)
        else:
            app.router.add_routes([route])
            continue
        app.router.add_route(method, path, handler, **kwargs)
        app.router.add_route(method, "/api" + path, handler, **kwargs)
