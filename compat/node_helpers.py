"""ComfyUI's `node_helpers` for custom node packs: `pillow` (open an image, retrying with
truncated images allowed, as ComfyUI does for files PIL half-reads) and
`conditioning_set_values` (a copy of a CONDITIONING list with keys set in every entry).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from PIL import ImageFile, UnidentifiedImageError

BINDING: Any  # set by compat.install_compat before this module runs


def pillow(fn: Callable[[Any], Any], arg: Any) -> Any:
    """`fn(arg)`; on a PIL read error, once more with `ImageFile.LOAD_TRUNCATED_IMAGES` on."""
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            return fn(arg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def conditioning_set_values(conditioning: list[Any], values: Mapping[str, Any] | None = None,
                            append: bool = False) -> list[list[Any]]:
    """Each `[tensor, dict]` entry with `values` set in a copy of its dict; with `append`,
    a value is added to an existing one (`old + new`)."""
    out = []
    for tensor, options in conditioning:
        options = dict(options)
        for key, value in (values or {}).items():
            if append and options.get(key) is not None:
                value = options[key] + value
            options[key] = value
        out.append([tensor, options])
    return out
