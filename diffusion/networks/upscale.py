"""Model-based image upscaling: ESRGAN, Real-ESRGAN, SwinIR and the other single-image architectures the `spandrel`
library recognises from a file's keys, run over overlapping tiles so that big images fit.

Owns `load_upscale_model` (state dict → spandrel `ImageModelDescriptor`, with the `module.` prefix of some SwinIR
releases removed) and `upscale_tiled` (B×C×H×W in 0..1 → upscaled, tiles of `tile` pixels with `overlap`, blended
by `diffusion.networks.tiling.tiled_apply`). What happens on out-of-memory (smaller tiles) is the caller's policy, given as
`tiles_to_try`, so this module touches no devices beyond the input's. Behaviour follows ComfyUI's
`comfy_extras/nodes_upscale_model.py` (512-pixel tiles, 32 overlap, halved on OOM down to 128), written anew.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

from diffusion.files.checkpoint import CheckpointError, read_state_dict
from diffusion.networks.tiling import tiled_apply

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32
MIN_TILE = 128
SWINIR_PREFIXED_KEY = "module.layers.0.residual_group.blocks.0.norm1.weight"
# Where BasicSR-trained releases (RealESRGAN_x4plus.pth, SwinIR, ...) keep their weights inside the pickle; the EMA
# weights are the released ones when both are there.
WRAPPER_KEYS = ("params_ema", "params", "model", "state_dict")
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def read_upscale_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of an upscaler file: safetensors, a bare pickled state dict, or one wrapped under
    `params_ema`/`params`/`model`/`state_dict` (read with `weights_only`, so no code in the file runs)."""
    try:
        return read_state_dict(path)
    except CheckpointError:
        if Path(path).suffix.lower() not in PICKLE_SUFFIXES:
            raise
        obj = torch.load(path, map_location="cpu", weights_only=True)
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj, dict) and isinstance(obj.get(k), dict)), None)
        tensors = {k: v for k, v in (inner or {}).items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if not tensors:
            raise
        return tensors


def load_upscale_model(state_dict: dict[str, torch.Tensor], name: str = "") -> Any:
    """The spandrel `ImageModelDescriptor` of an upscaler's weights (eval mode, on the CPU)."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    if SWINIR_PREFIXED_KEY in state_dict:
        state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    try:
        descriptor = ModelLoader().load_from_state_dict(state_dict)
    except (UnsupportedModelError, KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{name or 'this file'} is not an upscale model spandrel recognises: {err}") from err
    if not isinstance(descriptor, ImageModelDescriptor):
        raise CheckpointError(f"{name or 'this file'}: upscale model must be a single-image model "
                              f"(got {type(descriptor).__name__})")
    return descriptor.eval()


def tile_steps(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles one image of height×width takes (for progress)."""
    def count(size: int) -> int:
        return 1 if tile >= size else len(range(0, size - overlap, tile - overlap))
    return count(height) * count(width)


def upscale_tiled(descriptor: Any, image: torch.Tensor, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                  on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """`image` (B×C×H×W, 0..1, on the model's device) upscaled by the model, tile by tile; returned on the CPU
    in float32 and clamped to 0..1. `on_tile` is called after every tile (progress, interrupt)."""
    scale = descriptor.scale
    param = next(descriptor.model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32

    def run(part: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = descriptor(part.to(dtype)).float().cpu()
        if on_tile is not None:
            on_tile()
        return out

    out = tiled_apply(image, run, (tile, tile), overlap, scale, descriptor.output_channels)
    return out.clamp(0.0, 1.0)


def upscale_with_retries(descriptor: Any, image: torch.Tensor, tile: int = DEFAULT_TILE,
                         overlap: int = DEFAULT_OVERLAP, on_tile: Callable[[], None] | None = None,
                         on_oom: Callable[[], None] | None = None) -> torch.Tensor:
    """`upscale_tiled`, halving the tile after each out-of-memory error until it would drop below 128 pixels
    (`on_oom` runs first each time, e.g. to free cached memory)."""
    while True:
        try:
            return upscale_tiled(descriptor, image, tile, overlap, on_tile)
        except torch.OutOfMemoryError:
            tile //= 2
            if tile < MIN_TILE:
                raise
            if on_oom is not None:
                on_oom()
