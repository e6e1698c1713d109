"""ComfyUI's `comfy.sampler_helpers` for custom node packs: turning CONDITIONING into cond dicts, finding the extra
models conditioning carries, and placing a MODEL for a sampling run and releasing it afterwards.

`prepare_sampling(model, noise_shape, conds)` has the running node's model manager load the MODEL (and the
ControlNet/GLIGEN models of the conds) for the run and keep them from eviction until `cleanup_models(conds,
models)`; it returns Loom's diffusion model (patched while placed) as ComfyUI's "real model". Outside a node (no
model manager) the model is used where it is. Where to load, and how much memory that takes, is the manager's.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from diffusion.sampling.conditioning import convert_cond as _convert_cond
from diffusion.patcher import ModelHandle
from diffusion.sampling.sample import prepare_mask as _prepare_mask
from nodes.context import current_or_none
from nodes.sampling import cond_models


class LoadedModels(list):
    """The models `prepare_sampling` placed (a list, as in ComfyUI), holding their placement until released."""

    def __init__(self, models: list[Any], stack: contextlib.ExitStack | None = None,
                 device: torch.device | None = None) -> None:
        super().__init__(models)
        self._stack = stack
        self.device = device if device is not None else torch.device("cpu")  # where the models compute

    def release(self) -> None:
        """End the placement (idempotent)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()


def convert_cond(cond: list) -> list[dict]:
    """CONDITIONING `[[tensor, options], ...]` as the cond dicts the sampler works on."""
    return _convert_cond(cond)


def _as_conditioning(cond_list: list) -> list:
    """Cond dicts (or CONDITIONING entries) as CONDITIONING entries, for `nodes.sampling.cond_models`."""
    return [[None, c] if isinstance(c, dict) else c for c in cond_list or []]


def get_models_from_cond(cond: list, model_type: str) -> list[Any]:
    """The objects stored under `model_type` ("control", "gligen", ...) of each cond dict."""
    found = []
    for c in cond or []:
        options = c if isinstance(c, dict) else (c[1] if len(c) > 1 else {})
        if model_type in options:
            found.append(options[model_type])
    return found


def get_additional_models(conds: dict[str, list], dtype: torch.dtype | None = None) -> tuple[list[ModelHandle], int]:
    """(the model handles the conds need placed: ControlNets with their chains, GLIGEN; extra inference memory).
    Loom's manager estimates those models' working memory itself, so the second value is 0."""
    models = cond_models(*[_as_conditioning(v) for v in conds.values()])
    for value in conds.values():
        for extra in get_models_from_cond(value, "additional_models"):
            models.extend(m for m in extra if all(m is not h for h in models))
    return models, 0


def _handle_of(model: Any) -> Any:
    return model if isinstance(model, ModelHandle) else getattr(model, "handle", model)


def _diffusion_model(model: Any) -> Any:
    return getattr(_handle_of(model), "model", model)


def prepare_sampling(model: Any, noise_shape: tuple[int, ...], conds: dict[str, list],
                     model_options: dict | None = None,
                     force_full_load: bool = False) -> tuple[Any, dict, LoadedModels]:
    """Place `model` and the conds' models for a sampling run; returns (diffusion model, conds, loaded models)."""
    handle = _handle_of(model)
    extra, _ = get_additional_models(conds)
    module = _diffusion_model(model)
    ctx = current_or_none()
    if ctx is None or ctx.models is None:
        return module, conds, LoadedModels([handle, *extra])
    working = module.working_memory(tuple(noise_shape))
    stack = contextlib.ExitStack()
    device = stack.enter_context(ctx.models.use([handle, *extra], working_memory=working))
    return module, conds, LoadedModels([handle, *extra], stack, torch.device(device) if device is not None else None)


def prepare_mask(noise_mask: torch.Tensor, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    """A noise mask resized and tiled to the latent `shape` on `device`."""
    return _prepare_mask(noise_mask, torch.Size(shape), torch.device(device))


def cleanup_additional_models(models: Any) -> None:
    """Call `cleanup()` on the objects that have one (ControlNets keep per-run state)."""
    for m in models or []:
        if hasattr(m, "cleanup"):
            m.cleanup()


def cleanup_models(conds: dict[str, list], models: Any) -> None:
    """Release what `prepare_sampling` placed, and let the conds' ControlNets drop their per-run state."""
    if isinstance(models, LoadedModels):
        models.release()
    controls = [c for value in conds.values() for c in get_models_from_cond(value, "control")]
    cleanup_additional_models(dict.fromkeys(controls))


def estimate_memory(model: Any, noise_shape: tuple[int, ...], conds: dict | None = None) -> tuple[int, int]:
    """(working memory with cond and uncond batched, with one) of a UNet call on `noise_shape`."""
    module = _diffusion_model(model)
    return module.working_memory(tuple(noise_shape), 2), module.working_memory(tuple(noise_shape), 1)
