"""The maths of LoRA and its relatives as delta functions of a weight (ΔW from the adapter's tensors): plain LoRA
and LoCon's Tucker form, LoHa, LoKr, full differences, a slice of a stacked weight, and DoRA's magnitude.

Each delta is a frozen dataclass called with the current float32 weight and returning ΔW; `diffusion/adapters/lora.py`
matches a file's keys to them and `diffusion/adapters/patch_data.py` builds them from ComfyUI's patch tuples. The papers
and scaling conventions are cited in `diffusion/adapters/lora.py`. Nothing here touches a module or a device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


def _f32(t: Tensor, like: Tensor) -> Tensor:
    return t.to(device=like.device, dtype=torch.float32)


def _scale(alpha: Tensor | None, rank: int | None) -> float:
    return float(alpha) / rank if alpha is not None and rank else 1.0


def _tucker(core: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """Rebuild a Tucker-decomposed kernel: core (r×r×k×k) contracted with b (r×in) and a (r×out) -> out×in×k×k
    (LyCORIS `make_weight_cp`)."""
    return torch.einsum("i j k l, j r, i p -> p r k l", core, b, a)


@dataclass(frozen=True)
class LoraDelta:
    """ΔW = (α/r)·up@down, with an optional LoCon Tucker core `mid`."""

    up: Tensor
    down: Tensor
    alpha: Tensor | None = None
    mid: Tensor | None = None

    def __call__(self, weight: Tensor) -> Tensor:
        up, down = _f32(self.up, weight), _f32(self.down, weight)
        rank = down.shape[0]
        if self.mid is not None:
            mid = _f32(self.mid, weight)
            shape = [down.shape[1], down.shape[0], mid.shape[2], mid.shape[3]]
            down = torch.mm(down.transpose(0, 1).flatten(1), mid.transpose(0, 1).flatten(1))
            down = down.reshape(shape).transpose(0, 1)
        delta = torch.mm(up.flatten(1), down.flatten(1))
        return delta.reshape(weight.shape) * _scale(self.alpha, rank)


@dataclass(frozen=True)
class LohaDelta:
    """ΔW = (α/r)·(w1a@w1b)⊙(w2a@w2b), or with Tucker cores t1/t2."""

    w1a: Tensor
    w1b: Tensor
    w2a: Tensor
    w2b: Tensor
    alpha: Tensor | None = None
    t1: Tensor | None = None
    t2: Tensor | None = None

    def __call__(self, weight: Tensor) -> Tensor:
        w1a, w1b, w2a, w2b = (_f32(t, weight) for t in (self.w1a, self.w1b, self.w2a, self.w2b))
        if self.t1 is not None and self.t2 is not None:
            m1 = _tucker(_f32(self.t1, weight), w1b, w1a)
            m2 = _tucker(_f32(self.t2, weight), w2b, w2a)
        else:
            m1, m2 = w1a @ w1b, w2a @ w2b
        return (m1 * m2).reshape(weight.shape) * _scale(self.alpha, self.w1b.shape[0])


@dataclass(frozen=True)
class LokrDelta:
    """ΔW = (α/r)·kron(w1, w2), each factor given whole or as a low-rank product (r from the product's inner
    size; a file with both factors whole has scale 1)."""

    w1: Tensor | None = None
    w2: Tensor | None = None
    w1a: Tensor | None = None
    w1b: Tensor | None = None
    w2a: Tensor | None = None
    w2b: Tensor | None = None
    t2: Tensor | None = None
    alpha: Tensor | None = None

    def __call__(self, weight: Tensor) -> Tensor:
        rank = None
        if self.w1 is not None:
            w1 = _f32(self.w1, weight)
        else:
            rank = self.w1b.shape[0]
            w1 = _f32(self.w1a, weight) @ _f32(self.w1b, weight)
        if self.w2 is not None:
            w2 = _f32(self.w2, weight)
        else:
            rank = self.w2b.shape[0]
            if self.t2 is not None:
                w2 = _tucker(_f32(self.t2, weight), _f32(self.w2b, weight), _f32(self.w2a, weight))
            else:
                w2 = _f32(self.w2a, weight) @ _f32(self.w2b, weight)
        if w2.ndim == 4:
            w1 = w1[:, :, None, None]
        return torch.kron(w1, w2).reshape(weight.shape) * _scale(self.alpha, rank)


@dataclass(frozen=True)
class FullDelta:
    """ΔW given whole (`.diff` / `.diff_b`)."""

    diff: Tensor

    def __call__(self, weight: Tensor) -> Tensor:
        return _f32(self.diff, weight).reshape(weight.shape)


@dataclass(frozen=True)
class SliceDelta:
    """A delta that covers a slice (dim, start, length) of a stacked weight, e.g. q of open_clip's in_proj."""

    inner: Callable[[Tensor], Tensor]
    offset: tuple[int, int, int]

    def __call__(self, weight: Tensor) -> Tensor:
        dim, start, length = self.offset
        out = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        part = out.narrow(dim, start, length)
        part.copy_(self.inner(weight.narrow(dim, start, length)).reshape(part.shape))
        return out


@dataclass(frozen=True)
class DoraDelta:
    """Weight-decomposed LoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"): W' = m·(W + ΔW)/‖·‖,
    the magnitude `m` being the file's `dora_scale`; returned as W' − W so the patch strength blends it in.

    The norm runs along the axis `dora_scale` spans; on the output axis it is taken of W itself, as ComfyUI
    (`weight_decompose`) does."""

    inner: Callable[[Tensor], Tensor]
    scale: Tensor

    def __call__(self, weight: Tensor) -> Tensor:
        calc = weight + self.inner(weight).reshape(weight.shape)
        scale = _f32(self.scale, weight)
        ones = [1] * (weight.dim() - 1)
        if scale.shape[0] == weight.shape[0]:
            norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True).reshape(weight.shape[0], *ones)
        else:
            cols = calc.transpose(0, 1)
            norm = cols.reshape(cols.shape[0], -1).norm(dim=1, keepdim=True).reshape(cols.shape[0], *ones)
            norm = norm.transpose(0, 1)
        norm = norm + torch.finfo(weight.dtype).eps
        return calc * (scale / norm) - weight
