"""Node expansion: splicing the graphs a node returned into the running prompt.

A node returning `{"result": (...), "expand": graph}` is not finished: its graph's nodes are
added to the `DynamicGraph` as ephemeral nodes (parent: the node; display node: the node, or
the graph's `override_display_id`), its output nodes are scheduled, and the node waits for the
nodes its `result` links to. When they are done, `Expansion.resolve` builds the node's outputs
from their values, and the node is stored and cached like any other. Each expansion touches
only its own nodes, so a loop that re-expands itself N times costs O(N) in total.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from executor.cache import CachedOutput
from executor.dynamic import DynamicGraph
from executor.node_call import CallResult
from nodes.graph_builder import ExecutionBlocker, is_link
from nodes.spec import NodeSpec


class ExpansionError(ValueError):
    """An expansion graph is malformed or reuses an id already in the prompt."""


@dataclass
class Expansion:
    """What one node's expansion added and what its outputs wait for."""

    pieces: list[tuple[dict[str, Any] | None, tuple[Any, ...]]]
    ui: dict[str, Any] | None
    sources: list[str] = field(default_factory=list)       # nodes the results link to
    output_nodes: list[str] = field(default_factory=list)  # output nodes among the new ones

    @property
    def roots(self) -> list[str]:
        return list(dict.fromkeys(self.output_nodes + self.sources))

    def resolve(self, spec: NodeSpec, results: Mapping[str, CachedOutput]) -> CallResult:
        """The node's outputs: per call its literal results, or the values of the linked nodes
        (every item of a linked output, as ComfyUI's resolution does)."""
        values: list[list[Any]] = []
        for slot, out in enumerate(spec.outputs):
            gathered: list[Any] = []
            for graph, result in self.pieces:
                value = result[slot] if slot < len(result) else None
                if graph is not None and is_link(value):
                    source = results[value[0]].values
                    index = int(value[1])
                    gathered.extend(source[index] if index < len(source) else [None])
                elif out.is_list and not isinstance(value, ExecutionBlocker):
                    gathered.extend(value if isinstance(value, (list, tuple)) else [value])
                else:
                    gathered.append(value)
            values.append(gathered)
        return CallResult(values=tuple(values), ui=self.ui)


def _check_graph(parent_id: str, graph: Any) -> None:
    if not isinstance(graph, dict):
        raise ExpansionError(f"node {parent_id} returned an expansion that is not a dict of nodes")
    for node_id, node in graph.items():
        if not isinstance(node_id, str) or not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise ExpansionError(f"node {parent_id} returned an expansion whose node {node_id!r} has no class_type")
        if not isinstance(node.get("inputs", {}), dict):
            raise ExpansionError(f"node {parent_id} returned an expansion whose node {node_id!r} has bad inputs")


def splice(graph: DynamicGraph, parent_id: str, outcome: CallResult,
           is_output: Callable[[str], bool]) -> Expansion:
    """Add the outcome's graphs to `graph` under `parent_id`; raises ExpansionError for a
    malformed graph or an id already present (ComfyUI's DuplicateNodeError)."""
    expansion = Expansion(pieces=outcome.pieces, ui=outcome.ui)
    for new_graph, result in outcome.pieces:
        if new_graph is None:
            continue
        _check_graph(parent_id, new_graph)
        for node_id in new_graph:
            if graph.has_node(node_id):
                raise ExpansionError(f"Attempt to add duplicate node {node_id}. Ensure node ids are unique and "
                                     "deterministic or use graph_utils.GraphBuilder.")
        for node_id, node in new_graph.items():
            for name, value in (node.get("inputs") or {}).items():
                if is_link(value) and value[0] not in new_graph and not graph.has_node(value[0]):
                    raise ExpansionError(f"node {parent_id} returned an expansion whose node {node_id} links "
                                         f"input '{name}' to node {value[0]}, which does not exist")
            node = {**node, "inputs": dict(node.get("inputs") or {})}
            graph.add_ephemeral_node(node_id, node, parent_id, str(node.get("override_display_id") or parent_id))
            if is_output(node["class_type"]):
                expansion.output_nodes.append(node_id)
        for value in result:
            if is_link(value):
                source = value[0]
                if not graph.has_node(source):
                    raise ExpansionError(f"node {parent_id} returned a result linked to node {source}, "
                                         "which is not in its expansion or the prompt")
                if source not in expansion.sources:
                    expansion.sources.append(source)
    return expansion
