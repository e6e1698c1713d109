"""Model loader nodes: CheckpointLoaderSimple, CheckpointLoader, VAELoader, CLIPLoader, DualCLIPLoader, UNETLoader.

Names, inputs, outputs, categories and display names are ComfyUI's (`nodes.py`). Each loader resolves the file
through the running node's folders, reads it in the precision the memory manager chooses (`dtype_for`), and goes
through the manager's file cache (`models.files`), so a file already held by any cached output is never read
twice. The base modules are shared; every call returns fresh socket values (handles) around them
(`diffusion/files/assemble.py`). Weights are read on the CPU: the manager places them when a node uses them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch

from diffusion.files.assemble import (Precision, clip_socket, load_checkpoint_modules, load_clip_text_encoder_module,
                                load_dual_text_encoder_module, load_single_sd3_text_encoder_module,
                                load_unet_module, load_vae_module, model_socket, vae_socket)
from diffusion.files.checkpoint import UNET_PREFIX, stored_fp8_dtype
from diffusion.patcher import ModelHandle
from diffusion.text.text_encoders import CLIP
from diffusion.networks.vae import VAE
from nodes.context import FoldersLike, NodeContext, current_or_none
from nodes.previews import find_approx_file
from nodes.spec import Combo, FileIndex, FileList, Node, Output

log = logging.getLogger(__name__)

# ComfyUI's CLIPLoader `type` choices; Loom builds the SD1/SD2 towers (type "stable_diffusion", the tower found
# from the keys) and says so for the others.
CLIP_TYPES = ("stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image")
SUPPORTED_CLIP_TYPES = ("stable_diffusion", "sd3")
# ComfyUI's DualCLIPLoader `type` choices; Loom builds "sdxl" (CLIP-L + CLIP-G) and says so for the others.
DUAL_CLIP_TYPES = ("sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image")
SUPPORTED_DUAL_CLIP_TYPES = ("sdxl", "sd3")
UNET_WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
_FP8 = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def node_context() -> NodeContext:
    """The running node's context, with a clear error outside the executor."""
    ctx = current_or_none()
    if ctx is None:
        raise RuntimeError("this node must run through the executor (it needs the node context's folders and "
                           "model manager)")
    return ctx


def _folders(ctx: NodeContext) -> FoldersLike:
    if ctx.folders is None:
        raise RuntimeError("loader nodes need the folders of a Loom instance; the executor was given none")
    return ctx.folders


def dtype_for(ctx: NodeContext, kind: str) -> torch.dtype:
    """The memory manager's precision for a component ("unet", "vae", "text_encoder"); fp32 without a manager."""
    return ctx.models.dtype_for(kind) if ctx.models is not None else torch.float32


def weight_dtype_for(ctx: NodeContext, kind: str, requested: str = "default",
                     file_dtype: torch.dtype | None = None) -> torch.dtype:
    """The memory manager's storage dtype for a component's weights (see `ModelManager.weight_dtype_for`); fp32
    without a manager unless an fp8 type is asked for."""
    if ctx.models is not None:
        return ctx.models.weight_dtype_for(kind, requested, file_dtype)
    return _FP8.get(requested, file_dtype if file_dtype is not None else torch.float32)


def precision(ctx: NodeContext, path: Path | None = None) -> Precision:
    """The compute and storage precisions of all three components under the manager's policy (a checkpoint at
    `path` whose UNet is stored in fp8 keeps it in fp8)."""
    fp8 = stored_fp8_dtype(path, UNET_PREFIX) if path is not None else None
    return Precision(unet=dtype_for(ctx, "unet"), vae=dtype_for(ctx, "vae"),
                     text_encoder=dtype_for(ctx, "text_encoder"),
                     unet_weights=weight_dtype_for(ctx, "unet", file_dtype=fp8),
                     vae_weights=weight_dtype_for(ctx, "vae"),
                     text_encoder_weights=weight_dtype_for(ctx, "text_encoder"))


def cached_parts(ctx: NodeContext, path: Path, parts: tuple[str, ...], load: Callable[[], dict[str, Any]],
                 key: str) -> dict[str, Any]:
    """`load()`'s modules, or the live ones the manager's file cache already holds for this file and key."""
    if ctx.models is None:
        return load()
    return ctx.models.files.get_or_load_parts(path, parts, load, dtype=key)


def cached_one(ctx: NodeContext, path: Path, load: Callable[[], Any], key: str, part: str) -> Any:
    """One module from the file cache, or loaded."""
    if ctx.models is None:
        return load()
    return ctx.models.files.get_or_load(path, load, dtype=key, part=part)


def embedding_directories(folders: FoldersLike) -> list[str]:
    """The folders searched for `embedding:NAME` (models/embeddings and extra paths)."""
    try:
        return [str(p) for p in folders.folder_paths("embeddings")]
    except KeyError:
        return []


def text_encoder_directories(folders: FoldersLike) -> list[Path]:
    """The text-encoder folders (models/text_encoders, models/clip, extra paths): where T5's tokenizer is also
    looked for (`diffusion.text.t5_tokenizer`)."""
    try:
        return list(folders.folder_paths("text_encoders"))
    except KeyError:
        return []


def load_checkpoint_sockets(ckpt_name: str) -> tuple[ModelHandle, CLIP | None, VAE | None]:
    """MODEL, CLIP and VAE of a checkpoint file in models/checkpoints (CLIP/VAE None when the file lacks them)."""
    ctx = node_context()
    folders = _folders(ctx)
    path = folders.full_path("checkpoints", ckpt_name)
    chosen = precision(ctx, path)
    dirs = text_encoder_directories(folders)
    modules = cached_parts(ctx, path, ("unet", "clip", "vae"),
                           lambda: load_checkpoint_modules(path, chosen, tokenizer_dirs=dirs),
                           "checkpoint:" + chosen.key())
    clip = None
    if modules.get("clip") is not None:
        clip = clip_socket(modules["clip"], ckpt_name, embedding_directories(folders))
    vae = vae_socket(modules["vae"], ckpt_name) if modules.get("vae") is not None else None
    return model_socket(modules["unet"], ckpt_name), clip, vae


_CKPT_OUTPUTS = (
    Output("MODEL", tooltip="The model used for denoising latents."),
    Output("CLIP", tooltip="The CLIP model used for encoding text prompts."),
    Output("VAE", tooltip="The VAE model used for encoding and decoding images to and from latent space."),
)


class CheckpointLoaderSimple(Node):
    """Loads a diffusion model checkpoint, diffusion models are used to denoise latents."""

    DISPLAY_NAME = "Load Checkpoint"
    CATEGORY = "loaders"
    INPUTS = (Combo("ckpt_name", FileList("checkpoints"), tooltip="The name of the checkpoint (model) to load."),)
    OUTPUTS = _CKPT_OUTPUTS

    def execute(self, ckpt_name: str) -> tuple[ModelHandle, CLIP | None, VAE | None]:
        return load_checkpoint_sockets(ckpt_name)


class CheckpointLoader(Node):
    """Loads a checkpoint; the config file is ignored (the architecture is read off the weights), as ComfyUI does."""

    DISPLAY_NAME = "Load Checkpoint With Config (DEPRECATED)"
    CATEGORY = "advanced/loaders"
    DEPRECATED = True
    INPUTS = (Combo("config_name", FileList("configs")), Combo("ckpt_name", FileList("checkpoints")))
    OUTPUTS = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    def execute(self, config_name: str, ckpt_name: str) -> tuple[ModelHandle, CLIP | None, VAE | None]:
        return load_checkpoint_sockets(ckpt_name)


TAESD = "taesd"  # the VAELoader entry for TAESD (SD1/SD2 latents), listed when both halves are in vae_approx
# VAELoader's tiny-autoencoder entries (ComfyUI's names) and the latent scale each works in.
TAESD_SCALES = {"taesd": 0.18215, "taesdxl": 0.13025}


class VAEFileList(FileList):
    """The files of models/vae, plus "taesd" / "taesdxl" when `<name>_encoder.*` and `<name>_decoder.*` are in
    vae_approx."""

    def resolve(self, files: FileIndex | None) -> list[str]:
        names = super().resolve(files)
        if files is None:
            return names
        try:
            stems = {name.rsplit("/", 1)[-1].split(".", 1)[0] for name in files.list_files("vae_approx")}
        except KeyError:
            return names
        return names + [t for t in TAESD_SCALES if {f"{t}_encoder", f"{t}_decoder"} <= stems]


def load_taesd_vae(ctx: NodeContext, name: str = TAESD) -> VAE:
    """TAESD ("taesd", SD1/SD2) or TAESDXL ("taesdxl") as a VAE (both halves from models/vae_approx)."""
    from diffusion.networks.taesd import load_taesd_autoencoder

    enc, dec = find_approx_file(ctx, f"{name}_encoder"), find_approx_file(ctx, f"{name}_decoder")
    if enc is None or dec is None:
        raise FileNotFoundError(f"{name} needs {name}_encoder and {name}_decoder files in models/vae_approx")
    dtype = dtype_for(ctx, "vae")
    scale = TAESD_SCALES[name]
    module = cached_one(ctx, dec, lambda: load_taesd_autoencoder(enc, dec, dtype, scale=scale),
                        f"{name}:{enc}:{dtype}", name)
    return vae_socket(module, name)


class VAELoader(Node):
    """Loads a VAE file from models/vae (with or without the `first_stage_model.` prefix), or TAESD."""

    DISPLAY_NAME = "Load VAE"
    CATEGORY = "loaders"
    INPUTS = (Combo("vae_name", VAEFileList("vae")),)
    OUTPUTS = (Output("VAE"),)

    def execute(self, vae_name: str) -> tuple[VAE]:
        ctx = node_context()
        if vae_name in TAESD_SCALES:
            return (load_taesd_vae(ctx, vae_name),)
        path = _folders(ctx).full_path("vae", vae_name)
        dtype, stored = dtype_for(ctx, "vae"), weight_dtype_for(ctx, "vae")
        module = cached_one(ctx, path, lambda: load_vae_module(path, dtype, stored), f"vae:{dtype}:{stored}", "vae")
        return (vae_socket(module, vae_name),)


class CLIPLoader(Node):
    """Loads a text encoder file from models/text_encoders (models/clip).

    [Recipes]

    stable_diffusion: clip-l (SD1.x) or OpenCLIP-H (SD2.x), told apart by the file's keys.
    sd3: clip-l, clip-g or t5xxl (the other towers' parts are zeros)
    The other types are ComfyUI's for model families Loom does not run yet. `device` "cpu" is accepted and ignored:
    the memory manager places the text encoder."""

    DISPLAY_NAME = "Load CLIP"
    CATEGORY = "advanced/loaders"
    INPUTS = (
        Combo("clip_name", FileList("text_encoders")),
        Combo("type", CLIP_TYPES),
        Combo("device", ("default", "cpu"), optional=True, advanced=True),
    )
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip_name: str, type: str = "stable_diffusion", device: str = "default") -> tuple[CLIP]:
        if type not in SUPPORTED_CLIP_TYPES:
            raise ValueError(f"CLIPLoader type {type!r} is not supported by Loom yet; supported: "
                             f"{', '.join(SUPPORTED_CLIP_TYPES)} (SD1.x CLIP-L and SD2.x OpenCLIP-H files; "
                             f"sd3: a CLIP-L, CLIP-G or T5-XXL file)")
        ctx = node_context()
        folders = _folders(ctx)
        path = folders.full_path("text_encoders", clip_name)
        dtype = weight_dtype_for(ctx, "text_encoder")
        if type == "sd3":  # one SD3 tower; the other's part of the context and pooled vector is zeros
            dirs = text_encoder_directories(folders)
            module = cached_one(ctx, path, lambda: load_single_sd3_text_encoder_module(path, dtype, dirs),
                                f"clip:sd3:{dtype}", "clip")
            return (clip_socket(module, clip_name, embedding_directories(folders)),)
        module = cached_one(ctx, path, lambda: load_clip_text_encoder_module(path, dtype, type), f"clip:{dtype}",
                            "clip")
        return (clip_socket(module, clip_name, embedding_directories(folders)),)


class DualCLIPLoader(Node):
    """Loads two text encoder files from models/text_encoders (models/clip) as one CLIP.

    [Recipes]

    sdxl: clip-l, clip-g (in either order; CLIP-G is recognised by its 32 layers)
    sd3: any two of clip-l, clip-g, t5xxl, in any order
    The other types are ComfyUI's for model families Loom does not run yet. `device` "cpu" is accepted and ignored:
    the memory manager places the text encoders."""

    DISPLAY_NAME = "DualCLIPLoader"
    CATEGORY = "advanced/loaders"
    INPUTS = (
        Combo("clip_name1", FileList("text_encoders")),
        Combo("clip_name2", FileList("text_encoders")),
        Combo("type", DUAL_CLIP_TYPES),
        Combo("device", ("default", "cpu"), optional=True, advanced=True),
    )
    OUTPUTS = (Output("CLIP"),)

    def execute(self, clip_name1: str, clip_name2: str, type: str = "sdxl",
                device: str = "default") -> tuple[CLIP]:
        if type not in SUPPORTED_DUAL_CLIP_TYPES:
            raise ValueError(f"DualCLIPLoader type {type!r} is not supported by Loom yet; supported: "
                             f"{', '.join(SUPPORTED_DUAL_CLIP_TYPES)} (sdxl: a CLIP-L and a CLIP-G file; sd3: two "
                             f"of CLIP-L, CLIP-G and T5-XXL)")
        ctx = node_context()
        folders = _folders(ctx)
        first = folders.full_path("text_encoders", clip_name1)
        second = folders.full_path("text_encoders", clip_name2)
        dtype = weight_dtype_for(ctx, "text_encoder")
        dirs = text_encoder_directories(folders)
        module = cached_one(ctx, first, lambda: load_dual_text_encoder_module(first, second, dtype, type, dirs),
                            f"dualclip:{type}:{second}:{dtype}", "clip")
        return (clip_socket(module, f"{clip_name1}+{clip_name2}", embedding_directories(folders)),)


class UNETLoader(Node):
    """Loads a diffusion model (UNet) file from models/diffusion_models (models/unet).

    The fp8 weight types keep the matmul weights in fp8 in memory (half of fp16's bytes) and upcast them layer by
    layer to the compute precision, as ComfyUI does; fp8_e4m3fn_fast computes the same way (fp8 matmuls need
    hardware Loom does not assume). A file stored in fp8 stays fp8 with "default"."""

    DISPLAY_NAME = "Load Diffusion Model"
    CATEGORY = "advanced/loaders"
    INPUTS = (Combo("unet_name", FileList("diffusion_models")), Combo("weight_dtype", UNET_WEIGHT_DTYPES))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, unet_name: str, weight_dtype: str = "default") -> tuple[ModelHandle]:
        ctx = node_context()
        path = _folders(ctx).full_path("diffusion_models", unet_name)
        dtype = dtype_for(ctx, "unet")
        stored = weight_dtype_for(ctx, "unet", weight_dtype, stored_fp8_dtype(path, UNET_PREFIX))
        module = cached_one(ctx, path, lambda: load_unet_module(path, dtype, stored), f"unet:{stored}:{dtype}",
                            "unet")
        return (model_socket(module, unet_name),)


NODES: list[type] = [CheckpointLoaderSimple, CheckpointLoader, VAELoader, CLIPLoader, DualCLIPLoader, UNETLoader]
