"""ComfyUI's `comfy.model_management` for custom node packs (loaded by `compat.install_compat`).

Answers from the runtime's model manager (`executor/memory.py`, which alone decides where
weights live) and interrupt flag: devices, interrupt checks, cache emptying. ComfyUI's
`load_models_gpu` and VRAM-state globals are not provided: a pack that places its own models
should use `nodes.context.current().models.use(...)`.
"""
from __future__ import annotations

from typing import Any

import torch

from nodes.context import Interrupted

BINDING: Any  # set by compat.install_compat before this module runs

# ComfyUI's name for the exception an interrupted node raises.
InterruptProcessingException = Interrupted


def _device(attribute: str) -> torch.device:
    models = BINDING.current_models()
    device = getattr(models, attribute, None) if models is not None else None
    return torch.device(device) if device is not None else torch.device("cpu")


def get_torch_device() -> torch.device:
    """The device models compute on."""
    return _device("compute_device")


def intermediate_device() -> torch.device:
    """Where nodes keep tensors between nodes (CPU unless the policy says otherwise)."""
    return _device("intermediate_device")


def unet_offload_device() -> torch.device:
    return _device("offload_device")


text_encoder_offload_device = vae_offload_device = unet_offload_device
text_encoder_device = vae_device = get_torch_device


def throw_exception_if_processing_interrupted() -> None:
    """Raise `InterruptProcessingException` when the user interrupted the prompt."""
    BINDING.current_interrupt().check()


def interrupt_current_processing(value: bool = True) -> None:
    """Request (or, with False, withdraw) an interrupt of the running prompt."""
    flag = BINDING.current_interrupt()
    if value:
        flag.set()
    else:
        flag.clear()


def processing_interrupted() -> bool:
    return BINDING.current_interrupt().is_set()


def soft_empty_cache(force: bool = False) -> None:
    """Return cached device memory to the driver (models stay where they are)."""
    models = BINDING.current_models()
    if models is not None:
        models.free(unload_models=False, free_memory=True)
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def unload_all_models() -> None:
    models = BINDING.current_models()
    if models is not None:
        models.unload_all()


def cpu_mode() -> bool:
    return get_torch_device().type == "cpu"


def is_device_mps(device: Any) -> bool:
    return torch.device(device).type == "mps"


def xformers_enabled() -> bool:
    return False
