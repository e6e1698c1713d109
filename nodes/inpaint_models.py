"""Nodes that change how a model uses an image or mask it is given: DifferentialDiffusion (soft inpainting masks as
per-step thresholds) and InstructPixToPixConditioning (the source image's latent concatenated to the input of an
InstructPix2Pix model).

Names, inputs, categories and display names are ComfyUI's (`comfy_extras/nodes_differential_diffusion.py`,
`nodes_ip2p.py`).
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.differential_diffusion import DifferentialMask
from diffusion.patcher import ModelHandle
from nodes.spec import Float, Input, Node, Output
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
        with_image = [[[t, {**opts, "concat_latent_image": concat}] for t, opts in cond] for cond in (positive, negative)]
        return with_image[0], with_image[1], {"samples": torch.zeros_like(concat)}


NODES: list[type] = [DifferentialDiffusion, InstructPixToPixConditioning]
