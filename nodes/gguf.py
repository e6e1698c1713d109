"""GGUF model loaders under the ComfyUI-GGUF pack's names: UnetLoaderGGUF and UnetLoaderGGUFAdvanced.

Workflows made with the pack (category "bootleg") load unchanged: `unet_name` lists the .gguf files of
models/unet and models/diffusion_models (the pack's "unet_gguf" kind). The quantised weights stay packed in memory
and are dequantised layer by layer to the precision the memory manager chooses for the UNet
(diffusion/files/gguf_loading.py, diffusion/files/gguf_quants.py); LoRA and other weight patches are applied to each
dequantised copy, never to the packed blocks.
"""
from __future__ import annotations

from typing import Any

from diffusion.files.assemble import load_gguf_unet_module, model_socket
from diffusion.patcher import ModelHandle
from nodes.loaders import cached_one, dtype_for, node_context
from nodes.spec import Boolean, Combo, FileList, Node, Output

DEQUANT_DTYPES = ("default", "target", "float32", "float16", "bfloat16")


def load_gguf_model(unet_name: str) -> ModelHandle:
    """MODEL of a GGUF UNet/MMDiT file in models/unet (or models/diffusion_models)."""
    ctx = node_context()
    if ctx.folders is None:
        raise RuntimeError("UnetLoaderGGUF needs the folders of a Loom instance; the executor was given none")
    path = ctx.folders.full_path("unet_gguf", unet_name)
    dtype = dtype_for(ctx, "unet")
    module: Any = cached_one(ctx, path, lambda: load_gguf_unet_module(path, dtype), f"gguf:{dtype}", "unet")
    return model_socket(module, unet_name)


class UnetLoaderGGUF(Node):
    """Loads a GGUF-quantised diffusion model (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, F16/F32 tensors)."""

    DISPLAY_NAME = "Unet Loader (GGUF)"
    CATEGORY = "bootleg"
    INPUTS = (Combo("unet_name", FileList("unet_gguf")),)
    OUTPUTS = (Output("MODEL"),)

    def execute(self, unet_name: str) -> tuple[ModelHandle]:
        return (load_gguf_model(unet_name),)


class UnetLoaderGGUFAdvanced(Node):
    """UnetLoaderGGUF with the pack's advanced inputs. Loom dequantises in float32 and casts to the compute
    precision, and computes patches in float32 where the weights are, so `dequant_dtype`, `patch_dtype` and
    `patch_on_device` are accepted and change nothing (float32 is at least as exact as each choice)."""

    DISPLAY_NAME = "Unet Loader (GGUF/Advanced)"
    CATEGORY = "bootleg"
    INPUTS = (Combo("unet_name", FileList("unet_gguf")), Combo("dequant_dtype", DEQUANT_DTYPES, "default"),
              Combo("patch_dtype", DEQUANT_DTYPES, "default"), Boolean("patch_on_device", False))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, unet_name: str, dequant_dtype: str = "default", patch_dtype: str = "default",
                patch_on_device: bool = False) -> tuple[ModelHandle]:
        return (load_gguf_model(unet_name),)


NODES: list[type] = [UnetLoaderGGUF, UnetLoaderGGUFAdvanced]
