"""Model upscaling nodes: UpscaleModelLoader and ImageUpscaleWithModel (ComfyUI `comfy_extras/nodes_upscale_model.py`
names, inputs and categories).

The loader reads a file of models/upscale_models through spandrel and returns the `UPSCALE_MODEL` descriptor; the
upscale node has the memory manager place the network (with an estimate of the tile working memory), runs it over
512-pixel tiles with progress, and halves the tile on out-of-memory.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.patcher import ModelHandle
from diffusion.networks.upscale import (DEFAULT_OVERLAP, DEFAULT_TILE, load_upscale_model, read_upscale_state_dict,
                               tile_steps, upscale_with_retries)
from nodes.loaders import cached_one, node_context
from nodes.spec import Combo, FileList, Input, Node, Output

UPSCALE_MODEL = "UPSCALE_MODEL"


class UpscaleModel:
    """An UPSCALE_MODEL socket value: the spandrel descriptor and the handle the memory manager places."""

    def __init__(self, descriptor: Any, name: str) -> None:
        self.descriptor = descriptor
        self.scale = descriptor.scale
        self.handle = ModelHandle(descriptor.model, name=name, kind="other")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.descriptor(image)

    def working_memory(self, image: torch.Tensor) -> int:
        """Activation bytes for one tile (ComfyUI's estimate: 512²·3 elements × scale × 384) plus the image."""
        size = image.element_size()
        return int(512 * 512 * 3 * size * max(self.scale, 1.0) * 384.0 + image.nelement() * size)


class UpscaleModelLoader(Node):
    """Loads an ESRGAN, Real-ESRGAN, SwinIR or other single-image upscale model (spandrel)."""

    DISPLAY_NAME = "Load Upscale Model"
    CATEGORY = "loaders"
    INPUTS = (Combo("model_name", FileList("upscale_models")),)
    OUTPUTS = (Output(UPSCALE_MODEL),)

    def execute(self, model_name: str) -> tuple[UpscaleModel]:
        ctx = node_context()
        if ctx.folders is None:
            raise RuntimeError("UpscaleModelLoader needs the folders of a Loom instance")
        path = ctx.folders.full_path("upscale_models", model_name)
        model = cached_one(ctx, path, lambda: UpscaleModel(load_upscale_model(read_upscale_state_dict(path), model_name),
                                                           model_name), "upscale", "upscale")
        return (model,)


class ImageUpscaleWithModel(Node):
    """Upscales an image with an upscale model, in tiles."""

    DISPLAY_NAME = "Upscale Image (using Model)"
    CATEGORY = "image/upscaling"
    INPUTS = (Input("upscale_model", UPSCALE_MODEL), Input("image", "IMAGE"))
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, upscale_model: UpscaleModel, image: torch.Tensor) -> tuple[torch.Tensor]:
        ctx = node_context()
        tile = DEFAULT_TILE
        pixels = image.movedim(-1, -3)
        total = pixels.shape[0] * tile_steps(pixels.shape[2], pixels.shape[3], tile, DEFAULT_OVERLAP)
        done = [0]

        def on_tile() -> None:
            done[0] += 1
            ctx.progress(min(done[0], total), total)

        if ctx.models is None:
            out = upscale_with_retries(upscale_model.descriptor, pixels, tile, DEFAULT_OVERLAP, on_tile)
            return (out.movedim(-3, -1),)
        with ctx.models.use([upscale_model.handle], upscale_model.working_memory(image)) as device:
            out = upscale_with_retries(upscale_model.descriptor, pixels.to(device), tile, DEFAULT_OVERLAP, on_tile,
                                       on_oom=lambda: _reset_progress(done))
        return (out.movedim(-3, -1),)


def _reset_progress(done: list[int]) -> None:
    done[0] = 0


NODES: list[type] = [UpscaleModelLoader, ImageUpscaleWithModel]
