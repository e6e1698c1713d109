"""Working-memory estimates are facts of each model (what the memory manager is handed with it)."""
from __future__ import annotations

import torch
from torch import nn

from diffusion.networks.diffusion_model import DiffusionModel


def tiny(dtype: torch.dtype, factor: float = 1.0) -> DiffusionModel:
    return DiffusionModel(nn.Linear(2, 2).to(dtype), memory_usage_factor=factor)


def test_unet_estimate_grows_with_pixels_batch_and_cfg_copies() -> None:
    model = tiny(torch.float16)
    small = model.working_memory((1, 4, 32, 32))
    assert model.working_memory((1, 4, 64, 64)) - small == 3 * (small - model.working_memory((1, 4, 0, 0)))
    assert model.working_memory((4, 4, 32, 32)) > 3 * (small - 256 * 1024 ** 2)
    assert model.working_memory((1, 4, 32, 32), cond_batch=1) < small


def test_estimate_follows_weights_dtype_and_family_factor() -> None:
    shape = (1, 4, 64, 64)
    half, full = tiny(torch.float16).working_memory(shape), tiny(torch.float32).working_memory(shape)
    base = 256 * 1024 ** 2
    assert full - base == 2 * (half - base)
    assert tiny(torch.float32).working_memory(shape, dtype=torch.float16) == half
    assert tiny(torch.float16, factor=1.6).working_memory(shape) == int(half * 1.6)
