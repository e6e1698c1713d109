"""Adapter from ComfyUI-style node classes to Loom's `NodeSpec`, leaving the class unchanged.

A ComfyUI class declares `INPUT_TYPES()` (sections "required"/"optional"/"hidden" mapping
names to `(type, options)`), `RETURN_TYPES`, `RETURN_NAMES`, `FUNCTION`, `CATEGORY`,
`OUTPUT_NODE`, `INPUT_IS_LIST`, `OUTPUT_IS_LIST`, `IS_CHANGED`, `VALIDATE_INPUTS`,
`check_lazy_status`, `DESCRIPTION`, `OUTPUT_TOOLTIPS`, `DEPRECATED`, `EXPERIMENTAL`,
`NOT_IDEMPOTENT`, `SEARCH_ALIASES` (see ComfyUI's `server.py` `node_info` and
`execution.py`). `adapt_classic` maps all of these; combo choices are re-read from
`INPUT_TYPES()` whenever they are listed, as ComfyUI does, so file lists stay current.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from nodes.spec import (COMBO, HIDDEN_KINDS, InputSpec, NodeSpec, OutputSpec, SpecError,
                        validate_args)

# Option keys with a field of their own in `InputSpec`; every other key goes to `extra`.
_OPTION_FIELDS = {"default": "default", "min": "min", "max": "max", "step": "step", "round": "round",
                  "multiline": "multiline", "tooltip": "tooltip", "lazy": "lazy", "forceInput": "force_input"}
_SECTIONS = ("required", "optional", "hidden")


def _read_input_types(cls: type, class_type: str) -> Mapping[str, Any]:
    try:
        types = cls.INPUT_TYPES()
    except Exception as exc:  # a third-party hook: any failure becomes a declaration error
        raise SpecError(f"node {class_type}: INPUT_TYPES() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(types, Mapping):
        raise SpecError(f"node {class_type}: INPUT_TYPES() returned {type(types).__name__}, expected a dict")
    for section, entries in types.items():
        if section in _SECTIONS and not isinstance(entries, Mapping):
            raise SpecError(f"node {class_type}: INPUT_TYPES()['{section}'] is not a dict of inputs")
    return types


class _LiveChoices:
    """Combo choices read anew from the class's `INPUT_TYPES()` each time they are listed."""

    def __init__(self, cls: type, section: str, name: str, fallback: tuple[Any, ...]) -> None:
        self._cls, self._section, self._name, self._fallback = cls, section, name, fallback

    def __call__(self) -> list[Any]:
        try:
            entry = self._cls.INPUT_TYPES()[self._section][self._name]
        except Exception:  # a third-party hook: keep the choices read at registration
            return list(self._fallback)
        choices = _combo_choices(entry)
        return list(choices) if choices is not None else list(self._fallback)

    def __repr__(self) -> str:
        return f"<choices of {self._cls.__name__}.{self._name}>"


def _combo_choices(entry: Any) -> tuple[Any, ...] | None:
    """The choices of a combo entry (`[...]`, `([...], opts)` or `("COMBO", {"options": [...]})`)."""
    if isinstance(entry, list):
        return tuple(entry)
    if not isinstance(entry, tuple) or not entry:
        return None
    kind = entry[0]
    if isinstance(kind, (list, tuple)):
        return tuple(kind)
    if kind == COMBO and len(entry) > 1 and isinstance(entry[1], Mapping):
        return tuple(entry[1].get("options", ()) or ())
    return None


def _input_from_entry(cls: type, class_type: str, section: str, name: Any, entry: Any) -> InputSpec | None:
    """One `InputSpec` from an INPUT_TYPES entry; None for hidden kinds Loom does not fill."""
    if not isinstance(name, str) or not name:
        raise SpecError(f"node {class_type}: input name {name!r} in '{section}' is not a non-empty string")
    if section == "hidden":
        kind = entry[0] if isinstance(entry, (tuple, list)) and entry else entry
        if kind not in HIDDEN_KINDS:
            return None  # ComfyUI leaves unknown hidden kinds unfilled too
        return InputSpec(name=name, type=kind, hidden=kind)
    if isinstance(entry, list):
        entry = (entry,)
    if not isinstance(entry, tuple) or not entry:
        raise SpecError(f"node {class_type}: input '{name}' must be (type, options), got {entry!r}")
    if len(entry) > 1 and entry[1] is not None and not isinstance(entry[1], Mapping):
        raise SpecError(f"node {class_type}: options of input '{name}' must be a dict, got {entry[1]!r}")
    opts = dict(entry[1]) if len(entry) > 1 and entry[1] is not None else {}
    choices = _combo_choices(entry)
    if choices is not None:
        type_name: Any = COMBO
        opts.pop("options", None)
    else:
        type_name = entry[0]
        if not isinstance(type_name, str) or not type_name:
            raise SpecError(f"node {class_type}: input '{name}' has an invalid socket type {type_name!r}")
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in opts.items():
        if key in _OPTION_FIELDS:
            fields[_OPTION_FIELDS[key]] = value
        else:
            extra[key] = value
    for flag in ("multiline", "lazy", "force_input"):
        if flag in fields:
            fields[flag] = bool(fields[flag])
    if choices is not None:
        fields["choices"] = _LiveChoices(cls, section, name, choices)
    return InputSpec(name=name, type=type_name, optional=section == "optional", extra=extra, **fields)


def _inputs(cls: type, class_type: str) -> tuple[InputSpec, ...]:
    types = _read_input_types(cls, class_type)
    specs: list[InputSpec] = []
    seen: set[str] = set()
    for section in _SECTIONS:
        for name, entry in (types.get(section) or {}).items():
            if name in seen:
                continue  # in "required" and "optional" both: ComfyUI treats it as required
            spec = _input_from_entry(cls, class_type, section, name, entry)
            if spec is not None:
                specs.append(spec)
                seen.add(name)
    return tuple(specs)


def _per_output(value: Any, count: int, fill: Any) -> list[Any]:
    items = list(value) if isinstance(value, (list, tuple)) else []
    return (items + [fill] * count)[:count]


def _outputs(cls: type, class_type: str) -> tuple[OutputSpec, ...]:
    types = getattr(cls, "RETURN_TYPES", ())
    if isinstance(types, str) or not isinstance(types, (list, tuple)):
        raise SpecError(f"node {class_type}: RETURN_TYPES must be a tuple of type names, got {types!r}")
    count = len(types)
    names = _per_output(getattr(cls, "RETURN_NAMES", None), count, None)
    is_list = _per_output(getattr(cls, "OUTPUT_IS_LIST", None), count, False)
    tooltips = _per_output(getattr(cls, "OUTPUT_TOOLTIPS", None), count, None)
    outputs = []
    for index, kind in enumerate(types):
        if isinstance(kind, (list, tuple)):
            kind = COMBO  # an output that feeds combo inputs
        if not isinstance(kind, str) or not kind:
            raise SpecError(f"node {class_type}: RETURN_TYPES[{index}] is not a type name ({kind!r})")
        name = names[index] if isinstance(names[index], str) and names[index] else None
        outputs.append(OutputSpec(type=kind, name=name, is_list=bool(is_list[index]), tooltip=tooltips[index]))
    return tuple(outputs)


def _function_name(cls: type, class_type: str) -> str:
    name = getattr(cls, "FUNCTION", None)
    if not isinstance(name, str) or not name:
        raise SpecError(f"node {class_type}: FUNCTION (the name of the method to call) is missing")
    if not callable(getattr(cls, name, None)):
        raise SpecError(f"node {class_type}: FUNCTION names '{name}', which is not a method of the class")
    return name


def _hook(cls: type, name: str) -> Callable[..., Any] | None:
    hook = getattr(cls, name, None)
    return hook if callable(hook) else None


def adapt_classic(cls: type, class_type: str, *, display_name: str | None = None,
                  python_module: str = "nodes") -> NodeSpec:
    """The `NodeSpec` of a ComfyUI-style class, registered under `class_type`.

    Raises `SpecError` naming the node when the declaration is malformed (INPUT_TYPES raising
    or returning nonsense, a missing FUNCTION, a default outside min/max, a duplicate input).
    """
    if not isinstance(cls, type):
        raise SpecError(f"node {class_type}: expected a class, got {type(cls).__name__}")
    if not callable(getattr(cls, "INPUT_TYPES", None)):
        raise SpecError(f"node {class_type}: class {cls.__name__} has no INPUT_TYPES()")
    validate = _hook(cls, "VALIDATE_INPUTS")
    info_extra: dict[str, Any] = {}
    aliases = getattr(cls, "SEARCH_ALIASES", None)
    if aliases:
        info_extra["search_aliases"] = list(aliases)
    return NodeSpec(
        class_type=class_type,
        inputs=_inputs(cls, class_type),
        outputs=_outputs(cls, class_type),
        instantiate=cls,
        function_name=_function_name(cls, class_type),
        display_name=display_name,
        category=str(getattr(cls, "CATEGORY", "sd")),
        description=str(getattr(cls, "DESCRIPTION", "") or ""),
        output_node=getattr(cls, "OUTPUT_NODE", False) is True,
        deprecated=bool(getattr(cls, "DEPRECATED", False)),
        experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        python_module=str(getattr(cls, "RELATIVE_PYTHON_MODULE", None) or python_module),
        is_changed=_hook(cls, "IS_CHANGED"),
        validate_inputs=validate,
        validate_inputs_args=validate_args(validate),
        check_lazy_status=_hook(cls, "check_lazy_status"),
        source=cls,
        info_extra=info_extra,
    )


def is_classic(obj: Any) -> bool:
    """True for a ComfyUI-style node class (it has INPUT_TYPES and FUNCTION)."""
    return isinstance(obj, type) and callable(getattr(obj, "INPUT_TYPES", None)) and hasattr(obj, "FUNCTION")
