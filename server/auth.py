"""Request guards: Origin checks against cross-site requests, the optional bearer token, CORS,
security headers, and the error middleware that keeps tracebacks out of HTTP bodies.

Policy (decided here, documented for users in the module):
- A state-changing request (POST/PUT/PATCH/DELETE) or a websocket upgrade that carries an
  `Origin` header is refused with 403 unless that origin's host:port equals the request's
  `Host`, or `--enable-cors-header ORIGIN` names it ("*" allows any). `Origin: null` (sandboxed
  frames, file:// pages) never matches a host. Requests without `Origin` (curl, Python API
  clients) are not cross-site browser requests and pass. This stops a web page the user visits
  from queueing prompts or reading the websocket of a local server (DNS rebinding included,
  because the Host must match too).
- With `--auth-token TOKEN` every request needs `Authorization: Bearer TOKEN`, or `?token=TOKEN`
  on a GET (websockets and image URLs cannot set headers); else 401. CORS preflights pass, and so
  do GET/HEAD requests for the front end's own files (`/`, the static bundle, custom packs' web
  extension scripts): they are the code the page runs, not data, and a browser importing
  `../../scripts/app.js` from an extension cannot attach a token.
- Every response carries `X-Content-Type-Options: nosniff`.
- An unexpected exception becomes a 500 JSON `{"error": {"type", "message"}}`; the traceback is
  logged, and included in the body only with `--verbose`.
"""
from __future__ import annotations

import hmac
import logging
import traceback
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from server.keys import SETTINGS, ServerSettings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return netloc.lower(), None
    return (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def origin_allowed(origin: str, host: str | None, scheme: str, cors_origin: str | None) -> bool:
    """True when a request from `origin` may change state on this server (see module docstring)."""
    if cors_origin is not None and (cors_origin == "*" or origin == cors_origin.rstrip("/")):
        return True
    if origin == "null" or not host:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _host_port(parts.netloc, parts.scheme) == _host_port(host, scheme)


def token_ok(request: web.Request, token: str) -> bool:
    """The bearer header, or `?token=` on GET requests, equals the configured token."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        return True
    given = request.query.get("token")
    return request.method == "GET" and given is not None and hmac.compare_digest(given.encode(), token.encode())


def _cors_headers(settings: ServerSettings, origin: str | None) -> dict[str, str]:
    if settings.cors_origin is None:
        return {}
    allow = settings.cors_origin if settings.cors_origin != "*" else (origin or "*")
    return {"Access-Control-Allow-Origin": allow,
            "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Authorization",
            "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}


def _public_file(request: web.Request) -> bool:
    """A GET/HEAD of the editor's page or of a static file (the bundle, extension scripts): no token needed."""
    if request.method not in ("GET", "HEAD"):
        return False
    resource = request.match_info.route.resource
    return isinstance(resource, web.StaticResource) or (resource is not None and resource.canonical == "/")


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Origin, token and CORS checks, then the handler; adds the security headers."""
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    cors = _cors_headers(settings, origin)
    if request.method == "OPTIONS" and cors:
        return web.Response(status=200, headers=cors)
    if origin is not None and (request.method in _UNSAFE_METHODS or _is_websocket(request)):
        if not origin_allowed(origin, request.host, request.scheme, settings.cors_origin):
            return web.json_response({"error": {"type": "forbidden_origin",
                                                "message": f"requests from origin {origin!r} are not allowed; "
                                                           "start Loom with --enable-cors-header ORIGIN to allow it"}},
                                     status=403, headers=cors)
    if settings.auth_token and not _public_file(request) and not token_ok(request, settings.auth_token):
        return web.json_response({"error": {"type": "unauthorized",
                                            "message": "missing or wrong token: send 'Authorization: Bearer TOKEN' "
                                                       "(or ?token=TOKEN on GET)"}},
                                 status=401, headers={"WWW-Authenticate": "Bearer", **cors})
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        for key, value in cors.items():
            response.headers.setdefault(key, value)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn unexpected exceptions into a JSON 500 without a traceback (unless --verbose)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("error handling %s %s", request.method, request.path)
        body: dict = {"error": {"type": "server_error", "message": f"{type(exc).__name__}: {exc}"}}
        if request.app[SETTINGS].verbose:
            body["error"]["traceback"] = traceback.format_exception(exc)
        return web.json_response(body, status=500)
