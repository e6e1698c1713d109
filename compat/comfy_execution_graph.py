"""ComfyUI's `comfy_execution.graph` for custom node packs: what packs import from it.

`ExecutionBlocker` is the executor's own class (`nodes.graph_builder`), so a blocker a pack
returns is recognised; `DynamicPrompt` is the running prompt the executor hands to nodes with a
hidden `DYNPROMPT` input (`executor.dynamic.DynamicGraph`: `get_node`, `has_node`,
`all_node_ids`, `get_original_prompt`, `get_real_node_id`, `get_display_node_id`,
`get_parent_node_id`); `get_input_info` reads one input's declaration the way ComfyUI's does.
"""
from __future__ import annotations

from typing import Any, Mapping

from executor.dynamic import DynamicGraph, NodeNotFoundError
from nodes.graph_builder import ExecutionBlocker

BINDING: Any  # set by compat.install_compat (unused here)

DynamicPrompt = DynamicGraph


class DependencyCycleError(Exception):
    """ComfyUI's name for a dependency cycle found while running."""


def get_input_info(class_def: type, input_name: str,
                   valid_inputs: Mapping[str, Any] | None = None) -> tuple[Any, str | None, Any]:
    """`(type, "required"|"optional"|"hidden", options)` of an input, or `(None, None, None)`."""
    valid_inputs = valid_inputs if valid_inputs is not None else class_def.INPUT_TYPES()
    for category in ("required", "optional", "hidden"):
        section = valid_inputs.get(category) or {}
        if input_name in section:
            entry = section[input_name]
            if category == "hidden":
                return entry, category, None
            kind = entry[0] if isinstance(entry, (tuple, list)) else entry
            options = entry[1] if isinstance(entry, (tuple, list)) and len(entry) > 1 else None
            return kind, category, options
    return None, None, None


__all__ = ["DependencyCycleError", "DynamicPrompt", "ExecutionBlocker", "NodeNotFoundError", "get_input_info"]
