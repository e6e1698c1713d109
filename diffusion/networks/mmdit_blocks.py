"""The building blocks of the MMDiT (Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution
Image Synthesis", §4 and fig. 2), with attribute names matching the SD3/SD3.5 checkpoint keys.

Owns: `modulate` (adaLN: x·(1+scale)+shift), `RMSNorm` (the per-head QK norm of SD3.5), `SelfAttentionProjections`
(qkv projection + optional QK norm + output projection, `attn`/`attn2` in the keys), `DismantledBlock` (one stream of
a joint block: adaLN-Zero modulation, attention projections, MLP; "pre-only" for the last context block; the x stream
of MMDiT-X (SD3.5 Medium) carries a second, x-only self-attention `attn2`), `JointBlock` (context and x streams whose
tokens attend jointly, context first) and `FinalLayer`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.networks.attention import attention
from diffusion.networks.weight_cast import layer_bias, layer_weight

LAYER_NORM_EPS = 1e-6
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


class Linear(nn.Linear):
    """nn.Linear whose weight may be stored in another dtype than the computation's (fp8 files kept in fp8 in
    memory, GGUF blocks): the weight and bias are cast to the input's dtype per call (`weight_cast.layer_weight`),
    the weight times `scale_weight` when the file is ComfyUI "scaled fp8" (a per-layer scalar beside the weight)."""

    scale_weight: torch.Tensor | None = None
    casts_weights = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, layer_weight(self, x), layer_bias(self, x))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x·(1 + scale) + shift, shift/scale B×D broadcast over the tokens of x (B×N×D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class RMSNorm(nn.Module):
    """x / rms(x) · weight over the last dimension (Zhang & Sennrich 2019), eps 1e-6, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * self.weight.float()).to(x.dtype)


class SelfAttentionProjections(nn.Module):
    """`qkv` (D → 3D), per-head `ln_q`/`ln_k` RMS norms when `qk_norm`, and `proj` (D → D) unless `pre_only`."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, pre_only: bool = False):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = Linear(dim, dim * 3)
        self.ln_q = RMSNorm(self.head_dim) if qk_norm else None
        self.ln_k = RMSNorm(self.head_dim) if qk_norm else None
        self.proj = None if pre_only else Linear(dim, dim)

    def pre_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v each B×N×D (heads interleaved as B×N×H·d), q and k normalised per head."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.ln_q is not None:
            q = self.ln_q(q.reshape(b, n, self.heads, self.head_dim)).reshape(b, n, -1)
            k = self.ln_k(k.reshape(b, n, self.heads, self.head_dim)).reshape(b, n, -1)
        return q, k, v


class Mlp(nn.Module):
    """fc1 → GELU (tanh approximation) → fc2, hidden width `ratio`·D."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DismantledBlock(nn.Module):
    """One stream of a joint block, split into the part before the joint attention (`pre_attention`: adaLN
    modulation and q/k/v) and the part after (`post_attention`: gated output projection and gated MLP).

    Modulation chunks, in the order of `adaLN_modulation.1`'s rows: shift/scale/gate for attention, then for the
    MLP, then (with `attn2`) for the second attention; a pre-only block has only the attention shift/scale."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, qk_norm: bool, pre_only: bool = False,
                 dual_attention: bool = False):
        super().__init__()
        self.pre_only = pre_only
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.attn = SelfAttentionProjections(dim, heads, qk_norm, pre_only)
        self.attn2 = SelfAttentionProjections(dim, heads, qk_norm) if dual_attention else None
        if not pre_only:
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=LAYER_NORM_EPS)
            self.mlp = Mlp(dim, mlp_hidden)
        n_mods = 2 if pre_only else (9 if dual_attention else 6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(dim, n_mods * dim))

    def pre_attention(self, x: torch.Tensor, c: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple]:
        """(q, k, v) of the joint attention and what `post_attention` needs."""
        mods = self.adaLN_modulation(c).chunk(2 if self.pre_only else (9 if self.attn2 is not None else 6), dim=1)
        normed = self.norm1(x)
        qkv = self.attn.pre_attention(modulate(normed, mods[0], mods[1]))
        if self.pre_only:
            return qkv, ()
        extra = None
        if self.attn2 is not None:
            extra = self.attn2.pre_attention(modulate(normed, mods[6], mods[7]))
        return qkv, (x, mods, extra)

    def post_attention(self, attn_out: torch.Tensor, state: tuple, attention_mode: str) -> torch.Tensor:
        """x + gate·proj(attention) [+ gate2·proj2(x-only attention)] + gate·MLP(modulated norm2(x))."""
        x, mods, extra = state
        x = x + mods[2].unsqueeze(1) * self.attn.proj(attn_out)
        if extra is not None:
            q2, k2, v2 = extra
            out2 = attention(q2, k2, v2, self.attn2.heads, mode=attention_mode)
            x = x + mods[8].unsqueeze(1) * self.attn2.proj(out2)
        return x + mods[5].unsqueeze(1) * self.mlp(modulate(self.norm2(x), mods[3], mods[4]))


class JointBlock(nn.Module):
    """A context stream and an x stream whose tokens attend jointly (context tokens first)."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, qk_norm: bool, context_pre_only: bool,
                 dual_attention: bool):
        super().__init__()
        self.context_block = DismantledBlock(dim, heads, mlp_hidden, qk_norm, pre_only=context_pre_only)
        self.x_block = DismantledBlock(dim, heads, mlp_hidden, qk_norm, dual_attention=dual_attention)

    def forward(self, context: torch.Tensor, x: torch.Tensor, c: torch.Tensor,
                attention_mode: str = "sdpa") -> tuple[torch.Tensor | None, torch.Tensor]:
        c_qkv, c_state = self.context_block.pre_attention(context, c)
        x_qkv, x_state = self.x_block.pre_attention(x, c)
        n_ctx = context.shape[1]
        q, k, v = (torch.cat([a, b], dim=1) for a, b in zip(c_qkv, x_qkv))
        out = attention(q, k, v, self.x_block.attn.heads, mode=attention_mode)
        x = self.x_block.post_attention(out[:, n_ctx:], x_state, attention_mode)
        if self.context_block.pre_only:
            return None, x
        return self.context_block.post_attention(out[:, :n_ctx], c_state, attention_mode), x


class FinalLayer(nn.Module):
    """LayerNorm, adaLN shift/scale, then a linear map of each token to its patch·patch·channels values."""

    def __init__(self, dim: int, patch: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.linear = Linear(dim, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))
