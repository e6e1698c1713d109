"""ComfyUI's `comfy.clip_vision` for custom node packs (IP-Adapter, style and unCLIP packs): `load(path)`,
`load_clipvision_from_sd(sd)`, `clip_preprocess`, and the `ClipVisionModel` / `Output` names, over Loom's CLIP
vision towers (`diffusion/networks/clip_vision.py`) and the CLIP_VISION socket value (`nodes/clip_vision.py`), whose
`encode_image(image, crop=True)` places the tower through the running node's model manager.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffusion.files.checkpoint import read_state_dict
from diffusion.networks.clip_vision import CLIP_MEAN, CLIP_STD
from diffusion.networks.clip_vision import ClipVisionOutput as Output  # noqa: F401
from diffusion.networks.clip_vision import clip_preprocess as _preprocess
from diffusion.networks.clip_vision import load_clip_vision
from nodes.clip_vision import ClipVision as ClipVisionModel
from nodes.context import current_or_none
from nodes.loaders import cached_one

BINDING: Any  # set by compat.install_compat before this module runs


def _dtype() -> torch.dtype:
    ctx = current_or_none()
    models = ctx.models if ctx is not None else BINDING.current_models()
    return models.dtype_for("text_encoder") if models is not None else torch.float32


def load_clipvision_from_sd(sd: dict[str, torch.Tensor], prefix: str = "", convert_keys: bool = False) -> Any:
    """A CLIP_VISION value from HF-layout tensors (`prefix` stripped first)."""
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return ClipVisionModel(load_clip_vision(sd, _dtype()), "clip_vision")


def load(ckpt_path: str) -> Any:
    """A CLIP_VISION value from a file, through the running node's model file cache."""
    path = Path(ckpt_path)
    ctx = current_or_none()
    dtype = _dtype()
    if ctx is None:
        return ClipVisionModel(load_clip_vision(read_state_dict(path), dtype), path.name)
    model = cached_one(ctx, path, lambda: load_clip_vision(read_state_dict(path), dtype), f"clipvision:{dtype}",
                       "clip_vision")
    return ClipVisionModel(model, path.name)


def clip_preprocess(image: torch.Tensor, size: int = 224, mean: Any = None, std: Any = None, crop: bool = True
                    ) -> torch.Tensor:
    """IMAGE (B×H×W×C) → normalised B×3×size×size pixels (CLIP's mean and std unless given)."""
    return _preprocess(image, size, crop, tuple(mean) if mean is not None else CLIP_MEAN,
                       tuple(std) if std is not None else CLIP_STD)


__all__ = ["load", "load_clipvision_from_sd", "clip_preprocess", "ClipVisionModel", "Output"]
