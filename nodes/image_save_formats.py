"""Image file nodes beyond SaveImage/LoadImage: MaskPreview, LoadImageOutput, SaveAnimatedPNG, SaveAnimatedWEBP
and SaveSVGNode, with the SVG socket value.

Names, inputs, defaults, categories and file formats are ComfyUI's (`comfy_extras/nodes_images.py`,
`nodes_mask.py`, `nodes.py` LoadImageOutput, and `comfy_api/latest/_ui.py` ImageSaveHelper):
- an animated PNG carries the workflow in private `comf` chunks after the image data (`key\\0json`), which
  ComfyUI's editor reads back when the file is dropped on it; a still PNG's tEXt chunks would be lost to APNG
  readers that rewrite the file;
- an animated WebP carries it in EXIF: tag 0x0110 (Model) holds `prompt:<json>` and tags from 0x010F (Make)
  downwards hold `<key>:<json>` for each extra_pnginfo entry;
- an SVG gets a `<metadata>` element with the JSON in CDATA right after its opening `<svg>` tag.
Files go in the output folder through the same prefix expansion, path checks and counters as SaveImage, and are
created exclusively, so no save overwrites another file.
"""
from __future__ import annotations

import io
import json
import re
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodes import image_file_helpers
from nodes.image_save_load import LoadImage, _folders
from nodes.spec import Boolean, Combo, Float, Hidden, Input, Int, Node, NodeOutput, String

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}
_EXIF_MODEL, _EXIF_MAKE = 0x0110, 0x010F
_MAX_ATTEMPTS = 10000
_HIDDEN = (Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))


@dataclass
class SVG:
    """The SVG socket value (ComfyUI's `IO.SVG.Type`): one SVG document per batch entry, as byte streams."""

    data: list[BinaryIO] = field(default_factory=list)

    def combine(self, other: "SVG") -> "SVG":
        return SVG(self.data + other.data)


def create_exclusive(folder: Path, filename: str, counter: int, suffix: str) -> tuple[Path, BinaryIO, int]:
    """Open `folder/filename_<counter:05>_.<suffix>` for writing, taking the next counter while the name exists."""
    for _ in range(_MAX_ATTEMPTS):
        path = folder / f"{filename}_{counter:05}_.{suffix}"
        try:
            return path, open(path, "xb"), counter
        except FileExistsError:
            counter += 1
    raise FileExistsError(f"no free file name for {filename} in {folder} after {_MAX_ATTEMPTS} tries")


def write_exclusive(folder: Path, filename: str, counter: int, suffix: str, write: Any) -> tuple[str, int]:
    """Create the next free file and fill it with `write(handle)`; a failed write leaves no file behind."""
    path, handle, counter = create_exclusive(folder, filename, counter, suffix)
    try:
        with handle:
            write(handle)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path.name, counter


def apng_metadata(prompt: Any, extra_pnginfo: Mapping[str, Any] | None) -> PngInfo | None:
    """`comf` chunks (`key\\0json`, after the image data) with the prompt and each extra_pnginfo entry."""
    if not prompt and not extra_pnginfo:
        return None
    info = PngInfo()
    entries = ([("prompt", prompt)] if prompt else []) + list((extra_pnginfo or {}).items())
    for key, value in entries:
        info.add(b"comf", str(key).encode("latin-1", "strict") + b"\0" +
                 json.dumps(value).encode("latin-1", "strict"), after_idat=True)
    return info


def webp_exif(first: Image.Image, prompt: Any, extra_pnginfo: Mapping[str, Any] | None) -> Image.Exif:
    """The EXIF block ComfyUI writes into animated WebPs (see the module docstring)."""
    exif = first.getexif()
    if prompt is not None:
        exif[_EXIF_MODEL] = f"prompt:{json.dumps(prompt)}"
    for offset, (key, value) in enumerate((extra_pnginfo or {}).items()):
        exif[_EXIF_MAKE - offset] = f"{key}:{json.dumps(value)}"
    return exif


def _frames(images: torch.Tensor) -> list[Image.Image]:
    if images.ndim == 3:
        images = images[None]
    if images.shape[0] == 0:
        raise ValueError("there are no images to save (the batch is empty)")
    return [image_file_helpers.tensor_to_pil(image) for image in images]


def save_animation(images: torch.Tensor, prefix: str, suffix: str, save_args: dict[str, Any]) -> dict[str, Any]:
    """Save the batch as one animated file in the output folder; returns the node's ui entry."""
    frames = _frames(images)
    where = image_file_helpers.save_image_path(prefix, _folders().output_directory, width=frames[0].width,
                                     height=frames[0].height)
    fmt = {"png": "PNG", "webp": "WEBP"}[suffix]

    def write(handle: BinaryIO) -> None:
        frames[0].save(handle, format=fmt, save_all=True, append_images=frames[1:], **save_args)

    name, _ = write_exclusive(where.folder, where.filename, where.counter, suffix, write)
    result = {"filename": name, "subfolder": where.subfolder, "type": "output"}
    return {"images": [result], "animated": (len(frames) > 1,)}


def _duration(fps: float) -> int:
    """Frame duration in whole milliseconds, truncated as ComfyUI does (`int(1000 / fps)`)."""
    return int(1000.0 / fps)


class SaveAnimatedPNG(Node):
    """Saves the images as the frames of one animated PNG (APNG) in the output folder."""

    CATEGORY = "image/animation"
    OUTPUT_NODE = True
    INPUTS = (Input("images", "IMAGE"), String("filename_prefix", "ComfyUI"),
              Float("fps", 6.0, min=0.01, max=1000.0, step=0.01), Int("compress_level", 4, min=0, max=9), *_HIDDEN)
    OUTPUTS = ()

    def execute(self, images: torch.Tensor, filename_prefix: str, fps: float, compress_level: int,
                prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None) -> NodeOutput:
        args = {"pnginfo": apng_metadata(prompt, extra_pnginfo), "compress_level": compress_level,
                "duration": _duration(fps)}
        return NodeOutput(values=(), ui=save_animation(images, filename_prefix, "png", args))


class SaveAnimatedWEBP(Node):
    """Saves the images as the frames of one animated WebP in the output folder."""

    CATEGORY = "image/animation"
    OUTPUT_NODE = True
    INPUTS = (Input("images", "IMAGE"), String("filename_prefix", "ComfyUI"),
              Float("fps", 6.0, min=0.01, max=1000.0, step=0.01), Boolean("lossless", True),
              Int("quality", 80, min=0, max=100), Combo("method", tuple(WEBP_METHODS)), *_HIDDEN)
    OUTPUTS = ()

    def execute(self, images: torch.Tensor, filename_prefix: str, fps: float, lossless: bool, quality: int,
                method: str, prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None) -> NodeOutput:
        frames = _frames(images)
        args = {"duration": _duration(fps), "exif": webp_exif(frames[0], prompt, extra_pnginfo),
                "lossless": lossless, "quality": quality, "method": WEBP_METHODS[method]}
        return NodeOutput(values=(), ui=save_animation(images, filename_prefix, "webp", args))


class MaskPreview(Node):
    """Previews the input mask in the UI (as a grey image saved in the temporary folder)."""

    DISPLAY_NAME = "Preview Mask"
    CATEGORY = "mask"
    OUTPUT_NODE = True
    SEARCH_ALIASES = ("show mask", "view mask", "inspect mask", "debug mask")
    INPUTS = (Input("mask", "MASK"), *_HIDDEN)
    OUTPUTS = ()

    def __init__(self) -> None:
        self.prefix = "ComfyUI_temp_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))

    def execute(self, mask: torch.Tensor, prompt: Any = None,
                extra_pnginfo: Mapping[str, Any] | None = None) -> NodeOutput:
        grey = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        results = image_file_helpers.save_images(grey, self.prefix, _folders().temp_directory, "temp", prompt=prompt,
                                       extra_pnginfo=extra_pnginfo, compress_level=image_file_helpers.PREVIEW_COMPRESS_LEVEL)
        return NodeOutput(values=(), ui={"images": results, "animated": (False,)})


class LoadImageOutput(LoadImage):
    __doc__ = ("Load an image from the output folder. When the refresh button is clicked, the node will update the "
               "image list and automatically select the first image, allowing for easy iteration.")

    NAME = "LoadImageOutput"
    DISPLAY_NAME = "Load Image (from Outputs)"
    CATEGORY = "image"
    EXPERIMENTAL = True
    SEARCH_ALIASES = ("output image", "previous generation")
    # A combo without a fixed list: the editor asks /internal/files/output for the choices and sends
    # "name [output]"; the value is checked by `validate` (the file must exist).
    INPUTS = (Combo("image", None, image_upload=True, image_folder="output",
                    remote={"route": "/internal/files/output", "refresh_button": True,
                            "control_after_refresh": "first"}),)


def svg_text(item: Any) -> str:
    """One SVG document of an SVG value's `data` as text (byte streams, bytes or str)."""
    if hasattr(item, "seek") and hasattr(item, "read"):
        item.seek(0)
        item = item.read()
    if isinstance(item, (bytes, bytearray)):
        return bytes(item).decode("utf-8")
    if isinstance(item, str):
        return item
    raise TypeError(f"SaveSVGNode: input 'svg' holds a {type(item).__name__}; expected SVG bytes or text")


def with_svg_metadata(document: str, metadata: Mapping[str, Any]) -> str:
    """`document` with a `<metadata>` element (the JSON in CDATA) after its opening `<svg ...>` tag."""
    if not metadata:
        return document
    text = json.dumps(metadata, indent=2)
    element = f"  <metadata>\n    <![CDATA[\n{text}\n    ]]>\n  </metadata>\n"
    return re.sub(r"(<svg[^>]*>)", lambda m: m.group(1) + "\n" + element, document, flags=re.UNICODE)


class SaveSVGNode(Node):
    """Save SVG files on disk."""

    CATEGORY = "image/save"
    OUTPUT_NODE = True
    SEARCH_ALIASES = ("export vector", "save vector graphics")
    INPUTS = (Input("svg", "SVG"),
              String("filename_prefix", "svg/ComfyUI",
                     tooltip="The prefix for the file to save. This may include formatting information such as "
                             "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."),
              *_HIDDEN)
    OUTPUTS = ()

    def execute(self, svg: Any, filename_prefix: str, prompt: Any = None,
                extra_pnginfo: Mapping[str, Any] | None = None) -> NodeOutput:
        documents = getattr(svg, "data", svg)
        if isinstance(documents, (str, bytes, io.IOBase)):
            documents = [documents]
        metadata = ({"prompt": prompt} if prompt is not None else {}) | dict(extra_pnginfo or {})
        where = image_file_helpers.save_image_path(filename_prefix, _folders().output_directory, prompt=prompt)
        results, counter = [], where.counter
        for index, item in enumerate(documents):
            content = with_svg_metadata(svg_text(item), metadata).encode("utf-8")
            filename = where.filename.replace("%batch_num%", str(index))
            name, counter = write_exclusive(where.folder, filename, counter, "svg", lambda h: h.write(content))
            results.append({"filename": name, "subfolder": where.subfolder, "type": "output"})
            counter += 1
        return NodeOutput(values=(), ui={"images": results})


NODES: list[type] = [SaveAnimatedWEBP, SaveAnimatedPNG, SaveSVGNode, MaskPreview, LoadImageOutput]
