"""Video nodes: LoadVideo, SaveVideo, SaveWEBM, CreateVideo and GetVideoComponents (ComfyUI's
`comfy_extras/nodes_video.py`, 0.3.64: names, inputs, defaults, categories and ui results).

VIDEO values are `nodes.video_io.Video` objects (a file or tensors); the PyAV work is in `nodes/video_io.py`.
Saved files go to the output folder as `<prefix>_<counter:05>_.<ext>` with the prompt and each extra_pnginfo
entry (the workflow) as JSON in the container's metadata tags, as ComfyUI writes them.
"""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

import av
import torch

from folders import UnsafePathError
from nodes import image_file_helpers
from nodes.context import current_or_none
from nodes.image_save_load import _PREFIX_TOOLTIP, _folders, resolve_image
from nodes.image_save_formats import create_exclusive
from nodes.spec import Combo, FileList, Float, Hidden, Input, Node, NodeOutput, Output, String
from nodes.video_io import (VIDEO_CODECS, VIDEO_FORMATS, VIDEO_SUFFIXES, VideoComponents, VideoFromComponents,
                            VideoFromFile, Video, container_extension)

CATEGORY = "image/video"
_HIDDEN = (Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))
_CRF_TOOLTIP = ("Higher crf means lower quality with a smaller file size, lower crf means higher quality "
                "higher filesize.")
_WEBM_CODECS = {"vp9": "libvpx-vp9", "av1": "libsvtav1"}


def _write_new(prefix: str, width: int, height: int, suffix: str, prompt: Any, write: Any) -> dict[str, str]:
    """Claim the next free `<prefix>_<counter>_.<suffix>` in the output folder, fill it with `write(path)`
    (removing it if that fails) and return its ui entry."""
    where = image_file_helpers.save_image_path(prefix, _folders().output_directory, width=width, height=height,
                                     prompt=prompt)
    path, handle, _ = create_exclusive(where.folder, where.filename, where.counter, suffix)
    handle.close()
    try:
        write(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return {"filename": path.name, "subfolder": where.subfolder, "type": "output"}


def _frames_uint8(images: torch.Tensor) -> list[Any]:
    pixels = torch.clamp(images[..., :3] * 255, min=0, max=255).to(device="cpu", dtype=torch.uint8).numpy()
    return [av.VideoFrame.from_ndarray(frame, format="rgb24") for frame in pixels]


def write_webm(path: Path, images: torch.Tensor, codec: str, fps: float, crf: float,
               tags: Mapping[str, str]) -> None:
    """Encode the frames as VP9 (yuv420p) or AV1 (yuv420p10le, preset 6) in WebM, constant quality `crf`."""
    with av.open(str(path), mode="w") as container:
        for key, value in tags.items():
            container.metadata[key] = value
        stream = container.add_stream(_WEBM_CODECS[codec], rate=Fraction(round(fps * 1000), 1000))
        stream.width, stream.height = int(images.shape[-2]), int(images.shape[-3])
        stream.pix_fmt = "yuv420p10le" if codec == "av1" else "yuv420p"
        stream.bit_rate = 0
        stream.options = {"crf": str(crf), **({"preset": "6"} if codec == "av1" else {})}
        for frame in _frames_uint8(images):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


class SaveWEBM(Node):
    """Saves the images as the frames of a WebM video (VP9 or AV1) in the output folder."""

    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    EXPERIMENTAL = True
    INPUTS = (Input("images", "IMAGE"), String("filename_prefix", "ComfyUI"), Combo("codec", ("vp9", "av1")),
              Float("fps", 24.0, min=0.01, max=1000.0, step=0.01),
              Float("crf", 32.0, min=0, max=63.0, step=1, tooltip=_CRF_TOOLTIP), *_HIDDEN)
    OUTPUTS = ()

    def execute(self, images: torch.Tensor, filename_prefix: str = "ComfyUI", codec: str = "vp9",
                fps: float = 24.0, crf: float = 32.0, prompt: Any = None,
                extra_pnginfo: Mapping[str, Any] | None = None) -> NodeOutput:
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError("SaveWEBM: 'images' must be a non-empty IMAGE batch")
        tags = {"prompt": json.dumps(prompt)} if prompt is not None else {}
        tags.update({str(k): json.dumps(v) for k, v in (extra_pnginfo or {}).items()})
        result = _write_new(filename_prefix, int(images.shape[2]), int(images.shape[1]), "webm", prompt,
                            lambda path: write_webm(path, images, codec, fps, crf, tags))
        return NodeOutput(values=(), ui={"images": [result], "animated": (True,)})


class SaveVideo(Node):
    """Saves the input images to your ComfyUI output directory."""

    DISPLAY_NAME = "Save Video"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    INPUTS = (Input("video", "VIDEO", tooltip="The video to save."),
              String("filename_prefix", "video/ComfyUI", tooltip=_PREFIX_TOOLTIP),
              Combo("format", VIDEO_FORMATS, "auto", tooltip="The format to save the video as."),
              Combo("codec", VIDEO_CODECS, "auto", tooltip="The codec to use for the video."), *_HIDDEN)
    OUTPUTS = ()

    def execute(self, video: Video, filename_prefix: str = "video/ComfyUI", format: str = "auto",
                codec: str = "auto", prompt: Any = None,
                extra_pnginfo: Mapping[str, Any] | None = None) -> NodeOutput:
        width, height = video.get_dimensions()
        metadata: dict[str, Any] = dict(extra_pnginfo or {})
        if prompt is not None:
            metadata["prompt"] = prompt
        result = _write_new(filename_prefix, width, height, container_extension(format), prompt,
                            lambda path: video.save_to(path, format=format, codec=codec,
                                                       metadata=metadata or None))
        return NodeOutput(values=(), ui={"images": [result], "animated": (True,)})


class CreateVideo(Node):
    """Create a video from images."""

    DISPLAY_NAME = "Create Video"
    CATEGORY = CATEGORY
    INPUTS = (Input("images", "IMAGE", tooltip="The images to create a video from."),
              Float("fps", 30.0, min=1.0, max=120.0, step=1.0),
              Input("audio", "AUDIO", optional=True, tooltip="The audio to add to the video."))
    OUTPUTS = (Output("VIDEO"),)

    def execute(self, images: torch.Tensor, fps: float = 30.0,
                audio: Mapping[str, Any] | None = None) -> tuple[Video]:
        return (VideoFromComponents(VideoComponents(images=images, frame_rate=Fraction(fps), audio=audio)),)


class GetVideoComponents(Node):
    """Extracts all components from a video: frames, audio, and framerate."""

    DISPLAY_NAME = "Get Video Components"
    CATEGORY = CATEGORY
    INPUTS = (Input("video", "VIDEO", tooltip="The video to extract components from."),)
    OUTPUTS = (Output("IMAGE", "images"), Output("AUDIO", "audio"), Output("FLOAT", "fps"))

    def execute(self, video: Video) -> tuple[torch.Tensor, Any, float]:
        components = video.get_components()
        return components.images, components.audio, float(components.frame_rate)


class LoadVideo(Node):
    """Loads a video file from the input folder (the file is decoded when its components are used)."""

    DISPLAY_NAME = "Load Video"
    CATEGORY = CATEGORY
    INPUTS = (Combo("file", FileList("input", VIDEO_SUFFIXES), video_upload=True),)
    OUTPUTS = (Output("VIDEO"),)

    def execute(self, file: str) -> tuple[Video]:
        path = resolve_image(file, _folders())
        if not path.is_file():
            raise FileNotFoundError(f"Invalid video file: {file}")
        return (VideoFromFile(path),)

    @staticmethod
    def fingerprint(file: str) -> Any:
        """The file's modification time (ComfyUI's choice: no hashing of large files)."""
        ctx = current_or_none()
        if ctx is None or ctx.folders is None:
            return math.nan
        try:
            return resolve_image(file, ctx.folders).stat().st_mtime
        except (OSError, UnsafePathError):
            return math.nan

    @staticmethod
    def validate(file: str) -> bool | str:
        ctx = current_or_none()
        if ctx is None or ctx.folders is None:
            return True
        try:
            return True if resolve_image(file, ctx.folders).is_file() else f"Invalid video file: {file}"
        except UnsafePathError:
            return f"Invalid video file: {file}"


NODES: list[type] = [SaveWEBM, SaveVideo, CreateVideo, GetVideoComponents, LoadVideo]
