"""One named check per validation rule, each returning ComfyUI-shaped error dicts for one node.

`executor/validate.py` walks the graph and calls these; each check looks at one input (or
one node) and returns `[]` when it passes. The error vocabulary and message wording are
ComfyUI's (`required_input_missing`, `bad_linked_input`, `return_type_mismatch`,
`invalid_input_type`, `value_smaller_than_min`, `value_bigger_than_max`, `value_not_in_list`,
`custom_validation_failed`, `exception_during_validation`), so clients written for ComfyUI
show them unchanged. Loom adds `dependency_cycle`, `unexpected_input` (a link into an input the node neither
declares nor can take) and reports unknown classes per node.
"""
from __future__ import annotations

import inspect
import math
import traceback
from typing import Any, Callable, Mapping

from executor.node_call import function_takes
from executor.plan import as_link
from nodes.comfy_api.extension import resolve
from nodes.graph_builder import ExecutionBlocker
from nodes.spec import ANY, COMBO, MATCH_TYPE, FileIndex, InputSpec, NodeSpec

Error = dict[str, Any]
# ComfyUI shortens combo lists longer than this in its `value_not_in_list` details.
_LONG_LIST = 20


def make_error(kind: str, message: str, details: str, **extra_info: Any) -> Error:
    """An error in ComfyUI's shape: `{type, message, details, extra_info}`."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def input_config(spec: InputSpec, files: FileIndex | None = None) -> list[Any]:
    """ComfyUI's `input_config`: `[type or combo choices, options]`."""
    kind: Any = spec.resolve_choices(files) if spec.is_combo else spec.type
    return [kind, spec.options()]


def types_match(received: str, expected: str) -> bool:
    """ComfyUI's link rule: equal names, `*` or an io.MatchType socket on either side (ComfyUI
    leaves MatchType to the editor), a type whose `__ne__` says they match, or a shared member of
    the comma-separated unions (`"IMAGE,MASK"` accepts `MASK`)."""
    if received == expected or received in (ANY, MATCH_TYPE) or expected in (ANY, MATCH_TYPE):
        return True
    if not (received != expected) or not (expected != received):
        return True  # a pack's str subclass whose __ne__ says "matches" (AnyType idioms), as ComfyUI asks
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return bool(got & want) or ANY in got or ANY in want


def check_unknown_class(node_id: str, class_type: str, title: str | None) -> Error:
    """The node's class is not registered (ComfyUI's `missing_node_type`)."""
    return make_error("missing_node_type", f"Node '{title or class_type}' not found. "
                      "The custom node may not be installed.", f"Node ID '#{node_id}'",
                      node_id=node_id, class_type=class_type, node_title=title or class_type)


def check_required(spec: InputSpec, inputs: Mapping[str, Any]) -> list[Error]:
    """A required input has no value and no link."""
    if spec.optional or spec.hidden or spec.name in inputs:
        return []
    return [make_error("required_input_missing", "Required input is missing", spec.name, input_name=spec.name)]


def check_undeclared_link(spec: NodeSpec, name: str) -> list[Error]:
    """A link into an input the node does not declare: passed on as ComfyUI does (nodes read such inputs from
    `**kwargs`), so one the node's function cannot take is refused here rather than failing the run later."""
    if function_takes(spec, name):
        return []
    return [make_error("unexpected_input", f"'{name}' is not an input of {spec.class_type}", name,
                       input_name=name)]


def check_link(spec: InputSpec, value: Any, prompt: Mapping[str, Any], lookup: Callable[[str], NodeSpec | None],
               check_type: bool, received_types: dict[str, str]) -> list[Error]:
    """A linked input: well formed, to an existing node and output slot, of a matching type."""
    name = spec.name
    link = as_link(value)
    if link is None:
        return [make_error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                           name, input_name=name, input_config=input_config(spec), received_value=value)]
    source, slot = link
    source_node = prompt.get(source)
    if not isinstance(source_node, dict):
        return [make_error("bad_linked_input", "Bad linked input: the linked node does not exist",
                           f"{name}: node '{source}' is not in the prompt", input_name=name,
                           input_config=input_config(spec), received_value=value)]
    source_spec = lookup(source_node.get("class_type")) if isinstance(source_node.get("class_type"), str) else None
    if source_spec is None:
        return []  # the source node reports its own unknown class
    if not 0 <= slot < len(source_spec.outputs):
        return [make_error("bad_linked_input", "Bad linked input: output slot out of range",
                           f"{name}: node '{source}' ({source_spec.class_type}) has {len(source_spec.outputs)} "
                           f"output(s), not slot {slot}", input_name=name, input_config=input_config(spec),
                           received_value=value)]
    received = source_spec.outputs[slot].type
    received_types[name] = received
    expected = spec.type
    if spec.is_combo and received in (COMBO, ANY):
        return []
    if check_type and not types_match(received, expected):
        return [make_error("return_type_mismatch", "Return type mismatch between linked nodes",
                           f"{name}, received_type({received}) mismatch input_type({expected})",
                           input_name=name, input_config=input_config(spec), received_type=received,
                           linked_node=[source, slot])]
    return []


# Data that only a node makes: a constant (a string, a number) given for one is an error, not a
# crash at run time. Widget-like custom types are not listed, so packs' own widgets still work.
LINK_ONLY_TYPES = frozenset({
    "IMAGE", "MASK", "LATENT", "MODEL", "CLIP", "VAE", "CONDITIONING", "CONTROL_NET", "CLIP_VISION",
    "CLIP_VISION_OUTPUT", "STYLE_MODEL", "UPSCALE_MODEL", "GLIGEN", "NOISE", "GUIDER", "SAMPLER", "SIGMAS",
    "AUDIO", "VIDEO", "PHOTOMAKER", "LORA_MODEL", "HOOKS", "TIMESTEPS_RANGE", "LATENT_OPERATION"})
_COERCE: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def coerce_constant(spec: InputSpec, value: Any) -> tuple[Any, list[Error]]:
    """Convert a constant as ComfyUI does (`int("5")`, `float(3)`, `str(...)`, `bool(...)`,
    `{"__value__": v}` unwrapped); returns the converted value and any error."""
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    if spec.type in LINK_ONLY_TYPES and not spec.is_combo:
        return value, [make_error("invalid_input_type", f"Input {spec.name} of type {spec.type} needs a link to "
                                  f"another node's output, got a constant {type(value).__name__}",
                                  f"{spec.name}, {str(value)[:200]}", input_name=spec.name,
                                  input_config=input_config(spec), received_value=value)]
    convert = _COERCE.get(spec.type)
    if convert is None:
        return value, []
    try:
        converted = convert(value)
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ValueError(f"{value!r} is not a finite number")
        return converted, []
    except (TypeError, ValueError, OverflowError) as ex:
        return value, [make_error("invalid_input_type", f"Failed to convert an input value to a {spec.type} value",
                                  f"{spec.name}, {value}, {ex}", input_name=spec.name,
                                  input_config=input_config(spec), received_value=value, exception_message=str(ex))]


def check_range(spec: InputSpec, value: Any) -> list[Error]:
    """A number below the input's min or above its max."""
    if spec.type not in ("INT", "FLOAT") or isinstance(value, bool) or not isinstance(value, (int, float)):
        return []
    if spec.min is not None and value < spec.min:
        return [make_error("value_smaller_than_min", f"Value {value} smaller than min of {spec.min}", spec.name,
                           input_name=spec.name, input_config=input_config(spec), received_value=value)]
    if spec.max is not None and value > spec.max:
        return [make_error("value_bigger_than_max", f"Value {value} bigger than max of {spec.max}", spec.name,
                           input_name=spec.name, input_config=input_config(spec), received_value=value)]
    return []


def check_combo(spec: InputSpec, value: Any, files: FileIndex | None) -> list[Error]:
    """A combo value that is not one of the current choices (files are listed anew)."""
    if not spec.is_combo or spec.is_remote_combo:
        return []
    choices = spec.resolve_choices(files)
    try:
        if value in choices:
            return []
    except TypeError:
        pass
    if len(choices) > _LONG_LIST:
        list_info, config = f"(list of length {len(choices)})", None
    else:
        list_info, config = str(choices), [choices, spec.options()]
    return [make_error("value_not_in_list", "Value not in list", f"{spec.name}: '{value}' not in {list_info}",
                       input_name=spec.name, input_config=config, received_value=value)]


def custom_validation_args(spec: NodeSpec) -> tuple[frozenset[str], bool]:
    """The input names the node's VALIDATE_INPUTS takes, and whether it takes `**kwargs`."""
    func = spec.validate_inputs
    if func is None:
        return frozenset(), False
    has_kwargs = _has_varkw(func)
    if spec.validate_inputs_args is not None:
        return frozenset(spec.validate_inputs_args), has_kwargs
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return frozenset(), True
    names = frozenset(n for n, p in params.items()
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in ("self", "cls", "s"))
    return names, has_kwargs


def _has_varkw(func: Callable[..., Any]) -> bool:
    try:
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False


def check_custom(spec: NodeSpec, constants: Mapping[str, Any], received_types: Mapping[str, str],
                 args: frozenset[str], has_kwargs: bool) -> list[Error]:
    """Run the node's own VALIDATE_INPUTS on its inputs (constants as given, linked ones as
    None, hidden ones filled in), awaiting an async hook: a result other than True is
    `custom_validation_failed` (one error per input it was given, as ComfyUI reports), an
    exception is `exception_during_validation`."""
    func = spec.validate_inputs
    if func is None or not (args or has_kwargs):
        return []
    given = {k: v for k, v in constants.items() if has_kwargs or k in args}
    if "input_types" in args:
        given["input_types"] = dict(received_types)
    try:
        result = resolve(func(**given))  # an `async def` VALIDATE_INPUTS is awaited
    except Exception as ex:  # a node's own code may raise anything: report it, never crash
        return [make_error("exception_during_validation", "Exception when validating node", str(ex),
                           exception_type=f"{type(ex).__module__}.{type(ex).__qualname__}",
                           traceback=traceback.format_tb(ex.__traceback__))]
    if result is True or isinstance(result, ExecutionBlocker):
        return []
    suffix = "" if result is False else f" - {result}"
    names = list(given) or [""]
    return [make_error("custom_validation_failed", "Custom validation failed for node", f"{name}{suffix}",
                       input_name=name) for name in names]
