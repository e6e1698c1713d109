"""Continuous-sigma schedules for models trained without the discrete 1000-step table: EDM (Karras et al. 2022) —
Playground v2.5, CosXL, EDM fine-tunes — and the arctan-time v-prediction schedule of ModelSamplingContinuousV.

Owns `ContinuousSampling` (a log-uniform sigma grid of 1000 entries between sigma_min and sigma_max, so schedulers
that read `sigmas`, `sigma_min`, `sigma_max` work unchanged; sigma ↔ network time by `time_of`/`sigma_of`),
`EDMPrediction` (the EDM preconditioning: c_skip = σd²/(σ²+σd²), c_out = σ·σd/√(σ²+σd²)), and the two named
schedules with ComfyUI's conventions (`comfy/model_sampling.py` ModelSamplingContinuousEDM / ...ContinuousV):
EDM feeds the network t = ¼·ln σ, the V schedule t = 2/π·atan σ. The start-of-sampling scaling and
`percent_to_sigma` (log-linear between the extremes) follow the same file.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from diffusion.sampling.model_sampling import EpsPrediction, VPrediction, _bcast

PARAMETERIZATIONS = {"eps": EpsPrediction, "v_prediction": VPrediction}


class EDMPrediction(VPrediction):
    """EDM's network output F: denoised = c_skip·x + c_out·F (Karras et al. 2022, Table 1)."""

    def calculate_denoised(self, sigma, model_output, model_input, timestep):
        s = _bcast(sigma, model_output)
        sd2 = self.sigma_data ** 2
        return model_input * sd2 / (s ** 2 + sd2) + model_output * s * self.sigma_data / (s ** 2 + sd2) ** 0.5


class ContinuousSampling(nn.Module):
    """A continuous schedule: `kind` "edm" (t = ¼ ln σ) or "v" (t = 2/π atan σ), a parameterisation
    ("eps", "v_prediction", "edm") with its sigma_data, and the sigma range."""

    def __init__(self, kind: str = "edm", prediction: str = "v_prediction", sigma_min: float = 0.002,
                 sigma_max: float = 120.0, sigma_data: float = 1.0) -> None:
        super().__init__()
        if kind not in ("edm", "v"):
            raise ValueError(f"unknown continuous schedule {kind!r}; choose 'edm' or 'v'")
        if prediction != "edm" and prediction not in PARAMETERIZATIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose edm, {', '.join(PARAMETERIZATIONS)}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"sigma_min ({sigma_min}) must be above 0 and below sigma_max ({sigma_max})")
        self.kind = kind
        self.prediction = prediction
        self.zsnr = False
        self.parameterization = EDMPrediction() if prediction == "edm" else PARAMETERIZATIONS[prediction]()
        self.parameterization.sigma_data = sigma_data
        self.sigma_data = sigma_data
        sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000, dtype=torch.float64).exp()
        self.register_buffer("sigmas", sigmas.float(), persistent=False)
        self.register_buffer("log_sigmas", sigmas.log().float(), persistent=False)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The network's time input for `sigma`."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        return 0.25 * sigma.log() if self.kind == "edm" else sigma.atan() / math.pi * 2

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """The sigma of a network time (the inverse of `timestep`)."""
        t = torch.as_tensor(timestep, dtype=torch.float32)
        return (t / 0.25).exp() if self.kind == "edm" else (t * math.pi / 2).tan()

    sigma_to_t = timestep
    t_to_sigma = sigma

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at a fraction of the way through sampling, log-linear from sigma_max (0) to sigma_min (1)."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        low, high = math.log(float(self.sigma_min)), math.log(float(self.sigma_max))
        return math.exp((high - low) * (1.0 - percent) + low)

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.parameterization.calculate_input(sigma, x)

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        return self.parameterization.calculate_denoised(sigma, model_output, model_input, sigma)

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        """noise·sqrt(1+σ²)+latent when starting from the largest sigma, else noise·σ+latent (as the discrete
        schedules; ComfyUI's EPS/V/EDM share it)."""
        s = _bcast(torch.as_tensor(sigma, device=noise.device).reshape(-1), noise)
        scale = torch.sqrt(1.0 + s ** 2.0) if max_denoise else s
        return noise * scale + latent_image

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def is_max_denoise(self, sigmas: torch.Tensor) -> bool:
        max_sigma, first = float(self.sigma_max), float(sigmas[0])
        return math.isclose(max_sigma, first, rel_tol=1e-05) or first > max_sigma
