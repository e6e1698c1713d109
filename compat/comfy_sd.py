"""ComfyUI's `comfy.sd` for custom node packs: the CLIP and VAE classes, and the loaders packs call directly
(`load_checkpoint_guess_config`, `load_lora_for_models`, `load_clip`, `load_diffusion_model`).

Loom's CLIP and VAE socket values (`diffusion.text.text_encoders.CLIP`, `diffusion.networks.vae.VAE`) carry ComfyUI's methods
themselves (tokenize, encode_from_tokens, encode_from_tokens_scheduled, clone, add_patches, decode, encode,
decode_tiled, encode_tiled, spacial_compression_*), so `comfy.sd.CLIP` and `comfy.sd.VAE` are those classes for
`isinstance`; `VAE(sd=state_dict)` builds one from a state dict as ComfyUI's does. The loaders read files through
the running node's model-manager file cache and precision policy, like Loom's loader nodes, so the same file
loaded by a pack and by a Loom node shares its modules and gives the same images.
"""
from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

import torch

from diffusion.files.assemble import (clip_socket, load_checkpoint_modules, load_dual_text_encoder_module,
                                load_single_sd3_text_encoder_module, load_text_encoder_module, load_unet_module,
                                model_socket, vae_socket)
from diffusion.families import vae_config_from_state_dict
from diffusion.adapters.lora import apply_lora
from diffusion.adapters.patch_data import PatchSource
from diffusion.text.text_encoders import CLIP as _LoomCLIP
from diffusion.networks.vae import VAE as _LoomVAE
from diffusion.networks.vae import build_vae
from nodes.context import NodeContext, current_or_none
from nodes.loaders import cached_one, cached_parts, dtype_for, embedding_directories, precision

BINDING: Any  # set by compat.install_compat before this module runs


class _InstanceOf(type):
    """isinstance/issubclass answer for the Loom class the facade stands for."""

    loom: type

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls.loom)


class CLIP(metaclass=_InstanceOf):
    """ComfyUI's `comfy.sd.CLIP`: every Loom CLIP value is one. Packs get CLIPs from loaders (`load_clip`,
    `load_checkpoint_guess_config`); building one from a ComfyUI text-encoder target class is not supported."""

    loom = _LoomCLIP

    def __new__(cls, target: Any = None, embedding_directory: Any = None, no_init: bool = False, **_: Any) -> Any:
        raise TypeError("comfy.sd.CLIP(target=...) builds ComfyUI's own text-encoder classes, which Loom does not "
                        "have; load a CLIP with comfy.sd.load_clip(paths) or load_checkpoint_guess_config")


class VAE(metaclass=_InstanceOf):
    """ComfyUI's `comfy.sd.VAE`: every Loom VAE value is one; `VAE(sd=state_dict)` builds one (SD-style
    AutoencoderKL weights, with or without `first_stage_model.`) in the manager's VAE precision."""

    loom = _LoomVAE

    def __new__(cls, sd: dict[str, torch.Tensor] | None = None, device: Any = None, config: Any = None,
                dtype: torch.dtype | None = None, **_: Any) -> Any:
        if sd is None:
            raise TypeError("comfy.sd.VAE needs sd= (the VAE's state dict)")
        prefix = "first_stage_model."
        if any(k.startswith(prefix) for k in sd):  # a whole checkpoint: its VAE part
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        ctx = current_or_none()
        dtype = dtype or (dtype_for(ctx, "vae") if ctx is not None else torch.float32)
        module = build_vae(vae_config_from_state_dict(sd), sd, dtype=dtype)
        return vae_socket(module, "vae")


class CLIPType(enum.Enum):
    """ComfyUI's text-encoder types (`load_clip(clip_type=...)`); Loom builds STABLE_DIFFUSION, SD3 and (two
    files) SDXL."""

    STABLE_DIFFUSION = 1
    STABLE_CASCADE = 2
    SD3 = 3
    STABLE_AUDIO = 4
    HUNYUAN_DIT = 5
    FLUX = 6
    MOCHI = 7
    LTXV = 8
    HUNYUAN_VIDEO = 9
    PIXART = 10
    COSMOS = 11
    LUMINA2 = 12
    WAN = 13
    HIDREAM = 14
    CHROMA = 15
    ACE = 16
    OMNIGEN2 = 17
    QWEN_IMAGE = 18


def _ctx() -> NodeContext | None:
    return current_or_none()


def _embeddings(embedding_directory: Any) -> list[str]:
    if embedding_directory is not None:
        return [embedding_directory] if isinstance(embedding_directory, (str, os.PathLike)) else list(
            embedding_directory)
    return embedding_directories(BINDING.current_folders())


class _NoCtx:
    """Stands in for a node context outside the executor: the runtime's model manager, no cache entries."""

    def __init__(self) -> None:
        self.models = BINDING.current_models()
        self.folders = BINDING.current_folders()


def load_checkpoint_guess_config(ckpt_path: str, output_vae: bool = True, output_clip: bool = True,
                                 output_clipvision: bool = False, embedding_directory: Any = None,
                                 output_model: bool = True, model_options: dict | None = None,
                                 te_model_options: dict | None = None) -> tuple[Any, Any, Any, Any]:
    """(MODEL, CLIP, VAE, CLIP_VISION) of a checkpoint file, the family detected from its keys; parts not asked
    for (or not in the file) are None. The CLIP vision tower of unCLIP checkpoints is not returned (None)."""
    ctx = _ctx() or _NoCtx()
    path = Path(ckpt_path)
    chosen = precision(ctx)  # type: ignore[arg-type]
    modules = cached_parts(ctx, path, ("unet", "clip", "vae"),  # type: ignore[arg-type]
                           lambda: load_checkpoint_modules(path, chosen), "checkpoint:" + chosen.key())
    name = path.name
    model = model_socket(modules["unet"], name) if output_model else None
    clip = None
    if output_clip and modules.get("clip") is not None:
        clip = clip_socket(modules["clip"], name, _embeddings(embedding_directory))
    vae = vae_socket(modules["vae"], name) if output_vae and modules.get("vae") is not None else None
    return model, clip, vae, None


def load_diffusion_model(unet_path: str, model_options: dict | None = None) -> Any:
    """A MODEL from a diffusion-model (UNet / MMDiT) file."""
    ctx = _ctx() or _NoCtx()
    path = Path(unet_path)
    dtype = dtype_for(ctx, "unet")  # type: ignore[arg-type]
    module = cached_one(ctx, path, lambda: load_unet_module(path, dtype), f"unet:default:{dtype}",  # type: ignore
                        "unet")
    return model_socket(module, path.name)


def load_clip(ckpt_paths: list[str], embedding_directory: Any = None,
              clip_type: CLIPType = CLIPType.STABLE_DIFFUSION, model_options: dict | None = None) -> Any:
    """A CLIP from one text-encoder file (SD1 CLIP-L, SD2 OpenCLIP-H; `CLIPType.SD3`: one SD3 tower) or two
    (CLIP-L and CLIP-G: SDXL; with `CLIPType.SD3`: SD3's pair)."""
    ctx = _ctx() or _NoCtx()
    paths = [Path(p) for p in ckpt_paths]
    dtype = dtype_for(ctx, "text_encoder")  # type: ignore[arg-type]
    kind = getattr(clip_type, "name", str(clip_type)).lower()
    if len(paths) == 1 and kind in ("stable_diffusion", "sd3"):
        load = (load_single_sd3_text_encoder_module if kind == "sd3" else load_text_encoder_module)
        module = cached_one(ctx, paths[0], lambda: load(paths[0], dtype),  # type: ignore[arg-type]
                            f"clip:{kind}:{dtype}", "clip")
    elif len(paths) == 2 and kind in ("stable_diffusion", "sd3", "sdxl"):
        family = "sd3" if kind == "sd3" else "sdxl"
        module = cached_one(ctx, paths[0],  # type: ignore[arg-type]
                            lambda: load_dual_text_encoder_module(paths[0], paths[1], dtype, family),
                            f"dualclip:{family}:{paths[1]}:{dtype}", "clip")
    else:
        raise ValueError(f"comfy.sd.load_clip: {len(paths)} file(s) of type {kind} is not supported by Loom (one "
                         f"file: STABLE_DIFFUSION or SD3; two files: CLIP-L + CLIP-G)")
    return clip_socket(module, "+".join(p.name for p in paths), _embeddings(embedding_directory))


def load_lora_for_models(model: Any, clip: Any, lora: dict[str, torch.Tensor], strength_model: float,
                         strength_clip: float) -> tuple[Any, Any]:
    """(model clone, clip clone) with the LoRA state dict `lora` added at the strengths; either input may be
    None (then None comes back for it), as in ComfyUI."""
    clip_handle = getattr(clip, "handle", None) if clip is not None else None
    result = apply_lora(lora, model, clip_handle, strength_model, strength_clip, PatchSource(lora))
    new_clip = None
    if clip is not None:
        new_clip = clip.clone()
        if result.clip_handle is not None:
            new_clip.handle = result.clip_handle
    return (result.model if model is not None else None), new_clip
