"""Latent operations: upscaling, compositing, blending, cropping, flipping, rotating, batching,
arithmetic, and ComfyUI's `.latent` files (SaveLatent/LoadLatent).

Names, inputs, ranges, categories and display names are ComfyUI's (`nodes.py`,
`comfy_extras/nodes_latent.py`, `comfy_extras/nodes_mask.py`). LATENT values are dicts (`samples`
B×C×h×w, optional `noise_mask`, `batch_index`); outputs are new dicts and input tensors are never
written to. A `.latent` file is safetensors with `latent_tensor` and an empty
`latent_format_version_0` marker; files without the marker hold latents scaled by 0.18215 (the
SD1 VAE factor) and are divided by it on load.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

import safetensors.torch
import torch

from folders import UnsafePathError
from nodes import image_file_helpers
from nodes.mask import composite
from nodes.context import FoldersLike, current_or_none
from nodes.image_save_load import resolve_image
from nodes.spec import Boolean, Combo, FileList, Float, Hidden, Input, Int, Node, NodeOutput, Output, String
from nodes.upscaling_math import common_upscale, repeat_to_batch_size

MAX_RESOLUTION = 16384
LATENT_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")
LEGACY_LATENT_SCALE = 0.18215  # SD1 VAE scale factor: pre-marker .latent files stored scaled samples
Latent = dict[str, Any]


def reshape_latent_to(shape: torch.Size, latent: torch.Tensor, repeat_batch: bool = True) -> torch.Tensor:
    """Resize `latent` (bilinear, centre crop) to `shape`'s spatial size and, optionally, tile or
    cut its batch to `shape[0]`."""
    if latent.shape[1:] != shape[1:]:
        latent = common_upscale(latent, shape[-1], shape[-2], "bilinear", "center")
    return repeat_to_batch_size(latent, shape[0]) if repeat_batch else latent


class LatentUpscale(Node):
    """Resizes latents to a pixel size (/8); 0 for one side keeps the aspect ratio."""

    DISPLAY_NAME = "Upscale Latent"
    CATEGORY = "latent"
    INPUTS = (
        Input("samples", "LATENT"),
        Combo("upscale_method", LATENT_UPSCALE_METHODS),
        Int("width", 512, min=0, max=MAX_RESOLUTION, step=8),
        Int("height", 512, min=0, max=MAX_RESOLUTION, step=8),
        Combo("crop", CROP_METHODS),
    )
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, upscale_method: str, width: int, height: int, crop: str) -> tuple[Latent]:
        if width == 0 and height == 0:
            return (samples,)
        x = samples["samples"]
        if width == 0:
            height = max(64, height)
            width = max(64, round(x.shape[-1] * height / x.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(x.shape[-2] * width / x.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        out = dict(samples)
        out["samples"] = common_upscale(x, width // 8, height // 8, upscale_method, crop)
        return (out,)


class LatentUpscaleBy(Node):
    """Resizes latents by a factor (sizes rounded to whole latent pixels)."""

    DISPLAY_NAME = "Upscale Latent By"
    CATEGORY = "latent"
    INPUTS = (
        Input("samples", "LATENT"),
        Combo("upscale_method", LATENT_UPSCALE_METHODS),
        Float("scale_by", 1.5, min=0.01, max=8.0, step=0.01),
    )
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, upscale_method: str, scale_by: float) -> tuple[Latent]:
        x = samples["samples"]
        width, height = round(x.shape[-1] * scale_by), round(x.shape[-2] * scale_by)
        out = dict(samples)
        out["samples"] = common_upscale(x, width, height, upscale_method, "disabled")
        return (out,)


def _feather_mask(like: torch.Tensor, feather: int, y: int, x: int, to_h: int, to_w: int) -> torch.Tensor:
    """Linear ramps of `feather` latent pixels on the pasted block's edges that lie inside the
    destination (edges touching the destination's border stay hard)."""
    mask = torch.ones_like(like)
    h, w = like.shape[2], like.shape[3]
    for t in range(feather):
        rate = (1.0 / feather) * (t + 1)
        if y != 0:
            mask[:, :, t:t + 1, :] *= rate
        if y + h < to_h:
            mask[:, :, h - 1 - t:h - t, :] *= rate
        if x != 0:
            mask[:, :, :, t:t + 1] *= rate
        if x + w < to_w:
            mask[:, :, :, w - 1 - t:w - t] *= rate
    return mask


class LatentComposite(Node):
    """Pastes `samples_from` into `samples_to` at (x, y) pixels, optionally feathering the seams."""

    DISPLAY_NAME = "Latent Composite"
    CATEGORY = "latent"
    INPUTS = (
        Input("samples_to", "LATENT"),
        Input("samples_from", "LATENT"),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("feather", 0, min=0, max=MAX_RESOLUTION, step=8),
    )
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples_to: Latent, samples_from: Latent, x: int, y: int, feather: int) -> tuple[Latent]:
        x, y, feather = x // 8, y // 8, feather // 8
        dest = samples_to["samples"]
        result = dest.clone()
        src = samples_from["samples"][:, :, :dest.shape[2] - y, :dest.shape[3] - x]
        region = (slice(None), slice(None), slice(y, y + src.shape[2]), slice(x, x + src.shape[3]))
        if feather == 0:
            result[region] = src
        else:
            mask = _feather_mask(src, feather, y, x, dest.shape[2], dest.shape[3])
            result[region] = src * mask + result[region] * (1.0 - mask)
        out = dict(samples_to)
        out["samples"] = result
        return (out,)


class LatentCompositeMasked(Node):
    """Pastes `source` into `destination` at (x, y) pixels through an optional mask."""

    CATEGORY = "latent"
    INPUTS = (
        Input("destination", "LATENT"),
        Input("source", "LATENT"),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
        Boolean("resize_source", False),
        Input("mask", "MASK", optional=True),
    )
    OUTPUTS = (Output("LATENT"),)

    def execute(self, destination: Latent, source: Latent, x: int, y: int, resize_source: bool = False,
                mask: torch.Tensor | None = None) -> tuple[Latent]:
        out = dict(destination)
        out["samples"] = composite(destination["samples"].clone(), source["samples"], x, y, mask, 8, resize_source)
        return (out,)


class LatentBlend(Node):
    """`samples1·f + samples2·(1−f)`; `samples2` is resized (bicubic, centre crop) to match."""

    DISPLAY_NAME = "Latent Blend"
    CATEGORY = "_for_testing"
    INPUTS = (
        Input("samples1", "LATENT"),
        Input("samples2", "LATENT"),
        Float("blend_factor", 0.5, min=0, max=1, step=0.01),
    )
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples1: Latent, samples2: Latent, blend_factor: float) -> tuple[Latent]:
        a, b = samples1["samples"], samples2["samples"]
        if a.shape != b.shape:
            b = common_upscale(b, a.shape[3], a.shape[2], "bicubic", "center")
        out = dict(samples1)
        out["samples"] = a * blend_factor + b * (1 - blend_factor)
        return (out,)


class LatentCrop(Node):
    """Crops latents to a pixel rectangle (/8); the origin is kept at least 8 latent pixels from
    the far edges."""

    DISPLAY_NAME = "Crop Latent"
    CATEGORY = "latent/transform"
    INPUTS = (
        Input("samples", "LATENT"),
        Int("width", 512, min=64, max=MAX_RESOLUTION, step=8),
        Int("height", 512, min=64, max=MAX_RESOLUTION, step=8),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
    )
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, width: int, height: int, x: int, y: int) -> tuple[Latent]:
        s = samples["samples"]
        x, y = min(x // 8, s.shape[3] - 8), min(y // 8, s.shape[2] - 8)
        out = dict(samples)
        out["samples"] = s[:, :, y:y + height // 8, x:x + width // 8]
        return (out,)


class LatentFlip(Node):
    """Mirrors latents: "x-axis" flips top and bottom, "y-axis" left and right."""

    DISPLAY_NAME = "Flip Latent"
    CATEGORY = "latent/transform"
    INPUTS = (Input("samples", "LATENT"), Combo("flip_method", ("x-axis: vertically", "y-axis: horizontally")))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, flip_method: str) -> tuple[Latent]:
        out = dict(samples)
        if flip_method.startswith("x"):
            out["samples"] = torch.flip(samples["samples"], dims=[2])
        elif flip_method.startswith("y"):
            out["samples"] = torch.flip(samples["samples"], dims=[3])
        return (out,)


class LatentRotate(Node):
    """Rotates latents clockwise by a multiple of 90 degrees."""

    DISPLAY_NAME = "Rotate Latent"
    CATEGORY = "latent/transform"
    INPUTS = (Input("samples", "LATENT"), Combo("rotation", ("none", "90 degrees", "180 degrees", "270 degrees")))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, rotation: str) -> tuple[Latent]:
        turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        out = dict(samples)
        out["samples"] = torch.rot90(samples["samples"], k=turns, dims=[3, 2])
        return (out,)


class RepeatLatentBatch(Node):
    """Repeats the whole batch `amount` times (noise masks and batch indices follow)."""

    DISPLAY_NAME = "Repeat Latent Batch"
    CATEGORY = "latent/batch"
    INPUTS = (Input("samples", "LATENT"), Int("amount", 1, min=1, max=64))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, amount: int) -> tuple[Latent]:
        out = dict(samples)
        out["samples"] = samples["samples"].repeat((amount, 1, 1, 1))
        mask = samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:
            out["noise_mask"] = mask.repeat((amount, 1, 1, 1))
        if "batch_index" in samples:
            index = list(samples["batch_index"])
            offset = max(index) - min(index) + 1
            out["batch_index"] = index + [i + k * offset for k in range(1, amount) for i in index]
        return (out,)


class LatentFromBatch(Node):
    """Takes `length` latents from `batch_index` on, remembering their original batch indices."""

    DISPLAY_NAME = "Latent From Batch"
    CATEGORY = "latent/batch"
    INPUTS = (Input("samples", "LATENT"), Int("batch_index", 0, min=0, max=63), Int("length", 1, min=1, max=64))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, batch_index: int, length: int) -> tuple[Latent]:
        s = samples["samples"]
        start = min(s.shape[0] - 1, batch_index)
        length = min(s.shape[0] - start, length)
        out = dict(samples)
        out["samples"] = s[start:start + length].clone()
        mask = samples.get("noise_mask")
        if mask is not None:
            if mask.shape[0] == 1:
                out["noise_mask"] = mask.clone()
            else:
                mask = repeat_to_batch_size(mask, s.shape[0]) if mask.shape[0] < s.shape[0] else mask
                out["noise_mask"] = mask[start:start + length].clone()
        if "batch_index" in samples:
            out["batch_index"] = list(samples["batch_index"])[start:start + length]
        else:
            out["batch_index"] = list(range(start, start + length))
        return (out,)


class LatentBatch(Node):
    """Concatenates two latent batches (the second resized to the first's size if needed)."""

    CATEGORY = "latent/batch"
    INPUTS = (Input("samples1", "LATENT"), Input("samples2", "LATENT"))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        a = samples1["samples"]
        b = reshape_latent_to(a.shape, samples2["samples"], repeat_batch=False)
        out = dict(samples1)
        out["samples"] = torch.cat((a, b), dim=0)
        out["batch_index"] = (list(samples1.get("batch_index", range(a.shape[0])))
                              + list(samples2.get("batch_index", range(b.shape[0]))))
        return (out,)


def _combine(samples1: Latent, samples2: Latent, op: Any) -> Latent:
    """`op(samples1, samples2)` with the second resized and batch-matched to the first; samples1's other keys kept."""
    a = samples1["samples"]
    out = dict(samples1)
    out["samples"] = op(a, reshape_latent_to(a.shape, samples2["samples"]))
    return out


class LatentAdd(Node):
    """samples1 + samples2 (the second resized and batch-matched to the first)."""

    CATEGORY = "latent/advanced"
    INPUTS = (Input("samples1", "LATENT"), Input("samples2", "LATENT"))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        return (_combine(samples1, samples2, torch.add),)


class LatentSubtract(Node):
    """samples1 − samples2 (the second resized and batch-matched to the first)."""

    CATEGORY = "latent/advanced"
    INPUTS = (Input("samples1", "LATENT"), Input("samples2", "LATENT"))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        return (_combine(samples1, samples2, torch.sub),)


class LatentMultiply(Node):
    """samples × multiplier."""

    CATEGORY = "latent/advanced"
    INPUTS = (Input("samples", "LATENT"), Float("multiplier", 1.0, min=-10.0, max=10.0, step=0.01))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, multiplier: float) -> tuple[Latent]:
        out = dict(samples)
        out["samples"] = samples["samples"] * multiplier
        return (out,)


class LatentInterpolate(Node):
    """Interpolates direction and magnitude separately: per pixel, the channel vectors'
    unit directions are lerped and renormalised, and their lengths lerped (ratio 1 = samples1)."""

    CATEGORY = "latent/advanced"
    INPUTS = (Input("samples1", "LATENT"), Input("samples2", "LATENT"),
              Float("ratio", 1.0, min=0.0, max=1.0, step=0.01))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples1: Latent, samples2: Latent, ratio: float) -> tuple[Latent]:
        # ComfyUI divides B×C×H×W by a B×H×W norm, which broadcasts per pixel only for batch 1;
        # keepdim gives that per-pixel behaviour for every batch size.
        a = samples1["samples"]
        b = reshape_latent_to(a.shape, samples2["samples"])
        norm_a = torch.linalg.vector_norm(a, dim=1, keepdim=True)
        norm_b = torch.linalg.vector_norm(b, dim=1, keepdim=True)
        mixed = torch.nan_to_num(a / norm_a) * ratio + torch.nan_to_num(b / norm_b) * (1.0 - ratio)
        direction = torch.nan_to_num(mixed / torch.linalg.vector_norm(mixed, dim=1, keepdim=True))
        out = dict(samples1)
        out["samples"] = direction * (norm_a * ratio + norm_b * (1.0 - ratio))
        return (out,)


def _folders() -> FoldersLike:
    ctx = current_or_none()
    if ctx is None or ctx.folders is None:
        raise RuntimeError("this node needs the folders of a Loom instance; run it through the executor")
    return ctx.folders


class SaveLatent(Node):
    """Saves latents to the output folder as a `.latent` (safetensors) file with the workflow."""

    CATEGORY = "_for_testing"
    OUTPUT_NODE = True
    INPUTS = (
        Input("samples", "LATENT"),
        String("filename_prefix", "latents/ComfyUI"),
        Hidden("prompt", "PROMPT"),
        Hidden("extra_pnginfo", "EXTRA_PNGINFO"),
    )
    OUTPUTS = ()

    def execute(self, samples: Latent, filename_prefix: str = "latents/ComfyUI", prompt: Any = None,
                extra_pnginfo: Mapping[str, Any] | None = None) -> NodeOutput:
        where = image_file_helpers.save_image_path(filename_prefix, _folders().output_directory, prompt=prompt)
        metadata: dict[str, str] = {}
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            metadata[str(key)] = json.dumps(value)
        counter = where.counter
        while (where.folder / f"{where.filename}_{counter:05}_.latent").exists():
            counter += 1
        name = f"{where.filename}_{counter:05}_.latent"
        tensors = {"latent_tensor": samples["samples"].detach().to("cpu").contiguous(),
                   "latent_format_version_0": torch.tensor([])}
        safetensors.torch.save_file(tensors, str(where.folder / name), metadata=metadata or None)
        return NodeOutput(values=(), ui={"latents": [{"filename": name, "subfolder": where.subfolder,
                                                       "type": "output"}]})


class LoadLatent(Node):
    """Loads a `.latent` file from the input folder."""

    CATEGORY = "_for_testing"
    INPUTS = (Combo("latent", FileList("input", (".latent",))),)
    OUTPUTS = (Output("LATENT"),)

    def execute(self, latent: str) -> tuple[Latent]:
        path = resolve_image(latent, _folders())
        tensors = safetensors.torch.load_file(str(path), device="cpu")
        multiplier = 1.0 if "latent_format_version_0" in tensors else 1.0 / LEGACY_LATENT_SCALE
        return ({"samples": tensors["latent_tensor"].float() * multiplier},)

    @staticmethod
    def fingerprint(latent: str) -> Any:
        """SHA-256 of the file, so a replaced file reruns the node."""
        ctx = current_or_none()
        if ctx is None or ctx.folders is None:
            return math.nan
        try:
            return image_file_helpers.file_sha256(resolve_image(latent, ctx.folders))
        except (OSError, UnsafePathError):
            return math.nan

    @staticmethod
    def validate(latent: str) -> bool | str:
        """The file must exist (ComfyUI's message: "Invalid latent file: NAME")."""
        ctx = current_or_none()
        if ctx is None or ctx.folders is None:
            return True
        try:
            path = resolve_image(latent, ctx.folders)
        except UnsafePathError:
            return f"Invalid latent file: {latent}"
        return True if path.is_file() else f"Invalid latent file: {latent}"


NODES: list[type] = [LatentUpscale, LatentUpscaleBy, LatentComposite, LatentCompositeMasked, LatentBlend,
                     LatentCrop, LatentFlip, LatentRotate, RepeatLatentBatch, LatentFromBatch, LatentBatch,
                     LatentAdd, LatentSubtract, LatentMultiply, LatentInterpolate, SaveLatent, LoadLatent]
