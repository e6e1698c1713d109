"""Request guards: the Host and Origin checks against DNS rebinding and cross-site requests, the optional bearer
token, CORS, security headers, and the error middleware that keeps tracebacks out of HTTP bodies.

Exactly what is checked, in this order, for every request (HTTP and websocket upgrades alike):
1. `Host` (DNS rebinding: a page on attacker.example whose name resolves to 127.0.0.1): the request's Host
   name must be a loopback name (`localhost`, `*.localhost`), an IP address literal (a rebinding attack needs a
   domain name; a literal is what a user types to reach a LAN server), the name given to `--listen`, or a name in
   `--allowed-hosts` (`.example.org` also allows its subdomains, `*` any name). Else 403 `forbidden_host`, whose
   message says how to allow the name. A request without Host (HTTP/1.0) passes.
2. `Origin`, when present, on any method (GET included) and on websocket upgrades: it must be the request's own
   origin (scheme-default ports applied, host:port equal to the Host header), or the origin named by
   `--enable-cors-header ORIGIN` (`*` allows any). `Origin: null` (sandboxed frames, file:// pages) and any
   other origin get 403 `forbidden_origin`. Requests without Origin (curl, Python API clients, the browser's own
   same-origin navigation) pass. Same-origin use of Loom's editor and of ComfyUI's frontend passes both checks.
3. With `--auth-token TOKEN`, every request needs `Authorization: Bearer TOKEN`, or `?token=TOKEN` on a GET
   (websockets and image URLs cannot set headers); else 401. CORS preflights pass, and so do GET/HEAD requests
   for the front end's own files (`/`, the static bundle, custom packs' web extension scripts): they are the code
   the page runs, not data, and a browser importing `../../scripts/app.js` from an extension cannot attach a token.
Every response carries `X-Content-Type-Options: nosniff`. An unexpected exception becomes a 500 JSON
`{"error": {"type", "message"}}` naming only the exception's type; its text and traceback are logged, and
included in the body only with `--verbose`.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import traceback
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from server.keys import SETTINGS, ServerSettings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return netloc.lower(), None
    return (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def origin_allowed(origin: str, host: str | None, scheme: str, cors_origin: str | None) -> bool:
    """True when a request from `origin` may be served (see the module docstring, check 2)."""
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


def _host_name(host: str) -> str:
    """The name part of a Host header value, lower-case, without port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str | None, listen: str, allowed: tuple[str, ...]) -> bool:
    """True when a request for `host` may be served (see the module docstring, check 1)."""
    if not host:
        return True
    name = _host_name(host).rstrip(".")
    if name in ("localhost",) or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
        return True
    except ValueError:
        pass
    listened = {h.strip().lower() for h in listen.split(",") if h.strip()}
    if name in listened:
        return True
    for entry in allowed:
        if entry == "*" or entry == name or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


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


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Origin, token and CORS checks, then the handler; adds the security headers."""
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    cors = _cors_headers(settings, origin)
    if request.method == "OPTIONS" and cors:
        return web.Response(status=200, headers=cors)
    host = request.headers.get("Host")
    if not host_allowed(host, settings.host, settings.allowed_hosts):
        name = _host_name(host or "")
        return web.json_response({"error": {"type": "forbidden_host",
                                            "message": f"requests for host {name!r} are not served (a web page on a "
                                                       "domain that resolves to this machine could otherwise use "
                                                       f"it); start Loom with --allowed-hosts {name} to allow it"}},
                                 status=403)
    if origin is not None:
        if not origin_allowed(origin, host, request.scheme, settings.cors_origin):
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
        # The exception's text may hold server paths or other internals: only --verbose shows it to clients.
        body: dict = {"error": {"type": "server_error",
                                "message": f"internal error ({type(exc).__name__}); the server's log has the details"}}
        if request.app[SETTINGS].verbose:
            body["error"]["message"] = f"{type(exc).__name__}: {exc}"
            body["error"]["traceback"] = traceback.format_exception(exc)
        return web.json_response(body, status=500)
