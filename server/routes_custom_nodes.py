"""The custom-node routes: `GET /loom/custom_nodes` lists every pack with its state, import time,
error, nodes and name collisions; `setup(app)` adds it and binds ComfyUI's `PromptServer.instance`
to the app (its routes, websocket messages).

`/extensions` (the packs' web scripts) and the static `/extensions/<pack>/` folders are served
by `server/app.py` and `server/routes_info.py` from `runtime.web_directories`, which
`runtime.build_runtime` fills from the loaded packs.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from server.http import add_api_routes, json_response
from server.keys import RUNTIME
from server.prompt_server_compat import attach_prompt_server


async def get_custom_nodes(request: web.Request) -> web.Response:
    """`{"packs": [...]}`: each pack's `LoadedPack.to_json()` (name, path, state ok/failed/disabled,
    import_seconds, error traceback, api styles, nodes, node_errors, collisions, web_directory)."""
    packs = request.app[RUNTIME].custom_packs
    return json_response({"packs": [pack.to_json() for pack in packs]})


ROUTES = [("GET", "/loom/custom_nodes", get_custom_nodes)]


def setup(app: web.Application) -> None:
    """Add the custom-node routes and bind the runtime's PromptServer (see the module docstring)."""
    add_api_routes(app, ROUTES)
    compat = app[RUNTIME].compat
    attach_prompt_server(app, compat.prompt_server if compat is not None else None)
