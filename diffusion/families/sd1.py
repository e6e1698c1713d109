"""Stable Diffusion 1.x: CLIP ViT-L/14 (HF layout, `cond_stage_model.transformer.text_model.*`), 768-dim context,
8 heads per transformer, convolutional projections, the KL-f8 VAE at scale 0.18215, the discrete ε schedule.
Inpainting UNets take 9 input channels (latent, mask, masked-image latent)."""
from __future__ import annotations

from diffusion.families.base import Evidence, ModelFamily
from diffusion.families.registry import register
from diffusion.families.shapes import UNetShapes, config_from_shapes
from diffusion.files.latent_formats import SD15
from diffusion.networks.unet import UNetConfig

_OTHER_WIDTHS = (1024, 1280, 2048)  # the context widths of the other families' real models


def matches(evidence: Evidence) -> bool:
    """768-dim context; for other widths (tiny test models) a CLIP-L text tower beside it, or, without one,
    convolutional projections."""
    s = evidence.shapes
    if s.adm_in_channels is not None and not s.attention_levels[0]:
        return False  # SDXL's layout
    if s.context_dim == 768:
        return True
    if s.context_dim in _OTHER_WIDTHS:
        return False
    return evidence.text_encoder == "sd1" or (evidence.text_encoder is None and not s.linear)


def unet_config(shapes: UNetShapes) -> UNetConfig:
    """SD1's heads rule: 8 heads whatever the width."""
    return config_from_shapes(shapes, num_heads=8, num_head_channels=-1)


SD1 = register(ModelFamily(
    name="sd1", description="Stable Diffusion 1.x", priority=10, matches=matches, unet_config=unet_config,
    text_encoders=("clip_l",), latent_format=SD15, clip_type="stable_diffusion",
))
