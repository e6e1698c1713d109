"""Weights stored in one dtype and computed in another (what ComfyUI calls "manual cast").

Owns the cast layers (`CastLinear`, `CastConv1d`, `CastConv2d`, `CastConvTranspose2d`, `CastGroupNorm`,
`CastLayerNorm`): each casts its weight and bias to the input's dtype for the call only, so fp8, fp16 or bf16
weights stay in that dtype in memory and are upcast layer by layer; `layer_weight` does the cast for one layer
(fp8/fp16/bf16 storage, ComfyUI "scaled fp8" `scale_weight`, GGUF-quantised blocks dequantised per call with any
weight patches the model manager deferred to the call); `store_weights` converts a built network in place and
records its compute dtype (`compute_dtype`, which the networks' `dtype` reads); `store_text_encoder_weights` does
the same for text towers (they compute in fp32 already, block by block); `weight_bytes` counts resident weight bytes.

What to store and compute in is the model manager's decision (executor/memory.py); this module only carries it out.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.files.gguf_quants import dequantize
from diffusion.networks import conv3x3
from diffusion.patcher import apply_patches

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def layer_weight(layer: nn.Module, like: Tensor) -> Tensor:
    """`layer.weight` in `like`'s dtype (and device): dequantised when it holds GGUF blocks (`weight_qtype`), with the
    deferred patches (`weight_patches`) applied, times `scale_weight` for scaled-fp8 files."""
    w = layer.weight
    qtype = getattr(layer, "weight_qtype", None)
    if qtype is not None:
        w = dequantize(w, qtype, layer.weight_shape, like.dtype)
    elif w.dtype != like.dtype:
        w = w.to(like.dtype)
    if w.device != like.device:
        w = w.to(like.device)
    scale = getattr(layer, "scale_weight", None)
    if scale is not None:
        w = w * scale.to(device=w.device, dtype=w.dtype)
    patches = getattr(layer, "weight_patches", None)
    if patches:
        w = apply_patches(w, patches)
    return w


def layer_bias(layer: nn.Module, like: Tensor) -> Tensor | None:
    """`layer.bias` in `like`'s dtype and device (None without one)."""
    b = layer.bias
    if b is None or (b.dtype == like.dtype and b.device == like.device):
        return b
    return b.to(device=like.device, dtype=like.dtype)


class CastLinear(nn.Linear):
    """nn.Linear computing in the input's dtype whatever its weights are stored in."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, layer_weight(self, x), layer_bias(self, x))


class CastConv1d(nn.Conv1d):
    """nn.Conv1d computing in the input's dtype."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, layer_weight(self, x), layer_bias(self, x))


class CastConv2d(nn.Conv2d):
    """nn.Conv2d computing in the input's dtype (CPU 3×3 convolutions by the algorithm conv3x3 picks)."""

    def forward(self, x: Tensor) -> Tensor:
        return conv3x3.conv2d(self, x, layer_weight(self, x), layer_bias(self, x))


class CastConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d computing in the input's dtype (no output_size argument, as the networks call it)."""

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, 2,
                                       self.dilation)
        return F.conv_transpose2d(x, layer_weight(self, x), layer_bias(self, x), self.stride, self.padding,
                                  padding, self.groups, self.dilation)


class CastGroupNorm(nn.GroupNorm):
    """nn.GroupNorm computing in the input's dtype."""

    def forward(self, x: Tensor) -> Tensor:
        w = layer_weight(self, x) if self.weight is not None else None
        return F.group_norm(x, self.num_groups, w, layer_bias(self, x), self.eps)


class CastLayerNorm(nn.LayerNorm):
    """nn.LayerNorm computing in the input's dtype."""

    def forward(self, x: Tensor) -> Tensor:
        w = layer_weight(self, x) if self.weight is not None else None
        return F.layer_norm(x, self.normalized_shape, w, layer_bias(self, x), self.eps)


CAST_CLASSES: dict[type, type] = {nn.Linear: CastLinear, nn.Conv1d: CastConv1d, nn.Conv2d: CastConv2d,
                                  conv3x3.FastConv2d: CastConv2d,
                                  nn.ConvTranspose2d: CastConvTranspose2d, nn.GroupNorm: CastGroupNorm,
                                  nn.LayerNorm: CastLayerNorm}
_MATMUL = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


def casting(module: nn.Module) -> bool:
    """Whether a layer upcasts its own weights per call (a cast layer, or a network layer that does it itself,
    such as the MMDiT's Linear)."""
    return isinstance(module, tuple(CAST_CLASSES.values())) or bool(getattr(module, "casts_weights", False))


def make_casting(module: nn.Module) -> None:
    """Turn every plain Linear/Conv/GroupNorm/LayerNorm below `module` into its cast layer (in place: the class is
    swapped, the parameters stay)."""
    for sub in module.modules():
        cast = CAST_CLASSES.get(type(sub))
        if cast is not None:
            sub.__class__ = cast


def store_weights(module: nn.Module, storage: torch.dtype | None, compute: torch.dtype) -> nn.Module:
    """Keep `module`'s weights in `storage` and compute in `compute`, in place; returns `module`.

    fp8 storage holds only the matmul weights (Linear/Conv, 2-D and up) in fp8, as ComfyUI's fp8 files do for the
    bulk of the bytes; biases, norms and everything else stay in `compute`. fp16/bf16/fp32 storage holds all weights
    of the casting layers in `storage`. Layers that cannot cast (none in Loom's UNet, MMDiT or VAE) keep `compute`.
    `storage` None keeps the weights that are fp8 already (a file stored so) and the rest in `compute`.
    """
    make_casting(module)
    with torch.no_grad():
        for sub in module.modules():
            for name, p in list(sub.named_parameters(recurse=False)):
                if p.is_floating_point() or p.dtype in FP8_DTYPES:
                    target = _storage_of(sub, name, p, storage, compute)
                    if p.dtype != target:
                        sub._parameters[name] = nn.Parameter(p.detach().to(target), requires_grad=False)
    module.compute_dtype = compute
    return module


def _storage_of(sub: nn.Module, name: str, p: Tensor, storage: torch.dtype | None,
                compute: torch.dtype) -> torch.dtype:
    if getattr(sub, "weight_qtype", None) is not None and name == "weight":
        return p.dtype  # GGUF blocks stay as they are
    if not casting(sub):
        return compute
    if storage is None:
        return p.dtype if p.dtype in FP8_DTYPES else compute
    if storage in FP8_DTYPES:
        return storage if name == "weight" and p.dim() >= 2 and isinstance(sub, _MATMUL) else compute
    return storage


def store_text_encoder_weights(module: nn.Module, storage: torch.dtype) -> nn.Module:
    """A text tower's weights in `storage` (Loom's towers compute each block in fp32 from whatever they hold): fp8
    keeps the matmul weights (Linear weights, attention in-projections) in fp8 and the rest as read; other dtypes
    all floating weights. In place; returns `module`."""
    with torch.no_grad():
        for sub in module.modules():
            for name, p in list(sub.named_parameters(recurse=False)):
                if not p.is_floating_point():
                    continue
                linear = name == "weight" and isinstance(sub, nn.Linear)
                matmul = p.dim() == 2 and (name == "in_proj_weight" or linear)
                if storage in FP8_DTYPES and not matmul:
                    continue
                if p.dtype != storage:
                    sub._parameters[name] = nn.Parameter(p.detach().to(storage), requires_grad=False)
    return module


def weight_bytes(module: nn.Module, matmul_only: bool = False) -> int:
    """Bytes the parameters and buffers of `module` take where they live (GGUF blocks at their packed size);
    `matmul_only` counts only Linear/Conv weights."""
    total = 0
    for sub in module.modules():
        tensors: list[Any] = list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False))
        for name, t in tensors:
            if matmul_only and not (name == "weight" and isinstance(sub, _MATMUL)):
                continue
            total += t.numel() * t.element_size()
    return total


def split_scaled_fp8(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """ComfyUI "scaled fp8" files: (the weights without the `scaled_fp8` marker and the per-layer `scale_weight` /
    `scale_input` tensors, the `scale_weight` scalars by layer name). weight = stored · scale; `scale_input` only
    serves fp8 matmuls, which Loom does not run."""
    scales = {k[: -len(".scale_weight")]: v for k, v in state_dict.items() if k.endswith(".scale_weight")}
    if not scales and "scaled_fp8" not in state_dict:
        return state_dict, {}
    weights = {k: v for k, v in state_dict.items()
               if k != "scaled_fp8" and not k.endswith((".scale_weight", ".scale_input"))}
    return weights, scales


def attach_scales(net: nn.Module, scales: dict[str, Tensor], compute: torch.dtype, what: str) -> None:
    """Give each layer named in `scales` its `scale_weight` (made a cast layer, so it applies it per call); the
    network computes in `compute` unless it was told otherwise. A scale for a missing or non-matmul layer is an
    error naming it."""
    if not scales:
        return
    make_casting(net)
    for name, scale in scales.items():
        try:
            layer = net.get_submodule(name)
        except AttributeError as err:
            raise ValueError(f"{what}: scaled fp8 {name}.scale_weight belongs to no layer") from err
        if not (casting(layer) and isinstance(layer, _MATMUL)):
            raise ValueError(f"{what}: scaled fp8 {name}.scale_weight is on a {type(layer).__name__}, not a "
                             f"Linear/Conv layer")
        layer.scale_weight = scale.float().reshape(())
    if getattr(net, "compute_dtype", None) is None:
        net.compute_dtype = compute
