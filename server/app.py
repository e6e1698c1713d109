"""The aiohttp application: `create_app(runtime)` wires routes, middleware, the websocket hub,
the durable queue and the worker thread; `serve(runtime)` runs it (what `python main.py` calls).

Owns start-up and shutdown. State lives under `web.AppKey`s (server/keys.py); the worker
thread starts in a `cleanup_ctx` and stops there, websockets are closed on shutdown. Every
route is registered twice, bare and under `/api/` (ComfyUI's frontend uses the latter).

Hook points for custom-node support: `create_app(..., setup_hooks=[fn])` or a
`runtime.server_hooks` sequence — each `fn(app)` is called after Loom's routes are added and
before the static front-end, so it may add routes (`app.router`, or `add_api_routes(app,
route_table)` for bare + /api/); `app[HUB].send(event, data, client_id=None)` is the thread-safe
ComfyUI-style `send_sync`; `runtime.web_directories` ({pack: folder}) is served under
`/extensions/{pack}/` and listed by GET /extensions.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import sys
import threading
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Sequence

from aiohttp import web

from executor.queue import PromptQueue
from executor.worker import Worker
from server import files, routes_custom_nodes, routes_frontend, routes_info, routes_jobs, routes_prompt, routes_user
from server.auth import error_middleware, security_middleware
from server.comfy_frontend import COMFYUI_EXTENSIONS, MISSING_PAGE, web_root
from server.errors import json_errors_middleware
from server.http import add_api_routes
from server.keys import EXTENSION_DIRS, QUEUE, RUNTIME, SETTINGS, WEB_ROOT, WORKER, ServerSettings
from server.ws import HUB, WebSocketHub, websocket_handler

if TYPE_CHECKING:
    from runtime import Runtime

log = logging.getLogger(__name__)

QUEUE_FILE = "loom_queue.sqlite3"
ROUTE_MODULES = (routes_prompt, routes_jobs, routes_info, routes_user, files)
AppHook = Callable[[web.Application], None]


def _queue_path(runtime: Runtime) -> Path:
    return Path(runtime.folders.user_directory) / QUEUE_FILE


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Bind the hub to the loop and run the worker thread for the life of the app."""
    app[HUB].attach(asyncio.get_running_loop())
    app[WORKER].start()
    yield
    app[WORKER].stop()
    app[QUEUE].close()


async def _close_websockets(app: web.Application) -> None:
    await app[HUB].close_all()


def create_app(runtime: Runtime, *, settings: ServerSettings | None = None, queue: PromptQueue | None = None,
                setup_hooks: Sequence[AppHook] = ()) -> web.Application:
    """The application for `runtime` (`runtime.Runtime`); `settings` default to its Config's.
    The queue file is `<user dir>/loom_queue.sqlite3`."""
    settings = settings or ServerSettings.from_config(runtime.config)
    app = web.Application(middlewares=[security_middleware, json_errors_middleware, error_middleware],
                          client_max_size=settings.max_upload_bytes + (1 << 20))
    app[RUNTIME] = runtime
    app[SETTINGS] = settings
    if queue is None:
        queue = PromptQueue(_queue_path(runtime), max_history=settings.max_history)
    hub = WebSocketHub(lambda: routes_prompt.queue_info(queue))
    queue.on_change = hub.queue_changed
    app[QUEUE] = queue
    app[HUB] = hub
    # `runtime.worker_factory` (set by cluster/ under --ray-address) places prompts on other processes.
    make_worker = runtime.worker_factory
    app[WORKER] = make_worker(queue, hub.send_event) if make_worker is not None else Worker(
        queue, runtime.executor, hub.send_event, interrupt=runtime.interrupt, models=runtime.models,
        cache=runtime.cache)
    app[EXTENSION_DIRS] = dict(runtime.web_directories)
    if settings.front_end == "comfyui":
        app[EXTENSION_DIRS]["loom"] = COMFYUI_EXTENSIONS
    for module in ROUTE_MODULES:
        add_api_routes(app, module.ROUTES)
    add_api_routes(app, [("GET", "/ws", websocket_handler)])
    routes_custom_nodes.setup(app)
    routes_frontend.setup(app)
    app[routes_frontend.LOG_BUFFER_KEY].bind(hub.send)
    for hook in (*setup_hooks, *runtime.server_hooks):
        hook(app)
    for name, directory in app[EXTENSION_DIRS].items():
        app.router.add_static(f"/extensions/{name}", directory)
    _add_front_end(app, web_root(settings.front_end, settings.web_root))
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_websockets)
    return app


def _add_front_end(app: web.Application, root: Path | None) -> None:
    """Serve the editor at `/` (its index.html) and its files; or the how-to-build page."""
    app[WEB_ROOT] = root
    if root is None:
        async def missing(request: web.Request) -> web.Response:
            return web.Response(text=MISSING_PAGE, content_type="text/html")
        app.router.add_get("/", missing)
        return
    index = root / "index.html"

    async def index_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})
    app.router.add_get("/", index_page)
    app.router.add_static("/", root)


def _listens_beyond_loopback(settings: ServerSettings) -> bool:
    for host in (h.strip().strip("[]") for h in settings.host.split(",")):
        if host in ("", "0.0.0.0", "::"):
            return True
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return True
        except ValueError:
            if host != "localhost":
                return True
    return False


def security_warning(settings: ServerSettings) -> str | None:
    """The warning printed when Loom listens beyond this machine without a token, else None."""
    if settings.auth_token or not _listens_beyond_loopback(settings):
        return None
    return (f"WARNING: Loom listens on {settings.host} (reachable from other machines) without --auth-token: "
            "anyone who can reach this port can run workflows and read and write your files. "
            "Set --auth-token TOKEN (or LOOM_AUTH_TOKEN), or listen on 127.0.0.1.")


def banner(message: str, settings: ServerSettings) -> str:
    """The start-up line, with the addresses really listened on (taken from aiohttp's own
    'Running on ...' message, which lists the bound sockets)."""
    urls = re.findall(r"https?://\S+", message)
    shown = ", ".join(urls) if urls else f"{settings.host}:{settings.port}"
    line = f"Loom is serving on {shown}  (Ctrl+C to stop)"
    if any(host in ("0.0.0.0", "::", "") for host in settings.host.split(",")):
        line += f"\n  on this machine: http://127.0.0.1:{settings.port}"
    return line


def editor_url(settings: ServerSettings) -> str:
    """The address a browser on this machine opens: the first listen address, a wildcard as 127.0.0.1."""
    host = next((h.strip() for h in settings.host.split(",") if h.strip()), "127.0.0.1")
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host.strip('[]')}]"
    return f"http://{host}:{settings.port}"


def on_listening(message: str, settings: ServerSettings,
                 open_browser: Callable[[str], Any] = webbrowser.open) -> threading.Thread | None:
    """Run once every socket listens (aiohttp's start-up message): print the banner unless
    --dont-print-server, and under --auto-launch open the editor in a browser, as ComfyUI does.
    The browser is opened from a thread (a command-line browser may wait); the thread is returned."""
    if not settings.dont_print_server:
        print(banner(message, settings), flush=True)
    if not settings.auto_launch:
        return None
    thread = threading.Thread(target=open_browser, args=(editor_url(settings),), name="loom-auto-launch", daemon=True)
    thread.start()
    return thread


def serve(runtime: Runtime, *, setup_hooks: Sequence[AppHook] = ()) -> None:
    """Run the server until interrupted (blocking): `python main.py`."""
    settings = ServerSettings.from_config(runtime.config)
    app = create_app(runtime, settings=settings, setup_hooks=setup_hooks)
    warning = security_warning(settings)
    if warning:
        log.warning("%s", warning)
        print(warning, file=sys.stderr, flush=True)
    hosts: Any = [h for h in settings.host.split(",") if h] or ["127.0.0.1"]
    web.run_app(app, host=hosts if len(hosts) > 1 else hosts[0], port=settings.port,
                print=functools.partial(on_listening, settings=settings), access_log=None, handle_signals=True,
                shutdown_timeout=5.0)
