"""Multi-head scaled dot-product attention for the UNet and the VAE.

Owns one function, `attention`, with two interchangeable kernels:

- ``"sdpa"``: `torch.nn.functional.scaled_dot_product_attention`, which picks a fused (flash / memory-efficient)
  kernel where the device has one;
- ``"sliced"``: the plain softmax(QKᵀ/√d)·V of Vaswani et al. (2017), "Attention Is All You Need", eq. 1, computed
  in chunks over the query length so the N×M score matrix never exists whole. This is the low-memory fallback for
  large latents on devices without a fused kernel (the idea of "sliced attention" in the LDM forks).

Both take and return tensors laid out as ``B × N × (heads·dim_head)``, the layout of the LDM transformer blocks.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ATTENTION_MODES = ("sdpa", "sliced")

# Bytes of scores one slice may hold; 256 MiB keeps the fallback well inside a small GPU's working memory.
_SLICE_BUDGET_BYTES = 256 * 1024 * 1024


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """B×N×(H·D) → B×H×N×D."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """B×H×N×D → B×N×(H·D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _as_additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = attend) becomes an additive one (0 / −inf); a float mask is returned as is."""
    if mask.dtype == torch.bool:
        additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return additive.masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def _broadcast_mask(mask: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """Bring a mask given as M, N×M, B×N×M or B×H×N×M to a shape broadcastable against B×H×N×M."""
    if mask.ndim == 1:
        return mask.view(1, 1, 1, -1)
    if mask.ndim == 2:
        return mask.view(1, 1, *mask.shape)
    if mask.ndim == 3:
        return mask.view(mask.shape[0], 1, *mask.shape[1:])
    return mask


def _sliced(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, slice_size: int | None
) -> torch.Tensor:
    """softmax(QKᵀ/√d + mask)·V over B×H×N×D tensors, a block of query rows at a time."""
    b, h, n, d = q.shape
    m = k.shape[2]
    scale = 1.0 / math.sqrt(d)
    if slice_size is None:
        per_row = b * h * m * max(q.element_size(), 4)
        slice_size = max(1, min(n, _SLICE_BUDGET_BYTES // max(1, per_row)))
    out = torch.empty(b, h, n, v.shape[-1], dtype=q.dtype, device=q.device)
    kt = k.transpose(-1, -2)
    for start in range(0, n, slice_size):
        end = min(n, start + slice_size)
        # Scores in fp32 at least: half-precision softmax over long rows loses mass (same reason SDPA upcasts).
        scores = torch.matmul(q[:, :, start:end].float(), kt.float()) * scale
        if mask is not None:
            scores = scores + (mask[..., start:end, :] if mask.shape[-2] > 1 else mask).float()
        out[:, :, start:end] = torch.matmul(scores.softmax(dim=-1), v.float()).to(q.dtype)
    return out


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    mask: torch.Tensor | None = None,
    mode: str = "sdpa",
    slice_size: int | None = None,
) -> torch.Tensor:
    """Multi-head attention of `q` (B×N×C) over `k`, `v` (B×M×C), C = heads·dim_head; returns B×N×C.

    `mask` is boolean (True = may attend) or additive, shaped M, N×M, B×N×M or B×H×N×M. `mode` is "sdpa" or
    "sliced"; `slice_size` (query rows per chunk) applies to "sliced" and is chosen from a memory budget when None.
    """
    if mode not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {mode!r}; expected one of {ATTENTION_MODES}")
    if q.shape[-1] % heads != 0:
        raise ValueError(f"channels {q.shape[-1]} are not divisible by {heads} heads")
    qh, kh, vh = _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)
    if mask is not None:
        mask = _broadcast_mask(_as_additive_mask(mask, q.dtype), q.shape[0], heads)
    if mode == "sdpa":
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    else:
        out = _sliced(qh, kh, vh, mask, slice_size)
    return _merge_heads(out)
