"""ComfyUI's media value types as packs import them from `comfy_api.latest`: `Input` (the socket value types:
`Input.Image`, `Input.Audio`, `Input.Mask`, `Input.Latent`, `Input.Video`), `InputImpl` (`VideoFromFile`,
`VideoFromComponents`) and `Types` (`VideoContainer`, `VideoCodec`, `VideoComponents`), plus the submodules
`comfy_api.latest.input`, `.input_impl` and `.util` with the same names. The video classes are Loom's own
(`nodes/video_io.py`), the ones LoadVideo, CreateVideo and SaveVideo pass around.
"""
from __future__ import annotations

import types
from typing import Any, TypedDict

import torch

from nodes.video_io import (VideoCodec, VideoComponents, VideoContainer, VideoFromComponents, VideoFromFile,
                            VideoInput)


class AudioInput(TypedDict):
    """An AUDIO value: `waveform` B×C×S floats and `sample_rate`."""

    waveform: torch.Tensor
    sample_rate: int


ImageInput = torch.Tensor
MaskInput = torch.Tensor
LatentInput = dict


class Input:
    """ComfyUI's `comfy_api.latest.Input`."""

    Image = ImageInput
    Audio = AudioInput
    Mask = MaskInput
    Latent = LatentInput
    Video = VideoInput


class InputImpl:
    """ComfyUI's `comfy_api.latest.InputImpl`."""

    VideoFromFile = VideoFromFile
    VideoFromComponents = VideoFromComponents


class Types:
    """ComfyUI's `comfy_api.latest.Types` (the video ones)."""

    VideoCodec = VideoCodec
    VideoContainer = VideoContainer
    VideoComponents = VideoComponents


def _module(name: str, values: dict[str, Any]) -> types.ModuleType:
    module = types.ModuleType(name, f"Loom's implementation of ComfyUI's {name}.")
    for key, value in values.items():
        setattr(module, key, value)
    return module


def media_modules(package: str) -> dict[str, types.ModuleType]:
    """`<package>.input`, `.input_impl`, `.util` (and their underscored names) for one comfy_api package."""
    inputs = {"ImageInput": ImageInput, "AudioInput": AudioInput, "MaskInput": MaskInput,
              "LatentInput": LatentInput, "VideoInput": VideoInput}
    impl = {"VideoFromFile": VideoFromFile, "VideoFromComponents": VideoFromComponents}
    util = {"VideoCodec": VideoCodec, "VideoContainer": VideoContainer, "VideoComponents": VideoComponents}
    out = {}
    for sub, values in (("input", inputs), ("input_impl", impl), ("util", util)):
        module = _module(f"{package}.{sub}", values)
        out[f"{package}.{sub}"] = module
        out[f"{package}._{sub}"] = module
    return out
