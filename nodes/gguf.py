"""GGUF model loaders under the ComfyUI-GGUF pack's names: UnetLoaderGGUF, UnetLoaderGGUFAdvanced, CLIPLoaderGGUF,
DualCLIPLoaderGGUF and TripleCLIPLoaderGGUF.

Workflows made with the pack (category "bootleg") load unchanged: `unet_name` lists the .gguf files of
models/unet and models/diffusion_models (the pack's "unet_gguf" kind); each `clip_name` lists the ordinary text
encoder files and the .gguf ones of models/text_encoders and models/clip ("clip_gguf"), so GGUF and .safetensors
towers mix. The quantised weights stay packed in memory and are dequantised layer by layer to the precision the
memory manager chooses (diffusion/files/gguf_loading.py, gguf_text.py, gguf_quants.py); LoRA and other weight
patches are applied to each dequantised copy, never to the packed blocks. The text loaders build what CLIPLoader,
DualCLIPLoader and TripleCLIPLoader build for the same `type` (QuadrupleCLIPLoaderGGUF is left out: no family Loom
runs takes four text encoders).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.files.assemble import clip_socket, load_gguf_unet_module, load_text_encoder_module, model_socket
from diffusion.files.checkpoint import CheckpointError
from diffusion.patcher import ModelHandle
from diffusion.text.clip_multi import MultiTextEncoder, build_dual, build_sd3
from diffusion.text.t5 import T5Encoder
from diffusion.text.text_encoders import CLIP, TextEncoder
from nodes.loaders import (CLIP_TYPES, DUAL_CLIP_TYPES, SUPPORTED_CLIP_TYPES, SUPPORTED_DUAL_CLIP_TYPES, cached_one,
                           dtype_for, embedding_directories, node_context, text_encoder_directories,
                           weight_dtype_for)
from nodes.spec import Boolean, Combo, FileIndex, FileList, Node, Output

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


@dataclass(frozen=True)
class TextEncoderFiles(FileList):
    """The pack's `clip_name` list: the ordinary text-encoder files and the .gguf ones, sorted together."""

    def resolve(self, files: FileIndex | None) -> list[str]:
        if files is None:
            return []
        return sorted(files.list_files("text_encoders") + files.list_files("clip_gguf"))


CLIP_FILES = TextEncoderFiles("clip_gguf")


def _text_model(node: str, paths: dict[str, tuple[str, Path]], family: str, dtype: torch.dtype,
                dirs: list[Path]) -> TextEncoder | MultiTextEncoder:
    """The text model of the towers named by each input (.gguf or ordinary files), as the stock loaders build
    it for `family`; `CheckpointError` naming the node, the input and the reason."""
    towers: list[TextEncoder | T5Encoder] = []
    for input_name, (name, path) in paths.items():
        try:
            tower = load_text_encoder_module(path, dtype, dirs)
        except CheckpointError as err:
            raise CheckpointError(f"{node}: {input_name} {name!r}: {err}") from err
        if family != "sd3" and isinstance(tower, T5Encoder):
            raise CheckpointError(f"{node}: {input_name} {name!r} is a T5 text encoder, but type {family} takes "
                                  f"CLIP files only (T5 goes with type sd3)")
        towers.append(tower)
    try:
        if family == "sd3":
            return build_sd3(towers)
        return towers[0] if len(towers) == 1 else build_dual(towers[0], towers[1], family)
    except ValueError as err:
        raise CheckpointError(f"{node}: {' + '.join(n for n, _ in paths.values())}: {err}") from err


def load_gguf_clip(node: str, names: dict[str, str], family: str) -> CLIP:
    """CLIP of the files named by each `clip_name` input (models/text_encoders, models/clip) for `family`."""
    ctx = node_context()
    if ctx.folders is None:
        raise RuntimeError(f"{node} needs the folders of a Loom instance; the executor was given none")
    folders = ctx.folders
    paths = {k: (name, folders.full_path("text_encoders", name)) for k, name in names.items()}
    dtype = weight_dtype_for(ctx, "text_encoder")
    dirs = text_encoder_directories(folders)
    first, *rest = [path for _, path in paths.values()]
    key = f"cliploadergguf:{family}:{':'.join(map(str, rest))}:{dtype}"
    module = cached_one(ctx, first, lambda: _text_model(node, paths, family, dtype, dirs), key, "clip")
    return clip_socket(module, "+".join(names.values()), embedding_directories(folders))


def _check_type(node: str, type: str, supported: tuple[str, ...]) -> None:
    if type not in supported:
        raise ValueError(f"{node}: type {type!r} is not supported by Loom yet; supported: {', '.join(supported)}")


class CLIPLoaderGGUF(Node):
    """CLIPLoader for GGUF text encoders (T5-XXL Q4_0..Q8_0, K-quants) and ordinary files: the same `type`
    choices and the same CLIP (stable_diffusion: a CLIP-L or OpenCLIP-H file; sd3: a CLIP-L, CLIP-G or T5 file)."""

    DISPLAY_NAME = "CLIPLoader (GGUF)"
    CATEGORY = "bootleg"
    INPUTS = (Combo("clip_name", CLIP_FILES), Combo("type", CLIP_TYPES))
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip_name: str, type: str = "stable_diffusion") -> tuple[CLIP]:
        _check_type("CLIPLoaderGGUF", type, SUPPORTED_CLIP_TYPES)
        return (load_gguf_clip("CLIPLoaderGGUF", {"clip_name": clip_name}, type),)


class DualCLIPLoaderGGUF(Node):
    """DualCLIPLoader for GGUF and ordinary text encoders, in any mix (sdxl: CLIP-L + CLIP-G; sd3: two of CLIP-L,
    CLIP-G and T5)."""

    DISPLAY_NAME = "DualCLIPLoader (GGUF)"
    CATEGORY = "bootleg"
    INPUTS = (Combo("clip_name1", CLIP_FILES), Combo("clip_name2", CLIP_FILES), Combo("type", DUAL_CLIP_TYPES))
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip_name1: str, clip_name2: str, type: str = "sdxl") -> tuple[CLIP]:
        _check_type("DualCLIPLoaderGGUF", type, SUPPORTED_DUAL_CLIP_TYPES)
        names = {"clip_name1": clip_name1, "clip_name2": clip_name2}
        return (load_gguf_clip("DualCLIPLoaderGGUF", names, type),)


class TripleCLIPLoaderGGUF(Node):
    """TripleCLIPLoader for GGUF and ordinary text encoders: SD3's CLIP-L, CLIP-G and T5 in any order."""

    DISPLAY_NAME = "TripleCLIPLoader (GGUF)"
    CATEGORY = "bootleg"
    INPUTS = (Combo("clip_name1", CLIP_FILES), Combo("clip_name2", CLIP_FILES), Combo("clip_name3", CLIP_FILES))
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip_name1: str, clip_name2: str, clip_name3: str) -> tuple[CLIP]:
        names = {"clip_name1": clip_name1, "clip_name2": clip_name2, "clip_name3": clip_name3}
        return (load_gguf_clip("TripleCLIPLoaderGGUF", names, "sd3"),)


NODES: list[type] = [UnetLoaderGGUF, UnetLoaderGGUFAdvanced, CLIPLoaderGGUF, DualCLIPLoaderGGUF, TripleCLIPLoaderGGUF]
