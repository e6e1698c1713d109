"""ComfyUI's `comfy.comfy_types` (and `comfy.comfy_types.node_typing`) for custom node packs.

`IO` names the socket types (a `str` enum, so `IO.IMAGE == "IMAGE"`; `IO.ANY` is `"*"` and
compares as matching anything, the way ComfyUI's validation treats it), `ComfyNodeABC` is the
optional base class of classic nodes, and the `TypedDict`s describe `INPUT_TYPES()` results
for type checkers. None of it changes how Loom runs a node: the classic adapter reads the class
attributes as always.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, Callable, Literal, Optional, TypedDict

BINDING: Any  # set by compat.install_compat (unused: nothing here depends on the runtime)


class StrEnum(str, Enum):
    """A `str` enum whose members are their values."""

    def __str__(self) -> str:
        return str(self.value)


class IO(StrEnum):
    """Socket type names of ComfyUI's built-in types."""

    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    LORA_MODEL = "LORA_MODEL"
    LOSS_MAP = "LOSS_MAP"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    AUDIO = "AUDIO"
    WEBCAM = "WEBCAM"
    POINT = "POINT"
    FACE_ANALYSIS = "FACE_ANALYSIS"
    BBOX = "BBOX"
    SEGS = "SEGS"
    VIDEO = "VIDEO"
    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"

    def __ne__(self, value: object) -> bool:
        if self.value == "*" or value == "*":
            return False
        if not isinstance(value, str):
            return True
        mine, theirs = frozenset(self.value.split(",")), frozenset(value.split(","))
        return not (theirs.issubset(mine) or mine.issubset(theirs))

    __hash__ = str.__hash__


class RemoteInputOptions(TypedDict, total=False):
    route: str
    refresh_button: bool
    control_after_refresh: Literal["first", "last"]
    timeout: int
    max_retries: int
    refresh: int


class MultiSelectOptions(TypedDict, total=False):
    placeholder: str
    chip: bool


class InputTypeOptions(TypedDict, total=False):
    """The options dict of one input (`("INT", {...})`)."""

    default: Any
    defaultInput: bool
    forceInput: bool
    lazy: bool
    rawLink: bool
    tooltip: str
    min: float
    max: float
    step: float
    round: float
    display: Literal["number", "slider", "color"]
    control_after_generate: bool
    label_on: str
    label_off: str
    multiline: bool
    placeholder: str
    dynamicPrompts: bool
    image_upload: bool
    image_folder: Literal["input", "output", "temp"]
    remote: RemoteInputOptions
    multi_select: MultiSelectOptions


class HiddenInputTypeDict(TypedDict, total=False):
    node_id: Literal["UNIQUE_ID"]
    unique_id: Literal["UNIQUE_ID"]
    prompt: Literal["PROMPT"]
    extra_pnginfo: Literal["EXTRA_PNGINFO"]
    dynprompt: Literal["DYNPROMPT"]


class InputTypeDict(TypedDict, total=False):
    """What `INPUT_TYPES()` returns."""

    required: dict[str, tuple[Any, InputTypeOptions]]
    optional: dict[str, tuple[Any, InputTypeOptions]]
    hidden: HiddenInputTypeDict


class ComfyNodeABC(ABC):
    """Optional base class of a classic node: documents the attributes ComfyUI reads."""

    DESCRIPTION: str
    CATEGORY: str
    EXPERIMENTAL: bool
    DEPRECATED: bool
    RETURN_TYPES: tuple[Any, ...]
    RETURN_NAMES: tuple[str, ...]
    OUTPUT_TOOLTIPS: tuple[str, ...]
    FUNCTION: str
    OUTPUT_NODE: bool
    INPUT_IS_LIST: bool
    OUTPUT_IS_LIST: tuple[bool, ...]

    @classmethod
    @abstractmethod
    def INPUT_TYPES(cls) -> InputTypeDict:  # noqa: N802 - ComfyUI's name
        """The node's inputs by section."""


class CheckLazyMixin:
    """A default `check_lazy_status` asking for every lazy input not evaluated yet."""

    def check_lazy_status(self, **kwargs: Any) -> list[str]:
        return [name for name, value in kwargs.items() if value is None]


class FileLocator(TypedDict):
    """Where a file the server wrote lives (a ui output entry)."""

    filename: str
    subfolder: str
    type: Literal["input", "output", "temp"]


UnetApplyFunction = Callable[..., Any]
UnetParams = dict
ComfyNodeABCType = Optional[type]

__all__ = ["IO", "StrEnum", "InputTypeOptions", "InputTypeDict", "HiddenInputTypeDict", "ComfyNodeABC",
           "CheckLazyMixin", "FileLocator", "UnetApplyFunction", "UnetParams"]
