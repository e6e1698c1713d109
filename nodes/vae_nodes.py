"""VAE nodes: VAEDecode, VAEEncode, VAEDecodeTiled and VAEEncodeTiled.

Names, inputs, ranges, categories and display names are ComfyUI's (`nodes.py`). The memory manager places the
VAE with an estimate of the working memory (`VAE.memory_required_decode/encode`); when the device still runs out
of memory, the manager frees what it can and retries, then the whole-image call falls back to tiles
(`ModelManager.retry_on_oom`), as ComfyUI does. LATENT `samples` are in the VAE's raw space; IMAGE values are
B×H×W×C float32 in 0..1.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch

from diffusion.networks.vae import VAE
from nodes.context import current_or_none
from nodes.spec import Input, Int, Node, Output

T = TypeVar("T")
# Tile sizes of the out-of-memory fallback (ComfyUI's): decode in latent pixels, encode in image pixels.
FALLBACK_DECODE_TILE, FALLBACK_DECODE_OVERLAP = 64, 16
FALLBACK_ENCODE_TILE, FALLBACK_ENCODE_OVERLAP = 512, 64
_TEMPORAL_NOTE = "Only used for video VAEs: Amount of frames to {} at a time."
_TEMPORAL_OVERLAP_NOTE = "Only used for video VAEs: Amount of frames to overlap."


def _vae_dtype(vae: VAE) -> torch.dtype:
    return next(vae.model.parameters()).dtype


def run_vae(vae: VAE, working_memory: int, fn: Callable[[], T], fallback: Callable[[], T] | None = None) -> T:
    """Call `fn` with the VAE placed by the memory manager (and `fallback` after out-of-memory, if given)."""
    ctx = current_or_none()
    models = ctx.models if ctx is not None else None
    if models is None:
        return fn()
    with models.use([vae], working_memory=working_memory):
        return models.retry_on_oom(fn, fallback)


def decode(vae: VAE, latent: torch.Tensor) -> torch.Tensor:
    """Decode raw latents to an IMAGE, tiled if the whole batch does not fit."""
    need = vae.memory_required_decode(tuple(latent.shape), _vae_dtype(vae))
    return run_vae(vae, need, lambda: vae.decode(latent),
                   lambda: vae.decode_tiled(latent, FALLBACK_DECODE_TILE, FALLBACK_DECODE_TILE,
                                            FALLBACK_DECODE_OVERLAP))


def encode(vae: VAE, pixels: torch.Tensor) -> torch.Tensor:
    """Encode an IMAGE to raw latents, tiled if the whole batch does not fit."""
    need = vae.memory_required_encode(tuple(pixels.shape), _vae_dtype(vae))
    return run_vae(vae, need, lambda: vae.encode(pixels),
                   lambda: vae.encode_tiled(pixels, FALLBACK_ENCODE_TILE, FALLBACK_ENCODE_TILE,
                                            FALLBACK_ENCODE_OVERLAP))


def _check(vae: VAE | None) -> VAE:
    if vae is None:
        raise RuntimeError("ERROR: VAE is invalid: None\n\nIf the VAE is from a checkpoint loader node your "
                           "checkpoint does not contain a valid VAE.")
    return vae


class VAEDecode(Node):
    """Decodes latent images back into pixel space images."""

    DISPLAY_NAME = "VAE Decode"
    CATEGORY = "latent"
    INPUTS = (
        Input("samples", "LATENT", tooltip="The latent to be decoded."),
        Input("vae", "VAE", tooltip="The VAE model used for decoding the latent."),
    )
    OUTPUTS = (Output("IMAGE", tooltip="The decoded image."),)

    def execute(self, samples: dict[str, Any], vae: VAE) -> tuple[torch.Tensor]:
        return (decode(_check(vae), samples["samples"]),)


class VAEEncode(Node):
    """Encodes images into latents (alpha dropped, cropped to multiples of 8 around the centre)."""

    DISPLAY_NAME = "VAE Encode"
    CATEGORY = "latent"
    INPUTS = (Input("pixels", "IMAGE"), Input("vae", "VAE"))
    OUTPUTS = (Output("LATENT"),)

    def execute(self, pixels: torch.Tensor, vae: VAE) -> tuple[dict[str, Any]]:
        return ({"samples": encode(_check(vae), pixels)},)


def _temporal_inputs(verb: str) -> tuple:
    return (Int("temporal_size", 64, min=8, max=4096, step=4, tooltip=_TEMPORAL_NOTE.format(verb)),
            Int("temporal_overlap", 8, min=4, max=4096, step=4, tooltip=_TEMPORAL_OVERLAP_NOTE))


class VAEDecodeTiled(Node):
    """Decodes latents in overlapping tiles (sizes in image pixels), for large images on small devices."""

    DISPLAY_NAME = "VAE Decode (Tiled)"
    CATEGORY = "_for_testing"
    INPUTS = (
        Input("samples", "LATENT"),
        Input("vae", "VAE"),
        Int("tile_size", 512, min=64, max=4096, step=32),
        Int("overlap", 64, min=0, max=4096, step=32),
    ) + _temporal_inputs("decode")
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, samples: dict[str, Any], vae: VAE, tile_size: int = 512, overlap: int = 64,
                temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[torch.Tensor]:
        vae = _check(vae)
        if tile_size < overlap * 4:
            overlap = tile_size // 4
        r = vae.downscale_ratio
        latent = samples["samples"]
        tile = max(1, tile_size // r)
        need = vae.memory_required_decode((latent.shape[0], latent.shape[1], tile, tile), _vae_dtype(vae))
        return (run_vae(vae, need, lambda: vae.decode_tiled(latent, tile, tile, overlap // r)),)


class VAEEncodeTiled(Node):
    """Encodes images in overlapping tiles (sizes in image pixels), for large images on small devices."""

    DISPLAY_NAME = "VAE Encode (Tiled)"
    CATEGORY = "_for_testing"
    INPUTS = (
        Input("pixels", "IMAGE"),
        Input("vae", "VAE"),
        Int("tile_size", 512, min=64, max=4096, step=64),
        Int("overlap", 64, min=0, max=4096, step=32),
    ) + _temporal_inputs("encode")
    OUTPUTS = (Output("LATENT"),)

    def execute(self, pixels: torch.Tensor, vae: VAE, tile_size: int = 512, overlap: int = 64,
                temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[dict[str, Any]]:
        vae = _check(vae)
        if tile_size < overlap * 4:
            overlap = tile_size // 4
        need = vae.memory_required_encode((pixels.shape[0], tile_size, tile_size, 3), _vae_dtype(vae))
        return ({"samples": run_vae(vae, need, lambda: vae.encode_tiled(pixels, tile_size, tile_size, overlap))},)


NODES: list[type] = [VAEDecode, VAEEncode, VAEDecodeTiled, VAEEncodeTiled]
