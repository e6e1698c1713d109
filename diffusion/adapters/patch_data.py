"""ComfyUI's weight-patch data as Loom `WeightPatch`es (and back), so that patches written for ComfyUI's
`ModelPatcher.add_patches` / `comfy.lora.load_lora` land on Loom's handles.

ComfyUI records a patch on a key as `(strength_patch, value, strength_model, offset, function)` where `value` is one
of: a tuple `(tensor,)` (a full difference), `("diff", (tensor,))`, `("set", (tensor,))` (replace the weight),
`("lora", (up, down, alpha, mid, dora_scale, reshape))`, `("loha", (w1a, w1b, alpha, w2a, w2b, t1, t2, dora_scale))`,
`("lokr", (w1, w2, alpha, w1a, w1b, w2a, w2b, t2, dora_scale))`, or a list `[(weight, convert_fn), *patches]`
(another model's weight with its own patches: what ComfyUI's model-merging nodes pass from `get_key_patches`).
A key is a state-dict key or `(key, (dim, start, length))` for a slice of a stacked weight. The maths are
`diffusion/adapters/lora_deltas.py`'s deltas; this module only translates. Nothing here touches a device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable

import torch
from torch import Tensor

from diffusion.adapters.lora_deltas import DoraDelta, FullDelta, LohaDelta, LokrDelta, LoraDelta, SliceDelta
from diffusion.weight_patch import WeightPatch, apply_patches

Delta = Callable[[Tensor], Tensor]


class PatchDataError(ValueError):
    """A patch value in none of the forms ComfyUI's add_patches accepts."""


@dataclass(frozen=True, eq=False)
class SetDelta:
    """ComfyUI's "set" patch: the weight becomes `value`; as a delta scaled by the patch strength,
    (value − base·strength_model)/strength, so that `WeightPatch.apply` yields exactly `value`."""

    value: Tensor
    strength: float
    strength_model: float

    def __call__(self, weight: Tensor) -> Tensor:
        target = self.value.to(device=weight.device, dtype=torch.float32).reshape(weight.shape)
        return (target - weight * self.strength_model) / self.strength


@dataclass(frozen=True, eq=False)
class OtherWeightDelta:
    """A list value `[(weight, convert_fn), *patches]`: the delta is the other model's (patched) weight itself, so
    `base·strength_model + strength·other` is ComfyUI's weighted merge."""

    weight: Tensor
    convert: Callable[..., Tensor] | None
    patches: tuple[Any, ...]

    def __call__(self, like: Tensor) -> Tensor:
        other = self.weight.detach().to(device=like.device, dtype=torch.float32)
        if self.convert is not None:
            other = self.convert(other)
        own = [p if isinstance(p, WeightPatch) else comfy_tuple_to_patch(p) for p in self.patches]
        return apply_patches(other, own) if own else other


def _dora(delta: Delta, dora_scale: Tensor | None) -> Delta:
    return DoraDelta(delta, dora_scale) if dora_scale is not None else delta


def _pad(values: tuple, n: int) -> tuple:
    return tuple(values) + (None,) * (n - len(values))


def delta_of(value: Any, strength: float = 1.0, strength_model: float = 1.0) -> Delta:
    """The Loom delta function of one ComfyUI patch value (see the module docstring)."""
    if isinstance(value, WeightPatch):
        return value.compute_delta
    if isinstance(value, Tensor):
        return FullDelta(value)
    if isinstance(value, list):
        if not value or not isinstance(value[0], tuple):
            raise PatchDataError("a list patch value must start with (weight, convert_fn), as get_key_patches gives")
        weight, convert = value[0][0], value[0][1] if len(value[0]) > 1 else None
        return OtherWeightDelta(weight, convert, tuple(value[1:]))
    if callable(value) and not isinstance(value, tuple):
        return value
    if not isinstance(value, tuple) or not value:
        raise PatchDataError(f"patch value of type {type(value).__name__} is not a ComfyUI weight patch")
    if len(value) == 1:
        return FullDelta(value[0])
    kind, data = value[0], value[1]
    if kind == "diff":
        return FullDelta(data[0])
    if kind == "set":
        if strength == 0:
            raise PatchDataError('a "set" patch needs a non-zero strength')
        return SetDelta(data[0], float(strength), float(strength_model))
    if kind == "lora":
        up, down, alpha, mid, dora, _reshape = _pad(data, 6)
        return _dora(LoraDelta(up, down, alpha, mid), dora)
    if kind == "loha":
        w1a, w1b, alpha, w2a, w2b, t1, t2, dora = _pad(data, 8)
        return _dora(LohaDelta(w1a, w1b, w2a, w2b, alpha, t1, t2), dora)
    if kind == "lokr":
        w1, w2, alpha, w1a, w1b, w2a, w2b, t2, dora = _pad(data, 9)
        return _dora(LokrDelta(w1, w2, w1a, w1b, w2a, w2b, t2, alpha), dora)
    raise PatchDataError(f"patch type {kind!r} is not supported (diff, set, lora, loha, lokr, a merge list)")


def split_key(key: Any) -> tuple[str, tuple[int, int, int] | None, Callable[..., Tensor] | None]:
    """(state-dict key, slice or None, output function or None) of an add_patches key."""
    if isinstance(key, str):
        return key, None, None
    name, offset = key[0], key[1] if len(key) > 1 else None
    function = key[2] if len(key) > 2 else None
    return name, (tuple(offset) if offset is not None else None), function


@dataclass(frozen=True, eq=False)
class _Mapped:
    """A delta passed through ComfyUI's per-patch output `function`."""

    inner: Delta
    function: Callable[..., Tensor]

    def __call__(self, weight: Tensor) -> Tensor:
        return self.function(self.inner(weight))


class PatchSource:
    """Identity of one add_patches call: compares by object, and keeps the patch data alive so ids never recur."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data


def to_weight_patch(key: Any, value: Any, strength: float, strength_model: float,
                    source: Hashable | None = None) -> tuple[str, WeightPatch]:
    """(state-dict key, WeightPatch) for one add_patches entry; `source` names the call for cache identity."""
    if isinstance(value, WeightPatch):
        name = key if isinstance(key, str) else key[0]
        return name, value
    name, offset, function = split_key(key)
    delta = delta_of(value, strength, strength_model)
    if function is not None:
        delta = _Mapped(delta, function)
    if offset is not None:
        delta = SliceDelta(delta, offset)
    ident = (source if source is not None else PatchSource(value), repr(key))
    return name, WeightPatch(delta, float(strength), float(strength_model), key_hint=name, ident=ident)


def comfy_tuple_to_patch(entry: Any) -> WeightPatch:
    """One recorded ComfyUI patch tuple `(strength_patch, value, strength_model, offset, function)` as a
    WeightPatch (what a `get_key_patches` list may hold after ComfyUI-style code built it by hand)."""
    if isinstance(entry, WeightPatch):
        return entry
    strength, value, strength_model, offset, function = _pad(tuple(entry), 5)
    key: Any = "weight" if offset is None and function is None else ("weight", offset, function)
    _, patch = to_weight_patch(key, value, 1.0 if strength is None else strength,
                               1.0 if strength_model is None else strength_model)
    return patch


def as_comfy_tuple(patch: WeightPatch) -> tuple:
    """A WeightPatch as ComfyUI's recorded form `(strength_patch, value, strength_model, offset, function)`; the
    value is the patch itself (Loom's add_patches and calculate_weight take it back)."""
    return (patch.strength, patch, patch.strength_model, None, None)
