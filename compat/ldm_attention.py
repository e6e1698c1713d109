"""ComfyUI's `comfy.ldm.modules.attention` for custom node packs: `optimized_attention` (and the names of the
kernels packs pick from) over Loom's attention (`diffusion/networks/attention.py`), and the UNet's transformer classes
(`CrossAttention`, `BasicTransformerBlock`, `SpatialTransformer`, `FeedForward`, `GEGLU`) for `isinstance`
checks and the attributes packs read (`to_q`, `to_k`, `to_v`, `to_out`, `heads`).

Tensors are laid out B×N×(heads·dim_head) as in ComfyUI; `skip_reshape=True` takes B×heads×N×dim_head.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.networks.attention import attention
from diffusion.networks.unet_blocks import (GEGLU, BasicTransformerBlock, CrossAttention, FeedForward,  # noqa: F401
                                   SpatialTransformer)

BINDING: Any  # set by compat.install_compat before this module runs


def optimized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                        mask: torch.Tensor | None = None, attn_precision: Any = None, skip_reshape: bool = False,
                        skip_output_reshape: bool = False, **_: Any) -> torch.Tensor:
    """softmax(QKᵀ/√d)·V over `heads` heads; returns B×N×(heads·dim_head) (B×heads×N×dim_head with
    `skip_output_reshape`)."""
    if skip_reshape:
        b, h, n, d = q.shape
        q, k, v = (t.transpose(1, 2).reshape(b, t.shape[2], h * d) for t in (q, k, v))
    out = attention(q, k, v, heads, mask=mask)
    if skip_output_reshape:
        b, n, c = out.shape
        return out.view(b, n, heads, c // heads).transpose(1, 2)
    return out


optimized_attention_masked = optimized_attention
attention_pytorch = attention_basic = attention_split = attention_sub_quad = optimized_attention


def optimized_attention_for_device(device: Any = None, mask: bool = False, small_input: bool = False) -> Any:
    return optimized_attention
