"""Nodes that change how a model uses an image or mask it is given: DifferentialDiffusion (soft inpainting masks as
per-step thresholds), InstructPixToPixConditioning (the source image's latent concatenated to the input of an
InstructPix2Pix model) and SD_4XUpscale_Conditioning (the low-resolution image and its noise-augmentation level in
the conditioning of Stability's ×4 upscaler; the conditioning is ComfyUI's, the upscaler model family itself is
not among Loom's families yet).

Names, inputs, categories and display names are ComfyUI's (`comfy_extras/nodes_differential_diffusion.py`,
`nodes_ip2p.py`, `nodes_sdupscale.py`).
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.sampling.differential_diffusion import DifferentialMask
from diffusion.patcher import ModelHandle
from nodes.spec import Float, Input, Node, Output
from nodes.upscaling_math import common_upscale
from nodes.vae_nodes import encode as vae_encode


class DifferentialDiffusion(Node):
    """Turns the latent's noise mask into a per-step mask: each pixel is regenerated for the share of the steps its
    mask value gives (1: every step, 0.5: the second half), so grey mask areas change gently."""

    DISPLAY_NAME = "Differential Diffusion"
    CATEGORY = "_for_testing"
    EXPERIMENTAL = True
    INPUTS = (Input("model", "MODEL"), Float("strength", 1.0, min=0.0, max=1.0, step=0.01, optional=True))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, strength: float = 1.0) -> tuple[ModelHandle]:
        clone = model.clone()
        clone.set_option("denoise_mask_function", DifferentialMask(strength))
        return (clone,)


def crop_to_multiple_of_8(pixels: torch.Tensor) -> torch.Tensor:
    """B×H×W×C pixels centre-cropped to whole multiples of 8 in height and width."""
    h, w = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
    if (h, w) == tuple(pixels.shape[1:3]):
        return pixels
    top, left = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
    return pixels[:, top:top + h, left:left + w, :]


class InstructPixToPixConditioning(Node):
    """Adds the encoded image to both conditionings (the InstructPix2Pix model reads it as extra input channels) and
    gives an empty latent of its size to sample."""

    CATEGORY = "conditioning/instructpix2pix"
    INPUTS = (Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"), Input("vae", "VAE"),
              Input("pixels", "IMAGE"))
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, positive: list, negative: list, vae: Any, pixels: torch.Tensor) -> tuple[list, list, dict]:
        concat = vae_encode(vae, crop_to_multiple_of_8(pixels))
        pos, neg = ([[t, {**opts, "concat_latent_image": concat}] for t, opts in cond] for cond in (positive, negative))
        return pos, neg, {"samples": torch.zeros_like(concat)}


class SD_4XUpscale_Conditioning(Node):
    """Conditioning for the SD ×4 upscaler: the image (in −1..1) at a quarter of the target size as `concat_image`
    with its `noise_augmentation`, and an empty latent for a target of scale_ratio × the image."""

    CATEGORY = "conditioning/upscale_diffusion"
    INPUTS = (Input("images", "IMAGE"), Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
              Float("scale_ratio", 4.0, min=0.0, max=10.0, step=0.01),
              Float("noise_augmentation", 0.0, min=0.0, max=1.0, step=0.001))
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, images: torch.Tensor, positive: list, negative: list, scale_ratio: float,
                noise_augmentation: float) -> tuple[list, list, dict]:
        width = max(1, round(images.shape[-2] * scale_ratio))
        height = max(1, round(images.shape[-3] * scale_ratio))
        if width < 4 or height < 4:
            raise ValueError(f"SD_4XUpscale_Conditioning: scale_ratio {scale_ratio} makes a {width}×{height} target; "
                             "it must be at least 4 pixels each way")
        pixels = common_upscale(images.movedim(-1, 1) * 2.0 - 1.0, width // 4, height // 4, "bilinear", "center")
        extra = {"concat_image": pixels, "noise_augmentation": noise_augmentation}
        out = [[[t, {**opts, **extra}] for t, opts in cond] for cond in (positive, negative)]
        return out[0], out[1], {"samples": torch.zeros([images.shape[0], 4, height // 4, width // 4])}


NODES: list[type] = [DifferentialDiffusion, InstructPixToPixConditioning, SD_4XUpscale_Conditioning]
