"""ControlNet (Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion Models") for
SD1.x/SD2.x UNets, difference ControlNets, and the control objects that carry a hint image through sampling.

Owns:
- `ControlNetNet`: the trainable copy of the UNet encoder (`time_embed`, `input_blocks`, `middle_block`) plus the
  hint encoder `input_hint_block`, the 1×1 `zero_convs` and `middle_block_out`, with the attribute names of the
  original `control_model.*` files (lllyasviel/ControlNet `cldm.py`), so loading is `load_state_dict`.
- T2I-Adapters (Mou et al. 2023, "T2I-Adapter: Learning Adapters to Dig out More Controllable Ability for
  Text-to-Image Diffusion Models"; TencentARC/T2I-Adapter `ldm/modules/encoders/adapter.py`): the full `Adapter`
  (`conv_in`, `body.N.{in_conv,block1,block2,down_opt}`) and `Adapter_light` (`body.N.{in_conv,body,out_conv}`)
  networks (SD1/SD2, and SDXL's 16× unshuffle variant whose last feature goes to the middle block), whose features
  are added to the UNet's input blocks; computed once per hint, not per step. diffusers-layout files are renamed
  first (`diffusion/adapters/controlnet_diffusers.py`).
- `load_controlnet_state_dict`: detection of ControlNet vs T2I-Adapter files, difference ControlNets (the base
  model's weights are added), and the `ControlNet` / `T2IAdapter` control objects.
- The control protocol the sampler uses (`diffusion/sampling/conditioning.py` calls `get_control`, `diffusion/sampling/guidance.py`
  calls `pre_run`): residual lists "input"/"middle"/"output" as the UNet consumes them (see `UNetModel.forward`),
  scaled by `strength`, active between `start_percent` and `end_percent`, chained with the control applied before
  (`previous_controlnet`, summed), and the hint resized to the latent size ×8 with nearest-exact and a centre crop —
  ComfyUI's `comfy/controlnet.py` semantics, written from scratch.
"""
from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from diffusion.files.checkpoint import CheckpointError
from diffusion.adapters.controlnet_union import add_union_parts, union_config, union_hint
from diffusion.adapters.controlnet_diffusers import (diffusers_controlnet_to_ldm, diffusers_t2i_adapter_to_ldm,
                                            is_diffusers_controlnet, is_diffusers_t2i_adapter)
from diffusion.families import unet_config_from_state_dict
from diffusion.patcher import ModelHandle
from diffusion.networks.unet import UNetConfig, UNetModel, load_assigned
from diffusion.networks.unet_blocks import timestep_embedding

log = logging.getLogger(__name__)

# Channels of the convolutions of the hint encoder (cldm.py `input_hint_block`); strides 2 at 32, 96 and 256 bring
# the hint image down 8× to the latent size.
HINT_CONVS = ((16, 1), (16, 1), (32, 2), (32, 1), (96, 2), (96, 1), (256, 2))
ControlDict = dict[str, list[torch.Tensor | None]]


def input_block_channels(config: UNetConfig) -> list[int]:
    """Output channels of each UNet input block, in order (what the zero convs take)."""
    mc = config.model_channels
    out, ch = [mc], mc
    for level, mult in enumerate(config.channel_mult):
        for _ in range(config.num_res_blocks):
            ch = mult * mc
            out.append(ch)
        if level != len(config.channel_mult) - 1:
            out.append(ch)
    return out


def hint_block(hint_channels: int, model_channels: int) -> nn.Sequential:
    """The hint encoder: 3×3 convs with SiLU between them, the last one (zero-initialised in training) to the
    UNet width; indices 0, 2, ..., 14 hold the convs, as in the files."""
    layers: list[nn.Module] = []
    ch = hint_channels
    for out, stride in HINT_CONVS:
        layers += [nn.Conv2d(ch, out, 3, padding=1, stride=stride), nn.SiLU()]
        ch = out
    layers.append(nn.Conv2d(ch, model_channels, 3, padding=1))
    return nn.Sequential(*layers)


class ControlNetNet(nn.Module):
    """The ControlNet network of an SD1/SD2/SDXL UNet config: returns the residuals for the UNet's skips and middle."""

    def __init__(self, config: UNetConfig, hint_channels: int = 3, union: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.union = union  # (control types, width) of a union ControlNet (diffusion/adapters/controlnet_union.py)
        unet = UNetModel(config)  # the encoder half is an exact copy of the UNet's; the decoder is dropped
        self.time_embed = unet.time_embed
        if config.adm_in_channels is not None:
            self.label_emb = unet.label_emb
        self.input_blocks = unet.input_blocks
        self.middle_block = unet.middle_block
        self.input_hint_block = hint_block(hint_channels, config.model_channels)
        self.zero_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch, ch, 1)) for ch in input_block_channels(config))
        mid = config.model_channels * config.channel_mult[-1]
        self.middle_block_out = nn.Sequential(nn.Conv2d(mid, mid, 1))
        if union is not None:
            add_union_parts(self, union[0], union[1], config.model_channels * 4)

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                y: torch.Tensor | None = None, control_type: list[int] | None = None) -> ControlDict:
        """Residuals for UNet input `x` at `timesteps`: "output" (one per input block, for the skips the output
        blocks take) and "middle". The encoded hint is added after the first input block (cldm.py). A union
        ControlNet takes `control_type` (SetUnionControlNetType; none: "auto")."""
        dtype = self.dtype
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        guided: torch.Tensor | None = self.input_hint_block(hint.to(dtype))
        if self.union is not None:
            emb = emb + self.control_add_embedding(control_type or [], emb.dtype, emb.device)
            if control_type:
                guided = union_hint(self, guided, control_type)
        if self.config.adm_in_channels is not None and y is not None:
            emb = emb + self.label_emb(y.to(dtype))
        h, outs, options = x.to(dtype), [], {}
        context = context.to(dtype)
        for i, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            options["block"] = ("input", i)
            h = block(h, emb, context, options)
            if guided is not None:
                h, guided = h + guided, None
            outs.append(zero_conv(h))
        options["block"] = ("middle", 0)
        h = self.middle_block(h, emb, context, options)
        return {"middle": [self.middle_block_out(h)], "output": outs}


CONTROL_PREFIXES = ("control_model.", "controlnet.", "")


def controlnet_prefix(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The key prefix of an original-layout ControlNet file, None when it is not one."""
    for prefix in CONTROL_PREFIXES:
        if f"{prefix}zero_convs.0.0.weight" in state_dict:
            return prefix
    return None


def controlnet_config(sd: dict[str, torch.Tensor]) -> tuple[UNetConfig, int]:
    """(UNet config, hint channels) of ControlNet weights (keys without prefix), read off their shapes."""
    # The encoder's keys are the UNet's; the decoder's out conv only says the output width, which a ControlNet
    # does not have, so a stand-in of the input width lets the shared UNet detection run.
    probe = dict(sd)
    probe["out.2.weight"] = torch.empty((sd["input_blocks.0.0.weight"].shape[1], 1, 3, 3), device="meta")
    config = unet_config_from_state_dict(probe)
    if config.depth_in is not None and not config.depth_out:
        # Per-block depths (SDXL): there are no output blocks to read theirs from; the decoder is dropped anyway.
        config = replace(config, depth_out=(0,) * (len(config.channel_mult) * (config.num_res_blocks + 1)))
    return config, int(sd["input_hint_block.0.weight"].shape[1])


def build_controlnet(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> ControlNetNet:
    """A `ControlNetNet` holding `sd` (keys without prefix), made on meta and assigned."""
    config, hint_channels = controlnet_config(sd)
    with torch.device("meta"):
        net = ControlNetNet(config, hint_channels, union=union_config(sd))
    load_assigned(net, sd, dtype, "cpu", "ControlNet")
    return net.eval().requires_grad_(False)


def add_base_weights(sd: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A difference ControlNet's weights made whole: each tensor plus the base UNet's tensor of the same name
    (`diffusion_model.<key>` in `base`), where there is one."""
    out = {}
    for key, value in sd.items():
        base_value = base.get(f"diffusion_model.{key}")
        out[key] = value + base_value.to(value.dtype) if base_value is not None else value
    return out


# ---- the control objects --------------------------------------------------------------------------------------

def broadcast_to_batch(hint: torch.Tensor, batch: int, chunks: int) -> torch.Tensor:
    """The hint for a model call of `batch` rows made of `chunks` cond/uncond chunks (ComfyUI
    `broadcast_image_to`): a single image stays (broadcasts), else one chunk's worth is tiled per chunk."""
    if hint.shape[0] == 1:
        return hint
    per_chunk = batch // chunks
    hint = hint[:per_chunk]
    if per_chunk > hint.shape[0]:
        reps = per_chunk // hint.shape[0]
        hint = torch.cat([hint] * reps + [hint[:per_chunk % hint.shape[0]]], dim=0)
    return hint if hint.shape[0] == batch else torch.cat([hint] * chunks, dim=0)


def merge_controls(control: ControlDict, previous: ControlDict | None, strength: float,
                   dtype: torch.dtype) -> ControlDict:
    """Scale this control's residuals by `strength` and add the previous control's, position by position."""
    out: ControlDict = {"input": [], "middle": [], "output": []}
    for key, residuals in control.items():
        out[key] = [None if r is None else (r * strength).to(dtype) for r in residuals]
    for key, residuals in (previous or {}).items():
        mine = out.setdefault(key, [])
        for i, prev in enumerate(residuals):
            if i >= len(mine):
                mine.append(prev)
            elif prev is not None:
                mine[i] = prev if mine[i] is None else prev + mine[i]
    return out


def resize_hint(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """B×C×H×W hint resized with nearest-exact after a centre crop to the target aspect (ComfyUI common_upscale)."""
    _, _, h, w = image.shape
    old_aspect, new_aspect = w / h, width / height
    if old_aspect > new_aspect:
        x = round((w - w * (new_aspect / old_aspect)) / 2)
        image = image[:, :, :, x:w - x]
    elif old_aspect < new_aspect:
        y = round((h - h * (old_aspect / new_aspect)) / 2)
        image = image[:, :, y:h - y]
    return torch.nn.functional.interpolate(image, size=(height, width), mode="nearest-exact")


class ControlBase:
    """A hint image applied through a control network: strength, timestep range and the chain to the control
    applied before it. `handle` is the network the memory manager places for sampling."""

    def __init__(self, handle: ModelHandle) -> None:
        self.handle = handle
        self.hint_original: torch.Tensor | None = None
        self.strength = 1.0
        self.percent_range = (0.0, 1.0)
        self.sigma_range: tuple[float, float] | None = None
        self.previous_controlnet: ControlBase | None = None
        self.vae: Any = None
        self.model_sampling: Any = None
        self.extra_args: dict[str, Any] = {}  # network inputs set by nodes (SetUnionControlNetType: control_type)
        self._hint: torch.Tensor | None = None

    def copy(self) -> "ControlBase":
        """A new control on the same network with no hint (what the apply nodes configure), keeping the extra
        network inputs."""
        other = type(self)(self.handle)
        other.extra_args = dict(self.extra_args)
        return other

    def set_extra_arg(self, name: str, value: Any) -> None:
        """An extra input of the network, e.g. a union ControlNet's `control_type` (ComfyUI's set_extra_arg)."""
        self.extra_args[name] = value

    def set_cond_hint(self, hint: torch.Tensor, strength: float = 1.0,
                      timestep_percent_range: tuple[float, float] = (0.0, 1.0), vae: Any = None,
                      extra_concat: list | None = None) -> "ControlBase":
        """Set the hint (B×C×H×W, 0..1), strength and start/end percent (ComfyUI's signature). SD1/SD2 ControlNets
        take the hint in pixels, so `vae` is kept only for reference (ComfyUI ignores it for models without a
        latent format); `extra_concat` (inputs of ControlNet kinds Loom does not have) must be empty."""
        if extra_concat:
            raise ValueError("set_cond_hint: extra_concat is for ControlNet kinds Loom does not have (union/inpaint "
                             "ControlNets of other families)")
        self.hint_original, self.strength, self.vae = hint, strength, vae
        self.percent_range = tuple(timestep_percent_range)
        self._hint = None
        return self

    def set_previous_controlnet(self, previous: "ControlBase | None") -> "ControlBase":
        self.previous_controlnet = previous
        return self

    def pre_run(self, model: Any, percent_to_sigma: Callable[[float], float]) -> None:
        """Before a sampling run: resolve the percent range to sigmas with the model's schedule."""
        self.model_sampling = model.model_sampling
        self.sigma_range = (percent_to_sigma(self.percent_range[0]), percent_to_sigma(self.percent_range[1]))
        self._hint = None
        if self.previous_controlnet is not None:
            self.previous_controlnet.pre_run(model, percent_to_sigma)

    def controls(self) -> list["ControlBase"]:
        """This control and the ones chained before it."""
        out: list[ControlBase] = []
        node: ControlBase | None = self
        while node is not None:
            out.append(node)
            node = node.previous_controlnet
        return out

    def get_control(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], batch_chunks: int,
                    transformer_options: dict | None = None) -> ControlDict | None:
        """The summed residuals of this control and those before it for one model call."""
        previous = None
        if self.previous_controlnet is not None:
            previous = self.previous_controlnet.get_control(x, sigma, cond, batch_chunks, transformer_options)
        if self.sigma_range is not None:
            s = float(sigma[0])
            if s > self.sigma_range[0] or s < self.sigma_range[1]:
                return previous
        own = self.residuals(x, sigma, cond, batch_chunks)
        return merge_controls(own, previous, self.strength, x.dtype)

    def residuals(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], batch_chunks: int) -> ControlDict:
        raise NotImplementedError


class ControlNet(ControlBase):
    """A ControlNet control: runs the network on the noisy input (scaled as the UNet sees it) every step."""

    def network(self) -> ControlNetNet:
        """The network this control runs (the handle's; Control-LoRA builds its own in `pre_run`)."""
        return self.handle.model

    def residuals(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], batch_chunks: int) -> ControlDict:
        net = self.network()
        if self.hint_original is None:
            raise ValueError("ControlNet has no hint image: apply it with ControlNetApply(Advanced)")
        size = (x.shape[2] * 8, x.shape[3] * 8)
        if self._hint is None or tuple(self._hint.shape[2:]) != size:
            self._hint = resize_hint(self.hint_original.float(), size[1], size[0]).to(x.device, net.dtype)
        hint = broadcast_to_batch(self._hint, x.shape[0], batch_chunks)
        ms = self.model_sampling
        timesteps = ms.timestep(sigma).float()
        x_in = ms.calculate_input(sigma, x)
        return net(x_in, hint, timesteps, cond["c_crossattn"], y=cond.get("y"), **self.extra_args)


def load_controlnet_state_dict(sd: dict[str, torch.Tensor], dtype: torch.dtype, name: str = "",
                               base_model: ModelHandle | None = None) -> ControlBase:
    """A control object for the weights of a ControlNet or T2I-Adapter file.

    With `base_model` (DiffControlNetLoader), a file marked as a difference ControlNet (a `difference` key) gets
    the model's UNet weights added. Raises `CheckpointError` for files that are neither.
    """
    if is_diffusers_controlnet(sd):
        sd = diffusers_controlnet_to_ldm(sd, name)
    prefix = controlnet_prefix(sd)
    if prefix is None:
        adapter = load_t2i_adapter(sd, dtype, name)
        if adapter is None:
            raise CheckpointError(f"{name or 'this file'} does not look like a ControlNet or T2I-Adapter "
                                  f"(no zero_convs, conv_in or body.0.in_conv keys)")
        return adapter
    inner = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and k != "difference"}
    if "difference" in sd:
        if base_model is None:
            log.warning("%s is a difference ControlNet loaded without a model (use DiffControlNetLoader); it will "
                        "very likely not work", name)
        else:
            inner = add_base_weights(inner, base_model.model.state_dict())
    net = build_controlnet(inner, dtype)
    return ControlNet(ModelHandle(net, name=name or "controlnet", kind="other"))


# ---- T2I-Adapters ---------------------------------------------------------------------------------------------

class AdapterDownsample(nn.Module):
    """Halve the resolution: a stride-2 3×3 conv (`op`) or, without weights, 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_conv:
            return self.op(x)
        # Odd sizes are padded so the pooled size rounds up, as the adapter reference does.
        return nn.functional.avg_pool2d(x, 2, stride=2, padding=(x.shape[2] % 2, x.shape[3] % 2))


class AdapterResBlock(nn.Module):
    """The full adapter's residual block (skip connections "sk": identity skip, `in_conv` only when the width
    changes); `down` halves the resolution first."""

    def __init__(self, in_c: int, out_c: int, down: bool, ksize: int, use_conv: bool) -> None:
        super().__init__()
        pad = ksize // 2
        self.in_conv = nn.Conv2d(in_c, out_c, ksize, padding=pad) if in_c != out_c else None
        self.block1 = nn.Conv2d(out_c, out_c, 3, padding=1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(out_c, out_c, ksize, padding=pad)
        self.down_opt = AdapterDownsample(in_c, use_conv) if down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down_opt is not None:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return x + self.block2(self.act(self.block1(x)))


class Adapter(nn.Module):
    """The full T2I-Adapter: pixel-unshuffle, `conv_in`, then `nums_rb` blocks per level; one feature per level,
    added to the last input block of the UNet level of the same width.

    SD1/SD2 adapters unshuffle by 8 and halve the size at each level after the first. SDXL adapters (`xl`: 16×16
    unshuffle, so `conv_in` takes 256 or 768 channels) start at the UNet's second resolution, widen without
    downsampling at level 1, downsample only at level 2, and hand their last feature to the middle block
    (TencentARC's SDXL adapter as ComfyUI's `Adapter(xl=True)` runs it)."""

    def __init__(self, cin: int, channels: list[int], nums_rb: int, ksize: int, use_conv: bool,
                 xl: bool = False) -> None:
        super().__init__()
        self.channels, self.nums_rb, self.xl = channels, nums_rb, xl
        self.unshuffle_amount = 16 if xl else 8
        downsampling = (2,) if xl else tuple(range(1, len(channels)))
        self.input_channels = cin // self.unshuffle_amount ** 2
        self.unshuffle = nn.PixelUnshuffle(self.unshuffle_amount)
        self.conv_in = nn.Conv2d(cin, channels[0], 3, padding=1)
        self.body = nn.ModuleList(
            AdapterResBlock(channels[max(0, i - 1)] if j == 0 else channels[i], channels[i],
                            i in downsampling and j == 0, ksize, use_conv)
            for i in range(len(channels)) for j in range(nums_rb))

    def _gaps(self, level: int) -> int:
        """How many UNet input blocks before this level's feature take none."""
        if not self.xl:
            return 2
        return {0: 3, 2: 2}.get(level, 1)

    def forward(self, x: torch.Tensor) -> ControlDict:
        x = self.conv_in(self.unshuffle(x))
        features: list[torch.Tensor | None] = []
        for i in range(len(self.channels)):
            for j in range(self.nums_rb):
                x = self.body[i * self.nums_rb + j](x)
            features += [None] * self._gaps(i) + [x]
        features = features[::-1]
        if self.xl:
            return {"input": features[1:], "middle": features[:1]}
        return {"input": features}


class LightResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block2(self.act(self.block1(x)))


class LightExtractor(nn.Module):
    """One level of the light adapter: (pool), 1×1 in, residual blocks at a quarter width, 1×1 out."""

    def __init__(self, in_c: int, inter_c: int, out_c: int, nums_rb: int, down: bool) -> None:
        super().__init__()
        self.down_opt = AdapterDownsample(in_c, use_conv=False) if down else None
        self.in_conv = nn.Conv2d(in_c, inter_c, 1)
        self.body = nn.Sequential(*(LightResBlock(inter_c) for _ in range(nums_rb)))
        self.out_conv = nn.Conv2d(inter_c, out_c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down_opt is not None:
            x = self.down_opt(x)
        return self.out_conv(self.body(self.in_conv(x)))


class AdapterLight(nn.Module):
    """The light T2I-Adapter (`Adapter_light`): one extractor per UNet level."""

    unshuffle_amount = 8

    def __init__(self, cin: int, channels: list[int], nums_rb: int) -> None:
        super().__init__()
        self.channels = channels
        self.input_channels = cin // self.unshuffle_amount ** 2
        self.unshuffle = nn.PixelUnshuffle(self.unshuffle_amount)
        self.body = nn.ModuleList(
            LightExtractor(cin if i == 0 else channels[i - 1], channels[i] // 4, channels[i], nums_rb, i > 0)
            for i in range(len(channels)))

    def forward(self, x: torch.Tensor) -> ControlDict:
        x = self.unshuffle(x)
        features: list[torch.Tensor | None] = []
        for extractor in self.body:
            x = extractor(x)
            features += [None, None, x]
        return {"input": features[::-1]}


def _count(sd: dict[str, torch.Tensor], fmt: str) -> int:
    n = 0
    while fmt.format(n) in sd:
        n += 1
    return n


def build_t2i_adapter(sd: dict[str, torch.Tensor]) -> nn.Module | None:
    """The adapter network of `sd`'s layout (on meta), None when `sd` is not a T2I-Adapter Loom knows."""
    if "body.0.in_conv.weight" in sd and "body.0.out_conv.weight" in sd:
        levels = _count(sd, "body.{}.out_conv.weight")
        channels = [int(sd[f"body.{i}.out_conv.weight"].shape[0]) for i in range(levels)]
        nums_rb = _count(sd, "body.0.body.{}.block1.weight")
        return AdapterLight(int(sd["body.0.in_conv.weight"].shape[1]), channels, nums_rb)
    if "conv_in.weight" in sd:
        cin, width = int(sd["conv_in.weight"].shape[1]), int(sd["conv_in.weight"].shape[0])
        xl = cin in (256, 768)  # 16×16 unshuffle of a 1- or 3-channel hint: an SDXL adapter
        blocks = _count(sd, "body.{}.block1.weight")
        downs = [i for i in range(1, blocks) if f"body.{i}.in_conv.weight" in sd or f"body.{i}.down_opt.op.weight" in sd]
        nums_rb = downs[0] if downs else blocks
        channels = [int(sd[f"body.{i * nums_rb}.block1.weight"].shape[0]) for i in range(blocks // nums_rb)]
        use_conv = any(k.endswith("down_opt.op.weight") for k in sd)
        ksize = int(sd["body.0.block2.weight"].shape[-1])
        if channels[0] != width:
            return None
        return Adapter(cin, channels, nums_rb, ksize, use_conv, xl=xl)
    return None


class T2IAdapter(ControlBase):
    """A T2I-Adapter control: the adapter runs once per hint size; its features are the "input" residuals."""

    def __init__(self, handle: ModelHandle) -> None:
        super().__init__(handle)
        self._features: ControlDict | None = None
        self._features_batch = 0

    def set_cond_hint(self, hint: torch.Tensor, strength: float = 1.0,
                      timestep_percent_range: tuple[float, float] = (0.0, 1.0), vae: Any = None,
                      extra_concat: list | None = None) -> "ControlBase":
        self._features = None
        return super().set_cond_hint(hint, strength, timestep_percent_range, vae, extra_concat)

    def pre_run(self, model: Any, percent_to_sigma: Callable[[float], float]) -> None:
        self._features = None
        super().pre_run(model, percent_to_sigma)

    def residuals(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], batch_chunks: int) -> ControlDict:
        net = self.handle.model
        if self.hint_original is None:
            raise ValueError("T2I-Adapter has no hint image: apply it with ControlNetApply(Advanced)")
        step = net.unshuffle_amount
        # The hint is sized to the latent ×8, rounded up to whole unshuffle cells.
        height = math.ceil(x.shape[2] * 8 / step) * step
        width = math.ceil(x.shape[3] * 8 / step) * step
        if self._hint is None or tuple(self._hint.shape[2:]) != (height, width):
            hint = resize_hint(self.hint_original.float(), width, height)
            if net.input_channels == 1 and hint.shape[1] > 1:
                hint = hint.mean(1, keepdim=True)
            self._hint, self._features = hint, None
        hint = broadcast_to_batch(self._hint, x.shape[0], batch_chunks)
        if self._features is None or self._features_batch != hint.shape[0]:
            dtype = next(net.parameters()).dtype
            self._features = net(hint.to(x.device, dtype))
            self._features_batch = hint.shape[0]
        return {k: [None if f is None else f.clone() for f in v] for k, v in self._features.items()}


def load_t2i_adapter(sd: dict[str, torch.Tensor], dtype: torch.dtype, name: str = "") -> T2IAdapter | None:
    """A T2I-Adapter control for adapter weights (optionally under `adapter`), None when `sd` is not one."""
    if is_diffusers_t2i_adapter(sd):
        sd = diffusers_t2i_adapter_to_ldm(sd)
    sd = {k[len("adapter."):] if k.startswith("adapter.") else k: v for k, v in sd.items()}
    with torch.device("meta"):
        net = build_t2i_adapter(sd)
    if net is None:
        return None
    load_assigned(net, sd, dtype, "cpu", "T2I-Adapter")
    return T2IAdapter(ModelHandle(net.eval().requires_grad_(False), name=name or "t2i_adapter", kind="other"))
