"""Preview decoders for sampling progress: the TAESD decoder of a model's latent format when its file is in
models/vae_approx (e.g. `taesd_decoder.safetensors` for SD1/SD2), else None (the latent→RGB projection is used).

Decoders are loaded once per file and kept through the memory manager's file cache while a sampling run holds
them; a file that cannot be read is logged and ignored, so previews never stop sampling.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from nodes.context import NodeContext

log = logging.getLogger(__name__)


def find_approx_file(ctx: NodeContext, stem: str) -> Path | None:
    """The first file in models/vae_approx named `stem` + a model suffix (`taesd_decoder.pth`, ...)."""
    if ctx.folders is None:
        return None
    try:
        names = ctx.folders.list_files("vae_approx")
    except KeyError:
        return None
    for name in names:
        if name.rsplit("/", 1)[-1].startswith(stem + "."):
            return ctx.folders.full_path("vae_approx", name)
    return None


def preview_decoder(ctx: NodeContext, model: Any) -> torch.nn.Module | None:
    """The TAESD decoder for `model`'s latent format, or None when there is no file (or no TAESD support)."""
    stem = getattr(getattr(model, "latent_format", None), "taesd_decoder_name", None)
    if not stem:
        return None
    path = find_approx_file(ctx, stem)
    if path is None:
        return None
    try:
        from diffusion.networks.taesd import load_taesd_decoder
    except ImportError:
        return None
    channels = getattr(model.latent_format, "channels", 4)  # TAESD3 decodes the 16-channel SD3 latent
    try:
        if ctx.models is None:
            return load_taesd_decoder(path, latent_channels=channels)
        return ctx.models.files.get_or_load(path, lambda: load_taesd_decoder(path, latent_channels=channels),
                                            dtype=torch.float32, part="taesd_decoder")
    except (OSError, ValueError, RuntimeError) as err:
        log.warning("cannot use %s for previews: %s", path, err)
        return None
