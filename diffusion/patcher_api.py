"""ComfyUI's `ModelPatcher` method surface on Loom's `ModelHandle` (a base class of it), so the MODEL value that
flows through sockets is itself what ComfyUI packs call: `model.clone()`, `model.model_options`,
`set_model_attn1_patch(...)`, `add_patches(...)`, `get_model_object(...)`, the wrapper and callback registries.

Every method only edits the handle's records (options, weight patches, object patches, registries); where the
weights live stays the model manager's business (`executor/memory.py`). `load_device` / `offload_device` are read
through `DEVICE_RESOLVER`, which the compatibility layer sets to ask the running node's model manager; without
it both are the device the weights are on. Likewise `placed(objects, working_memory)` is how the CLIP and VAE
socket values place their weights when foreign code calls their ComfyUI methods directly: through `PLACER`, set by
the compatibility layer to the running node's `models.use`; without it, nothing is moved (Loom's own nodes place
explicitly before calling). Which `transformer_options["patches"]` names the networks honour is
documented in `diffusion/networks/unet.py`, `diffusion/networks/unet_blocks.py` and `diffusion/networks/mmdit.py`.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch

# Names of `model_options` list hooks: `add_wrapper(name, fn)` with one of these appends to the option (Loom's
# nodes use it so); any other name is a ComfyUI wrapper type ("outer_sample", "apply_model", ...) for the registry.
OPTION_HOOKS = ("sampler_cfg_function", "sampler_post_cfg_function", "sampler_pre_cfg_function",
                "model_function_wrapper", "sampler_calc_cond_batch_function", "denoise_mask_function")
# (handle) -> (load_device, offload_device); set by compat.install_compat.
DEVICE_RESOLVER: list[Callable[[Any], tuple[torch.device, torch.device]]] = []
# (objects, working_memory) -> context manager placing them; set by compat.install_compat.
PLACER: list[Callable[[Sequence[Any], int], ContextManager[Any]]] = []


@contextlib.contextmanager
def placed(objects: Sequence[Any], working_memory: int = 0) -> Iterator[None]:
    """Have the model manager place `objects` (handles, or values with `.handle`) for the block, when the
    compatibility layer installed one (re-entrant: a block already placing them is not disturbed)."""
    if not PLACER:
        yield
        return
    with PLACER[-1](objects, int(working_memory)):
        yield


def _get_attr(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


class ModelPatcherAPI:
    """The ComfyUI-named part of a model handle. Relies on `model`, `options`, `patches`, `object_patches` and
    `_add_weight_patches` of `ModelHandle`."""

    model: Any
    options: dict[str, Any]
    object_patches: dict[str, Any]

    # --- registries (ComfyUI's wrappers, callbacks, attachments, additional models) ----------------------------
    def _registry(self, name: str) -> dict[str, Any]:
        value = self.__dict__.get(name)
        if value is None:
            value = {}
            self.__dict__[name] = value
        return value

    @property
    def wrappers(self) -> dict[str, dict[Any, list[Callable]]]:
        """`transformer_options["wrappers"]`: wrapper type -> key -> functions; kept in the options (as ComfyUI
        puts them there for sampling) so the networks find them (`diffusion/wrappers.py`)."""
        return self.options.get("transformer_options", {}).get("wrappers", {})

    def _writable_wrappers(self) -> dict[str, dict[Any, list[Callable]]]:
        return self.options.setdefault("transformer_options", {}).setdefault("wrappers", {})

    @property
    def callbacks(self) -> dict[str, dict[Any, list[Callable]]]:
        return self._registry("_callbacks")

    @property
    def attachments(self) -> dict[str, Any]:
        return self._registry("_attachments")

    @property
    def additional_models(self) -> dict[str, list[Any]]:
        return self._registry("_additional_models")

    def copy_registries_to(self, other: "ModelPatcherAPI") -> None:
        """Give a clone its own copies of the registries (ComfyUI's clone semantics; the wrappers are part of the
        options, which the clone copies)."""
        other.__dict__["_callbacks"] = {t: {k: list(v) for k, v in d.items()} for t, d in self.callbacks.items()}
        other.__dict__["_attachments"] = {
            k: (a.on_model_patcher_clone() if hasattr(a, "on_model_patcher_clone") else a)
            for k, a in self.attachments.items()}
        other.__dict__["_additional_models"] = {k: [m.clone() for m in v] for k, v in self.additional_models.items()}
        other.parent = self

    def add_wrapper(self, wrapper_type: str, wrapper: Callable) -> None:
        """ComfyUI: register `wrapper` under `wrapper_type`. For Loom's option hooks (`OPTION_HOOKS`) the function
        is appended to that `model_options` list instead (`model_function_wrapper` is set)."""
        if wrapper_type in OPTION_HOOKS:
            if wrapper_type == "model_function_wrapper":
                self.options[wrapper_type] = wrapper
                return
            current = self.options.get(wrapper_type)
            self.options[wrapper_type] = (list(current) if isinstance(current, list) else []) + [wrapper]
            return
        self.add_wrapper_with_key(wrapper_type, None, wrapper)

    def add_wrapper_with_key(self, wrapper_type: str, key: Any, wrapper: Callable) -> None:
        self._writable_wrappers().setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def remove_wrappers_with_key(self, wrapper_type: str, key: Any) -> None:
        self.wrappers.get(wrapper_type, {}).pop(key, None)

    def get_wrappers(self, wrapper_type: str, key: Any) -> list[Callable]:
        return self.wrappers.get(wrapper_type, {}).get(key, [])

    def get_all_wrappers(self, wrapper_type: str) -> list[Callable]:
        return [w for ws in self.wrappers.get(wrapper_type, {}).values() for w in ws]

    def add_callback(self, call_type: str, callback: Callable) -> None:
        self.add_callback_with_key(call_type, None, callback)

    def add_callback_with_key(self, call_type: str, key: Any, callback: Callable) -> None:
        self.callbacks.setdefault(call_type, {}).setdefault(key, []).append(callback)

    def remove_callbacks_with_key(self, call_type: str, key: Any) -> None:
        self.callbacks.get(call_type, {}).pop(key, None)

    def get_callbacks(self, call_type: str, key: Any) -> list[Callable]:
        return self.callbacks.get(call_type, {}).get(key, [])

    def get_all_callbacks(self, call_type: str) -> list[Callable]:
        return [c for cs in self.callbacks.get(call_type, {}).values() for c in cs]

    def set_attachments(self, key: str, attachment: Any) -> None:
        self.attachments[key] = attachment

    def get_attachment(self, key: str) -> Any:
        return self.attachments.get(key)

    def remove_attachments(self, key: str) -> None:
        self.attachments.pop(key, None)

    def set_additional_models(self, key: str, models: list[Any]) -> None:
        self.additional_models[key] = list(models)

    def remove_additional_models(self, key: str) -> None:
        self.additional_models.pop(key, None)

    def get_additional_models_with_key(self, key: str) -> list[Any]:
        return self.additional_models.get(key, [])

    def get_additional_models(self) -> list[Any]:
        return [m for ms in self.additional_models.values() for m in ms]

    # --- model_options --------------------------------------------------------------------------------------------
    @property
    def model_options(self) -> dict[str, Any]:
        """ComfyUI's name for the handle's options (the same dict)."""
        return self.options

    @model_options.setter
    def model_options(self, value: dict[str, Any]) -> None:
        self.options = value

    def _cfg1_flag(self, disable_cfg1_optimization: bool) -> None:
        if disable_cfg1_optimization:
            self.options["disable_cfg1_optimization"] = True

    def set_model_sampler_cfg_function(self, sampler_cfg_function: Callable, disable_cfg1_optimization: bool = False
                                       ) -> None:
        """Replace the CFG mix; a 3-argument function gets (cond, uncond, cond_scale), ComfyUI's old form."""
        fn = sampler_cfg_function
        if len(inspect.signature(fn).parameters) == 3:
            fn = _OldCFG(sampler_cfg_function)
        self.options["sampler_cfg_function"] = fn
        self._cfg1_flag(disable_cfg1_optimization)

    def set_model_sampler_post_cfg_function(self, post_cfg_function: Callable,
                                            disable_cfg1_optimization: bool = False) -> None:
        self.options["sampler_post_cfg_function"] = list(self.options.get("sampler_post_cfg_function", [])) + [
            post_cfg_function]
        self._cfg1_flag(disable_cfg1_optimization)

    def set_model_sampler_pre_cfg_function(self, pre_cfg_function: Callable,
                                           disable_cfg1_optimization: bool = False) -> None:
        self.options["sampler_pre_cfg_function"] = list(self.options.get("sampler_pre_cfg_function", [])) + [
            pre_cfg_function]
        self._cfg1_flag(disable_cfg1_optimization)

    def set_model_sampler_calc_cond_batch_function(self, fn: Callable) -> None:
        self.options["sampler_calc_cond_batch_function"] = fn

    def set_model_unet_function_wrapper(self, unet_wrapper_function: Callable) -> None:
        """`fn(apply_model, {"input", "timestep", "c", "cond_or_uncond"})` around every model call."""
        self.options["model_function_wrapper"] = unet_wrapper_function

    def set_model_denoise_mask_function(self, denoise_mask_function: Callable) -> None:
        self.options["denoise_mask_function"] = denoise_mask_function

    def set_model_patch(self, patch: Callable, name: str) -> None:
        """Append `patch` to `transformer_options["patches"][name]`."""
        to = self.options.setdefault("transformer_options", {})
        patches = to.setdefault("patches", {})
        patches[name] = list(patches.get(name, [])) + [patch]

    def set_model_patch_replace(self, patch: Callable, name: str, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        """`transformer_options["patches_replace"][name][(block_name, number[, transformer_index])] = patch`."""
        to = self.options.setdefault("transformer_options", {})
        table = to.setdefault("patches_replace", {}).setdefault(name, {})
        key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
        table[key] = patch

    def set_model_attn1_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "attn2_patch")

    def set_model_attn1_replace(self, patch: Callable, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch: Callable, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)

    def set_model_attn1_output_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn2_output_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "attn2_output_patch")

    def set_model_input_block_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "input_block_patch")

    def set_model_input_block_patch_after_skip(self, patch: Callable) -> None:
        self.set_model_patch(patch, "input_block_patch_after_skip")

    def set_model_output_block_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "output_block_patch")

    def set_model_emb_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "emb_patch")

    def model_patches_to(self, device: Any) -> None:
        """Move the patch objects that have a `.to` (ComfyUI packs' attention patches holding tensors, a
        `model_function_wrapper`) to `device`, in place as ComfyUI does; the model manager calls this when it puts
        the model on the compute device (the patch functions are the pack's, their tensors are not weights)."""
        to = self.options.get("transformer_options", {})
        for patch_list in to.get("patches", {}).values():
            for i, patch in enumerate(patch_list):
                if hasattr(patch, "to"):
                    patch_list[i] = patch.to(device)
        for table in to.get("patches_replace", {}).values():
            for key, patch in table.items():
                if hasattr(patch, "to"):
                    table[key] = patch.to(device)
        wrapper = self.options.get("model_function_wrapper")
        if hasattr(wrapper, "to"):
            self.options["model_function_wrapper"] = wrapper.to(device)

    # --- objects, weights and sizes -------------------------------------------------------------------------------
    def get_model_object(self, name: str) -> Any:
        """The object at dotted `name` as this handle sees it: its object patch, else the module's attribute."""
        if name in self.object_patches:
            return self.object_patches[name]
        return _get_attr(self.model, name)

    def model_state_dict(self, filter_prefix: str | None = None) -> dict[str, torch.Tensor]:
        """The base module's state dict (unpatched weights), optionally only keys starting with `filter_prefix`."""
        sd = self.model.state_dict()
        if filter_prefix is None:
            return sd
        return {k: v for k, v in sd.items() if k.startswith(filter_prefix)}

    def get_key_patches(self, filter_prefix: str | None = None) -> dict[str, list[Any]]:
        """ComfyUI's form: key -> `[(base weight, convert_fn), *recorded patches]`; `add_patches` on another handle
        takes these lists (the model-merge idiom)."""
        from diffusion.adapters.patch_data import as_comfy_tuple

        out: dict[str, list[Any]] = {}
        for key, weight in self.model_state_dict(filter_prefix).items():
            recorded = self.patches.get(key, [])  # type: ignore[attr-defined]
            out[key] = [(weight, None)] + [as_comfy_tuple(p) for p in recorded]
        return out

    def model_dtype(self) -> torch.dtype:
        """The dtype the network's weights are stored in."""
        net = getattr(self.model, "diffusion_model", self.model)
        for p in net.parameters():
            return p.dtype
        return torch.float32

    def model_size(self) -> int:
        return self.nbytes()  # type: ignore[attr-defined]

    @property
    def size(self) -> int:
        return self.nbytes()  # type: ignore[attr-defined]

    def loaded_size(self) -> int:
        return self.nbytes() if self.current_loaded_device().type != "cpu" else 0  # type: ignore[attr-defined]

    def current_loaded_device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def _devices(self) -> tuple[torch.device, torch.device]:
        if DEVICE_RESOLVER:
            return DEVICE_RESOLVER[-1](self)
        here = self.current_loaded_device()
        return here, here

    @property
    def load_device(self) -> torch.device:
        """Where the model computes (the model manager's compute device)."""
        return self._devices()[0]

    @property
    def offload_device(self) -> torch.device:
        """Where the model's weights are kept when not in use (the manager's offload device)."""
        return self._devices()[1]

    def is_clone(self, other: Any) -> bool:
        return getattr(other, "model", None) is self.model

    def clone_has_same_weights(self, other: Any) -> bool:
        return self.is_clone(other) and self.weights_key() == other.weights_key()  # type: ignore[attr-defined]

    def get_nested_additional_models(self) -> list[Any]:
        seen: list[Any] = []
        todo = self.get_additional_models()
        while todo:
            model = todo.pop(0)
            if any(model is s for s in seen):
                continue
            seen.append(model)
            todo += model.get_additional_models()
        return seen


class _OldCFG:
    """A ComfyUI 3-argument `sampler_cfg_function(cond, uncond, cond_scale)` in the args-dict form."""

    def __init__(self, fn: Callable[[Any, Any, Any], Any]) -> None:
        self.fn = fn

    def __call__(self, args: dict[str, Any]) -> Any:
        return self.fn(args["cond"], args["uncond"], args["cond_scale"])
