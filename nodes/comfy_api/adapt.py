"""Adapter from a schema-API class (`io.ComfyNode`) to Loom's `NodeSpec`.

The class's classic view (`INPUT_TYPES()`, `RETURN_TYPES`, ... derived from its schema, see
`nodes/comfy_api/io.py`) goes through `nodes.classic.adapt_classic`; this module then adds what
only schema nodes have: the hooks `fingerprint_inputs` / `validate_inputs` /
`check_lazy_status` (only when the class overrides them: ComfyUI's defaults must not replace
the executor's default checks), hidden values delivered as `cls.hidden` rather than keyword
arguments, async `execute` (handed to the executor as a coroutine), and `io.NodeOutput` / ui
helper results, including `expand=` graphs and `block_execution=`.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable

from nodes.classic import adapt_classic
from nodes.comfy_api import io
from nodes.comfy_api.dynamic import fold_dynamic, info_layout, output_matchtypes
from nodes.comfy_api.ui import ui_dict
from nodes.graph_builder import ExecutionBlocker
from nodes.spec import NodeOutput, NodeSpec, SpecError, validate_args


def is_schema_node(obj: Any) -> bool:
    """True for a schema-API node class."""
    return isinstance(obj, type) and issubclass(obj, io.ComfyNode) and obj is not io.ComfyNode


def _overridden(cls: type, name: str) -> Callable[..., Any] | None:
    """`cls.<name>` when a subclass defines it, None when only `ComfyNode`'s default exists."""
    for klass in cls.__mro__:
        if klass is io.ComfyNode:
            return None
        if name in klass.__dict__:
            return getattr(cls, name)
    return None


class SchemaCall:
    """The object the executor calls for a schema node: splits off the hidden values into
    `cls.hidden` (on a per-call subclass, as ComfyUI clones the class) and normalises the result."""

    def __init__(self, cls: type, hidden_names: frozenset[str]) -> None:
        self.cls = cls
        self.hidden_names = hidden_names

    def EXECUTE_NORMALIZED(self, **inputs: Any) -> NodeOutput:  # noqa: N802 - ComfyUI's name
        hidden = {name: inputs.pop(name) for name in list(inputs) if name in self.hidden_names}
        bound = type(self.cls.__name__, (self.cls,), {"hidden": io.HiddenHolder(**hidden),
                                                      "__module__": self.cls.__module__})
        value = bound.execute(**fold_dynamic(self.cls.GET_SCHEMA().inputs, inputs))
        if inspect.isawaitable(value):  # an async execute: awaited on the prompt run's loop
            return self._finish_async(value)
        return _normalized(value)

    async def _finish_async(self, pending: Any) -> Any:
        return _normalized(await pending)


def _normalized(value: Any) -> Any:
    """A schema node's result in the executor's terms: an expansion dict, a blocker, or values."""
    out = io.normalize_output(value)
    if out.block_execution is not None:
        return ExecutionBlocker(out.block_execution)
    if out.expand is not None:
        expanded: dict[str, Any] = {"result": tuple(out.args), "expand": out.expand}
        ui = ui_dict(out.ui)
        if ui:
            expanded["ui"] = ui
        return expanded
    return NodeOutput(values=tuple(out.args), ui=ui_dict(out.ui))


def _lazy_hook(hook: Callable[..., Any] | None, hidden_names: frozenset[str]) -> Callable[..., Any] | None:
    """`check_lazy_status` without the hidden values, and only the arguments it names."""
    if hook is None:
        return None
    params = inspect.signature(hook).parameters.values()
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = {p.name for p in params}

    def check_lazy_status(**inputs: Any) -> Any:
        kwargs = {k: v for k, v in inputs.items() if k not in hidden_names and (takes_all or k in names)}
        return hook(**kwargs)
    return check_lazy_status


def adapt_schema_node(cls: type, *, python_module: str = "nodes") -> NodeSpec:
    """The `NodeSpec` of a schema node class, registered under its schema's `node_id`.

    Raises `SpecError` naming the class when its schema cannot be built or is malformed.
    """
    if not is_schema_node(cls):
        raise SpecError(f"{cls!r} is not an io.ComfyNode subclass")
    try:
        schema = cls.GET_SCHEMA()
    except Exception as exc:  # a third-party declaration: any failure is a declaration error
        raise SpecError(f"node class {cls.__name__}: define_schema() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(schema.node_id, str) or not schema.node_id:
        raise SpecError(f"node class {cls.__name__}: its schema has no node_id")
    spec = adapt_classic(cls, schema.node_id, display_name=schema.display_name, python_module=python_module)
    hidden_names = frozenset(h.name for h in schema.hidden)
    validate = _overridden(cls, "validate_inputs")
    extra = dict(spec.info_extra)
    if schema.search_aliases:
        extra["search_aliases"] = list(schema.search_aliases)
    matchtypes = output_matchtypes(schema.outputs)
    if matchtypes is not None:
        extra["output_matchtypes"] = matchtypes
    dynamic = any(callable(getattr(item, "info_entry", None)) for item in schema.inputs)
    return dataclasses.replace(
        spec,
        instantiate=lambda: SchemaCall(cls, hidden_names),
        function_name="EXECUTE_NORMALIZED",
        is_changed=_overridden(cls, "fingerprint_inputs"),
        validate_inputs=validate,
        validate_inputs_args=validate_args(validate),
        check_lazy_status=_lazy_hook(_overridden(cls, "check_lazy_status"), hidden_names),
        info_extra=extra,
        accepts_all_inputs=bool(getattr(schema, "accept_all_inputs", False)),
        info_inputs=functools.partial(_listed_inputs, cls) if dynamic else None,
    )


def _listed_inputs(cls: type) -> list[Any]:
    """What /object_info lists for a schema node with dynamic inputs, from its schema read anew
    (as ComfyUI re-reads it for each listing)."""
    schema = cls.GET_SCHEMA()
    return info_layout(schema.inputs, [h.name for h in schema.hidden])
