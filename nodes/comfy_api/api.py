"""ComfyUI's `ComfyAPI` / `ComfyAPISync` objects for schema-API packs.

`ComfyAPI().execution.set_progress(value, max_value, node_id=None, preview_image=None,
ignore_size_limit=False)` (a coroutine; in `ComfyAPISync` a plain call) reports progress for
the running node, or for another node of the same prompt by id, through the node context the
executor set (`nodes.context`): progress therefore stays with its own prompt and node, even
when several async nodes run at once. `preview_image` may be a PIL image or an IMAGE tensor
(B×H×W×C in 0..1; the first image is shown).
"""
from __future__ import annotations

from typing import Any

from nodes.context import current_or_none

DEFAULT_PREVIEW_SIZE = 512


def _preview(image: Any, ignore_size_limit: bool) -> Any:
    """ComfyUI's preview tuple `(format, PIL image, max size)` for a PIL image or a tensor."""
    if image is None:
        return None
    if hasattr(image, "shape") and hasattr(image, "detach"):
        import numpy as np
        from PIL import Image

        tensor = image[0] if len(image.shape) == 4 else image
        array = (tensor.detach().float().cpu().clamp(0, 1).numpy() * 255).astype(np.uint8)
        image = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
    image_format = getattr(image, "format", None) or "JPEG"
    return (image_format if image_format in ("JPEG", "PNG") else "JPEG", image,
            None if ignore_size_limit else DEFAULT_PREVIEW_SIZE)


def _set_progress(value: float, max_value: float, node_id: str | None, preview_image: Any,
                  ignore_size_limit: bool) -> None:
    ctx = current_or_none()
    if ctx is None:
        raise ValueError("set_progress was called outside a running node: no prompt to report to")
    target = ctx.node_id if node_id is None else str(node_id)
    ctx.interrupt.check()
    preview = _preview(preview_image, ignore_size_limit)
    if target == ctx.node_id and ctx.on_progress is not None:
        ctx.on_progress(value, max_value, preview)
    elif ctx.on_node_progress is not None:
        ctx.on_node_progress(target, value, max_value, preview)


class _Execution:
    async def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                           preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        """Report progress `value` of `max_value` for the running node (or `node_id`)."""
        _set_progress(value, max_value, node_id, preview_image, ignore_size_limit)


class _ExecutionSync:
    def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                     preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        """Report progress `value` of `max_value` for the running node (or `node_id`)."""
        _set_progress(value, max_value, node_id, preview_image, ignore_size_limit)


class ComfyAPI:
    """ComfyUI's async API object (`comfy_api.latest.ComfyAPI`)."""

    VERSION = "latest"
    STABLE = False

    def __init__(self) -> None:
        self.execution = _Execution()


class ComfyAPISync:
    """ComfyUI's sync API object (`comfy_api.latest.ComfyAPISync`)."""

    VERSION = "latest"
    STABLE = False

    def __init__(self) -> None:
        self.execution = _ExecutionSync()
