"""Wrapper chains around a model call: ComfyUI's `WrapperExecutor` idea (comfy/patcher_extension.py), written for
Loom. A model's `transformer_options["wrappers"][wrapper_type][key]` lists functions `fn(executor, *args,
**kwargs)`; each calls `executor(*args, **kwargs)` to run the rest of the chain and, last, the original call.

Loom runs the "calc_cond_batch" chain around `diffusion.sampling.conditioning.calc_cond_batch` (args: the model call,
conds, x, sigma, model_options), the "apply_model" chain around `DiffusionModel.apply_model` (args: x, sigma,
c_concat, c_crossattn, control, transformer_options) and the "diffusion_model" chain around the UNet's and the
MMDiT's forward (args: x, timesteps, context, y, control, transformer_options). Nothing here touches a device.
"""
from __future__ import annotations

from typing import Any, Callable


def wrappers_of(wrapper_type: str, transformer_options: dict | None) -> list[Callable[..., Any]]:
    """Every registered wrapper of `wrapper_type`, in registration order of their keys."""
    table = (transformer_options or {}).get("wrappers", {}).get(wrapper_type, {})
    return [w for ws in table.values() for w in ws]


class WrapperExecutor:
    """One link of a chain: calling it runs the next wrapper, or `original` after the last one. `class_obj` is the
    object whose method is wrapped (ComfyUI's attribute), `wrappers` the remaining chain."""

    def __init__(self, original: Callable[..., Any], class_obj: Any, wrappers: list[Callable[..., Any]],
                 idx: int = 0) -> None:
        self.original = original
        self.class_obj = class_obj
        self.wrappers = list(wrappers)
        self.idx = idx

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """What a wrapper calls with the executor it was given: the next wrapper, or `original` after the last."""
        if self.is_last:
            raise RuntimeError("a wrapper called its executor after the wrapped function had already run")
        return WrapperExecutor(self.original, self.class_obj, self.wrappers, self.idx + 1).execute(*args, **kwargs)

    @property
    def is_last(self) -> bool:
        return self.idx >= len(self.wrappers)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Start the chain here (what the model code does; a wrapper calls the executor it was given instead):
        wrapper `idx` is handed this executor, as in ComfyUI."""
        if self.is_last:
            return self.original(*args, **kwargs)
        return self.wrappers[self.idx](self, *args, **kwargs)

    @classmethod
    def new_executor(cls, original: Callable[..., Any], wrappers: list[Callable[..., Any]],
                     idx: int = 0) -> "WrapperExecutor":
        return cls(original, None, wrappers, idx)

    @classmethod
    def new_class_executor(cls, original: Callable[..., Any], class_obj: Any, wrappers: list[Callable[..., Any]],
                           idx: int = 0) -> "WrapperExecutor":
        return cls(original, class_obj, wrappers, idx)


def run_wrapped(wrapper_type: str, original: Callable[..., Any], class_obj: Any, transformer_options: dict | None,
                *args: Any, **kwargs: Any) -> Any:
    """`original(*args, **kwargs)` through the chain of `wrapper_type` (directly when there is none)."""
    chain = wrappers_of(wrapper_type, transformer_options)
    if not chain:
        return original(*args, **kwargs)
    return WrapperExecutor(original, class_obj, chain).execute(*args, **kwargs)
