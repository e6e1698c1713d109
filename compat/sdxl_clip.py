"""ComfyUI's `comfy.sdxl_clip` for custom node packs: the SDXL text-model class names as `isinstance` checks on
Loom's text models (`clip.cond_stage_model`), which prompt packs use to pick SDXL-specific encoding.

`SDXLClipModel` is a two-tower (CLIP-L + bigG) `MultiTextEncoder`, `SDXLRefinerClipModel` the bigG-only one,
`SDXLClipG` a bigG `TextEncoder` tower; the tokenizer names match Loom's tokenizers of the same towers. Building
these classes directly is not supported: CLIPs come from the loaders.
"""
from __future__ import annotations

from typing import Any

from diffusion.text.clip_multi import MultiTextEncoder
from diffusion.text.text_encoders import TextEncoder

BINDING: Any  # set by compat.install_compat before this module runs


class _Check(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return bool(cls.__dict__["matches"](obj))


class _Named(metaclass=_Check):
    @staticmethod
    def matches(obj: Any) -> bool:
        return False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"comfy.sdxl_clip.{cls.__name__} is an isinstance check on Loom's text models; load a CLIP "
                        f"with comfy.sd.load_clip or a checkpoint loader")


class SDXLClipModel(_Named):
    @staticmethod
    def matches(obj: Any) -> bool:
        return isinstance(obj, MultiTextEncoder) and obj.family == "sdxl"


class SDXLRefinerClipModel(_Named):
    @staticmethod
    def matches(obj: Any) -> bool:
        return isinstance(obj, MultiTextEncoder) and obj.family == "sdxl_refiner"


class SDXLClipG(_Named):
    @staticmethod
    def matches(obj: Any) -> bool:
        return isinstance(obj, TextEncoder) and obj.config.family == "clip_g"


def _tokenizer_family(obj: Any) -> str | None:
    config = getattr(obj, "config", None)
    return getattr(config, "family", None)


class SDXLTokenizer(_Named):
    """The token dict of an SDXL CLIP: `clip.tokenize(text)` gives {"l": ..., "g": ...}."""

    @staticmethod
    def matches(obj: Any) -> bool:
        tokenizers = getattr(obj, "tokenizers", None)
        return isinstance(tokenizers, dict) and set(tokenizers) == {"l", "g"}


class SDXLClipGTokenizer(_Named):
    @staticmethod
    def matches(obj: Any) -> bool:
        return _tokenizer_family(obj) == "clip_g"
