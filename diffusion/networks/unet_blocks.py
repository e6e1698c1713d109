"""The building blocks of the LDM UNet: residual blocks, resampling, and the spatial (cross-)attention transformer.

Layer and attribute names follow CompVis' latent-diffusion `openaimodel.py` / `attention.py` (Rombach et al. 2022,
"High-Resolution Image Synthesis with Latent Diffusion Models") exactly, so a checkpoint's
`model.diffusion_model.*` keys are these modules' parameter names and loading is a plain `load_state_dict`.

`transformer_options` is a dict passed down from `UNetModel.forward`; the blocks read:
- ``"attention_mode"``: "sdpa" (default) or "sliced", see `diffusion.networks.attention`;
- ``"patches"``: ``{"attn1_patch": [fn], "attn2_patch": [fn]}``, each ``fn(x, context, value, options) -> (x,
  context, value)`` applied to the normalised input before self- (attn1) or cross-attention (attn2), the hook
  point ComfyUI's attention patches use; ``"attn1_output_patch"``: ``[fn(out, options) -> out]`` on the
  self-attention's output before the residual add (HyperTile and ToMe undo their token regrouping there;
  ``options["original_shape"]`` is the latent's shape); ``"patches_replace"``: ``{"attn1": {(kind, index,
  block_index): fn(q, k, v, options) -> out}}`` replaces one self-attention's core (SAG records its
  attention map this way; Perturbed-Attention Guidance, `nodes/guidance_pag.py`, replaces attn1/attn2 so;
  the key may also be (kind, index) for every transformer of a block; ``"block_index"`` is the transformer's
  index within its block); ``"attn2_output_patch"``: ``[fn(out, options) -> out]`` on the cross-attention's
  output before its residual add; and ``"middle_patch"``: ``[fn(x, options) -> x]`` run on the residual
  stream between self- and cross-attention (GLIGEN's fusers, `diffusion.adapters.gligen`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.networks.attention import attention


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep features as in LDM / ADM: [cos(t·f), sin(t·f)] with f_i = max_period^(−i/half).

    This is diffusers' `get_timestep_embedding` with flip_sin_to_cos=True and downscale_freq_shift=0; computed in
    float32 whatever the network's dtype (the phases of t≈1000 need the mantissa).
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps.float()[:, None] * torch.exp(exponent)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    """The 32-group normalisation every LDM conv block uses."""
    return nn.GroupNorm(32, channels, eps=eps)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding (Ho et al. 2020; LDM `ResBlock`, no scale-shift norm)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            group_norm(out_channels), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    """Stride-2 3×3 convolution (`op`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 then a 3×3 convolution; `output_shape` matches odd skip sizes."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        size = (x.shape[2] * 2, x.shape[3] * 2) if output_shape is None else tuple(output_shape[2:4])
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class CrossAttention(nn.Module):
    """Multi-head attention with bias-free q/k/v projections (LDM `CrossAttention`)."""

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        mode: str = "sdpa",
        replace: Any = None,
        options: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Attention of `x` over `context`; `replace(q, k, v, options) -> out` (ComfyUI's patches_replace hook)
        takes the place of the attention itself between the projections."""
        context = x if context is None else context
        value = context if value is None else value
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(value)
        if replace is not None:
            out = replace(q, k, v, {**(options or {}), "n_heads": self.heads, "dim_head": q.shape[-1] // self.heads})
        else:
            out = attention(q, k, v, self.heads, mask=mask, mode=mode)
        return self.to_out(out)



class GEGLU(nn.Module):
    """Gated GELU projection (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4× inner width; `net.0.proj`, `net.2` as in the checkpoints."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _apply_patches(
    name: str, x: torch.Tensor, context: torch.Tensor | None, value: torch.Tensor | None, options: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    for patch in options.get("patches", {}).get(name, ()):
        x, context, value = patch(x, context, value, options)
    return x, context, value


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention over the text context, GEGLU feed-forward, each residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, options: dict[str, Any]) -> torch.Tensor:
        mode = options.get("attention_mode", "sdpa")
        n, ctx, val = _apply_patches("attn1_patch", self.norm1(x), None, None, options)
        replace = _replacement("attn1", options)
        attended = self.attn1(n, ctx, val, mode=mode, replace=replace, options=options)
        for patch in options.get("patches", {}).get("attn1_output_patch", ()):
            attended = patch(attended, options)
        x = x + attended
        for patch in options.get("patches", {}).get("middle_patch", ()):
            x = patch(x, options)
        n, ctx, val = _apply_patches("attn2_patch", self.norm2(x), context, context, options)
        attended = self.attn2(n, ctx, val, mode=mode, replace=_replacement("attn2", options), options=options)
        for patch in options.get("patches", {}).get("attn2_output_patch", ()):
            attended = patch(attended, options)
        x = x + attended
        return x + self.ff(self.norm3(x))


def _replacement(name: str, options: dict[str, Any]) -> Any:
    """The `patches_replace[name]` function for the running block: keyed (block kind, block index, transformer
    index) or, for every transformer of the block, (block kind, block index) — ComfyUI's lookup order."""
    table = options.get("patches_replace", {}).get(name)
    block = options.get("block")
    if not table or block is None:
        return None
    return table.get((block[0], block[1], options.get("block_index", 0)), table.get((block[0], block[1])))


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of a feature map (LDM `SpatialTransformer`).

    SD1 projects in and out with 1×1 convolutions; SD2 with linear layers (`use_linear`), applied after flattening.
    """

    def __init__(
        self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int | None, use_linear: bool
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in: nn.Module = nn.Linear(channels, inner) if use_linear else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)
        )
        self.proj_out: nn.Module = nn.Linear(inner, channels) if use_linear else nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, options: dict[str, Any]) -> torch.Tensor:
        b, _, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)
        if self.use_linear:
            x = self.proj_in(x)
        for index, block in enumerate(self.transformer_blocks):
            options["block_index"] = index
            x = block(x, context, options)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, -1, h, w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class TimestepEmbedSequential(nn.Sequential):
    """A sequence of blocks where each gets what it needs: ResBlocks the embedding, transformers the context."""

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor | None,
        options: dict[str, Any],
        output_shape: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, options)
            elif isinstance(layer, Upsample):
                x = layer(x, output_shape)
            else:
                x = layer(x)
        return x
