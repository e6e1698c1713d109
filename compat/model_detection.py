"""ComfyUI's `comfy.model_detection` for custom node packs, mapped onto Loom's family registry
(`diffusion/families/`): `unet_prefix_from_state_dict`, `detect_unet_config`, `model_config_from_unet`.

`detect_unet_config` returns ComfyUI's config keys that Loom's `UNetConfig` has (in/out channels, model channels,
channel_mult, num_res_blocks, transformer_depth per input block, transformer_depth_middle, context_dim, heads,
linear projections, adm_in_channels); `model_config_from_unet` gives an object with `unet_config`, `latent_format`
(a `comfy.latent_formats` instance), `family` (Loom's registry name) and `name`. SD3 MMDiT files are recognised
by family only; families Loom does not have give None, as ComfyUI's does for unknown models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffusion.files.checkpoint import CheckpointError
from diffusion.families import Evidence, family_for, latent_format_for, read_unet_shapes
from diffusion.files.mmdit_loading import checkpoint_is_mmdit

BINDING: Any  # set by compat.install_compat before this module runs

_PREFIXES = ("model.diffusion_model.", "model.model.", "net.", "")


def unet_prefix_from_state_dict(state_dict: dict[str, torch.Tensor]) -> str:
    """The key prefix the diffusion model's weights sit under ("model.diffusion_model." in checkpoints)."""
    for prefix in _PREFIXES[:-1]:
        if any(k.startswith(prefix) for k in state_dict):
            return prefix
    return ""


def _strip(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _family_and_config(unet: dict[str, torch.Tensor], metadata: dict | None) -> tuple[str, Any] | None:
    if checkpoint_is_mmdit({"model.diffusion_model." + k: v for k, v in unet.items()}):
        return "sd3", None
    try:
        shapes = read_unet_shapes(unet)
        family = family_for(Evidence(shapes, None, dict(metadata or {})))
        return family.name, family.unet_config(shapes)
    except (CheckpointError, KeyError, ValueError, IndexError):
        return None


def _comfy_names(config: Any) -> dict[str, Any]:
    depth_in = [config.input_depth(level, i) for level in range(len(config.channel_mult))
                for i in range(config.num_res_blocks)]
    return {"use_checkpoint": False, "in_channels": config.in_channels, "out_channels": config.out_channels,
            "model_channels": config.model_channels,
            "num_res_blocks": [config.num_res_blocks] * len(config.channel_mult),
            "channel_mult": list(config.channel_mult), "transformer_depth": depth_in,
            "transformer_depth_middle": config.middle_depth(), "context_dim": config.context_dim,
            "num_heads": config.num_heads, "num_head_channels": config.num_head_channels,
            "use_linear_in_transformer": config.use_linear_in_transformer,
            "adm_in_channels": config.adm_in_channels, "use_spatial_transformer": True, "legacy": False}


def detect_unet_config(state_dict: dict[str, torch.Tensor], key_prefix: str, metadata: dict | None = None
                       ) -> dict[str, Any] | None:
    """ComfyUI-named UNet config of the weights under `key_prefix`, None when they are no UNet Loom knows (an SD3
    MMDiT gives {"family": "sd3", "in_channels": ...})."""
    unet = _strip(state_dict, key_prefix)
    found = _family_and_config(unet, metadata)
    if found is None:
        return None
    family, config = found
    if config is None:
        return {"family": family, "in_channels": int(unet["x_embedder.proj.weight"].shape[1])}
    return _comfy_names(config)


@dataclass
class ModelConfig:
    """What `model_config_from_unet` returns: the family and its UNet config and latent format."""

    family: str
    unet_config: dict[str, Any]
    latent_format: Any

    @property
    def name(self) -> str:
        return self.family


def _comfy_latent_format(family: str) -> Any:
    """The `comfy.latent_formats` instance of a family's latent format."""
    import sys

    formats = sys.modules["comfy.latent_formats"]
    spec = latent_format_for(family)
    for name in ("SD15", "SDXL", "SDXL_Playground_2_5", "SD3"):
        cls = getattr(formats, name)
        if cls._spec == spec:
            return cls()
    return formats.LatentFormat()


def model_config_from_unet(state_dict: dict[str, torch.Tensor], unet_key_prefix: str,
                           use_base_if_no_match: bool = False, metadata: dict | None = None) -> ModelConfig | None:
    """The family config of the UNet under `unet_key_prefix`, or None."""
    config = detect_unet_config(state_dict, unet_key_prefix, metadata)
    if config is None:
        return None
    unet = _strip(state_dict, unet_key_prefix)
    family, _ = _family_and_config(unet, metadata)  # type: ignore[misc]
    return ModelConfig(family, config, _comfy_latent_format(family))
