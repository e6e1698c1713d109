"""ComfyUI's `comfy.lora` for custom node packs: `model_lora_keys_unet`, `model_lora_keys_clip`, `load_lora` and
`calculate_weight`, over Loom's LoRA key maps (`diffusion/adapters/lora_formats.py`) and adapter maths (`diffusion/adapters/lora.py`).

The key maps go from a LoRA file's module names to the model's state-dict keys (a `(key, (dim, start, length))`
pair for a slice of a stacked weight), as ComfyUI's do; `load_lora` gives ComfyUI's patch data (`("lora", (up,
down, alpha, mid, dora_scale, None))`, `("loha", ...)`, `("lokr", ...)`, `("diff", (tensor,))`), which
`model.add_patches(...)` / `clip.add_patches(...)` take.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from diffusion.adapters.lora import (DoraDelta, FullDelta, LohaDelta, LokrDelta, LoraDelta, SliceDelta, clip_map_for,
                            match_adapters, unet_map_for)
from diffusion.adapters.lora_formats import Target
from diffusion.adapters.patch_data import comfy_tuple_to_patch, delta_of
from diffusion.patcher import ModelHandle, WeightPatch, apply_patches

BINDING: Any  # set by compat.install_compat before this module runs
log = logging.getLogger(__name__)


def _handle_of(model: Any, kind: str) -> ModelHandle:
    """A handle on `model` (a MODEL handle, a CLIP, or ComfyUI's `model.model` / `clip.cond_stage_model`)."""
    if isinstance(model, ModelHandle):
        return model
    handle = getattr(model, "handle", None)
    if isinstance(handle, ModelHandle):
        return handle
    if isinstance(model, torch.nn.Module):
        return ModelHandle(model, kind=kind)  # type: ignore[arg-type]
    raise TypeError(f"expected a Loom model, CLIP or module, got {type(model).__name__}")


def _as_comfy_target(target: Target) -> Any:
    return target.key if target.offset is None else (target.key, target.offset)


def model_lora_keys_unet(model: Any, key_map: dict | None = None) -> dict[str, Any]:
    """LoRA module name -> model key, for every spelling Loom reads (kohya `lora_unet_*`, diffusers, LDM names)."""
    key_map = {} if key_map is None else key_map
    for name, target in unet_map_for(_handle_of(model, "unet")).items():
        key_map[name] = _as_comfy_target(target)
    return key_map


def model_lora_keys_clip(model: Any, key_map: dict | None = None) -> dict[str, Any]:
    """LoRA module name -> text-encoder key (`lora_te_*`, `lora_te1_*`/`lora_te2_*` for SDXL, HF names)."""
    key_map = {} if key_map is None else key_map
    for name, target in clip_map_for(_handle_of(model, "text_encoder")).items():
        key_map[name] = _as_comfy_target(target)
    return key_map


def _comfy_value(delta: Any) -> tuple:
    """ComfyUI's patch data of one of Loom's delta objects."""
    dora = None
    if isinstance(delta, DoraDelta):
        delta, dora = delta.inner, delta.scale
    if isinstance(delta, LoraDelta):
        return ("lora", (delta.up, delta.down, delta.alpha, delta.mid, dora, None))
    if isinstance(delta, LohaDelta):
        return ("loha", (delta.w1a, delta.w1b, delta.alpha, delta.w2a, delta.w2b, delta.t1, delta.t2, dora))
    if isinstance(delta, LokrDelta):
        return ("lokr", (delta.w1, delta.w2, delta.alpha, delta.w1a, delta.w1b, delta.w2a, delta.w2b, delta.t2,
                         dora))
    if isinstance(delta, FullDelta):
        return ("diff", (delta.diff,))
    raise TypeError(f"no ComfyUI form for {type(delta).__name__}")


def _to_target(value: Any) -> Target:
    if isinstance(value, str):
        return Target(value)
    return Target(value[0], tuple(value[1]) if len(value) > 1 and value[1] is not None else None)


def load_lora(lora: dict[str, torch.Tensor], to_load: dict[str, Any], log_missing: bool = True) -> dict[Any, tuple]:
    """The patches of LoRA state dict `lora` for the modules in `to_load` (a key map from the functions above):
    model key (or (key, offset)) -> ComfyUI patch data. Unused file keys are logged when `log_missing`."""
    targets = {name: _to_target(value) for name, value in to_load.items()}
    loaded = match_adapters(lora, targets)
    out: dict[Any, tuple] = {}
    for key, deltas in loaded.deltas.items():
        for _name, delta in deltas:
            offset = None
            if isinstance(delta, SliceDelta):
                delta, offset = delta.inner, delta.offset
            out[key if offset is None else (key, offset)] = _comfy_value(delta)
    if log_missing:
        for key in sorted(set(lora) - loaded.used):
            log.warning("lora key not loaded: %s", key)
    return out


def calculate_weight(patches: list[Any], weight: torch.Tensor, key: str,
                     intermediate_dtype: torch.dtype = torch.float32, original_weights: Any = None) -> torch.Tensor:
    """`weight` with ComfyUI-recorded patches `(strength, value, strength_model, offset, function)` applied."""
    own: list[WeightPatch] = []
    for entry in patches:
        own.append(comfy_tuple_to_patch(entry))
    return apply_patches(weight, own)


__all__ = ["model_lora_keys_unet", "model_lora_keys_clip", "load_lora", "calculate_weight", "delta_of"]
