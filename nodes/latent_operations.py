"""Latent operations and the latent nodes of ComfyUI's `nodes_latent.py` that Loom lacked: LatentConcat, LatentCut,
LatentBatchSeedBehavior, and the LATENT_OPERATION family (LatentOperationSharpen, LatentOperationTonemapReinhard,
applied by LatentApplyOperation to a LATENT or by LatentApplyOperationCFG to the guidance difference during
sampling).

A LATENT_OPERATION is a callable `op(latent=tensor) -> tensor` (ComfyUI's convention, so operations from packs
work with these nodes and ours with theirs). Operations are pure: they return new tensors and never write to
their input. Names, inputs, ranges and categories are ComfyUI's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from diffusion.files.assemble import model_sampling_of
from diffusion.patcher import ModelHandle
from nodes.image_editing import gaussian_kernel
from nodes.latent_transforms import MAX_RESOLUTION, Latent
from nodes.spec import Combo, Float, Input, Int, Node, Output
from nodes.upscaling_math import repeat_to_batch_size

_ADVANCED = "latent/advanced"
_OPERATIONS = "latent/advanced/operations"
_AXIS_OFFSET = {"x": 1, "y": 2, "t": 3}  # counted from the last dimension


def _axis(dim: str, ndim: int) -> int:
    """The tensor dimension for "x" (width), "y" (height) or "t" (frames), with or without a leading "-"."""
    return ndim - _AXIS_OFFSET[dim.lstrip("-")]


def concat_latents(s1: torch.Tensor, s2: torch.Tensor, dim: str) -> torch.Tensor:
    """s2 repeated to s1's batch, joined after s1 along dim ("x"/"y"/"t"), or before it for "-x"/"-y"/"-t"."""
    s2 = repeat_to_batch_size(s2, s1.shape[0])
    axis = _axis(dim, s1.ndim)
    if axis < 1:
        raise ValueError(f"LatentConcat: dim {dim!r} needs a latent with more dimensions than {tuple(s1.shape)}")
    first, second = (s2, s1) if dim.startswith("-") else (s1, s2)
    others = [i for i in range(s1.ndim) if i not in (0, axis)]
    if any(first.shape[i] != second.shape[i] for i in others):
        raise ValueError(f"LatentConcat: samples1 {tuple(s1.shape)} and samples2 {tuple(s2.shape)} differ in a "
                         f"dimension other than {dim!r}; resize one first")
    return torch.cat((first, second), dim=axis)


def cut_latent(s: torch.Tensor, dim: str, index: int, amount: int) -> torch.Tensor:
    """`amount` slices from `index` along dim (negative index counts from the end), clamped to the latent."""
    axis = _axis(dim, s.ndim)
    size = s.shape[axis]
    if index >= 0:
        index = min(index, size - 1)
        amount = min(size - index, amount)
    else:
        index = max(index, -size)
        amount = min(-index, amount)
    return torch.narrow(s, axis, index, amount)


@dataclass(frozen=True)
class Sharpen:
    """Unsharp-style sharpening of the latent's direction field: each pixel's channel vector is split into its
    norm ("luminance") and unit direction; the directions are convolved with a centre-weighted negative Gaussian
    (a high-boost kernel whose weights sum to 1) and scaled back by the norm."""

    radius: int
    sigma: float
    alpha: float

    def kernel(self, device: torch.device) -> torch.Tensor:
        size = self.radius * 2 + 1
        kernel = gaussian_kernel(size, self.sigma).to(device) * (self.alpha * -10)
        centre = size // 2
        kernel[centre, centre] = kernel[centre, centre] - kernel.sum() + 1.0
        return kernel

    def __call__(self, latent: torch.Tensor, **_: Any) -> torch.Tensor:
        norm = (torch.linalg.vector_norm(latent, dim=1) + 1e-6)[:, None]
        direction = latent / norm
        channels, r = latent.shape[1], self.radius
        kernel = self.kernel(latent.device).to(latent.dtype)
        padded = F.pad(direction, (r, r, r, r), "reflect")
        weight = kernel.repeat(channels, 1, 1).unsqueeze(1)
        sharpened = F.conv2d(padded, weight, padding=r, groups=channels)[:, :, r:-r, r:-r]
        return norm * sharpened


@dataclass(frozen=True)
class TonemapReinhard:
    """Reinhard tone mapping of the per-pixel channel-vector norms: norms are divided by a "white point"
    (mean + 5·std of the norms, times `multiplier`), mapped by n/(n+1) and scaled back; directions are kept."""

    multiplier: float

    def __call__(self, latent: torch.Tensor, **_: Any) -> torch.Tensor:
        norm = (torch.linalg.vector_norm(latent, dim=1) + 1e-10)[:, None]
        direction = latent / norm
        dims = list(range(1, norm.ndim))
        top = (torch.std(norm, dim=dims, keepdim=True) * 5 + torch.mean(norm, dim=dims, keepdim=True)) \
            * self.multiplier
        scaled = norm / top
        return direction * (scaled / (scaled + 1.0)) * top


@dataclass(frozen=True)
class OperationOnGuidance:
    """A `sampler_pre_cfg_function` applying a latent operation to (cond − uncond) — or to cond when there is no
    uncond pass — while sigma is within [sigma_end, sigma_start]."""

    operation: Any
    sigma_start: float
    sigma_end: float

    def __call__(self, args: dict[str, Any]) -> list:
        conds_out = list(args["conds_out"])
        sigma = float(args["sigma"][0])
        if sigma > self.sigma_start or sigma < self.sigma_end:
            return conds_out
        if len(conds_out) == 2 and conds_out[1] is not None:
            conds_out[0] = self.operation(latent=conds_out[0] - conds_out[1]) + conds_out[1]
        else:
            conds_out[0] = self.operation(latent=conds_out[0])
        return conds_out


class LatentConcat(Node):
    """Joins two latents along width (x), height (y) or frames (t); a leading "-" puts samples2 first."""

    CATEGORY = _ADVANCED
    INPUTS = (Input("samples1", "LATENT"), Input("samples2", "LATENT"),
              Combo("dim", ("x", "-x", "y", "-y", "t", "-t")))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples1: Latent, samples2: Latent, dim: str) -> tuple[Latent]:
        return ({**samples1, "samples": concat_latents(samples1["samples"], samples2["samples"], dim)},)


class LatentCut(Node):
    """Keeps `amount` slices starting at `index` along x, y or t (negative index from the end)."""

    CATEGORY = _ADVANCED
    INPUTS = (Input("samples", "LATENT"), Combo("dim", ("x", "y", "t")),
              Int("index", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
              Int("amount", 1, min=1, max=MAX_RESOLUTION, step=1))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, dim: str, index: int, amount: int) -> tuple[Latent]:
        s = samples["samples"]
        if _axis(dim, s.ndim) < 1:
            raise ValueError(f"LatentCut: dim {dim!r} needs a latent with more dimensions than {tuple(s.shape)}")
        return ({**samples, "samples": cut_latent(s, dim, index, amount)},)


class LatentBatchSeedBehavior(Node):
    """"fixed": every latent of the batch gets the first one's noise (batch_index all equal); "random": each its
    own (batch_index removed)."""

    CATEGORY = _ADVANCED
    INPUTS = (Input("samples", "LATENT"), Combo("seed_behavior", ("random", "fixed"), default="fixed"))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, seed_behavior: str) -> tuple[Latent]:
        out = dict(samples)
        if seed_behavior == "random":
            out.pop("batch_index", None)
        else:
            first = list(out.get("batch_index", [0]))[0]
            out["batch_index"] = [first] * samples["samples"].shape[0]
        return (out,)


class LatentApplyOperation(Node):
    """Applies a LATENT_OPERATION to a latent."""

    CATEGORY = _OPERATIONS
    EXPERIMENTAL = True
    INPUTS = (Input("samples", "LATENT"), Input("operation", "LATENT_OPERATION"))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, samples: Latent, operation: Any) -> tuple[Latent]:
        return ({**samples, "samples": operation(latent=samples["samples"])},)


class LatentApplyOperationCFG(Node):
    """Patches the model so that during sampling the operation is applied to the guidance direction
    (cond − uncond) before CFG mixes them."""

    CATEGORY = _OPERATIONS
    EXPERIMENTAL = True
    INPUTS = (Input("model", "MODEL"), Input("operation", "LATENT_OPERATION"),
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001, optional=True),
              Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001, optional=True))
    OUTPUTS = (Output("MODEL"),)

    def execute(self, model: ModelHandle, operation: Any, start_percent: float = 0.0,
                end_percent: float = 1.0) -> tuple[ModelHandle]:
        sampling = model_sampling_of(model)
        patch = OperationOnGuidance(operation, float(sampling.percent_to_sigma(start_percent)),
                                    float(sampling.percent_to_sigma(end_percent)))
        clone = model.clone()
        clone.add_wrapper("sampler_pre_cfg_function", patch)
        return (clone,)


class LatentOperationTonemapReinhard(Node):
    """A LATENT_OPERATION compressing large latent magnitudes with Reinhard's curve."""

    CATEGORY = _OPERATIONS
    EXPERIMENTAL = True
    INPUTS = (Float("multiplier", 1.0, min=0.0, max=100.0, step=0.01),)
    OUTPUTS = (Output("LATENT_OPERATION"),)

    def execute(self, multiplier: float) -> tuple[TonemapReinhard]:
        return (TonemapReinhard(multiplier),)


class LatentOperationSharpen(Node):
    """A LATENT_OPERATION sharpening the latent."""

    CATEGORY = _OPERATIONS
    EXPERIMENTAL = True
    INPUTS = (Int("sharpen_radius", 9, min=1, max=31, step=1), Float("sigma", 1.0, min=0.1, max=10.0, step=0.1),
              Float("alpha", 0.1, min=0.0, max=5.0, step=0.01))
    OUTPUTS = (Output("LATENT_OPERATION"),)

    def execute(self, sharpen_radius: int, sigma: float, alpha: float) -> tuple[Sharpen]:
        return (Sharpen(sharpen_radius, sigma, alpha),)


NODES: list[type] = [LatentConcat, LatentCut, LatentBatchSeedBehavior, LatentApplyOperation, LatentApplyOperationCFG,
                     LatentOperationTonemapReinhard, LatentOperationSharpen]
