"""ComfyUI's `server.PromptServer`, as far as simple custom node packs use it.

Packs reach it as `from server import PromptServer` (Loom's `server` package re-exports this
class lazily) and use `PromptServer.instance`: `routes` (an aiohttp `RouteTableDef` they
decorate handlers with at import time), `send_sync(event, data, sid=None)` (a websocket
message to one client, or to all when `sid` is None), `client_id` (the client whose prompt is
running), `loop` and `app`. `compat.install_compat` makes the instance before packs import;
the server (`server/prompt_server_compat.py`) binds it to the app, the websocket hub and the
loop when the app is created, and adds the collected routes (bare and under /api/, as ComfyUI
does). Messages sent before the server exists (headless runs) are dropped and logged.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, ClassVar

from aiohttp import web

from nodes.context import current_or_none

log = logging.getLogger(__name__)

Sender = Callable[[str, Any, "str | None"], None]


class PromptServer:
    """The object behind `PromptServer.instance` (see the module docstring)."""

    instance: ClassVar["PromptServer | None"] = None

    def __init__(self) -> None:
        self.routes = web.RouteTableDef()
        self.app: web.Application | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last_client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.number = 0
        self.supports = ["custom_nodes_from_web"]
        self.on_prompt_handlers: list[Callable[[dict[str, Any]], dict[str, Any]]] = []
        self._send: Sender | None = None

    @property
    def client_id(self) -> str | None:
        """The client that submitted the prompt now running (else the last one known)."""
        ctx = current_or_none()
        if ctx is not None:
            extra = ctx.extra.get("extra_data") or {}
            if extra.get("client_id") is not None:
                return extra["client_id"]
        return self.last_client_id

    @client_id.setter
    def client_id(self, value: str | None) -> None:
        self.last_client_id = value

    def bind(self, send: Sender, *, app: web.Application | None = None) -> None:
        """Deliver messages through `send(event, data, sid)` (the websocket hub) from now on."""
        self._send = send
        self.app = app

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """Send `{"type": event, "data": data}` to client `sid`, or to every client; thread-safe."""
        if self._send is None:
            log.debug("PromptServer.send_sync(%r) dropped: no server is running", event)
            return
        self._send(event, data, sid)

    async def send(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def add_on_prompt_handler(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Recorded for compatibility; Loom does not rewrite submitted prompts through them."""
        self.on_prompt_handlers.append(handler)
