"""Model families: one module per family (sd1, sd2, sdxl, sdxl_refiner, ...) and the registry that knows them.

Each family module declares, in one `ModelFamily` record, how it is detected from keys, shapes and metadata, its
UNet config read off the shapes, the text encoders it assembles, its latent format and preview factors, its model
sampling and its memory estimate, and registers it (`registry.register`). Loaders, the memory manager and the
nodes ask the registry (`get_family`, `family_for`) or the detector (`detect_checkpoint`, ...) and never test a
family name themselves. Adding a family = adding a module here and importing it below.

Modules: `base` (the record), `registry`, `shapes` (configs off tensor shapes), `detect` (file → `ModelInfo`),
and the families.
"""
from __future__ import annotations

from diffusion.families import sd1, sd2, sd3, sdxl, sdxl_refiner  # noqa: F401  (each registers its family)
from diffusion.families.base import Evidence, ModelFamily
from diffusion.families.detect import (
    ModelInfo,
    detect_checkpoint,
    detect_file_kind,
    detect_prediction,
    text_encoder_family,
    unet_config_from_state_dict,
)
from diffusion.families.registry import families, family_for, get_family, latent_format_for, register
from diffusion.families.sd2 import V_PREDICTION_STD_THRESHOLD
from diffusion.families.shapes import UNetShapes, read_unet_shapes, vae_config_from_state_dict

__all__ = [
    "latent_format_for",
    "Evidence", "ModelFamily", "ModelInfo", "UNetShapes", "V_PREDICTION_STD_THRESHOLD", "detect_checkpoint",
    "detect_file_kind", "detect_prediction", "families", "family_for", "get_family", "read_unet_shapes",
    "register", "text_encoder_family", "unet_config_from_state_dict", "vae_config_from_state_dict",
]
