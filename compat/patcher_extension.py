"""ComfyUI's `comfy.patcher_extension` for custom node packs: the wrapper and callback registries kept in
`transformer_options` (`add_wrapper_with_key`, `get_all_wrappers`, `add_callback_with_key`, ...), the type names
(`WrappersMP`, `CallbacksMP`), `WrapperExecutor` (Loom's, `diffusion/wrappers.py`), `PatcherInjection`, and the
nested-dict helpers.

Loom runs the "calc_cond_batch", "apply_model" and "diffusion_model" wrapper chains (around the batched model
calls, `DiffusionModel.apply_model` and the UNet/MMDiT forward); "outer_sample" and "sampler_sample" are kept in the
registry but Loom's sampler does not call them.
"""
from __future__ import annotations

from typing import Any, Callable

from diffusion.wrappers import WrapperExecutor  # noqa: F401

BINDING: Any  # set by compat.install_compat before this module runs


class CallbacksMP:
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
    def init_callbacks(cls) -> dict[str, dict[Any, list[Callable]]]:
        return {}


class WrappersMP:
    OUTER_SAMPLE = "outer_sample"
    SAMPLER_SAMPLE = "sampler_sample"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"

    @classmethod
    def init_wrappers(cls) -> dict[str, dict[Any, list[Callable]]]:
        return {}


class PatcherInjection:
    """A pair of functions a pack runs to change a model and to undo it."""

    def __init__(self, inject: Callable, eject: Callable) -> None:
        self.inject = inject
        self.eject = eject


def _options(transformer_options: dict, is_model_options: bool, create: bool) -> dict:
    if not is_model_options:
        return transformer_options
    if create:
        return transformer_options.setdefault("transformer_options", {})
    return transformer_options.get("transformer_options", {})


def _add(table: str, kind: str, key: Any, fn: Callable, transformer_options: dict, is_model_options: bool) -> None:
    options = _options(transformer_options, is_model_options, True)
    options.setdefault(table, {}).setdefault(kind, {}).setdefault(key, []).append(fn)


def _get(table: str, kind: str, transformer_options: dict, is_model_options: bool, key: Any = ...) -> list:
    entries = _options(transformer_options, is_model_options, False).get(table, {}).get(kind, {})
    if key is not ...:
        return list(entries.get(key, []))
    return [fn for fns in entries.values() for fn in fns]


def add_wrapper(wrapper_type: str, wrapper: Callable, transformer_options: dict, is_model_options: bool = False
                ) -> None:
    _add("wrappers", wrapper_type, None, wrapper, transformer_options, is_model_options)


def add_wrapper_with_key(wrapper_type: str, key: Any, wrapper: Callable, transformer_options: dict,
                         is_model_options: bool = False) -> None:
    _add("wrappers", wrapper_type, key, wrapper, transformer_options, is_model_options)


def get_wrappers_with_key(wrapper_type: str, key: Any, transformer_options: dict,
                          is_model_options: bool = False) -> list:
    return _get("wrappers", wrapper_type, transformer_options, is_model_options, key)


def get_all_wrappers(wrapper_type: str, transformer_options: dict, is_model_options: bool = False) -> list:
    return _get("wrappers", wrapper_type, transformer_options, is_model_options)


def add_callback(call_type: str, callback: Callable, transformer_options: dict, is_model_options: bool = False
                 ) -> None:
    _add("callbacks", call_type, None, callback, transformer_options, is_model_options)


def add_callback_with_key(call_type: str, key: Any, callback: Callable, transformer_options: dict,
                          is_model_options: bool = False) -> None:
    _add("callbacks", call_type, key, callback, transformer_options, is_model_options)


def get_callbacks_with_key(call_type: str, key: Any, transformer_options: dict, is_model_options: bool = False
                           ) -> list:
    return _get("callbacks", call_type, transformer_options, is_model_options, key)


def get_all_callbacks(call_type: str, transformer_options: dict, is_model_options: bool = False) -> list:
    return _get("callbacks", call_type, transformer_options, is_model_options)


def copy_nested_dicts(input_dict: dict) -> dict:
    """Dicts copied all the way down, lists copied one level, other values shared."""
    out = dict(input_dict)
    for key, value in input_dict.items():
        if isinstance(value, dict):
            out[key] = copy_nested_dicts(value)
        elif isinstance(value, list):
            out[key] = list(value)
    return out


def merge_nested_dicts(dict1: dict, dict2: dict, copy_dict1: bool = True) -> dict:
    """`dict2` merged into (a copy of) `dict1`: dicts recursively, lists extended, other values replaced."""
    merged = copy_nested_dicts(dict1) if copy_dict1 else dict1
    for key, value in dict2.items():
        if isinstance(value, dict):
            merged[key] = merge_nested_dicts(value, merged.get(key, {}))
        elif isinstance(value, list):
            merged.setdefault(key, []).extend(value)
        else:
            merged[key] = value
    return merged
