"""Network configs read off tensor shapes, shared by every UNet family.

Owns `UNetShapes` (what a UNet state dict says about itself: channels, levels, per-block transformer depths,
context width, ADM width, projection type), `read_unet_shapes`, `config_from_shapes` (shapes + a family's heads
rule → `UNetConfig`), `vae_config_from_state_dict`, and the small key helpers (`indices`, `key_prefixes`) the
family modules and the detector use. Nothing here decides a family.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from diffusion.files.checkpoint import CheckpointError
from diffusion.networks.unet import UNetConfig
from diffusion.networks.vae import VAEConfig


def key_prefixes(keys: list[str], limit: int = 8) -> list[str]:
    """The most common two-part key prefixes with their counts, for error messages ("model.diffusion_model.* (1680)")."""
    seen: dict[str, int] = {}
    for key in keys:
        head = ".".join(key.split(".")[:2])
        seen[head] = seen.get(head, 0) + 1
    return [f"{k}.* ({n})" for k, n in sorted(seen.items(), key=lambda kv: -kv[1])[:limit]]


def indices(state_dict: dict[str, torch.Tensor], pattern: str) -> list[int]:
    """The sorted distinct integers group 1 of `pattern` matches at the start of the keys."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state_dict if (m := regex.match(k))})


@dataclass(frozen=True)
class UNetShapes:
    """An LDM UNet as its tensors describe it. Depths are per block (0: no transformer); `depth_middle` is -1
    when the middle block is a single ResBlock."""

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    depth_in: tuple[int, ...]
    depth_out: tuple[int, ...]
    depth_middle: int
    context_dim: int
    linear: bool
    adm_in_channels: int | None

    @property
    def attention_levels(self) -> tuple[bool, ...]:
        """Per level, whether any of its input blocks has a transformer."""
        n = self.num_res_blocks
        return tuple(any(self.depth_in[i * n:(i + 1) * n]) for i in range(len(self.channel_mult)))

    @property
    def uniform_depth(self) -> int | None:
        """The one transformer depth used everywhere there is a transformer (SD1/SD2), or None (SDXL)."""
        depths = {d for d in self.depth_in + self.depth_out if d} | {self.depth_middle}
        n = self.num_res_blocks
        levels = self.attention_levels
        placed = all((d > 0) == levels[i // n] for i, d in enumerate(self.depth_in)) and all(
            (d > 0) == levels[len(levels) - 1 - i // (n + 1)] for i, d in enumerate(self.depth_out))
        return depths.pop() if len(depths) == 1 and placed else None


def _depth(unet: dict[str, torch.Tensor], block: str) -> int:
    return len(indices(unet, re.escape(block) + r"\.transformer_blocks\.(\d+)\."))


def _input_levels(unet: dict[str, torch.Tensor], mc: int) -> tuple[list[int], list[int], list[int]]:
    """Per level its channel multiplier and res-block count, and the transformer depth of each input res block."""
    mults: list[int] = []
    counts: list[int] = []
    depths: list[int] = []
    in_level = 0
    for i in indices(unet, r"input_blocks\.(\d+)\.")[1:]:
        if f"input_blocks.{i}.0.op.weight" in unet:
            counts.append(in_level)
            in_level = 0
            continue
        if not in_level:
            mults.append(unet[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0] // mc)
        depths.append(_depth(unet, f"input_blocks.{i}.1"))
        in_level += 1
    counts.append(in_level)
    return mults, counts, depths


def read_unet_shapes(unet: dict[str, torch.Tensor]) -> UNetShapes:
    """The `UNetShapes` of UNet weights (keys without `model.diffusion_model.`); `CheckpointError` when a tensor
    every LDM UNet has is missing."""
    try:
        conv_in = unet["input_blocks.0.0.weight"]
        mc, in_channels = conv_in.shape[0], conv_in.shape[1]
        out_channels = unet["out.2.weight"].shape[0]
        mults, counts, depth_in = _input_levels(unet, mc)
        to_k = next(v for k, v in unet.items() if k.endswith("attn2.to_k.weight"))
        proj_in = next(v for k, v in unet.items() if k.endswith(".1.proj_in.weight"))
    except (KeyError, StopIteration) as err:
        raise CheckpointError(
            f"UNet weights lack a tensor every LDM UNet has ({err}); found {key_prefixes(sorted(unet))}"
        ) from err
    if len(set(counts)) != 1:
        raise CheckpointError(f"UNet has uneven residual blocks per level {counts}; not an LDM UNet Loom knows")
    outputs = indices(unet, r"output_blocks\.(\d+)\.")
    depth_out = tuple(_depth(unet, f"output_blocks.{i}.1") for i in outputs)
    middle = _depth(unet, "middle_block.1") if "middle_block.2.in_layers.0.weight" in unet else -1
    adm = unet["label_emb.0.0.weight"].shape[1] if "label_emb.0.0.weight" in unet else None
    return UNetShapes(
        in_channels=in_channels, out_channels=out_channels, model_channels=mc, channel_mult=tuple(mults),
        num_res_blocks=counts[0], depth_in=tuple(depth_in), depth_out=depth_out, depth_middle=middle,
        context_dim=to_k.shape[1], linear=proj_in.ndim == 2, adm_in_channels=adm,
    )


def vae_config_from_state_dict(vae: dict[str, torch.Tensor]) -> VAEConfig:
    """The `VAEConfig` of VAE weights (keys without `first_stage_model.`), read off their shapes."""
    if "decoder.up_blocks.0.resnets.0.norm1.weight" in vae or "decoder.conv_in.weight" not in vae:
        raise CheckpointError(
            "VAE weights are not in the LDM layout (encoder.down.*, decoder.up.*); diffusers-layout VAEs are not "
            f"supported. Found {key_prefixes(sorted(vae))}"
        )
    if any(".attn." in k for k in vae if k.startswith(("encoder.down.", "decoder.up."))):
        raise CheckpointError("VAE has attention inside its resolution levels; only the KL-f8 layout is known")
    ch = vae["encoder.conv_in.weight"].shape[0]
    levels = indices(vae, r"encoder\.down\.(\d+)\.")
    mults = tuple(vae[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in levels)
    z_channels = vae["decoder.conv_in.weight"].shape[1]
    return VAEConfig(
        ch=ch, ch_mult=mults, num_res_blocks=len(indices(vae, r"encoder\.down\.0\.block\.(\d+)\.")),
        in_channels=vae["encoder.conv_in.weight"].shape[1], out_ch=vae["decoder.conv_out.weight"].shape[0],
        z_channels=z_channels,
        embed_dim=vae["post_quant_conv.weight"].shape[1] if "post_quant_conv.weight" in vae else z_channels,
        double_z=vae["encoder.conv_out.weight"].shape[0] == 2 * z_channels,
        use_quant_conv="post_quant_conv.weight" in vae,
    )


def config_from_shapes(shapes: UNetShapes, num_heads: int, num_head_channels: int) -> UNetConfig:
    """A `UNetConfig` of `shapes` with a family's heads rule (a head count, or a head width; the other is -1).

    A UNet with one transformer depth wherever it has transformers (SD1/SD2, the SDXL refiner) is described by
    `attention_resolutions` + `transformer_depth`; any other (SDXL, SSD-1B, Vega) by per-block depths."""
    levels = shapes.attention_levels
    uniform = shapes.uniform_depth
    common = dict(
        in_channels=shapes.in_channels, out_channels=shapes.out_channels, model_channels=shapes.model_channels,
        channel_mult=shapes.channel_mult, num_res_blocks=shapes.num_res_blocks,
        attention_resolutions=tuple(2 ** i for i, a in enumerate(levels) if a), context_dim=shapes.context_dim,
        num_heads=num_heads, num_head_channels=num_head_channels, use_linear_in_transformer=shapes.linear,
        adm_in_channels=shapes.adm_in_channels,
    )
    if uniform is not None:
        return UNetConfig(transformer_depth=max(1, uniform), **common)
    deepest = shapes.depth_middle if shapes.depth_middle > 0 else max(shapes.depth_in + shapes.depth_out)
    return UNetConfig(transformer_depth=deepest, depth_in=shapes.depth_in, depth_out=shapes.depth_out,
                      depth_middle=shapes.depth_middle, **common)
