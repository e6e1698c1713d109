"""Compute-dtype casting of a loaded module: its layers run in another precision than its weights are stored in.

This module owns `ComputeCast`, the mechanics behind a handle's `model_compute_dtype` option (the
ModelComputeDtype node; ComfyUI's `set_model_compute_dtype`, which turns on its per-layer "manual cast"). Every
leaf layer that holds floating weights of another dtype (Linear, Conv, GroupNorm, LayerNorm, Embedding, ...; see
`memory_load.STREAMABLE`) gets a forward pre-hook that swaps in copies of its own weights cast to the compute dtype
and casts its floating inputs, and a forward hook that puts the stored weights back right after the call; the
stored weights are never changed. The model manager (`executor/memory.py`) decides when a module is cast and
attaches the hooks after placing it, so they run after the streaming hooks bring a layer's weights in and undo
before those drop them.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from executor.memory_load import STREAMABLE, _get_tensor, _own_tensors, _set_tensor


def _cast_value(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    return value


class ComputeCast:
    """Hooks that make `module`'s leaf layers compute in `dtype`; `remove()` takes them off."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.hooks: list[RemovableHandle] = []
        self.saved: dict[int, list[tuple[dict[str, Any], str, Tensor]]] = {}
        for sub in module.modules():
            if not isinstance(sub, STREAMABLE):
                continue
            own = [(c, n) for c, n in _own_tensors(sub) if _get_tensor(c, n).is_floating_point()]
            if any(_get_tensor(c, n).dtype != dtype for c, n in own):
                self.hooks.append(sub.register_forward_pre_hook(self._cast_in(), with_kwargs=True))
                self.hooks.append(sub.register_forward_hook(self._cast_out(), prepend=True, always_call=True))

    def _cast_in(self) -> Callable[..., Any]:
        def cast_in(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            saved = []
            with torch.no_grad():
                for container, name in _own_tensors(module):
                    stored = _get_tensor(container, name)
                    if stored.is_floating_point() and stored.dtype != self.dtype:
                        _set_tensor(container, name, stored.to(self.dtype))
                        saved.append((container, name, stored))
            self.saved[id(module)] = saved
            return (tuple(_cast_value(a, self.dtype) for a in args),
                    {k: _cast_value(v, self.dtype) for k, v in kwargs.items()})
        return cast_in

    def _cast_out(self) -> Callable[..., None]:
        def cast_out(module: nn.Module, args: Any, output: Any) -> None:
            for container, name, stored in self.saved.pop(id(module), []):
                _set_tensor(container, name, stored)
        return cast_out

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        self.saved.clear()
