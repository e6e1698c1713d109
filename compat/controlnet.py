"""ComfyUI's `comfy.controlnet` for custom node packs: `load_controlnet(path, model=None)`,
`load_controlnet_state_dict`, `load_t2i_adapter`, and the control classes (`ControlBase`, `ControlNet`,
`T2IAdapter`) as Loom's (`diffusion/adapters/controlnet.py`).

The control object is the CONTROL_NET socket value Loom's ControlNetApply nodes take: `copy()`,
`set_cond_hint(hint, strength, timestep_percent_range)`, `set_previous_controlnet(...)`; sampling places its
network through the model manager. Files are read in the manager's UNet precision through the running node's file
cache (a difference ControlNet given a `model` is built for that model and not shared).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffusion.files.checkpoint import read_state_dict
from diffusion.adapters.controlnet import ControlBase, ControlNet, T2IAdapter  # noqa: F401
from diffusion.adapters.controlnet import load_controlnet_state_dict as _load_sd
from diffusion.adapters.controlnet import load_t2i_adapter as _load_t2i
from nodes.context import current_or_none
from nodes.loaders import cached_one

BINDING: Any  # set by compat.install_compat before this module runs


def _dtype() -> torch.dtype:
    ctx = current_or_none()
    models = ctx.models if ctx is not None else BINDING.current_models()
    return models.dtype_for("unet") if models is not None else torch.float32


def load_controlnet_state_dict(state_dict: dict[str, torch.Tensor], model: Any = None,
                               model_options: dict | None = None) -> ControlBase:
    """The control object of ControlNet / T2I-Adapter weights already read."""
    return _load_sd(state_dict, _dtype(), "controlnet", base_model=model)


def load_controlnet(ckpt_path: str, model: Any = None, model_options: dict | None = None) -> ControlBase:
    """The control object of a ControlNet or T2I-Adapter file (`model`: the base of a difference ControlNet)."""
    path = Path(ckpt_path)
    dtype = _dtype()
    ctx = current_or_none()

    def load() -> ControlBase:
        return _load_sd(read_state_dict(path), dtype, path.name, base_model=model)

    if model is not None or ctx is None:
        return load()
    return cached_one(ctx, path, load, f"controlnet:{dtype}", "controlnet")


def load_t2i_adapter(t2i_data: dict[str, torch.Tensor], model_options: dict | None = None) -> T2IAdapter | None:
    """A T2I-Adapter control from its state dict, None when the weights are not one."""
    return _load_t2i(t2i_data, _dtype())
