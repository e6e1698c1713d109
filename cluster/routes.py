"""GET /loom/cluster (and /api/loom/cluster): the workers, their state and loaded models.

Added by a server hook (`runtime.server_hooks`), so nothing here imports the server package."""
from __future__ import annotations

from typing import Any, Callable

from aiohttp import web

DISPATCHER: web.AppKey[Any] = web.AppKey("loom_cluster_dispatcher", object)


async def get_cluster(request: web.Request) -> web.Response:
    """`{"workers": [{"id", "node", "pid", "device", "state", "prompt_id", "models"}]}`."""
    return web.json_response(request.app[DISPATCHER].cluster_info())


def cluster_routes_hook(dispatcher_of: Callable[[], Any]) -> Callable[[web.Application], None]:
    """The hook: stores the app's dispatcher (`dispatcher_of()`) and adds the route bare and under /api/."""
    def add(app: web.Application) -> None:
        app[DISPATCHER] = dispatcher_of()
        for prefix in ("", "/api"):
            app.router.add_get(prefix + "/loom/cluster", get_cluster)
    return add
