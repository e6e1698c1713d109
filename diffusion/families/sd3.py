"""SD3 Medium, SD3.5 Large / Large Turbo and SD3.5 Medium: the MMDiT family (Esser et al. 2024).

Text: CLIP-L and OpenCLIP bigG penultimate layers (768 ‖ 1280, zero-padded to 4096) joined along the sequence
with T5-XXL's last layer; pooled: CLIP-L's unprojected final-norm output at the end token (768) ‖ bigG's projected
one (1280) = the 2048-wide `y`. The 16-channel VAE with latent (x − 0.0609)·1.5305; rectified-flow sampling with
shift 3 (`diffusion.sampling.model_sampling_flow`). MMDiT files are told by their `joint_blocks` keys
(`diffusion.files.mmdit_loading.is_mmdit`) before any UNet shape is read, so `matches` never claims a UNet.
"""
from __future__ import annotations

import torch

from diffusion.files.checkpoint import CheckpointError
from diffusion.families.base import Evidence, ModelFamily
from diffusion.families.registry import register
from diffusion.families.shapes import UNetShapes
from diffusion.files.latent_formats import SD3 as SD3_LATENT
from diffusion.networks.unet import UNetConfig

POOLED_WIDTH = 2048  # CLIP-L 768 ‖ CLIP-G 1280


def matches(evidence: Evidence) -> bool:
    """Never from UNet shapes: an MMDiT has none."""
    return False


def unet_config(shapes: UNetShapes) -> UNetConfig:
    raise CheckpointError("SD3 models are MMDiTs, not UNets: their config is read by diffusion.networks.mmdit")


def encode_adm(cond: dict, height: int, width: int, prompt_type: str, adm_channels: int) -> torch.Tensor:
    """The MMDiT's `y`: the cond's pooled text vector (zeros when it has none, as after ConditioningZeroOut)."""
    pooled = cond.get("pooled_output")
    if pooled is None:
        return torch.zeros(1, adm_channels)
    if pooled.shape[-1] != adm_channels:
        raise ValueError(f"the pooled text vector is {pooled.shape[-1]} wide but this SD3 model takes "
                         f"{adm_channels} (CLIP-L 768 ‖ CLIP-G 1280): encode the prompt with an SD3 CLIP")
    return pooled.float().cpu()


SD3 = register(ModelFamily(
    name="sd3", description="SD3 / SD3.5 (MMDiT)", priority=-10, matches=matches, unet_config=unet_config,
    text_encoders=("clip_l", "clip_g", "t5xxl"), latent_format=SD3_LATENT, clip_type="sd3",
    memory_usage_factor=1.6, adm_channels=POOLED_WIDTH, encode_adm=encode_adm,
))
