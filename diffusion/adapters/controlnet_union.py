"""ControlNet "union" (xinsir's ControlNet++ / controlnet-union-sdxl): one SDXL ControlNet for several kinds of
hint, told which kind through a control type.

Owns the union parts a union file adds to an SDXL ControlNet, under the file's names (after ComfyUI's rename of
`attn.in_proj_*` to `attn.in_proj.*`): `task_embedding` (one vector per control type), `transformer_layes` (sic:
one pre-norm transformer block, 8 heads, quick-GELU MLP), `spatial_ch_projs` and `control_add_embedding` (the
control types' sinusoidal one-hot embedding → the time embedding). `UNION_CONTROLNET_TYPES` are ComfyUI's names.

Semantics, ComfyUI's `cldm.ControlNet` union path (written from its description): the time embedding gets
`control_add_embedding(control type one-hot)` added — also for "auto" (no type: all zeros); with a type, the
encoded hint's spatial mean plus the type's `task_embedding` goes through the transformer block as one token,
`spatial_ch_projs` of the result is added to the encoded hint at every position, and that replaces the plain
encoded hint. Only the first type given is used, as in ComfyUI.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.networks.unet_blocks import timestep_embedding

UNION_CONTROLNET_TYPES = {"openpose": 0, "depth": 1, "hed/pidi/scribble/ted": 2,
                          "canny/lineart/anime_lineart/mlsd": 3, "normal": 4, "segment": 5, "tile": 6, "repaint": 7}
UNION_HEADS = 8
TYPE_EMBED_DIM = 256  # the sinusoidal width of each control type's one-hot entry


def is_union_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    return "control_add_embedding.linear_1.bias" in sd and "task_embedding" in sd


def rename_union_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The union parts of a file under Loom's module names (nn.MultiheadAttention's `in_proj_weight` → a Linear)."""
    return {k.replace(".attn.in_proj_", ".attn.in_proj."): v for k, v in sd.items()}


class UnionAttention(nn.Module):
    """Self-attention with one packed q/k/v projection (`in_proj`) and `out_proj`."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(width, width * 3)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
                   for t in self.in_proj(x).split(c, dim=2))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.out_proj(out)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class UnionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1 x), then x + mlp(ln_2 x)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = UnionAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ControlAddEmbedding(nn.Module):
    """The control types' one-hot vector, each entry embedded sinusoidally, through two linears (SiLU between)."""

    def __init__(self, num_types: int, out_dim: int) -> None:
        super().__init__()
        self.num_types = num_types
        self.linear_1 = nn.Linear(TYPE_EMBED_DIM * num_types, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, control_type: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        one_hot = torch.zeros((self.num_types,), device=device)
        one_hot[control_type] = 1.0
        emb = timestep_embedding(one_hot, TYPE_EMBED_DIM).to(dtype).reshape(1, -1)
        return self.linear_2(F.silu(self.linear_1(emb)))


def add_union_parts(net: nn.Module, num_types: int, width: int, time_embed_dim: int) -> None:
    """Give a ControlNet network the union modules, as attributes named like the file's keys."""
    net.task_embedding = nn.Parameter(torch.empty(num_types, width))
    net.transformer_layes = nn.Sequential(UnionBlock(width, UNION_HEADS))
    net.spatial_ch_projs = nn.Linear(width, width)
    net.control_add_embedding = ControlAddEmbedding(num_types, time_embed_dim)


def union_hint(net: nn.Module, encoded: torch.Tensor, control_type: list[int]) -> torch.Tensor:
    """The encoded hint fused with the first control type's task embedding (see the module docstring)."""
    tokens = (encoded.mean(dim=(2, 3)) + net.task_embedding[control_type[0]]).unsqueeze(1)
    fused = net.transformer_layes(tokens)
    return encoded + net.spatial_ch_projs(fused[:, 0]).unsqueeze(-1).unsqueeze(-1)


def union_config(sd: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    """(number of control types, transformer width) of a union file's weights, None for other ControlNets."""
    if not is_union_state_dict(sd):
        return None
    types, width = sd["task_embedding"].shape
    return int(types), int(width)
