"""The MMDiT / MMDiT-X network of SD3, SD3.5 Large and SD3.5 Medium (Esser et al. 2024), keys as in the checkpoints
(`model.diffusion_model.*` without the prefix), and its config read off tensor shapes.

Owns `MMDiTConfig`, `mmdit_config_from_state_dict`, `sincos_pos_embed_2d` (the 2-D sin-cos table of MAE/DiT that
the checkpoints store as `pos_embed`), and `MMDiT`: 2×2 patchify (`x_embedder`), a centre crop of the positional
table, timestep (`t_embedder`) + pooled text (`y_embedder`) embedding as the adaLN vector, the text context through
`context_embedder`, `joint_blocks` (the last context block pre-only) and `final_layer`, then unpatchify. The blocks
live in `diffusion.networks.mmdit_blocks`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from diffusion.networks.mmdit_blocks import FinalLayer, JointBlock, Linear
from diffusion.networks.unet_blocks import timestep_embedding

PREFIX = "joint_blocks."


@dataclass(frozen=True)
class MMDiTConfig:
    """Widths and depths of an MMDiT. `hidden_size` = 64·`depth` in the released models; `heads` = `depth`."""

    in_channels: int = 16
    out_channels: int = 16
    patch_size: int = 2
    depth: int = 24
    hidden_size: int = 1536
    heads: int = 24
    mlp_ratio: float = 4.0
    pos_embed_max_size: int = 384
    adm_in_channels: int = 2048  # pooled text width (CLIP-L 768 ‖ CLIP-G 1280)
    context_dim: int = 4096
    qk_norm: bool = True
    dual_attention_layers: tuple[int, ...] = field(default_factory=tuple)


def mmdit_config_from_state_dict(sd: dict[str, torch.Tensor]) -> MMDiTConfig:
    """Read depth, width, patch, channels, positional-table size, pooled/context widths, QK norm and which x blocks
    carry `attn2` off the shapes (keys without `model.diffusion_model.`)."""
    patch_w = sd["x_embedder.proj.weight"]
    hidden, in_ch, patch = patch_w.shape[0], patch_w.shape[1], patch_w.shape[2]
    depth = 1 + max(int(k[len(PREFIX):].split(".")[0]) for k in sd if k.startswith(PREFIX))
    final = sd["final_layer.linear.weight"].shape[0]
    pos = sd.get("pos_embed")
    max_size = int(round(math.sqrt(pos.shape[1]))) if pos is not None else 192
    qk_norm = f"{PREFIX}0.x_block.attn.ln_q.weight" in sd
    head_dim = sd[f"{PREFIX}0.x_block.attn.ln_q.weight"].shape[0] if qk_norm else hidden // depth
    dual = tuple(i for i in range(depth) if f"{PREFIX}{i}.x_block.attn2.qkv.weight" in sd)
    mlp_hidden = sd[f"{PREFIX}0.x_block.mlp.fc1.weight"].shape[0]
    return MMDiTConfig(
        in_channels=in_ch, out_channels=final // (patch * patch), patch_size=patch, depth=depth, hidden_size=hidden,
        heads=hidden // head_dim, mlp_ratio=mlp_hidden / hidden, pos_embed_max_size=max_size,
        adm_in_channels=sd["y_embedder.mlp.0.weight"].shape[1], context_dim=sd["context_embedder.weight"].shape[1],
        qk_norm=qk_norm, dual_attention_layers=dual,
    )


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = positions.reshape(-1)[:, None].double() * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int, base_size: int) -> torch.Tensor:
    """(1, grid², dim) table: the first half encodes the column, the second the row, positions scaled by
    base_size/grid_size (so a base_size-patch image spans the table's units as in training)."""
    coords = torch.arange(grid_size, dtype=torch.float64) * (base_size / grid_size)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], dim=1)
    return emb.float().unsqueeze(0)


class PatchEmbed(nn.Module):
    """Non-overlapping patch×patch convolution: B×C×H×W → B×(H/p·W/p)×D."""

    def __init__(self, patch: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class EmbedMLP(nn.Module):
    """Linear → SiLU → Linear (`mlp.0`, `mlp.2`), the timestep and pooled-text embedders."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(Linear(in_dim, dim), nn.SiLU(), Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class MMDiT(nn.Module):
    """The network, called like the UNet: `net(x, timesteps, context=, y=, transformer_options=)` with timesteps
    σ·1000, context B×T×4096 and y the B×2048 pooled text; returns the velocity, shaped like x.

    `transformer_options["skip_layers"]` (joint-block indices) skips those blocks (SkipLayerGuidanceSD3);
    `transformer_options["attention_mode"]` chooses the attention kernel; `transformer_options["patches_replace"]
    ["dit"][("double_block", i)]` replaces joint block i as in ComfyUI: it is called with `{"img", "txt", "vec",
    "transformer_options"}` and `{"original_block": fn(args) -> {"img", "txt"}}` and returns `{"img", "txt"}`;
    "diffusion_model" wrappers (`diffusion/wrappers.py`) run around the whole call."""

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, d)
        self.t_embedder = EmbedMLP(256, d)
        self.y_embedder = EmbedMLP(config.adm_in_channels, d)
        self.context_embedder = Linear(config.context_dim, d)
        m = config.pos_embed_max_size
        self.register_buffer("pos_embed", sincos_pos_embed_2d(d, m, 64), persistent=True)
        mlp_hidden = int(d * config.mlp_ratio)
        self.joint_blocks = nn.ModuleList(
            JointBlock(d, config.heads, mlp_hidden, config.qk_norm, context_pre_only=i == config.depth - 1,
                       dual_attention=i in config.dual_attention_layers)
            for i in range(config.depth)
        )
        self.final_layer = FinalLayer(d, config.patch_size, config.out_channels)

    def cropped_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The centre h×w patches of the positional table, 1×(h·w)×D."""
        m = self.config.pos_embed_max_size
        if h > m or w > m:
            raise ValueError(f"the latent is {h}×{w} patches but this model's positional table is {m}×{m}: "
                             f"at most {m * self.config.patch_size * 8} pixels a side")
        top, left = (m - h) // 2, (m - w) // 2
        table = self.pos_embed.reshape(1, m, m, -1)[:, top:top + h, left:left + w]
        return table.reshape(1, h * w, -1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                y: torch.Tensor | None = None, control: dict | None = None,
                transformer_options: dict | None = None, **_: object) -> torch.Tensor:
        if transformer_options and transformer_options.get("wrappers"):
            from diffusion.wrappers import run_wrapped

            return run_wrapped("diffusion_model", self._forward, self, transformer_options, x, timesteps, context, y,
                               control, transformer_options)
        return self._forward(x, timesteps, context, y, control, transformer_options)

    def _forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None,
                 y: torch.Tensor | None, control: dict | None, transformer_options: dict | None) -> torch.Tensor:
        options = transformer_options or {}
        p = self.config.patch_size
        b, _, height, width = x.shape
        pad_h, pad_w = (-height) % p, (-width) % p
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        h, w = x.shape[2] // p, x.shape[3] // p
        # the compute dtype where weights are stored in another (diffusion/networks/weight_cast.py)
        dtype = getattr(self, "compute_dtype", None) or self.x_embedder.proj.weight.dtype
        tokens = self.x_embedder(x.to(dtype)) + self.cropped_pos_embed(h, w).to(dtype)
        c = self.t_embedder(timestep_embedding(timesteps.reshape(-1), 256).to(dtype))
        if y is not None:
            c = c + self.y_embedder(y.to(dtype))
        ctx = self.context_embedder(context.to(dtype)) if context is not None else tokens[:, :0]
        skip = set(options.get("skip_layers", ()))
        mode = options.get("attention_mode", "sdpa")
        replace = options.get("patches_replace", {}).get("dit", {})
        residuals = (control or {}).get("output") or []
        for i, block in enumerate(self.joint_blocks):
            if i not in skip:
                if ("double_block", i) in replace:
                    new_ctx, tokens = _replaced_block(replace[("double_block", i)], block, ctx, tokens, c, mode,
                                                      options)
                else:
                    new_ctx, tokens = block(ctx, tokens, c, mode)
                ctx = new_ctx if new_ctx is not None else ctx
            if i < len(residuals) and residuals[i] is not None:  # an SD3 ControlNet's residual for this block
                tokens = tokens + residuals[i].to(tokens.dtype)
        out = self.final_layer(tokens, c)
        return self._unpatchify(out, h, w)[:, :, :height, :width]

    def _unpatchify(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        p, ch = self.config.patch_size, self.config.out_channels
        x = x.reshape(x.shape[0], h, w, p, p, ch)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], ch, h * p, w * p)


def _replaced_block(patch: Any, block: nn.Module, ctx: torch.Tensor, tokens: torch.Tensor, c: torch.Tensor,
                    mode: str, options: dict) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Run a ComfyUI "dit" block replacement in place of a joint block (the replacement may call the original)."""
    def original(args: dict) -> dict:
        txt, img = block(args["txt"], args["img"], args["vec"], mode)
        return {"txt": txt, "img": img}

    out = patch({"img": tokens, "txt": ctx, "vec": c, "transformer_options": options}, {"original_block": original})
    return out.get("txt"), out["img"]
