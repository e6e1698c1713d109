"""More sigma schedules and sigma-list tools for the custom-sampling nodes: the Laplace and VP schedules, the
OptimalSteps tables, and the interpolation that ExtendIntermediateSigmas does.

Like `diffusion/sampling/schedules.py`: pure functions returning 1-D float tensors ending in 0.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from diffusion.sampling.schedules import loglinear_interp


def _append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_laplace(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> torch.Tensor:
    """Laplace schedule (Hang et al. 2024, "Improved Noise Schedule for Diffusion Training"): log sigma at the
    quantiles of a Laplace(mu, beta) distribution, evenly spaced in probability, clamped to [sigma_min, sigma_max]."""
    epsilon = 1e-5
    x = torch.linspace(0, 1, n)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + epsilon)
    return _append_zero(torch.clamp(torch.exp(lmb), min=sigma_min, max=sigma_max))


def get_sigmas_vp(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """The continuous VP-SDE schedule (Song et al. 2021): sigma(t) = sqrt(exp(beta_d·t²/2 + beta_min·t) − 1)
    at t evenly spaced from 1 to eps_s."""
    t = torch.linspace(1, eps_s, n)
    return _append_zero(torch.sqrt(torch.special.expm1(beta_d * t ** 2 / 2 + beta_min * t)))


# OptimalSteps (Pei et al. 2025, "Optimal Stepsize for Diffusion Sampling", github.com/bebebe666/OptimalSteps):
# the searched noise levels of flow models, as published.
OPTIMAL_STEPS_NOISE_LEVELS: dict[str, list[float]] = {
    "FLUX": [0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001],
    "Wan": [1.0, 0.997, 0.995, 0.993, 0.991, 0.989, 0.987, 0.985, 0.98, 0.975, 0.973, 0.968, 0.96, 0.946, 0.927,
            0.902, 0.864, 0.776, 0.539, 0.208, 0.001],
    "Chroma": [0.992, 0.99, 0.988, 0.985, 0.982, 0.978, 0.973, 0.968, 0.961, 0.953, 0.943, 0.931, 0.917, 0.9, 0.881,
               0.858, 0.832, 0.802, 0.769, 0.731, 0.69, 0.646, 0.599, 0.55, 0.501, 0.451, 0.402, 0.355, 0.311, 0.27,
               0.232, 0.199, 0.169, 0.143, 0.12, 0.101, 0.084, 0.07, 0.058, 0.048, 0.001],
}


def optimal_steps(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """OptimalStepsScheduler: the table for model_type, log-linearly resampled to steps+1 levels when the step
    count differs; with denoise < 1 the last round(steps·denoise) steps; the final level is set to 0."""
    if model_type not in OPTIMAL_STEPS_NOISE_LEVELS:
        raise ValueError(f"unknown model_type {model_type!r}; choose one of {list(OPTIMAL_STEPS_NOISE_LEVELS)}")
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.FloatTensor([])
        total = round(steps * denoise)
    levels: list[float] | np.ndarray = list(OPTIMAL_STEPS_NOISE_LEVELS[model_type])
    if steps + 1 != len(levels):
        levels = loglinear_interp(list(levels), steps + 1)
    levels = list(levels)[-(total + 1):]
    levels[-1] = 0
    return torch.FloatTensor(levels)


SPACINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "cosine": lambda x: torch.sin(x * math.pi / 2),
    "sine": lambda x: 1 - torch.cos(x * math.pi / 2),
}


def extend_intermediate_sigmas(sigmas: torch.Tensor, steps: int, start_at_sigma: float, end_at_sigma: float,
                               spacing: str) -> torch.Tensor:
    """Insert steps−1 sigmas between each pair whose first sigma lies in [end_at_sigma, start_at_sigma]
    (start < 0: no upper bound), placed at spacing(k/steps) of the way to the next sigma."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {list(SPACINGS)}")
    upper = float("inf") if start_at_sigma < 0 else start_at_sigma
    fractions = SPACINGS[spacing](torch.linspace(0, 1, steps + 1, device=sigmas.device)[1:-1])
    out: list[float] = []
    for i in range(len(sigmas) - 1):
        current, following = sigmas[i], sigmas[i + 1]
        out.append(float(current))
        if end_at_sigma <= current <= upper:
            out.extend((fractions * (following - current) + current).tolist())
    if len(sigmas) > 0:
        out.append(float(sigmas[-1]))
    return torch.FloatTensor(out)
