"""ControlNet and T2I-Adapter files in the diffusers layout, converted to the original (LDM) layout Loom builds.

Owns `is_diffusers_controlnet` / `diffusers_controlnet_to_ldm` (diffusers `ControlNetModel` keys:
`controlnet_cond_embedding.*`, `time_embedding.*`, `add_embedding.*`, `down_blocks.*`, `mid_block.*`,
`controlnet_down_blocks.N`, `controlnet_mid_block` → lllyasviel's `input_hint_block.*`, `input_blocks.*`,
`middle_block.*`, `zero_convs.N.0`, `middle_block_out.0`), the layout most SDXL ControlNets ship as (union
ControlNets keep their own modules, see `diffusion/adapters/controlnet_union.py`), and
`diffusers_t2i_adapter_to_ldm` (diffusers `T2IAdapter`: `adapter.body.I.resnets.J.*` → `body.{2I+J}.*`, as
ComfyUI's `load_t2i_adapter` renames them).

The block structure (levels, res blocks per level, which blocks have attention) is read off the keys, so every
UNet width and depth converts the same way; the attention blocks' insides have the same names in both layouts.
Keys with no LDM counterpart are reported in a `CheckpointError` naming them rather than silently dropped.
"""
from __future__ import annotations

import re

import torch

from diffusion.files.checkpoint import CheckpointError
from diffusion.adapters.controlnet_union import is_union_state_dict, rename_union_keys
from diffusion.families.shapes import indices
from diffusion.adapters.lora_formats import RESNET_DIFFUSERS_TO_LDM, TOP_LEVEL_DIFFUSERS_TO_LDM

COND_EMBEDDING = "controlnet_cond_embedding."
# The union ControlNet's own modules (diffusion/adapters/controlnet_union.py), kept as they are.
UNION_MODULES = ("task_embedding", "transformer_layes", "spatial_ch_projs", "control_add_embedding")


def is_diffusers_controlnet(sd: dict[str, torch.Tensor]) -> bool:
    """Whether `sd` holds a diffusers `ControlNetModel` (its hint encoder's first conv is the marker ComfyUI uses)."""
    return f"{COND_EMBEDDING}conv_in.weight" in sd


def _resnet_prefixes(ldm: str, diffusers: str) -> dict[str, str]:
    return {f"{diffusers}.{d}": f"{ldm}.{l}" for d, l in RESNET_DIFFUSERS_TO_LDM.items()}


def controlnet_prefix_map(sd: dict[str, torch.Tensor]) -> dict[str, str]:
    """diffusers module path -> LDM module path for the modules of a diffusers ControlNet state dict."""
    out = {k: v for k, v in TOP_LEVEL_DIFFUSERS_TO_LDM.items() if not k.startswith("conv_norm_out")}
    levels = indices(sd, r"down_blocks\.(\d+)\.")
    nrb = len(indices(sd, r"down_blocks\.0\.resnets\.(\d+)\."))
    for i in levels:
        for j in range(nrb):
            n = 1 + i * (nrb + 1) + j
            out.update(_resnet_prefixes(f"input_blocks.{n}.0", f"down_blocks.{i}.resnets.{j}"))
            out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
        out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{1 + i * (nrb + 1) + nrb}.0.op"
    out.update(_resnet_prefixes("middle_block.0", "mid_block.resnets.0"))
    out["mid_block.attentions.0"] = "middle_block.1"
    out.update(_resnet_prefixes("middle_block.2", "mid_block.resnets.1"))
    for n in indices(sd, r"controlnet_down_blocks\.(\d+)\."):
        out[f"controlnet_down_blocks.{n}"] = f"zero_convs.{n}.0"
    out["controlnet_mid_block"] = "middle_block_out.0"
    # The hint encoder: conv_in, then blocks.0..N-1, then conv_out, at the even indices of input_hint_block.
    blocks = indices(sd, re.escape(COND_EMBEDDING) + r"blocks\.(\d+)\.")
    out[f"{COND_EMBEDDING}conv_in"] = "input_hint_block.0"
    for b in blocks:
        out[f"{COND_EMBEDDING}blocks.{b}"] = f"input_hint_block.{2 * (b + 1)}"
    out[f"{COND_EMBEDDING}conv_out"] = f"input_hint_block.{2 * (len(blocks) + 1)}"
    return out


def _rename(key: str, prefixes: dict[str, str]) -> str | None:
    """`key` with its longest known module prefix replaced, None when no prefix is known."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in prefixes:
            return ".".join([prefixes[head]] + parts[cut:])
    return None


def diffusers_controlnet_to_ldm(sd: dict[str, torch.Tensor], name: str = "") -> dict[str, torch.Tensor]:
    """The weights of a diffusers-layout ControlNet under the original layout's keys (no `control_model.`)."""
    prefixes = controlnet_prefix_map(sd)
    out: dict[str, torch.Tensor] = {}
    leftover: list[str] = []
    union = is_union_state_dict(sd)
    for key, value in sd.items():
        new = _rename(key, prefixes)
        if new is None and union and key.split(".")[0] in UNION_MODULES:
            out.update(rename_union_keys({key: value}))
        elif new is None:
            leftover.append(key)
        else:
            out[new] = value
    if leftover:
        raise CheckpointError(
            f"{name or 'this diffusers ControlNet'} has {len(leftover)} weights Loom cannot place in a ControlNet "
            f"(e.g. {sorted(leftover)[:5]}); it is not a UNet-style ControlNet Loom knows")
    return out


def is_diffusers_t2i_adapter(sd: dict[str, torch.Tensor]) -> bool:
    """Whether `sd` holds a diffusers `T2IAdapter` (full or full-XL adapter: `adapter.body.0.resnets.0.*`)."""
    return "adapter.body.0.resnets.0.block1.weight" in sd


def diffusers_t2i_adapter_to_ldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers full adapter's weights under TencentARC's keys: `adapter.body.I.resnets.J.` → `body.{2I+J}.`,
    `adapter.body.I.in_conv` → `body.{2I}.in_conv`, `adapter.conv_in` → `conv_in` (ComfyUI's renaming, which
    assumes two blocks per level as every released adapter has)."""
    out: dict[str, torch.Tensor] = {}
    pattern = re.compile(r"adapter\.body\.(\d+)\.(?:resnets\.(\d+)\.)?(.*)")
    for key, value in sd.items():
        match = pattern.match(key)
        if match:
            level, block, rest = int(match.group(1)), int(match.group(2) or 0), match.group(3)
            out[f"body.{level * 2 + block}.{rest}"] = value
        else:
            out[key.removeprefix("adapter.")] = value
    return out
