"""Latent nodes: EmptyLatentImage and SetLatentNoiseMask (more latent nodes join this module later).

Names, inputs, ranges, categories and display names are ComfyUI's (`nodes.py`). LATENT values are dicts:
`samples` B×4×H/8×W/8 in the VAE's raw space, optional `noise_mask` (B×1×H×W, 1 = repaint) and `batch_index`.
Node outputs are new dicts; an input dict is never modified (cached values are shared).
"""
from __future__ import annotations

from typing import Any

import torch

from nodes.context import current_or_none
from nodes.spec import Input, Int, Node, Output

MAX_RESOLUTION = 16384
LATENT_CHANNELS = 4  # SD1.x/2.x KL-f8 latents
DOWNSCALE = 8

Latent = dict[str, Any]


def intermediate_device() -> torch.device:
    """Where node outputs live between nodes (the memory manager's choice; the CPU without one)."""
    ctx = current_or_none()
    if ctx is not None and ctx.models is not None:
        return torch.device(ctx.models.intermediate_device)
    return torch.device("cpu")


class EmptyLatentImage(Node):
    """Create a new batch of empty latent images to be denoised via sampling."""

    DISPLAY_NAME = "Empty Latent Image"
    CATEGORY = "latent"
    INPUTS = (
        Int("width", 512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The width of the latent images in pixels."),
        Int("height", 512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The height of the latent images in pixels."),
        Int("batch_size", 1, min=1, max=4096, tooltip="The number of latent images in the batch."),
    )
    OUTPUTS = (Output("LATENT", tooltip="The empty latent image batch."),)

    def execute(self, width: int, height: int, batch_size: int = 1) -> tuple[Latent]:
        samples = torch.zeros([batch_size, LATENT_CHANNELS, height // DOWNSCALE, width // DOWNSCALE],
                              device=intermediate_device())
        return ({"samples": samples},)


class SetLatentNoiseMask(Node):
    """Limits sampling to the masked area: outside the mask the input latent is kept."""

    DISPLAY_NAME = "Set Latent Noise Mask"
    CATEGORY = "latent/inpaint"
    INPUTS = (Input("samples", "LATENT"), Input("mask", "MASK"))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, mask: torch.Tensor) -> tuple[Latent]:
        out = dict(samples)
        out["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        return (out,)


NODES: list[type] = [EmptyLatentImage, SetLatentNoiseMask]
