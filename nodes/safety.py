"""Nodes from the original Stable Diffusion scripts (CompVis/stable-diffusion `scripts/txt2img.py`): the invisible
watermark and the safety checker.

- InvisibleWatermarkEncode / InvisibleWatermarkDecode: the `invisible-watermark` package (`imwatermark`), method
  dwtDct by default, payload the bytes "StableDiffusionV1" as the SD scripts embed them (the encoder works on BGR
  8-bit pixels, as the scripts hand it OpenCV images).
- SafetyChecker: diffusers' `StableDiffusionSafetyChecker` (CLIP ViT-L/14 image embedding compared with the
  concept embeddings) loaded from a folder under models/safety_checker/ (the `safety_checker` folder of the SD
  repository: config.json and the weights); flagged images are replaced by black ones, as the scripts do. Without
  the weights it fails with a message saying where to put them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffusion.networks.clip_vision import clip_preprocess
from diffusion.patcher import ModelHandle
from nodes.context import NodeContext
from nodes.loaders import cached_one, node_context
from nodes.spec import Combo, Input, Int, Node, Output, String

DEFAULT_WATERMARK = "StableDiffusionV1"
WATERMARK_METHODS = ("dwtDct", "dwtDctSvd")
SAFETY_FOLDER = "safety_checker"


def _to_bgr8(image: torch.Tensor) -> np.ndarray:
    rgb = (image[..., :3].clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def _from_bgr8(bgr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1]).astype(np.float32) / 255.0)


class InvisibleWatermarkEncode(Node):
    """Embeds an invisible watermark (invisible-watermark, DWT-DCT) into each image, as the SD scripts do."""

    DISPLAY_NAME = "Invisible Watermark"
    CATEGORY = "image/postprocessing"
    INPUTS = (
        Input("images", "IMAGE"),
        String("watermark", DEFAULT_WATERMARK),
        Combo("method", WATERMARK_METHODS),
    )
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, images: torch.Tensor, watermark: str = DEFAULT_WATERMARK,
                method: str = "dwtDct") -> tuple[torch.Tensor]:
        from imwatermark import WatermarkEncoder

        if images.shape[1] < 256 or images.shape[2] < 256:
            raise ValueError(f"the invisible watermark needs images of at least 256×256 pixels, got "
                             f"{images.shape[2]}×{images.shape[1]}")
        encoder = WatermarkEncoder()
        encoder.set_watermark("bytes", watermark.encode("utf-8"))
        out = [_from_bgr8(encoder.encode(_to_bgr8(img), method)) for img in images.cpu()]
        return (torch.stack(out),)


class InvisibleWatermarkDecode(Node):
    """Reads an invisible watermark of `length` bytes back from the first image (for checking outputs)."""

    DISPLAY_NAME = "Read Invisible Watermark"
    CATEGORY = "image/postprocessing"
    INPUTS = (
        Input("images", "IMAGE"),
        Int("length", len(DEFAULT_WATERMARK), min=1, max=256),
        Combo("method", WATERMARK_METHODS),
    )
    OUTPUTS = (Output("STRING"),)

    def execute(self, images: torch.Tensor, length: int = len(DEFAULT_WATERMARK),
                method: str = "dwtDct") -> tuple[str]:
        from imwatermark import WatermarkDecoder

        decoder = WatermarkDecoder("bytes", length * 8)
        data = decoder.decode(_to_bgr8(images[0].cpu()), method)
        return (bytes(data).decode("utf-8", errors="replace"),)


def safety_checker_folders(ctx: NodeContext) -> list[Path]:
    """Where safety checker weights are looked for: models/safety_checker (and that kind's extra paths)."""
    folders = ctx.folders
    if folders is None:
        raise RuntimeError("SafetyChecker needs the folders of a Loom instance")
    try:
        return list(folders.folder_paths(SAFETY_FOLDER))
    except KeyError:
        models = getattr(folders, "models_directory", None)
        return [Path(models) / SAFETY_FOLDER] if models is not None else []


def find_safety_checker(ctx: NodeContext) -> Path:
    """The folder holding config.json and the safety checker's weights, or a clear error."""
    for root in safety_checker_folders(ctx):
        for candidate in (root, *sorted(p for p in root.glob("*") if p.is_dir())):
            has_weights = any(candidate.glob("*.safetensors")) or any(candidate.glob("*.bin"))
            if (candidate / "config.json").is_file() and has_weights:
                return candidate
    where = ", ".join(str(p) for p in safety_checker_folders(ctx)) or "models/safety_checker"
    raise FileNotFoundError(
        f"the safety checker's weights are not installed: put the `safety_checker` folder of a Stable Diffusion "
        f"repository (config.json and model.safetensors of CompVis/stable-diffusion-safety-checker) in {where}")


class SafetyChecker(Node):
    """Blacks out images the Stable Diffusion safety checker flags (weights in models/safety_checker)."""

    DISPLAY_NAME = "Safety Checker"
    CATEGORY = "image/postprocessing"
    INPUTS = (Input("images", "IMAGE"),)
    OUTPUTS = (Output("IMAGE"), Output("BOOLEAN", "nsfw"))

    def execute(self, images: torch.Tensor) -> tuple[torch.Tensor, bool]:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

        ctx = node_context()
        folder = find_safety_checker(ctx)
        checker = cached_one(ctx, folder / "config.json",
                             lambda: StableDiffusionSafetyChecker.from_pretrained(str(folder)).eval(),
                             "safety_checker", "safety_checker")
        size = int(checker.config.vision_config.image_size)
        pixels = clip_preprocess(images, size=size, crop=True)
        if ctx.models is None:
            _, flags = checker(clip_input=pixels, images=images.clone())
        else:
            with ctx.models.use([ModelHandle(checker, name="safety_checker", kind="other")]) as device:
                _, flags = checker(clip_input=pixels.to(device, checker.dtype), images=images.clone())
        # Flagged images become black (the SD scripts show a replacement picture; diffusers returns black).
        keep = torch.tensor([0.0 if f else 1.0 for f in flags], dtype=images.dtype).view(-1, 1, 1, 1)
        return images * keep, bool(any(flags))


NODES: list[type] = [InvisibleWatermarkEncode, InvisibleWatermarkDecode, SafetyChecker]
