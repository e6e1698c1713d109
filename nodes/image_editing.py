"""Image operations: LoadImageMask, scaling, batching, padding for outpainting, cropping,
blending, blur, sharpen, quantize, masked compositing, batch repeat/slice, and
SaveImageWebsocket (each image sent as a PNG binary frame through the node's progress).

Names, inputs, ranges, categories and display names are ComfyUI's (`nodes.py`,
`comfy_extras/nodes_images.py`, `nodes_post_processing.py`, `nodes_mask.py`, and the
`websocket_image_save.py` example node). IMAGE values are float32 B×H×W×C in 0..1.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from folders import UnsafePathError
from nodes import image_file_helpers
from nodes.context import FoldersLike, current_or_none
from nodes.image_save_load import resolve_image
from nodes.mask import composite
from nodes.spec import Boolean, Combo, FileList, Float, Input, Int, Node, NodeOutput, Output
from nodes.upscaling_math import common_upscale

MAX_RESOLUTION = 16384
IMAGE_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS = ("disabled", "center")


def _folders() -> FoldersLike:
    ctx = current_or_none()
    if ctx is None or ctx.folders is None:
        raise RuntimeError("this node needs the folders of a Loom instance; run it through the executor")
    return ctx.folders


def alpha_fix(destination: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Match channel counts: extra source channels are dropped; a destination with fewer
    channels gets an opaque alpha channel (ComfyUI's `node_helpers.image_alpha_fix`)."""
    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        source = F.pad(source, (0, 1))
        source[..., -1] = 1.0
    return destination, source


class LoadImageMask(Node):
    """Loads one channel of an image from the input folder as a mask (alpha is inverted: 1 =
    transparent)."""

    DISPLAY_NAME = "Load Image (as Mask)"
    CATEGORY = "mask"
    INPUTS = (
        Combo("image", FileList("input", image_file_helpers.IMAGE_SUFFIXES), image_upload=True),
        Combo("channel", ("alpha", "red", "green", "blue")),
    )
    OUTPUTS = (Output("MASK"),)

    def execute(self, image: str, channel: str) -> tuple[torch.Tensor]:
        path = resolve_image(image, _folders())
        if not path.is_file():
            raise FileNotFoundError(f"Invalid image file: {image} (no such file {path})")
        with Image.open(path) as opened:
            picture = ImageOps.exif_transpose(opened) or opened
            if picture.getbands() != ("R", "G", "B", "A"):
                if picture.mode == "I":
                    picture = picture.point(lambda v: v * (1 / 255))
                picture = picture.convert("RGBA")
            band = channel[0].upper()
            values = np.asarray(picture.getchannel(band), dtype=np.float32) / 255.0
        mask = torch.from_numpy(values.copy())
        if band == "A":
            mask = 1.0 - mask
        return (mask.unsqueeze(0),)

    @staticmethod
    def fingerprint(image: str, channel: str = "alpha") -> Any:
        """SHA-256 of the file, so a replaced file reruns the node."""
        ctx = current_or_none()
        if ctx is None or ctx.folders is None:
            return math.nan
        try:
            return image_file_helpers.file_sha256(resolve_image(image, ctx.folders))
        except (OSError, UnsafePathError):
            return math.nan

    @staticmethod
    def validate(image: str) -> bool | str:
        """The file must exist (ComfyUI's message: "Invalid image file: NAME")."""
        ctx = current_or_none()
        if ctx is None or ctx.folders is None:
            return True
        try:
            path = resolve_image(image, ctx.folders)
        except UnsafePathError:
            return f"Invalid image file: {image}"
        return True if path.is_file() else f"Invalid image file: {image}"


def scale_image(image: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """Resize B×H×W×C through `common_upscale`."""
    return common_upscale(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


class ImageScale(Node):
    """Resizes images to width × height; 0 for one side keeps the aspect ratio."""

    DISPLAY_NAME = "Upscale Image"
    CATEGORY = "image/upscaling"
    INPUTS = (
        Input("image", "IMAGE"),
        Combo("upscale_method", IMAGE_UPSCALE_METHODS),
        Int("width", 512, min=0, max=MAX_RESOLUTION, step=1),
        Int("height", 512, min=0, max=MAX_RESOLUTION, step=1),
        Combo("crop", CROP_METHODS),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, upscale_method: str, width: int, height: int,
                crop: str) -> tuple[torch.Tensor]:
        if width == 0 and height == 0:
            return (image,)
        if width == 0:
            width = max(1, round(image.shape[2] * height / image.shape[1]))
        elif height == 0:
            height = max(1, round(image.shape[1] * width / image.shape[2]))
        return (scale_image(image, width, height, upscale_method, crop),)


class ImageScaleBy(Node):
    """Resizes images by a factor."""

    DISPLAY_NAME = "Upscale Image By"
    CATEGORY = "image/upscaling"
    INPUTS = (
        Input("image", "IMAGE"),
        Combo("upscale_method", IMAGE_UPSCALE_METHODS),
        Float("scale_by", 1.0, min=0.01, max=8.0, step=0.01),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
        return (scale_image(image, width, height, upscale_method, "disabled"),)


class ImageScaleToTotalPixels(Node):
    """Resizes images to about `megapixels` × 1024² pixels, keeping the aspect ratio."""

    DISPLAY_NAME = "Scale Image to Total Pixels"
    CATEGORY = "image/upscaling"
    INPUTS = (
        Input("image", "IMAGE"),
        Combo("upscale_method", IMAGE_UPSCALE_METHODS),
        Float("megapixels", 1.0, min=0.01, max=16.0, step=0.01),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, upscale_method: str, megapixels: float) -> tuple[torch.Tensor]:
        total = int(megapixels * 1024 * 1024)
        scale_by = math.sqrt(total / (image.shape[2] * image.shape[1]))
        width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
        return (scale_image(image, width, height, upscale_method, "disabled"),)


class ImageBatch(Node):
    """Concatenates two image batches (the second resized to the first's size if needed)."""

    DISPLAY_NAME = "Batch Images"
    CATEGORY = "image"
    INPUTS = (Input("image1", "IMAGE"), Input("image2", "IMAGE"))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor]:
        # Different channel counts: the image without alpha gets an opaque one.
        if image1.shape[-1] > image2.shape[-1]:
            image2 = F.pad(image2, (0, 1), value=1.0)
        elif image1.shape[-1] < image2.shape[-1]:
            image1 = F.pad(image1, (0, 1), value=1.0)
        if image1.shape[1:] != image2.shape[1:]:
            image2 = scale_image(image2, image1.shape[2], image1.shape[1], "bilinear", "center")
        return (torch.cat((image1, image2), dim=0),)


def outpaint_mask(height: int, width: int, top: int, bottom: int, left: int, right: int,
                  feathering: int) -> torch.Tensor:
    """The image part of the outpainting mask: (feathering − d)²/feathering² within `feathering`
    pixels of a padded side (d = distance to that side), else 0."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    far_h, far_w = torch.full_like(rows, height), torch.full_like(cols, width)
    distance = torch.stack([rows if top else far_h, height - rows if bottom else far_h,
                            cols if left else far_w, width - cols if right else far_w]).amin(0)
    ramp = ((feathering - distance) / feathering) ** 2 if feathering else torch.zeros_like(distance)
    return torch.where(distance < feathering, ramp, torch.zeros_like(ramp))


class ImagePadForOutpaint(Node):
    """Pads images with grey (0.5) and returns a mask: 1 on the padding, feathered into the image."""

    DISPLAY_NAME = "Pad Image for Outpainting"
    CATEGORY = "image"
    INPUTS = (
        Input("image", "IMAGE"),
        Int("left", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("top", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("right", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("bottom", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("feathering", 40, min=0, max=MAX_RESOLUTION, step=1),
    )
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    def execute(self, image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                feathering: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, height, width, channels = image.shape
        padded = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5,
                            dtype=torch.float32, device=image.device)
        padded[:, top:top + height, left:left + width, :] = image
        mask = torch.ones((height + top + bottom, width + left + right), dtype=torch.float32)
        inner = torch.zeros((height, width), dtype=torch.float32)
        if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
            inner = outpaint_mask(height, width, top, bottom, left, right, feathering)
        mask[top:top + height, left:left + width] = inner
        return padded, mask.unsqueeze(0)


class ImageCrop(Node):
    """Crops images to width × height from (x, y) (the origin is kept inside the image)."""

    DISPLAY_NAME = "Image Crop"
    CATEGORY = "image/transform"
    INPUTS = (
        Input("image", "IMAGE"),
        Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
        Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, width: int, height: int, x: int, y: int) -> tuple[torch.Tensor]:
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


def _blend_soft_light_g(x: torch.Tensor) -> torch.Tensor:
    # W3C compositing spec, soft-light D(Cb) (https://www.w3.org/TR/compositing-1/#blendingsoftlight)
    return torch.where(x <= 0.25, ((16 * x - 12) * x + 4) * x, torch.sqrt(x))


_BLEND_MODES = {
    "normal": lambda a, b: b,
    "multiply": lambda a, b: a * b,
    "screen": lambda a, b: 1 - (1 - a) * (1 - b),
    "overlay": lambda a, b: torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b)),
    "soft_light": lambda a, b: torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a),
                                           a + (2 * b - 1) * (_blend_soft_light_g(a) - a)),
    "difference": lambda a, b: a - b,
}


class ImageBlend(Node):
    """`image1·(1−f) + mode(image1, image2)·f`, clamped; image2 is resized (bicubic, centre crop)
    to image1 when their shapes differ."""

    DISPLAY_NAME = "Image Blend"
    CATEGORY = "image/postprocessing"
    INPUTS = (
        Input("image1", "IMAGE"),
        Input("image2", "IMAGE"),
        Float("blend_factor", 0.5, min=0.0, max=1.0, step=0.01),
        Combo("blend_mode", tuple(_BLEND_MODES)),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image1: torch.Tensor, image2: torch.Tensor, blend_factor: float,
                blend_mode: str) -> tuple[torch.Tensor]:
        image1, image2 = alpha_fix(image1, image2)
        image2 = image2.to(image1.device)
        if image1.shape != image2.shape:
            image2 = scale_image(image2, image1.shape[2], image1.shape[1], "bicubic", "center")
        blended = _BLEND_MODES[blend_mode](image1, image2)
        return (torch.clamp(image1 * (1 - blend_factor) + blended * blend_factor, 0, 1),)


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """A normalised size×size Gaussian on the grid [-1, 1]² (ComfyUI's parameterisation: sigma is
    relative to the kernel's half-width, not in pixels)."""
    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    weights = torch.exp(-(xx * xx + yy * yy) / (2.0 * sigma * sigma))
    return weights / weights.sum()


def _filter(image: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """Depthwise 2-D filter of B×H×W×C with reflected borders."""
    channels = image.shape[-1]
    weight = kernel.to(image.dtype).repeat(channels, 1, 1).unsqueeze(1)
    padded = F.pad(image.movedim(-1, 1), (radius, radius, radius, radius), "reflect")
    return F.conv2d(padded, weight, groups=channels).movedim(1, -1)


class ImageBlur(Node):
    """Gaussian blur over (2·radius+1)² pixels, borders reflected."""

    DISPLAY_NAME = "Image Blur"
    CATEGORY = "image/postprocessing"
    INPUTS = (
        Input("image", "IMAGE"),
        Int("blur_radius", 1, min=1, max=31, step=1),
        Float("sigma", 1.0, min=0.1, max=10.0, step=0.1),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, blur_radius: int, sigma: float) -> tuple[torch.Tensor]:
        if blur_radius == 0:
            return (image,)
        return (_filter(image, gaussian_kernel(blur_radius * 2 + 1, sigma), blur_radius),)


class ImageSharpen(Node):
    """Unsharp-style sharpening: a negative Gaussian scaled by 10·alpha with the centre raised
    so the kernel sums to 1; result clamped."""

    DISPLAY_NAME = "Image Sharpen"
    CATEGORY = "image/postprocessing"
    INPUTS = (
        Input("image", "IMAGE"),
        Int("sharpen_radius", 1, min=1, max=31, step=1),
        Float("sigma", 1.0, min=0.1, max=10.0, step=0.01),
        Float("alpha", 1.0, min=0.0, max=5.0, step=0.01),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, sharpen_radius: int, sigma: float, alpha: float) -> tuple[torch.Tensor]:
        if sharpen_radius == 0:
            return (image,)
        kernel = gaussian_kernel(sharpen_radius * 2 + 1, sigma).to(image.dtype) * -(alpha * 10)
        kernel[sharpen_radius, sharpen_radius] += 1.0 - kernel.sum()
        return (torch.clamp(_filter(image, kernel, sharpen_radius), 0, 1),)


def bayer_matrix(order: int) -> np.ndarray:
    """The order×order ordered-dither threshold matrix, centred on 0 and normalised to ±0.5
    (Bayer 1973, recursive construction)."""
    matrix = np.zeros((1, 1), np.float64)
    size = 1
    while size < order:
        size *= 2
        q = size * size
        m = q * matrix
        matrix = np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q
    return matrix


def _quantize_bayer(picture: Image.Image, palette: Image.Image, order: int) -> Image.Image:
    """Ordered dithering: add the Bayer offsets (scaled to the palette's spacing) then map to the
    nearest palette colour."""
    colours = len(palette.getpalette()) // 3
    offsets = (2 * 256 / colours) * bayer_matrix(order) + 0.5
    pixels = np.asarray(picture, dtype=np.float32)
    tiles = (math.ceil(pixels.shape[0] / order), math.ceil(pixels.shape[1] / order))
    tiled = np.tile(offsets, tiles)[:pixels.shape[0], :pixels.shape[1], None]
    dithered = np.clip(pixels + tiled, 0, 255).astype(np.uint8)
    return Image.fromarray(dithered).quantize(palette=palette, dither=Image.Dither.NONE)


class ImageQuantize(Node):
    """Reduces each image to an adaptive palette of `colors` (Pillow's median cut), optionally
    dithered (Floyd–Steinberg or ordered Bayer)."""

    DISPLAY_NAME = "Image Quantize"
    CATEGORY = "image/postprocessing"
    INPUTS = (
        Input("image", "IMAGE"),
        Int("colors", 256, min=1, max=256, step=1),
        Combo("dither", ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, colors: int, dither: str) -> tuple[torch.Tensor]:
        result = torch.zeros_like(image)
        for index in range(image.shape[0]):
            picture = Image.fromarray((image[index] * 255).to(torch.uint8).cpu().numpy(), mode="RGB")
            # Quantizing against an explicit palette image is what makes `dither` take effect
            # (https://github.com/python-pillow/Pillow/issues/5836).
            palette = picture.quantize(colors=colors)
            if dither.startswith("bayer"):
                quantized = _quantize_bayer(picture, palette, int(dither.split("-")[-1]))
            else:
                mode = Image.Dither.FLOYDSTEINBERG if dither == "floyd-steinberg" else Image.Dither.NONE
                quantized = picture.quantize(palette=palette, dither=mode)
            result[index] = torch.from_numpy(np.asarray(quantized.convert("RGB"), np.float32) / 255)
        return (result,)


class ImageCompositeMasked(Node):
    """Pastes `source` into `destination` at (x, y) through an optional mask."""

    CATEGORY = "image"
    INPUTS = (
        Input("destination", "IMAGE"),
        Input("source", "IMAGE"),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
        Boolean("resize_source", False),
        Input("mask", "MASK", optional=True),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, resize_source: bool = False,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        destination, source = alpha_fix(destination, source)
        out = composite(destination.clone().movedim(-1, 1), source.movedim(-1, 1), x, y, mask, 1, resize_source)
        return (out.movedim(1, -1),)


class RepeatImageBatch(Node):
    """Repeats the whole batch `amount` times."""

    CATEGORY = "image/batch"
    INPUTS = (Input("image", "IMAGE"), Int("amount", 1, min=1, max=4096))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, amount: int) -> tuple[torch.Tensor]:
        return (image.repeat((amount, 1, 1, 1)),)


class ImageFromBatch(Node):
    """`length` images from `batch_index` on (both clipped to the batch)."""

    CATEGORY = "image/batch"
    INPUTS = (Input("image", "IMAGE"), Int("batch_index", 0, min=0, max=4095), Int("length", 1, min=1, max=4096))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor, batch_index: int, length: int) -> tuple[torch.Tensor]:
        start = min(image.shape[0] - 1, batch_index)
        length = min(image.shape[0] - start, length)
        return (image[start:start + length].clone(),)


class SaveImageWebsocket(Node):
    """Sends each image to the submitting client as a PNG binary frame (no file, no metadata)."""

    CATEGORY = "api/image"
    OUTPUT_NODE = True
    INPUTS = (Input("images", "IMAGE"),)
    OUTPUTS = ()

    def execute(self, images: torch.Tensor) -> NodeOutput:
        ctx = current_or_none()
        total = int(images.shape[0])
        for step, image in enumerate(images):
            if ctx is not None:
                ctx.progress(step, total, ("PNG", image_file_helpers.tensor_to_pil(image), None))
        return NodeOutput(values=(), ui=None)

    @staticmethod
    def fingerprint(images: Any = None) -> float:
        """Always rerun: the frames go to whoever submitted this prompt."""
        return time.time()


NODES: list[type] = [LoadImageMask, ImageScale, ImageScaleBy, ImageScaleToTotalPixels, ImageBatch,
                     ImagePadForOutpaint, ImageCrop, ImageBlend, ImageBlur, ImageSharpen, ImageQuantize,
                     ImageCompositeMasked, RepeatImageBatch, ImageFromBatch, SaveImageWebsocket]
