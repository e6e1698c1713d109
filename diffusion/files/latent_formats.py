"""Latent spaces of the model families: the VAE scale factor (raw VAE latent <-> sampler latent) and the
cheap latent -> RGB preview projection.

`process_in` multiplies the raw VAE latent by the family's scale factor (SD1/SD2: 0.18215, Rombach et al.
2022; SDXL: 0.13025), `process_out` divides; Playground v2.5 normalises each channel by its mean and std first. Previews project a sampler-space latent (e.g. a step's x0)
to RGB with a fixed 4×3 factor matrix (and bias), ComfyUI's approximation, or with a TAESD-like decoder
module when one is given (its output in [0, 1] or [-1, 1] as the module declares). `taesd_decoder()` builds
the Tiny AutoEncoder decoder (madebyollin/taesd, MIT) whose `taesd_decoder.safetensors` keys load directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class LatentFormat:
    """A family's latent conventions."""

    scale_factor: float
    rgb_factors: tuple[tuple[float, float, float], ...]
    rgb_bias: tuple[float, float, float] | None = None
    channels: int = 4
    taesd_decoder_name: str | None = None
    latents_mean: tuple[float, ...] | None = None  # per-channel normalisation (Playground v2.5)
    latents_std: tuple[float, ...] | None = None
    shift_factor: float = 0.0  # subtracted before scaling (SD3: 0.0609)

    def _stats(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1) + (1,) * (latent.ndim - 2)
        mean = torch.tensor(self.latents_mean, device=latent.device, dtype=latent.dtype).view(shape)
        std = torch.tensor(self.latents_std, device=latent.device, dtype=latent.dtype).view(shape)
        return mean, std

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw VAE latent -> sampler latent: × scale, or (x − mean)·scale/std for normalised formats."""
        if self.latents_mean is None:
            return (latent - self.shift_factor) * self.scale_factor
        mean, std = self._stats(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        """Sampler latent -> raw VAE latent."""
        if self.latents_mean is None:
            return latent / self.scale_factor + self.shift_factor
        mean, std = self._stats(latent)
        return latent * std / self.scale_factor + mean


# Factors fitted by ComfyUI for its previews (comfy/latent_formats.py), latent channel -> (R, G, B).
SD15 = LatentFormat(
    scale_factor=0.18215,
    rgb_factors=((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
                 (-0.2120, -0.2616, -0.7177)),
    taesd_decoder_name="taesd_decoder",
)
SDXL = LatentFormat(
    scale_factor=0.13025,
    rgb_factors=((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                 (-0.3165, -0.2492, -0.2188)),
    rgb_bias=(0.1084, -0.0175, -0.0011),
    taesd_decoder_name="taesdxl_decoder",
)
# Playground v2.5: the SDXL VAE with per-channel mean/std normalisation (ComfyUI SDXL_Playground_2_5).
PLAYGROUND_V25 = LatentFormat(
    scale_factor=0.5,
    rgb_factors=((0.3920, 0.4054, 0.4549), (-0.2634, -0.0196, 0.0653), (0.0568, 0.1687, -0.0755),
                 (-0.3112, -0.2359, -0.2076)),
    taesd_decoder_name="taesdxl_decoder",
    latents_mean=(-1.6574, 1.886, -1.383, 2.5155),
    latents_std=(8.4927, 5.9022, 6.5498, 5.2299),
)

# SD3 / SD3.5: the 16-channel VAE, (latent − 0.0609)·1.5305 (ComfyUI SD3; preview factors fitted by ComfyUI).
SD3 = LatentFormat(
    scale_factor=1.5305,
    shift_factor=0.0609,
    channels=16,
    rgb_factors=((-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458),
                 (0.0856, 0.0339, 0.0902), (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309),
                 (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358), (-0.0194, 0.0020, 0.0669),
                 (-0.0488, 0.0130, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
                 (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810), (-0.0596, -0.0465, -0.0293),
                 (-0.1448, -0.1463, -0.1189)),
    rgb_bias=(0.2394, 0.2135, 0.1925),
    taesd_decoder_name="taesd3_decoder",
)


def latent_to_rgb(latent: torch.Tensor, fmt: LatentFormat) -> torch.Tensor:
    """B×C×H×W sampler latent -> B×H×W×3 float RGB in [-1, 1]-ish via the linear projection."""
    weight = torch.tensor(fmt.rgb_factors, dtype=torch.float32, device=latent.device).transpose(0, 1)
    bias = None if fmt.rgb_bias is None else torch.tensor(fmt.rgb_bias, dtype=torch.float32, device=latent.device)
    return torch.nn.functional.linear(latent.float().movedim(1, -1), weight, bias)


def latent_to_rgb_preview(latent: torch.Tensor, fmt: LatentFormat,
                          taesd_decoder: torch.nn.Module | None = None) -> np.ndarray:
    """The first latent of a batch as an H×W×3 uint8 preview (ComfyUI's Latent2RGB previewer, or the
    given TAESD decoder, whose output is taken to be in [0, 1] unless it has `output_range == (-1, 1)`)."""
    with torch.no_grad():
        if taesd_decoder is not None:
            image = taesd_decoder(latent[:1].to(next(taesd_decoder.parameters()).dtype)).float()
            if getattr(taesd_decoder, "output_range", (0, 1)) == (-1, 1):
                image = (image + 1.0) / 2.0
            image = image[0].movedim(0, -1)
        else:
            image = (latent_to_rgb(latent[:1], fmt)[0] + 1.0) / 2.0
        return image.clamp(0, 1).mul(255).to(device="cpu", dtype=torch.uint8).numpy()


class _TAESDClamp(nn.Module):
    """Soft clamp of the input latent to about ±3 (TAESD's first layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _TAESDBlock(nn.Module):
    """Three 3×3 convolutions with ReLUs plus a (1×1 when the width changes) skip, then ReLU."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(n_in, n_out, 3, padding=1), nn.ReLU(), nn.Conv2d(n_out, n_out, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(n_out, n_out, 3, padding=1))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


def taesd_decoder(latent_channels: int = 4, width: int = 64) -> nn.Sequential:
    """The TAESD decoder (Bohan, madebyollin/taesd): sampler-space latent -> RGB in [0, 1] at 8× the size.
    Layer indices match the published `taesd_decoder` weight files (`load_state_dict` directly)."""
    layers: list[nn.Module] = [_TAESDClamp(), nn.Conv2d(latent_channels, width, 3, padding=1), nn.ReLU()]
    for _ in range(3):
        layers += [_TAESDBlock(width, width) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1, bias=False)]
    layers += [_TAESDBlock(width, width), nn.Conv2d(width, 3, 3, padding=1)]
    return nn.Sequential(*layers)


def load_taesd_decoder(path: str, latent_channels: int = 4) -> nn.Sequential:
    """A TAESD decoder with the weights of a `models/vae_approx/taesd_decoder.safetensors`-style file."""
    from safetensors.torch import load_file
    decoder = taesd_decoder(latent_channels)
    decoder.load_state_dict(load_file(path), strict=True)
    return decoder.eval().requires_grad_(False)
