"""The CLIP text transformer as a module whose state dict has open_clip_torch's `TextTransformer` keys.

Owns the tower's structure only: token and position embeddings, pre-norm residual blocks (`ln_1`, `attn` — torch's
`nn.MultiheadAttention` with fused `in_proj_*` — `ln_2`, `mlp.c_fc`/`mlp.c_proj`), `ln_final`, the optional
`text_projection` matrix (used as `x @ P`) and `logit_scale`. How the blocks are run (CLIP-skip, fp32 upcast, pooling)
is `diffusion/text/text_encoders.py`. Loom builds the tower itself rather than importing open_clip: importing
open_clip pulls torchvision and torch._dynamo, seconds of a fresh process's first prompt; the keys (and with them
every checkpoint, LoRA and text-encoder file layout) are unchanged.

Architecture: Radford et al. (2021), "Learning Transferable Visual Models From Natural Language Supervision".
"""
from __future__ import annotations

import torch
from torch import nn


class QuickGELU(nn.Module):
    """OpenAI CLIP's GELU approximation x·σ(1.702x) (CLIP-L is trained with it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)); `attn_mask` is added to the attention scores (the causal mask)."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, mlp_width))
        self.mlp.add_module("gelu", activation())
        self.mlp.add_module("c_proj", nn.Linear(mlp_width, width))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """The block stack, as `transformer.resblocks.N`."""

    def __init__(self, width: int, layers: int, heads: int, mlp_width: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_width, activation) for _ in range(layers))


class TextTransformer(nn.Module):
    """Embeddings, blocks and final norm of a CLIP text tower (weights uninitialised: a file fills them)."""

    def __init__(self, context_length: int, vocab_size: int, width: int, heads: int, layers: int,
                 mlp_ratio: float, output_dim: int | None, quick_gelu: bool, logit_scale: bool) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.text_projection = nn.Parameter(torch.empty(width, output_dim)) if output_dim else None
        self.logit_scale = nn.Parameter(torch.ones([])) if logit_scale else None
        # from_pretrained skips nn.Embedding's random init: on the `meta` device (where loading builds the tower)
        # that init runs through torch._refs, whose first use imports torch._dynamo (about a second).
        self.token_embedding = nn.Embedding.from_pretrained(torch.empty(vocab_size, width), freeze=False)
        self.transformer = Transformer(width, layers, heads, int(width * mlp_ratio),
                                       QuickGELU if quick_gelu else nn.GELU)
        self.ln_final = nn.LayerNorm(width)
