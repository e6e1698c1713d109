"""ComfyUI's `server.PromptServer` for custom node packs, bound to a running app.

The class itself lives in `compat/prompt_server.py` (packs import it before any server
exists); Loom's `server` package re-exports it lazily, so `from server import PromptServer`
works in a pack. `attach_prompt_server(app, prompt_server)` binds the instance to this app:
`send_sync` goes through the websocket hub, `loop` is the app's loop once it starts, the
routes packs added to `PromptServer.instance.routes` are served bare and under `/api/`,
`prompt_queue` reads and edits the app's queue, and the worker's events keep `last_node_id`
current. `on_prompt(app, body)` runs the packs' on-prompt handlers over a POST /prompt body.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from compat.prompt_server import PromptServer
from server.http import add_api_routes
from server.keys import QUEUE, WORKER
from server.ws import HUB

__all__ = ["PromptServer", "attach_prompt_server", "on_prompt"]
log = logging.getLogger(__name__)


async def _remember_loop(app: web.Application) -> None:
    for server in app.get(_BOUND, ()):
        server.loop = asyncio.get_running_loop()


_BOUND: web.AppKey[list] = web.AppKey("loom_prompt_servers", list)


def attach_prompt_server(app: web.Application, prompt_server: Any = None) -> PromptServer:
    """Bind `prompt_server` (default: `PromptServer.instance`, made when absent) to `app`."""
    server = prompt_server or PromptServer.instance
    if server is None:
        server = PromptServer.instance = PromptServer()
    server.bind(app[HUB].send, app=app)
    for route in server.routes:
        try:
            add_api_routes(app, [route])
        except (RuntimeError, ValueError) as error:  # e.g. a pack re-declaring one of Loom's routes
            log.warning("custom node route %s not added: %s", getattr(route, "path", route), error)
    app[_BOUND] = [server]
    app.on_startup.append(_remember_loop)
    if QUEUE in app:
        server.prompt_queue.bind(app[QUEUE])
    _follow_events(app, server)
    return server


def _follow_events(app: web.Application, server: PromptServer) -> None:
    """Let the PromptServer see the worker's events (for last_node_id) before they go to the clients."""
    worker = app.get(WORKER)
    sink = getattr(worker, "sink", None)
    if sink is None:
        return

    def observed(event: Any, client_id: Any = None) -> Any:
        server.note_event(getattr(event, "type", ""), getattr(event, "data", None))
        return sink(event, client_id)

    worker.sink = observed


def on_prompt(app: web.Application, body: dict[str, Any]) -> dict[str, Any]:
    """A POST /prompt body after the on-prompt handlers of the app's PromptServer."""
    bound = app.get(_BOUND) or ()
    for server in bound:
        body = server.trigger_on_prompt(body)
    return body
