"""One additive change to one weight (`WeightPatch`) and applying a list of them (`apply_patches`): the unit of
LoRA-like patching that model handles record (`diffusion/patcher.py`) and the model manager applies."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

import torch
from torch import Tensor


@dataclass(frozen=True)
class WeightPatch:
    """One additive change to one weight: `patched = base·strength_model + strength·compute_delta(base)`.

    `compute_delta` receives the current weight in float32 (on whatever device it lives) and returns the delta (any
    device, any float dtype: it is moved and cast). `ident` names the patch's source for cache identity (e.g. the
    LoRA file path, its mtime and the key); without it the function object itself is the identity.
    """

    compute_delta: Callable[[Tensor], Tensor]
    strength: float
    strength_model: float = 1.0
    key_hint: str = ""
    ident: Hashable | None = None

    def apply(self, weight: Tensor) -> Tensor:
        """The patched weight in float32; `weight` must already be float32."""
        delta = self.compute_delta(weight)
        delta = delta.to(device=weight.device, dtype=torch.float32)
        if delta.shape != weight.shape:
            if delta.numel() != weight.numel():
                raise ValueError(f"patch {self.key_hint or '?'}: delta shape {tuple(delta.shape)} does not fit "
                                 f"weight shape {tuple(weight.shape)}")
            delta = delta.reshape(weight.shape)
        out = weight * self.strength_model if self.strength_model != 1.0 else weight
        return out + delta * self.strength

    def identity(self) -> Hashable:
        """What distinguishes this patch from another for caching (hashable)."""
        source = self.ident if self.ident is not None else self.compute_delta
        return (source, float(self.strength), float(self.strength_model))


def apply_patches(weight: Tensor, patches: list[WeightPatch]) -> Tensor:
    """`weight` with `patches` applied in order, computed in float32 and cast back to the weight's dtype."""
    if not patches:
        return weight.clone()
    out = weight.to(torch.float32, copy=True)
    for patch in patches:
        out = patch.apply(out)
    return out.to(weight.dtype)

