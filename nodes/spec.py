"""The typed node declaration: inputs, outputs and behaviour of one node class.

Everything else is derived from a `NodeSpec`: the `/object_info` entry (in ComfyUI's exact JSON
shape), the validation rules of `executor/validate.py` and the call made by `executor/run.py`.
Loom's own nodes subclass `Node` and declare `INPUTS`/`OUTPUTS`; ComfyUI-style classes are
adapted into the same spec by `nodes/classic.py`. A spec is checked when it is built, so a
malformed node fails at start-up with a message naming the node and the problem.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

ANY = "*"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"  # the schema API's io.MatchType sockets: any link validates (ComfyUI's rule)
PRIMITIVE_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
COMBO = "COMBO"
# Hidden inputs the executor fills in, by kind (ComfyUI's names).
HIDDEN_KINDS = ("PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG")


class SpecError(ValueError):
    """A node declaration is malformed; the message names the node and the problem."""


class FileIndex(Protocol):
    """What a `FileList` needs to list files: implemented by `folders.Folders`."""

    def list_files(self, kind: str) -> list[str]: ...


@dataclass(frozen=True)
class FileList:
    """Combo choices that are the files of a model folder kind ("checkpoints") or "input".

    Resolved at the time of each `/object_info` request or validation, so new files appear
    without a restart.
    """

    kind: str
    suffixes: tuple[str, ...] = ()

    def resolve(self, files: FileIndex | None) -> list[str]:
        if files is None:
            return []
        names = files.list_files(self.kind)
        if self.suffixes:
            names = [n for n in names if n.lower().endswith(self.suffixes)]
        return names


Choices = tuple[Any, ...] | FileList | Callable[[], Sequence[Any]]


@dataclass(frozen=True)
class InputSpec:
    """One input socket or widget of a node."""

    name: str
    type: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    round: float | bool | None = None
    choices: Choices | None = None
    multiline: bool = False
    tooltip: str | None = None
    optional: bool = False
    hidden: str | None = None
    lazy: bool = False
    force_input: bool = False
    is_list: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_combo(self) -> bool:
        return self.type == COMBO

    @property
    def is_remote_combo(self) -> bool:
        """A combo without a fixed list, whose choices the editor fetches from `extra["remote"]["route"]`
        (ComfyUI's `("COMBO", {"remote": ...})`); its value is checked by the node's own validation."""
        return self.is_combo and self.choices is None and "remote" in self.extra

    @property
    def is_widget(self) -> bool:
        """True when the value is normally typed in the editor rather than linked."""
        return (self.type in PRIMITIVE_TYPES or self.is_combo) and not self.force_input and not self.hidden

    @property
    def section(self) -> str:
        return "hidden" if self.hidden else ("optional" if self.optional else "required")

    def resolve_choices(self, files: FileIndex | None = None) -> list[Any]:
        """The current combo choices (files are listed anew each call)."""
        if self.choices is None:
            return []
        if isinstance(self.choices, FileList):
            return self.choices.resolve(files)
        if callable(self.choices):
            return list(self.choices())
        return list(self.choices)

    def options(self) -> dict[str, Any]:
        """The options dict of the `/object_info` entry (ComfyUI's keys)."""
        opts: dict[str, Any] = {}
        if self.default is not None:
            opts["default"] = self.default
        for key in ("min", "max", "step", "round"):
            value = getattr(self, key)
            if value is not None:
                opts[key] = value
        if self.multiline:
            opts["multiline"] = True
        if self.tooltip:
            opts["tooltip"] = self.tooltip
        if self.lazy:
            opts["lazy"] = True
        if self.force_input:
            opts["forceInput"] = True
        opts.update(self.extra)
        return opts

    def object_info_entry(self, files: FileIndex | None = None) -> Any:
        """`[type, options]` (a combo's type is its list of choices), or the kind for hidden inputs."""
        if self.hidden:
            return self.hidden
        kind: Any = self.resolve_choices(files) if self.is_combo and not self.is_remote_combo else self.type
        opts = self.options()
        return [kind, opts] if opts else [kind]


@dataclass(frozen=True)
class OutputSpec:
    """One output socket of a node."""

    type: str
    name: str | None = None
    is_list: bool = False
    tooltip: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.type


@dataclass(frozen=True)
class NodeOutput:
    """A node's normalised result: one value per output, and what it shows in the UI."""

    values: tuple[Any, ...] = ()
    ui: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class NodeSpec:
    """The whole declaration of one node class.

    `instantiate()` makes the object whose `function_name` method is called with the inputs as
    keyword arguments; the executor keeps one instance per node id, as ComfyUI does.
    `is_changed`, `validate_inputs` and `check_lazy_status` are optional callables taking
    keyword inputs (`validate_inputs` only those named in `validate_inputs_args`, plus
    `input_types` when that name is listed).
    """

    class_type: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    instantiate: Callable[[], Any]
    function_name: str = "execute"
    display_name: str | None = None
    category: str = "loom"
    description: str = ""
    output_node: bool = False
    deprecated: bool = False
    experimental: bool = False
    not_idempotent: bool = False
    input_is_list: bool = False
    python_module: str = "nodes"
    is_changed: Callable[..., Any] | None = None
    validate_inputs: Callable[..., Any] | None = None
    validate_inputs_args: frozenset[str] | None = None
    check_lazy_status: Callable[..., Any] | None = None
    source: Any = None
    info_extra: Mapping[str, Any] = field(default_factory=dict)
    accepts_all_inputs: bool = False  # undeclared constant inputs are passed too (schema API)
    # What /object_info lists, when it is not `inputs` one by one: names of `inputs` and
    # (section, name, entry) items given as they are (a schema node's dynamic inputs: ComfyUI
    # lists the Autogrow / DynamicCombo itself, `inputs` has its dotted sockets). Called per listing.
    info_inputs: Callable[[], Sequence[str | tuple[str, str, Any]]] | None = None

    def __post_init__(self) -> None:
        check_spec(self)

    def lazy_status(self, instance: Any, **inputs: Any) -> list[str]:
        """Names of the lazy inputs the node still needs (its `check_lazy_status` hook).

        The hook is looked up on the node's instance first, so ComfyUI's instance methods
        (`def check_lazy_status(self, ...)`) work as well as Loom's static/class methods.
        """
        hook = self.check_lazy_status
        if hook is None:
            return []
        name = getattr(hook, "__name__", None)
        method = getattr(instance, name, None) if instance is not None and name else None
        result = (method if callable(method) else hook)(**inputs)
        if result is None:
            return []
        if isinstance(result, str):
            return [result]
        return list(result)

    async def lazy_status_async(self, instance: Any, **inputs: Any) -> list[str]:
        """`lazy_status` for hooks that may be `async def` (awaited on the run's loop)."""
        hook = self.check_lazy_status
        if hook is None:
            return []
        name = getattr(hook, "__name__", None)
        method = getattr(instance, name, None) if instance is not None and name else None
        result = (method if callable(method) else hook)(**inputs)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return []
        if isinstance(result, str):
            return [result]
        return list(result)

    def input(self, name: str) -> InputSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    @property
    def visible_inputs(self) -> tuple[InputSpec, ...]:
        return tuple(i for i in self.inputs if not i.hidden)

    def object_info(self, files: FileIndex | None = None) -> dict[str, Any]:
        """The `/object_info/{class}` entry, in ComfyUI's JSON shape."""
        sections: dict[str, dict[str, Any]] = {"required": {}, "optional": {}, "hidden": {}}
        by_name = {spec.name: spec for spec in self.inputs}
        for item in self.info_inputs() if self.info_inputs is not None else by_name:
            if isinstance(item, str):
                spec = by_name.get(item)
                if spec is not None:
                    sections[spec.section][spec.name] = spec.object_info_entry(files)
            else:
                section, name, entry = item
                sections[section][name] = entry
        info: dict[str, Any] = {
            "input": {k: v for k, v in sections.items() if v or k == "required"},
            "input_order": {k: list(v) for k, v in sections.items() if v or k == "required"},
            "output": [o.type for o in self.outputs],
            "output_is_list": [o.is_list for o in self.outputs],
            "output_name": [o.display_name for o in self.outputs],
            "name": self.class_type,
            "display_name": self.display_name or self.class_type,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        if any(o.tooltip for o in self.outputs):
            info["output_tooltips"] = [o.tooltip or "" for o in self.outputs]
        if self.deprecated:
            info["deprecated"] = True
        if self.experimental:
            info["experimental"] = True
        info.update(self.info_extra)
        return info


def _check_number_input(node: str, spec: InputSpec) -> None:
    lo, hi = spec.min, spec.max
    if lo is not None and hi is not None and lo > hi:
        raise SpecError(f"node {node}: input '{spec.name}' has min {lo} above max {hi}")
    default = spec.default
    if default is None:
        return
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise SpecError(f"node {node}: input '{spec.name}' of type {spec.type} has non-numeric default {default!r}")
    if isinstance(default, float) and math.isnan(default):
        raise SpecError(f"node {node}: input '{spec.name}' has a NaN default")
    if (lo is not None and default < lo) or (hi is not None and default > hi):
        raise SpecError(f"node {node}: input '{spec.name}' default {default} is outside [{lo}, {hi}]")


def _check_input(node: str, spec: InputSpec) -> None:
    if not isinstance(spec.name, str) or not spec.name:
        raise SpecError(f"node {node}: an input has an empty or non-string name ({spec.name!r})")
    if not isinstance(spec.type, str) or not spec.type:
        raise SpecError(f"node {node}: input '{spec.name}' has no socket type ({spec.type!r})")
    if spec.hidden is not None and spec.hidden not in HIDDEN_KINDS:
        raise SpecError(f"node {node}: hidden input '{spec.name}' has unknown kind {spec.hidden!r}; "
                        f"expected one of {', '.join(HIDDEN_KINDS)}")
    if spec.type in ("INT", "FLOAT"):
        _check_number_input(node, spec)
    if spec.is_combo:
        if spec.choices is None and not spec.is_remote_combo:
            raise SpecError(f"node {node}: combo input '{spec.name}' has no choices")
        if isinstance(spec.choices, tuple) and spec.default is not None and spec.default not in spec.choices:
            raise SpecError(f"node {node}: combo input '{spec.name}' default {spec.default!r} is not one of its choices")


def check_spec(spec: NodeSpec) -> None:
    """Raise `SpecError` if the declaration is malformed (called when a spec is built)."""
    node = spec.class_type
    if not isinstance(node, str) or not node:
        raise SpecError(f"a node has an empty or non-string class name ({node!r})")
    seen: set[str] = set()
    for item in spec.inputs:
        if not isinstance(item, InputSpec):
            raise SpecError(f"node {node}: inputs must be InputSpec, got {type(item).__name__}")
        _check_input(node, item)
        if item.name in seen:
            raise SpecError(f"node {node}: duplicate input name '{item.name}'")
        seen.add(item.name)
    for index, out in enumerate(spec.outputs):
        if not isinstance(out, OutputSpec) or not isinstance(out.type, str) or not out.type:
            raise SpecError(f"node {node}: output {index} is malformed ({out!r})")
    if not callable(spec.instantiate):
        raise SpecError(f"node {node}: nothing to instantiate")
    if isinstance(spec.source, type) and issubclass(spec.source, Node):
        _check_execute_signature(node, spec)


def _check_execute_signature(node: str, spec: NodeSpec) -> None:
    """A typed node's `execute` takes exactly its declared inputs: every declared input is a
    parameter (or `**kwargs` takes it), and every parameter is a declared input."""
    execute = getattr(spec.source, spec.function_name)
    try:
        params = list(inspect.signature(execute).parameters.values())[1:]  # past `self`
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        raise SpecError(f"node {node}: execute must take its inputs by name, not *args")
    named = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                    inspect.Parameter.KEYWORD_ONLY)}
    declared = {item.name for item in spec.inputs}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params) and declared - named:
        raise SpecError(f"node {node}: execute does not take the declared input(s) {sorted(declared - named)}")
    if named - declared:
        raise SpecError(f"node {node}: execute takes {sorted(named - declared)}, which are not declared in INPUTS")


def validate_args(func: Callable[..., Any] | None) -> frozenset[str] | None:
    """The input names a validate hook receives (its parameters), or None for all (`**kwargs`).

    As in ComfyUI, inputs a VALIDATE_INPUTS hook names are checked by the hook instead of the
    default type/range/combo checks; `input_types` asks for the linked inputs' types.
    """
    if func is None:
        return None
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                          inspect.Parameter.KEYWORD_ONLY))


# ---- Loom's typed declaration API -------------------------------------------------------------

def Int(name: str, default: int | None = 0, *, min: int | None = None, max: int | None = None, step: int | None = None,
        **kw: Any) -> InputSpec:
    """An INT widget (`control_after_generate=True` in `extra` for seeds)."""
    return _widget(name, "INT", default, min=min, max=max, step=step, **kw)


def Float(name: str, default: float | None = 0.0, *, min: float | None = None, max: float | None = None,
          step: float | None = None, round: float | bool | None = None, **kw: Any) -> InputSpec:
    """A FLOAT widget."""
    return _widget(name, "FLOAT", default, min=min, max=max, step=step, round=round, **kw)


def String(name: str, default: str | None = "", *, multiline: bool = False, **kw: Any) -> InputSpec:
    """A STRING widget."""
    return _widget(name, "STRING", default, multiline=multiline, **kw)


def Boolean(name: str, default: bool | None = False, **kw: Any) -> InputSpec:
    """A BOOLEAN toggle."""
    return _widget(name, "BOOLEAN", default, **kw)


def Combo(name: str, choices: Choices, default: Any = None, **kw: Any) -> InputSpec:
    """A choice among fixed values, or among the files of a folder kind (`FileList`)."""
    return _widget(name, COMBO, default, choices=choices, **kw)


def Input(name: str, type: str, **kw: Any) -> InputSpec:
    """A linked socket of any type (`MODEL`, `IMAGE`, a custom type, `*`)."""
    return InputSpec(name=name, type=type, **_split_extra(kw))


def Hidden(name: str, kind: str) -> InputSpec:
    """A hidden input the executor fills in (`PROMPT`, `EXTRA_PNGINFO`, `UNIQUE_ID`)."""
    return InputSpec(name=name, type=kind, hidden=kind)


def Output(type: str, name: str | None = None, *, is_list: bool = False, tooltip: str | None = None) -> OutputSpec:
    """An output socket."""
    return OutputSpec(type=type, name=name, is_list=is_list, tooltip=tooltip)


_FIELDS = {"default", "min", "max", "step", "round", "choices", "multiline", "tooltip", "optional", "hidden",
           "lazy", "force_input", "is_list"}


def _split_extra(kw: dict[str, Any]) -> dict[str, Any]:
    known = {k: v for k, v in kw.items() if k in _FIELDS}
    extra = {k: v for k, v in kw.items() if k not in _FIELDS}
    if "extra" in extra:
        extra.update(extra.pop("extra"))
    if extra:
        known["extra"] = extra
    return known


def _widget(name: str, type: str, default: Any, **kw: Any) -> InputSpec:
    # False means "not set" except for `round`, where ComfyUI declares round=False (no rounding) explicitly.
    kw = {k: v for k, v in kw.items() if v is not None and v is not False or k == "optional"
          or (k == "round" and v is False)}
    return InputSpec(name=name, type=type, default=default, **_split_extra(kw))


class Node:
    """Base class of Loom's typed nodes.

    Subclasses declare `INPUTS` and `OUTPUTS` and implement `execute(**inputs)`, returning a
    tuple (one value per output), a `NodeOutput`, or ComfyUI's `{"ui": ..., "result": ...}`.
    Optional hooks, all static or class methods taking the inputs as keywords:
    `fingerprint` (ComfyUI's IS_CHANGED: a value that changes when the output would, NaN for
    "always rerun"), `validate` (True, or a message), `check_lazy` (names of lazy inputs needed).
    The class docstring is the node's description.
    """

    NAME: ClassVar[str | None] = None
    DISPLAY_NAME: ClassVar[str | None] = None
    CATEGORY: ClassVar[str] = "loom"
    INPUTS: ClassVar[Sequence[InputSpec]] = ()
    OUTPUTS: ClassVar[Sequence[OutputSpec]] = ()
    OUTPUT_NODE: ClassVar[bool] = False
    NOT_IDEMPOTENT: ClassVar[bool] = False
    INPUT_IS_LIST: ClassVar[bool] = False
    DEPRECATED: ClassVar[bool] = False
    EXPERIMENTAL: ClassVar[bool] = False
    SEARCH_ALIASES: ClassVar[Sequence[str]] = ()

    def execute(self, **inputs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def spec(cls, python_module: str | None = None) -> NodeSpec:
        """Build (and check) this class's declaration."""
        doc = (cls.__doc__ or "").strip()
        return NodeSpec(
            class_type=cls.NAME or cls.__name__,
            inputs=tuple(cls.INPUTS),
            outputs=tuple(cls.OUTPUTS),
            instantiate=cls,
            function_name="execute",
            display_name=cls.DISPLAY_NAME,
            category=cls.CATEGORY,
            description=doc,
            output_node=cls.OUTPUT_NODE,
            deprecated=cls.DEPRECATED,
            experimental=cls.EXPERIMENTAL,
            not_idempotent=cls.NOT_IDEMPOTENT,
            input_is_list=cls.INPUT_IS_LIST,
            python_module=python_module or cls.__module__,
            is_changed=getattr(cls, "fingerprint", None),
            validate_inputs=getattr(cls, "validate", None),
            validate_inputs_args=validate_args(getattr(cls, "validate", None)),
            check_lazy_status=getattr(cls, "check_lazy", None),
            source=cls,
            info_extra={"search_aliases": list(cls.SEARCH_ALIASES)} if cls.SEARCH_ALIASES else {},
        )


def normalize_result(spec: NodeSpec, result: Any) -> NodeOutput:
    """Turn what a node returned into a `NodeOutput`, or raise TypeError saying what was wrong."""
    if isinstance(result, NodeOutput):
        values, ui = result.values, result.ui
    elif isinstance(result, dict):
        values, ui = tuple(result.get("result", ()) or ()), result.get("ui")
    elif isinstance(result, (tuple, list)):
        values, ui = tuple(result), None
    elif result is None and not spec.outputs:
        values, ui = (), None
    else:
        raise TypeError(f"node {spec.class_type} returned {type(result).__name__}; expected a tuple of "
                        f"{len(spec.outputs)} output(s) or a dict with 'result' and 'ui'")
    if values and len(values) != len(spec.outputs):
        raise TypeError(f"node {spec.class_type} returned {len(values)} value(s) for {len(spec.outputs)} output(s)")
    return NodeOutput(values=tuple(values), ui=ui)
