"""Image filter nodes: Morphology (erode, dilate, open, close, gradient, top/bottom hat), Canny edge detection, and
the RGB ↔ YUV (YCbCr) split and join ImageRGBToYUV / ImageYUVToRGB.

Names, inputs, defaults, categories and semantics are ComfyUI's (`comfy_extras/nodes_morphology.py`,
`nodes_canny.py`), which calls kornia. Morphology and the colour conversions are written here: a flat square
structuring element makes dilation a max-pool and erosion a min-pool over the window kornia uses (origin at
k//2, samples outside the image ignored, i.e. kornia's "geodesic" border), which needs no k²-sized unfold and so
also works for the large kernels the input allows; the YCbCr coefficients are kornia's (ITU-R BT.601 with a 0.5
chroma offset). Canny is kornia's own `kornia.filters.canny` (Gaussian 5×5 σ=1, Sobel, non-maximum suppression,
hysteresis), so edges match ComfyUI's pixel for pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nodes.spec import Combo, Float, Input, Int, Node, Output

MORPHOLOGY_OPERATIONS = ("erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat")
_Y_WEIGHTS = (0.299, 0.587, 0.114)
_CHROMA_OFFSET = 0.5


def _window_max(image: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The maximum of B×C×H×W `image` over a kernel_size² window whose origin is at kernel_size // 2 (kornia's
    default origin, also for even sizes); samples outside the image are ignored."""
    before = kernel_size // 2
    after = kernel_size - before - 1
    padded = F.pad(image, (before, after, before, after), mode="constant", value=float("-inf"))
    return F.max_pool2d(padded, kernel_size, stride=1)


def dilate(image: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Grey dilation of B×C×H×W `image` by a flat kernel_size² square: the window maximum."""
    return _window_max(image, kernel_size)


def erode(image: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Grey erosion: the window minimum."""
    return -_window_max(-image, kernel_size)


def morphology(image: torch.Tensor, operation: str, kernel_size: int) -> torch.Tensor:
    """One of MORPHOLOGY_OPERATIONS on B×C×H×W `image` (opening = dilate(erode), closing = erode(dilate))."""
    if operation == "erode":
        return erode(image, kernel_size)
    if operation == "dilate":
        return dilate(image, kernel_size)
    if operation == "open":
        return dilate(erode(image, kernel_size), kernel_size)
    if operation == "close":
        return erode(dilate(image, kernel_size), kernel_size)
    if operation == "gradient":
        return dilate(image, kernel_size) - erode(image, kernel_size)
    if operation == "top_hat":
        return image - dilate(erode(image, kernel_size), kernel_size)
    if operation == "bottom_hat":
        return erode(dilate(image, kernel_size), kernel_size) - image
    raise ValueError(f"Morphology: input 'operation' {operation!r} is not one of {', '.join(MORPHOLOGY_OPERATIONS)}")


class Morphology(Node):
    """Grey-scale morphology with a square kernel of ones."""

    DISPLAY_NAME = "ImageMorphology"
    CATEGORY = "image/postprocessing"
    INPUTS = (Input("image", "IMAGE"), Combo("operation", MORPHOLOGY_OPERATIONS),
              Int("kernel_size", 3, min=3, max=999, step=1))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, operation: str, kernel_size: int) -> tuple[torch.Tensor]:
        return (morphology(image.movedim(-1, 1), operation, kernel_size).movedim(1, -1),)


class Canny(Node):
    """Canny edges (white on black) with hysteresis between the two thresholds."""

    CATEGORY = "image/preprocessors"
    INPUTS = (Input("image", "IMAGE"),
              Float("low_threshold", 0.4, min=0.01, max=0.99, step=0.01),
              Float("high_threshold", 0.8, min=0.01, max=0.99, step=0.01))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, low_threshold: float, high_threshold: float) -> tuple[torch.Tensor]:
        from kornia.filters import canny

        if low_threshold > high_threshold:
            raise ValueError(f"Canny: input 'low_threshold' ({low_threshold}) must not be above 'high_threshold' "
                             f"({high_threshold})")
        pixels = image[..., :3] if image.shape[-1] > 3 else image
        _, edges = canny(pixels.movedim(-1, 1), low_threshold, high_threshold)
        return (edges.repeat(1, 3, 1, 1).movedim(1, -1),)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """…×3 RGB in 0..1 to …×3 Y, Cb, Cr (BT.601 luma, chroma centred on 0.5)."""
    r, g, b = rgb.unbind(-1)
    y = _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b
    cb = (b - y) * 0.564 + _CHROMA_OFFSET
    cr = (r - y) * 0.713 + _CHROMA_OFFSET
    return torch.stack((y, cb, cr), dim=-1)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """The inverse of `rgb_to_ycbcr` with kornia 0.8's rounded coefficients, clipped to 0..1 as kornia does."""
    y, cb, cr = ycbcr.unbind(-1)
    cb, cr = cb - _CHROMA_OFFSET, cr - _CHROMA_OFFSET
    r = y + 1.403 * cr
    g = y - 0.714 * cr - 0.344 * cb
    b = y + 1.773 * cb
    return torch.stack((r, g, b), dim=-1).clamp(0, 1)


class ImageRGBToYUV(Node):
    """Splits an RGB image into its Y, U and V planes, each shown as a grey image."""

    CATEGORY = "image/batch"
    INPUTS = (Input("image", "IMAGE"),)
    OUTPUTS = (Output("IMAGE", "Y"), Output("IMAGE", "U"), Output("IMAGE", "V"))

    def execute(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if image.shape[-1] < 3:
            raise ValueError(f"ImageRGBToYUV: input 'image' has {image.shape[-1]} channel(s); RGB needs 3")
        rgb = image[..., :3]
        yuv = rgb_to_ycbcr(rgb)
        return tuple(yuv[..., i:i + 1].expand_as(rgb) for i in range(3))  # type: ignore[return-value]


class ImageYUVToRGB(Node):
    """Joins Y, U and V planes (each averaged over its channels) back into an RGB image."""

    CATEGORY = "image/batch"
    INPUTS = (Input("Y", "IMAGE"), Input("U", "IMAGE"), Input("V", "IMAGE"))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, Y: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor]:
        shapes = {tuple(t.shape[:-1]) for t in (Y, U, V)}
        if len(shapes) != 1:
            raise ValueError(f"ImageYUVToRGB: inputs 'Y', 'U' and 'V' must have the same batch size and size, got "
                             f"{tuple(Y.shape)}, {tuple(U.shape)} and {tuple(V.shape)}")
        planes = torch.cat([t.mean(dim=-1, keepdim=True) for t in (Y, U, V)], dim=-1)
        return (ycbcr_to_rgb(planes),)


NODES: list[type] = [Morphology, Canny, ImageRGBToYUV, ImageYUVToRGB]
