"""Inpainting nodes: VAEEncodeForInpaint and InpaintModelConditioning.

Names, inputs, ranges, outputs and semantics are ComfyUI's (`nodes.py`). Both blank the masked pixels to mid-grey
before encoding, so the model never sees what it must repaint. VAEEncodeForInpaint returns a latent with a
`noise_mask` grown by `grow_mask_by` pixels (so the seam is repainted too); InpaintModelConditioning puts the
masked image's latent and the mask into the conditioning (`concat_latent_image`, `concat_mask`), which a 9-channel
inpainting UNet reads through `DiffusionModel.extra_conds`, and returns the unmasked image's latent.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from diffusion.networks.vae import VAE
from nodes.conditioning_edit import Conditioning, set_values
from nodes.spec import Boolean, Input, Int, Node, Output
from nodes.vae_nodes import encode

DOWNSCALE = 8  # the SD VAE's pixel-to-latent ratio


def mask_to_pixels(mask: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """A MASK (B×H×W or H×W) as B×1×H×W at the image's size (bilinear, as ComfyUI resizes it)."""
    mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()
    return F.interpolate(mask, size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")


def crop_to_multiple(pixels: torch.Tensor, mask: torch.Tensor, ratio: int = DOWNSCALE
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre-crop the image (B×H×W×C) and mask (B×1×H×W) to multiples of `ratio`."""
    h, w = (pixels.shape[1] // ratio) * ratio, (pixels.shape[2] // ratio) * ratio
    if (h, w) == tuple(pixels.shape[1:3]):
        return pixels, mask
    top, left = (pixels.shape[1] % ratio) // 2, (pixels.shape[2] % ratio) // 2
    return pixels[:, top:top + h, left:left + w, :], mask[:, :, top:top + h, left:left + w]


def blank_masked(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The RGB channels with masked pixels (mask ≥ 0.5) set to 0.5."""
    keep = (1.0 - mask.round()).squeeze(1)[..., None]
    out = pixels.clone()
    out[..., :3] = (pixels[..., :3] - 0.5) * keep + 0.5
    return out


def grow_mask(mask: torch.Tensor, grow_by: int) -> torch.Tensor:
    """The rounded mask dilated by a `grow_by`×`grow_by` box (clamped to 1); unchanged for 0."""
    if grow_by == 0:
        return mask
    kernel = torch.ones((1, 1, grow_by, grow_by), dtype=mask.dtype)
    padding = math.ceil((grow_by - 1) / 2)
    return torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)


class VAEEncodeForInpaint(Node):
    """Encodes an image for inpainting: masked pixels are blanked, and the latent gets the (grown) mask as its
    noise mask."""

    DISPLAY_NAME = "VAE Encode (for Inpainting)"
    CATEGORY = "latent/inpaint"
    INPUTS = (Input("pixels", "IMAGE"), Input("vae", "VAE"), Input("mask", "MASK"),
              Int("grow_mask_by", 6, min=0, max=64, step=1))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, pixels: torch.Tensor, vae: VAE, mask: torch.Tensor,
                grow_mask_by: int = 6) -> tuple[dict[str, Any]]:
        ratio = getattr(vae, "downscale_ratio", DOWNSCALE)
        mask = mask_to_pixels(mask, pixels)
        pixels, mask = crop_to_multiple(pixels, mask, ratio)
        grown = grow_mask(mask, grow_mask_by)
        latent = encode(vae, blank_masked(pixels, mask))
        h, w = pixels.shape[1], pixels.shape[2]
        return ({"samples": latent, "noise_mask": grown[:, :, :h, :w].round()},)


class InpaintModelConditioning(Node):
    """Conditioning for inpainting models: the masked image's latent and the mask go into the conditioning, the
    whole image's latent is the starting latent."""

    CATEGORY = "conditioning/inpaint"
    INPUTS = (
        Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"), Input("vae", "VAE"),
        Input("pixels", "IMAGE"), Input("mask", "MASK"),
        Boolean("noise_mask", True, tooltip="Add a noise mask to the latent so sampling will only happen within the "
                                            "mask. Might improve results or completely break things depending on "
                                            "the model."),
    )
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, positive: Conditioning, negative: Conditioning, vae: VAE, pixels: torch.Tensor,
                mask: torch.Tensor, noise_mask: bool = True) -> tuple[Conditioning, Conditioning, dict[str, Any]]:
        mask = mask_to_pixels(mask, pixels)
        cropped, mask = crop_to_multiple(pixels, mask)
        concat_latent = encode(vae, blank_masked(cropped, mask))
        latent: dict[str, Any] = {"samples": encode(vae, pixels)}
        if noise_mask:
            latent["noise_mask"] = mask
        values = {"concat_latent_image": concat_latent, "concat_mask": mask}
        return (set_values(positive, values), set_values(negative, values), latent)


NODES: list[type] = [VAEEncodeForInpaint, InpaintModelConditioning]
