"""The dependency graph of an API prompt: links, what must run, topological order, the scheduler.

Torch-free and iterative throughout (no recursion, so a 10,000-node chain is fine):
`links_of` reads the `[node_id, slot]` links of a node, `reachable` collects what feeds the
requested outputs, `topological_order` orders a node set or names a cycle, and `Scheduler`
hands out ready nodes by counting what still blocks each one, the design of ComfyUI's
`comfy_execution/graph.py` (STYLE.md §6). Nodes may be added while running, which is how
lazy inputs pull in their upstream only when a node asks for them.
"""
from __future__ import annotations

from typing import Any, Callable, Container, Iterable, Iterator, Mapping

Prompt = Mapping[str, Any]


class CycleError(ValueError):
    """The graph has a dependency cycle; `nodes` lists the node ids on it, in link order."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = nodes
        super().__init__("dependency cycle between nodes " + " -> ".join(nodes + nodes[:1]))


def as_link(value: Any) -> tuple[str, int] | None:
    """`(node_id, slot)` when `value` is a well-formed link `[node_id, slot]`, else None."""
    kind = type(value)
    if (kind is list or kind is tuple) and len(value) == 2:
        node, slot = value
        if type(node) in (str, int) and type(slot) is int:
            return str(node), slot
    return None


def node_inputs(prompt: Prompt, node_id: str) -> Mapping[str, Any]:
    """The `inputs` mapping of a node, or an empty one for a malformed node."""
    node = prompt.get(node_id)
    inputs = node.get("inputs") if isinstance(node, dict) else None
    return inputs if isinstance(inputs, dict) else {}


def links_of(prompt: Prompt, node_id: str) -> Iterator[tuple[str, str, int]]:
    """`(input_name, source_node_id, source_slot)` for each linked input of a node."""
    for name, value in node_inputs(prompt, node_id).items():
        kind = type(value)
        if kind is list or kind is tuple:
            link = as_link(value)
            if link is not None:
                yield name, link[0], link[1]


Links = dict[str, list[tuple[str, str, int]]]


def reachable(prompt: Prompt, roots: Iterable[str], links: Links | None = None,
              known: Container[str] = ()) -> list[str]:
    """Every node the roots depend on (roots included), found by an iterative walk; links to
    nodes missing from the prompt are skipped (validation reports them). When `links` is
    given it is filled with each visited node's links, for `topological_partial` to reuse.
    The walk stops at nodes in `known` (already prepared: node expansion adds nodes to a
    running prompt, and only the new ones need a look)."""
    seen: dict[str, None] = {}
    stack = [r for r in roots if r in prompt and r not in known]
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id in known:
            continue
        seen[node_id] = None
        node_links = list(links_of(prompt, node_id))
        if links is not None:
            links[node_id] = node_links
        for _, source, _ in node_links:
            if source not in seen and source in prompt:
                stack.append(source)
    return list(seen)


def topological_order(prompt: Prompt, nodes: Iterable[str], links: Links | None = None) -> list[str]:
    """The nodes ordered so that every node comes after the nodes linked into it; raises
    `CycleError` naming the nodes of a cycle."""
    order, stuck = topological_partial(prompt, nodes, links)
    if stuck:
        raise CycleError(find_cycle(prompt, stuck))
    return order


def topological_partial(prompt: Prompt, nodes: Iterable[str], links: Links | None = None
                        ) -> tuple[list[str], list[str]]:
    """Kahn's algorithm: `(ordered, stuck)` where `stuck` are the nodes on or behind a cycle.
    `links` (as filled by `reachable`) saves reading the nodes' inputs again."""
    members = set(nodes)
    blockers: dict[str, int] = {}
    dependents: dict[str, list[str]] = {n: [] for n in members}
    for node_id in members:
        node_links = links[node_id] if links is not None and node_id in links else links_of(prompt, node_id)
        sources = {s for _, s, _ in node_links if s in members}
        blockers[node_id] = len(sources)
        for source in sources:
            dependents[source].append(node_id)
    ready = sorted((n for n, count in blockers.items() if count == 0), key=_id_key, reverse=True)
    order: list[str] = []
    while ready:
        node_id = ready.pop()
        order.append(node_id)
        for dependent in dependents[node_id]:
            blockers[dependent] -= 1
            if blockers[dependent] == 0:
                ready.append(dependent)
    return order, [n for n, count in blockers.items() if count > 0]


def find_cycle(prompt: Prompt, candidates: Iterable[str]) -> list[str]:
    """One cycle among `candidates` (nodes left blocked by a topological sort), in link order."""
    import networkx as nx  # imported here: only needed when something is already wrong

    members = set(candidates)
    graph = nx.DiGraph()
    graph.add_nodes_from(members)
    for node_id in members:
        for _, source, _ in links_of(prompt, node_id):
            if source in members:
                graph.add_edge(source, node_id)
    try:
        edges = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return sorted(members, key=_id_key)
    return [edge[0] for edge in edges]


def find_cycles(prompt: Prompt, candidates: Iterable[str]) -> list[list[str]]:
    """Every cycle group (strongly connected set of nodes) among `candidates`, each in id order."""
    import networkx as nx

    members = set(candidates)
    graph = nx.DiGraph()
    graph.add_nodes_from(members)
    for node_id in members:
        for _, source, _ in links_of(prompt, node_id):
            if source in members:
                graph.add_edge(source, node_id)
    groups = [sorted(c, key=_id_key) for c in nx.strongly_connected_components(graph)
              if len(c) > 1 or graph.has_edge(next(iter(c)), next(iter(c)))]
    return sorted(groups, key=lambda g: _id_key(g[0]))


def _id_key(node_id: str) -> tuple[int, int, str]:
    """Sort numeric ids numerically, then the rest by text (ComfyUI's ids are mostly numbers)."""
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


class Scheduler:
    """Hands out nodes whose dependencies are done, counting the blockers of each node.

    `dependencies(node_id)` names the nodes that must finish first (the executor leaves out
    cached nodes and lazy inputs). `add` brings in a node and, iteratively, what it needs;
    `block` makes a waiting node depend on more nodes (lazy inputs asked for late); `pop`
    returns a ready node or None; `finish` releases its dependents. When nothing is ready but
    nodes remain, `stuck()` lists them (they are on or behind a cycle).
    """

    def __init__(self, dependencies: Callable[[str], Iterable[str]]) -> None:
        self._dependencies = dependencies
        self._blockers: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}
        self._ready: list[str] = []
        self._done: set[str] = set()

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._blockers or node_id in self._done

    def is_done(self, node_id: str) -> bool:
        return node_id in self._done

    def add(self, node_id: str) -> None:
        """Schedule a node and everything it depends on that is not yet scheduled."""
        self._add_many([node_id])

    def block(self, node_id: str, upstream: Iterable[str]) -> None:
        """Make a scheduled, unfinished node wait for `upstream` too (scheduling them as needed)."""
        new = [u for u in dict.fromkeys(upstream) if u not in self._done]
        self._add_many(new)
        for source in new:
            self._link(source, node_id)

    def pop(self) -> str | None:
        """A node ready to run (most recently readied first, so chains finish depth-first)."""
        return self._ready.pop() if self._ready else None

    def finish(self, node_id: str) -> None:
        """Mark a node done and release what waited on it."""
        self._done.add(node_id)
        self._blockers.pop(node_id, None)
        for dependent in self._dependents.pop(node_id, ()):
            count = self._blockers.get(dependent)
            if count is None:
                continue
            self._blockers[dependent] = count - 1
            if count == 1:
                self._ready.append(dependent)

    def requeue(self, node_id: str) -> None:
        """Put a node back in line when it is not blocked (after `block` added nothing new)."""
        if self._blockers.get(node_id) == 0 and node_id not in self._ready:
            self._ready.append(node_id)

    def stuck(self) -> list[str]:
        """Nodes still waiting when nothing is ready: they are on or behind a cycle."""
        return [n for n, count in self._blockers.items() if count > 0]

    def _add_many(self, roots: list[str]) -> None:
        stack = [r for r in roots if r not in self]
        added: list[str] = []
        while stack:
            node_id = stack.pop()
            if node_id in self:
                continue
            self._blockers[node_id] = 0
            added.append(node_id)
            for source in self._dependencies(node_id):
                if source not in self:
                    stack.append(source)
        # Link after every new node is known, so counts only include unfinished sources.
        for node_id in added:
            for source in dict.fromkeys(self._dependencies(node_id)):
                if source not in self._done:
                    self._link(source, node_id, ready_check=False)
        for node_id in reversed(added):
            if self._blockers[node_id] == 0:
                self._ready.append(node_id)

    def _link(self, source: str, target: str, ready_check: bool = True) -> None:
        if ready_check and target in self._ready:
            self._ready.remove(target)
        self._dependents.setdefault(source, []).append(target)
        self._blockers[target] = self._blockers.get(target, 0) + 1
