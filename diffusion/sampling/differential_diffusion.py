"""Differential Diffusion (Levin & Fried 2023, "Differential Diffusion: Giving Each Pixel Its Strength",
arXiv:2306.00950): a soft inpainting mask becomes a per-step binary mask. At each step the region still being
denoised is where the mask is at least the fraction of the run still ahead (in timesteps), so a pixel with mask
value m is regenerated only for the last m of sampling — grey values get proportionally weaker changes.

`DifferentialMask` is a `denoise_mask_function(sigma, denoise_mask, extra_options)`, the hook the inpainting
denoiser (`diffusion/sampling/sample.py`) calls with the run's sigmas; `strength` < 1 blends the binary mask back towards the
soft one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DifferentialMask:
    """The per-step mask: (mask ≥ threshold) with threshold = (t − t_end)/(t_start − t_end) in timesteps."""

    strength: float = 1.0

    def threshold(self, sampling: Any, sigma: torch.Tensor, sigmas: torch.Tensor | None) -> torch.Tensor:
        steps = sigmas if sigmas is not None else torch.stack([sigma[0], sigma[0] * 0])
        sigma_to = sampling.sigma_min
        if steps[-1] > sigma_to:
            sigma_to = steps[-1]
        ts_from = sampling.timestep(steps[0]).float()
        ts_to = sampling.timestep(sigma_to).float()
        current = sampling.timestep(sigma[0]).float()
        return (current - ts_to) / (ts_from - ts_to)

    def __call__(self, sigma: torch.Tensor, denoise_mask: torch.Tensor, extra_options: dict[str, Any]) -> torch.Tensor:
        sampling = extra_options["model"].inner_model.model_sampling
        threshold = self.threshold(sampling, sigma, extra_options.get("sigmas")).to(denoise_mask.device)
        binary = (denoise_mask >= threshold).to(denoise_mask.dtype)
        if self.strength and self.strength < 1:
            return self.strength * binary + (1 - self.strength) * denoise_mask
        return binary
