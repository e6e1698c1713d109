"""Node expansion building blocks: `GraphBuilder`, `GraphNode`, `is_link`, `ExecutionBlocker`.

A node may return `{"result": (...), "expand": graph}`: the executor splices `graph` (API-format
nodes) into the running prompt and routes the node's outputs to the links named in `result`.
`GraphBuilder` writes such graphs with node ids that are unique per call: by default each id is
prefixed `"<parent id>.<call index>.<graph index>."`, the scheme ComfyUI's executor and frontend
use, so an expansion that expands again (a loop) gets fresh ids every iteration and the
frontend can map every ephemeral node back to the node the user sees.

`ExecutionBlocker(message)` as an output value stops every node that would consume it: quietly
when `message` is None, as an execution error carrying the message otherwise.

The executor sets the default prefix (`set_default_prefix`) before each node call; it lives in a
context variable so concurrent async nodes each see their own.
"""
from __future__ import annotations

import contextvars
from typing import Any, Mapping


class ExecutionBlocker:
    """An output value that blocks the nodes consuming it (`message` None: silently)."""

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


def is_link(value: Any) -> bool:
    """True for `[node_id, output_index]` (a list with a string id and a number), as ComfyUI tests."""
    if not isinstance(value, list) or len(value) != 2:
        return False
    return isinstance(value[0], str) and isinstance(value[1], (int, float)) and not isinstance(value[1], bool)


# [root, call index, next graph index] of the node call now running.
_PREFIX: contextvars.ContextVar[list[Any]] = contextvars.ContextVar("loom_graph_prefix", default=["", 0, 0])


class GraphNode:
    """One node of a graph being built: `out(i)` is the link to its output i."""

    def __init__(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = node_id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        """Set an input; None removes it (ComfyUI's convention for "not connected")."""
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, display_id: str) -> None:
        """Show this node's progress on another node of the user's graph."""
        self.override_display_id = display_id

    def serialize(self) -> dict[str, Any]:
        node: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            node["override_display_id"] = self.override_display_id
        return node


class GraphBuilder:
    """Builds an API-format graph; ids get `prefix` (by default one unique to the running call)."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = GraphBuilder.alloc_prefix() if prefix is None else prefix
        self.nodes: dict[str, GraphNode] = {}
        self.id_gen = 1

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        """Set the prefix parts for builders made from now on (the executor calls this per call)."""
        _PREFIX.set([prefix_root, call_index, graph_index])

    @classmethod
    def alloc_prefix(cls, root: str | None = None, call_index: int | None = None,
                     graph_index: int | None = None) -> str:
        """`"<root>.<call index>.<graph index>."`; each call takes the next graph index."""
        state = _PREFIX.get()
        root = state[0] if root is None else root
        call_index = state[1] if call_index is None else call_index
        graph_index = state[2] if graph_index is None else graph_index
        state[2] += 1
        return f"{root}.{call_index}.{graph_index}."

    def node(self, class_type: str, id: str | None = None, **kwargs: Any) -> GraphNode:  # noqa: A002
        """Add (or return the existing) node `id` (numbered 1, 2, ... when not given)."""
        if id is None:
            id = str(self.id_gen)
            self.id_gen += 1
        node_id = self.prefix + id
        existing = self.nodes.get(node_id)
        if existing is not None:
            return existing
        node = GraphNode(node_id, class_type, kwargs)
        self.nodes[node_id] = node
        return node

    def lookup_node(self, id: str) -> GraphNode | None:  # noqa: A002
        return self.nodes.get(self.prefix + id)

    def finalize(self) -> dict[str, Any]:
        """The graph in API format."""
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        """Point every input linked to output `index` of `node_id` at `new_value` (None: unlink)."""
        target = self.prefix + node_id
        for node in self.nodes.values():
            for key, value in list(node.inputs.items()):
                if is_link(value) and value[0] == target and value[1] == index:
                    node.set_input(key, new_value)

    def remove_node(self, id: str) -> None:  # noqa: A002
        del self.nodes[self.prefix + id]


def add_graph_prefix(graph: Mapping[str, Any], outputs: Any, prefix: str) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """`graph` with every node id (and the links between them) prefixed, and `outputs` likewise."""
    new_graph: dict[str, Any] = {}
    for node_id, node in graph.items():
        inputs = {name: ([prefix + value[0], value[1]] if is_link(value) else value)
                  for name, value in (node.get("inputs") or {}).items()}
        new_graph[prefix + node_id] = {"class_type": node["class_type"], "inputs": inputs}
    new_outputs = tuple([prefix + o[0], o[1]] if is_link(o) else o for o in outputs)
    return new_graph, new_outputs


Node = GraphNode  # ComfyUI's name for it
