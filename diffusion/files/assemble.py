"""From model files to the socket values the loader nodes output: MODEL, CLIP and VAE.

Owns the assembly step between `diffusion/files/loading.py` (networks from files) and the nodes:
- `Precision`: the compute and storage dtypes of each component, chosen by the caller (the memory manager's
  `dtype_for` / `weight_dtype_for`); weights stored in another dtype than they compute in are converted by
  `diffusion/networks/weight_cast.py` right after building (read in the storage dtype, or fp16 for fp8 storage);
- `load_checkpoint_modules` / `load_diffusers_modules` (a diffusers folder) / `load_unet_module` / `load_vae_module` / `load_text_encoder_module`: the shareable
  base modules of one file (a `DiffusionModel` — UNet + schedule + parameterisation + latent format —, the text
  tower, the `AutoencoderKL`), read in the requested precisions on the CPU; the memory manager moves them later;
- `model_socket` / `clip_socket` / `vae_socket`: fresh socket values around shared base modules — a `ModelHandle`
  (kind "unet"), a `CLIP` whose `.handle` is a "text_encoder" handle, a `VAE` whose `.handle` is a "vae" handle —
  so every loader call returns new handles while the weights stay shared (the file cache keeps one copy);
- `model_sampling_of(handle)`: the schedule a MODEL handle samples with (its `model_sampling` object patch, else
  the one the file was loaded with), readable without loading the weights.

Nothing here chooses devices or caches: callers pass precisions in and keep what they want shared.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from diffusion.files.checkpoint import CheckpointError, keep_fp8, read_keys, read_state_dict, strip_prefix
from diffusion.text.clip_multi import MultiTextEncoder, build_dual, build_sd3
from diffusion.networks.diffusion_model import DiffusionModel
from diffusion.families import get_family
from diffusion.families.base import SamplingSpec
from diffusion.files.latent_formats import PLAYGROUND_V25
from diffusion.files.diffusers_convert import diffusers_checkpoint
from diffusion.files.loading import checkpoint_from_state_dict, load_checkpoint, load_unet_file, load_vae_file
from diffusion.sampling.model_sampling import ModelSampling
from diffusion.sampling.model_sampling_continuous import ContinuousSampling
from diffusion.sampling.model_sampling_flow import SD3_SHIFT, FlowSampling
from diffusion.files.mmdit_loading import build_mmdit, checkpoint_is_mmdit, load_sd3_checkpoint
from diffusion.patcher import ModelHandle
from diffusion.text.t5 import T5Encoder, build_t5, t5_prefix
from diffusion.text.t5_tokenizer import tokenizer_candidates
from diffusion.text.text_encoders import CLIP, TextEncoder, build_text_encoder
from diffusion.networks.vae import VAE, AutoencoderKL
from diffusion.networks.weight_cast import FP8_DTYPES, store_text_encoder_weights, store_weights

SD_VAE_SCALE = 0.18215  # Rombach et al. (2022): the KL-f8 latent's scale factor for SD1.x/2.x
_PREDICTIONS = {"eps": "eps", "v": "v_prediction"}
# The schedule each assembled DiffusionModel was built with, so a clone's view of it never depends on which clone
# the memory manager last patched into the shared module.
_BASE_SAMPLING: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Precision:
    """The dtype each component computes in, and (None: the same) the dtype its weights are stored in."""

    unet: torch.dtype = torch.float32
    vae: torch.dtype = torch.float32
    text_encoder: torch.dtype = torch.float32
    unet_weights: torch.dtype | None = None
    vae_weights: torch.dtype | None = None
    text_encoder_weights: torch.dtype | None = None

    def stored(self, part: str) -> torch.dtype:
        """The storage dtype of "unet", "vae" or "text_encoder"."""
        own = getattr(self, f"{part}_weights")
        return own if own is not None else getattr(self, part)

    def read(self, part: str) -> torch.dtype:
        """The dtype a file's tensors are read in for `part`: the storage dtype, or for fp8 storage fp16 (exact
        for fp8 values, half the transient memory of fp32) unless the component computes in half already."""
        stored, compute = self.stored(part), getattr(self, part)
        if stored in FP8_DTYPES:
            return torch.float16 if compute == torch.float32 else compute
        return stored

    def key(self) -> str:
        """A short stable text naming the combination (for the file cache's key)."""
        return (f"unet={self.unet}/{self.stored('unet')},vae={self.vae}/{self.stored('vae')},"
                f"te={self.text_encoder}/{self.stored('text_encoder')}")


def finish_network(net: nn.Module | None, stored: torch.dtype, compute: torch.dtype) -> nn.Module | None:
    """A built UNet/MMDiT/VAE whose weights are to be stored in `stored` while computing in `compute`: converted
    in place (`weight_cast.store_weights`); unchanged when both are the same and no weight was read as fp8."""
    if net is None:
        return None
    if stored != compute:
        store_weights(net, stored, compute)
    elif any(p.dtype in FP8_DTYPES for p in net.parameters()):
        store_weights(net, None, compute)  # tensors a file stores in fp8 were read as they are (keep_fp8)
    return net


def finish_text_encoder(encoder: nn.Module | None, stored: torch.dtype) -> nn.Module | None:
    """A text tower (computing in fp32 block by block) with its weights in `stored`."""
    if encoder is not None and any(p.is_floating_point() and p.dtype != stored for p in encoder.parameters()):
        store_text_encoder_weights(encoder, stored)
    return encoder


def model_sampling_for(prediction: str, sampling: SamplingSpec | None = None) -> nn.Module:
    """The schedule a loaded file samples with: the discrete SD schedule with `prediction` ("eps"/"v"), or what
    its marker keys ask for (`SamplingSpec`: v-prediction + zsnr, EDM / CosXL continuous schedules)."""
    if prediction == "flow":
        return FlowSampling(SD3_SHIFT)
    if sampling is None:
        return ModelSampling(prediction=_PREDICTIONS.get(prediction, prediction))
    if sampling.kind == "edm":
        return ContinuousSampling("edm", sampling.prediction, sampling.sigma_min, sampling.sigma_max,
                                  sampling.sigma_data)
    return ModelSampling(prediction=sampling.prediction, zsnr=sampling.zsnr)


def diffusion_model(unet: nn.Module, family: str, prediction: str,
                    sampling: SamplingSpec | None = None) -> DiffusionModel:
    """A `DiffusionModel` of a UNet: the SD discrete schedule with the given prediction ("eps"/"v"/"v_prediction")
    or the file's own schedule (`sampling`), and the family's latent format and memory factor (from the family
    registry)."""
    ms = model_sampling_for(prediction, sampling)
    spec = get_family(family)
    latent = PLAYGROUND_V25 if sampling is not None and sampling.latent == "playground_v2.5" else spec.latent_format
    model = DiffusionModel(unet, ms, latent, family=spec.name, memory_usage_factor=spec.memory_usage_factor)
    _BASE_SAMPLING[model] = ms
    return model


def load_checkpoint_modules(path: str | os.PathLike[str], precision: Precision, prediction: str | None = None,
                            tokenizer_dirs: Iterable[str | os.PathLike[str]] = ()) -> dict[str, nn.Module | None]:
    """The base modules of a single-file checkpoint: {"unet": DiffusionModel, "clip": TextEncoder | None,
    "vae": AutoencoderKL | None}, read on the CPU in `precision` (cast while reading, stored as it says). SD3/SD3.5
    files (an MMDiT) give the MMDiT with flow sampling, the 16-channel VAE and, when the file carries
    `text_encoders.*`, SD3's text model of those towers (T5's tokenizer looked for beside the file and in
    `tokenizer_dirs`)."""
    p = precision
    if _file_is_mmdit(path):
        unet_dtype = keep_fp8(path, p.read("unet"))
        state_dict = read_state_dict(path, dtype=lambda key: _sd3_file_dtype(key, p, unet_dtype))
        sd3 = load_sd3_checkpoint(state_dict, p.read("unet"), p.read("vae"), path)
        finish_network(sd3.mmdit, p.stored("unet"), p.unet)
        clip = sd3_checkpoint_text_model(state_dict, p.read("text_encoder"), path, tokenizer_dirs)
        return {"unet": diffusion_model(sd3.mmdit, "sd3", "flow"), "clip": clip,
                "vae": finish_network(sd3.vae, p.stored("vae"), p.vae)}
    stored = p.stored("unet")
    loaded = load_checkpoint(path, dtype=p.read("unet"), vae_dtype=p.read("vae"),
                             text_encoder_dtype=p.read("text_encoder"), prediction=prediction,
                             unet_matrix_dtype=stored if stored in FP8_DTYPES and stored != p.unet else None)
    finish_network(loaded.unet, p.stored("unet"), p.unet)
    model = diffusion_model(loaded.unet, loaded.info.family, loaded.info.prediction, loaded.info.sampling)
    vae = finish_network(loaded.vae.model, p.stored("vae"), p.vae) if loaded.vae is not None else None
    return {"unet": model, "clip": finish_text_encoder(loaded.text_encoder, p.stored("text_encoder")), "vae": vae}


def load_diffusers_modules(folder: str | os.PathLike[str], precision: Precision) -> dict[str, nn.Module | None]:
    """`load_checkpoint_modules` for a diffusers folder (unet/, vae/, text_encoder/; DiffusersLoader): its parts
    converted to the single-file layout (`diffusion/files/diffusers_convert.py`), then assembled as a checkpoint."""
    p = precision
    state_dict = diffusers_checkpoint(folder)
    for key, value in state_dict.items():
        part = "vae" if key.startswith("first_stage_model.") else "unet" if key.startswith("model.") else \
            "text_encoder"
        state_dict[key] = value.to(p.read(part)) if value.is_floating_point() else value
    loaded = checkpoint_from_state_dict(state_dict, {}, os.path.basename(os.fspath(folder)), p.read("unet"),
                                        vae_dtype=p.read("vae"), text_encoder_dtype=p.read("text_encoder"))
    finish_network(loaded.unet, p.stored("unet"), p.unet)
    model = diffusion_model(loaded.unet, loaded.info.family, loaded.info.prediction, loaded.info.sampling)
    vae = finish_network(loaded.vae.model, p.stored("vae"), p.vae) if loaded.vae is not None else None
    return {"unet": model, "clip": finish_text_encoder(loaded.text_encoder, p.stored("text_encoder")), "vae": vae}


SD3_TEXT_PREFIX = "text_encoders."
_SD3_CLIP_TOWERS = {"clip_l": "sd1", "clip_g": "clip_g"}


def _sd3_file_dtype(key: str, precision: Precision, unet_dtype) -> torch.dtype | None:
    """The read dtype of one tensor of an SD3 single file: VAE and CLIP towers in their precisions, T5 as stored
    (it upcasts per layer), the MMDiT in its own (fp8 kept)."""
    if key.startswith("first_stage_model."):
        return precision.read("vae")
    if key.startswith(SD3_TEXT_PREFIX + "t5xxl."):
        return None
    if key.startswith(SD3_TEXT_PREFIX):
        return precision.read("text_encoder")
    return unet_dtype(key)


def sd3_checkpoint_text_model(state_dict: dict[str, torch.Tensor], dtype: torch.dtype, path: str | os.PathLike[str],
                              tokenizer_dirs: Iterable[str | os.PathLike[str]] = ()) -> MultiTextEncoder | None:
    """SD3's text model of a single file's `text_encoders.clip_l.transformer.*`, `text_encoders.clip_g.*` and
    `text_encoders.t5xxl.transformer.*` keys (ComfyUI's layout), whichever it has; None when it has none."""
    towers: list[TextEncoder | T5Encoder] = []
    try:
        for name, family in _SD3_CLIP_TOWERS.items():
            sub = strip_prefix({k: v for k, v in state_dict.items() if k.startswith(f"{SD3_TEXT_PREFIX}{name}.")},
                               f"{SD3_TEXT_PREFIX}{name}.transformer.")
            if sub:
                towers.append(build_text_encoder(sub, dtype=dtype, family=family))
        t5 = {k: v for k, v in state_dict.items() if k.startswith(f"{SD3_TEXT_PREFIX}t5xxl.")}
        if t5:
            tower = build_t5(t5, dtype, source=os.fspath(path))
            tower.tokenizer_paths = tokenizer_candidates(path, tokenizer_dirs)
            towers.append(tower)
    except ValueError as err:
        raise CheckpointError(f"{os.fspath(path)}: text encoders: {err}") from err
    return build_sd3(towers) if towers else None


def load_unet_module(path: str | os.PathLike[str], dtype: torch.dtype,
                     stored: torch.dtype | None = None) -> DiffusionModel:
    """A `DiffusionModel` from a UNet-only file (or a checkpoint's UNet) computing in `dtype` with its weights in
    `stored` (default: `dtype`); the family is read off the shapes."""
    p = Precision(unet=dtype, unet_weights=stored)
    if _file_is_mmdit(path):
        state_dict = strip_prefix(read_state_dict(path, dtype=keep_fp8(path, p.read("unet"))),
                                  "model.diffusion_model.")
        net = finish_network(build_mmdit(state_dict, p.read("unet")), p.stored("unet"), dtype)
        return diffusion_model(net, "sd3", "flow")
    unet, family, prediction = load_unet_file(path, dtype=p.read("unet"))
    return diffusion_model(finish_network(unet, p.stored("unet"), dtype), family, prediction)


def _file_is_mmdit(path: str | os.PathLike[str]) -> bool:
    """Whether a file's keys (read from its header, no tensors) hold an SD3 MMDiT."""
    keys = dict.fromkeys(read_keys(path))
    return checkpoint_is_mmdit(keys)


def load_vae_module(path: str | os.PathLike[str], dtype: torch.dtype,
                    stored: torch.dtype | None = None) -> AutoencoderKL:
    """The `AutoencoderKL` of a VAE-only file (or a checkpoint's VAE), computing in `dtype`, weights in `stored`."""
    p = Precision(vae=dtype, vae_weights=stored)
    return finish_network(load_vae_file(path, dtype=p.read("vae")).model, p.stored("vae"), dtype)


def load_text_encoder_module(path: str | os.PathLike[str], dtype: torch.dtype,
                             tokenizer_dirs: Iterable[str | os.PathLike[str]] = ()) -> TextEncoder | T5Encoder:
    """The text tower of a text-encoder file: CLIP-L or bigG in the HF layout, OpenCLIP-H/bigG in open_clip's, or
    a T5 encoder (any prefix), its weights in `dtype` (a CLIP tower computes in fp32 block by block; fp8 keeps the
    matmul weights in fp8). A T5 file's half/fp8 linear weights stay as stored; its tokenizer is looked for
    beside the file and in `tokenizer_dirs` (`diffusion.text.t5_tokenizer`). A .gguf file is a GGUF T5 encoder
    with its quantised matmul weights kept packed (`diffusion/files/gguf_text.py`)."""
    if os.fspath(path).lower().endswith(".gguf"):
        from diffusion.files.gguf_text import load_gguf_t5  # needs the gguf package; only GGUF files do

        return load_gguf_t5(path, dtype, tokenizer_dirs)
    read = torch.float16 if dtype in FP8_DTYPES else dtype
    if t5_prefix(read_keys(path)) is not None:
        state_dict = read_state_dict(path)  # the file's dtypes
        try:
            tower = build_t5(state_dict, torch.float32 if dtype in FP8_DTYPES else dtype, source=os.fspath(path))
        except ValueError as err:
            raise CheckpointError(f"{os.fspath(path)}: not a T5 encoder Loom can build ({err})") from err
        tower.tokenizer_paths = tokenizer_candidates(path, tokenizer_dirs)
        return tower
    state_dict = read_state_dict(path, dtype=read)
    try:
        encoder = build_text_encoder(state_dict, dtype=read)
    except ValueError as err:
        raise CheckpointError(f"{os.fspath(path)}: not a CLIP text encoder Loom knows ({err})") from err
    finish_text_encoder(encoder, dtype)
    return encoder


def load_clip_text_encoder_module(path: str | os.PathLike[str], dtype: torch.dtype, kind: str) -> TextEncoder:
    """A CLIP tower for a loader type that takes no T5 (`kind` names that type in the message)."""
    tower = load_text_encoder_module(path, dtype)
    if isinstance(tower, T5Encoder):
        raise CheckpointError(f"{os.fspath(path)}: a T5 text encoder, but type {kind} takes CLIP files only "
                              f"(T5 goes with type sd3)")
    return tower


def load_dual_text_encoder_module(first: str | os.PathLike[str], second: str | os.PathLike[str], dtype: torch.dtype,
                                  family: str = "sdxl",
                                  tokenizer_dirs: Iterable[str | os.PathLike[str]] = ()) -> MultiTextEncoder:
    """The two-tower text model of two text-encoder files (DualCLIPLoader): for "sdxl" one CLIP-L and one bigG
    file, in either order (bigG is recognised by its depth, as ComfyUI does); for "sd3" any two of CLIP-L, bigG
    and T5."""
    if family == "sd3":
        return load_sd3_text_encoder_module([first, second], dtype, tokenizer_dirs)
    towers = [load_clip_text_encoder_module(path, dtype, family) for path in (first, second)]
    try:
        return build_dual(towers[0], towers[1], family)
    except ValueError as err:
        raise CheckpointError(f"{os.fspath(first)} + {os.fspath(second)}: {err}") from err


def load_sd3_text_encoder_module(paths: list[str | os.PathLike[str]], dtype: torch.dtype,
                                 tokenizer_dirs: Iterable[str | os.PathLike[str]] = ()) -> MultiTextEncoder:
    """SD3's text model of one to three files (CLIPLoader / DualCLIPLoader type sd3, TripleCLIPLoader): at most
    one CLIP-L, one CLIP-G and one T5 in any order; a missing tower's part is what ComfyUI gives (zeros)."""
    towers = [load_text_encoder_module(path, dtype, tokenizer_dirs) for path in paths]
    try:
        return build_sd3(towers)
    except ValueError as err:
        raise CheckpointError(f"{' + '.join(os.fspath(p) for p in paths)}: {err}") from err


def load_single_sd3_text_encoder_module(path: str | os.PathLike[str], dtype: torch.dtype,
                                        tokenizer_dirs: Iterable[str | os.PathLike[str]] = ()) -> MultiTextEncoder:
    """CLIPLoader type sd3: one CLIP-L, CLIP-G or T5 file as SD3's text model (the missing towers' parts are
    zeros)."""
    return load_sd3_text_encoder_module([path], dtype, tokenizer_dirs)


def model_socket(model: DiffusionModel, name: str = "") -> ModelHandle:
    """A new MODEL value (a "unet" handle) on a shared `DiffusionModel`."""
    return ModelHandle(model, name=name or "model", kind="unet")


def clip_socket(encoder: TextEncoder | MultiTextEncoder, name: str = "", embedding_directories: list[str] | None = None) -> CLIP:
    """A new CLIP value on a shared text tower, with its "text_encoder" handle in `.handle`."""
    clip = CLIP(encoder, embedding_directories=embedding_directories)
    clip.handle = ModelHandle(encoder, name=name or "clip", kind="text_encoder")
    return clip


def vae_socket(autoencoder: AutoencoderKL, name: str = "", scale_factor: float = SD_VAE_SCALE) -> VAE:
    """A new VAE value on a shared `AutoencoderKL`, with its "vae" handle in `.handle`."""
    vae = VAE(autoencoder, scale_factor=scale_factor)
    vae.handle = ModelHandle(autoencoder, name=name or "vae", kind="vae")  # type: ignore[attr-defined]
    return vae


def model_sampling_of(handle: ModelHandle) -> ModelSampling:
    """The schedule `handle` samples with: its `model_sampling` object patch (ModelSamplingDiscrete), else the
    schedule its model was assembled with, else the module's current attribute."""
    patched = handle.object_patches.get("model_sampling")
    if patched is not None:
        return patched
    base = _BASE_SAMPLING.get(handle.model)
    return base if base is not None else handle.model.model_sampling


def load_gguf_unet_module(path: str | os.PathLike[str], dtype: torch.dtype) -> DiffusionModel:
    """A `DiffusionModel` from a GGUF UNet/MMDiT file (ComfyUI-GGUF's format): quantised weights stay packed and
    are dequantised layer by layer to `dtype` (diffusion/files/gguf_loading.py)."""
    from diffusion.files.gguf_loading import load_gguf_unet  # needs the gguf package; only GGUF files do

    net, family, prediction = load_gguf_unet(path, dtype)
    return diffusion_model(net, family, prediction)
