"""Per-prompt node states for ComfyUI's `progress_state` websocket message.

Every node the run touches moves pending → running → finished (or error), with a `value` and
`max`; each change sends `{"prompt_id", "nodes": {id: {value, max, state, node_id, prompt_id,
display_node_id, parent_node_id, real_node_id}}}` listing every node that is not pending, the
shape of ComfyUI's `WebUIProgressHandler` (expanded nodes appear under their own ids, with the
display/parent/real ids the frontend maps them by).

ComfyUI lists every touched node in every message, which makes a long expansion loop cost
quadratic time and bandwidth (a 100-iteration loop sent ~400 MB). Loom lists every submitted
node that is not pending, but an expanded node only while it is running or failed and in the
first message after it finished (a node waiting for its own expansion is listed when it starts
and when it finishes), so each state an expanded node reaches is still sent once and
a message stays as small as the user's graph plus what is active. Up to `EVERY_CHANGE_LIMIT`
touched nodes every change is sent; beyond that one message per `THROTTLE_S` or per
`MAX_CHANGES_PER_MESSAGE` changed nodes, whichever comes first, and the
run's last state is always sent when it ends (`flush`).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from executor.dynamic import DynamicGraph
from executor.events import Event

PROGRESS_STATE = "progress_state"
EVERY_CHANGE_LIMIT = 256
THROTTLE_S = 0.1
MAX_CHANGES_PER_MESSAGE = 32  # keeps messages small when ids are long (deep expansions)


class ProgressState:
    """The states of one prompt's nodes; `emit` receives each `progress_state` event."""

    def __init__(self, prompt_id: str, graph: DynamicGraph, emit: Callable[[Event], None]) -> None:
        self.prompt_id = prompt_id
        self.graph = graph
        self.emit = emit
        self.nodes: dict[str, dict[str, Any]] = {}
        self._last_sent = 0.0
        self._dirty = False
        self._changed: set[str] = set()
        self._waiting: set[str] = set()  # running, but only waiting for their expansions

    def start(self, node_id: str) -> None:
        self._set(node_id, "running", 0.0, 1.0)

    def update(self, node_id: str, value: float, maximum: float) -> None:
        self._set(node_id, "running", float(value), float(maximum) if maximum else 1.0)

    def waiting(self, node_id: str) -> None:
        """The node expanded and waits for its subgraph: still running, but not re-listed in
        every message (a loop's 1,000 nested parents would otherwise fill each one)."""
        self._waiting.add(node_id)

    def finish(self, node_id: str) -> None:
        self._waiting.discard(node_id)
        entry = self.nodes.get(node_id)
        maximum = entry["max"] if entry is not None else 1.0
        self._set(node_id, "finished", maximum, maximum)

    def error(self, node_id: str) -> None:
        entry = self.nodes.get(node_id)
        self._set(node_id, "error", entry["value"] if entry else 0.0, entry["max"] if entry else 1.0)
        self.flush()

    def flush(self) -> None:
        """Send the current state if anything changed since the last message."""
        if self._dirty:
            self._send()

    def _set(self, node_id: str, state: str, value: float, maximum: float) -> None:
        entry = self.nodes.get(node_id)
        if entry is None:
            entry = self.nodes[node_id] = {"value": value, "max": maximum, "state": state, "node_id": node_id,
                                           "prompt_id": self.prompt_id,
                                           "display_node_id": self.graph.get_display_node_id(node_id),
                                           "parent_node_id": self.graph.get_parent_node_id(node_id),
                                           "real_node_id": self.graph.get_real_node_id(node_id)}
        else:
            entry.update(value=value, max=maximum, state=state)
        self._dirty = True
        self._changed.add(node_id)
        if (len(self.nodes) <= EVERY_CHANGE_LIMIT or len(self._changed) >= MAX_CHANGES_PER_MESSAGE
                or time.monotonic() - self._last_sent >= THROTTLE_S):
            self._send()

    def _send(self) -> None:
        self._dirty = False
        self._last_sent = time.monotonic()
        nodes = {node_id: dict(entry) for node_id, entry in self.nodes.items()
                 if node_id in self._changed or entry["real_node_id"] == node_id
                 or (entry["state"] in ("running", "error") and node_id not in self._waiting)}
        self._changed.clear()
        self.emit(Event(PROGRESS_STATE, {"prompt_id": self.prompt_id, "nodes": nodes}))
