"""Weight patches that scale attention projections (ComfyUI's attention-multiply experiments): the UNet's
self- (attn1) or cross-attention (attn2) `to_q`/`to_k`/`to_v`/`to_out.0` weights and biases, and the text
encoder's query/key/value/output projections.

Loom's CLIP towers are open_clip modules, whose query, key and value projections are one stacked
`attn.in_proj_weight` (3·D rows: q, then k, then v) and `attn.in_proj_bias`; a row-wise factor scales each third,
which is the same change as scaling separate `q_proj`/`k_proj`/`v_proj` weights. Patches go through the
model handle (`diffusion.patcher.WeightPatch`), so they apply on load and are removed on offload.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from diffusion.patcher import WeightPatch


def _zero_delta(weight: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(weight)


def scale_patch(factor: float, key: str) -> WeightPatch:
    """weight·factor, as a patch (no delta, the base scaled)."""
    return WeightPatch(_zero_delta, strength=0.0, strength_model=float(factor), key_hint=key, ident=("scale", key))


@dataclass(frozen=True)
class StackedQKVScale:
    """The delta that scales the q, k and v thirds of a stacked in-projection (rows) by their factors."""

    q: float
    k: float
    v: float

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        third = weight.shape[0] // 3
        factors = torch.tensor([self.q, self.k, self.v], dtype=weight.dtype, device=weight.device)
        factors = factors.repeat_interleave(third).reshape((-1,) + (1,) * (weight.ndim - 1))
        return weight * (factors - 1.0)


def unet_attention_patches(keys: Iterable[str], attn: str, q: float, k: float, v: float,
                           out: float) -> dict[str, WeightPatch]:
    """Patches for every `{attn}.to_q/to_k/to_v/to_out.0` weight and bias among `keys` (attn: "attn1"/"attn2")."""
    factors = {"to_q": q, "to_k": k, "to_v": v, "to_out.0": out}
    patches: dict[str, WeightPatch] = {}
    for key in keys:
        for proj, factor in factors.items():
            if key.endswith(f"{attn}.{proj}.weight") or key.endswith(f"{attn}.{proj}.bias"):
                patches[key] = scale_patch(factor, key)
    return patches


def clip_attention_patches(keys: Iterable[str], q: float, k: float, v: float, out: float) -> dict[str, WeightPatch]:
    """Patches for the text encoder's self-attention projections: stacked open_clip `attn.in_proj_*` and
    `attn.out_proj.*`, or separate Hugging Face `self_attn.{q,k,v,out}_proj.*`."""
    separate = {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v, "self_attn.out_proj": out}
    patches: dict[str, WeightPatch] = {}
    for key in keys:
        if key.endswith("attn.in_proj_weight") or key.endswith("attn.in_proj_bias"):
            patches[key] = WeightPatch(StackedQKVScale(q, k, v), strength=1.0, key_hint=key,
                                       ident=("qkv-scale", key, q, k, v))
        elif key.endswith("attn.out_proj.weight") or key.endswith("attn.out_proj.bias"):
            patches[key] = scale_patch(out, key)
        else:
            for proj, factor in separate.items():
                if key.endswith(f"{proj}.weight") or key.endswith(f"{proj}.bias"):
                    patches[key] = scale_patch(factor, key)
    return patches
