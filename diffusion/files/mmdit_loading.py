"""MMDiT networks and whole SD3/SD3.5 checkpoints from files.

Owns `is_mmdit` (diffusion-model keys, without `model.diffusion_model.`, that are an MMDiT: `x_embedder` and
`joint_blocks`), `build_mmdit` (config off the shapes, built on `meta`, the file's tensors assigned; a file without
`pos_embed` gets the sin-cos table) and `load_sd3_checkpoint` (MMDiT + the 16-channel VAE of a single file; SD3
files that also carry `text_encoders.*` are read by the text-encoder loaders, not here).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from diffusion.files.checkpoint import UNET_PREFIX, VAE_PREFIX, CheckpointError, strip_prefix
from diffusion.families.shapes import vae_config_from_state_dict
from diffusion.networks.mmdit import MMDiT, mmdit_config_from_state_dict, sincos_pos_embed_2d
from diffusion.networks.mmdit_blocks import FP8_DTYPES, Linear
from diffusion.networks.vae import AutoencoderKL, build_vae


def is_mmdit(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether diffusion-model keys (no `model.diffusion_model.` prefix) belong to an MMDiT."""
    return "x_embedder.proj.weight" in state_dict and "joint_blocks.0.x_block.attn.qkv.weight" in state_dict


def checkpoint_is_mmdit(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether a file's keys (prefixed or not) hold an MMDiT."""
    return is_mmdit(state_dict) or f"{UNET_PREFIX}joint_blocks.0.x_block.attn.qkv.weight" in state_dict


def build_mmdit(state_dict: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> MMDiT:
    """The MMDiT of diffusion-model keys, its config read off their shapes; `CheckpointError` when they do not
    fit one."""
    try:
        config = mmdit_config_from_state_dict(state_dict)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"MMDiT weights lack a tensor every SD3 model has ({err})") from err
    state_dict, scales = _split_fp8_scales(state_dict)
    if "pos_embed" not in state_dict:
        state_dict = {**state_dict, "pos_embed": sincos_pos_embed_2d(config.hidden_size, config.pos_embed_max_size, 64)}
    with torch.device("meta"):
        model = MMDiT(config)
    _check_keys(model, state_dict)
    # fp8 linear weights stay fp8 in memory (each Linear upcasts per call); everything else in `dtype`
    cast = {k: v.to(device) if v.dtype in FP8_DTYPES and k.endswith(".weight") else v.to(device=device, dtype=dtype)
            for k, v in state_dict.items()}
    model.load_state_dict(cast, strict=True, assign=True)
    for name, scale in scales.items():
        module = model.get_submodule(name)
        if not isinstance(module, Linear):
            raise CheckpointError(f"scaled fp8: {name}.scale_weight belongs to no linear layer")
        module.scale_weight = scale.float().to(device)
    return model.eval().requires_grad_(False)


def _check_keys(model: MMDiT, state_dict: dict[str, torch.Tensor]) -> None:
    """`CheckpointError` naming missing, unexpected or wrongly shaped tensors."""
    expected = model.state_dict(keep_vars=True)
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"MMDiT weights do not match its config: {len(missing)} missing (e.g. {missing[:5]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})")
    wrong = [k for k, v in expected.items() if tuple(v.shape) != tuple(state_dict[k].shape)]
    if wrong:
        raise CheckpointError(f"MMDiT weights have {len(wrong)} tensors of the wrong shape, e.g. {wrong[0]}: file "
                              f"{tuple(state_dict[wrong[0]].shape)}, model {tuple(expected[wrong[0]].shape)}")


def _split_fp8_scales(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """ComfyUI "scaled fp8" files: the `scaled_fp8` marker, per-layer `scale_weight` (weight = stored · scale)
    and `scale_input` (only for fp8 matmuls, unused when upcasting) are taken out; returns (weights, scales by
    layer name)."""
    scales = {k[: -len(".scale_weight")]: v for k, v in state_dict.items() if k.endswith(".scale_weight")}
    weights = {k: v for k, v in state_dict.items()
               if k != "scaled_fp8" and not k.endswith((".scale_weight", ".scale_input"))}
    return weights, scales


@dataclass
class LoadedSD3:
    """The MMDiT and (None without one in the file) the VAE of an SD3/SD3.5 file."""

    mmdit: MMDiT
    vae: AutoencoderKL | None


def load_sd3_checkpoint(state_dict: dict[str, torch.Tensor], dtype: torch.dtype, vae_dtype: torch.dtype,
                        path: str | os.PathLike[str] = "") -> LoadedSD3:
    """MMDiT (`model.diffusion_model.*`) and VAE (`first_stage_model.*`) of a single-file SD3 checkpoint."""
    net = strip_prefix(state_dict, UNET_PREFIX)
    if not is_mmdit(net):
        raise CheckpointError(f"{os.fspath(path)}: no MMDiT under {UNET_PREFIX!r}")
    mmdit = build_mmdit(net, dtype)
    vae_sd = {k[len(VAE_PREFIX):]: v for k, v in state_dict.items() if k.startswith(VAE_PREFIX)}
    vae = build_vae(vae_config_from_state_dict(vae_sd), vae_sd, dtype=vae_dtype) if vae_sd else None
    return LoadedSD3(mmdit, vae)
