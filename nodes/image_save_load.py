"""Basic image nodes: EmptyImage, ImageInvert, SaveImage, PreviewImage and LoadImage.

Names, inputs, ranges, categories and display names are ComfyUI's (`nodes.py`). IMAGE values
are float32 B×H×W×C tensors in 0..1 and MASK values B×H×W; file handling lives in
`nodes/image_file_helpers.py`, folders come from the running node's context (`nodes.context`).
"""
from __future__ import annotations

import math
import secrets
import string
from pathlib import Path
from typing import Any, Mapping

import torch

from folders import UnsafePathError, resolve_inside, split_annotation
from nodes import image_file_helpers
from nodes.context import FoldersLike, current_or_none
from nodes.spec import Combo, FileList, Hidden, Input, Int, Node, NodeOutput, Output, String

MAX_RESOLUTION = 16384
_PREFIX_TOOLTIP = ("The prefix for the file to save. This may include formatting information such as "
                   "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.")


def _folders() -> FoldersLike:
    ctx = current_or_none()
    if ctx is None or ctx.folders is None:
        raise RuntimeError("this node needs the folders of a Loom instance; run it through the executor "
                           "(which sets the node context with `folders`)")
    return ctx.folders


class EmptyImage(Node):
    """An image (batch) of one solid colour."""

    CATEGORY = "image"
    INPUTS = (
        Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
        Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
        Int("batch_size", 1, min=1, max=4096),
        Int("color", 0, min=0, max=0xFFFFFF, step=1, display="color"),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[torch.Tensor]:
        rgb = [((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)]
        channels = [torch.full((batch_size, height, width, 1), value, dtype=torch.float32) for value in rgb]
        return (torch.cat(channels, dim=-1),)


class ImageInvert(Node):
    """1 − image: every channel inverted."""

    DISPLAY_NAME = "Invert Image"
    CATEGORY = "image"
    INPUTS = (Input("image", "IMAGE"),)
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


class SaveImage(Node):
    """Saves the input images to the output directory, with the workflow embedded in each PNG."""

    DISPLAY_NAME = "Save Image"
    CATEGORY = "image"
    OUTPUT_NODE = True
    INPUTS = (
        Input("images", "IMAGE", tooltip="The images to save."),
        String("filename_prefix", "ComfyUI", tooltip=_PREFIX_TOOLTIP),
        Hidden("prompt", "PROMPT"),
        Hidden("extra_pnginfo", "EXTRA_PNGINFO"),
    )
    OUTPUTS = ()

    def execute(self, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt: Any = None,
                extra_pnginfo: Mapping[str, Any] | None = None) -> NodeOutput:
        results = image_file_helpers.save_images(images, filename_prefix, _folders().output_directory, "output",
                                       prompt=prompt, extra_pnginfo=extra_pnginfo,
                                       compress_level=image_file_helpers.SAVE_COMPRESS_LEVEL)
        return NodeOutput(values=(), ui={"images": results})


class PreviewImage(Node):
    """Saves the input images to the temporary directory and shows them in the editor."""

    DISPLAY_NAME = "Preview Image"
    CATEGORY = "image"
    OUTPUT_NODE = True
    INPUTS = (
        Input("images", "IMAGE"),
        Hidden("prompt", "PROMPT"),
        Hidden("extra_pnginfo", "EXTRA_PNGINFO"),
    )
    OUTPUTS = ()

    def __init__(self) -> None:
        # A random suffix per node instance, as ComfyUI's `prefix_append`, so previews of
        # different nodes (and different servers sharing temp/) keep apart.
        self.prefix = "ComfyUI_temp_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))

    def execute(self, images: torch.Tensor, prompt: Any = None,
                extra_pnginfo: Mapping[str, Any] | None = None) -> NodeOutput:
        results = image_file_helpers.save_images(images, self.prefix, _folders().temp_directory, "temp",
                                       prompt=prompt, extra_pnginfo=extra_pnginfo,
                                       compress_level=image_file_helpers.PREVIEW_COMPRESS_LEVEL)
        return NodeOutput(values=(), ui={"images": results})


def resolve_image(name: str, folders: FoldersLike) -> Path:
    """The file of an annotated name (`x.png`, `sub/x.png [output]`, `[input]`, `[temp]`),
    refusing names that leave their folder (`UnsafePathError`)."""
    plain, kind = split_annotation(name)
    base = {"output": folders.output_directory, "temp": folders.temp_directory}.get(kind or "input",
                                                                                   folders.input_directory)
    return resolve_inside(base, plain)


class LoadImage(Node):
    """Loads an image from the input folder: its colours and, from the alpha channel, a mask."""

    DISPLAY_NAME = "Load Image"
    CATEGORY = "image"
    INPUTS = (Combo("image", FileList("input", image_file_helpers.IMAGE_SUFFIXES), image_upload=True),)
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    def execute(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = resolve_image(image, _folders())
        if not path.is_file():
            raise FileNotFoundError(f"Invalid image file: {image} (no such file {path})")
        return image_file_helpers.load_image_file(path)

    @staticmethod
    def fingerprint(image: str) -> Any:
        """SHA-256 of the file's content, so a replaced file reruns the node."""
        ctx = current_or_none()
        if ctx is None or ctx.folders is None:
            return math.nan  # cannot look at the file: always rerun rather than reuse stale output
        try:
            path = resolve_image(image, ctx.folders)
            return image_file_helpers.file_sha256(path)
        except (OSError, UnsafePathError):
            return math.nan

    @staticmethod
    def validate(image: str) -> bool | str:
        """The file must exist (ComfyUI's message: "Invalid image file: NAME")."""
        ctx = current_or_none()
        if ctx is None or ctx.folders is None:
            return True  # no folders to check against; execution reports a missing file
        try:
            path = resolve_image(image, ctx.folders)
        except UnsafePathError:
            return f"Invalid image file: {image}"
        return True if path.is_file() else f"Invalid image file: {image}"


NODES: list[type] = [EmptyImage, ImageInvert, SaveImage, PreviewImage, LoadImage]
