"""ComfyUI's `server.PromptServer`, as far as simple custom node packs use it.

Packs reach it as `from server import PromptServer` (Loom's `server` package re-exports this
class lazily) and use `PromptServer.instance`: `routes` (an aiohttp `RouteTableDef` they
decorate handlers with at import time), `send_sync(event, data, sid=None)` (a websocket
message to one client, or to all when `sid` is None), `client_id` (the client whose prompt is
running), `loop` and `app`, `last_node_id` / `last_prompt_id` (the node and prompt now running,
or the last ones), `prompt_queue` (ComfyUI's PromptQueue methods over Loom's queue,
`compat/prompt_queue.py`) and `add_on_prompt_handler(fn)`: each POST /prompt body goes through
`fn(json_data) -> json_data` before it is validated, as in ComfyUI (a handler that raises is
logged and skipped). `compat.install_compat` makes the instance before packs import; the server
(`server/prompt_server_compat.py`) binds it to the app, the queue, the websocket hub and the
loop when the app is created, and adds the collected routes (bare and under /api/, as ComfyUI
does). Messages sent before the server exists (headless runs) are dropped and logged.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, ClassVar

from aiohttp import web

from compat.prompt_queue import ComfyPromptQueue
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
        self._last_node_id: str | None = None
        self._last_prompt_id: str | None = None
        self.prompt_queue = ComfyPromptQueue(self)
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

    @property
    def last_node_id(self) -> str | None:
        """The node now running (inside a node call), else the last one the server saw start."""
        ctx = current_or_none()
        return ctx.node_id if ctx is not None else self._last_node_id

    @last_node_id.setter
    def last_node_id(self, value: str | None) -> None:
        self._last_node_id = value

    @property
    def last_prompt_id(self) -> str | None:
        ctx = current_or_none()
        return ctx.prompt_id if ctx is not None and ctx.prompt_id else self._last_prompt_id

    @last_prompt_id.setter
    def last_prompt_id(self, value: str | None) -> None:
        self._last_prompt_id = value

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
        """Have `handler(json_data) -> json_data` see (and possibly change) each POST /prompt body."""
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data: dict[str, Any]) -> dict[str, Any]:
        """Run the on-prompt handlers in order over a POST /prompt body; a failing one is logged and skipped."""
        for handler in self.on_prompt_handlers:
            try:
                changed = handler(json_data)
            except Exception:  # a pack's handler: its failure must not reject the prompt
                log.exception("on_prompt handler %r failed", handler)
                continue
            if isinstance(changed, dict):
                json_data = changed
            else:
                log.warning("on_prompt handler %r returned %s, not the prompt body; ignored", handler,
                            type(changed).__name__)
        return json_data

    def note_event(self, event: str, data: Any) -> None:
        """Follow the executor's events: `executing` moves last_node_id / last_prompt_id."""
        if event == "executing" and isinstance(data, dict):
            self._last_node_id = data.get("node")
            if data.get("prompt_id"):
                self._last_prompt_id = data["prompt_id"]
