"""The websocket hub: `/ws?clientId=ID` connections and the routing of events to them.

Owns: the set of connected clients, ComfyUI's message shapes on the wire (`{"type", "data"}` JSON
text frames; binary preview frames as `executor.events.PreviewImage` encodes them: `>I` event type 1, `>I` image
format 1=JPEG/2=PNG, then the bytes), which client gets which message (execution events to the submitting client, to everyone
when the prompt has none; previews likewise), `status` on connect (with `sid`) and on every queue
change, and `executing` for the node now running to a client that connects mid-run.

Back-pressure (why each client has its own bounded buffers and writer task): the worker thread
hands events over with `call_soon_threadsafe` and never waits; each client drains its own
buffers, so one stalled browser never delays the worker or the other clients. At most
`max_previews` preview frames wait per client (older ones are dropped first — a newer preview
supersedes them). Per-node state events (`executing` for a node, `progress_state`) of one prompt
are coalesced while they wait behind COALESCE_AFTER others: a newer one replaces the unsent older one and moves
to the end,
so a client that reads slower than a 10,000-node graph runs gets the latest state, not a backlog
(`executed`, `progress`, the final `executing` with node null and everything else are kept in
order). Memory per client is bounded: past `max_events` messages or `max_bytes` waiting, a
client that has read nothing for `stall_seconds` is disconnected with a log line (it reconnects
and gets `status` and the running node anew); a client that keeps reading is dropped only past
`HARD_FACTOR` times those bounds. A timer looks at stalled clients every second too.
Frames are never compressed (`compress=False`) and never fragmented: some API clients read
neither.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import WSMsgType, web

from executor.events import PreviewImage
from server.http import strict_dumps

log = logging.getLogger(__name__)

HARD_FACTOR = 8
# Coalescing starts once this many messages wait for a client: one that keeps up gets every event (API clients
# follow each node's `executing`), one that falls behind gets the latest state.
COALESCE_AFTER = 256
_COALESCED = frozenset({"executing", "progress_state"})


def coalesce_key(event: str, data: Any) -> tuple[str, Any] | None:
    """The key under which a newer event replaces an unsent older one, or None (always kept)."""
    if event not in _COALESCED or not isinstance(data, dict):
        return None
    if event == "executing" and data.get("node") is None:
        return None
    return event, data.get("prompt_id")


@dataclass(eq=False)
class Message:
    """One waiting JSON text frame; `text` None once a newer coalesced message superseded it."""

    text: str | None
    key: tuple[str, Any] | None = None


@dataclass(eq=False)
class Client:
    """One connected websocket and its outgoing buffers."""

    sid: str
    ws: web.WebSocketResponse
    transport: Any = None
    events: collections.deque = field(default_factory=collections.deque)  # of Message (some superseded)
    latest: dict = field(default_factory=dict)  # coalesce key -> its waiting Message
    waiting: int = 0  # live messages in `events`
    waiting_bytes: int = 0
    last_progress: float = field(default_factory=time.monotonic)  # last send, or when the buffer filled from empty
    sending_since: float | None = None  # when the send now waiting on the client's socket started
    previews: collections.deque = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    closed: bool = False


class WebSocketHub:
    """Routes messages to clients; `send` and `send_event` may be called from any thread."""

    def __init__(self, status: Callable[[], dict[str, Any]], *, max_events: int = 4096,
                 max_previews: int = 2, max_bytes: int = 32 << 20, stall_seconds: float = 15.0) -> None:
        self.status = status
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.stall_seconds = stall_seconds
        self.coalesced = 0
        self.max_previews = max_previews
        self.clients: dict[str, Client] = {}
        self.running: dict[str, Any] | None = None  # {"prompt_id", "node", "display_node", "client_id"}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._status_scheduled = False
        self.dropped_previews = 0
        self.disconnected_slow = 0
        # Client ids that sent feature_flags with supports_preview_metadata (type-4 previews).
        self.preview_metadata_clients: set[str] = set()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's event loop (called at start-up, on that loop)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        loop.call_later(1.0, self._watch)

    def _watch(self) -> None:
        """Once a second: disconnect clients over their bounds that read nothing for a while."""
        for client in list(self.clients.values()):
            self._check_bounds(client)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(1.0, self._watch)

    # ---- thread-safe entry points -----------------------------------------------------------

    def send(self, event: str, data: Any, client_id: str | None = None) -> None:
        """Send a JSON message `{"type": event, "data": data}` to one client, or to all when
        `client_id` is None. Safe from any thread (ComfyUI's `send_sync`)."""
        self._call(self._dispatch_json, event, data, client_id)

    def send_event(self, event: Any, client_id: str | None = None) -> None:
        """The worker's sink: an `executor.events.Event` or `PreviewImage`, routed to the client
        that submitted the prompt (all clients when None)."""
        if isinstance(event, PreviewImage):
            with_metadata = client_id is not None and client_id in self.preview_metadata_clients
            # the event-type-4 frame only for a client that announced supports_preview_metadata
            frame = event.to_frame_with_metadata() if with_metadata else event.to_frame()
            self._call(self._dispatch_binary, frame, client_id)
        else:
            self._call(self._dispatch_json, event.type, event.data, client_id)

    def queue_changed(self) -> None:
        """Schedule one `status` broadcast (several changes in a row are coalesced)."""
        self._call(self._schedule_status)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    # ---- on the loop ---------------------------------------------------------------------------

    def _schedule_status(self) -> None:
        if not self._status_scheduled and self._loop is not None:
            self._status_scheduled = True
            self._loop.call_soon(self._broadcast_status)

    def _broadcast_status(self) -> None:
        self._status_scheduled = False
        self._dispatch_json("status", {"status": self.status()}, None)

    def _track(self, event: str, data: Any, client_id: str | None) -> None:
        if event == "executing" and isinstance(data, dict):
            node = data.get("node")
            self.running = None if node is None else {
                "prompt_id": data.get("prompt_id"), "node": node,
                "display_node": data.get("display_node", node), "client_id": client_id}

    def _dispatch_json(self, event: str, data: Any, client_id: str | None) -> None:
        self._track(event, data, client_id)
        try:
            text = strict_dumps({"type": event, "data": data})
        except (TypeError, ValueError):
            log.exception("event %s is not JSON-serialisable; dropped", event)
            return
        key = coalesce_key(event, data)
        for client in self._targets(client_id):
            self._enqueue(client, text, key)

    def _dispatch_binary(self, frame: bytes, client_id: str | None) -> None:
        for client in self._targets(client_id):
            if len(client.previews) >= self.max_previews:
                client.previews.popleft()
                self.dropped_previews += 1
            client.previews.append(frame)
            client.wake.set()

    def _targets(self, client_id: str | None) -> list[Client]:
        if client_id is None:
            return list(self.clients.values())
        client = self.clients.get(client_id)
        return [client] if client is not None else []

    def _enqueue(self, client: Client, text: str, key: tuple[str, Any] | None = None) -> None:
        if client.closed:
            return
        if key is not None and client.waiting >= COALESCE_AFTER:
            older = client.latest.get(key)
            if older is not None and older.text is not None:
                client.waiting -= 1
                client.waiting_bytes -= len(older.text)
                older.text = None
                self.coalesced += 1
        if client.waiting == 0:
            client.last_progress = time.monotonic()
        message = Message(text, key)
        client.events.append(message)
        if key is not None:
            client.latest[key] = message
        client.waiting += 1
        client.waiting_bytes += len(text)
        client.wake.set()
        self._check_bounds(client)

    def _check_bounds(self, client: Client) -> None:
        """Disconnect a client over its bounds that read nothing for `stall_seconds` (or far over)."""
        if client.closed or (client.waiting <= self.max_events and client.waiting_bytes <= self.max_bytes):
            return
        # Stalled means a send has waited on the client's socket that long. A writer that has not been scheduled
        # (the worker thread holding the interpreter through a burst) is Loom being behind, not the client.
        idle = time.monotonic() - client.sending_since if client.sending_since is not None else 0.0
        far_over = (client.waiting > HARD_FACTOR * self.max_events
                    or client.waiting_bytes > HARD_FACTOR * self.max_bytes)
        if idle < self.stall_seconds and not far_over:
            return
        self.disconnected_slow += 1
        why = f"has read nothing for {idle:.1f} s" if idle >= self.stall_seconds else "fell too far behind"
        log.warning("websocket client %s %s with %d messages (%d bytes) waiting; disconnecting it",
                    client.sid, why, client.waiting, client.waiting_bytes)
        self._drop(client)

    def _drop(self, client: Client) -> None:
        client.closed = True
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        if client.task is not None:
            client.task.cancel()
        if client.transport is not None:
            client.transport.abort()

    async def _writer(self, client: Client) -> None:
        """Drain one client's buffers: JSON events in order, then the latest previews."""
        ws = client.ws
        while not client.closed:
            await client.wake.wait()
            client.wake.clear()
            while client.events or client.previews:
                if ws.closed:
                    return
                if client.events:
                    message = client.events.popleft()
                    if message.text is None:
                        continue
                    if message.key is not None and client.latest.get(message.key) is message:
                        del client.latest[message.key]
                    client.waiting -= 1
                    client.waiting_bytes -= len(message.text)
                    client.sending_since = time.monotonic()
                    await ws.send_str(message.text)
                    client.sending_since = None
                else:
                    await ws.send_bytes(client.previews.popleft())
                client.last_progress = time.monotonic()

    # ---- connections ---------------------------------------------------------------------------

    def add(self, sid: str, ws: web.WebSocketResponse, transport: Any) -> Client:
        old = self.clients.get(sid)
        if old is not None:
            self._drop(old)
        client = Client(sid=sid, ws=ws, transport=transport)
        self.clients[sid] = client
        client.task = asyncio.ensure_future(self._writer(client))
        self._enqueue(client, strict_dumps({"type": "status", "data": {"status": self.status(), "sid": sid}}))
        running = self.running
        if running is not None and running["client_id"] in (None, sid):
            data = {"node": running["node"], "display_node": running["display_node"],
                    "prompt_id": running["prompt_id"]}
            self._enqueue(client, strict_dumps({"type": "executing", "data": data}))
        return client

    def remove(self, client: Client) -> None:
        client.closed = True
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        if client.task is not None:
            client.task.cancel()

    async def close_all(self) -> None:
        """Close every connection (on shutdown)."""
        for client in list(self.clients.values()):
            self.remove(client)
            if not client.ws.closed:
                try:
                    await asyncio.wait_for(client.ws.close(code=1001, message=b"server shutdown"), 1.0)
                except (asyncio.TimeoutError, ConnectionError):
                    if client.transport is not None:
                        client.transport.abort()


HUB: web.AppKey[WebSocketHub] = web.AppKey("loom_hub", WebSocketHub)


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    """`GET /ws?clientId=ID`: ComfyUI's websocket. Incoming messages are read and ignored,
    except `feature_flags`, answered with the server's."""
    hub = request.app[HUB]
    ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20, heartbeat=None)
    await ws.prepare(request)
    sid = request.query.get("clientId") or uuid.uuid4().hex
    client = hub.add(sid, ws, request.transport)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                _on_text(hub, sid, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        hub.remove(client)
    return ws


def _on_text(hub: WebSocketHub, sid: str, text: str) -> None:
    try:
        message = json.loads(text)
    except ValueError:
        return
    if isinstance(message, dict) and message.get("type") == "feature_flags":
        from server.routes_info import FEATURES
        flags = message.get("data")
        if isinstance(flags, dict) and flags.get("supports_preview_metadata"):
            hub.preview_metadata_clients.add(sid)
        else:
            hub.preview_metadata_clients.discard(sid)
        hub.send("feature_flags", FEATURES, sid)
