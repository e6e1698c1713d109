"""ComfyUI's `comfy.utils` for custom node packs (loaded by `compat.install_compat`).

`ProgressBar` reports through the running node's context (`NodeContext.progress`, which also
raises `Interrupted` when the user interrupted, as ComfyUI's progress hook does);
`load_torch_file` reads with Loom's checkpoint reader (`diffusion.checkpoint.read_state_dict`,
no pickled code); `common_upscale` resizes B×C×H×W tensors with ComfyUI's methods and
optional centre crop. ComfyUI's tiled helpers and `bislerp` are not provided.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffusion.checkpoint import read_state_dict
from nodes.context import NodeContext, current_or_none

BINDING: Any  # set by compat.install_compat before this module runs
log = logging.getLogger(__name__)

PROGRESS_BAR_ENABLED = True
UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")


def _preview_image(preview: Any) -> Any:
    """ComfyUI hands previews as ("JPEG", PIL image, max size); Loom's context takes the image."""
    if isinstance(preview, tuple) and len(preview) >= 2:
        return preview[1]
    return preview


class ProgressBar:
    """`ProgressBar(total)`; `update(n)` advances by n, `update_absolute(value, total, preview)`
    sets the position. Reports to the node that created it (or the one now running)."""

    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total = int(total)
        self.current = 0
        self.node_id = node_id
        self._ctx: NodeContext | None = current_or_none()

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = int(total)
        self.current = min(int(value), self.total) if self.total else int(value)
        ctx = current_or_none() or self._ctx
        if ctx is not None and PROGRESS_BAR_ENABLED:
            ctx.progress(self.current, self.total, _preview_image(preview))

    def update(self, value: int) -> None:
        self.update_absolute(self.current + int(value))


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


def _centre_crop(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop the middle of `samples` to the target aspect ratio (ComfyUI's crop="center")."""
    old_h, old_w = samples.shape[-2], samples.shape[-1]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return samples.narrow(-2, y, old_h - 2 * y).narrow(-1, x, old_w - 2 * x)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos resize through PIL, one 8-bit image per batch item (as ComfyUI does)."""
    out = []
    for image in samples.movedim(1, -1).detach().cpu():
        pixels = np.clip(255.0 * image.numpy(), 0, 255).astype(np.uint8)
        picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        resized = np.asarray(picture.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(resized.reshape(height, width, -1)))
    return torch.stack(out).movedim(-1, 1).to(samples.device, samples.dtype)


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """Resize B×C×H×W `samples` to `height`×`width` with `upscale_method` (nearest-exact,
    bilinear, area, bicubic, lanczos), first cropping the centre when `crop` is "center"."""
    if crop == "center":
        samples = _centre_crop(samples, width, height)
    if upscale_method == "lanczos":
        return lanczos(samples, width, height)
    if upscale_method not in UPSCALE_METHODS:
        raise ValueError(f"upscale method {upscale_method!r} is not supported by Loom's comfy.utils; "
                         f"use one of {', '.join(UPSCALE_METHODS)}")
    return F.interpolate(samples, size=(height, width), mode=upscale_method)


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    """Repeat (or cut) `tensor` along `dim` to `batch_size` items."""
    size = tensor.shape[dim]
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = -(-batch_size // size)
        return tensor.repeat(*reps).narrow(dim, 0, batch_size)
    return tensor
