"""From a model file to built networks: single-file SD checkpoints and UNet-/VAE-only files.

Owns `load_checkpoint` (and `checkpoint_from_state_dict` for tensors already read: read once, cast while reading, detect the family, build UNet, VAE and — through
`diffusion.text.text_encoders` — the text tower, each on `meta` with the file's tensors assigned), `load_unet_file` and
`load_vae_file`. Nothing here decides devices or precisions: callers (the loader nodes, via the memory manager's
policy) pass them in.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from diffusion.files.checkpoint import (
    TEXT_ENCODER_PREFIX,
    TEXT_ENCODER_PREFIXES,
    UNET_PREFIX,
    VAE_PREFIX,
    CheckpointError,
    LoadReport,
    read_metadata,
    read_state_dict,
    split_components,
    strip_prefix,
)
from diffusion.families import (
    Evidence,
    ModelInfo,
    detect_checkpoint,
    detect_file_kind,
    family_for,
    read_unet_shapes,
    vae_config_from_state_dict,
)
from diffusion.networks.unet import UNetModel, build_unet
from diffusion.networks.weight_cast import attach_scales, split_scaled_fp8
from diffusion.networks.vae import VAE, build_vae


_VAE_NAMESPACE = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_SCALE_SUFFIXES = (".scale_weight", ".scale_input")


@dataclass
class LoadedCheckpoint:
    """The parts of a single-file checkpoint; a part the file lacks is None and named in `report.missing`."""

    info: ModelInfo
    unet: UNetModel | None
    vae: VAE | None
    text_encoder: torch.nn.Module | None
    report: LoadReport
    metadata: dict[str, str] = field(default_factory=dict)


def _dtype_by_component(
    dtype: torch.dtype, vae_dtype: torch.dtype | None, text_encoder_dtype: torch.dtype | None
) -> Callable[[str], torch.dtype | None]:
    def pick(key: str) -> torch.dtype | None:
        if key.endswith(_SCALE_SUFFIXES):
            return None  # scaled-fp8 scales stay as stored (float32)
        if key.startswith(VAE_PREFIX):
            return vae_dtype or dtype
        if key.startswith(TEXT_ENCODER_PREFIXES):  # SD1/SD2 and SDXL text towers
            return text_encoder_dtype or dtype
        return dtype

    return pick


def _build_text_encoder(state_dict: dict[str, torch.Tensor], dtype: torch.dtype,
                        layout: str | None = None) -> torch.nn.Module:
    """The text model of a checkpoint's text-encoder keys: one tower (SD1/SD2) or, for SDXL's `conditioner.`
    embedders (`layout` "sdxl"/"sdxl_refiner"), the towers in step."""
    from diffusion.text.clip_multi import build_conditioner  # the text towers belong to their own modules
    from diffusion.text.text_encoders import build_text_encoder

    try:
        if layout in ("sdxl", "sdxl_refiner"):
            return build_conditioner(state_dict, layout, dtype=dtype)
        return build_text_encoder(state_dict, dtype=dtype)
    except ValueError as err:
        raise CheckpointError(f"text encoder: {err}") from err


def load_checkpoint(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    vae_dtype: torch.dtype | None = None,
    text_encoder_dtype: torch.dtype | None = None,
    prediction: str | None = None,
    load_text_encoder: bool = True,
    unet_matrix_dtype: torch.dtype | None = None,
) -> LoadedCheckpoint:
    """Load an SD1.x/SD2.x single-file checkpoint into networks of `dtype` (VAE/text tower may differ) on `device`.

    `prediction` ("eps"/"v") overrides detection; `unet_matrix_dtype` (an fp8 type) is the dtype the UNet's
    matrices are read in (fp8 storage), so no half-precision copy of the whole UNet is ever resident. Raises
    `CheckpointError` for unknown layouts.
    """
    metadata = read_metadata(path)
    matrices = None
    if unet_matrix_dtype is not None:
        def matrices(key: str) -> torch.dtype | None:
            unet_key = key.startswith("model.diffusion_model.") and key.endswith(".weight")
            return unet_matrix_dtype if unet_key else None
    state_dict = read_state_dict(path, dtype=_dtype_by_component(dtype, vae_dtype, text_encoder_dtype), device=device,
                                 matrix_dtype=matrices)
    return checkpoint_from_state_dict(state_dict, metadata, os.path.basename(os.fspath(path)), dtype, device,
                                      vae_dtype=vae_dtype, text_encoder_dtype=text_encoder_dtype,
                                      prediction=prediction, load_text_encoder=load_text_encoder)


def checkpoint_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    metadata: dict[str, str],
    name: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    vae_dtype: torch.dtype | None = None,
    text_encoder_dtype: torch.dtype | None = None,
    prediction: str | None = None,
    load_text_encoder: bool = True,
) -> LoadedCheckpoint:
    """`load_checkpoint` on tensors already read (single-file checkpoint keys; `name` for messages)."""
    try:
        info = detect_checkpoint(state_dict, metadata)
    except CheckpointError as err:
        raise CheckpointError(f"{name}: {err}") from err
    if prediction is not None:
        info = replace(info, prediction=prediction, sampling=None)
    parts = split_components(state_dict)
    del state_dict
    report = parts.report()
    unet_sd, scales = split_scaled_fp8(parts.unet)
    unet = build_unet(info.unet, unet_sd, dtype=dtype, device=device)
    _attach(unet, scales, dtype, name)
    vae = None
    if info.vae is not None:
        vae = VAE(build_vae(info.vae, parts.vae, dtype=vae_dtype or dtype, device=device))
    else:
        report.missing.append(f"{VAE_PREFIX}* (the file has no VAE)")
    text_encoder = None
    if parts.text_encoder and load_text_encoder:
        text_encoder = _build_text_encoder(parts.text_encoder, text_encoder_dtype or dtype, info.text_encoder)
    elif not parts.text_encoder:
        report.missing.append(f"{TEXT_ENCODER_PREFIX}* (the file has no text encoder)")
    return LoadedCheckpoint(info, unet, vae, text_encoder, report, metadata)


def load_unet_file(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    family: str | None = None,
) -> tuple[UNetModel, str, str]:
    """A UNet from a UNet-only file (keys with or without `model.diffusion_model.`) or a full checkpoint's UNet.

    Returns the network, its family's registry name and the detected prediction type ("eps"/"v"); `family` is
    the hint for widths no real model uses.
    """
    raw = strip_prefix(read_state_dict(path, dtype=lambda key: None if key.endswith(_SCALE_SUFFIXES) else dtype,
                                       device=device), UNET_PREFIX)
    state_dict, scales = split_scaled_fp8(raw)
    kind = detect_file_kind(state_dict)
    if kind != "unet":
        raise CheckpointError(f"{os.fspath(path)} holds a {kind}, not a UNet")
    metadata = read_metadata(path)
    shapes = read_unet_shapes(state_dict)
    detected = family_for(Evidence(shapes, family, metadata))
    prediction = detected.prediction(state_dict, metadata)
    unet = build_unet(detected.unet_config(shapes), state_dict, dtype=dtype, device=device)
    _attach(unet, scales, dtype, path)
    return unet, detected.name, prediction


def _attach(unet: UNetModel, scales: dict[str, torch.Tensor], dtype: torch.dtype, path: str | os.PathLike) -> None:
    """ComfyUI "scaled fp8" UNet files: each layer's `scale_weight` (weight = stored · scale)."""
    try:
        attach_scales(unet, scales, dtype, os.path.basename(os.fspath(path)))
    except ValueError as err:
        raise CheckpointError(str(err)) from err


def load_vae_file(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    scale_factor: float = 0.18215,
) -> VAE:
    """A `VAE` from a VAE-only file (keys with or without `first_stage_model.`) or a full checkpoint's VAE."""
    raw = read_state_dict(path, dtype=dtype, device=device)
    if any(k.startswith(UNET_PREFIX) for k in raw):
        raw = {VAE_PREFIX + k: v for k, v in split_components(raw).vae.items()}
    state_dict = strip_prefix(raw, VAE_PREFIX)
    if detect_file_kind(state_dict) != "vae":
        raise CheckpointError(f"{os.fspath(path)} holds no VAE weights")
    # Training exports also carry the discriminator (`loss.*`) and EMA bookkeeping; the network needs none of it.
    state_dict = {k: v for k, v in state_dict.items() if k.startswith(_VAE_NAMESPACE)}
    config = vae_config_from_state_dict(state_dict)
    return VAE(build_vae(config, state_dict, dtype=dtype, device=device), scale_factor=scale_factor)
