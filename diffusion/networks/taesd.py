"""TAESD, the tiny autoencoder for SD latents (Ollin Boer Bohan, https://github.com/madebyollin/taesd): its encoder
and decoder networks with the key layout of the published `taesd_encoder.*` / `taesd_decoder.*` files, the
preview decoder, and `TAESDAutoencoder`, which gives the `VAE` socket value the same encode/decode contract as the
KL autoencoder (so `VAE(TAESDAutoencoder(...))` decodes, encodes, tiles and estimates memory like any VAE).

The networks work in the sampler's latent space (raw VAE latent × 0.18215 for SD1/SD2): the decoder maps it to
RGB in 0..1 (a soft clamp tanh(x/3)·3 first), the encoder maps RGB in 0..1 back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from diffusion.files.checkpoint import CheckpointError, read_state_dict

WIDTH = 64  # every TAESD layer has 64 channels


def _conv(n_in: int, n_out: int, **kwargs: object) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """A soft clamp to (−3, 3): tanh(x/3)·3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Three 3×3 convolutions with ReLUs, a residual (1×1 where the width changes), then a ReLU."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


def encoder(latent_channels: int = 4) -> nn.Sequential:
    """RGB 0..1 → latent, ×1/8 by three stride-2 convolutions (indices as in `taesd_encoder` files)."""
    layers: list[nn.Module] = [_conv(3, WIDTH), Block(WIDTH, WIDTH)]
    for _ in range(3):
        layers += [_conv(WIDTH, WIDTH, stride=2, bias=False)] + [Block(WIDTH, WIDTH) for _ in range(3)]
    return nn.Sequential(*layers, _conv(WIDTH, latent_channels))


def decoder(latent_channels: int = 4) -> nn.Sequential:
    """Latent → RGB 0..1, ×8 by three nearest upsamplings (indices as in `taesd_decoder` files)."""
    layers: list[nn.Module] = [Clamp(), _conv(latent_channels, WIDTH), nn.ReLU()]
    for repeats in (3, 3, 3):
        layers += [Block(WIDTH, WIDTH) for _ in range(repeats)]
        layers += [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]
    return nn.Sequential(*layers, Block(WIDTH, WIDTH), _conv(WIDTH, 3))


def _load_into(module: nn.Module, path: str | os.PathLike[str], dtype: torch.dtype, what: str) -> nn.Module:
    state_dict = read_state_dict(path, dtype=dtype)
    expected = set(module.state_dict())
    if set(state_dict) != expected:
        missing, extra = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        raise CheckpointError(f"{os.fspath(path)} is not a TAESD {what} file: {len(missing)} keys missing "
                              f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})")
    module.load_state_dict(state_dict, strict=True, assign=True)
    return module.to(dtype).eval().requires_grad_(False)


def load_taesd_decoder(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32,
                       latent_channels: int = 4) -> nn.Module:
    """A preview decoder from a `taesd_decoder` file: sampler-space latent → RGB in 0..1."""
    return _load_into(decoder(latent_channels), path, dtype, "decoder")


@dataclass(frozen=True)
class TAESDConfig:
    """The `VAEConfig` fields the `VAE` socket reads (downscale, latent channels, widths for its estimates)."""

    embed_dim: int = 4
    ch: int = WIDTH
    ch_mult: tuple[int, ...] = (1, 1, 1, 1)
    downscale: int = 8


class TAESDAutoencoder(nn.Module):
    """TAESD with the KL autoencoder's contract: `encode(x in −1..1)` → raw VAE latent, `decode(raw latent)` → image
    in −1..1. `scale` is the family's latent scale factor (0.18215 for SD1/SD2)."""

    def __init__(self, latent_channels: int = 4, scale: float = 0.18215) -> None:
        super().__init__()
        self.config = TAESDConfig(embed_dim=latent_channels)
        self.taesd_encoder = encoder(latent_channels)
        self.taesd_decoder = decoder(latent_channels)
        self.scale = scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.taesd_encoder(x * 0.5 + 0.5) / self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.taesd_decoder(z * self.scale).sub(0.5).mul(2)


def load_taesd_autoencoder(encoder_path: str | os.PathLike[str], decoder_path: str | os.PathLike[str],
                           dtype: torch.dtype = torch.float32, scale: float = 0.18215) -> TAESDAutoencoder:
    """Both halves of TAESD from their files, as one autoencoder for the `VAE` socket."""
    model = TAESDAutoencoder(scale=scale)
    _load_into(model.taesd_encoder, encoder_path, dtype, "encoder")
    _load_into(model.taesd_decoder, decoder_path, dtype, "decoder")
    return model.eval().requires_grad_(False)
