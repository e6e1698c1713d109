"""Which model a file holds: family, variant, prediction type and the network configs, through the registry.

Owns `ModelInfo`, `detect_checkpoint` (a single-file checkpoint → `ModelInfo`), `detect_file_kind` (checkpoint,
UNet-, VAE- or text-encoder-only file), `text_encoder_family` (the layout family of a file's text towers),
`unet_config_from_state_dict` and `detect_prediction`. The rules themselves live in the family modules.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from diffusion.files.checkpoint import (
    CONDITIONER_PREFIX,
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    CheckpointError,
    split_components,
    strip_prefix,
)
from diffusion.families.base import Evidence, SamplingSpec
from diffusion.families.registry import family_for, get_family
from diffusion.families.shapes import key_prefixes, read_unet_shapes, vae_config_from_state_dict
from diffusion.networks.unet import UNetConfig
from diffusion.networks.vae import VAEConfig


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint is: `family` (a registry name: "sd1", "sd2", "sdxl", ...), `inpaint`, `prediction`
    "eps"/"v", and the network configs (None for a component the file lacks); `text_encoder` names the text
    towers' layout family or is None."""

    family: str
    inpaint: bool
    prediction: str
    unet: UNetConfig | None
    vae: VAEConfig | None
    text_encoder: str | None
    sampling: SamplingSpec | None = None  # a schedule the file's marker keys ask for (SDXL v-pred, EDM, ...)

    @property
    def name(self) -> str:
        """A short label such as "sd1", "sd1-inpaint", "sd2-v"."""
        return self.family + ("-inpaint" if self.inpaint else "") + ("-v" if self.prediction == "v" else "")


def text_encoder_family(te_state_dict: dict[str, torch.Tensor]) -> str | None:
    """The layout family of text-encoder keys (checkpoint prefix `cond_stage_model.`/`conditioner.` removed):
    "sd1" for an HF CLIPTextModel layout, "sd2" for OpenCLIP's, "sdxl" for SDXL's two embedders, "sdxl_refiner"
    for its bigG-only embedder; None when none fits."""
    keys = te_state_dict.keys()
    if any(k.startswith("embedders.") for k in keys):
        if any(k.startswith("embedders.1.model.") for k in keys):
            return "sdxl"
        if any(k.startswith("embedders.0.model.") for k in keys):
            return "sdxl_refiner"
        return None
    if any(k.startswith(("transformer.text_model.", "text_model.")) for k in keys):
        return "sd1"
    if any(k.startswith(("model.transformer.resblocks.", "transformer.resblocks.")) for k in keys):
        return "sd2"
    return None


def unet_config_from_state_dict(unet: dict[str, torch.Tensor], family: str | None = None) -> UNetConfig:
    """The `UNetConfig` of UNet weights (keys without `model.diffusion_model.`), read off their shapes; `family`
    (a registry name or a text-encoder layout family) is the hint for widths no real model uses."""
    shapes = read_unet_shapes(unet)
    return family_for(Evidence(shapes, family)).unet_config(shapes)


def detect_prediction(unet: dict[str, torch.Tensor], family: str, metadata: dict[str, str] | None = None) -> str:
    """"v" or "eps": the file's metadata when it says, else the family's own rule (ComfyUI's SD2 heuristic)."""
    return get_family(family).prediction(unet, metadata)


def detect_checkpoint(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> ModelInfo:
    """Describe a single-file checkpoint (prefixed keys); `CheckpointError` for an unknown layout."""
    parts = split_components(state_dict)
    if not parts.unet and detect_file_kind(state_dict) != "checkpoint":
        kind = detect_file_kind(state_dict)
        loader = {"unet": "models/unet (models/diffusion_models) and load it with UNETLoader (Load Diffusion Model)",
                  "vae": "models/vae and load it with VAELoader (Load VAE)",
                  "text_encoder": "models/text_encoders (models/clip) and load it with CLIPLoader or DualCLIPLoader"}
        raise CheckpointError(
            f"this file holds only a {kind.replace('_', ' ')}, not a whole checkpoint (UNet + text encoders + VAE): "
            f"put it in {loader[kind]}"
        )
    if not parts.unet:
        raise CheckpointError(
            f"no UNet weights under {UNET_PREFIX!r}: this is not a single-file SD checkpoint "
            f"(found {key_prefixes(sorted(state_dict))}); load component files with their own loaders"
        )
    te_family = text_encoder_family(parts.text_encoder)
    shapes = read_unet_shapes(parts.unet)
    family = family_for(Evidence(shapes, te_family, dict(metadata or {})))
    unet = family.unet_config(shapes)
    markers = {**parts.extras, **parts.unknown}
    sampling = family.sampling_from_keys(markers) if family.sampling_from_keys is not None else None
    prediction = family.prediction(parts.unet, metadata)
    if sampling is not None and sampling.kind == "discrete":
        prediction = "v" if sampling.prediction == "v_prediction" else "eps"
    return ModelInfo(
        family=family.name,
        inpaint=unet.in_channels == 9,
        prediction=prediction,
        unet=unet,
        vae=vae_config_from_state_dict(parts.vae) if parts.vae else None,
        text_encoder=te_family,
        sampling=sampling,
    )


def detect_file_kind(state_dict: dict[str, torch.Tensor]) -> str:
    """"checkpoint", "unet", "vae" or "text_encoder" for a file's keys; `CheckpointError` when none fits."""
    keys = list(state_dict)
    if any(k.startswith(UNET_PREFIX) for k in keys):
        return "checkpoint"
    if "input_blocks.0.0.weight" in state_dict:
        return "unet"
    vae = strip_prefix(state_dict, VAE_PREFIX)
    if "decoder.conv_in.weight" in vae or "encoder.conv_in.weight" in vae:
        return "vae"
    for prefix in (TEXT_ENCODER_PREFIX, CONDITIONER_PREFIX):
        if text_encoder_family(strip_prefix(state_dict, prefix)) is not None:
            return "text_encoder"
    raise CheckpointError(
        f"unknown model layout: none of an SD checkpoint, UNet, VAE or CLIP text encoder; found {key_prefixes(keys)}"
    )
