"""The SDXL refiner: OpenCLIP ViT-bigG only (`conditioner.embedders.0.model.*`), 1280-dim context (its penultimate
layer), the 2560-wide ADM vector (pooled ‖ height, width, crop_h, crop_w, aesthetic score), 384 channels over four
levels with depth-4 transformers on the middle two. ComfyUI recognises it by context 1280 + ADM 2560; tiny test
models by the bigG-only text tower beside them.
"""
from __future__ import annotations

import torch

from diffusion.families.base import Evidence, ModelFamily
from diffusion.families.registry import register
from diffusion.families.sdxl import SIZE_EMBEDDING, is_sdxl_layout, pooled_of, size_embeddings, unet_config
from diffusion.files.latent_formats import SDXL as SDXL_LATENT

ADM_CHANNELS = 2560  # pooled bigG (1280) + 5 embeddings of 256


def encode_adm(cond: dict, height: int, width: int, prompt_type: str, adm_channels: int,
               seed: int | None = None) -> torch.Tensor:
    """The refiner's `y`: pooled ‖ embeddings of height, width, crop_h, crop_w and the aesthetic score. Without
    CLIPTextEncodeSDXLRefiner's values ComfyUI uses the latent's size in pixels and a score of 6 (2.5 for the
    negative prompt)."""
    score = cond.get("aesthetic_score", 2.5 if prompt_type == "negative" else 6.0)
    values = [cond.get("height", height), cond.get("width", width), cond.get("crop_h", 0), cond.get("crop_w", 0),
              score]
    pooled = pooled_of(cond, adm_channels - 5 * SIZE_EMBEDDING, seed)
    return torch.cat([pooled, size_embeddings(values).repeat(pooled.shape[0], 1)], dim=1)


def matches(evidence: Evidence) -> bool:
    s = evidence.shapes
    if s.context_dim == 1280 and s.adm_in_channels == ADM_CHANNELS:
        return True
    return evidence.text_encoder == "sdxl_refiner" and is_sdxl_layout(s)


SDXL_REFINER = register(ModelFamily(
    name="sdxl_refiner", description="SDXL refiner", priority=40, matches=matches, unet_config=unet_config,
    text_encoders=("clip_g",), latent_format=SDXL_LATENT, clip_type="sdxl", memory_usage_factor=0.8,
    adm_channels=ADM_CHANNELS, encode_adm=encode_adm,
))
