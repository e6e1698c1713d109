"""ComfyUI's `comfy.patcher_extension` for custom node packs: the wrapper and callback registries kept in
`transformer_options` (`{"wrappers": {type: {key: [fn, ...]}}, "callbacks": {type: {key: [fn, ...]}}}`), the
`WrappersMP` / `CallbacksMP` names, and `WrapperExecutor` (Loom's, `diffusion/wrappers.py`), which calls a chain
of wrappers around a function.

A wrapper is `fn(executor, *args, **kwargs)`: it calls `executor(*args, **kwargs)` to run the next wrapper (or the
wrapped function) and may change the arguments or the result; `executor.class_obj` is the object whose method is
wrapped (the guider for OUTER_SAMPLE and PREDICT_NOISE, the sampler for SAMPLER_SAMPLE). Loom's
`comfy.samplers.CFGGuider` runs the OUTER_SAMPLE, SAMPLER_SAMPLE, PREDICT_NOISE and CALC_COND_BATCH wrappers found in
its model options (and in a MODEL's `wrappers` registry, where the MODEL object keeps one); the model side runs
the CALC_COND_BATCH, APPLY_MODEL and DIFFUSION_MODEL chains (around the batched model calls,
`DiffusionModel.apply_model` and the UNet/MMDiT forward).
"""
from __future__ import annotations

from typing import Callable

from diffusion.wrappers import WrapperExecutor  # noqa: F401 - ComfyUI's name, Loom's one implementation


class CallbacksMP:
    """The callback types of ComfyUI's ModelPatcher (the registry is `{type: {key: [fn, ...]}}`)."""

    ON_CLONE = "on_clone"
    ON_LOAD = "on_load_after"
    ON_DETACH = "on_detach_after"
    ON_CLEANUP = "on_cleanup"
    ON_PRE_RUN = "on_pre_run"
    ON_PREPARE_STATE = "on_prepare_state"
    ON_APPLY_HOOKS = "on_apply_hooks"
    ON_REGISTER_ALL_HOOK_PATCHES = "on_register_all_hook_patches"
    ON_INJECT_MODEL = "on_inject_model"
    ON_EJECT_MODEL = "on_eject_model"

    @classmethod
    def init_callbacks(cls) -> dict[str, dict[str, list[Callable]]]:
        return {}


class WrappersMP:
    """The wrapper types (the registry is `{type: {key: [fn, ...]}}`)."""

    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    SAMPLER_SAMPLE = "sampler_sample"
    PREDICT_NOISE = "predict_noise"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"

    @classmethod
    def init_wrappers(cls) -> dict[str, dict[str, list[Callable]]]:
        return {}


def _registry(options: dict, section: str, is_model_options: bool, create: bool) -> dict:
    """`options[section]` (inside `options["transformer_options"]` for model options)."""
    if is_model_options:
        options = options.setdefault("transformer_options", {}) if create else options.get("transformer_options", {})
    return options.setdefault(section, {}) if create else options.get(section, {})


def add_callback(call_type: str, callback: Callable, transformer_options: dict, is_model_options: bool = False) -> None:
    add_callback_with_key(call_type, None, callback, transformer_options, is_model_options)


def add_callback_with_key(call_type: str, key: str | None, callback: Callable, transformer_options: dict,
                          is_model_options: bool = False) -> None:
    """Append `callback` under `call_type` and `key` of the callbacks registry in `transformer_options`."""
    registry = _registry(transformer_options, "callbacks", is_model_options, create=True)
    registry.setdefault(call_type, {}).setdefault(key, []).append(callback)


def get_callbacks_with_key(call_type: str, key: str | None, transformer_options: dict,
                           is_model_options: bool = False) -> list[Callable]:
    registry = _registry(transformer_options, "callbacks", is_model_options, create=False)
    return list(registry.get(call_type, {}).get(key, []))


def get_all_callbacks(call_type: str, transformer_options: dict, is_model_options: bool = False) -> list[Callable]:
    """Every callback of `call_type`, all keys, in registration order of the keys."""
    registry = _registry(transformer_options, "callbacks", is_model_options, create=False)
    return [fn for fns in registry.get(call_type, {}).values() for fn in fns]


def add_wrapper(wrapper_type: str, wrapper: Callable, transformer_options: dict,
                is_model_options: bool = False) -> None:
    add_wrapper_with_key(wrapper_type, None, wrapper, transformer_options, is_model_options)


def add_wrapper_with_key(wrapper_type: str, key: str | None, wrapper: Callable, transformer_options: dict,
                         is_model_options: bool = False) -> None:
    """Append `wrapper` under `wrapper_type` and `key` of the wrappers registry in `transformer_options`."""
    registry = _registry(transformer_options, "wrappers", is_model_options, create=True)
    registry.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)


def get_wrappers_with_key(wrapper_type: str, key: str | None, transformer_options: dict,
                          is_model_options: bool = False) -> list[Callable]:
    registry = _registry(transformer_options, "wrappers", is_model_options, create=False)
    return list(registry.get(wrapper_type, {}).get(key, []))


def get_all_wrappers(wrapper_type: str, transformer_options: dict, is_model_options: bool = False) -> list[Callable]:
    """Every wrapper of `wrapper_type`, all keys; the first one listed is the outermost."""
    registry = _registry(transformer_options, "wrappers", is_model_options, create=False)
    return [fn for fns in registry.get(wrapper_type, {}).values() for fn in fns]


class PatcherInjection:
    """A pair of functions a ModelPatcher calls to inject into and eject from the model."""

    def __init__(self, inject: Callable, eject: Callable) -> None:
        self.inject = inject
        self.eject = eject


def copy_nested_dicts(input_dict: dict) -> dict:
    """A copy in which nested dicts are copied recursively and lists shallowly."""
    out = dict(input_dict)
    for key, value in input_dict.items():
        if isinstance(value, dict):
            out[key] = copy_nested_dicts(value)
        elif isinstance(value, list):
            out[key] = list(value)
    return out


def merge_nested_dicts(dict1: dict, dict2: dict, copy_dict1: bool = True) -> dict:
    """`dict1` with `dict2` merged in: dicts merged recursively, lists extended, other values replaced."""
    merged = copy_nested_dicts(dict1) if copy_dict1 else dict1
    for key, value in dict2.items():
        if isinstance(value, dict):
            merged[key] = merge_nested_dicts(value, merged.setdefault(key, {}))
        elif isinstance(value, list):
            merged.setdefault(key, []).extend(value)
        else:
            merged[key] = value
    return merged
