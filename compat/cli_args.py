"""ComfyUI's `comfy.cli_args` for custom node packs: `args`, a read-only view of Loom's Config under ComfyUI's
flag names (a flag Loom has no such setting for reads as ComfyUI's default), and `LatentPreviewMethod`.

Assigning to `args.X` (some packs do) changes only what this view answers, never Loom's Config.
"""
from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config import Config

BINDING: Any  # set by compat.install_compat before this module runs
log = logging.getLogger(__name__)


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


# ComfyUI's defaults for the flags Loom has no setting of the same meaning for.
COMFY_DEFAULTS: dict[str, Any] = {
    "tls_keyfile": None, "tls_certfile": None, "cuda_device": None, "cuda_malloc": False, "disable_cuda_malloc": False,
    "force_fp32": False, "force_fp16": False, "fp32_unet": False, "fp64_unet": False, "bf16_unet": False,
    "fp16_unet": False, "fp8_e4m3fn_unet": False, "fp8_e5m2_unet": False, "fp16_vae": False, "fp32_vae": False,
    "bf16_vae": False, "cpu_vae": False, "fp8_e4m3fn_text_enc": False, "fp8_e5m2_text_enc": False,
    "fp16_text_enc": False, "fp32_text_enc": False, "force_channels_last": False, "directml": None,
    "disable_ipex_optimize": False, "use_split_cross_attention": False, "use_quad_cross_attention": False,
    "use_pytorch_cross_attention": True, "use_sage_attention": False, "use_flash_attention": False,
    "disable_xformers": True, "force_upcast_attention": False, "dont_upcast_attention": False,
    "disable_smart_memory": False, "deterministic": False, "fast": set(), "dont_print_server": False,
    "quick_test_for_ci": False, "windows_standalone_build": False, "disable_metadata": False,
    "disable_all_custom_nodes": False, "multi_user": False, "verbose": "INFO", "log_stdout": False,
    "front_end_version": "comfyanonymous/ComfyUI@latest", "front_end_root": None, "user_directory": None,
    "enable_compress_response_body": False, "comfy_api_base": "https://api.comfy.org", "database_url": None,
    "disable_api_nodes": True, "whitelist_custom_nodes": [], "mmap_torch_files": False, "disable_mmap": False,
    "reserve_vram": None, "async_offload": False, "default_hashing_function": "sha256", "cache_classic": False,
    "cache_lru": 0, "cache_ram": 0, "cache_none": False, "preview_size": 512, "oneapi_device_selector": None,
    "supports_fp8_compute": False, "max_upload_size": 100, "auto_launch": False, "disable_auto_launch": True,
    "enable_cors_header": None, "extra_model_paths_config": None, "output_directory": None,
    "temp_directory": None, "input_directory": None, "base_directory": None, "listen": "127.0.0.1", "port": 8188,
    "gpu_only": False, "highvram": False, "normalvram": False, "lowvram": False, "novram": False, "cpu": False,
    "preview_method": LatentPreviewMethod.NoPreviews,
}
# ComfyUI's name -> Loom's Config field, where the two mean the same.
FROM_CONFIG: dict[str, str] = {
    "listen": "listen", "port": "port", "enable_cors_header": "enable_cors_header",
    "max_upload_size": "max_upload_size", "auto_launch": "auto_launch", "dont_print_server": "dont_print_server",
    "cpu": "cpu", "gpu_only": "gpu_only", "highvram": "highvram", "normalvram": "normalvram", "lowvram": "lowvram",
    "novram": "novram", "reserve_vram": "reserve_vram", "cache_lru": "cache_lru", "cache_none": "cache_none",
    "cache_classic": "cache_classic", "base_directory": "base_directory", "output_directory": "output_directory",
    "input_directory": "input_directory", "temp_directory": "temp_directory", "user_directory": "user_directory",
    "disable_all_custom_nodes": "disable_all_custom_nodes",
}

# ComfyUI's per-component weight flags -> (Loom's Config field, its value when the flag was given)
WEIGHT_FLAGS: dict[str, tuple[str, str]] = {
    f"{dtype}_{part}": (f"{field}_weight_dtype", dtype)
    for part, field in (("unet", "unet"), ("vae", "vae"), ("text_enc", "text_enc"))
    for dtype in ("fp16", "bf16", "fp32", "fp8_e4m3fn", "fp8_e5m2")
    if not (dtype.startswith("fp8") and part == "vae")
}


class ArgsView:
    """`comfy.cli_args.args`: ComfyUI's flags read from Loom's Config."""

    def __init__(self, config: Config) -> None:
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_local", {})

    def __getattr__(self, name: str) -> Any:
        local = object.__getattribute__(self, "_local")
        if name in local:
            return local[name]
        config = object.__getattribute__(self, "_config")
        if name == "preview_method":
            try:
                return LatentPreviewMethod(config.preview_method)
            except ValueError:
                return LatentPreviewMethod.Auto
        if name == "cache_ram":
            return config.cache_ram or 0
        if name in WEIGHT_FLAGS:
            field, dtype = WEIGHT_FLAGS[name]
            return getattr(config, field) == dtype
        if name in FROM_CONFIG:
            value = getattr(config, FROM_CONFIG[name])  # the field of that name (FROM_CONFIG lists Config fields)
            return str(value) if name.endswith("_directory") and value is not None else value
        if name in COMFY_DEFAULTS:
            return COMFY_DEFAULTS[name]
        raise AttributeError(f"comfy.cli_args.args has no flag {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        log.debug("a custom node set comfy.cli_args.args.%s; Loom's own settings are unchanged", name)
        object.__getattribute__(self, "_local")[name] = value


args = ArgsView(BINDING.config)
