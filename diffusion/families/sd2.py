"""Stable Diffusion 2.x: OpenCLIP ViT-H/14 (`cond_stage_model.model.transformer.resblocks.*`), 1024-dim context,
64-channel heads, linear projections in the transformers, the SD1 VAE. 768-v checkpoints predict v; without
metadata saying so, ComfyUI's heuristic decides: the spread of the last output block's first LayerNorm bias.
SD2 unCLIP UNets add `label_emb` (ADM) with attention at every level."""
from __future__ import annotations

import torch

from diffusion.families.base import Evidence, ModelFamily
from diffusion.families.registry import register
from diffusion.families.shapes import UNetShapes, config_from_shapes, indices
from diffusion.files.latent_formats import SD15
from diffusion.networks.unet import UNetConfig

# ComfyUI's rule (comfy/model_detection.py): SD2 768-v checkpoints have a wider spread of this LayerNorm's bias.
V_PREDICTION_STD_THRESHOLD = 0.09


def matches(evidence: Evidence) -> bool:
    """1024-dim context; for widths no real family uses, an OpenCLIP tower beside it or linear projections."""
    s = evidence.shapes
    if s.adm_in_channels is not None and not s.attention_levels[0]:
        return False  # SDXL's layout
    if s.context_dim == 1024:
        return True
    if s.context_dim in (768, 1280, 2048):
        return False
    return evidence.text_encoder == "sd2" or (evidence.text_encoder is None and s.linear)


def unet_config(shapes: UNetShapes) -> UNetConfig:
    """SD2's heads rule: 64 channels per head."""
    return config_from_shapes(shapes, num_heads=-1, num_head_channels=64)


def v_prediction_heuristic(unet: dict[str, torch.Tensor]) -> str:
    """ComfyUI's test for SD2 768-v files (inpainting UNets, 9 channels, are ε-prediction)."""
    conv_in = unet.get("input_blocks.0.0.weight")
    if conv_in is not None and conv_in.shape[1] != 4:
        return "eps"
    last = max(indices(unet, r"output_blocks\.(\d+)\.1\.transformer_blocks\.0\.norm1\.bias"), default=None)
    if last is None:
        return "eps"
    bias = unet[f"output_blocks.{last}.1.transformer_blocks.0.norm1.bias"]
    return "v" if bias.float().std(correction=0).item() > V_PREDICTION_STD_THRESHOLD else "eps"


SD2 = register(ModelFamily(
    name="sd2", description="Stable Diffusion 2.x", priority=20, matches=matches, unet_config=unet_config,
    text_encoders=("clip_h",), latent_format=SD15, clip_type="stable_diffusion",
    prediction_heuristic=v_prediction_heuristic,
))
