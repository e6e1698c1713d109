"""The declaration classes of ComfyUI's schema API, less the dynamic inputs (`nodes/comfy_api/io.py` is the
module packs get as `io`; it adds Autogrow and DynamicCombo from `dynamic.py`, which build on these).

A schema node subclasses `ComfyNode` and implements the class methods `define_schema()`
(returning a `Schema`) and `execute(**inputs)` (returning a `NodeOutput`, a tuple, a dict
with "result"/"ui", or None); optionally `fingerprint_inputs` (ComfyUI's IS_CHANGED),
`validate_inputs` (VALIDATE_INPUTS) and `check_lazy_status`. Inputs and outputs are made with
the factories of the socket types: `Int.Input("steps", default=20, min=1)`,
`Image.Output(display_name="image")`, `Custom("MY_TYPE").Input(...)`.

As in ComfyUI (`comfy_api/latest/_io.py`), a `ComfyNode` also answers the classic attributes
(`INPUT_TYPES()`, `RETURN_TYPES`, `FUNCTION`, `CATEGORY`, ...) derived from its schema, so
`nodes.classic.adapt_classic` reads it and `nodes.comfy_api.adapt` only adds the schema
hooks. The dynamic types (Autogrow, DynamicCombo, MatchType) are in `dynamic.py`; see
docs/custom-nodes.md. Each `as_dict` gives the options ComfyUI's gives (None means "not given"
and is left out, False is kept), so the entries nested in dynamic inputs match ComfyUI's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, ClassVar, Iterable


class classproperty:  # noqa: N801 - named like the builtin decorators it imitates
    """A read-only property of the class itself (ComfyUI's `RETURN_TYPES` and friends)."""

    def __init__(self, fget: Callable[[Any], Any]) -> None:
        self.fget = fget
        self.__doc__ = fget.__doc__

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self.fget(owner if owner is not None else type(obj))


def _pruned(values: dict[str, Any]) -> dict[str, Any]:
    """The entries that are set (ComfyUI's `prune_dict`: None means "not given")."""
    return {k: v for k, v in values.items() if v is not None}


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


# ---- inputs and outputs -----------------------------------------------------------------------

class Input:
    """One input of a schema node; `Parent` is the socket type class that made it."""

    Parent: ClassVar[Any] = None

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict[str, Any] | None = None,
                 raw_link: bool | None = None) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = dict(extra_dict or {})
        self.raw_link = raw_link

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    def get_io_type(self) -> str:
        return self.io_type

    def as_dict(self) -> dict[str, Any]:
        """The options dict of the classic `(type, options)` entry."""
        return _pruned({"display_name": self.display_name, "optional": self.optional or None,
                        "tooltip": self.tooltip, "lazy": self.lazy, "rawLink": self.raw_link}) | _pruned(self.extra_dict)


class WidgetInput(Input):
    """An input that is a widget by default (a number, text, toggle or choice)."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: Any = None, socketless: bool | None = None,
                 widget_type: str | None = None, force_input: bool | None = None,
                 extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def get_io_type(self) -> str:
        return self.widget_type or self.io_type

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _pruned({"default": self.default, "socketless": self.socketless,
                                            "widgetType": self.widget_type, "forceInput": self.force_input})


class Output:
    """One output of a schema node."""

    Parent: ClassVar[Any] = None

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False) -> None:
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


class ComfyTypeIO:
    """A socket type: `io_type` is its name on the wire; `Input`/`Output` make its sockets."""

    io_type: ClassVar[str] = "*"
    Type: ClassVar[Any] = Any
    Input: ClassVar[type] = Input
    Output: ClassVar[type] = Output


ComfyTypeI = ComfyTypeIO


def comfytype(io_type: str) -> Callable[[type], type]:
    """Class decorator binding a socket type name; gives the class its own Input/Output
    subclasses whose `Parent` is the class (so `Int.Input(...)` knows it is an INT)."""
    def decorate(cls: type) -> type:
        if not issubclass(cls, ComfyTypeIO):
            cls = type(cls.__name__, (cls, ComfyTypeIO), {"__module__": cls.__module__, "__doc__": cls.__doc__})
        cls.io_type = io_type
        for role in ("Input", "Output"):
            base = getattr(cls, role)
            setattr(cls, role, type(role, (base,), {"Parent": cls, "__qualname__": f"{cls.__name__}.{role}",
                                                   "__module__": cls.__module__}))
        return cls
    return decorate


def Custom(io_type: str) -> type:
    """A socket type for a pack's own data (`Custom("MY_TYPE").Input("thing")`)."""
    return comfytype(io_type)(type(f"Custom_{io_type}", (ComfyTypeIO,), {"__module__": __name__}))


@comfytype("BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: bool | None = None,
                     label_on: str | None = None, label_off: str | None = None, socketless: bool | None = None,
                     force_input: bool | None = None, extra_dict: dict[str, Any] | None = None,
                     raw_link: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned({"label_on": self.label_on, "label_off": self.label_off})


@comfytype("INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: int | None = None,
                     min: int | None = None, max: int | None = None, step: int | None = None,
                     control_after_generate: bool | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self) -> dict[str, Any]:
            display = self.display_mode.value if isinstance(self.display_mode, Enum) else self.display_mode
            return super().as_dict() | _pruned({"min": self.min, "max": self.max, "step": self.step,
                                                "control_after_generate": self.control_after_generate,
                                                "display": display})


@comfytype("FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: float | None = None,
                     min: float | None = None, max: float | None = None, step: float | None = None,
                     round: float | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self) -> dict[str, Any]:
            display = self.display_mode.value if isinstance(self.display_mode, Enum) else self.display_mode
            return super().as_dict() | _pruned({"min": self.min, "max": self.max, "step": self.step,
                                                "round": self.round, "display": display})


@comfytype("STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, multiline: bool = False,
                     placeholder: str | None = None, default: str | None = None,
                     dynamic_prompts: bool | None = None, socketless: bool | None = None,
                     force_input: bool | None = None, extra_dict: dict[str, Any] | None = None,
                     raw_link: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned({"multiline": self.multiline, "placeholder": self.placeholder,
                                                "dynamicPrompts": self.dynamic_prompts})


@comfytype("COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, options: Iterable[Any] | type[Enum] | None = None,
                     display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                     lazy: bool | None = None, default: Any = None, control_after_generate: bool | None = None,
                     upload: UploadType | None = None, image_folder: FolderType | None = None,
                     remote: Any = None, socketless: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None) -> None:
            if isinstance(options, type) and issubclass(options, Enum):
                options = [member.value for member in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None,
                             extra_dict, raw_link)
            self.options = list(options) if options is not None else []
            self.control_after_generate = control_after_generate
            self.upload, self.image_folder = upload, image_folder

        def as_dict(self) -> dict[str, Any]:
            upload = {self.upload.value: True} if isinstance(self.upload, UploadType) else {}
            folder = self.image_folder.value if isinstance(self.image_folder, Enum) else self.image_folder
            return super().as_dict() | _pruned({"multiselect": False, "options": self.options,
                                                "control_after_generate": self.control_after_generate,
                                                "image_folder": folder}) | upload


def _plain_type(name: str, io_type: str) -> type:
    return comfytype(io_type)(type(name, (ComfyTypeIO,), {"__module__": __name__}))


Image = _plain_type("Image", "IMAGE")
Mask = _plain_type("Mask", "MASK")
Latent = _plain_type("Latent", "LATENT")
Conditioning = _plain_type("Conditioning", "CONDITIONING")
Sampler = _plain_type("Sampler", "SAMPLER")
Sigmas = _plain_type("Sigmas", "SIGMAS")
Noise = _plain_type("Noise", "NOISE")
Guider = _plain_type("Guider", "GUIDER")
Clip = _plain_type("Clip", "CLIP")
ControlNet = _plain_type("ControlNet", "CONTROL_NET")
Vae = _plain_type("Vae", "VAE")
Model = _plain_type("Model", "MODEL")
ClipVision = _plain_type("ClipVision", "CLIP_VISION")
ClipVisionOutput = _plain_type("ClipVisionOutput", "CLIP_VISION_OUTPUT")
StyleModel = _plain_type("StyleModel", "STYLE_MODEL")
Gligen = _plain_type("Gligen", "GLIGEN")
UpscaleModel = _plain_type("UpscaleModel", "UPSCALE_MODEL")
Audio = _plain_type("Audio", "AUDIO")
Video = _plain_type("Video", "VIDEO")
LoraModel = _plain_type("LoraModel", "LORA_MODEL")
Hooks = _plain_type("Hooks", "HOOKS")
Photomaker = _plain_type("Photomaker", "PHOTOMAKER")
AnyType = _plain_type("AnyType", "*")


class MultiType:
    """An input accepting several socket types (wire type "A,B")."""

    class Input(Input):
        def __init__(self, id: str | Input, types: Iterable[Any], display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None) -> None:
            self.override = id if isinstance(id, Input) else None
            super().__init__(id.id if isinstance(id, Input) else id, display_name, optional, tooltip, lazy,
                             extra_dict, raw_link)
            self.types = list(types)

        def get_io_type(self) -> str:
            names = [self.override.get_io_type()] if self.override is not None else []
            names += [t.io_type for t in self.types]
            return ",".join(dict.fromkeys(names))

        def as_dict(self) -> dict[str, Any]:
            own = super().as_dict()
            return (self.override.as_dict() | own) if self.override is not None else own


# ---- hidden inputs ----------------------------------------------------------------------------

class Hidden(str, Enum):
    """The hidden values a node may ask for in `Schema.hidden`; read them from `cls.hidden`."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """`cls.hidden` during `execute`: `unique_id`, `prompt`, `extra_pnginfo`, ...; None when not asked for."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


# ---- schema -----------------------------------------------------------------------------------

@dataclass
class Schema:
    """What a schema node declares (ComfyUI's field names)."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    search_aliases: list[str] = field(default_factory=list)
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False
    accept_all_inputs: bool = False  # execute also gets constants the schema does not declare

    def validate(self) -> None:
        """Raise ValueError if input or output ids repeat (ComfyUI's rule)."""
        inputs = [i.id for i in self.inputs]
        outputs = [o.id for o in self.outputs if o.id is not None]
        problems = []
        for kind, ids in (("input", inputs), ("output", outputs)):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                problems.append(f"{kind} ids must be unique, but {repeated} repeat")
        shared = set(inputs) & set(outputs)
        if shared:
            problems.append(f"ids must differ between inputs and outputs, but {sorted(shared)} do not")
        if problems:
            raise ValueError(f"schema of node {self.node_id}: " + "; ".join(problems))

    def finalize(self) -> "Schema":
        """Add the hidden values output nodes and API nodes get, and default output ids."""
        self.inputs, self.outputs, self.hidden = list(self.inputs or []), list(self.outputs or []), list(self.hidden or [])
        wanted = []
        if self.is_output_node:
            wanted += [Hidden.prompt, Hidden.extra_pnginfo]
        if self.is_api_node:
            wanted += [Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org]
        self.hidden += [h for h in wanted if h not in self.hidden]
        for index, out in enumerate(self.outputs):
            if out.id is None:
                out.id = f"_{index}_{out.io_type}_"
        return self

    def classic_inputs(self) -> dict[str, dict[str, Any]]:
        """The classic `INPUT_TYPES()` dict: sections of `name: (type, options)`."""
        sections: dict[str, dict[str, Any]] = {"required": {}}
        for item in self.inputs:
            if hasattr(item, "classic_entries"):  # Autogrow / DynamicCombo: several sockets
                for section, name, entry in item.classic_entries():
                    sections.setdefault(section, {})[name] = entry
                continue
            options = item.as_dict()
            options.pop("optional", None)
            sections.setdefault("optional" if item.optional else "required", {})[item.id] = (item.get_io_type(), options)
        for hidden in self.hidden:
            sections.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        return sections


# ---- the node base class ----------------------------------------------------------------------

class NodeOutput:
    """What `execute` returns: the output values in order, and optionally `ui` (a ui helper
    from `comfy_api.latest.ui` or a plain dict)."""

    def __init__(self, *args: Any, ui: Any = None, expand: dict[str, Any] | None = None,
                 block_execution: str | None = None) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NodeOutput":
        return cls(*(data.get("result") or ()), ui=data.get("ui"), expand=data.get("expand"))

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


def _schema(cls: type) -> Schema:
    schema = cls.define_schema()
    if not isinstance(schema, Schema):
        raise TypeError(f"{cls.__name__}.define_schema() returned {type(schema).__name__}, expected io.Schema")
    return schema.finalize()


def _outputs(cls: type) -> list[Any]:
    return _schema(cls).outputs


class ComfyNode:
    """Base class of schema nodes. `hidden` holds the requested hidden values during `execute`."""

    RELATIVE_PYTHON_MODULE: ClassVar[str | None] = None
    hidden: ClassVar[HiddenHolder | None] = None
    FUNCTION: ClassVar[str] = "EXECUTE_NORMALIZED"

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError(f"node class {cls.__name__} does not define define_schema()")

    @classmethod
    def execute(cls, **kwargs: Any) -> Any:
        raise NotImplementedError(f"node class {cls.__name__} does not define execute()")

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def check_lazy_status(cls, **kwargs: Any) -> list[str]:
        """The lazy inputs still needed; by default every one not yet evaluated."""
        return [name for name, value in kwargs.items() if value is None]

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802 - ComfyUI's name
        schema = _schema(cls)
        schema.validate()
        return schema

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, Any]]:  # noqa: N802 - ComfyUI's name
        return _schema(cls).classic_inputs()

    @classmethod
    def EXECUTE_NORMALIZED(cls, **kwargs: Any) -> NodeOutput:  # noqa: N802 - ComfyUI's name
        return normalize_output(cls.execute(**kwargs))

    RETURN_TYPES = classproperty(lambda cls: tuple(o.io_type for o in _outputs(cls)))
    RETURN_NAMES = classproperty(lambda cls: tuple(o.display_name or o.io_type for o in _outputs(cls)))
    OUTPUT_IS_LIST = classproperty(lambda cls: tuple(bool(o.is_output_list) for o in _outputs(cls)))
    OUTPUT_TOOLTIPS = classproperty(lambda cls: tuple(o.tooltip for o in _outputs(cls)))
    CATEGORY = classproperty(lambda cls: _schema(cls).category)
    DESCRIPTION = classproperty(lambda cls: _schema(cls).description)
    OUTPUT_NODE = classproperty(lambda cls: bool(_schema(cls).is_output_node))
    INPUT_IS_LIST = classproperty(lambda cls: bool(_schema(cls).is_input_list))
    NOT_IDEMPOTENT = classproperty(lambda cls: bool(_schema(cls).not_idempotent))
    DEPRECATED = classproperty(lambda cls: bool(_schema(cls).is_deprecated))
    EXPERIMENTAL = classproperty(lambda cls: bool(_schema(cls).is_experimental))


def normalize_output(value: Any) -> NodeOutput:
    """Any of the accepted `execute` results as a `NodeOutput` (ComfyUI's rules)."""
    if value is None:
        return NodeOutput()
    if isinstance(value, NodeOutput):
        return value
    if isinstance(value, tuple):
        return NodeOutput(*value)
    if isinstance(value, dict):
        return NodeOutput.from_dict(value)
    raise TypeError(f"a schema node returned {type(value).__name__}; expected io.NodeOutput, a tuple or a dict")

