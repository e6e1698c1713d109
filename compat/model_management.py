"""ComfyUI's `comfy.model_management` for custom node packs (loaded by `compat.install_compat`).

Answers from the runtime's model manager (`executor/memory.py`, which alone decides where
weights live) and interrupt flag: devices, interrupt checks, cache emptying, precision
(`unet_dtype`, `should_use_fp16`, `unet_manual_cast`), free memory, and `load_models_gpu`, which
has the manager place the models (with their patches) and leaves them there until it needs the
room, as ComfyUI does. `vram_state` reads the manager's state; nothing here keeps globals.
"""
from __future__ import annotations

import enum
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


# --- loading and memory, over the model manager ----------------------------------------------------------------

class VRAMState(enum.Enum):
    """ComfyUI's VRAM states; `vram_state` reports the manager's."""

    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


_STATES = {"cpu": VRAMState.DISABLED, "none": VRAMState.NO_VRAM, "low": VRAMState.LOW_VRAM,
           "normal": VRAMState.NORMAL_VRAM, "high": VRAMState.HIGH_VRAM, "gpu_only": VRAMState.HIGH_VRAM}


def _models() -> Any:
    models = BINDING.current_models()
    if models is None:
        raise RuntimeError("comfy.model_management: this Loom instance has no model manager")
    return models


def load_models_gpu(models: list[Any], memory_required: int = 0, force_patch_weights: bool = False,
                    minimum_memory_required: int | None = None, force_full_load: bool = False) -> None:
    """Put `models` (MODEL handles, CLIP/VAE values, modules) on the compute device with their patches, making
    room for `memory_required` bytes; they stay there until the manager needs the room (ComfyUI's semantics)."""
    with _models().use(list(models), working_memory=int(memory_required or 0)):
        pass


def load_model_gpu(model: Any) -> None:
    load_models_gpu([model])


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> int | tuple[int, int]:
    """Free bytes on the compute device (and the part torch's allocator holds free, with `torch_free_too`)."""
    device = _models().device
    free = int(device.free_memory())
    if not torch_free_too:
        return free
    reserved, allocated = device.torch_memory()
    return free, max(0, int(reserved) - int(allocated))


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> int | tuple[int, int]:
    total = int(_models().device.total_memory())
    return (total, total) if torch_total_too else total


def free_memory(memory_required: int, device: Any, keep_loaded: list[Any] | None = None) -> None:
    """Offload least recently used models until `memory_required` bytes are free (models in use stay)."""
    models = _models()
    if int(models.device.free_memory()) < memory_required:
        models.free(unload_models=True, free_memory=True)


def minimum_inference_memory() -> int:
    return int(_models().reserve_bytes()) + 1024 * 1024 * 1024  # ComfyUI keeps ~1 GiB for activations


def unet_dtype(device: Any = None, model_params: int = 0, supported_dtypes: Any = None,
               weight_dtype: Any = None) -> torch.dtype:
    """The dtype the manager loads UNets in."""
    return _models().dtype_for("unet")


def text_encoder_dtype(device: Any = None) -> torch.dtype:
    return _models().dtype_for("text_encoder")


def vae_dtype(device: Any = None, allowed_dtypes: Any = None) -> torch.dtype:
    return _models().dtype_for("vae")


def unet_manual_cast(weight_dtype: torch.dtype | None, inference_device: Any, supported_dtypes: Any = None
                     ) -> torch.dtype | None:
    """None when weights of `weight_dtype` compute as they are; else the dtype to compute in."""
    compute = unet_dtype()
    if weight_dtype is None or weight_dtype == compute or weight_dtype == torch.float32:
        return None
    return compute


def should_use_fp16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    return unet_dtype() == torch.float16


def should_use_bf16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    return unet_dtype() == torch.bfloat16


def supports_cast(device: Any, dtype: torch.dtype) -> bool:
    return True


def cast_to(weight: torch.Tensor, dtype: torch.dtype | None = None, device: Any = None,
            non_blocking: bool = False, copy: bool = False, stream: Any = None) -> torch.Tensor:
    return weight.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy)


def cast_to_device(tensor: torch.Tensor, device: Any, dtype: torch.dtype | None, copy: bool = False
                   ) -> torch.Tensor:
    """`tensor` on `device` in `dtype` (a copy when `copy`)."""
    return tensor.to(device=device, dtype=dtype, copy=copy)


def device_supports_non_blocking(device: Any) -> bool:
    return torch.device(device).type == "cuda"


def module_size(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def is_nvidia() -> bool:
    return get_torch_device().type == "cuda" and torch.version.cuda is not None


def is_intel_xpu() -> bool:
    return get_torch_device().type == "xpu"


def pytorch_attention_enabled() -> bool:
    return True


def get_autocast_device(dev: Any) -> str:
    return torch.device(dev).type


def loaded_models(only_currently_used: bool = False) -> list[dict[str, Any]]:
    """What the manager holds on the device (Loom's summaries, not ComfyUI LoadedModel objects)."""
    return list(_models().loaded_models())


# ComfyUI's name for the exception a device out of memory raises (packs catch it to retry in tiles).
OOM_EXCEPTION = torch.cuda.OutOfMemoryError
XFORMERS_IS_AVAILABLE = False


def is_device_cpu(device: Any) -> bool:
    return torch.device(device).type == "cpu"


def is_device_cuda(device: Any) -> bool:
    return torch.device(device).type == "cuda"


def get_torch_device_name(device: Any) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return str(device.type)


def unet_inital_load_device(parameters: int, dtype: torch.dtype) -> torch.device:
    """Where loaders put new weights: the offload device (the manager moves them when they are used)."""
    return unet_offload_device()


def __getattr__(name: str) -> Any:
    if name == "vram_state":
        return _STATES.get(_models().state, VRAMState.NORMAL_VRAM)
    raise AttributeError(f"module 'comfy.model_management' has no attribute {name!r} "
                         f"(not in Loom's compatibility layer)")
