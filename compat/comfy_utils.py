"""ComfyUI's `comfy.utils` for custom node packs (loaded by `compat.install_compat`).

`ProgressBar` reports through the running node's context (`NodeContext.progress`, which also
raises `Interrupted` when the user interrupted, as ComfyUI's progress hook does);
`load_torch_file` reads with Loom's checkpoint reader (`diffusion.files.checkpoint.read_state_dict`,
no pickled code); `common_upscale`, `bislerp`, `lanczos` and `repeat_to_batch_size` are the
built-in nodes' own (`nodes/upscaling_math.py`). ComfyUI's tiled helpers are not provided.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.files.checkpoint import read_state_dict
from nodes.context import NodeContext, current_or_none
from nodes.upscaling_math import UPSCALE_METHODS, bislerp, common_upscale, lanczos, repeat_to_batch_size

BINDING: Any  # set by compat.install_compat before this module runs

PROGRESS_BAR_ENABLED = True
__all__ = ["PROGRESS_BAR_ENABLED", "ProgressBar", "UPSCALE_METHODS", "bislerp", "common_upscale", "lanczos",
           "load_torch_file", "repeat_to_batch_size", "set_progress_bar_enabled"]


def _preview_image(preview: Any) -> Any:
    """ComfyUI hands previews as ("JPEG", PIL image, max size); Loom's context takes the image."""
    if isinstance(preview, tuple) and len(preview) >= 2:
        return preview[1]
    return preview


def _number(value: Any) -> int | float:
    """Steps stay ints; fractional progress (seconds waited, bytes read) stays a float."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float(value)


class ProgressBar:
    """`ProgressBar(total, node_id=None)`; `update(n)` advances by n, `update_absolute(value,
    total, preview)` sets the position. Reports to `node_id` when given (a node of the same
    prompt), otherwise to the node that created it (or the one now running)."""

    def __init__(self, total: int | float, node_id: str | None = None) -> None:
        self.total = _number(total)
        self.current: int | float = 0
        self.node_id = None if node_id is None else str(node_id)
        self._ctx: NodeContext | None = current_or_none()

    def update_absolute(self, value: int | float, total: int | float | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = _number(total)
        value = _number(value)
        self.current = min(value, self.total) if self.total else value
        ctx = current_or_none() or self._ctx
        if ctx is None or not PROGRESS_BAR_ENABLED:
            return
        if self.node_id is not None and self.node_id != ctx.node_id and ctx.on_node_progress is not None:
            ctx.interrupt.check()
            ctx.on_node_progress(self.node_id, self.current, self.total, _preview_image(preview))
        else:
            ctx.progress(self.current, self.total, _preview_image(preview))

    def update(self, value: int | float) -> None:
        self.update_absolute(self.current + _number(value))


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = bool(enabled)


def load_torch_file(ckpt: str, safe_load: bool = False, device: Any = None,
                    return_metadata: bool = False) -> Any:
    """A state dict from a .safetensors/.ckpt/.pt file; with `return_metadata`, also the
    safetensors header metadata (None for other formats)."""
    state = read_state_dict(ckpt, device=device if device is not None else "cpu")
    if not return_metadata:
        return state
    metadata = None
    if Path(ckpt).suffix.lower() in (".safetensors", ".sft"):
        from safetensors import safe_open

        with safe_open(str(ckpt), framework="pt") as handle:
            metadata = handle.metadata()
    return state, metadata
