"""Shared resizing maths for the image, latent and mask nodes: `common_upscale` with ComfyUI's
methods (nearest-exact, bilinear, area, bicubic, bislerp, lanczos) and crops (disabled, center),
plus `repeat_to_batch_size`.

Behaviour follows ComfyUI's `comfy/utils.py` (`common_upscale`, `bislerp`, `lanczos`,
`repeat_to_batch_size`), re-implemented here: tensors are B×C×H×W (or B×C×T×H×W, resized frame by
frame); torch modes use `torch.nn.functional.interpolate` defaults (align_corners False, no
antialias); lanczos goes through Pillow on 8-bit pixels, as ComfyUI does.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp", "lanczos")
CROP_METHODS = ("disabled", "center")


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    """Cut or tile `tensor` along `dim` to exactly `batch_size` entries (tiling repeats the whole batch)."""
    size = tensor.shape[dim]
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = math.ceil(batch_size / size)
        return tensor.repeat(reps).narrow(dim, 0, batch_size)
    return tensor


def _slerp_rows(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the rows of `a` and `b` (N×C) by `t` (N×1), with the norm
    interpolated linearly. Nearly parallel rows keep `a`; nearly opposite rows are lerped
    (the edge cases of ComfyUI's bislerp)."""
    channels = a.shape[-1]
    norm_a = torch.linalg.vector_norm(a, dim=-1, keepdim=True)
    norm_b = torch.linalg.vector_norm(b, dim=-1, keepdim=True)
    unit_a = torch.where(norm_a == 0, torch.zeros_like(a), a / norm_a)
    unit_b = torch.where(norm_b == 0, torch.zeros_like(b), b / norm_b)
    dot = (unit_a * unit_b).sum(-1)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    t_flat = t.squeeze(1)
    out = ((torch.sin((1.0 - t_flat) * omega) / sin_omega).unsqueeze(1) * unit_a
           + (torch.sin(t_flat * omega) / sin_omega).unsqueeze(1) * unit_b)
    out = out * (norm_a * (1.0 - t) + norm_b * t).expand(-1, channels)
    same = dot > 1 - 1e-5
    opposite = dot < 1e-5 - 1
    out[same] = a[same]
    out[opposite] = (a * (1.0 - t) + b * t)[opposite]
    return out


def _linear_taps(old: int, new: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of `new` output positions: the fraction between its two source taps and the taps'
    indices, found by bilinearly resizing an index ramp (half-pixel centres, clamped edges)."""
    ramp = torch.arange(old, dtype=torch.float32, device=device).reshape(1, 1, 1, -1)
    pos = F.interpolate(ramp, size=(1, new), mode="bilinear").reshape(-1)
    frac = pos - pos.floor()
    nxt = ramp + 1
    nxt[..., -1] -= 1
    second = F.interpolate(nxt, size=(1, new), mode="bilinear").reshape(-1)
    return frac, pos.to(torch.int64), second.to(torch.int64)


def _bislerp_axis(x: torch.Tensor, new: int, axis: int) -> torch.Tensor:
    """Slerp-resize B×C×H×W `x` along `axis` (2 = rows, 3 = columns), treating each pixel's
    channel vector as one point on a sphere."""
    frac, first, second = _linear_taps(x.shape[axis], new, x.device)
    a = x.index_select(axis, first).movedim(1, -1)
    b = x.index_select(axis, second).movedim(1, -1)
    shape = a.shape
    view = [1, 1, 1]
    view[axis - 1] = -1
    t = frac.reshape(view).expand(shape[:-1]).reshape(-1, 1)
    out = _slerp_rows(a.reshape(-1, shape[-1]), b.reshape(-1, shape[-1]), t)
    return out.reshape(shape).movedim(-1, 1)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize B×C×H×W by spherical-linear interpolation of channel vectors, first along the width
    then the height (ComfyUI's "bislerp" latent upscale)."""
    dtype = samples.dtype
    out = _bislerp_axis(samples.float(), width, 3)
    out = _bislerp_axis(out, height, 2)
    return out.to(dtype)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize B×C×H×W through Pillow's Lanczos filter on 8-bit pixels (values clipped to 0..1),
    as ComfyUI does; C is 1, 3 or 4."""
    frames = []
    for image in samples:
        pixels = np.clip(255.0 * image.movedim(0, -1).detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
        single = pixels.shape[-1] == 1
        picture = Image.fromarray(pixels[..., 0] if single else pixels)
        resized = np.asarray(picture.resize((width, height), resample=Image.Resampling.LANCZOS), np.float32) / 255.0
        tensor = torch.from_numpy(resized.copy())
        frames.append(tensor.unsqueeze(0) if single else tensor.movedim(-1, 0))
    return torch.stack(frames).to(samples.device, samples.dtype)


def center_crop_box(old_width: int, old_height: int, width: int, height: int) -> tuple[int, int]:
    """(x, y) margins that crop an image to the target aspect ratio, centred (ComfyUI's rounding)."""
    old_aspect = old_width / old_height
    new_aspect = width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return x, y


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """Resize B×C×H×W (or B×C×T×H×W) `samples` to `height`×`width` with one of
    `UPSCALE_METHODS`; `crop="center"` first trims the input to the target aspect ratio."""
    if upscale_method not in UPSCALE_METHODS:
        raise ValueError(f"unknown upscale method {upscale_method!r}; expected one of {', '.join(UPSCALE_METHODS)}")
    orig_shape = tuple(samples.shape)
    if len(orig_shape) > 4:
        samples = samples.reshape(orig_shape[0], orig_shape[1], -1, orig_shape[-2], orig_shape[-1]).movedim(2, 1)
        samples = samples.reshape(-1, orig_shape[1], orig_shape[-2], orig_shape[-1])
    if crop == "center":
        old_height, old_width = samples.shape[-2], samples.shape[-1]
        x, y = center_crop_box(old_width, old_height, width, height)
        samples = samples.narrow(-2, y, old_height - 2 * y).narrow(-1, x, old_width - 2 * x)
    if upscale_method == "bislerp":
        out = bislerp(samples, width, height)
    elif upscale_method == "lanczos":
        out = lanczos(samples, width, height)
    else:
        out = F.interpolate(samples, size=(height, width), mode=upscale_method)
    if len(orig_shape) == 4:
        return out
    out = out.reshape((orig_shape[0], -1, orig_shape[1], height, width))
    return out.movedim(2, 1).reshape(orig_shape[:-2] + (height, width))
