"""The recent log lines ComfyUI's frontend shows in its terminal panel (`/internal/logs*`).

`LogBuffer` is a logging handler installed on the root logger for the life of an app (`server.app`
adds and removes it): it keeps the last `capacity` records as ComfyUI's `{"t": ISO time, "m": line}`
entries and pushes each new one to the websocket clients that subscribed through
`PATCH /internal/logs/subscribe`, as ComfyUI's `logs` message `{"entries": [...], "size": {cols, rows}}`.
"""
from __future__ import annotations

import collections
import datetime
import logging
import shutil
import threading
from typing import Any, Callable

from aiohttp import web

Send = Callable[[str, Any, "str | None"], None]


def terminal_size() -> tuple[int, int]:
    """The server terminal's columns and rows (80×24 when there is none), for the frontend's log panel."""
    size = shutil.get_terminal_size((80, 24))
    return size.columns, size.lines


class LogBuffer(logging.Handler):
    """The last `capacity` log records, and the clients that want new ones pushed."""

    def __init__(self, capacity: int = 500) -> None:
        super().__init__(level=logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._entries: collections.deque[dict[str, str]] = collections.deque(maxlen=capacity)
        self._subscribers: set[str] = set()
        self._lock = threading.Lock()
        self._send: Send | None = None

    def bind(self, send: Send | None) -> None:
        """Where pushed entries go: the websocket hub's thread-safe `send(event, data, client_id)`."""
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except (TypeError, ValueError):
            return
        stamp = datetime.datetime.fromtimestamp(record.created).isoformat()
        entry = {"t": stamp, "m": text + "\n"}
        with self._lock:
            self._entries.append(entry)
            subscribers = list(self._subscribers)
        send = self._send
        if send is not None and subscribers:
            cols, rows = terminal_size()
            for client_id in subscribers:
                send("logs", {"entries": [entry], "size": {"cols": cols, "rows": rows}}, client_id)

    def entries(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._entries)

    def subscribe(self, client_id: str, enabled: bool) -> None:
        with self._lock:
            if enabled:
                self._subscribers.add(client_id)
            else:
                self._subscribers.discard(client_id)


LOG_BUFFER_KEY: web.AppKey[LogBuffer] = web.AppKey("loom_log_buffer", LogBuffer)


async def log_buffer_lifecycle(app: web.Application) -> Any:
    """cleanup_ctx: the app's buffer collects root-logger records while the app runs."""
    buffer = app[LOG_BUFFER_KEY]
    root = logging.getLogger()
    root.addHandler(buffer)
    yield
    root.removeHandler(buffer)
    buffer.bind(None)
