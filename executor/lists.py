"""List semantics of node calls (ComfyUI's `INPUT_IS_LIST` / `OUTPUT_IS_LIST`).

Every value travelling along a link is a list: one item per call of the producing node. A
node that does not take lists runs once per element of its longest input list, the shorter
lists repeating their last item (as ComfyUI does); a node with `INPUT_IS_LIST` (or an input
declared `is_list`) receives the lists whole. Results are gathered per output: an output
marked is-list contributes its items, any other output one item per call.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Mapping

from nodes.spec import NodeOutput, NodeSpec, normalize_result


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


def map_calls(spec: NodeSpec, func: Callable[..., Any], inputs: Mapping[str, list[Any]],
              between: Callable[[], None] | None = None) -> list[NodeOutput]:
    """Call `func` once per list element (or once with whole lists) and normalise each result;
    `between` runs before every call after the first (the interrupt check)."""
    results: list[NodeOutput] = []
    for index in range(call_count(spec, inputs)):
        if index and between is not None:
            between()
        result = func(**slice_inputs(spec, inputs, index))
        if inspect.iscoroutine(result):  # an `async def` node function (newer ComfyUI allows them)
            result = asyncio.run(result)
        results.append(normalize_result(spec, result))
    return results


def merge_outputs(spec: NodeSpec, results: list[NodeOutput]) -> tuple[tuple[list[Any], ...], dict[str, Any] | None]:
    """Gather the calls' values per output slot, and merge their ui dicts key by key."""
    values: list[list[Any]] = []
    for slot, out in enumerate(spec.outputs):
        gathered: list[Any] = []
        for result in results:
            value = result.values[slot] if slot < len(result.values) else None
            if out.is_list:
                gathered.extend(value if isinstance(value, (list, tuple)) else [value])
            else:
                gathered.append(value)
        values.append(gathered)
    uis = [dict(r.ui) for r in results if r.ui is not None]
    if not uis:
        return tuple(values), None
    if len(uis) == 1:
        return tuple(values), uis[0]
    merged: dict[str, Any] = {}
    for ui in uis:
        for key, value in ui.items():
            merged.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return tuple(values), merged
