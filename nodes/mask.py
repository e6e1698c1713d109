"""Mask nodes (MaskToImage, ImageToMask, ImageColorToMask, SolidMask, InvertMask, CropMask,
MaskComposite, FeatherMask, GrowMask, ThresholdMask) and `composite`, the masked paste shared
with ImageCompositeMasked and LatentCompositeMasked.

Names, inputs, ranges, categories and display names are ComfyUI's (`comfy_extras/nodes_mask.py`).
MASK values are B×H×W float tensors (1 = selected); a 2-D H×W mask is read as a batch of one.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nodes.spec import Boolean, Combo, Float, Input, Int, Node, Output
from nodes.upscaling_math import repeat_to_batch_size

MAX_RESOLUTION = 16384
CHANNELS = ("red", "green", "blue", "alpha")


def as_batch(mask: torch.Tensor) -> torch.Tensor:
    """The mask as B×H×W (a 2-D mask becomes a batch of one)."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
              multiplier: int = 8, resize_source: bool = False) -> torch.Tensor:
    """Paste B×C×H×W `source` into `destination` (modified in place and returned) with its top-left
    corner at (x, y) / `multiplier`, blended through `mask` (resized bilinearly to the source).

    The source is first resized to the destination when `resize_source`, and its batch tiled or
    cut to the destination's; parts falling outside the destination are dropped.
    """
    source = source.to(destination.device)
    if resize_source:
        source = F.interpolate(source, size=(destination.shape[-2], destination.shape[-1]), mode="bilinear")
    source = repeat_to_batch_size(source, destination.shape[0])
    x = max(-source.shape[-1] * multiplier, min(x, destination.shape[-1] * multiplier))
    y = max(-source.shape[-2] * multiplier, min(y, destination.shape[-2] * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + source.shape[-1], top + source.shape[-2]
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = mask.to(destination.device, copy=True).reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        mask = F.interpolate(mask, size=(source.shape[-2], source.shape[-1]), mode="bilinear")
        mask = repeat_to_batch_size(mask, source.shape[0])
    visible_w = destination.shape[-1] - left + min(0, x)
    visible_h = destination.shape[-2] - top + min(0, y)
    mask = mask[:, :, :visible_h, :visible_w]
    src = source[..., :visible_h, :visible_w]
    dst = destination[..., top:bottom, left:right]
    destination[..., top:bottom, left:right] = mask * src + (1.0 - mask) * dst
    return destination


class MaskToImage(Node):
    """A mask as a grey RGB image."""

    DISPLAY_NAME = "Convert Mask to Image"
    CATEGORY = "mask"
    INPUTS = (Input("mask", "MASK"),)
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3),)


class ImageToMask(Node):
    """One channel of an image as a mask."""

    DISPLAY_NAME = "Convert Image to Mask"
    CATEGORY = "mask"
    INPUTS = (Input("image", "IMAGE"), Combo("channel", CHANNELS))
    OUTPUTS = (Output("MASK"),)

    def execute(self, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"ImageToMask: the image has {image.shape[-1]} channels, so it has no {channel} channel")
        return (image[:, :, :, index],)


class ImageColorToMask(Node):
    """1 where the pixel's 8-bit RGB colour (0xRRGGBB) equals `color`, else 0."""

    CATEGORY = "mask"
    INPUTS = (Input("image", "IMAGE"), Int("color", 0, min=0, max=0xFFFFFF, step=1, display="number"))
    OUTPUTS = (Output("MASK"),)

    def execute(self, image: torch.Tensor, color: int) -> tuple[torch.Tensor]:
        rgb = (torch.clamp(image, 0, 1.0) * 255.0).round().to(torch.int)
        packed = (rgb[:, :, :, 0] << 16) + (rgb[:, :, :, 1] << 8) + rgb[:, :, :, 2]
        return ((packed == color).float(),)


class SolidMask(Node):
    """A 1×height×width mask of one value."""

    CATEGORY = "mask"
    INPUTS = (
        Float("value", 1.0, min=0.0, max=1.0, step=0.01),
        Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
        Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
    )
    OUTPUTS = (Output("MASK"),)

    def execute(self, value: float, width: int, height: int) -> tuple[torch.Tensor]:
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask(Node):
    """1 − mask."""

    CATEGORY = "mask"
    INPUTS = (Input("mask", "MASK"),)
    OUTPUTS = (Output("MASK"),)

    def execute(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - mask,)


class CropMask(Node):
    """The mask's rectangle from (x, y), width × height (clipped to the mask)."""

    CATEGORY = "mask"
    INPUTS = (
        Input("mask", "MASK"),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
        Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
    )
    OUTPUTS = (Output("MASK"),)

    def execute(self, mask: torch.Tensor, x: int, y: int, width: int, height: int) -> tuple[torch.Tensor]:
        return (as_batch(mask)[:, y:y + height, x:x + width],)


_MASK_OPS = {
    "multiply": lambda d, s: d * s,
    "add": lambda d, s: d + s,
    "subtract": lambda d, s: d - s,
    "and": lambda d, s: torch.logical_and(d.round().bool(), s.round().bool()).float(),
    "or": lambda d, s: torch.logical_or(d.round().bool(), s.round().bool()).float(),
    "xor": lambda d, s: torch.logical_xor(d.round().bool(), s.round().bool()).float(),
}


class MaskComposite(Node):
    """Combines `source` into `destination` at (x, y) with an arithmetic or logical operation
    (logical ones round to 0/1 first); the result is clamped to 0..1."""

    CATEGORY = "mask"
    INPUTS = (
        Input("destination", "MASK"),
        Input("source", "MASK"),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
        Combo("operation", tuple(_MASK_OPS)),
    )
    OUTPUTS = (Output("MASK"),)

    def execute(self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
                operation: str) -> tuple[torch.Tensor]:
        output = as_batch(destination).clone()
        source = as_batch(source)
        right = min(x + source.shape[-1], output.shape[-1])
        bottom = min(y + source.shape[-2], output.shape[-2])
        src = source[:, :bottom - y, :right - x]
        output[:, y:bottom, x:right] = _MASK_OPS[operation](output[:, y:bottom, x:right], src)
        return (torch.clamp(output, 0.0, 1.0),)


class FeatherMask(Node):
    """Fades the mask linearly towards 0 over the given number of pixels from each edge."""

    CATEGORY = "mask"
    INPUTS = (
        Input("mask", "MASK"),
        Int("left", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("top", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("right", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("bottom", 0, min=0, max=MAX_RESOLUTION, step=1),
    )
    OUTPUTS = (Output("MASK"),)

    def execute(self, mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> tuple[torch.Tensor]:
        output = as_batch(mask).clone()
        width, height = output.shape[-1], output.shape[-2]
        left, right, top, bottom = min(left, width), min(right, width), min(top, height), min(bottom, height)
        for i in range(left):
            output[:, :, i] *= (i + 1.0) / left
        # ComfyUI indexes the right and bottom ramps with -i, so i = 0 lands on the first column/row
        # (index -0) and the last column/row gets 2/n; kept for identical masks.
        for i in range(right):
            output[:, :, -i] *= (i + 1) / right
        for i in range(top):
            output[:, i, :] *= (i + 1) / top
        for i in range(bottom):
            output[:, -i, :] *= (i + 1) / bottom
        return (output,)


class GrowMask(Node):
    """Dilates (expand > 0) or erodes (expand < 0) the mask one pixel per step, with a cross
    (tapered corners) or square 3×3 footprint (grey-scale morphology, scipy.ndimage)."""

    DISPLAY_NAME = "Grow Mask"
    CATEGORY = "mask"
    INPUTS = (
        Input("mask", "MASK"),
        Int("expand", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
        Boolean("tapered_corners", True),
    )
    OUTPUTS = (Output("MASK"),)

    def execute(self, mask: torch.Tensor, expand: int, tapered_corners: bool) -> tuple[torch.Tensor]:
        corner = 0 if tapered_corners else 1
        footprint = np.array([[corner, 1, corner], [1, 1, 1], [corner, 1, corner]])
        from scipy import ndimage  # here, not at module level: scipy costs start-up time

        step = ndimage.grey_erosion if expand < 0 else ndimage.grey_dilation
        out = []
        for single in as_batch(mask):
            array = single.detach().cpu().numpy()
            for _ in range(abs(expand)):
                array = step(array, footprint=footprint)
            out.append(torch.from_numpy(np.ascontiguousarray(array)))
        return (torch.stack(out, dim=0),)


class ThresholdMask(Node):
    """1 where the mask is above `value`, else 0."""

    CATEGORY = "mask"
    INPUTS = (Input("mask", "MASK"), Float("value", 0.5, min=0.0, max=1.0, step=0.01))
    OUTPUTS = (Output("MASK"),)

    def execute(self, mask: torch.Tensor, value: float) -> tuple[torch.Tensor]:
        return ((mask > value).float(),)


NODES: list[type] = [MaskToImage, ImageToMask, ImageColorToMask, SolidMask, InvertMask, CropMask, MaskComposite,
                     FeatherMask, GrowMask, ThresholdMask]
