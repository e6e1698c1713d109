"""Running an image-to-image function (VAE decode or encode) over overlapping tiles and blending the seams.

Owns `tiled_apply` (one tiling: tiles step by `tile − overlap`, each result weighted by a mask that ramps linearly
over `overlap` at every edge, the sum divided by the summed weights) and `tiled_average`, the mean of three tilings
with differently shaped tiles — (h, w), (2h, w/2), (h/2, 2w) — so that no seam sits at the same place in all three.
This follows the behaviour of ComfyUI's VAEDecodeTiled/VAEEncodeTiled (`comfy.sd.VAE.decode_tiled_`), rewritten.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: every `tile − overlap` until the tiles cover `size`."""
    if tile >= size:
        return [0]
    step = tile - overlap
    return list(range(0, size - overlap, step))


def _ramp(length: int, feather: int) -> torch.Tensor:
    """Edge weights along one axis: (t+1)/feather at distance t from either edge, multiplied where they meet."""
    w = torch.ones(length)
    for t in range(min(feather, length)):
        w[t] *= (t + 1) / feather
        w[length - 1 - t] *= (t + 1) / feather
    return w


def tiled_apply(
    x: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    tile: tuple[int, int],
    overlap: int,
    scale: float,
    out_channels: int,
) -> torch.Tensor:
    """`fn` over tiles of `x` (B×C×H×W, tile = (height, width)), blended; returns B×out_channels×H·scale×W·scale.

    `fn` maps a B×C×h×w tile to B×out_channels×(h·scale)×(w·scale) float32 on the CPU.
    """
    b, _, height, width = x.shape
    th, tw = min(tile[0], height), min(tile[1], width)
    overlap = max(0, min(overlap, min(th, tw) // 2))
    out = torch.zeros(b, out_channels, round(height * scale), round(width * scale))
    weight = torch.zeros(1, 1, out.shape[2], out.shape[3])
    feather = round(overlap * scale)
    for y in _starts(height, th, overlap):
        for x0 in _starts(width, tw, overlap):
            h, w = min(th, height - y), min(tw, width - x0)
            result = fn(x[:, :, y:y + h, x0:x0 + w]).float()
            oy, ox = round(y * scale), round(x0 * scale)
            rh, rw = result.shape[2], result.shape[3]
            mask = (_ramp(rh, feather)[:, None] * _ramp(rw, feather)[None, :]) if feather else torch.ones(rh, rw)
            out[:, :, oy:oy + rh, ox:ox + rw] += result * mask
            weight[:, :, oy:oy + rh, ox:ox + rw] += mask
    return out / weight


def tiled_average(
    x: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    tile: tuple[int, int],
    overlap: int,
    scale: float,
    out_channels: int,
) -> torch.Tensor:
    """The mean of `tiled_apply` over tiles (h, w), (2h, w/2) and (h/2, 2w), `tile` = (h, w)."""
    th, tw = tile
    shapes = [(th, tw), (th * 2, max(1, tw // 2)), (max(1, th // 2), tw * 2)]
    total = None
    for shape in shapes:
        part = tiled_apply(x, fn, shape, overlap, scale, out_channels)
        total = part if total is None else total + part
    return total / len(shapes)
