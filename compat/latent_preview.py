"""ComfyUI's `latent_preview` for custom node packs: `prepare_callback(model, steps, x0_output_dict=None)` (the
step callback that reports progress and previews of the running node, as Loom's samplers do) and
`get_previewer(device, latent_format)` (an object whose `decode_latent_to_preview_image(format, x0)` gives
ComfyUI's `(format, PIL image, max size)`).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from PIL import Image

from diffusion.files.latent_formats import latent_to_rgb_preview
from nodes.context import current_or_none
from nodes.sampling import progress_callback

BINDING: Any  # set by compat.install_compat before this module runs
MAX_PREVIEW_RESOLUTION = 512


def prepare_callback(model: Any, steps: int, x0_output_dict: dict | None = None) -> Callable[..., None]:
    """`callback(step, x0, x, total_steps)` for `comfy.sample.sample`: progress and previews of the running node;
    `x0_output_dict["x0"]` keeps the last denoised prediction (as SamplerCustom reads it)."""
    return progress_callback(current_or_none(), model.model, x0_output_dict)


class Latent2RGBPreviewer:
    """ComfyUI's Latent2RGB previewer over the model's latent format."""

    def __init__(self, latent_format: Any) -> None:
        self.latent_format = latent_format

    def decode_latent_to_preview(self, x0: torch.Tensor) -> Image.Image:
        return Image.fromarray(latent_to_rgb_preview(x0, self.latent_format))

    def decode_latent_to_preview_image(self, preview_format: str, x0: torch.Tensor) -> tuple[str, Image.Image, int]:
        return preview_format, self.decode_latent_to_preview(x0), MAX_PREVIEW_RESOLUTION


def get_previewer(device: Any, latent_format: Any) -> Latent2RGBPreviewer | None:
    """A previewer for `latent_format` (None when the running prompt asked for no previews)."""
    ctx = current_or_none()
    method = (ctx.extra.get("extra_data") or {}).get("preview_method") if ctx is not None else None
    if method == "none":
        return None
    return Latent2RGBPreviewer(latent_format)
