"""Request guards: the Host check against DNS rebinding, Origin checks against cross-site
requests, the optional bearer token, CORS, security headers, and the error middleware that keeps
tracebacks out of HTTP bodies.

Exactly what is checked, in this order, on every request (HTTP and websocket upgrade alike):
1. Host (DNS rebinding). The `Host` header's name must be a loopback name (`localhost` or a
   name ending in `.localhost`), a loopback address (127.0.0.0/8, `::1`), the address this
   connection arrived on (the socket's local address, so `--listen 0.0.0.0` answers on the
   machine's LAN address), a `--listen` address or name, or a name in `--allowed-hosts`
   ("*" allows any Host). Otherwise 403 `forbidden_host`, naming the flag that allows it. A
   request without a `Host` header (HTTP/1.0 clients) passes this step.
2. Origin (cross-site pages). Any request that carries an `Origin` header, whatever its method,
   and every websocket upgrade that carries one, is refused with 403 `forbidden_origin` unless
   the origin's scheme is http/https and its host:port equals the request's `Host`, or
   `--enable-cors-header ORIGIN` names it ("*" allows any origin). `Origin: null` (sandboxed
   frames, file:// pages, redirects) matches no host. Requests without `Origin` (curl, Python
   API clients, same-origin GETs of the editor) pass.
3. Token. With `--auth-token TOKEN` every request needs `Authorization: Bearer TOKEN`, or
   `?token=TOKEN` on a GET (websockets and image URLs cannot set headers); else 401. CORS
   preflights of an allowed origin pass, and so do GET/HEAD requests for the front end's own
   files (`/`, the static bundle, custom packs' web extension scripts): they are the code the
   page runs, not data, and a browser importing `../../scripts/app.js` from an extension cannot
   attach a token.
Every response carries `X-Content-Type-Options: nosniff`. An unexpected exception becomes a 500
JSON `{"error": {"type", "message"}}` whose message has absolute server paths cut to their
last part (`scrub_paths`); the traceback is logged, and included in the body only with `--verbose`.
The token is never logged and never echoed in a response.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import traceback
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from server.http import json_response, scrub_paths
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


def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _normal_host(name: str) -> str:
    """A host name as compared here: lower case, no brackets, no trailing dot, IPv4-mapped IPv6 unwrapped."""
    name = name.strip().lower().strip("[]").rstrip(".")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def host_allowed(host_header: str | None, settings: ServerSettings, local_address: str | None) -> bool:
    """True when a request naming `host_header` may be served (step 1 of the module docstring)."""
    if host_header is None:
        return True
    name = _normal_host(_host_port(host_header, "http")[0])
    if not name:
        return False
    if _is_loopback(name) or "*" in settings.allowed_hosts:
        return True
    allowed = {_normal_host(h) for h in settings.allowed_hosts}
    allowed.update(_normal_host(h) for h in settings.host.split(",") if h)
    if local_address:
        allowed.add(_normal_host(local_address.split("%")[0]))
    return name in allowed - {"0.0.0.0", "::", ""}


def _local_address(request: web.Request) -> str | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return sockname[0] if isinstance(sockname, tuple) and sockname and isinstance(sockname[0], str) else None


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


def _shown(value: str | None) -> str:
    """A header value quoted for an error message, bounded in length."""
    text = repr(value or "")
    return text if len(text) <= 200 else text[:200] + "...'"


def _refuse(kind: str, message: str, cors: dict[str, str]) -> web.Response:
    return json_response({"error": {"type": kind, "message": message}}, status=403, headers=cors)


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Origin, token and CORS checks, then the handler; adds the security headers."""
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    cors = _cors_headers(settings, origin)
    host_header = request.headers.get("Host")
    if not host_allowed(host_header, settings, _local_address(request)):
        return _refuse("forbidden_host", f"requests for host {_shown(host_header)} are not allowed (DNS rebinding "
                                         "protection); start Loom with --allowed-hosts HOST to allow it", cors)
    if origin is not None and not origin_allowed(origin, request.host, request.scheme, settings.cors_origin):
        return _refuse("forbidden_origin", f"requests from origin {_shown(origin)} are not allowed; "
                                           "start Loom with --enable-cors-header ORIGIN to allow it", cors)
    if request.method == "OPTIONS" and cors:
        return web.Response(status=200, headers=cors)
    if settings.auth_token and not _public_file(request) and not token_ok(request, settings.auth_token):
        return json_response({"error": {"type": "unauthorized",
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
        body: dict = {"error": {"type": "server_error",
                                "message": scrub_paths(f"{type(exc).__name__}: {exc}"[:2000])}}
        if request.app[SETTINGS].verbose:
            body["error"]["traceback"] = traceback.format_exception(exc)
        return json_response(body, status=500)
