"""The prompt as it grows while running: the submitted nodes plus the ephemeral nodes that node
expansion adds, each with its parent and the node it is displayed as.

Ids follow ComfyUI: an ephemeral node's *parent* is the node whose expansion created it, its
*display node* is the node the frontend shows its progress on (the parent, unless the expansion
set `override_display_id`), followed until a submitted node is reached; its *real node* is the
submitted node at the root of its chain of parents. Packs get this object as the hidden
`DYNPROMPT` input and read it with the ComfyUI method names below (`get_node`, `has_node`,
`all_node_ids`, `get_original_prompt`, ...), so every lookup is a dict access.
"""
from __future__ import annotations

from typing import Any, Mapping


class NodeNotFoundError(KeyError):
    """A node id is neither in the submitted prompt nor among the ephemeral nodes."""


class DynamicGraph:
    """The submitted prompt and the ephemeral nodes added to it during one run."""

    def __init__(self, original_prompt: Mapping[str, Any]) -> None:
        self.original_prompt = original_prompt
        self.ephemeral_prompt: dict[str, Any] = {}
        self.ephemeral_parents: dict[str, str] = {}
        self.ephemeral_display: dict[str, str] = {}
        self._real: dict[str, str] = {}
        self._display: dict[str, str] = {}

    def get_node(self, node_id: str) -> Any:
        """The node's API dict (`class_type`, `inputs`); raises NodeNotFoundError."""
        node = self.ephemeral_prompt.get(node_id)
        if node is None:
            node = self.original_prompt.get(node_id)
            if node is None:
                raise NodeNotFoundError(f"Node {node_id} not found")
        return node

    def has_node(self, node_id: str) -> bool:
        return node_id in self.original_prompt or node_id in self.ephemeral_prompt

    def add_ephemeral_node(self, node_id: str, node_info: Any, parent_id: str, display_id: str) -> None:
        self.ephemeral_prompt[node_id] = node_info
        self.ephemeral_parents[node_id] = parent_id
        self.ephemeral_display[node_id] = display_id
        self._real[node_id] = self._real.get(parent_id, parent_id)

    def get_real_node_id(self, node_id: str) -> str:
        """The submitted node at the root of `node_id`'s parents (kept when a node is added, so
        a loop that re-expanded itself 1,000 times answers in O(1))."""
        return self._real.get(node_id, node_id)

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.ephemeral_parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        """Follow display ids to a submitted node; every node on the way remembers the answer."""
        known = self._display.get(node_id)
        if known is not None:
            return known
        path: list[str] = []
        seen: set[str] = set()
        current = node_id
        while current in self.ephemeral_display and current not in seen:
            if current in self._display:
                current = self._display[current]
                break
            seen.add(current)
            path.append(current)
            following = self.ephemeral_display[current]
            if following == current:
                break
            current = following
        for visited in path:
            self._display[visited] = current
        return current

    def all_node_ids(self) -> set[str]:
        return set(self.original_prompt) | set(self.ephemeral_prompt)

    def get_original_prompt(self) -> Mapping[str, Any]:
        return self.original_prompt

    # Mapping-style access, so code written against the plain prompt dict keeps working.
    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, str) and self.has_node(node_id)

    def __getitem__(self, node_id: str) -> Any:
        try:
            return self.get_node(node_id)
        except NodeNotFoundError:
            raise KeyError(node_id) from None

    def get(self, node_id: str, default: Any = None) -> Any:
        node = self.ephemeral_prompt.get(node_id)
        return node if node is not None else self.original_prompt.get(node_id, default)
