"""Diffusers model folders (`model_index.json` with `unet/`, `vae/`, `text_encoder/`, optionally `text_encoder_2/`)
read into one single-file checkpoint state dict in the LDM layout Loom's loaders read.

Owns:
- `diffusers_weights(folder)`: the weight file of each part, tried in ComfyUI's order (fp16 safetensors, safetensors,
  fp16 bin, bin; `diffusion_pytorch_model.*` for the UNet and VAE, `model.*` / `pytorch_model.*` for text towers);
- `unet_to_ldm(sd)`: diffusers `UNet2DConditionModel` keys → LDM `openaimodel` keys. The block layout (levels,
  res blocks per level, which blocks carry a transformer and how deep) is read off the keys, then the module
  correspondence is `diffusion.adapters.lora_formats.diffusers_to_ldm_prefixes` (the same table LoRA loading uses);
- `vae_to_ldm(sd)`: diffusers `AutoencoderKL` keys → LDM `first_stage_model` keys (the mid attention's linear
  q/k/v/out become the 1×1 convolutions of the LDM layout, old and new diffusers attention names both read);
- `diffusers_checkpoint(folder)`: the whole checkpoint: `model.diffusion_model.*`, `first_stage_model.*`, the text
  tower(s) in the HF CLIPTextModel layout under `cond_stage_model.transformer.` (SD1/SD2; SD2's 23 stored blocks
  completed to OpenCLIP-H's 24, `complete_openclip_h`) or, with a second text
  encoder (SDXL), `conditioner.embedders.0.transformer.` and `conditioner.embedders.1.model.`.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from diffusion.files.checkpoint import CheckpointError, read_state_dict
from diffusion.adapters.lora_formats import diffusers_to_ldm_prefixes
from diffusion.networks.unet import UNetConfig

_MODEL_FILES = ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors",
                "diffusion_pytorch_model.fp16.bin", "diffusion_pytorch_model.bin")
_TEXT_FILES = ("model.fp16.safetensors", "model.safetensors", "pytorch_model.fp16.bin", "pytorch_model.bin")
_PARTS = {"unet": _MODEL_FILES, "vae": _MODEL_FILES, "text_encoder": _TEXT_FILES, "text_encoder_2": _TEXT_FILES}


def diffusers_weights(folder: str | Path) -> dict[str, Path]:
    """The weight file of each part the folder has ("unet", "vae", "text_encoder", "text_encoder_2")."""
    folder = Path(folder)
    found = {}
    for part, names in _PARTS.items():
        path = next((folder / part / name for name in names if (folder / part / name).is_file()), None)
        if path is not None:
            found[part] = path
    if "unet" not in found:
        raise CheckpointError(f"{folder.name}: no unet/diffusion_pytorch_model(.fp16).safetensors or .bin in the "
                              f"diffusers folder")
    return found


def _indices(keys: list[str], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def _depth(keys: list[str], block: str) -> int:
    """How many transformer blocks the attention module `block` has (0 when there is none)."""
    found = _indices(keys, re.escape(block) + r"\.transformer_blocks\.(\d+)\.")
    return found[-1] + 1 if found else 0


def unet_layout(sd: dict[str, Tensor]) -> UNetConfig:
    """The block layout of a diffusers UNet (levels, res blocks, transformer depth per block) from its keys."""
    keys = list(sd)
    levels = len(_indices(keys, r"down_blocks\.(\d+)\."))
    nrb = len(_indices(keys, r"down_blocks\.0\.resnets\.(\d+)\."))
    if not levels or not nrb or "conv_in.weight" not in sd:
        raise CheckpointError("not a diffusers UNet2DConditionModel (no conv_in / down_blocks.*.resnets.*)")
    width = int(sd["conv_in.weight"].shape[0])
    mult = tuple(int(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) // width for i in range(levels))
    depth_in = tuple(_depth(keys, f"down_blocks.{i}.attentions.{j}") for i in range(levels) for j in range(nrb))
    depth_out = tuple(_depth(keys, f"up_blocks.{u}.attentions.{j}") for u in range(levels) for j in range(nrb + 1))
    middle = _depth(keys, "mid_block.attentions.0") if any(k.startswith("mid_block.attentions.0.") for k in keys) \
        else -1
    return UNetConfig(model_channels=width, channel_mult=mult, num_res_blocks=nrb, depth_in=depth_in,
                      depth_out=depth_out, depth_middle=middle)


def _rename(sd: dict[str, Tensor], prefixes: dict[str, str], what: str) -> dict[str, Tensor]:
    """Each key's longest known module prefix replaced; unknown keys are an error naming a few."""
    out, unknown = {}, []
    for key, value in sd.items():
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            head = ".".join(parts[:cut])
            if head in prefixes:
                out[".".join([prefixes[head]] + parts[cut:])] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{what}: {len(unknown)} key(s) of no known diffusers module, e.g. {unknown[:3]}")
    return out


def unet_to_ldm(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A diffusers UNet's tensors keyed as in an LDM UNet (no `model.diffusion_model.` prefix)."""
    return _rename(sd, diffusers_to_ldm_prefixes(unet_layout(sd)), "unet")


_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
                  "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}


def _vae_prefixes(sd: dict[str, Tensor]) -> dict[str, str]:
    keys = list(sd)
    out = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for side in ("encoder", "decoder"):
        out.update({f"{side}.conv_in": f"{side}.conv_in", f"{side}.conv_out": f"{side}.conv_out",
                    f"{side}.conv_norm_out": f"{side}.norm_out"})
        for n in (0, 1):
            out[f"{side}.mid_block.resnets.{n}"] = f"{side}.mid.block_{n + 1}"
        for d, l in _VAE_ATTENTION.items():
            out[f"{side}.mid_block.attentions.0.{d}"] = f"{side}.mid.attn_1.{l}"
    for i in _indices(keys, r"encoder\.down_blocks\.(\d+)\."):
        for j in _indices(keys, rf"encoder\.down_blocks\.{i}\.resnets\.(\d+)\."):
            out[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        out[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
    ups = _indices(keys, r"decoder\.up_blocks\.(\d+)\.")
    for u in ups:
        level = len(ups) - 1 - u
        for j in _indices(keys, rf"decoder\.up_blocks\.{u}\.resnets\.(\d+)\."):
            out[f"decoder.up_blocks.{u}.resnets.{j}"] = f"decoder.up.{level}.block.{j}"
        out[f"decoder.up_blocks.{u}.upsamplers.0.conv"] = f"decoder.up.{level}.upsample.conv"
    return out


def vae_to_ldm(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A diffusers AutoencoderKL's tensors keyed as in an LDM VAE (no `first_stage_model.` prefix)."""
    renamed = {}
    for key, value in _rename(sd, _vae_prefixes(sd), "vae").items():
        for d, l in _VAE_RESNET.items():
            key = key.replace(f".{d}.", f".{l}.")
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # Linear → 1×1 convolution
        renamed[key] = value
    return renamed


def diffusers_checkpoint(folder: str | Path, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """The folder's UNet, VAE and text encoder(s) as one single-file checkpoint state dict (LDM keys)."""
    files = diffusers_weights(folder)

    def read(part: str) -> dict[str, Tensor]:
        return read_state_dict(files[part], dtype=dtype)

    out = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(read("unet")).items()}
    if "vae" in files:
        out.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(read("vae")).items()})
    if "text_encoder_2" in files:
        if "text_encoder" in files:
            out.update({f"conditioner.embedders.0.transformer.{k}": v for k, v in read("text_encoder").items()})
        slot = "conditioner.embedders.1.model." if "text_encoder" in files else "conditioner.embedders.0.model."
        out.update({slot + k: v for k, v in read("text_encoder_2").items()})
    elif "text_encoder" in files:
        text = complete_openclip_h(read("text_encoder"))
        out.update({f"cond_stage_model.transformer.{k}": v for k, v in text.items()})
    return out


_SD2_STORED_LAYERS = 23  # diffusers' SD2 text_encoder: OpenCLIP-H's 24 blocks less the last, which SD2 never uses


def complete_openclip_h(hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """Diffusers stores SD2's OpenCLIP-H without its last block (SD2 reads the penultimate layer). The 24-block
    depth is restored by repeating block 22 as block 23, so the default (penultimate) layer is the file's last
    block, as ComfyUI's 24-block tower over such a file gives; other towers are returned as they are."""
    layers = _indices(list(hf), r"text_model\.encoder\.layers\.(\d+)\.")
    width = hf.get("text_model.embeddings.token_embedding.weight")
    if len(layers) != _SD2_STORED_LAYERS or width is None or int(width.shape[1]) != 1024:
        return hf
    last = f"text_model.encoder.layers.{_SD2_STORED_LAYERS - 1}."
    extra = {f"text_model.encoder.layers.{_SD2_STORED_LAYERS}.{k[len(last):]}": v
             for k, v in hf.items() if k.startswith(last)}
    return {**hf, **extra}
