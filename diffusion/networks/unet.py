"""The Stable Diffusion 1.x/2.x UNet (LDM `openaimodel.UNetModel`), built from a `UNetConfig`.

Owns the config dataclass (full SD1, SD2 and tiny test configs), the network, and `build_unet`, which creates the
modules on the `meta` device and assigns the checkpoint's tensors to them, so weights are never allocated twice.
Attribute names equal the checkpoint keys under `model.diffusion_model.` (Rombach et al. 2022, CompVis
latent-diffusion), so loading is `load_state_dict(strict=True)`.

`UNetModel.forward` returns the raw network output (ε or v, depending on the checkpoint); the parameterisation
lives in the sampling wrappers. ControlNet residuals and patches enter through `control` and `transformer_options`
at the same points as in ComfyUI (see `forward`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from diffusion.files.checkpoint import CheckpointError
from diffusion.networks.conv3x3 import use_fast_convs
from diffusion.networks.unet_blocks import (
    Downsample,
    ResBlock,
    SpatialTransformer,
    TimestepEmbedSequential,
    Upsample,
    group_norm,
    timestep_embedding,
)


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of an LDM UNet; the field names are those of the LDM yaml configs.

    Heads: SD1 fixes the number of heads (`num_heads=8`), SD2 the width of a head (`num_head_channels=64`);
    the other one is −1. `attention_resolutions` lists the downsampling factors (1, 2, 4, ...) that get a
    SpatialTransformer. `adm_in_channels` adds the "sequential" class embedding (`label_emb`: SD2 unCLIP, SDXL).

    Per-block depths (SDXL and its distillations): `depth_in` gives the transformer depth of every input res block
    (levels × num_res_blocks, 0 = no transformer), `depth_out` that of every output block in `output_blocks` order (levels ×
    (num_res_blocks + 1)), `depth_middle` the middle block's (-1: the middle block is one ResBlock, as in SSD-1B).
    When they are None, `transformer_depth` applies wherever `attention_resolutions` puts a transformer.
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    transformer_depth: int = 1
    context_dim: int = 768
    num_heads: int = 8
    num_head_channels: int = -1
    use_linear_in_transformer: bool = False
    adm_in_channels: int | None = None
    depth_in: tuple[int, ...] | None = None
    depth_out: tuple[int, ...] | None = None
    depth_middle: int | None = None

    def __post_init__(self) -> None:
        # One canonical order (the LDM yamls list them large to small) so configs compare equal however built.
        object.__setattr__(self, "attention_resolutions", tuple(sorted(set(self.attention_resolutions), reverse=True)))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        for name in ("depth_in", "depth_out"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))

    def input_depth(self, level: int, index: int) -> int:
        """Transformer depth of the `index`-th res block of resolution `level` on the way down (0: none)."""
        if self.depth_in is not None:
            return self.depth_in[level * self.num_res_blocks + index]
        return self.transformer_depth if 2 ** level in self.attention_resolutions else 0

    def output_depth(self, level: int, index: int) -> int:
        """Transformer depth of the `index`-th block of `level` on the way up (0: none)."""
        if self.depth_out is not None:
            return self.depth_out[(len(self.channel_mult) - 1 - level) * (self.num_res_blocks + 1) + index]
        return self.transformer_depth if 2 ** level in self.attention_resolutions else 0

    def middle_depth(self) -> int:
        """Transformer depth of the middle block; -1 when it has none (a single ResBlock)."""
        return self.transformer_depth if self.depth_middle is None else self.depth_middle

    @classmethod
    def sd1(cls, in_channels: int = 4) -> UNetConfig:
        """SD1.x (v1-inference.yaml); `in_channels=9` for the inpainting model."""
        return cls(in_channels=in_channels)

    @classmethod
    def sd2(cls, in_channels: int = 4) -> UNetConfig:
        """SD2.x (v2-inference(-v).yaml): 1024-dim OpenCLIP context, 64-channel heads, linear projections."""
        return cls(
            in_channels=in_channels, context_dim=1024, num_heads=-1, num_head_channels=64,
            use_linear_in_transformer=True,
        )

    @classmethod
    def sdxl(cls, in_channels: int = 4) -> UNetConfig:
        """SDXL base (sd_xl_base.yaml): three levels, transformers of depth 2 and 10 on the lower two, 2048-dim
        context (CLIP-L ‖ bigG), the 2816-wide ADM vector."""
        return cls(
            in_channels=in_channels, channel_mult=(1, 2, 4), attention_resolutions=(2, 4), transformer_depth=10,
            context_dim=2048, num_heads=-1, num_head_channels=64, use_linear_in_transformer=True,
            adm_in_channels=2816, depth_in=(0, 0, 2, 2, 10, 10), depth_out=(10, 10, 10, 2, 2, 2, 0, 0, 0),
            depth_middle=10,
        )

    @classmethod
    def sdxl_refiner(cls, in_channels: int = 4) -> UNetConfig:
        """SDXL refiner (sd_xl_refiner.yaml): 384 channels, four levels, depth-4 transformers on the middle two,
        1280-dim bigG context, the 2560-wide ADM vector."""
        return cls(
            in_channels=in_channels, model_channels=384, channel_mult=(1, 2, 4, 4), attention_resolutions=(2, 4),
            transformer_depth=4, context_dim=1280, num_heads=-1, num_head_channels=64,
            use_linear_in_transformer=True, adm_in_channels=2560,
        )

    @classmethod
    def tiny(cls, family: str = "sd1", in_channels: int = 4, context_dim: int = 128) -> UNetConfig:
        """A small UNet of `family`'s layout for tests: three levels, attention on the first two."""
        base = cls.sd2(in_channels) if family == "sd2" else cls.sd1(in_channels)
        # SD2's 64-channel heads need at least 64 channels to have one head.
        channels = 64 if family == "sd2" else 32
        return replace(
            base, model_channels=channels, channel_mult=(1, 2, 2), num_res_blocks=2,
            attention_resolutions=(1, 2), context_dim=context_dim,
        )

    def heads(self, channels: int) -> tuple[int, int]:
        """(number of heads, channels per head) of a transformer over `channels` features."""
        if self.num_head_channels > 0:
            return max(1, channels // self.num_head_channels), self.num_head_channels
        if self.num_heads <= 0:
            raise ValueError("UNetConfig needs num_heads or num_head_channels")
        return self.num_heads, channels // self.num_heads


class UNetModel(nn.Module):
    """The LDM UNet: `time_embed`, `input_blocks`, `middle_block`, `output_blocks`, `out`."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        mc = config.model_channels
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if config.adm_in_channels is not None:
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(config.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            )
        skip_channels = self._build_input_blocks(config, emb_dim)
        ch = mc * config.channel_mult[-1]
        middle: list[nn.Module] = [ResBlock(ch, emb_dim)]
        if config.middle_depth() >= 0:
            middle += [self._transformer(ch, config.middle_depth()), ResBlock(ch, emb_dim)]
        self.middle_block = TimestepEmbedSequential(*middle)
        self._build_output_blocks(config, emb_dim, skip_channels)
        last = mc * config.channel_mult[0]  # the output blocks end at the first level's width
        self.out = nn.Sequential(group_norm(last), nn.SiLU(), nn.Conv2d(last, config.out_channels, 3, padding=1))
        use_fast_convs(self)  # CPU 3×3 convolutions by Winograd or one GEMM where it pays (networks/conv3x3.py)

    def _transformer(self, channels: int, depth: int) -> SpatialTransformer:
        heads, dim_head = self.config.heads(channels)
        return SpatialTransformer(
            channels, heads, dim_head, depth, self.config.context_dim,
            self.config.use_linear_in_transformer,
        )

    def _build_input_blocks(self, config: UNetConfig, emb_dim: int) -> list[int]:
        mc = config.model_channels
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(config.in_channels, mc, 3, padding=1))])
        skip_channels, ch = [mc], mc
        for level, mult in enumerate(config.channel_mult):
            for i in range(config.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc)]
                ch = mult * mc
                if config.input_depth(level, i) > 0:
                    layers.append(self._transformer(ch, config.input_depth(level, i)))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_channels.append(ch)
        return skip_channels

    def _build_output_blocks(self, config: UNetConfig, emb_dim: int, skip_channels: list[int]) -> None:
        mc = config.model_channels
        ch = mc * config.channel_mult[-1]
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(config.channel_mult))):
            mult = config.channel_mult[level]
            for i in range(config.num_res_blocks + 1):
                layers: list[nn.Module] = [ResBlock(ch + skip_channels.pop(), emb_dim, mc * mult)]
                ch = mc * mult
                if config.output_depth(level, i) > 0:
                    layers.append(self._transformer(ch, config.output_depth(level, i)))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: `compute_dtype` where the weights are stored in another (diffusion/networks/weight_cast.py),
        else the weights' own."""
        return getattr(self, "compute_dtype", None) or self.time_embed[0].weight.dtype

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
        control: dict[str, list[torch.Tensor | None]] | None = None,
        transformer_options: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """The raw model output for latents `x` (B×C×H×W) at `timesteps` (B, or one) given `context` (B×T×D).

        Computes in the weights' dtype and returns `x`'s dtype. `control` holds ControlNet residuals as ComfyUI
        passes them: lists "input", "middle", "output" consumed from their ends; an input residual is added to an
        input block's output, the middle one to the middle block's output, an output one to the skip tensor an
        output block takes. `transformer_options` is copied and passed to every transformer (see `unet_blocks`);
        its "block" entry says ("input"|"middle"|"output", index) while a block runs, and its "patches" may hold
        "emb_patch" ``fn(emb, model_channels, options) -> emb`` (on the timestep embedding, before the class
        embedding is added), "input_block_patch" ``fn(h, options) -> h`` (before the skip is kept),
        "input_block_patch_after_skip" (after it: Kohya deep shrink's default), "middle_block_patch"
        ``fn(h, options) -> h`` (after the middle block and its control residual: the form ComfyUI packs such as
        FreeU-extreme and Bleh set) and
        "output_block_patch" ``fn(h, skip, options) -> (h, skip)`` (the FreeU hook). A pack's "diffusion_model"
        wrappers (`diffusion/wrappers.py`) run around the whole call.
        """
        if transformer_options and transformer_options.get("wrappers"):
            from diffusion.wrappers import run_wrapped

            return run_wrapped("diffusion_model", self._forward, self, transformer_options, x, timesteps, context, y,
                               control, transformer_options)
        return self._forward(x, timesteps, context, y, control, transformer_options)

    def _forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None,
                 control: dict[str, list[torch.Tensor | None]] | None,
                 transformer_options: dict[str, Any] | None) -> torch.Tensor:
        options = dict(transformer_options or {})
        options["original_shape"] = list(x.shape)  # the latent's shape, for patches that tile the tokens
        patches = options.get("patches", {})
        out_dtype, dtype = x.dtype, self.dtype
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        for patch in patches.get("emb_patch", ()):
            emb = patch(emb, self.config.model_channels, options)
        if self.config.adm_in_channels is not None:
            if y is None:
                raise ValueError("this UNet is class-conditional (adm_in_channels) and needs y")
            emb = emb + self.label_emb(y.to(dtype))
        context = context.to(dtype) if context is not None else None
        h, skips = x.to(dtype), []
        for i, block in enumerate(self.input_blocks):
            options["block"] = ("input", i)
            h = _add_control(block(h, emb, context, options), control, "input", i)
            for patch in patches.get("input_block_patch", ()):
                h = patch(h, options)
            skips.append(h)
            for patch in patches.get("input_block_patch_after_skip", ()):
                h = patch(h, options)
        options["block"] = ("middle", 0)
        h = _add_control(self.middle_block(h, emb, context, options), control, "middle", 0)
        for patch in patches.get("middle_block_patch", ()):
            h = patch(h, options)
        for i, block in enumerate(self.output_blocks):
            options["block"] = ("output", i)
            skip = _add_control(skips.pop(), control, "output", i)
            for patch in patches.get("output_block_patch", ()):
                h, skip = patch(h, skip, options)
            h = torch.cat([h, skip], dim=1)
            h = block(h, emb, context, options, output_shape=skips[-1].shape if skips else None)
        return self.out(h).to(out_dtype)


def _add_control(
    h: torch.Tensor, control: dict[str, list[torch.Tensor | None]] | None, name: str, index: int
) -> torch.Tensor:
    """Add the `index`-th residual of `control[name]`, counted from the list's end (ComfyUI pops them)."""
    if not control or not control.get(name):
        return h
    residuals = control[name]
    position = len(residuals) - 1 - index
    if position < 0 or residuals[position] is None:
        return h
    return h + residuals[position].to(h.dtype)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on `meta` modules)."""
    return sum(p.numel() for p in module.parameters())


def build_unet(
    config: UNetConfig,
    state_dict: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> UNetModel:
    """A `UNetModel` whose parameters are `state_dict`'s tensors (UNet keys, no prefix), cast to `dtype`.

    The modules are created on `meta` and the tensors assigned, so no second copy of the weights is made; tensors
    already of `dtype` on `device` are used as they are. Without a state dict the weights are left uninitialised
    (`torch.empty`), for callers that fill them. Missing or unexpected keys raise `CheckpointError`.
    """
    with torch.device("meta"):
        model = UNetModel(config)
    if state_dict is None:
        return model.to_empty(device=device).to(dtype).eval().requires_grad_(False)
    load_assigned(model, state_dict, dtype, device, "UNet", keep_fp8=True)
    return model.eval().requires_grad_(False)


def load_assigned(
    model: nn.Module, state_dict: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device | str, what: str,
    keep_fp8: bool = False,
) -> None:
    """Assign `state_dict` to `model` (built on meta) with strict key checking, casting where needed; with
    `keep_fp8`, float8 tensors (matrices read for fp8 storage) stay float8 for `finish_network` to keep."""
    expected = model.state_dict(keep_vars=True)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{what} weights do not match its config: {len(missing)} missing (e.g. {missing[:5]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})"
        )
    wrong = [k for k, v in expected.items() if tuple(v.shape) != tuple(state_dict[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{what} weights have {len(wrong)} tensors of the wrong shape, e.g. {k}: file "
            f"{tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)}"
        )
    fp8 = (torch.float8_e4m3fn, torch.float8_e5m2) if keep_fp8 else ()
    cast = {k: v.to(device=device, dtype=v.dtype if v.dtype in fp8 else dtype) for k, v in state_dict.items()}
    model.load_state_dict(cast, strict=True, assign=True)
