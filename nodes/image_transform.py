"""Image geometry and noise nodes: GetImageSize, ImageFlip, ImageRotate, ImageStitch, ImageScaleToMaxDimension,
ResizeAndPadImage and ImageAddNoise.

Names, inputs, defaults, ranges, categories and semantics are ComfyUI's (`comfy_extras/nodes_images.py`). IMAGE
values are float32 B×H×W×C in 0..1; resizing goes through `nodes.upscaling_math.common_upscale`, as ComfyUI's
`comfy.utils.common_upscale`, so the same methods give the same pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nodes.spec import Boolean, Combo, Float, Hidden, Input, Int, Node, Output
from nodes.upscaling_math import common_upscale

MAX_RESOLUTION = 16384
ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")
FLIP_METHODS = ("x-axis: vertically", "y-axis: horizontally")
STITCH_DIRECTIONS = ("right", "down", "left", "up")
SPACING_COLORS = ("white", "black", "red", "green", "blue")
_SPACING_RGB = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
                "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}
# ComfyUI lists "bilinear" twice here; the combo keeps its exact choices.
MAX_DIMENSION_METHODS = ("area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic")
PAD_METHODS = ("area", "bicubic", "nearest-exact", "bilinear", "lanczos")


def resize(image: torch.Tensor, width: int, height: int, method: str) -> torch.Tensor:
    """B×H×W×C `image` resized to `height`×`width` with an upscale method, no cropping."""
    return common_upscale(image.movedim(-1, 1), width, height, method, "disabled").movedim(1, -1)


class GetImageSize(Node):
    """Returns width and height of the image, and passes it through unchanged."""

    DISPLAY_NAME = "Get Image Size"
    CATEGORY = "image"
    SEARCH_ALIASES = ("dimensions", "resolution", "image info")
    INPUTS = (Input("image", "IMAGE"), Hidden("unique_id", "UNIQUE_ID"))
    OUTPUTS = (Output("INT", "width"), Output("INT", "height"), Output("INT", "batch_size"))

    def execute(self, image: torch.Tensor, unique_id: str | None = None) -> tuple[int, int, int]:
        return (int(image.shape[2]), int(image.shape[1]), int(image.shape[0]))


class ImageFlip(Node):
    """Mirrors the image top to bottom (about the x axis) or left to right (about the y axis)."""

    CATEGORY = "image/transform"
    SEARCH_ALIASES = ("mirror", "reflect")
    INPUTS = (Input("image", "IMAGE"), Combo("flip_method", FLIP_METHODS))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, flip_method: str) -> tuple[torch.Tensor]:
        if flip_method.startswith("x"):
            return (torch.flip(image, dims=[1]),)
        if flip_method.startswith("y"):
            return (torch.flip(image, dims=[2]),)
        return (image,)


class ImageRotate(Node):
    """Turns the image clockwise by a multiple of 90 degrees."""

    DISPLAY_NAME = "Rotate"
    CATEGORY = "image/transform"
    SEARCH_ALIASES = ("turn", "flip orientation")
    INPUTS = (Input("image", "IMAGE"), Combo("rotation", ROTATIONS))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, rotation: str) -> tuple[torch.Tensor]:
        turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        # rot90 from the width axis towards the height axis is a clockwise turn of the picture.
        return (torch.rot90(image, k=turns, dims=[2, 1]),)


def _match_batches(image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both batches as long as the longer, the shorter one repeating its last image."""
    size = max(image1.shape[0], image2.shape[0])

    def grow(image: torch.Tensor) -> torch.Tensor:
        missing = size - image.shape[0]
        return torch.cat([image, image[-1:].repeat(missing, 1, 1, 1)]) if missing else image

    return grow(image1), grow(image2)


def _center_pad(image: torch.Tensor, size: int, axis: int, value: float) -> torch.Tensor:
    """Pad B×H×W×C `image` along `axis` (1 rows, 2 columns) to `size`, half before and half after."""
    missing = size - image.shape[axis]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    pad = (0, 0, 0, 0, before, after) if axis == 1 else (0, 0, before, after)
    return F.pad(image, pad, mode="constant", value=value)


def _match_channels(image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give the image with fewer channels extra channels of ones (an opaque alpha)."""
    channels = max(image1.shape[-1], image2.shape[-1])

    def grow(image: torch.Tensor) -> torch.Tensor:
        missing = channels - image.shape[-1]
        if not missing:
            return image
        return torch.cat([image, torch.ones(*image.shape[:-1], missing, device=image.device, dtype=image.dtype)], -1)

    return grow(image1), grow(image2)


def _spacer(image1: torch.Tensor, image2: torch.Tensor, width: int, horizontal: bool, color: str) -> torch.Tensor:
    """The strip put between the two images: `width` wide, in `color`, opaque when there is an alpha channel."""
    channels = image1.shape[-1]
    if horizontal:
        shape = (image1.shape[0], max(image1.shape[1], image2.shape[1]), width, channels)
    else:
        shape = (image1.shape[0], width, max(image1.shape[2], image2.shape[2]), channels)
    strip = torch.zeros(shape, device=image1.device, dtype=image1.dtype)
    for index, value in enumerate(_SPACING_RGB[color][:channels]):
        strip[..., index] = value
    if channels == 4:
        strip[..., 3] = 1.0
    return strip


class ImageStitch(Node):
    __doc__ = ("Stitches image2 to image1 in the specified direction.\nIf image2 is not provided, returns image1 "
               "unchanged.\nOptional spacing can be added between images.")

    DISPLAY_NAME = "Image Stitch"
    CATEGORY = "image/transform"
    SEARCH_ALIASES = ("combine images", "join images", "concatenate images", "side by side")
    INPUTS = (
        Input("image1", "IMAGE"),
        Combo("direction", STITCH_DIRECTIONS, "right"),
        Boolean("match_image_size", True),
        Int("spacing_width", 0, min=0, max=1024, step=2),
        Combo("spacing_color", SPACING_COLORS, "white"),
        Input("image2", "IMAGE", optional=True),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image1: torch.Tensor, direction: str, match_image_size: bool, spacing_width: int,
                spacing_color: str, image2: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        if image2 is None:
            return (image1,)
        horizontal = direction in ("left", "right")
        image1, image2 = _match_batches(image1, image2)
        if match_image_size:
            (h1, w1), (h2, w2) = image1.shape[1:3], image2.shape[1:3]
            aspect = w2 / h2
            width, height = (int(h1 * aspect), h1) if horizontal else (w1, int(w1 / aspect))
            image2 = resize(image2, max(1, width), max(1, height), "lanczos")
        else:
            # Pad the shorter side; only white and black are greys, the colours pad with black (as ComfyUI).
            value = {"white": 1.0}.get(spacing_color, 0.0)
            axis = 1 if horizontal else 2
            size = max(image1.shape[axis], image2.shape[axis])
            image1, image2 = _center_pad(image1, size, axis, value), _center_pad(image2, size, axis, value)
        image1, image2 = _match_channels(image1, image2)
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            parts.insert(1, _spacer(image1, image2, spacing_width + spacing_width % 2, horizontal, spacing_color))
        return (torch.cat(parts, dim=2 if horizontal else 1),)


class ImageScaleToMaxDimension(Node):
    """Resizes the image so that its longer side is `largest_size`, keeping the aspect ratio."""

    CATEGORY = "image/upscaling"
    INPUTS = (Input("image", "IMAGE"), Combo("upscale_method", MAX_DIMENSION_METHODS),
              Int("largest_size", 512, min=0, max=MAX_RESOLUTION, step=1))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, upscale_method: str, largest_size: int) -> tuple[torch.Tensor]:
        height, width = int(image.shape[1]), int(image.shape[2])
        if height > width:
            width, height = round(width / height * largest_size), largest_size
        elif width > height:
            width, height = largest_size, round(height / width * largest_size)
        else:
            width = height = largest_size
        if width < 1 or height < 1:
            raise ValueError(f"ImageScaleToMaxDimension: input 'largest_size' {largest_size} makes the image "
                             f"{width}×{height}; it must be large enough for at least one pixel on each side")
        return (resize(image, width, height, upscale_method),)


class ResizeAndPadImage(Node):
    """Fits the image inside target_width × target_height (keeping its aspect ratio) and pads the rest."""

    CATEGORY = "image/transform"
    SEARCH_ALIASES = ("fit to size",)
    INPUTS = (
        Input("image", "IMAGE"),
        Int("target_width", 512, min=1, max=MAX_RESOLUTION, step=1),
        Int("target_height", 512, min=1, max=MAX_RESOLUTION, step=1),
        Combo("padding_color", ("white", "black")),
        Combo("interpolation", PAD_METHODS),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, target_width: int, target_height: int, padding_color: str,
                interpolation: str) -> tuple[torch.Tensor]:
        batch, height, width, channels = image.shape
        scale = min(target_width / width, target_height / height)
        new_width, new_height = int(width * scale), int(height * scale)
        if new_width < 1 or new_height < 1:
            raise ValueError(f"ResizeAndPadImage: a {width}×{height} image fitted into {target_width}×"
                             f"{target_height} has no pixels left on one side; choose a larger target")
        resized = resize(image, new_width, new_height, interpolation)
        value = 0.0 if padding_color == "black" else 1.0
        out = torch.full((batch, target_height, target_width, channels), value, dtype=image.dtype,
                         device=image.device)
        top, left = (target_height - new_height) // 2, (target_width - new_width) // 2
        out[:, top:top + new_height, left:left + new_width, :] = resized
        return (out,)


class ImageAddNoise(Node):
    """Adds Gaussian noise of the given strength (from a CPU generator seeded with `seed`) and clips to 0..1."""

    CATEGORY = "image"
    SEARCH_ALIASES = ("film grain",)
    INPUTS = (
        Input("image", "IMAGE"),
        Int("seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
            tooltip="The random seed used for creating the noise."),
        Float("strength", 0.5, min=0.0, max=1.0, step=0.01),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, seed: int, strength: float) -> tuple[torch.Tensor]:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(image.size(), generator=generator, device="cpu").to(image)
        return (torch.clip(image + strength * noise, min=0.0, max=1.0),)


NODES: list[type] = [GetImageSize, ImageFlip, ImageRotate, ImageStitch, ImageScaleToMaxDimension, ResizeAndPadImage,
                     ImageAddNoise]
