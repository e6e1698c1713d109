"""Rectified-flow model sampling (Esser et al. 2024, §2-3; Liu et al. 2022): SD3/SD3.5 and AuraFlow.

Owns `FlowSampling` (ComfyUI's ModelSamplingDiscreteFlow + CONST, `comfy/model_sampling.py`, as the spec):
- the noisy latent is a straight line, x_σ = σ·noise + (1 − σ)·x0 (`noise_scaling`, whatever the start), so at
  σ = 1 it is the unit noise itself;
- the network predicts the velocity v and denoised = x − σ·v (`calculate_denoised`), its input unscaled;
- the schedule: a table of 1000 sigmas σ_i = shift(i/1000), i = 1 … 1000, with the time shift
  shift(t) = s·t / (1 + (s − 1)·t) (`time_snr_shift`; s = 3 for SD3, 1.73 for AuraFlow), so schedulers that read
  `sigmas`, `sigma_min`, `sigma_max`, `timestep`, `sigma` work unchanged;
- the network's timestep is σ·multiplier (1000 for SD3, 1 for AuraFlow).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from diffusion.sampling.model_sampling import _bcast

SD3_SHIFT = 3.0
AURAFLOW_SHIFT = 1.73


def time_snr_shift(shift: float, t: torch.Tensor | float) -> torch.Tensor | float:
    """s·t / (1 + (s − 1)·t), the identity for s = 1."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


class FlowSampling(nn.Module):
    """The discrete rectified-flow schedule with `shift` and timestep `multiplier`, velocity prediction."""

    prediction = "flow"
    zsnr = False

    def __init__(self, shift: float = SD3_SHIFT, multiplier: float = 1000.0, timesteps: int = 1000) -> None:
        super().__init__()
        if not shift > 0:
            raise ValueError(f"shift must be above 0, got {shift}")
        self.shift = float(shift)
        self.multiplier = float(multiplier)
        t = torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps
        sigmas = time_snr_shift(self.shift, t)
        self.register_buffer("sigmas", sigmas.float(), persistent=False)
        self.register_buffer("log_sigmas", sigmas.log().float(), persistent=False)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """σ·multiplier, the network's time input."""
        return torch.as_tensor(sigma) * self.multiplier

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """shift(timestep / multiplier)."""
        return time_snr_shift(self.shift, torch.as_tensor(timestep, dtype=torch.float32) / self.multiplier)

    sigma_to_t = timestep
    t_to_sigma = sigma

    def percent_to_sigma(self, percent: float) -> float:
        """1 at the start of sampling (0 %), 0 at the end, shift(1 − percent) between."""
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(time_snr_shift(self.shift, 1.0 - percent))

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The flow network takes the noisy latent as it is."""
        return x

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        """x0 = x − σ·v."""
        return model_input - model_output * _bcast(torch.as_tensor(sigma, device=model_output.device).reshape(-1),
                                                   model_output)

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        """σ·noise + (1 − σ)·latent (the straight path; no VP-style start scaling)."""
        s = _bcast(torch.as_tensor(sigma, device=noise.device, dtype=noise.dtype).reshape(-1), noise)
        return s * noise + (1.0 - s) * latent_image

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """latent / (1 − σ): the identity at the final σ = 0."""
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        return latent if s == 0.0 else latent / (1.0 - s)

    def is_max_denoise(self, sigmas: torch.Tensor) -> bool:
        max_sigma, first = float(self.sigma_max), float(sigmas[0])
        return math.isclose(max_sigma, first, rel_tol=1e-05) or first > max_sigma
