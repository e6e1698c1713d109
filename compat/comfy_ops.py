"""ComfyUI's `comfy.ops` for custom node packs: layer classes that skip weight initialisation
(`disable_weight_init`) and that cast their weights to the input's dtype and device at call time (`manual_cast`),
plus `cast_bias_weight`.

Packs build their own small networks from these (adapters, upscalers, IP-Adapter projections) and then load a
state dict into them, so initialising the weights first is wasted work. Casting happens per call on a copy; the
stored weights are never moved (placing them is the model manager's job).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

BINDING: Any  # set by compat.install_compat before this module runs


def cast_to(weight: torch.Tensor | None, dtype: torch.dtype | None = None, device: Any = None,
            non_blocking: bool = False, copy: bool = False) -> torch.Tensor | None:
    """`weight` on `device` in `dtype` (a copy when asked or needed)."""
    if weight is None:
        return None
    return weight.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy)


def cast_bias_weight(s: nn.Module, input: torch.Tensor | None = None, dtype: torch.dtype | None = None,
                     device: Any = None, bias_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, Any]:
    """(weight, bias) of layer `s` cast to `input`'s dtype and device (or the given ones)."""
    if input is not None:
        dtype = dtype or input.dtype
        bias_dtype = bias_dtype or dtype
        device = device or input.device
    bias = cast_to(getattr(s, "bias", None), bias_dtype, device)
    return cast_to(s.weight, dtype, device), bias


class CastWeightBiasOp:
    """ComfyUI's mix-in flags: `comfy_cast_weights` makes the layer cast per call."""

    comfy_cast_weights = False
    weight_function = None
    bias_function = None


class _CastConv(CastWeightBiasOp):
    """The forward of ComfyUI's cast convolutions (mixed in before `nn.ConvNd`): weights cast per call when asked."""

    def reset_parameters(self) -> None:
        return None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.comfy_cast_weights:
            weight, bias = cast_bias_weight(self, input)
            return self._conv_forward(input, weight, bias)  # type: ignore[attr-defined]
        return super().forward(input)  # type: ignore[misc]


def _cast_forward(layer: Any, functional: Any, input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    weight, bias = cast_bias_weight(layer, input)
    return functional(input, weight, bias, *args, **kwargs)


class disable_weight_init:  # noqa: N801 (ComfyUI's class name)
    """Layers without initialisation: construct, then load weights."""

    class Linear(nn.Linear, CastWeightBiasOp):
        def reset_parameters(self) -> None:
            return None

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            if self.comfy_cast_weights:
                return _cast_forward(self, nn.functional.linear, input)
            return super().forward(input)

    class Conv1d(_CastConv, nn.Conv1d):
        pass

    class Conv2d(_CastConv, nn.Conv2d):
        pass

    class Conv3d(_CastConv, nn.Conv3d):
        pass

    class GroupNorm(nn.GroupNorm, CastWeightBiasOp):
        def reset_parameters(self) -> None:
            return None

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            if self.comfy_cast_weights and self.weight is not None:
                weight, bias = cast_bias_weight(self, input)
                return nn.functional.group_norm(input, self.num_groups, weight, bias, self.eps)
            return super().forward(input)

    class LayerNorm(nn.LayerNorm, CastWeightBiasOp):
        def reset_parameters(self) -> None:
            return None

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            if self.comfy_cast_weights and self.weight is not None:
                weight, bias = cast_bias_weight(self, input)
                return nn.functional.layer_norm(input, self.normalized_shape, weight, bias, self.eps)
            return super().forward(input)

    class Embedding(nn.Embedding, CastWeightBiasOp):
        def reset_parameters(self) -> None:
            return None

        def forward(self, input: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
            if self.comfy_cast_weights:
                weight = cast_to(self.weight, device=input.device)
                out = nn.functional.embedding(input, weight, self.padding_idx, self.max_norm, self.norm_type,
                                              self.scale_grad_by_freq, self.sparse)
                return out if out_dtype is None else out.to(out_dtype)
            return super().forward(input)

    @classmethod
    def conv_nd(cls, dims: int, *args: Any, **kwargs: Any) -> nn.Module:
        """A Conv1d/2d/3d of this family by dimension count."""
        table = {1: cls.Conv1d, 2: cls.Conv2d, 3: cls.Conv3d}
        if dims not in table:
            raise ValueError(f"unsupported dimensions: {dims}")
        return table[dims](*args, **kwargs)


class manual_cast(disable_weight_init):  # noqa: N801 (ComfyUI's class name)
    """Layers that cast their weights to the input's dtype/device on every call (weights stored in another
    dtype, e.g. fp8 or fp16 on a CPU computing in fp32)."""

    class Linear(disable_weight_init.Linear):
        comfy_cast_weights = True

    class Conv1d(disable_weight_init.Conv1d):
        comfy_cast_weights = True

    class Conv2d(disable_weight_init.Conv2d):
        comfy_cast_weights = True

    class Conv3d(disable_weight_init.Conv3d):
        comfy_cast_weights = True

    class GroupNorm(disable_weight_init.GroupNorm):
        comfy_cast_weights = True

    class LayerNorm(disable_weight_init.LayerNorm):
        comfy_cast_weights = True

    class Embedding(disable_weight_init.Embedding):
        comfy_cast_weights = True


def pick_operations(weight_dtype: torch.dtype | None, compute_dtype: torch.dtype | None,
                    load_device: Any = None, **_: Any) -> type:
    """`manual_cast` when weights and compute differ in dtype, else `disable_weight_init`."""
    if compute_dtype is None or weight_dtype == compute_dtype:
        return disable_weight_init
    return manual_cast
