"""ComfyUI's `comfy.ldm.modules.diffusionmodules.openaimodel` for custom node packs: the LDM UNet and its blocks
(`UNetModel`, `TimestepEmbedSequential`, `ResBlock`, `Upsample`, `Downsample`) as Loom's classes
(`diffusion/networks/unet.py`, `diffusion/networks/unet_blocks.py`), `timestep_embedding` with ComfyUI's signature, and
`apply_control`.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.networks.unet import UNetModel  # noqa: F401
from diffusion.networks.unet_blocks import Downsample, ResBlock, TimestepEmbedSequential, Upsample  # noqa: F401
from diffusion.networks.unet_blocks import timestep_embedding as _timestep_embedding

BINDING: Any  # set by compat.install_compat before this module runs


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000, repeat_only: bool = False
                       ) -> torch.Tensor:
    """Sinusoidal timestep features [cos, sin] (ComfyUI's order); `repeat_only` repeats the timestep instead."""
    if repeat_only:
        return timesteps[:, None].float().repeat(1, dim)
    return _timestep_embedding(timesteps, dim, max_period)


def apply_control(h: torch.Tensor, control: dict | None, name: str) -> torch.Tensor:
    """Add (and pop) the last residual of `control[name]`, as ComfyUI's UNet does."""
    if control is not None and name in control and len(control[name]) > 0:
        ctrl = control[name].pop()
        if ctrl is not None:
            h = h + ctrl.to(h.dtype)
    return h
