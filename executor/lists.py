"""List semantics of node calls (ComfyUI's `INPUT_IS_LIST` / `OUTPUT_IS_LIST`).

Every value travelling along a link is a list: one item per call of the producing node. A
node that does not take lists runs once per element of its longest input list, the shorter
lists repeating their last item (as ComfyUI does); a node with `INPUT_IS_LIST` (or an input
declared `is_list`) receives the lists whole. Results are gathered per output: an output
marked is-list contributes its items, any other output one item per call
(`executor/node_call.py` makes the calls and merges their results).
"""
from __future__ import annotations

from typing import Any, Mapping

from nodes.spec import NodeSpec


def list_input_names(spec: NodeSpec) -> frozenset[str]:
    """The inputs that receive whole lists."""
    if spec.input_is_list:
        return frozenset(i.name for i in spec.inputs)
    return frozenset(i.name for i in spec.inputs if i.is_list)


def call_count(spec: NodeSpec, inputs: Mapping[str, list[Any]]) -> int:
    """How many times the node runs for these input lists (0 when a mapped input is empty)."""
    if spec.input_is_list:
        return 1
    whole = list_input_names(spec)
    lengths = [len(v) for k, v in inputs.items() if k not in whole]
    if not lengths:
        return 1
    return 0 if min(lengths) == 0 else max(lengths)


def slice_inputs(spec: NodeSpec, inputs: Mapping[str, list[Any]], index: int) -> dict[str, Any]:
    """The keyword arguments of call `index`: item `index` of each mapped list (its last item
    when shorter), whole lists for list inputs."""
    whole = list_input_names(spec)
    return {k: (v if k in whole else v[index if index < len(v) else -1]) for k, v in inputs.items()}
