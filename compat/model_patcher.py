"""ComfyUI's `comfy.model_patcher` for custom node packs: `ModelPatcher` and the model-options helpers.

Loom's MODEL value (`diffusion.patcher.ModelHandle`) already is ComfyUI's ModelPatcher (its ComfyUI-named methods
live in `diffusion/patcher_api.py`), so a pack's `model.clone()` / `set_model_attn1_patch(...)` act on the object
that flows through sockets. The `ModelPatcher` class here adds ComfyUI's constructor, `ModelPatcher(model,
load_device, offload_device, size=0, weight_inplace_update=False)`, for packs that wrap a module of their own, and
`isinstance(x, ModelPatcher)` holds for every Loom model handle. Devices are the model manager's: the arguments are
accepted and the manager still places the weights.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

from diffusion.patcher import ModelHandle

BINDING: Any  # set by compat.install_compat before this module runs


class _HandleMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, ModelHandle)

    def __subclasscheck__(cls, sub: type) -> bool:
        return isinstance(sub, type) and issubclass(sub, ModelHandle)


class ModelPatcher(ModelHandle, metaclass=_HandleMeta):
    """A model handle built the ComfyUI way around a module (kind "unet" when it has a `diffusion_model`)."""

    def __init__(self, model: Any, load_device: Any = None, offload_device: Any = None, size: int = 0,
                 weight_inplace_update: bool = False) -> None:
        kind = "unet" if hasattr(model, "diffusion_model") else "other"
        super().__init__(model, name=type(model).__name__, kind=kind)
        self.weight_inplace_update = weight_inplace_update


def set_model_options_patch_replace(model_options: dict, patch: Callable, name: str, block_name: str, number: int,
                                    transformer_index: int | None = None) -> dict:
    """A copy-on-write `patches_replace` entry in `model_options` (which is returned)."""
    to = dict(model_options.get("transformer_options", {}))
    table = dict(to.get("patches_replace", {}))
    entry = dict(table.get(name, {}))
    entry[(block_name, number) if transformer_index is None else (block_name, number, transformer_index)] = patch
    table[name] = entry
    to["patches_replace"] = table
    model_options["transformer_options"] = to
    return model_options


def set_model_options_post_cfg_function(model_options: dict, post_cfg_function: Callable,
                                        disable_cfg1_optimization: bool = False) -> dict:
    model_options["sampler_post_cfg_function"] = list(model_options.get("sampler_post_cfg_function", [])) + [
        post_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def set_model_options_pre_cfg_function(model_options: dict, pre_cfg_function: Callable,
                                       disable_cfg1_optimization: bool = False) -> dict:
    model_options["sampler_pre_cfg_function"] = list(model_options.get("sampler_pre_cfg_function", [])) + [
        pre_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def create_model_options_clone(orig_model_options: dict) -> dict:
    """Nested dicts copied, leaves shared (ComfyUI's copy_nested_dicts)."""
    def walk(value: Any) -> Any:
        return {k: walk(v) for k, v in value.items()} if isinstance(value, dict) else value
    return walk(orig_model_options)


def deepcopy_model_options(model_options: dict) -> dict:
    return copy.deepcopy(model_options)
