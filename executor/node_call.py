"""One node's calls and what they returned: execution blockers, async functions, expansions.

`invoke` calls a node's function once per list element (`executor/lists.py`); an element whose
inputs hold an `ExecutionBlocker` is not called and yields the blocker instead; an `async def`
function becomes a task on the run's event loop (given one turn at once, so an async node that
never awaits finishes in place). `classify` turns the per-call returns into a `CallResult`:
plain values per output slot, or, when any call returned `{"expand": graph}`, the graphs to
splice in with the per-call results that will be resolved once the graphs have run (ComfyUI's
`get_output_from_returns`).
"""
from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping

from executor.lists import call_count, list_input_names, slice_inputs
from nodes.graph_builder import ExecutionBlocker, GraphBuilder
from nodes.spec import NodeOutput, NodeSpec


@dataclass
class CallResult:
    """What a node's calls produced: `values` per output slot (when nothing expanded), `ui`,
    and for an expansion `pieces`: per call `(graph or None, result tuple)`."""

    values: tuple[list[Any], ...] = ()
    ui: dict[str, Any] | None = None
    pieces: list[tuple[dict[str, Any] | None, tuple[Any, ...]]] = field(default_factory=list)

    @property
    def expands(self) -> bool:
        return any(graph is not None for graph, _ in self.pieces)


def find_blocker(spec: NodeSpec, kwargs: Mapping[str, Any]) -> ExecutionBlocker | None:
    """The first blocker among one call's inputs (inside whole lists too)."""
    whole = list_input_names(spec)
    for name, value in kwargs.items():
        if name in whole and isinstance(value, list):
            for item in value:
                if isinstance(item, ExecutionBlocker):
                    return item
        elif isinstance(value, ExecutionBlocker):
            return value
    return None


async def invoke(spec: NodeSpec, func: Callable[..., Any], inputs: Mapping[str, list[Any]], node_id: str, *,
                 between: Callable[[], None], on_block: Callable[[ExecutionBlocker], Any]) -> list[Any]:
    """Call `func` per list element; returns per call its return value, a blocker, or a still
    running `asyncio.Task`."""
    returns: list[Any] = []
    for index in range(call_count(spec, inputs)):
        if index:
            between()
        kwargs = slice_inputs(spec, inputs, index)
        blocker = find_blocker(spec, kwargs)
        if blocker is not None:
            returns.append(on_block(blocker))
            continue
        GraphBuilder.set_default_prefix(node_id, index, 0)
        value = func(**kwargs)
        if inspect.isawaitable(value):
            task = asyncio.ensure_future(value)
            await asyncio.sleep(0)
            value = task.result() if task.done() else task
        returns.append(value)
    return returns


async def call_hook(hook: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """A class-level hook (IS_CHANGED, VALIDATE_INPUTS, check_lazy_status) that may be async."""
    value = hook(**kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


def _blocked(spec: NodeSpec, blocker: ExecutionBlocker) -> tuple[Any, ...]:
    return tuple([blocker] * len(spec.outputs))


def _result_tuple(spec: NodeSpec, result: Any) -> tuple[Any, ...]:
    if isinstance(result, ExecutionBlocker):
        return _blocked(spec, result)
    if result is None:
        if spec.outputs:
            raise TypeError(f"node {spec.class_type} returned no result for {len(spec.outputs)} output(s)")
        return ()
    if not isinstance(result, (tuple, list)):
        raise TypeError(f"node {spec.class_type} returned {type(result).__name__}; expected a tuple of "
                        f"{len(spec.outputs)} output(s) or a dict with 'result' and 'ui'")
    if result and len(result) != len(spec.outputs):
        raise TypeError(f"node {spec.class_type} returned {len(result)} value(s) for {len(spec.outputs)} output(s)")
    return tuple(result)


def _one(spec: NodeSpec, value: Any) -> tuple[dict[str, Any] | None, tuple[Any, ...], Any]:
    """`(graph, result, ui)` of one call's return value."""
    if isinstance(value, ExecutionBlocker):
        return None, _blocked(spec, value), None
    if isinstance(value, NodeOutput):
        return None, _result_tuple(spec, value.values) if spec.outputs or value.values else (), value.ui
    if isinstance(value, dict):
        graph = value.get("expand")
        if graph is not None and not isinstance(graph, dict):
            graph = graph.finalize() if hasattr(graph, "finalize") else graph
        if graph is not None and not isinstance(graph, dict):
            raise TypeError(f"node {spec.class_type} returned an 'expand' that is not a graph ({type(graph).__name__})")
        result = _result_tuple(spec, value["result"]) if "result" in value else ()
        return graph, result, value.get("ui")
    return None, _result_tuple(spec, value), None


def classify(spec: NodeSpec, returns: list[Any]) -> CallResult:
    """Turn per-call returns (tasks already awaited) into a `CallResult`."""
    pieces: list[tuple[dict[str, Any] | None, tuple[Any, ...]]] = []
    uis: list[Mapping[str, Any]] = []
    for value in returns:
        graph, result, ui = _one(spec, value)
        pieces.append((graph, result))
        if ui:
            uis.append(ui)
    ui = merge_uis(uis)
    if any(graph is not None for graph, _ in pieces):
        return CallResult(ui=ui, pieces=pieces)
    return CallResult(values=merge_values(spec, [r for _, r in pieces]), ui=ui)


def merge_values(spec: NodeSpec, results: list[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """Per output slot, the values of all calls; an is-list output contributes its items (a
    blocker in place of a list counts as one item), as ComfyUI's `merge_result_data`."""
    values: list[list[Any]] = []
    for slot, out in enumerate(spec.outputs):
        gathered: list[Any] = []
        for result in results:
            value = result[slot] if slot < len(result) else None
            if out.is_list and not isinstance(value, ExecutionBlocker):
                gathered.extend(value if isinstance(value, (list, tuple)) else [value])
            else:
                gathered.append(value)
        values.append(gathered)
    return tuple(values)


def merge_uis(uis: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The calls' ui dicts merged key by key (lists concatenated)."""
    if not uis:
        return None
    if len(uis) == 1:
        return dict(uis[0])
    merged: dict[str, Any] = {}
    for ui in uis:
        for key, value in ui.items():
            merged.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return merged


@lru_cache(maxsize=1024)
def _parameters(func: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return frozenset(), True
    names = frozenset(n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return names, any(p.kind == p.VAR_KEYWORD for p in params.values())


def function_takes(spec: NodeSpec, name: str) -> bool:
    """Whether the node's function can be called with keyword `name` (True where that cannot be told: no class
    to look at, a signature inspect cannot read, `**kwargs`, or a schema node passed every input)."""
    if spec.accepts_all_inputs or not isinstance(spec.source, type):
        return True
    func = getattr(spec.source, spec.function_name, None)
    if func is None:
        return True
    try:
        names, has_kwargs = _parameters(func)
    except TypeError:  # unhashable callable
        return True
    return has_kwargs or name in names


def accepted(func: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments `func` can take (all of them when it has `**kwargs`)."""
    try:
        names, has_kwargs = _parameters(func)
    except TypeError:  # unhashable callable
        return dict(kwargs)
    return dict(kwargs) if has_kwargs else {k: v for k, v in kwargs.items() if k in names}
